//! The "Beacon HR API", in memory.
//!
//! Its shape, as an operator would find it documented:
//! - base path `/v1`, `Authorization: Bearer <service token>`, bare JSON bodies;
//! - every list answers `{"items": [...], "next_cursor": "..." | null}` for `?limit=&cursor=`
//!   (`limit` 1..=100, default 25; the cursor is opaque) and never says how many there are;
//! - employees `{id: "emp_101", username, name: {first, last}, work_email, status:
//!   "ENABLED"|"DISABLED", deleted}`: `GET /employees?username=&work_email=` (exact),
//!   `POST /employees`, `GET /employees/{id}`, `PUT /employees/{id}` with the WHOLE employee
//!   (there is no PATCH for fields), and soft delete only: `PATCH /employees/{id}` with exactly
//!   `{"deleted": true}`. `DELETE` is 405. Deleted employees are 404 and left out of every
//!   list (and free their username). A username taken in any casing is a 400 titled
//!   "Duplicate username"; work emails are not checked for uniqueness at all;
//! - teams `{id: "team_7", name}`: `GET /teams?name=`, `POST /teams`, `GET/PATCH/DELETE
//!   /teams/{id}`; a duplicate name is 409. Members behind their own endpoints: `GET
//!   /teams/{id}/members` (items `{employee_id, username}`), `POST` and `DELETE
//!   /teams/{id}/members/{employee_id}` (already a member: 409; not a member: 404 "Not a
//!   member"; unknown employee: 404 "Employee not found");
//! - every error, including 401 and unknown routes, is RFC 9457 `application/problem+json`
//!   `{"type", "title", "status", "detail"}`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::{has_service_token, lock, serve, take_body, Fail, Params, Recorded};

/// Prefix of every Beacon path.
pub const BASE: &str = "/v1";

/// A Beacon employee.
#[derive(Debug, Clone, PartialEq)]
pub struct Employee {
    pub id: String,
    pub username: String,
    pub first: String,
    pub last: String,
    pub work_email: String,
    pub status: String,
    pub deleted: bool,
}

impl Employee {
    /// The employee as the API answers it.
    pub fn json(&self) -> Value {
        json!({
            "id": self.id,
            "username": self.username,
            "name": {"first": self.first, "last": self.last},
            "work_email": self.work_email,
            "status": self.status,
            "deleted": self.deleted,
        })
    }
}

/// A Beacon team; `members` are employee ids in the order they were added.
#[derive(Debug, Clone, PartialEq)]
pub struct Team {
    pub id: String,
    pub name: String,
    pub members: Vec<String>,
}

impl Team {
    pub fn json(&self) -> Value {
        json!({"id": self.id, "name": self.name})
    }
}

#[derive(Default)]
struct Data {
    employees: Vec<Employee>,
    teams: Vec<Team>,
    next_employee: u64,
    next_team: u64,
    requests: Vec<Recorded>,
}

struct Inner {
    data: Mutex<Data>,
}

/// Handle to one in-memory Beacon HR; clones share the state.
#[derive(Clone)]
pub struct Beacon {
    inner: Arc<Inner>,
    addr: SocketAddr,
}

impl Data {
    fn new_employee(
        &mut self,
        username: &str,
        first: &str,
        last: &str,
        work_email: &str,
    ) -> Employee {
        self.next_employee += 1;
        Employee {
            id: format!("emp_{}", 100 + self.next_employee),
            username: username.to_owned(),
            first: first.to_owned(),
            last: last.to_owned(),
            work_email: work_email.to_owned(),
            status: "ENABLED".to_owned(),
            deleted: false,
        }
    }

    fn live(&self, id: &str) -> Option<usize> {
        self.employees.iter().position(|e| e.id == id && !e.deleted)
    }

    fn username_taken(&self, username: &str, except: Option<&str>) -> bool {
        self.employees.iter().any(|e| {
            !e.deleted && Some(e.id.as_str()) != except && e.username.eq_ignore_ascii_case(username)
        })
    }
}

