//! The "Acme Directory API", in memory.
//!
//! Its shape, as an operator would find it documented:
//! - base path `/api/v2`, `Authorization: Bearer <service token>`, bare JSON bodies (no
//!   envelope) in both directions, UUID ids;
//! - `GET /users?offset=&limit=&login=` answers a bare array with the total of the filtered
//!   set in `X-Total-Count`; `limit` is 1..=100 (default 20); `login=` is an exact match;
//! - users `{id, login, givenName, familyName, email, enabled, createdAt, updatedAt}`;
//!   `POST /users`, `GET/PATCH/DELETE /users/{id}` (PATCH merges the fields given); there are
//!   no action endpoints: `enabled` is written like any field; a login taken in any casing
//!   is `409 {"message": …}`;
//! - groups `{id, name, memberIds, version}`: `GET /groups?offset=&limit=&name=`, `POST
//!   /groups`, `GET/DELETE /groups/{id}`, and `PUT /groups/{id}` with the whole group
//!   (`name` and `memberIds`), conditional on `If-Match: <version>`: a missing header is
//!   428, a stale version 412; every write bumps `version`. Membership changes only this way;
//! - errors are `{"message": "..."}`: 400 invalid, 401 bad credential, 404, 409, 412, 428.
//!
//! Deleting a user removes it from every group (bumping those groups' versions).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use tokio::sync::Barrier;

use super::{has_service_token, lock, new_uuid, now, serve, take_body, Fail, Params, Recorded};

/// Prefix of every Acme path.
pub const BASE: &str = "/api/v2";

/// An Acme user.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: String,
    pub login: String,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub email: Option<String>,
    pub enabled: bool,
    pub created_at: String,
    pub updated_at: String,
}

impl User {
    /// The user as the API answers it.
    pub fn json(&self) -> Value {
        json!({
            "id": self.id,
            "login": self.login,
            "givenName": self.given_name,
            "familyName": self.family_name,
            "email": self.email,
            "enabled": self.enabled,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        })
    }
}

/// An Acme group.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub id: String,
    pub name: String,
    pub member_ids: Vec<String>,
    pub version: u64,
}

impl Group {
    /// The group as the API answers it.
    pub fn json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "memberIds": self.member_ids,
            "version": self.version,
        })
    }
}

/// The first `left` group reads wait for each other and all answer one snapshot, so their
/// writers are certain to collide.
struct Hold {
    left: usize,
    barrier: Arc<Barrier>,
    snapshot: Arc<Mutex<Option<Value>>>,
}

#[derive(Default)]
struct Data {
    users: Vec<User>,
    groups: Vec<Group>,
    requests: Vec<Recorded>,
    precondition_failures: usize,
    hold: Option<Hold>,
}

struct Inner {
    data: Mutex<Data>,
}

/// Handle to one in-memory Acme directory; clones share the state.
#[derive(Clone)]
pub struct Acme {
    inner: Arc<Inner>,
    addr: SocketAddr,
}

impl Acme {
    /// An empty Acme served on `127.0.0.1:0`.
    pub async fn start() -> Acme {
        let inner = Arc::new(Inner {
            data: Mutex::new(Data::default()),
        });
        let addr = serve(router(inner.clone())).await;
        Acme { inner, addr }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Adds a user directly (no HTTP); returns its id.
    pub fn seed_user(&self, login: &str, given: &str, family: &str) -> String {
        let stamp = now();
        let user = User {
            id: new_uuid(),
            login: login.to_owned(),
            given_name: Some(given.to_owned()),
            family_name: Some(family.to_owned()),
            email: Some(login.to_owned()),
            enabled: true,
            created_at: stamp.clone(),
            updated_at: stamp,
        };
        let id = user.id.clone();
        lock(&self.inner.data).users.push(user);
        id
    }

    /// Adds `n` users `seed{k}@example.com` (numbered on from those already there); returns
    /// their ids in list order.
    pub fn seed_users(&self, n: usize) -> Vec<String> {
        let first = lock(&self.inner.data).users.len();
        (first..first + n)
            .map(|k| self.seed_user(&format!("seed{k}@example.com"), "Seed", &format!("No{k}")))
            .collect()
    }

    /// Adds a group directly (version 1); returns its id.
    pub fn seed_group(&self, name: &str, members: &[String]) -> String {
        let group = Group {
            id: new_uuid(),
            name: name.to_owned(),
            member_ids: members.to_vec(),
            version: 1,
        };
        let id = group.id.clone();
        lock(&self.inner.data).groups.push(group);
        id
    }

    pub fn user(&self, id: &str) -> Option<User> {
        lock(&self.inner.data)
            .users
            .iter()
            .find(|u| u.id == id)
            .cloned()
    }

    /// Every user, in list order.
    pub fn users(&self) -> Vec<User> {
        lock(&self.inner.data).users.clone()
    }

    pub fn group(&self, id: &str) -> Option<Group> {
        lock(&self.inner.data)
            .groups
            .iter()
            .find(|g| g.id == id)
            .cloned()
    }

    pub fn groups(&self) -> Vec<Group> {
        lock(&self.inner.data).groups.clone()
    }

    /// Every request received, in the order they were answered.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.inner.data).requests.clone()
    }

