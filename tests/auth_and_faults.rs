//! Authentication and upstream-fault behaviour of the gateway, over the real wire.
//!
//! Every test runs the real gateway in-process on 127.0.0.1:0 with the real
//! `mappings/blacksmith` mapping, in front of either the built-in demo upstream or a small
//! scriptable stub defined below (for answers the demo never gives: missing fields, slow,
//! non-JSON, planted statuses). The file is self-contained on purpose.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use scimgate::config::{AuthMode, Config, StaticKey};
use scimgate::demo::DemoUpstream;
use scimgate::server::{serve, Gateway};

const SERVICE_TOKEN: &str = "svc-token-auth-and-faults";
const INTROSPECT_PATH: &str = "/api/v1/scim_keys/introspect";
const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const STATIC_TOKEN: &str = "static-token-0f3a9c";

// ---- harness: gateway ------------------------------------------------------------------

/// Starts the gateway with this configuration and the Blacksmith mapping; returns a client.
async fn start_gateway(config: Config) -> Scim {
    let mapping = scimgate::mapping::load_dir(Path::new("mappings/blacksmith"))
        .unwrap_or_else(|e| panic!("the Blacksmith mapping does not load: {e}"));
    let gateway = Gateway::new(config, mapping).expect("the gateway builds");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let _ = serve(gateway, listener).await;
    });
    Scim {
        base: format!("http://{addr}/scim/v2"),
        http: reqwest::Client::new(),
    }
}

/// Introspect-mode configuration in front of `upstream_url`.
fn introspect_config(upstream_url: &str) -> Config {
    let mut config = Config::default();
    config.upstream.url = upstream_url.to_owned();
    config.upstream.token = Some(SERVICE_TOKEN.to_owned());
    config.auth.mode = AuthMode::Introspect;
    config
}

/// Static-mode configuration: [`STATIC_TOKEN`] is company 42's key `k_static`.
fn static_config(upstream_url: &str) -> Config {
    let mut config = introspect_config(upstream_url);
    config.auth.mode = AuthMode::Static;
    config.auth.static_keys = vec![StaticKey {
        sha256: sha256_hex(STATIC_TOKEN),
        tenant: [("company_id".to_owned(), json!(42))].into_iter().collect(),
        key_id: Some("k_static".to_owned()),
    }];
    config
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// An http URL on which nothing listens.
fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr");
    drop(listener);
    format!("http://{addr}")
}

async fn start_demo() -> (DemoUpstream, String) {
    let demo = DemoUpstream::new(SERVICE_TOKEN);
    let addr = demo
        .spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("the demo upstream starts");
    (demo, format!("http://{addr}"))
}

fn demo_introspections(demo: &DemoUpstream) -> usize {
    demo.requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == INTROSPECT_PATH)
        .count()
}

/// No recorded upstream path or query may contain a SCIM token.
fn assert_tokens_not_leaked(demo: &DemoUpstream, tokens: &[&str]) {
    for r in demo.requests() {
        for t in tokens {
            assert!(
                !r.path.contains(t) && !r.query.as_deref().unwrap_or("").contains(t),
                "a SCIM token leaked into an upstream URL: {r:?}"
            );
        }
    }
}

// ---- harness: SCIM client ----------------------------------------------------------------

struct Scim {
    base: String,
    http: reqwest::Client,
}

#[derive(Debug)]
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Checks the SCIM Error shape (media type, schema, `status` as a string equal to the
    /// HTTP status) and the status; returns the detail.
    fn assert_error(&self, status: u16, context: &str) -> String {
        assert_eq!(self.status, status, "{context}: status; body {}", self.body);
        assert_eq!(
            self.header("content-type"),
            Some("application/scim+json"),
            "{context}: content type"
        );
        assert_eq!(
            self.body["schemas"],
            json!([ERROR_SCHEMA]),
            "{context}: schemas; body {}",
            self.body
        );
        assert_eq!(
            self.body["status"],
            json!(status.to_string()),
            "{context}: status must be a string equal to the HTTP status"
        );
        let detail = self.body["detail"].as_str().unwrap_or_default().to_owned();
        assert!(!detail.is_empty(), "{context}: error without a detail");
        detail
    }

    /// A 401 with `WWW-Authenticate: Bearer …` and the SCIM error body.
    fn assert_unauthorized(&self, context: &str) {
        self.assert_error(401, context);
        let challenge = self.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer"),
            "{context}: WWW-Authenticate is {challenge:?}"
        );
    }

    /// `Retry-After` as whole seconds.
    fn retry_after(&self) -> Option<u64> {
        self.header("retry-after")
            .and_then(|v| v.trim().parse().ok())
    }
}

