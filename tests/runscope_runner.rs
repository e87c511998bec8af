//! Tests of the Runscope suite runner (`tests/runscope/mod.rs`) against a
//! small in-memory SCIM stub server with plantable faults.

mod runscope;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use runscope::{SuiteReport, Target, CRUD_SUITE, SPEC_SUITE};

// ---------------------------------------------------------------------------
// The stub SCIM server
// ---------------------------------------------------------------------------

const TOKEN: &str = "stub-secret-token";
const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// Misbehaviours the stub can be told to show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Fault {
    /// Every `GET /Users/{id}` answers 500.
    GetUser500,
    /// `GET /Users/{id}` answers 500 for users that exist (404s stay right).
    GetExistingUser500,
    /// A request without the Bearer token gets 403 instead of 401.
    BadToken403,
    /// `GET /Groups` takes 700 ms.
    SlowGroups,
    /// `GET /Groups` reports totalResults 1 but `Resources` is an object.
    GroupsResourcesNotArray,
    /// `POST /Users` with a taken userName creates a second user (201).
    NoDuplicateCheck,
    /// `PATCH /Users/{id}` answers 500.
    PatchFails,
    /// `PATCH /Users/{id}` answers 200 but changes nothing.
    PatchIgnored,
    /// `PUT /Users/{id}` answers 500.
    PutFails,
}

#[derive(Default)]
struct StubState {
    users: BTreeMap<String, Value>,
    next_id: u64,
    faults: HashSet<Fault>,
}

type Shared = Arc<Mutex<StubState>>;

fn has(state: &Shared, fault: Fault) -> bool {
    state.lock().unwrap().faults.contains(&fault)
}

fn scim(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/scim+json")],
        body.to_string(),
    )
        .into_response()
}

fn scim_error(status: StatusCode, scim_type: Option<&str>, detail: &str) -> Response {
    let mut body = json!({
        "schemas": [ERROR_SCHEMA],
        "status": status.as_u16().to_string(),
        "detail": detail,
    });
    if let Some(t) = scim_type {
        body["scimType"] = json!(t);
    }
    scim(status, body)
}

async fn require_bearer(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let expected = format!("Bearer {TOKEN}");
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if given == Some(expected.as_str()) {
        return next.run(req).await;
    }
    if has(&state, Fault::BadToken403) {
        scim_error(StatusCode::FORBIDDEN, None, "Forbidden")
    } else {
        scim_error(
            StatusCode::UNAUTHORIZED,
            None,
            "Authentication failed: a valid Bearer token is required",
        )
    }
}

fn user_name_of(user: &Value) -> String {
    user.get("userName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// Parse the only filter Okta sends: `userName eq "value"`.
fn parse_user_name_filter(filter: &str) -> Option<String> {
    let f = filter.trim();
    let (attr, rest) = f.split_once(char::is_whitespace)?;
    if !attr.eq_ignore_ascii_case("userName") {
        return None;
    }
    let (op, value) = rest.trim_start().split_once(char::is_whitespace)?;
    if !op.eq_ignore_ascii_case("eq") {
        return None;
    }
    let value = value.trim();
    let inner = value.strip_prefix('"')?.strip_suffix('"')?;
    Some(inner.replace("\\\"", "\""))
}

fn list_response(resources: Vec<Value>, total: usize, start_index: usize) -> Response {
    scim(
        StatusCode::OK,
        json!({
            "schemas": [LIST_SCHEMA],
            "totalResults": total,
            "startIndex": start_index,
            "itemsPerPage": resources.len(),
            "Resources": resources,
        }),
    )
}

async fn list_users(
    State(state): State<Shared>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let number = |k: &str, default: usize| -> Option<usize> {
        params.get(k).map_or(Some(default), |v| v.parse().ok())
    };
    let (Some(start_index), Some(count)) = (number("startIndex", 1), number("count", 100)) else {
        return scim_error(
            StatusCode::BAD_REQUEST,
            Some("invalidValue"),
            "startIndex and count must be numbers",
        );
    };
    let start_index = start_index.max(1);
    let wanted = match params.get("filter") {
        None => None,
        Some(f) => match parse_user_name_filter(f) {
            Some(v) => Some(v.to_lowercase()),
            None => {
                return scim_error(
                    StatusCode::BAD_REQUEST,
                    Some("invalidFilter"),
                    &format!("unsupported filter `{f}`"),
                );
            }
        },
    };
    let st = state.lock().unwrap();
    let matching: Vec<Value> = st
        .users
        .values()
        .filter(|u| {
            wanted
                .as_ref()
                .is_none_or(|w| user_name_of(u).to_lowercase() == *w)
        })
        .cloned()
        .collect();
    let total = matching.len();
    let page = matching
        .into_iter()
        .skip(start_index - 1)
        .take(count)
        .collect();
    list_response(page, total, start_index)
}

fn parse_body(body: &Bytes) -> Result<Value, Box<Response>> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| {
            Box::new(scim_error(
                StatusCode::BAD_REQUEST,
                Some("invalidSyntax"),
                "body must be a JSON object",
            ))
        })
}

