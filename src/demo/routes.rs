//! HTTP layer of the demo upstream: routing, the front door (request recording, rate
//! limiting, service-token check), path/query/body parsing, envelopes and error bodies.
//! Business rules live in `store.rs`; this file only translates.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::store::{FieldErrors, Page, Status, StoreError, UserFilter};
use super::{Fault, Inner, RecordedRequest};

/// The one endpoint that is exempt from rate limiting (the gateway needs it to even know
/// which tenant it is talking to).
pub(crate) const INTROSPECT_PATH: &str = "/api/v1/scim_keys/introspect";

/// Every error shape of the contract.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// 404 `{"error": {"code": "not_found", ...}}`.
    NotFound(String),
    /// 404 `{"error": {"code": "user_not_found", ...}}` (membership bodies).
    UserNotFound(String),
    /// 401 `{"error": {"code": "unauthorized", ...}}`.
    Unauthorized,
    /// 422 `{"errors": {...}}`.
    Invalid(FieldErrors),
    /// 429 with `Retry-After`.
    RateLimited(u64),
    /// 500, injected by tests.
    Injected,
}

impl ApiError {
    fn not_found() -> Self {
        ApiError::NotFound("Not found".into())
    }

    fn base(message: &str) -> Self {
        StoreError::invalid("base", message).into()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::CompanyNotFound(id) => {
                ApiError::NotFound(format!("Company {id} not found"))
            }
            StoreError::UserNotFound(id) => ApiError::NotFound(format!("User {id} not found")),
            StoreError::TeamNotFound(id) => ApiError::NotFound(format!("Team {id} not found")),
            e @ StoreError::NotAMember { .. } => ApiError::NotFound(capitalize(&e.to_string())),
            StoreError::MemberUserNotFound(ids) => {
                let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
                ApiError::UserNotFound(format!("User(s) not found: {}", ids.join(", ")))
            }
            StoreError::Invalid(errors) => ApiError::Invalid(errors),
        }
    }
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn error_body(code: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message}})
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::NotFound(m) => {
                (StatusCode::NOT_FOUND, Json(error_body("not_found", &m))).into_response()
            }
            ApiError::UserNotFound(m) => (
                StatusCode::NOT_FOUND,
                Json(error_body("user_not_found", &m)),
            )
                .into_response(),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                Json(error_body(
                    "unauthorized",
                    "Missing or invalid service token",
                )),
            )
                .into_response(),
            ApiError::Invalid(errors) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({"errors": errors})),
            )
                .into_response(),
            ApiError::RateLimited(secs) => {
                let mut resp = (
                    StatusCode::TOO_MANY_REQUESTS,
                    Json(error_body("rate_limited", "Too many requests")),
                )
                    .into_response();
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                resp
            }
            ApiError::Injected => (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(error_body("internal_error", "Injected fault")),
            )
                .into_response(),
        }
    }
}

type ApiResult = Result<Response, ApiError>;

/// `{"data": object}` with the given status.
fn data(status: StatusCode, value: Value) -> Response {
    (status, Json(json!({"data": value}))).into_response()
}

/// `{"data": [...], "meta": {"page", "per_page", "total"}}`.
fn list(items: Vec<Value>, total: usize, page: Page) -> Response {
    Json(json!({
        "data": items,
        "meta": {"page": page.page, "per_page": page.per_page, "total": total},
    }))
    .into_response()
}

// ---- the front door ------------------------------------------------------------------