impl Scim {
    /// Sends a request with an `Authorization` header value (or none).
    async fn send_auth(
        &self,
        method: Method,
        path: &str,
        authorization: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .timeout(Duration::from_secs(30));
        if let Some(a) = authorization {
            request = request.header("authorization", a);
        }
        if let Some(b) = body {
            request = request
                .header("content-type", "application/scim+json")
                .body(serde_json::to_vec(b).expect("serialize"));
        }
        let response = request.send().await.expect("the gateway answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!(
                    "the gateway answered {status} with a non-JSON body: {:?}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn send(&self, method: Method, path: &str, token: &str, body: Option<&Value>) -> Answer {
        self.send_auth(method, path, Some(&format!("Bearer {token}")), body)
            .await
    }

    async fn get(&self, path: &str, token: &str) -> Answer {
        self.send(Method::GET, path, token, None).await
    }
}

fn user_body(user_name: &str) -> Value {
    json!({
        "schemas": [USER_SCHEMA],
        "userName": user_name,
        "name": {"givenName": "Eve", "familyName": "Example"},
        "active": true
    })
}

// ---- harness: scriptable stub upstream -----------------------------------------------------

/// A planted answer.
#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

impl Reply {
    fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }

    fn raw(status: u16, content_type: &str, body: &str) -> Reply {
        Reply {
            status,
            headers: vec![("content-type", content_type.into())],
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    fn header(mut self, name: &'static str, value: &str) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    fn delayed(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }
}

/// One request as the stub saw it.
#[derive(Debug, Clone)]
struct Seen {
    route: String,
    path: String,
    query: Option<String>,
    key_id: Option<String>,
    body: String,
}

#[derive(Default)]
struct StubState {
    seen: Mutex<Vec<Seen>>,
    /// Route key (see [`route_of`]) → planted answer, replacing the default.
    planted: Mutex<HashMap<String, Reply>>,
    introspections: AtomicUsize,
}

/// A tiny Blacksmith look-alike whose answers a test plants per route.
#[derive(Clone)]
struct Stub {
    state: Arc<StubState>,
    url: String,
}

impl Stub {
    async fn start() -> Stub {
        let state = Arc::new(StubState::default());
        let app = Router::new()
            .fallback(stub_handler)
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Stub {
            state,
            url: format!("http://{addr}"),
        }
    }

    /// Answers `route` (e.g. `"GET /users/{id}"`) with `reply` from now on.
    fn plant(&self, route: &str, reply: Reply) {
        self.state
            .planted
            .lock()
            .unwrap()
            .insert(route.to_owned(), reply);
    }

    fn introspections(&self) -> usize {
        self.state.introspections.load(Ordering::SeqCst)
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    fn clear_seen(&self) {
        self.state.seen.lock().unwrap().clear();
    }
}

/// `(route key, user id)` for a path of the contract.
fn route_of(method: &Method, path: &str) -> Option<(String, Option<i64>)> {
    if path == INTROSPECT_PATH {
        return Some((format!("{method} /introspect"), None));
    }
    let rest = path.strip_prefix("/api/v1/companies/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [_, "users"] => Some((format!("{method} /users"), None)),
        [_, "users", id] => Some((format!("{method} /users/{{id}}"), id.parse().ok())),
        [_, "users", id, action] => {
            Some((format!("{method} /users/{{id}}/{action}"), id.parse().ok()))
        }
        _ => None,
    }
}

fn stub_user(id: i64, status: &str) -> Value {
    json!({
        "id": id, "email": format!("user{id}@example.com"), "first_name": "Ada",
        "last_name": "Lovelace", "display_name": "Ada Lovelace", "title": null,
        "department": null, "phone": null, "role": "member", "status": status,
        "external_id": null, "manager_id": null,
        "created_at": "2026-01-02T03:04:05Z", "updated_at": "2026-01-02T03:04:05Z"
    })
}

/// What the stub answers when nothing is planted: a healthy Blacksmith.
fn default_reply(route: &str, id: Option<i64>) -> Reply {
    let id = id.unwrap_or(1);
    match route {
        "POST /introspect" => Reply::json(
            200,
            json!({"active": true, "company_id": 42, "key_id": "k_stub", "purpose": "SCIM Provisioning"}),
        ),
        "GET /users" => Reply::json(
            200,
            json!({"data": [stub_user(1, "active")], "meta": {"page": 1, "per_page": 100, "total": 1}}),
        ),
        "POST /users" => Reply::json(201, json!({"data": stub_user(1001, "active")})),
        "GET /users/{id}" | "PATCH /users/{id}" | "POST /users/{id}/reactivate" => {
            Reply::json(200, json!({"data": stub_user(id, "active")}))
        }
        "POST /users/{id}/deactivate" => {
            Reply::json(200, json!({"data": stub_user(id, "deactivated")}))
        }
        "DELETE /users/{id}" => Reply::raw(204, "application/json", ""),
        _ => Reply::json(
            404,
            json!({"error": {"code": "not_found", "message": "No route"}}),
        ),
    }
}

async fn stub_handler(
    State(state): State<Arc<StubState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (route, id) = route_of(&method, uri.path()).unwrap_or_else(|| ("unknown".into(), None));
    state.seen.lock().unwrap().push(Seen {
        route: route.clone(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        key_id: headers
            .get("x-scim-key-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    if route == "POST /introspect" {
        state.introspections.fetch_add(1, Ordering::SeqCst);
    }
    let planted = state.planted.lock().unwrap().get(&route).cloned();
    let reply = planted.unwrap_or_else(|| default_reply(&route, id));
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut response = Response::builder().status(StatusCode::from_u16(reply.status).unwrap());
    for (name, value) in &reply.headers {
        response = response.header(*name, value.as_str());
    }
    response.body(Body::from(reply.body)).unwrap()
}

// ============================================================================================
// Authentication
// ============================================================================================

#[tokio::test]
async fn introspection_accepts_only_active_scim_keys() {
    let (demo, url) = start_demo().await;
    demo.seed_users(42, 2);
    demo.add_scim_key("tok-good-1b7e", 42, "k_good", "SCIM Provisioning");
    demo.add_scim_key("tok-api-5c2d", 42, "k_api", "API Access");
    demo.add_scim_key("tok-revoked-9e41", 42, "k_revoked", "SCIM Provisioning");
    assert!(demo.remove_scim_key("tok-revoked-9e41"));
    let scim = start_gateway(introspect_config(&url)).await;

    let good = scim.get("/Users", "tok-good-1b7e").await;
    assert_eq!(good.status, 200, "valid key: {}", good.body);
    assert_eq!(good.body["totalResults"], json!(2));
    let listed: Vec<_> = demo
        .requests()
        .into_iter()
        .filter(|r| r.path != INTROSPECT_PATH)
        .collect();
    assert!(!listed.is_empty());
    for r in &listed {
        assert_eq!(r.key_id.as_deref(), Some("k_good"), "audit header: {r:?}");
        assert!(r.has_authorization, "the service token is sent: {r:?}");
        assert!(r.path.starts_with("/api/v1/companies/42/"), "{r:?}");
    }

    // (case, Authorization header)
    let rejected: &[(&str, Option<&str>)] = &[
        ("unknown token", Some("Bearer tok-unknown-77aa")),
        (
            "active:false (revoked) key",
            Some("Bearer tok-revoked-9e41"),
        ),
        (
            "active key whose purpose is not SCIM Provisioning",
            Some("Bearer tok-api-5c2d"),
        ),
        ("no Authorization header", None),
        ("not a bearer scheme", Some("Basic dG9rLWdvb2QtMWI3ZTo=")),
        ("empty bearer", Some("Bearer ")),
    ];
    for (case, authorization) in rejected {
        let answer = scim
            .send_auth(Method::GET, "/Users", *authorization, None)
            .await;
        answer.assert_unauthorized(case);
        let answer = scim
            .send_auth(Method::GET, "/Users/1", *authorization, None)
            .await;
        answer.assert_unauthorized(case);
    }
    assert_tokens_not_leaked(
        &demo,
        &[
            "tok-good-1b7e",
            "tok-api-5c2d",
            "tok-revoked-9e41",
            "tok-unknown-77aa",
        ],
    );
}

#[tokio::test]
async fn introspection_answers_without_a_usable_tenant_fail_closed() {
    let stub = Stub::start().await;
    let scim = start_gateway(introspect_config(&stub.url)).await;
    // (case, introspection answer); each case uses its own token so no cache is shared.
    let cases: &[(&str, Value)] = &[
        (
            "no company_id",
            json!({"active": true, "key_id": "k_1", "purpose": "SCIM Provisioning"}),
        ),
        (
            "company_id null",
            json!({"active": true, "company_id": null, "key_id": "k_1", "purpose": "SCIM Provisioning"}),
        ),
        (
            "company_id an object",
            json!({"active": true, "company_id": {"id": 42}, "key_id": "k_1", "purpose": "SCIM Provisioning"}),
        ),
        (
            "company_id a list",
            json!({"active": true, "company_id": [42], "key_id": "k_1", "purpose": "SCIM Provisioning"}),
        ),
        (
            "no purpose",
            json!({"active": true, "company_id": 42, "key_id": "k_1"}),
        ),
        (
            "active as a string",
            json!({"active": "true", "company_id": 42, "key_id": "k_1", "purpose": "SCIM Provisioning"}),
        ),
        (
            "active missing",
            json!({"company_id": 42, "purpose": "SCIM Provisioning"}),
        ),
        ("active:false", json!({"active": false})),
    ];
    for (i, (case, answer)) in cases.iter().enumerate() {
        stub.plant("POST /introspect", Reply::json(200, answer.clone()));
        stub.clear_seen();
        let response = scim.get("/Users/1", &format!("tok-case-{i}")).await;
        response.assert_unauthorized(case);
        let routes: Vec<String> = stub.seen().into_iter().map(|s| s.route).collect();
        assert_eq!(
            routes,
            vec!["POST /introspect".to_owned()],
            "{case}: nothing but the introspection may reach the upstream"
        );
    }
}

#[tokio::test]
async fn concurrent_checks_of_one_token_make_one_introspection_call() {
    // Against the demo: 20 concurrent requests, one introspection.
    let (demo, url) = start_demo().await;
    demo.seed_users(42, 1);
    demo.add_scim_key("tok-burst-4411", 42, "k_burst", "SCIM Provisioning");
    let scim = Arc::new(start_gateway(introspect_config(&url)).await);
    let burst = (0..20).map(|_| {
        let scim = scim.clone();
        tokio::spawn(async move { scim.get("/Users", "tok-burst-4411").await.status })
    });
    for status in futures::future::join_all(burst).await {
        assert_eq!(status.expect("task"), 200);
    }
    assert_eq!(
        demo_introspections(&demo),
        1,
        "one introspection for 20 requests"
    );
    // Within the TTL: no new call.
    assert_eq!(scim.get("/Users", "tok-burst-4411").await.status, 200);
    assert_eq!(demo_introspections(&demo), 1, "a cached answer is reused");
    assert_tokens_not_leaked(&demo, &["tok-burst-4411"]);

    // Against a slow introspection, so the 20 certainly overlap the one call in flight.
    let stub = Stub::start().await;
    stub.plant(
        "POST /introspect",
        default_reply("POST /introspect", None).delayed(Duration::from_millis(300)),
    );
    let scim = Arc::new(start_gateway(introspect_config(&stub.url)).await);
    let burst = (0..20).map(|_| {
        let scim = scim.clone();
        tokio::spawn(async move { scim.get("/Users/5", "tok-slow-burst").await.status })
    });
    for status in futures::future::join_all(burst).await {
        assert_eq!(status.expect("task"), 200);
    }
    assert_eq!(stub.introspections(), 1, "concurrent checks share one call");
    for seen in stub.seen() {
        if seen.route == "POST /introspect" {
            assert_eq!(
                serde_json::from_str::<Value>(&seen.body).ok(),
                Some(json!({"token": "tok-slow-burst"})),
                "the token travels in the introspection body"
            );
        } else {
            assert_eq!(seen.key_id.as_deref(), Some("k_stub"));
        }
        assert!(!seen.path.contains("tok-slow-burst"));
        assert!(!seen.query.unwrap_or_default().contains("tok-slow-burst"));
    }
}

#[tokio::test]
async fn negative_answers_are_cached_for_negative_ttl() {
    let (demo, url) = start_demo().await;
    demo.add_company(42);
    let mut config = introspect_config(&url);
    config.auth.negative_ttl_s = 1;
    let scim = start_gateway(config).await;

    scim.get("/Users", "tok-late-8d3f")
        .await
        .assert_unauthorized("unknown token");
    assert_eq!(demo_introspections(&demo), 1);
    // The key now exists, but the negative answer is remembered for negative_ttl_s.
    demo.add_scim_key("tok-late-8d3f", 42, "k_late", "SCIM Provisioning");
    scim.get("/Users", "tok-late-8d3f")
        .await
        .assert_unauthorized("negative answer reused");
    assert_eq!(
        demo_introspections(&demo),
        1,
        "within negative_ttl_s: no call"
    );

    tokio::time::sleep(Duration::from_millis(1200)).await;
    let answer = scim.get("/Users", "tok-late-8d3f").await;
    assert_eq!(answer.status, 200, "after negative_ttl_s: {}", answer.body);
    assert_eq!(
        demo_introspections(&demo),
        2,
        "after negative_ttl_s: a new call"
    );
    assert_tokens_not_leaked(&demo, &["tok-late-8d3f"]);
}

#[tokio::test]
async fn unreachable_introspection_is_503_never_401() {
    let scim = start_gateway(introspect_config(&closed_port_url())).await;
    for attempt in 0..2 {
        let answer = scim.get("/Users", "tok-any").await;
        answer.assert_error(503, &format!("attempt {attempt}"));
        assert!(answer.retry_after().is_some_and(|s| s > 0), "Retry-After");
        assert!(answer.header("www-authenticate").is_none());
    }
}

#[tokio::test]
async fn failing_introspection_is_503_and_not_cached() {
    let stub = Stub::start().await;
    let scim = start_gateway(introspect_config(&stub.url)).await;
    let failures = [
        Reply::json(500, json!({"error": "boom"})),
        Reply::raw(502, "text/html", "<html>bad gateway</html>"),
        Reply::json(503, json!({})),
        Reply::json(429, json!({})).header("retry-after", "3"),
        // The app refusing the gateway's service credential is the gateway's fault.
        Reply::json(401, json!({"error": {"code": "unauthorized"}})),
        Reply::json(403, json!({"error": {"code": "forbidden"}})),
        // A proxy's maintenance page is no verdict on the token: unavailable, not 401.
        Reply::raw(200, "text/html", "<html>down for maintenance</html>"),
        // Too slow to answer is as unavailable as not answering.
        default_reply("POST /introspect", None).delayed(Duration::from_secs(3)),
    ];
    let mut config = introspect_config(&stub.url);
    config.upstream.timeout_ms = 1000;
    let scim_short = start_gateway(config).await;
    let mut calls = 0;
    for (i, reply) in failures.iter().enumerate() {
        let case = format!("introspection answering {} (case {i})", reply.status);
        stub.plant("POST /introspect", reply.clone());
        let gateway = if reply.delay.is_zero() {
            &scim
        } else {
            &scim_short
        };
        for _ in 0..2 {
            let answer = gateway.get("/Users/1", "tok-flaky-0c1d").await;
            answer.assert_error(503, &case);
            assert!(answer.retry_after().is_some(), "{case}: Retry-After");
            calls += 1;
            assert_eq!(
                stub.introspections(),
                calls,
                "{case}: failures are not cached"
            );
        }
    }
    assert!(!stub.seen().iter().any(|s| s.route != "POST /introspect"));

    // Recovery: the very same token is accepted at once.
    stub.plant("POST /introspect", default_reply("POST /introspect", None));
    let answer = scim.get("/Users/1", "tok-flaky-0c1d").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(stub.introspections(), calls + 1);
}

#[tokio::test]
async fn static_keys_authenticate_without_introspection() {
    let (demo, url) = start_demo().await;
    let ids = demo.seed_users(42, 1);
    let scim = start_gateway(static_config(&url)).await;

    let answer = scim.get(&format!("/Users/{}", ids[0]), STATIC_TOKEN).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["userName"], json!("user1@example.com"));
    let answer = scim.get("/Users", STATIC_TOKEN).await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    for (case, token) in [
        ("wrong token", "static-token-0f3a9d"),
        ("token prefix", "static-token"),
        ("the hash itself", &sha256_hex(STATIC_TOKEN)[..]),
    ] {
        scim.get("/Users", token).await.assert_unauthorized(case);
    }

    let requests = demo.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        assert_ne!(r.path, INTROSPECT_PATH, "static mode never introspects");
        assert_eq!(r.key_id.as_deref(), Some("k_static"), "{r:?}");
        assert!(r.path.starts_with("/api/v1/companies/42/"), "{r:?}");
    }
    assert_tokens_not_leaked(&demo, &[STATIC_TOKEN]);
}

#[test]
fn hash_token_prints_the_sha256_of_stdin() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    for input in ["secret\n", "secret", "secret\r\n"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_scimgate"))
            .arg("hash-token")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn scimgate");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
        let output = child.wait_with_output().expect("scimgate exits");
        assert!(output.status.success(), "{input:?}: {output:?}");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            sha256_hex("secret"),
            "{input:?}"
        );
    }
    assert_eq!(
        sha256_hex("secret"),
        "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
    );
}

#[tokio::test]
async fn a_key_only_reaches_its_own_company() {
    let (demo, url) = start_demo().await;
    demo.add_scim_key("tok-co42-a1", 42, "k_42", "SCIM Provisioning");
    demo.add_scim_key("tok-co43-b2", 43, "k_43", "SCIM Provisioning");
    let mine = demo.seed_users(42, 1);
    let theirs = demo.seed_users(43, 2);
    let victim = theirs[0];
    let scim = start_gateway(introspect_config(&url)).await;
    // Company 43's key sees its user (so the id is real).
    let answer = scim.get(&format!("/Users/{victim}"), "tok-co43-b2").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let before = demo.user(43, victim).expect("seeded");
    demo.clear_requests();

    let token = "tok-co42-a1";
    let path = format!("/Users/{victim}");
    let put = user_body("intruder@example.com");
    let patch = json!({
        "schemas": [PATCH_SCHEMA],
        "Operations": [{"op": "replace", "path": "name.givenName", "value": "Mallory"}]
    });
    let deactivate = json!({
        "schemas": [PATCH_SCHEMA],
        "Operations": [{"op": "replace", "value": {"active": false}}]
    });
    let cases: &[(&str, Method, Option<&Value>)] = &[
        ("GET", Method::GET, None),
        ("PUT", Method::PUT, Some(&put)),
        ("PATCH", Method::PATCH, Some(&patch)),
        ("PATCH active:false", Method::PATCH, Some(&deactivate)),
        ("DELETE", Method::DELETE, None),
    ];
    for (case, method, body) in cases {
        let answer = scim.send(method.clone(), &path, token, *body).await;
        answer.assert_error(404, case);
    }

    // Lists, unfiltered and filtered on what would find the other company's user.
    let list = scim.get("/Users?count=100", token).await;
    assert_eq!(list.status, 200, "{}", list.body);
    let listed: Vec<&str> = list.body["Resources"]
        .as_array()
        .expect("Resources")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(listed, vec![mine[0].to_string()], "only company 42's users");
    for filter in [
        format!("id%20eq%20%22{victim}%22"),
        "userName%20eq%20%22user2%40example.com%22".to_owned(),
        "name.familyName%20eq%20%222%22".to_owned(),
    ] {
        let list = scim.get(&format!("/Users?filter={filter}"), token).await;
        assert_eq!(list.status, 200, "{filter}: {}", list.body);
        assert_eq!(
            list.body["totalResults"],
            json!(0),
            "{filter}: {}",
            list.body
        );
    }

    // Nothing in company 43 changed, and every call named company 42.
    assert_eq!(demo.user(43, victim), Some(before));
    assert_eq!(demo.users(43).len(), 2);
    let requests = demo.requests();
    assert!(!requests.is_empty());
    for r in requests.iter().filter(|r| r.path != INTROSPECT_PATH) {
        assert!(r.path.contains("/companies/42/"), "{r:?}");
        assert_eq!(r.key_id.as_deref(), Some("k_42"), "{r:?}");
    }
    assert_tokens_not_leaked(&demo, &["tok-co42-a1", "tok-co43-b2"]);
}

// ============================================================================================
// Upstream faults (static auth, so introspection is not involved)
// ============================================================================================

#[tokio::test]
async fn unreachable_upstream_is_503_with_retry_after() {
    let scim = start_gateway(static_config(&closed_port_url())).await;
    for path in ["/Users/1", "/Users"] {
        let answer = scim.get(path, STATIC_TOKEN).await;
        answer.assert_error(503, path);
        assert!(
            answer.retry_after().is_some_and(|s| s > 0),
            "{path}: Retry-After"
        );
    }
}

#[tokio::test]
async fn slow_upstream_is_504() {
    let stub = Stub::start().await;
    for route in ["GET /users/{id}", "GET /users"] {
        stub.plant(
            route,
            default_reply(route, Some(1)).delayed(Duration::from_secs(1)),
        );
    }
    let mut config = static_config(&stub.url);
    config.upstream.timeout_ms = 200;
    let scim = start_gateway(config).await;
    for path in ["/Users/1", "/Users"] {
        let started = std::time::Instant::now();
        let answer = scim.get(path, STATIC_TOKEN).await;
        answer.assert_error(504, path);
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "{path}: the gateway gave up at its timeout, not after the upstream answered"
        );
    }
}

/// One planted fault: the route, the answer, the SCIM request, what the client must see.
struct FaultCase {
    name: &'static str,
    route: &'static str,
    reply: Reply,
    method: Method,
    path: &'static str,
    body: Option<Value>,
    status: u16,
    scim_type: Option<&'static str>,
    retry_after: Option<u64>,
}

fn fault(
    name: &'static str,
    route: &'static str,
    reply: Reply,
    method: Method,
    path: &'static str,
    status: u16,
) -> FaultCase {
    FaultCase {
        name,
        route,
        reply,
        method,
        path,
        body: None,
        status,
        scim_type: None,
        retry_after: None,
    }
}

#[tokio::test]
async fn upstream_faults_become_the_right_scim_errors() {
    let stub = Stub::start().await;
    let scim = start_gateway(static_config(&stub.url)).await;
    let not_json = || Reply::raw(200, "text/html", "<html><body>Welcome</body></html>");
    let limited =
        || Reply::json(429, json!({"error": {"code": "rate_limited"}})).header("retry-after", "7");
    let unauthorized = || {
        Reply::json(
            401,
            json!({"error": {"code": "unauthorized", "message": "Missing or invalid service token"}}),
        )
    };
    let forbidden = || {
        Reply::json(
            403,
            json!({"error": {"code": "forbidden", "message": "nope"}}),
        )
    };
    let not_found = || {
        Reply::json(
            404,
            json!({"error": {"code": "not_found", "message": "User 5 not found"}}),
        )
    };
    let create = Some(user_body("eve@example.com"));
    let cases = vec![
        fault(
            "GET one, 500",
            "GET /users/{id}",
            Reply::json(500, json!({})),
            Method::GET,
            "/Users/5",
            502,
        ),
        fault(
            "GET one, 503 text",
            "GET /users/{id}",
            Reply::raw(503, "text/plain", "down"),
            Method::GET,
            "/Users/5",
            502,
        ),
        fault(
            "GET one, non-JSON 200",
            "GET /users/{id}",
            not_json(),
            Method::GET,
            "/Users/5",
            502,
        ),
        fault(
            "GET one, 200 without data",
            "GET /users/{id}",
            Reply::json(200, json!({"meta": {}})),
            Method::GET,
            "/Users/5",
            502,
        ),
        fault(
            "GET one, 401",
            "GET /users/{id}",
            unauthorized(),
            Method::GET,
            "/Users/5",
            502,
        ),
        fault(
            "GET one, 403",
            "GET /users/{id}",
            forbidden(),
            Method::GET,
            "/Users/5",
            502,
        ),
        fault(
            "GET one, 404",
            "GET /users/{id}",
            not_found(),
            Method::GET,
            "/Users/5",
            404,
        ),
        FaultCase {
            retry_after: Some(7),
            ..fault(
                "GET one, 429",
                "GET /users/{id}",
                limited(),
                Method::GET,
                "/Users/5",
                429,
            )
        },
        fault(
            "list, 500",
            "GET /users",
            Reply::json(500, json!({})),
            Method::GET,
            "/Users",
            502,
        ),
        fault(
            "list, non-JSON 200",
            "GET /users",
            not_json(),
            Method::GET,
            "/Users",
            502,
        ),
        fault(
            "list, 200 without data",
            "GET /users",
            Reply::json(
                200,
                json!({"meta": {"page": 1, "per_page": 100, "total": 1}}),
            ),
            Method::GET,
            "/Users",
            502,
        ),
        fault(
            "list, 401",
            "GET /users",
            unauthorized(),
            Method::GET,
            "/Users",
            502,
        ),
        fault(
            "list, 403",
            "GET /users",
            forbidden(),
            Method::GET,
            "/Users",
            502,
        ),
        FaultCase {
            retry_after: Some(7),
            ..fault(
                "list, 429",
                "GET /users",
                limited(),
                Method::GET,
                "/Users",
                429,
            )
        },
        FaultCase {
            body: create.clone(),
            scim_type: Some("uniqueness"),
            ..fault(
                "create, 422 on email",
                "POST /users",
                Reply::json(
                    422,
                    json!({"errors": {"email": ["has already been taken"]}}),
                ),
                Method::POST,
                "/Users",
                409,
            )
        },
        FaultCase {
            body: create.clone(),
            scim_type: Some("invalidValue"),
            ..fault(
                "create, 422 on another field",
                "POST /users",
                Reply::json(
                    422,
                    json!({"errors": {"first_name": ["is too long (maximum is 100 characters)"]}}),
                ),
                Method::POST,
                "/Users",
                400,
            )
        },
        FaultCase {
            body: create.clone(),
            ..fault(
                "create, 500",
                "POST /users",
                Reply::json(500, json!({})),
                Method::POST,
                "/Users",
                502,
            )
        },
        FaultCase {
            body: create.clone(),
            ..fault(
                "create, 401",
                "POST /users",
                unauthorized(),
                Method::POST,
                "/Users",
                502,
            )
        },
        FaultCase {
            body: create.clone(),
            ..fault(
                "create, non-JSON 201",
                "POST /users",
                Reply::raw(201, "text/plain", "created"),
                Method::POST,
                "/Users",
                502,
            )
        },
        FaultCase {
            body: create.clone(),
            retry_after: Some(7),
            ..fault(
                "create, 429",
                "POST /users",
                limited(),
                Method::POST,
                "/Users",
                429,
            )
        },
        fault(
            "delete, 500",
            "DELETE /users/{id}",
            Reply::json(500, json!({})),
            Method::DELETE,
            "/Users/5",
            502,
        ),
        fault(
            "delete, 403",
            "DELETE /users/{id}",
            forbidden(),
            Method::DELETE,
            "/Users/5",
            502,
        ),
        fault(
            "delete, 404",
            "DELETE /users/{id}",
            not_found(),
            Method::DELETE,
            "/Users/5",
            404,
        ),
    ];
    for case in cases {
        stub.plant(case.route, case.reply.clone());
        let answer = scim
            .send(
                case.method.clone(),
                case.path,
                STATIC_TOKEN,
                case.body.as_ref(),
            )
            .await;
        let detail = answer.assert_error(case.status, case.name);
        assert_eq!(
            answer.body["scimType"].as_str(),
            case.scim_type,
            "{}: scimType; body {}",
            case.name,
            answer.body
        );
        if let Some(secs) = case.retry_after {
            assert_eq!(
                answer.retry_after(),
                Some(secs),
                "{}: Retry-After",
                case.name
            );
        }
        assert!(
            answer.header("www-authenticate").is_none(),
            "{}: an upstream fault is never an authentication challenge",
            case.name
        );
        assert!(
            !detail.contains(SERVICE_TOKEN) && !detail.contains(STATIC_TOKEN),
            "{}: {detail}",
            case.name
        );
        // Back to healthy for the next case.
        stub.plant(case.route, default_reply(case.route, Some(5)));
    }
    // The healthy stub really is healthy through the gateway (so the cases above failed
    // because of what was planted, not because of the harness).
    assert_eq!(scim.get("/Users/5", STATIC_TOKEN).await.status, 200);
    assert_eq!(scim.get("/Users", STATIC_TOKEN).await.status, 200);
    let created = scim
        .send(Method::POST, "/Users", STATIC_TOKEN, create.as_ref())
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    for seen in stub.seen() {
        assert!(seen.path.starts_with("/api/v1/companies/42/"), "{seen:?}");
        assert_eq!(seen.key_id.as_deref(), Some("k_static"), "{seen:?}");
    }
}

/// A list answer whose `data` is one object instead of an array breaks the contract; the
/// gateway must not present it as a one-element list.
#[tokio::test]
async fn a_list_answer_whose_data_is_not_a_list_is_502() {
    let stub = Stub::start().await;
    stub.plant(
        "GET /users",
        Reply::json(
            200,
            json!({"data": stub_user(1, "active"), "meta": {"page": 1, "per_page": 100, "total": 1}}),
        ),
    );
    let scim = start_gateway(static_config(&stub.url)).await;
    scim.get("/Users", STATIC_TOKEN)
        .await
        .assert_error(502, "list whose data is an object");
}

#[tokio::test]
async fn deactivation_failing_after_the_profile_write_says_the_write_landed() {
    let stub = Stub::start().await;
    stub.plant(
        "POST /users/{id}/deactivate",
        Reply::json(500, json!({"error": {"code": "internal_error"}})),
    );
    let scim = start_gateway(static_config(&stub.url)).await;
    let patch = json!({
        "schemas": [PATCH_SCHEMA],
        "Operations": [
            {"op": "replace", "path": "name.givenName", "value": "Augusta"},
            {"op": "replace", "path": "active", "value": false}
        ]
    });
    let answer = scim
        .send(Method::PATCH, "/Users/7", STATIC_TOKEN, Some(&patch))
        .await;
    let detail = answer.assert_error(502, "deactivate after the profile write");
    assert!(
        detail.contains("update") && detail.contains("succeeded"),
        "the detail must say the update landed: {detail}"
    );

    let calls: Vec<(String, String)> = stub.seen().into_iter().map(|s| (s.route, s.body)).collect();
    let routes: Vec<&str> = calls.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(
        routes,
        vec![
            "GET /users/{id}",
            "PATCH /users/{id}",
            "POST /users/{id}/deactivate"
        ]
    );
    let written: Value = serde_json::from_str(&calls[1].1).expect("PATCH body is JSON");
    assert_eq!(written, json!({"user": {"first_name": "Augusta"}}));
}