fn user_name_taken(st: &StubState, user_name: &str, except: Option<&str>) -> bool {
    st.users.iter().any(|(id, u)| {
        Some(id.as_str()) != except && user_name_of(u).eq_ignore_ascii_case(user_name)
    })
}

/// Store `user` under `id` with the server-managed attributes set.
fn store(st: &mut StubState, id: &str, mut user: Value) -> Value {
    user["id"] = json!(id);
    user["schemas"] = json!([USER_SCHEMA]);
    if !user.get("active").is_some_and(Value::is_boolean) {
        user["active"] = json!(true);
    }
    if let Some(obj) = user.as_object_mut() {
        obj.remove("password");
    }
    user["meta"] = json!({ "resourceType": "User", "location": format!("/scim/v2/Users/{id}") });
    st.users.insert(id.to_string(), user.clone());
    user
}

async fn create_user(State(state): State<Shared>, body: Bytes) -> Response {
    let user = match parse_body(&body) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let user_name = user_name_of(&user);
    if user_name.is_empty() {
        return scim_error(
            StatusCode::BAD_REQUEST,
            Some("invalidValue"),
            "userName is required",
        );
    }
    let mut st = state.lock().unwrap();
    if !st.faults.contains(&Fault::NoDuplicateCheck) && user_name_taken(&st, &user_name, None) {
        return scim_error(
            StatusCode::CONFLICT,
            Some("uniqueness"),
            &format!("userName `{user_name}` is already taken"),
        );
    }
    st.next_id += 1;
    let id = format!("stub-{:06}", st.next_id);
    let stored = store(&mut st, &id, user);
    scim(StatusCode::CREATED, stored)
}

fn not_found(id: &str) -> Response {
    scim_error(StatusCode::NOT_FOUND, None, &format!("User {id} not found"))
}

async fn get_user(State(state): State<Shared>, UrlPath(id): UrlPath<String>) -> Response {
    let st = state.lock().unwrap();
    if st.faults.contains(&Fault::GetUser500) {
        return scim_error(StatusCode::INTERNAL_SERVER_ERROR, None, "planted fault");
    }
    match st.users.get(&id) {
        Some(_) if st.faults.contains(&Fault::GetExistingUser500) => {
            scim_error(StatusCode::INTERNAL_SERVER_ERROR, None, "planted fault")
        }
        Some(u) => scim(StatusCode::OK, u.clone()),
        None => not_found(&id),
    }
}