/// Runs for every request, matched or not: records it, then applies rate limiting and the
/// service-token check in the order a real API gateway would.
async fn front_door(State(inner): State<Arc<Inner>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let recorded = RecordedRequest {
        method: req.method().to_string(),
        // The raw path as received: no routing happened that could rewrite it, and
        // percent-encoding (e.g. `%2F`) is kept so tests can see what the gateway sent.
        path: req.uri().path().to_owned(),
        query: req.uri().query().map(str::to_owned),
        key_id: headers
            .get("x-scim-key-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        has_authorization: authorization.is_some(),
        request_id: headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    };
    // Not the query: pushed-down filters put attribute values there.
    tracing::debug!(method = %recorded.method, path = %recorded.path, request_id = ?recorded.request_id, "demo upstream request");
    let is_introspection = recorded.path == INTROSPECT_PATH;
    inner.record(recorded);

    if !is_introspection {
        if let Some(secs) = inner.rate_limit() {
            return ApiError::RateLimited(secs).into_response();
        }
    }
    let token_ok = authorization
        .and_then(|v| v.split_once(' '))
        .is_some_and(|(scheme, token)| {
            // A plain comparison is fine here: this is a demo/test double, not a
            // security boundary.
            scheme.eq_ignore_ascii_case("bearer") && token.trim() == inner.service_token
        });
    if !token_ok {
        return ApiError::Unauthorized.into_response();
    }
    next.run(req).await
}

async fn not_found(req: Request) -> Response {
    ApiError::NotFound(format!(
        "No route for {} {}",
        req.method(),
        req.uri().path()
    ))
    .into_response()
}

/// Builds the router for the whole contract.
pub(crate) fn router(inner: Arc<Inner>) -> Router {
    let company = "/api/v1/companies/{company_id}";
    Router::new()
        .route(INTROSPECT_PATH, post(introspect))
        .route(
            &format!("{company}/users"),
            get(list_users).post(create_user),
        )
        .route(
            &format!("{company}/users/{{id}}"),
            get(get_user).patch(update_user).delete(delete_user),
        )
        .route(
            &format!("{company}/users/{{id}}/deactivate"),
            post(deactivate_user),
        )
        .route(
            &format!("{company}/users/{{id}}/reactivate"),
            post(reactivate_user),
        )
        .route(
            &format!("{company}/teams"),
            get(list_teams).post(create_team),
        )
        .route(
            &format!("{company}/teams/{{id}}"),
            get(get_team).patch(update_team).delete(delete_team),
        )
        .route(
            &format!("{company}/teams/{{id}}/members"),
            get(list_members).post(add_member).put(replace_members),
        )
        .route(
            &format!("{company}/teams/{{id}}/members/{{user_id}}"),
            delete(remove_member),
        )
        // Like Rails, a known path with the wrong method is just "no such route".
        .method_not_allowed_fallback(not_found)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(inner.clone(), front_door))
        .with_state(inner)
}

// ---- extractors ------------------------------------------------------------------------

/// Path ids must be plain decimal integers; anything else (`abc`, `-1`, `1%2F2`) is a 404,
/// as a Rails `find` would answer, never axum's default 400.
fn parse_id(raw: &str) -> Option<i64> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

async fn path_ids<S: Send + Sync, const N: usize>(
    parts: &mut Parts,
    state: &S,
    names: [&str; N],
) -> Result<[i64; N], ApiError> {
    let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
        .await
        .map_err(|_| ApiError::not_found())?;
    let mut ids = [0; N];
    for (slot, name) in ids.iter_mut().zip(names) {
        *slot = params
            .get(name)
            .and_then(|raw| parse_id(raw))
            .ok_or_else(ApiError::not_found)?;
    }
    Ok(ids)
}

/// `/companies/{company_id}`.
struct CompanyPath(i64);
/// `/companies/{company_id}/<kind>/{id}`.
struct ItemPath(i64, i64);
/// `/companies/{company_id}/teams/{id}/members/{user_id}`.
struct MemberPath(i64, i64, i64);

impl<S: Send + Sync> FromRequestParts<S> for CompanyPath {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let [c] = path_ids(parts, state, ["company_id"]).await?;
        Ok(CompanyPath(c))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ItemPath {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let [c, id] = path_ids(parts, state, ["company_id", "id"]).await?;
        Ok(ItemPath(c, id))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for MemberPath {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let [c, id, user] = path_ids(parts, state, ["company_id", "id", "user_id"]).await?;
        Ok(MemberPath(c, id, user))
    }
}

/// Query parameters, last occurrence wins; unknown ones are ignored.
struct Params(HashMap<String, String>);

impl Params {
    fn parse(
        query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    ) -> Result<Self, ApiError> {
        let Query(pairs) = query.map_err(|_| ApiError::base("Query string is malformed"))?;
        Ok(Params(pairs.into_iter().collect()))
    }

    /// A filter value; empty counts as absent (`?email=` means "no email filter").
    fn filter(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn page(&self) -> Result<Page, ApiError> {
        Ok(Page::parse(
            self.0.get("page").map(String::as_str),
            self.0.get("per_page").map(String::as_str),
        )?)
    }
}

fn json_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|_| ApiError::base("Request body is not valid JSON"))
}