impl Beacon {
    /// An empty Beacon served on `127.0.0.1:0`.
    pub async fn start() -> Beacon {
        let inner = Arc::new(Inner {
            data: Mutex::new(Data::default()),
        });
        let addr = serve(router(inner.clone())).await;
        Beacon { inner, addr }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Adds an employee directly (no HTTP); returns its id.
    pub fn seed_employee(&self, username: &str, first: &str, last: &str) -> String {
        let mut data = lock(&self.inner.data);
        let employee = data.new_employee(username, first, last, username);
        let id = employee.id.clone();
        data.employees.push(employee);
        id
    }

    /// Adds `n` employees `seed{k}@example.com`; returns their ids in list order.
    pub fn seed_employees(&self, n: usize) -> Vec<String> {
        let first = lock(&self.inner.data).employees.len();
        (first..first + n)
            .map(|k| self.seed_employee(&format!("seed{k}@example.com"), "Seed", &format!("No{k}")))
            .collect()
    }

    /// Adds a team directly; returns its id.
    pub fn seed_team(&self, name: &str, members: &[String]) -> String {
        let mut data = lock(&self.inner.data);
        data.next_team += 1;
        let team = Team {
            id: format!("team_{}", data.next_team),
            name: name.to_owned(),
            members: members.to_vec(),
        };
        let id = team.id.clone();
        data.teams.push(team);
        id
    }

    /// An employee as stored, soft-deleted ones included.
    pub fn employee(&self, id: &str) -> Option<Employee> {
        lock(&self.inner.data)
            .employees
            .iter()
            .find(|e| e.id == id)
            .cloned()
    }

    /// Every employee as stored (soft-deleted ones included), in list order.
    pub fn employees(&self) -> Vec<Employee> {
        lock(&self.inner.data).employees.clone()
    }

    pub fn team(&self, id: &str) -> Option<Team> {
        lock(&self.inner.data)
            .teams
            .iter()
            .find(|t| t.id == id)
            .cloned()
    }

    pub fn teams(&self) -> Vec<Team> {
        lock(&self.inner.data).teams.clone()
    }

    /// Every request received, in the order they were answered.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.inner.data).requests.clone()
    }
}

fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route(
            &format!("{BASE}/employees"),
            get(list_employees).post(create_employee),
        )
        .route(
            &format!("{BASE}/employees/{{id}}"),
            get(get_employee)
                .put(put_employee)
                .patch(patch_employee)
                .delete(|| async {
                    problem(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "Method not allowed",
                        "employees are deleted with PATCH {\"deleted\": true}",
                    )
                }),
        )
        .route(&format!("{BASE}/teams"), get(list_teams).post(create_team))
        .route(
            &format!("{BASE}/teams/{{id}}"),
            get(get_team).patch(patch_team).delete(delete_team),
        )
        .route(&format!("{BASE}/teams/{{id}}/members"), get(list_members))
        .route(
            &format!("{BASE}/teams/{{id}}/members/{{employee}}"),
            post(add_member).delete(remove_member),
        )
        .fallback(|| async { problem(StatusCode::NOT_FOUND, "Not found", "no such route") })
        .method_not_allowed_fallback(|| async {
            problem(
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed",
                "this route does not offer that method",
            )
        })
        .layer(middleware::from_fn_with_state(inner.clone(), front_door))
        .with_state(inner)
}

/// Records every request and checks the service credential.
async fn front_door(State(inner): State<Arc<Inner>>, request: Request, next: Next) -> Response {
    let (request, mut recorded) = take_body(request).await;
    let response = if has_service_token(request.headers()) {
        next.run(request).await
    } else {
        problem(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "missing or wrong bearer token",
        )
    };
    recorded.status = response.status().as_u16();
    lock(&inner.data).requests.push(recorded);
    response
}

/// An RFC 9457 problem answer.
fn problem(status: StatusCode, title: &str, detail: &str) -> Response {
    let slug: String = title
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let body = json!({
        "type": format!("https://beacon.example/problems/{slug}"),
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
    });
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

fn invalid(detail: &str) -> Response {
    problem(StatusCode::BAD_REQUEST, "Invalid request", detail)
}

fn employee_not_found() -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "Employee not found",
        "no such employee",
    )
}

fn team_not_found() -> Response {
    problem(StatusCode::NOT_FOUND, "Team not found", "no such team")
}

fn object(body: &Bytes) -> Result<Map<String, Value>, Fail> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(invalid("the body must be a JSON object").into()),
    }
}

/// The cursor is opaque to clients: the offset of the next item, disguised.
fn encode_cursor(offset: usize) -> String {
    format!("c1.{}", hex::encode(format!("after:{offset}")))
}

fn decode_cursor(cursor: &str) -> Option<usize> {
    let bytes = hex::decode(cursor.strip_prefix("c1.")?).ok()?;
    String::from_utf8(bytes)
        .ok()?
        .strip_prefix("after:")?
        .parse()
        .ok()
}

/// One page of a list: `{"items": [...], "next_cursor": ... | null}`.
fn page(items: Vec<Value>, params: &Params) -> Response {
    let limit = match params.get("limit") {
        None => 25,
        Some(v) => match v.parse::<usize>().ok().filter(|l| (1..=100).contains(l)) {
            Some(l) => l,
            None => return invalid("limit must be between 1 and 100"),
        },
    };
    let offset = match params.get("cursor") {
        None => 0,
        Some(c) => match decode_cursor(c) {
            Some(o) => o,
            None => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "Invalid cursor",
                    "the cursor is not one this API issued",
                )
            }
        },
    };
    let end = (offset + limit).min(items.len());
    let next = (end < items.len()).then(|| encode_cursor(end));
    let items: Vec<Value> = items.into_iter().skip(offset).take(limit).collect();
    Json(json!({"items": items, "next_cursor": next})).into_response()
}