    /// How many group PUTs were refused with 412 (stale `If-Match`).
    pub fn precondition_failures(&self) -> usize {
        lock(&self.inner.data).precondition_failures
    }

    /// Makes the next `k` reads of a group wait until all `k` have arrived (at most 3 s),
    /// then answer the same snapshot: their read-modify-writes are bound to conflict.
    pub fn hold_group_reads(&self, k: usize) {
        lock(&self.inner.data).hold = Some(Hold {
            left: k,
            barrier: Arc::new(Barrier::new(k)),
            snapshot: Arc::new(Mutex::new(None)),
        });
    }
}

fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route(&format!("{BASE}/users"), get(list_users).post(create_user))
        .route(
            &format!("{BASE}/users/{{id}}"),
            get(get_user).patch(patch_user).delete(delete_user),
        )
        .route(
            &format!("{BASE}/groups"),
            get(list_groups).post(create_group),
        )
        .route(
            &format!("{BASE}/groups/{{id}}"),
            get(get_group).put(put_group).delete(delete_group),
        )
        .fallback(|| async { message(StatusCode::NOT_FOUND, "no such route") })
        .layer(middleware::from_fn_with_state(inner.clone(), front_door))
        .with_state(inner)
}

/// Records every request and checks the service credential.
async fn front_door(State(inner): State<Arc<Inner>>, request: Request, next: Next) -> Response {
    let (request, mut recorded) = take_body(request).await;
    let response = if has_service_token(request.headers()) {
        next.run(request).await
    } else {
        message(StatusCode::UNAUTHORIZED, "missing or wrong bearer token")
    };
    recorded.status = response.status().as_u16();
    lock(&inner.data).requests.push(recorded);
    response
}

/// Acme's one error shape.
fn message(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({ "message": text }))).into_response()
}

fn bad_request(text: &str) -> Response {
    message(StatusCode::BAD_REQUEST, text)
}

/// `offset` (default 0) and `limit` (1..=100, default 20).
fn paging(params: &Params) -> Result<(usize, usize), Fail> {
    let offset = match params.get("offset") {
        None => 0,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| bad_request("offset must be a non-negative integer"))?,
    };
    let limit = match params.get("limit") {
        None => 20,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=100).contains(l))
            .ok_or_else(|| bad_request("limit must be between 1 and 100"))?,
    };
    Ok((offset, limit))
}

/// A page of a bare JSON array with the total in `X-Total-Count`.
fn page(items: Vec<Value>, offset: usize, limit: usize) -> Response {
    let total = items.len();
    let items: Vec<Value> = items.into_iter().skip(offset).take(limit).collect();
    let mut response = Json(Value::Array(items)).into_response();
    response
        .headers_mut()
        .insert("x-total-count", HeaderValue::from(total));
    response
}

fn object(body: &Bytes) -> Result<Map<String, Value>, Fail> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(bad_request("the body must be a JSON object").into()),
    }
}

fn optional_text(key: &str, v: &Value) -> Result<Option<String>, Fail> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        _ => Err(bad_request(&format!("{key} must be a string")).into()),
    }
}

/// Applies the writable fields of a user body; read-only ones are ignored, others refused.
fn apply_user_fields(user: &mut User, body: &Map<String, Value>) -> Result<(), Fail> {
    for (key, value) in body {
        match key.as_str() {
            "login" => match value {
                Value::String(s) if !s.trim().is_empty() => user.login = s.clone(),
                _ => return Err(bad_request("login must be a non-empty string").into()),
            },
            "givenName" => user.given_name = optional_text(key, value)?,
            "familyName" => user.family_name = optional_text(key, value)?,
            "email" => user.email = optional_text(key, value)?,
            "enabled" => match value {
                Value::Bool(b) => user.enabled = *b,
                _ => return Err(bad_request("enabled must be a boolean").into()),
            },
            "id" | "createdAt" | "updatedAt" => {}
            other => return Err(bad_request(&format!("unknown field {other:?}")).into()),
        }
    }
    Ok(())
}