/// Parses `{"<wrapper>": {...}}` and returns the inner object.
fn unwrap_envelope(body: &Bytes, wrapper: &str) -> Result<Map<String, Value>, ApiError> {
    match json_body(body)? {
        Value::Object(mut outer) => match outer.remove(wrapper) {
            Some(Value::Object(inner)) => Ok(inner),
            _ => Err(ApiError::base(&format!(
                "param is missing or the value is empty: {wrapper}"
            ))),
        },
        _ => Err(ApiError::base(&format!(
            "param is missing or the value is empty: {wrapper}"
        ))),
    }
}

// ---- introspection ---------------------------------------------------------------------

async fn introspect(State(inner): State<Arc<Inner>>, body: Bytes) -> ApiResult {
    let token = match json_body(&body)? {
        Value::Object(obj) => match obj.get("token") {
            Some(Value::String(t)) => t.clone(),
            _ => return Err(StoreError::invalid("token", "can't be blank").into()),
        },
        _ => return Err(ApiError::base("Request body must be a JSON object")),
    };
    Ok(Json(inner.store().introspect(&token)).into_response())
}

// ---- users -----------------------------------------------------------------------------

async fn list_users(
    State(inner): State<Arc<Inner>>,
    CompanyPath(company): CompanyPath,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let params = Params::parse(query)?;
    let page = params.page()?;
    let status = match params.filter("status") {
        None => None,
        Some(s) => Some(
            Status::parse(s)
                .ok_or_else(|| StoreError::invalid("status", "is not included in the list"))?,
        ),
    };
    let filter = UserFilter {
        email: params.filter("email").map(str::to_owned),
        external_id: params.filter("external_id").map(str::to_owned),
        status,
    };
    let (users, total) = inner.store().list_users(company, &filter, page)?;
    Ok(list(users, total, page))
}

async fn get_user(State(inner): State<Arc<Inner>>, ItemPath(company, id): ItemPath) -> ApiResult {
    let user = inner.store().get_user(company, id)?;
    Ok(data(StatusCode::OK, user))
}

async fn create_user(
    State(inner): State<Arc<Inner>>,
    CompanyPath(company): CompanyPath,
    body: Bytes,
) -> ApiResult {
    let attrs = unwrap_envelope(&body, "user")?;
    let user = inner.store().create_user(company, &attrs)?;
    Ok(data(StatusCode::CREATED, user))
}

async fn update_user(
    State(inner): State<Arc<Inner>>,
    ItemPath(company, id): ItemPath,
    body: Bytes,
) -> ApiResult {
    let attrs = unwrap_envelope(&body, "user")?;
    let user = inner.store().update_user(company, id, &attrs)?;
    Ok(data(StatusCode::OK, user))
}

async fn deactivate_user(
    State(inner): State<Arc<Inner>>,
    ItemPath(company, id): ItemPath,
) -> ApiResult {
    let user = inner
        .store()
        .set_user_status(company, id, Status::Deactivated)?;
    Ok(data(StatusCode::OK, user))
}

async fn reactivate_user(
    State(inner): State<Arc<Inner>>,
    ItemPath(company, id): ItemPath,
) -> ApiResult {
    let user = inner.store().set_user_status(company, id, Status::Active)?;
    Ok(data(StatusCode::OK, user))
}