fn text_field(body: &Map<String, Value>, key: &str) -> Result<String, Fail> {
    match body.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(_) => Err(invalid(&format!("{key} must be a non-empty string")).into()),
        None => Err(invalid(&format!("{key} is required")).into()),
    }
}

/// Reads a whole employee body (create and PUT): every field is required but `status`
/// (create defaults it to ENABLED); `id` must match, `deleted` must be false; nothing else.
fn employee_fields(
    body: &Map<String, Value>,
    id: Option<&str>,
    creating: bool,
) -> Result<(String, String, String, String, Option<String>), Fail> {
    for key in body.keys() {
        if !["id", "username", "name", "work_email", "status", "deleted"].contains(&key.as_str()) {
            return Err(invalid(&format!("unknown field {key:?}")).into());
        }
    }
    if let Some(given) = body.get("id") {
        if creating || given.as_str() != id {
            return Err(invalid("id is assigned by Beacon and cannot change").into());
        }
    }
    if body
        .get("deleted")
        .is_some_and(|d| d != &Value::Bool(false))
    {
        return Err(invalid("deleted can only be set with PATCH /employees/{id}").into());
    }
    let username = text_field(body, "username")?;
    let work_email = text_field(body, "work_email")?;
    let name = match body.get("name") {
        Some(Value::Object(name)) => name,
        _ => return Err(invalid("name {first, last} is required").into()),
    };
    for key in name.keys() {
        if key != "first" && key != "last" {
            return Err(invalid(&format!("unknown field name.{key}")).into());
        }
    }
    let first = text_field(name, "first").map_err(|_| invalid("name.first is required"))?;
    let last = text_field(name, "last").map_err(|_| invalid("name.last is required"))?;
    let status = match body.get("status") {
        None if creating => None,
        Some(Value::String(s)) if s == "ENABLED" || s == "DISABLED" => Some(s.clone()),
        _ => return Err(invalid("status must be ENABLED or DISABLED").into()),
    };
    Ok((username, first, last, work_email, status))
}

fn duplicate_username(username: &str) -> Response {
    problem(
        StatusCode::BAD_REQUEST,
        "Duplicate username",
        &format!("the username {username} is already in use"),
    )
}

async fn list_employees(State(inner): State<Arc<Inner>>, Query(params): Query<Params>) -> Response {
    let data = lock(&inner.data);
    let items = data
        .employees
        .iter()
        .filter(|e| !e.deleted)
        .filter(|e| params.get("username").is_none_or(|u| e.username == *u))
        .filter(|e| params.get("work_email").is_none_or(|m| e.work_email == *m))
        .map(Employee::json)
        .collect();
    page(items, &params)
}