async fn replace_user(
    State(state): State<Shared>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Response {
    let user = match parse_body(&body) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let mut st = state.lock().unwrap();
    if st.faults.contains(&Fault::PutFails) {
        return scim_error(StatusCode::INTERNAL_SERVER_ERROR, None, "planted fault");
    }
    if !st.users.contains_key(&id) {
        return not_found(&id);
    }
    if user.get("id").is_some_and(|given| given != &json!(id)) {
        return scim_error(
            StatusCode::BAD_REQUEST,
            Some("mutability"),
            "id does not match the URL",
        );
    }
    let user_name = user_name_of(&user);
    if user_name.is_empty() {
        return scim_error(
            StatusCode::BAD_REQUEST,
            Some("invalidValue"),
            "userName is required",
        );
    }
    if user_name_taken(&st, &user_name, Some(&id)) {
        return scim_error(
            StatusCode::CONFLICT,
            Some("uniqueness"),
            "userName is already taken",
        );
    }
    let stored = store(&mut st, &id, user);
    scim(StatusCode::OK, stored)
}

/// PATCH with `replace`/`add` of top-level attributes, either with a `path`
/// or with a `value` object (the form Okta sends for `active`).
async fn patch_user(
    State(state): State<Shared>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Response {
    let patch = match parse_body(&body) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let mut st = state.lock().unwrap();
    if st.faults.contains(&Fault::PatchFails) {
        return scim_error(StatusCode::INTERNAL_SERVER_ERROR, None, "planted fault");
    }
    let Some(mut user) = st.users.get(&id).cloned() else {
        return not_found(&id);
    };
    let schema_ok = patch
        .get("schemas")
        .and_then(Value::as_array)
        .is_some_and(|s| s.iter().any(|x| x == PATCH_SCHEMA));
    let Some(ops) = patch.get("Operations").and_then(Value::as_array) else {
        return scim_error(
            StatusCode::BAD_REQUEST,
            Some("invalidSyntax"),
            "no Operations",
        );
    };
    if !schema_ok {
        return scim_error(
            StatusCode::BAD_REQUEST,
            Some("invalidSyntax"),
            "not a PatchOp",
        );
    }
    for op in ops {
        let kind = op
            .get("op")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_lowercase();
        if kind != "replace" && kind != "add" {
            return scim_error(
                StatusCode::BAD_REQUEST,
                Some("invalidSyntax"),
                "only add/replace are supported",
            );
        }
        let value = op.get("value").cloned().unwrap_or(Value::Null);
        match op.get("path").and_then(Value::as_str) {
            Some(path) if !path.contains(['.', '[']) => user[path] = value,
            Some(_) => {
                return scim_error(
                    StatusCode::BAD_REQUEST,
                    Some("invalidPath"),
                    "only top-level paths are supported",
                );
            }
            None => match value.as_object() {
                Some(obj) => {
                    for (k, v) in obj {
                        user[k.as_str()] = v.clone();
                    }
                }
                None => {
                    return scim_error(
                        StatusCode::BAD_REQUEST,
                        Some("invalidValue"),
                        "a path-less operation needs an object value",
                    );
                }
            },
        }
    }
    if st.faults.contains(&Fault::PatchIgnored) {
        let unchanged = st.users[&id].clone();
        return scim(StatusCode::OK, unchanged);
    }
    let stored = store(&mut st, &id, user);
    scim(StatusCode::OK, stored)
}

async fn delete_user(State(state): State<Shared>, UrlPath(id): UrlPath<String>) -> Response {
    match state.lock().unwrap().users.remove(&id) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => not_found(&id),
    }
}

async fn list_groups(State(state): State<Shared>) -> Response {
    if has(&state, Fault::SlowGroups) {
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let group = json!({
        "schemas": [GROUP_SCHEMA],
        "id": "group-1",
        "displayName": "Engineering",
        "members": [],
    });
    if has(&state, Fault::GroupsResourcesNotArray) {
        return scim(
            StatusCode::OK,
            json!({
                "schemas": [LIST_SCHEMA],
                "totalResults": 1,
                "startIndex": 1,
                "itemsPerPage": 1,
                "Resources": group,
            }),
        );
    }
    list_response(vec![group], 1, 1)
}

/// A running stub; the server task ends with the test's runtime.
struct Stub {
    target: Target,
}

async fn start_stub(faults: &[Fault]) -> Stub {
    let mut st = StubState {
        faults: faults.iter().copied().collect(),
        ..StubState::default()
    };
    // One user is there from the start (the SPEC suite's first step lists it).
    st.next_id = 1;
    store(
        &mut st,
        "stub-000001",
        json!({
            "userName": "seed.user@example.com",
            "name": { "givenName": "Seed", "familyName": "User" },
            "emails": [{ "primary": true, "value": "seed.user@example.com", "type": "work" }],
            "displayName": "Seed User",
            "active": true,
        }),
    );
    let state: Shared = Arc::new(Mutex::new(st));
    let scim_routes = Router::new()
        .route("/Users", get(list_users).post(create_user))
        .route(
            "/Users/{id}",
            get(get_user)
                .put(replace_user)
                .patch(patch_user)
                .delete(delete_user),
        )
        .route("/Groups", get(list_groups))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            require_bearer,
        ));
    let app = Router::new()
        .nest("/scim/v2", scim_routes)
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Stub {
        target: Target {
            scim_base_url: format!("http://{addr}/scim/v2"),
            authorization: format!("Bearer {TOKEN}"),
        },
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn suite(file: &str) -> PathBuf {
    runscope::locate_suite(file).unwrap_or_else(|e| panic!("{e}"))
}

async fn run(file: &str, faults: &[Fault]) -> SuiteReport {
    let stub = start_stub(faults).await;
    let report = runscope::run_suite(&suite(file), &stub.target)
        .await
        .unwrap_or_else(|e| panic!("run_suite({file}) failed: {e}"));
    println!("--- faults: {faults:?}");
    report.print();
    report
}

fn failed_names(report: &SuiteReport) -> BTreeSet<String> {
    report.failed().iter().map(|s| s.name.clone()).collect()
}

fn failed_steps(report: &SuiteReport) -> BTreeSet<(usize, String)> {
    report
        .failed()
        .iter()
        .map(|s| (s.index, s.name.clone()))
        .collect()
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Write a throw-away suite export and return its path.
fn temp_suite(tag: &str, export: &Value) -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("runscope-runner-{tag}-{}.json", std::process::id()));
    std::fs::write(&path, export.to_string()).unwrap();
    path
}

// SPEC step names, as written in the export.
const S_LIST: &str = "Required Test: Test Users endpoint";
const S_GET: &str = "Required Test: Get Users/{{id}}";
const S_INVALID_NAME: &str = "Required Test: Test invalid User by username";
const S_INVALID_ID: &str = "Required Test: Test invalid User by ID";
const S_RANDOM_ABSENT: &str = "Required Test: Make sure random user doesn't exist";
const S_CREATE: &str = "Required Test: Create Okta user with realistic values";
const S_VERIFY: &str = "Required Test: Verify that user was created";
const S_DUPLICATE: &str = "Required Test: Expect failure when recreating user with same values";
const S_CASE: &str = "Required Test: Username Case Sensitivity Check";
const S_GROUPS: &str = "Optional Test: Verify Groups endpoint";
const S_401: &str = "Required Test: Check status 401";
const S_404: &str = "Required Test: Check status 404";

// ---------------------------------------------------------------------------
// SPEC suite
// ---------------------------------------------------------------------------

#[tokio::test]
async fn spec_suite_against_stub() {
    let request_steps = runscope::count_request_steps(&suite(SPEC_SUITE)).unwrap();
    assert_eq!(request_steps, 12, "the SPEC export has 12 request steps");

    let cases: Vec<(&str, Vec<Fault>, Vec<&str>)> = vec![
        ("no faults", vec![], vec![]),
        (
            "GET /Users/{id} always 500",
            vec![Fault::GetUser500],
            vec![S_GET, S_INVALID_ID, S_VERIFY, S_404],
        ),
        (
            "planted: existing user 500, 403 for bad token, slow Groups",
            vec![
                Fault::GetExistingUser500,
                Fault::BadToken403,
                Fault::SlowGroups,
            ],
            vec![S_GET, S_VERIFY, S_401, S_GROUPS],
        ),
        (
            "Groups Resources not an array (native script check)",
            vec![Fault::GroupsResourcesNotArray],
            vec![S_GROUPS],
        ),
        (
            "duplicate userName accepted",
            vec![Fault::NoDuplicateCheck],
            vec![S_DUPLICATE],
        ),
    ];

    let mut mismatches = Vec::new();
    for (label, faults, expected) in cases {
        let report = run(SPEC_SUITE, &faults).await;
        assert_eq!(
            report.ran(),
            request_steps,
            "{label}: every request step runs"
        );
        assert_eq!(
            report.steps.len(),
            request_steps,
            "{label}: pauses are not reported"
        );
        let got = failed_names(&report);
        if got != names(&expected) {
            mismatches.push(format!(
                "{label}: expected {expected:?} to fail, got {got:?}"
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[tokio::test]
async fn spec_suite_reports_every_step_by_name() {
    let report = run(SPEC_SUITE, &[]).await;
    let all: Vec<&str> = report.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        all,
        vec![
            S_LIST,
            S_GET,
            S_INVALID_NAME,
            S_INVALID_ID,
            S_RANDOM_ABSENT,
            S_CREATE,
            S_VERIFY,
            S_DUPLICATE,
            S_CASE,
            S_GROUPS,
            S_401,
            S_404
        ]
    );
    let indexes: Vec<usize> = report.steps.iter().map(|s| s.index).collect();
    assert_eq!(indexes, vec![0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22]);
    assert!(report.steps.iter().all(|s| s.passed && !s.skipped));
}

#[tokio::test]
async fn failure_messages_say_what_happened() {
    let report = run(SPEC_SUITE, &[Fault::BadToken403, Fault::SlowGroups]).await;
    let by_name: HashMap<&str, &runscope::StepOutcome> =
        report.steps.iter().map(|s| (s.name.as_str(), s)).collect();
    let f401 = by_name[S_401].failures.join("\n");
    assert!(
        f401.contains("response_status equal_number `401`"),
        "{f401}"
    );
    assert!(f401.contains("got 403"), "{f401}");
    let groups = by_name[S_GROUPS].failures.join("\n");
    assert!(
        groups.contains("response_time is_less_than `600`"),
        "{groups}"
    );
}

// ---------------------------------------------------------------------------
// CRUD suite (Okta org emulated)
// ---------------------------------------------------------------------------

#[tokio::test]
async fn crud_suite_against_stub() {
    let request_steps = runscope::count_request_steps(&suite(CRUD_SUITE)).unwrap();
    assert_eq!(request_steps, 13, "the CRUD export has 13 request steps");

    let deactivate = (8, "Deactivate user in Okta");
    let verify_deactivated = (10, "Verify if user is deactivated in SCIM App");
    let reassign = (12, "Assign user to SCIM App");
    let unassign = (16, "Removes an assignment for a user in Okta");
    let verify_unassigned = (18, "Verify if user is deactivated in SCIM App");
    let update = (5, "Update user firstname");
    let verify_update = (7, "Verify firstname update in SCIM App");

    type Case = (&'static str, Vec<Fault>, Vec<(usize, &'static str)>);
    let cases: Vec<Case> = vec![
        ("no faults", vec![], vec![]),
        (
            "PATCH answers 500",
            vec![Fault::PatchFails],
            vec![
                deactivate,
                verify_deactivated,
                reassign,
                unassign,
                verify_unassigned,
            ],
        ),
        (
            "PATCH answers 200 but changes nothing",
            vec![Fault::PatchIgnored],
            vec![verify_deactivated, verify_unassigned],
        ),
        (
            "PUT answers 500",
            vec![Fault::PutFails],
            vec![update, verify_update, reassign],
        ),
    ];

    let mut mismatches = Vec::new();
    for (label, faults, expected) in cases {
        let report = run(CRUD_SUITE, &faults).await;
        assert_eq!(
            report.ran(),
            request_steps,
            "{label}: every request step runs"
        );
        let expected: BTreeSet<(usize, String)> =
            expected.iter().map(|(i, n)| (*i, n.to_string())).collect();
        let got = failed_steps(&report);
        if got != expected {
            mismatches.push(format!(
                "{label}: expected {expected:?} to fail, got {got:?}"
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[tokio::test]
async fn crud_emulation_failure_names_the_scim_call() {
    let report = run(CRUD_SUITE, &[Fault::PatchFails]).await;
    let deactivate = report.steps.iter().find(|s| s.index == 8).unwrap();
    let text = deactivate.failures.join("\n");
    assert!(
        text.contains("PATCH /Users/stub-000002 answered 500, Okta expects 200"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------
// The runner never passes what it cannot check
// ---------------------------------------------------------------------------

fn request_step(note: &str, url: &str, assertions: Value, scripts: Value) -> Value {
    json!({
        "step_type": "request",
        "note": note,
        "method": "GET",
        "url": url,
        "headers": { "Authorization": ["{{auth}}"], "Accept": "application/scim+json" },
        "assertions": assertions,
        "variables": [],
        "scripts": scripts,
        "before_scripts": [],
        "auth": {},
    })
}

#[tokio::test]
async fn unsupported_features_fail_loudly() {
    let stub = start_stub(&[]).await;
    let status_200 =
        json!([{ "source": "response_status", "comparison": "equal_number", "value": 200 }]);
    let export = json!({
        "name": "runner self-check",
        "steps": [
            request_step("unknown comparison", "{{SCIMBaseURL}}/Users",
                json!([{ "source": "response_json", "comparison": "matches_regex", "property": "totalResults", "value": "1" }]),
                json!([])),
            request_step("unknown source", "{{SCIMBaseURL}}/Users",
                json!([{ "source": "response_headers", "comparison": "not_empty", "property": "Content-Type", "value": null }]),
                json!([])),
            request_step("unknown script", "{{SCIMBaseURL}}/Users", status_200.clone(),
                json!(["assert.equal(response.status, 200);"])),
            request_step("empty script", "{{SCIMBaseURL}}/Users", status_200.clone(), json!([""])),
            { "step_type": "pause", "duration": 30 },
            { "step_type": "condition", "left_value": "1" },
            request_step("skipped step", "{{SCIMBaseURL}}/Users", status_200.clone(), json!([])),
            request_step("extracts nothing", "{{SCIMBaseURL}}/Users?count=0", status_200.clone(), json!([])),
            request_step("uses the missing variable", "{{SCIMBaseURL}}/Users/{{neverThere}}", status_200.clone(), json!([])),
        ],
    });
    let mut export = export;
    export["steps"][6]["skipped"] = json!(true);
    export["steps"][7]["variables"] =
        json!([{ "source": "response_json", "name": "neverThere", "property": "Resources[0].id" }]);
    let path = temp_suite("unsupported", &export);
    let started = std::time::Instant::now();
    let report = runscope::run_suite(&path, &stub.target).await.unwrap();
    std::fs::remove_file(&path).ok();
    report.print();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "pauses are not slept"
    );

    let outcome = |name: &str| {
        report
            .steps
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no step {name}"))
    };
    assert!(outcome("unknown comparison").failures[0]
        .contains("unsupported comparison `matches_regex`"));
    assert!(outcome("unknown source").failures[0].contains("unsupported assertion source"));
    assert!(outcome("unknown script").failures[0].contains("script cannot be executed"));
    assert!(outcome("empty script").passed);
    assert!(outcome("skipped step").skipped);
    assert!(outcome("extracts nothing").passed);
    let missing = outcome("uses the missing variable");
    assert!(!missing.passed);
    assert!(
        missing.failures[0].contains("{{neverThere}} is undefined"),
        "{:?}",
        missing.failures
    );
    let condition = report.steps.iter().find(|s| s.index == 5).unwrap();
    assert!(
        !condition.passed && condition.failures[0].contains("unsupported step type `condition`")
    );
    assert_eq!(report.steps.len(), 8);
    assert_eq!(report.ran(), 7);
    assert_eq!(report.failed().len(), 5);
}

#[tokio::test]
async fn undefined_variable_is_an_error_before_anything_runs() {
    let export = json!({
        "name": "undefined variable",
        "steps": [
            request_step("first", "{{SCIMBaseURL}}/Users", json!([]), json!([])),
            request_step("second", "{{SCIMBaseURL}}/Users/{{noSuchVariable}}", json!([]), json!([])),
        ],
    });
    let path = temp_suite("undefined", &export);
    let target = Target {
        scim_base_url: "http://127.0.0.1:9/scim/v2".to_string(),
        authorization: "Bearer x".to_string(),
    };
    let err = runscope::run_suite(&path, &target).await.unwrap_err();
    std::fs::remove_file(&path).ok();
    assert!(err.contains("{{noSuchVariable}}"), "{err}");
    assert!(err.contains("step #1 `second`"), "{err}");
}

#[test]
fn every_variable_of_both_suites_is_defined() {
    let target = Target {
        scim_base_url: "http://127.0.0.1:1/scim/v2/".to_string(),
        authorization: "Bearer t".to_string(),
    };
    let vars = runscope::initial_variables(&target);
    assert_eq!(vars["SCIMBaseURL"], "http://127.0.0.1:1/scim/v2");
    assert_eq!(vars["SCIMUrl"], vars["SCIMBaseURL"]);
    assert_eq!(vars["auth"], "Bearer t");
    assert_eq!(vars["SCIMAuth"], "Bearer t");
    assert_eq!(
        vars["randomUsernameCaps"],
        vars["randomUsername"].to_uppercase()
    );
    assert_ne!(vars["randomUsername"], vars["randomEmail"]);
    assert_ne!(
        vars["okta_user_firstname"],
        vars["okta_user_firstname_update"]
    );
    assert!(
        vars["randomUsername"].starts_with("Runscope")
            && vars["randomUsername"].ends_with("@atko.com")
    );
    assert_eq!(vars["UserIdThatDoesNotExist"].len(), 36);
    // Every {{name}} either is set up front or extracted by the suite itself.
    for file in [SPEC_SUITE, CRUD_SUITE] {
        let text = std::fs::read_to_string(suite(file)).unwrap();
        let export: Value = serde_json::from_str(&text).unwrap();
        let extracted: HashSet<String> = export["steps"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["variables"].as_array().cloned().unwrap_or_default())
            .filter_map(|v| v["name"].as_str().map(str::to_string))
            .collect();
        // Skip notes: they are labels, not templates ("Get Users/{{id}}").
        let mut templated = String::new();
        for step in export["steps"].as_array().unwrap() {
            for key in ["url", "headers", "body", "assertions"] {
                templated.push_str(&step[key].to_string());
            }
        }
        let mut rest = templated.as_str();
        while let Some(start) = rest.find("{{") {
            let end = rest[start..].find("}}").unwrap() + start;
            let name = rest[start + 2..end].trim();
            assert!(
                vars.contains_key(name) || extracted.contains(name),
                "{file} uses {{{{{name}}}}}, which nothing defines"
            );
            rest = &rest[end + 2..];
        }
    }
}

#[test]
fn queries_are_percent_encoded_like_a_browser() {
    let url = runscope::wire_url(
        "http://127.0.0.1:1/scim/v2/Users?filter=userName eq \"Runscope1@atko.com\"&count=1#frag",
    )
    .unwrap();
    assert_eq!(
        url.as_str(),
        "http://127.0.0.1:1/scim/v2/Users?filter=userName%20eq%20%22Runscope1@atko.com%22&count=1"
    );
    // Existing escapes are kept, not double-encoded.
    assert_eq!(
        runscope::encode_query("a=%22x%22&b=1 2"),
        "a=%22x%22&b=1%202"
    );
    assert_eq!(runscope::encode_query("a=50%"), "a=50%25");
}

#[test]
fn runscope_property_paths() {
    let doc = json!({
        "Resources": [{ "emails": [{ "value": "a@b.c" }], "active": false }],
        "totalResults": 1
    });
    let at = |p: &str| runscope::json_path(&doc, p).unwrap().cloned();
    assert_eq!(at("Resources[0].emails[0].value"), Some(json!("a@b.c")));
    assert_eq!(at("Resources[0].active"), Some(json!(false)));
    assert_eq!(at("totalResults"), Some(json!(1)));
    assert_eq!(at("Resources[1].id"), None);
    assert_eq!(at("nothing.here"), None);
    assert!(runscope::json_path(&doc, "Resources[x]").is_err());
}