async fn delete_user(
    State(inner): State<Arc<Inner>>,
    ItemPath(company, id): ItemPath,
) -> ApiResult {
    inner.store().delete_user(company, id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- teams -----------------------------------------------------------------------------

async fn list_teams(
    State(inner): State<Arc<Inner>>,
    CompanyPath(company): CompanyPath,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let params = Params::parse(query)?;
    let page = params.page()?;
    let (teams, total) = inner
        .store()
        .list_teams(company, params.filter("name"), page)?;
    Ok(list(teams, total, page))
}

async fn get_team(State(inner): State<Arc<Inner>>, ItemPath(company, id): ItemPath) -> ApiResult {
    let team = inner.store().get_team(company, id)?;
    Ok(data(StatusCode::OK, team))
}

async fn create_team(
    State(inner): State<Arc<Inner>>,
    CompanyPath(company): CompanyPath,
    body: Bytes,
) -> ApiResult {
    let attrs = unwrap_envelope(&body, "team")?;
    let team = inner.store().create_team(company, &attrs)?;
    Ok(data(StatusCode::CREATED, team))
}

async fn update_team(
    State(inner): State<Arc<Inner>>,
    ItemPath(company, id): ItemPath,
    body: Bytes,
) -> ApiResult {
    let attrs = unwrap_envelope(&body, "team")?;
    let team = inner.store().update_team(company, id, &attrs)?;
    Ok(data(StatusCode::OK, team))
}

async fn delete_team(
    State(inner): State<Arc<Inner>>,
    ItemPath(company, id): ItemPath,
) -> ApiResult {
    inner.store().delete_team(company, id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- members ---------------------------------------------------------------------------

async fn list_members(
    State(inner): State<Arc<Inner>>,
    ItemPath(company, team): ItemPath,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let page = Params::parse(query)?.page()?;
    let (members, total) = inner.store().list_members(company, team, page)?;
    Ok(list(members, total, page))
}

/// The fault-injection choke point of single member calls: counts the call as in flight
/// for its whole duration, applies the configured latency, then any fault scheduled for it.
/// Returns the guard, which the handler must keep alive until it answers.
async fn member_call_gate(inner: &Inner) -> Result<super::MemberCallGuard<'_>, ApiError> {
    let (guard, fault) = inner.begin_member_call();
    let latency = inner.member_latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match fault {
        None => {}
        Some(Fault::Status500) => {
            tracing::info!("demo upstream: injected 500 on member call");
            return Err(ApiError::Injected);
        }
        Some(Fault::Hang(d)) => {
            tracing::info!(?d, "demo upstream: injected hang on member call");
            tokio::time::sleep(d).await;
        }
    }
    Ok(guard)
}

fn parse_member_id(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

async fn add_member(
    State(inner): State<Arc<Inner>>,
    ItemPath(company, team): ItemPath,
    body: Bytes,
) -> ApiResult {
    let _in_flight = member_call_gate(&inner).await?;
    let user_id = match json_body(&body)? {
        Value::Object(obj) => obj
            .get("user_id")
            .and_then(parse_member_id)
            .ok_or_else(|| StoreError::invalid("user_id", "is invalid"))?,
        _ => return Err(ApiError::base("Request body must be a JSON object")),
    };
    let (created, member) = inner.store().add_member(company, team, user_id)?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(data(status, member))
}

async fn remove_member(
    State(inner): State<Arc<Inner>>,
    MemberPath(company, team, user_id): MemberPath,
) -> ApiResult {
    let _in_flight = member_call_gate(&inner).await?;
    inner.store().remove_member(company, team, user_id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn replace_members(
    State(inner): State<Arc<Inner>>,
    ItemPath(company, team): ItemPath,
    body: Bytes,
) -> ApiResult {
    let ids = match json_body(&body)? {
        Value::Object(obj) => match obj.get("user_ids") {
            Some(Value::Array(items)) => items
                .iter()
                .map(parse_member_id)
                .collect::<Option<Vec<i64>>>()
                .ok_or_else(|| StoreError::invalid("user_ids", "is invalid"))?,
            _ => return Err(StoreError::invalid("user_ids", "is invalid").into()),
        },
        _ => return Err(ApiError::base("Request body must be a JSON object")),
    };
    let members = inner.store().replace_members(company, team, &ids)?;
    let total = members.len();
    Ok(Json(json!({"data": members, "meta": {"total": total}})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_id_table() {
        let cases = [
            ("1042", Some(1042)),
            ("007", Some(7)),
            ("0", Some(0)),
            ("", None),
            ("-1", None),
            ("+1", None),
            ("1.0", None),
            ("abc", None),
            ("1/2", None),
            ("99999999999999999999", None),
        ];
        for (raw, want) in cases {
            assert_eq!(parse_id(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn envelope_table() {
        let ok = unwrap_envelope(&Bytes::from_static(br#"{"user":{"email":"a@b"}}"#), "user");
        assert_eq!(ok.unwrap()["email"], "a@b");
        for bad in [
            &br#"{"email":"a@b"}"#[..],
            br#"{"user":null}"#,
            br#"{"user":[1]}"#,
            br#"{"team":{}}"#,
            br#"[]"#,
            br#"{"user":"#,
            b"",
        ] {
            match unwrap_envelope(&Bytes::copy_from_slice(bad), "user") {
                Err(ApiError::Invalid(e)) => assert!(e.contains_key("base")),
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bad)),
            }
        }
    }
}