async fn create_employee(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    let body = match object(&body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let (username, first, last, work_email, status) = match employee_fields(&body, None, true) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let mut data = lock(&inner.data);
    if data.username_taken(&username, None) {
        return duplicate_username(&username);
    }
    let mut employee = data.new_employee(&username, &first, &last, &work_email);
    if let Some(status) = status {
        employee.status = status;
    }
    let answer = employee.json();
    data.employees.push(employee);
    (StatusCode::CREATED, Json(answer)).into_response()
}

async fn get_employee(State(inner): State<Arc<Inner>>, Path(id): Path<String>) -> Response {
    let data = lock(&inner.data);
    match data.live(&id) {
        Some(i) => Json(data.employees[i].json()).into_response(),
        None => employee_not_found(),
    }
}

async fn put_employee(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let body = match object(&body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let mut data = lock(&inner.data);
    let Some(index) = data.live(&id) else {
        return employee_not_found();
    };
    let (username, first, last, work_email, status) = match employee_fields(&body, Some(&id), false)
    {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    if data.username_taken(&username, Some(&id)) {
        return duplicate_username(&username);
    }
    let employee = &mut data.employees[index];
    employee.username = username;
    employee.first = first;
    employee.last = last;
    employee.work_email = work_email;
    employee.status = status.unwrap_or_else(|| employee.status.clone());
    Json(employee.json()).into_response()
}

async fn patch_employee(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let body = match object(&body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    if body.len() != 1 || body.get("deleted") != Some(&Value::Bool(true)) {
        return invalid(
            "PATCH only deletes: send exactly {\"deleted\": true}; update with PUT and the whole employee",
        );
    }
    let mut data = lock(&inner.data);
    let Some(index) = data.live(&id) else {
        return employee_not_found();
    };
    data.employees[index].deleted = true;
    Json(data.employees[index].json()).into_response()
}

async fn list_teams(State(inner): State<Arc<Inner>>, Query(params): Query<Params>) -> Response {
    let data = lock(&inner.data);
    let items = data
        .teams
        .iter()
        .filter(|t| params.get("name").is_none_or(|n| t.name == *n))
        .map(Team::json)
        .collect();
    page(items, &params)
}

fn team_name(data: &Data, body: &Map<String, Value>, id: Option<&str>) -> Result<String, Fail> {
    for key in body.keys() {
        if key != "name" && key != "id" {
            return Err(invalid(&format!("unknown field {key:?}")).into());
        }
    }
    let name = text_field(body, "name")?;
    if data
        .teams
        .iter()
        .any(|t| Some(t.id.as_str()) != id && t.name.eq_ignore_ascii_case(&name))
    {
        return Err(problem(
            StatusCode::CONFLICT,
            "Duplicate team name",
            &format!("a team named {name} already exists"),
        )
        .into());
    }
    Ok(name)
}

async fn create_team(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    let body = match object(&body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let mut data = lock(&inner.data);
    if body.contains_key("id") {
        return invalid("id is assigned by Beacon");
    }
    let name = match team_name(&data, &body, None) {
        Ok(n) => n,
        Err(r) => return r.into_response(),
    };
    data.next_team += 1;
    let team = Team {
        id: format!("team_{}", data.next_team),
        name,
        members: Vec::new(),
    };
    let answer = team.json();
    data.teams.push(team);
    (StatusCode::CREATED, Json(answer)).into_response()
}

async fn get_team(State(inner): State<Arc<Inner>>, Path(id): Path<String>) -> Response {
    match lock(&inner.data).teams.iter().find(|t| t.id == id) {
        Some(t) => Json(t.json()).into_response(),
        None => team_not_found(),
    }
}

async fn patch_team(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let body = match object(&body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let mut data = lock(&inner.data);
    let Some(index) = data.teams.iter().position(|t| t.id == id) else {
        return team_not_found();
    };
    if body
        .get("id")
        .is_some_and(|given| given.as_str() != Some(id.as_str()))
    {
        return invalid("id cannot change");
    }
    let name = match team_name(&data, &body, Some(&id)) {
        Ok(n) => n,
        Err(r) => return r.into_response(),
    };
    data.teams[index].name = name;
    Json(data.teams[index].json()).into_response()
}

async fn delete_team(State(inner): State<Arc<Inner>>, Path(id): Path<String>) -> Response {
    let mut data = lock(&inner.data);
    let Some(index) = data.teams.iter().position(|t| t.id == id) else {
        return team_not_found();
    };
    data.teams.remove(index);
    StatusCode::NO_CONTENT.into_response()
}

async fn list_members(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    Query(params): Query<Params>,
) -> Response {
    let data = lock(&inner.data);
    let Some(team) = data.teams.iter().find(|t| t.id == id) else {
        return team_not_found();
    };
    let items = team
        .members
        .iter()
        .filter_map(|m| data.live(m).map(|i| &data.employees[i]))
        .map(|e| json!({"employee_id": e.id, "username": e.username}))
        .collect();
    page(items, &params)
}

async fn add_member(
    State(inner): State<Arc<Inner>>,
    Path((id, employee)): Path<(String, String)>,
) -> Response {
    let mut data = lock(&inner.data);
    let Some(team) = data.teams.iter().position(|t| t.id == id) else {
        return team_not_found();
    };
    let Some(e) = data.live(&employee) else {
        return employee_not_found();
    };
    let answer = json!({"employee_id": employee, "username": data.employees[e].username});
    if data.teams[team].members.contains(&employee) {
        return problem(
            StatusCode::CONFLICT,
            "Already a member",
            &format!("{employee} is already in {id}"),
        );
    }
    data.teams[team].members.push(employee);
    (StatusCode::CREATED, Json(answer)).into_response()
}

async fn remove_member(
    State(inner): State<Arc<Inner>>,
    Path((id, employee)): Path<(String, String)>,
) -> Response {
    let mut data = lock(&inner.data);
    let Some(team) = data.teams.iter_mut().find(|t| t.id == id) else {
        return team_not_found();
    };
    let before = team.members.len();
    team.members.retain(|m| *m != employee);
    if team.members.len() == before {
        return problem(
            StatusCode::NOT_FOUND,
            "Not a member",
            &format!("{employee} is not in {id}"),
        );
    }
    StatusCode::NO_CONTENT.into_response()
}