fn login_taken(data: &Data, login: &str, except: Option<&str>) -> bool {
    data.users
        .iter()
        .any(|u| Some(u.id.as_str()) != except && u.login.eq_ignore_ascii_case(login))
}

async fn list_users(State(inner): State<Arc<Inner>>, Query(params): Query<Params>) -> Response {
    let (offset, limit) = match paging(&params) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let data = lock(&inner.data);
    let items = data
        .users
        .iter()
        .filter(|u| params.get("login").is_none_or(|l| u.login == *l))
        .map(User::json)
        .collect();
    page(items, offset, limit)
}

async fn create_user(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    let body = match object(&body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    if !body.get("login").is_some_and(Value::is_string) {
        return bad_request("login is required");
    }
    let stamp = now();
    let mut user = User {
        id: new_uuid(),
        login: String::new(),
        given_name: None,
        family_name: None,
        email: None,
        enabled: true,
        created_at: stamp.clone(),
        updated_at: stamp,
    };
    if let Err(r) = apply_user_fields(&mut user, &body) {
        return r.into_response();
    }
    let mut data = lock(&inner.data);
    if login_taken(&data, &user.login, None) {
        return message(
            StatusCode::CONFLICT,
            &format!("login {:?} is already taken", user.login),
        );
    }
    let answer = user.json();
    data.users.push(user);
    (StatusCode::CREATED, Json(answer)).into_response()
}

fn user_not_found() -> Response {
    message(StatusCode::NOT_FOUND, "user not found")
}

async fn get_user(State(inner): State<Arc<Inner>>, Path(id): Path<String>) -> Response {
    match lock(&inner.data).users.iter().find(|u| u.id == id) {
        Some(u) => Json(u.json()).into_response(),
        None => user_not_found(),
    }
}

async fn patch_user(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let body = match object(&body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let mut data = lock(&inner.data);
    let Some(index) = data.users.iter().position(|u| u.id == id) else {
        return user_not_found();
    };
    let mut user = data.users[index].clone();
    if let Err(r) = apply_user_fields(&mut user, &body) {
        return r.into_response();
    }
    if login_taken(&data, &user.login, Some(&id)) {
        return message(
            StatusCode::CONFLICT,
            &format!("login {:?} is already taken", user.login),
        );
    }
    user.updated_at = now();
    let answer = user.json();
    data.users[index] = user;
    Json(answer).into_response()
}

async fn delete_user(State(inner): State<Arc<Inner>>, Path(id): Path<String>) -> Response {
    let mut data = lock(&inner.data);
    let Some(index) = data.users.iter().position(|u| u.id == id) else {
        return user_not_found();
    };
    data.users.remove(index);
    for group in data.groups.iter_mut() {
        if group.member_ids.contains(&id) {
            group.member_ids.retain(|m| *m != id);
            group.version += 1;
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn list_groups(State(inner): State<Arc<Inner>>, Query(params): Query<Params>) -> Response {
    let (offset, limit) = match paging(&params) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let data = lock(&inner.data);
    let items = data
        .groups
        .iter()
        .filter(|g| params.get("name").is_none_or(|n| g.name == *n))
        .map(Group::json)
        .collect();
    page(items, offset, limit)
}

/// Checks a group body's fields: `name` and `memberIds` (required when `whole`), `id` must
/// be `id` when given, `version` is ignored (the header carries the condition).
fn group_fields(
    data: &Data,
    body: &Map<String, Value>,
    id: Option<&str>,
    whole: bool,
) -> Result<(String, Vec<String>), Fail> {
    for key in body.keys() {
        if !["id", "name", "memberIds", "version"].contains(&key.as_str()) {
            return Err(bad_request(&format!("unknown field {key:?}")).into());
        }
    }
    if let (Some(given), Some(id)) = (body.get("id"), id) {
        if given.as_str() != Some(id) {
            return Err(bad_request("id does not match the path").into());
        }
    }
    let name = match body.get("name") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        _ => return Err(bad_request("name is required and must be a non-empty string").into()),
    };
    let members = match body.get("memberIds") {
        None if !whole => Vec::new(),
        Some(Value::Array(items)) => {
            let mut members: Vec<String> = Vec::new();
            for item in items {
                let Some(m) = item.as_str() else {
                    return Err(bad_request("memberIds must be strings").into());
                };
                if members.iter().any(|x| x == m) {
                    return Err(bad_request(&format!("memberIds lists {m} twice")).into());
                }
                if !data.users.iter().any(|u| u.id == m) {
                    return Err(bad_request(&format!("unknown user id {m}")).into());
                }
                members.push(m.to_owned());
            }
            members
        }
        _ => {
            return Err(bad_request(
                "PUT needs the whole group: name and memberIds (an array of user ids)",
            )
            .into())
        }
    };
    if data
        .groups
        .iter()
        .any(|g| Some(g.id.as_str()) != id && g.name.eq_ignore_ascii_case(&name))
    {
        return Err(message(
            StatusCode::CONFLICT,
            &format!("group name {name:?} is already taken"),
        )
        .into());
    }
    Ok((name, members))
}

async fn create_group(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    let body = match object(&body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let mut data = lock(&inner.data);
    let (name, member_ids) = match group_fields(&data, &body, None, false) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let group = Group {
        id: new_uuid(),
        name,
        member_ids,
        version: 1,
    };
    let answer = group.json();
    data.groups.push(group);
    (StatusCode::CREATED, Json(answer)).into_response()
}

fn group_json(inner: &Inner, id: &str) -> Option<Value> {
    lock(&inner.data)
        .groups
        .iter()
        .find(|g| g.id == id)
        .map(Group::json)
}

async fn get_group(State(inner): State<Arc<Inner>>, Path(id): Path<String>) -> Response {
    let held = {
        let mut data = lock(&inner.data);
        match &mut data.hold {
            Some(h) if h.left > 0 => {
                h.left -= 1;
                Some((h.barrier.clone(), h.snapshot.clone()))
            }
            _ => None,
        }
    };
    if let Some((barrier, snapshot)) = held {
        let wait = Duration::from_secs(3);
        if let Ok(first) = tokio::time::timeout(wait, barrier.wait()).await {
            if first.is_leader() {
                *lock(&snapshot) = group_json(&inner, &id);
            }
            if tokio::time::timeout(wait, barrier.wait()).await.is_ok() {
                let shared = lock(&snapshot).clone();
                if let Some(group) = shared.filter(|g| g["id"] == id.as_str()) {
                    return Json(group).into_response();
                }
            }
        }
    }
    match group_json(&inner, &id) {
        Some(g) => Json(g).into_response(),
        None => message(StatusCode::NOT_FOUND, "group not found"),
    }
}

/// `If-Match: 3` or `If-Match: "3"`.
fn if_match(headers: &HeaderMap) -> Option<Result<u64, ()>> {
    let text = headers.get(header::IF_MATCH)?.to_str().map_err(|_| ());
    Some(text.and_then(|t| {
        let t = t.trim();
        let t = t
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .unwrap_or(t);
        t.parse().map_err(|_| ())
    }))
}

async fn put_group(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut data = lock(&inner.data);
    let Some(index) = data.groups.iter().position(|g| g.id == id) else {
        return message(StatusCode::NOT_FOUND, "group not found");
    };
    let current = data.groups[index].version;
    match if_match(&headers) {
        None => {
            return message(
                StatusCode::PRECONDITION_REQUIRED,
                "If-Match is required: send the version of the group you read",
            )
        }
        Some(Err(())) => return bad_request("If-Match must be the group's version number"),
        Some(Ok(v)) if v != current => {
            data.precondition_failures += 1;
            return message(
                StatusCode::PRECONDITION_FAILED,
                &format!("version mismatch: the group is at version {current}"),
            );
        }
        Some(Ok(_)) => {}
    }
    let body = match object(&body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let (name, member_ids) = match group_fields(&data, &body, Some(&id), true) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let group = &mut data.groups[index];
    group.name = name;
    group.member_ids = member_ids;
    group.version += 1;
    Json(group.json()).into_response()
}

async fn delete_group(State(inner): State<Arc<Inner>>, Path(id): Path<String>) -> Response {
    let mut data = lock(&inner.data);
    let Some(index) = data.groups.iter().position(|g| g.id == id) else {
        return message(StatusCode::NOT_FOUND, "group not found");
    };
    data.groups.remove(index);
    StatusCode::NO_CONTENT.into_response()
}
