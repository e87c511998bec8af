//! Operating the gateway: metrics on the admin listener only, request ids echoed and sent
//! upstream, `/readyz` following the upstream, and logs that never carry a secret.
//!
//! The log test runs the real binary (`scimgate serve`, its own logging set-up) at
//! `RUST_LOG=trace`, in text and in JSON, against a demo upstream in this process, drives a
//! full user and group flow with marker strings in the token, the service token, the
//! password, attribute values and an upstream error body, and searches everything the
//! process wrote for them.

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use scimgate::config::{AuthMode, Config};
use scimgate::demo::DemoUpstream;
use scimgate::mapping::load_dir;
use scimgate::server::{self, reload, Gateway};

const COMPANY: i64 = 42;
const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

/// A demo upstream, a gateway in front of it and its admin listener, all in this process.
struct Running {
    demo: DemoUpstream,
    gateway: Arc<Gateway>,
    scim: String,
    origin: String,
    admin: String,
}

async fn start(token: &str, adjust: impl FnOnce(&mut Config)) -> Running {
    let demo = DemoUpstream::new("svc-obs");
    demo.add_scim_key(token, COMPANY, "k_obs", "SCIM Provisioning");
    demo.seed_example_data(COMPANY);
    let upstream = demo
        .spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("demo upstream");
    let mut config = Config::default();
    config.upstream.url = format!("http://{upstream}");
    config.upstream.token = Some("svc-obs".into());
    config.auth.mode = AuthMode::Introspect;
    adjust(&mut config);
    let mapping = load_dir(std::path::Path::new("mappings/blacksmith")).expect("mapping");
    let gateway = Gateway::new(config, mapping).expect("gateway");
    let scim = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (scim_addr, admin_addr) = (
        scim.local_addr().expect("addr"),
        admin.local_addr().expect("addr"),
    );
    tokio::spawn(server::serve(gateway.clone(), scim));
    tokio::spawn(server::serve_admin(gateway.clone(), admin));
    Running {
        demo,
        gateway,
        scim: format!("http://{scim_addr}/scim/v2"),
        origin: format!("http://{scim_addr}"),
        admin: format!("http://{admin_addr}"),
    }
}

async fn get_text(url: &str) -> (StatusCode, String) {
    let r = client().get(url).send().await.expect("answer");
    let status = r.status();
    (status, r.text().await.expect("text"))
}

/// The value of the sample with exactly this name and label set, if present.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

#[tokio::test]
async fn metrics_are_on_the_admin_listener_only() {
    let token = "metrics-token-0123456789";
    let run = start(token, |_| {}).await;
    let c = client();
    let send = |method: Method, path: &str, auth: Option<&str>| {
        let mut r = c.request(method, format!("{}{path}", run.scim));
        if let Some(t) = auth {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    assert_eq!(
        send(Method::GET, "/Users", Some(token))
            .await
            .expect("answer")
            .status(),
        200
    );
    assert_eq!(
        send(Method::GET, "/Users/1001", Some(token))
            .await
            .expect("answer")
            .status(),
        200
    );
    assert_eq!(
        send(Method::GET, "/Users/999999", Some(token))
            .await
            .expect("answer")
            .status(),
        404
    );
    assert_eq!(
        send(Method::GET, "/Groups", Some(token))
            .await
            .expect("answer")
            .status(),
        200
    );
    assert_eq!(
        send(Method::GET, "/Users", None)
            .await
            .expect("answer")
            .status(),
        401
    );
    assert_eq!(
        send(Method::GET, "/Users", Some("not-a-key"))
            .await
            .expect("answer")
            .status(),
        401
    );
    // Arbitrary endpoints and ids must not become label values.
    for path in ["/Nonsense-a", "/Nonsense-b/7", "/a/b/c"] {
        assert_eq!(
            send(Method::GET, path, Some(token))
                .await
                .expect("answer")
                .status(),
            404
        );
    }
    assert_eq!(
        send(Method::GET, "/ServiceProviderConfig", Some(token))
            .await
            .expect("answer")
            .status(),
        200
    );

    let (status, text) = get_text(&format!("{}/metrics", run.admin)).await;
    assert_eq!(status, 200);
    let expect = |series: &str, value: f64| {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    };
    expect(
        r#"scimgate_scim_requests_total{resource="User",operation="list",status="200"}"#,
        1.0,
    );
    expect(
        r#"scimgate_scim_requests_total{resource="User",operation="get",status="200"}"#,
        1.0,
    );
    expect(
        r#"scimgate_scim_requests_total{resource="User",operation="get",status="404"}"#,
        1.0,
    );
    expect(
        r#"scimgate_scim_requests_total{resource="Group",operation="list",status="200"}"#,
        1.0,
    );
    expect(
        r#"scimgate_scim_requests_total{resource="User",operation="list",status="401"}"#,
        2.0,
    );
    expect(
        r#"scimgate_scim_requests_total{resource="unknown",operation="other",status="404"}"#,
        3.0,
    );
    expect(
        r#"scimgate_scim_requests_total{resource="ServiceProviderConfig",operation="get",status="200"}"#,
        1.0,
    );
    expect(
        r#"scimgate_scim_request_duration_seconds_count{resource="User",operation="get"}"#,
        2.0,
    );
    expect(r#"scimgate_auth_failures_total{reason="missing"}"#, 1.0);
    expect(r#"scimgate_auth_failures_total{reason="rejected"}"#, 1.0);
    // Two distinct tokens were introspected; every other check was a cache hit (`/a/b/c`
    // matches no route, so no token check).
    expect(r#"scimgate_introspection_cache_total{result="miss"}"#, 2.0);
    expect(r#"scimgate_introspection_cache_total{result="hit"}"#, 6.0);
    expect("scimgate_scim_requests_in_flight", 0.0);
    // Upstream calls are labelled by the mapping's route template, never a concrete URL.
    expect(
        r#"scimgate_upstream_requests_total{route="GET /api/v1/companies/{tenant.company_id}/users/{id}",status="200"}"#,
        1.0,
    );
    expect(
        r#"scimgate_upstream_requests_total{route="GET /api/v1/companies/{tenant.company_id}/users/{id}",status="404"}"#,
        1.0,
    );
    expect(
        r#"scimgate_upstream_requests_total{route="POST /api/v1/scim_keys/introspect",status="200"}"#,
        2.0,
    );
    expect(
        r#"scimgate_upstream_request_duration_seconds_count{route="GET /api/v1/companies/{tenant.company_id}/users"}"#,
        1.0,
    );
    let hash = run.gateway.mapping.load().hash.clone();
    expect(&format!(r#"scimgate_mapping_info{{hash="{hash}"}}"#), 1.0);
    let labels: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| Some(&l[l.find('{')?..=l.rfind('}')?]))
        .collect();
    for secret_or_id in [token, "not-a-key", "1001", "999999", "Nonsense"] {
        assert!(
            labels.iter().all(|l| !l.contains(secret_or_id)),
            "{secret_or_id:?} leaked into the metrics:\n{text}"
        );
    }
    for family in [
        "scimgate_scim_requests_total counter",
        "scimgate_scim_request_duration_seconds histogram",
        "scimgate_upstream_requests_total counter",
        "scimgate_upstream_request_duration_seconds histogram",
        "scimgate_member_fan_out_size histogram",
        "scimgate_auth_failures_total counter",
        "scimgate_introspection_cache_total counter",
        "scimgate_mapping_reloads_total counter",
        "scimgate_scim_requests_in_flight gauge",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family}")),
            "no {family}:\n{text}"
        );
    }

    // Never on the SCIM port, with or without a token; nothing else on the admin port.
    let (status, _) = get_text(&format!("{}/metrics", run.origin)).await;
    assert_eq!(status, 404);
    let r = c
        .get(format!("{}/metrics", run.scim))
        .bearer_auth(token)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 404);
    let (status, _) = get_text(&format!("{}/scim/v2/Users", run.admin)).await;
    assert_eq!(status, 404);
    // Probes are neither counted nor logged as SCIM requests.
    let (status, _) = get_text(&format!("{}/healthz", run.origin)).await;
    assert_eq!(status, 200);
    let (_, after) = get_text(&format!("{}/metrics", run.admin)).await;
    assert!(!after.contains("healthz"));
}

#[tokio::test]
async fn request_ids_are_echoed_and_sent_upstream() {
    let token = "reqid-token-0123456789";
    let run = start(token, |_| {}).await;
    let c = client();

    // A sane incoming id is kept, answered, and sent on every upstream call it causes.
    run.demo.clear_requests();
    let r = c
        .get(format!(
            "{}/Users?filter=userName%20eq%20%22ada%40example.com%22",
            run.scim
        ))
        .bearer_auth(token)
        .header("X-Request-Id", "okta-req-42/abc")
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("okta-req-42/abc")
    );
    let calls = run.demo.requests();
    assert!(calls.len() >= 2, "introspection and the list: {calls:?}");
    for call in &calls {
        assert_eq!(
            call.request_id.as_deref(),
            Some("okta-req-42/abc"),
            "{call:?}"
        );
    }

    // No id, or one that is not sane: a fresh one, answered and sent upstream.
    let too_long = HeaderValue::from_str(&"x".repeat(129)).expect("header");
    let not_ascii = HeaderValue::from_bytes(b"caf\xc3\xa9").expect("header");
    for incoming in [None, Some(too_long), Some(not_ascii)] {
        run.demo.clear_requests();
        let mut req = c.get(format!("{}/Users/1001", run.scim)).bearer_auth(token);
        if let Some(id) = &incoming {
            req = req.header("X-Request-Id", id.clone());
        }
        let r = req.send().await.expect("answer");
        assert_eq!(r.status(), 200);
        let echoed = r
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .expect("an X-Request-Id answer")
            .to_owned();
        assert_eq!(echoed.len(), 32, "{echoed}");
        assert!(echoed.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(
            Some(echoed.as_bytes()),
            incoming.as_ref().map(HeaderValue::as_bytes)
        );
        let calls = run.demo.requests();
        assert!(!calls.is_empty());
        for call in calls {
            assert_eq!(call.request_id.as_deref(), Some(echoed.as_str()));
        }
    }

    // Errors carry it too (the gateway's own 401, before any upstream call).
    let r = c
        .get(format!("{}/Users", run.scim))
        .header("X-Request-Id", "no-token-here")
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("no-token-here")
    );
}

#[tokio::test]
async fn readyz_follows_the_upstream() {
    let run = start("ready-token-0123456789", |_| {}).await;
    let r = client()
        .get(format!("{}/readyz", run.origin))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["mapping"], json!(run.gateway.mapping.load().hash));

    // An upstream that accepts no connection: not ready, with the reason; still alive.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let down = start("ready-token-0123456789", |c| {
        c.upstream.url = format!("http://{closed}");
        c.upstream.connect_timeout_ms = 500;
    })
    .await;
    let started = Instant::now();
    let r = client()
        .get(format!("{}/readyz", down.origin))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 503);
    assert!(started.elapsed() < Duration::from_secs(3));
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["status"], "not ready");
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("unreachable") && r.contains(&closed.to_string())),
        "{body}"
    );
    assert!(body["mapping"].is_string());
    let (status, text) = get_text(&format!("{}/healthz", down.origin)).await;
    assert_eq!((status, text.as_str()), (StatusCode::OK, "ok"));
}

#[tokio::test]
async fn reloads_are_counted_by_result() {
    let dir = tempfile::tempdir().expect("temp dir");
    for entry in std::fs::read_dir("mappings/blacksmith").expect("mappings") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            continue; // the fixtures under tests/ are not mapping files
        }
        std::fs::copy(&path, dir.path().join(path.file_name().expect("name"))).expect("copy");
    }
    let run = start("reload-token-0123456789", |_| {}).await;
    reload::spawn(
        run.gateway.clone(),
        dir.path().to_owned(),
        Duration::from_millis(50),
    );
    let metric = |result: &str| {
        let text = run.gateway.metrics.render("-");
        sample(
            &text,
            &format!(r#"scimgate_mapping_reloads_total{{result="{result}"}}"#),
        )
    };
    let wait_for = |result: &'static str, want: f64| {
        let metric = &metric;
        async move {
            let started = Instant::now();
            while metric(result) != Some(want) {
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "{result} never reached {want}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // The copy differs from the served set by name only: the first poll swaps it in.
    wait_for("success", 1.0).await;
    let users = dir.path().join("users.toml");
    let text = std::fs::read_to_string(&users).expect("read");
    write_by_rename(
        &users,
        &text.replace("[resources.User.writes]", "[resources.User.writes"),
    );
    wait_for("rejected", 1.0).await;
    // Still broken over several polls: counted once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(metric("rejected"), Some(1.0));
    assert_eq!(metric("success"), Some(1.0));
    write_by_rename(&users, &format!("{text}\n# edited\n"));
    wait_for("success", 2.0).await;
}

/// Saves the way editors do: a temporary file renamed over the original.
fn write_by_rename(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

// ---- logs ------------------------------------------------------------------------------

/// Every marker must stay out of the log. Each is unique to this test.
const TOKEN_MARKER: &str = "scimTokMarkerQ7x1";
const WRONG_TOKEN_MARKER: &str = "scimWrongTokMarkerZ4";
const SERVICE_TOKEN_MARKER: &str = "svcTokMarkerP9k2";
const PASSWORD_MARKER: &str = "PwdMarkerJ3v8";
const GIVEN_MARKER: &str = "GivenMarkerB5n";
const FAMILY_MARKER: &str = "FamilyMarkerW2c";
const EMAIL_MARKER: &str = "emailmarker6t";
const EXTERNAL_MARKER: &str = "ExtIdMarkerH8d";
const TITLE_MARKER: &str = "TitleMarkerR1m";
const PHONE_MARKER: &str = "+1555019283746";
const DEPARTMENT_MARKER: &str = "DeptMarkerK6s";
const GROUP_MARKER: &str = "GroupMarkerY3f";
const GROUP_RENAMED_MARKER: &str = "GroupRenamedMarkerU7a";
const UPSTREAM_ERROR_MARKER: &str = "UpstreamErrMarkerE2q";
const UPSTREAM_500_MARKER: &str = "Upstream500MarkerV9w";

fn markers() -> Vec<&'static str> {
    vec![
        TOKEN_MARKER,
        WRONG_TOKEN_MARKER,
        SERVICE_TOKEN_MARKER,
        PASSWORD_MARKER,
        GIVEN_MARKER,
        FAMILY_MARKER,
        EMAIL_MARKER,
        EXTERNAL_MARKER,
        TITLE_MARKER,
        PHONE_MARKER,
        DEPARTMENT_MARKER,
        GROUP_MARKER,
        GROUP_RENAMED_MARKER,
        UPSTREAM_ERROR_MARKER,
        UPSTREAM_500_MARKER,
    ]
}

/// What the test upstream should do with the next non-introspection call.
#[derive(Clone, Copy, PartialEq)]
enum Inject {
    Nothing,
    Status422,
    Status500,
}

/// The demo upstream behind a layer that can answer the next call with an error body that
/// carries a marker.
async fn marker_upstream() -> (DemoUpstream, SocketAddr, Arc<Mutex<Inject>>) {
    let demo = DemoUpstream::new(format!("svc-{SERVICE_TOKEN_MARKER}"));
    demo.add_scim_key(
        &format!("tok-{TOKEN_MARKER}-0123456789"),
        COMPANY,
        "k_obs",
        "SCIM Provisioning",
    );
    demo.seed_example_data(COMPANY);
    let inject = Arc::new(Mutex::new(Inject::Nothing));
    let state = inject.clone();
    let app = demo
        .router()
        .layer(axum::middleware::from_fn(move |req: Request, next: Next| {
            let state = state.clone();
            async move {
                let what = if req.uri().path().ends_with("/introspect") {
                    Inject::Nothing
                } else {
                    std::mem::replace(&mut *state.lock().expect("lock"), Inject::Nothing)
                };
                let response: Response = match what {
                    Inject::Nothing => next.run(req).await,
                    Inject::Status422 => (
                        axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                        axum::Json(json!({"errors": {"base": [format!("{UPSTREAM_ERROR_MARKER} is not allowed")]}})),
                    )
                        .into_response(),
                    Inject::Status500 => (
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        axum::Json(json!({"error": {"code": "boom", "message": UPSTREAM_500_MARKER}})),
                    )
                        .into_response(),
                };
                response
            }
        }));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (demo, addr, inject)
}

/// The gateway binary, its stderr collected by a thread as it is written.
struct Binary {
    child: Child,
    log: Arc<Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Binary {
    fn spawn(upstream: SocketAddr, log_format: &str) -> Binary {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_scimgate"));
        for (k, _) in std::env::vars() {
            if k.starts_with("SCIMGATE_") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd
            .args([
                "serve",
                "--config",
                "tests/no-such-config.toml",
                "--mappings",
                "mappings/blacksmith",
            ])
            .env("RUST_LOG", "trace")
            .env("SCIMGATE_LISTEN", "127.0.0.1:0")
            .env("SCIMGATE_ADMIN_LISTEN", "127.0.0.1:0")
            .env("SCIMGATE_UPSTREAM__URL", format!("http://{upstream}"))
            .env(
                "SCIMGATE_UPSTREAM__TOKEN",
                format!("svc-{SERVICE_TOKEN_MARKER}"),
            )
            .env("SCIMGATE_LOG_FORMAT", log_format)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("scimgate starts");
        let mut stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match stderr.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sink.lock().expect("lock").extend_from_slice(&buf[..n]),
                }
            }
        });
        Binary {
            child,
            log,
            reader: Some(reader),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().expect("lock")).into_owned()
    }

    /// The addresses from the "scimgate serving" line: (SCIM, admin).
    async fn addresses(&mut self) -> (String, String) {
        let started = Instant::now();
        loop {
            let text = self.text();
            if let Some(line) = text.lines().find(|l| l.contains("scimgate serving")) {
                let field = |name: &str| {
                    let start = line
                        .find(&format!("{name}="))
                        .map(|i| i + name.len() + 1)
                        .or_else(|| {
                            line.find(&format!("\"{name}\":\""))
                                .map(|i| i + name.len() + 4)
                        })
                        .unwrap_or_else(|| panic!("no {name} in {line}"));
                    line[start..]
                        .chars()
                        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                        .collect::<String>()
                };
                return (field("listen"), field("admin_listen"));
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("scimgate exited ({status}):\n{text}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "scimgate did not start:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the process and returns everything it wrote.
    fn finish(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.text()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One SCIM call: status, X-Request-Id answered, body.
async fn call(
    c: &reqwest::Client,
    base: &str,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, String, Value) {
    let mut r = c
        .request(method, format!("{base}{path}"))
        .bearer_auth(token);
    if let Some(b) = body {
        r = r
            .header("content-type", "application/scim+json")
            .body(b.to_string());
    }
    let r = r.send().await.expect("answer");
    let status = r.status();
    let id = r
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = r.bytes().await.expect("body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, id, body)
}

fn patch(ops: Value) -> Value {
    json!({"schemas": [PATCH_SCHEMA], "Operations": ops})
}

/// The user and group flows Okta runs, plus failures, with markers everywhere. Returns
/// the request ids answered, in order, with the status each got.
async fn flows(base: &str, inject: &Mutex<Inject>) -> Vec<(String, StatusCode)> {
    let c = client();
    let token = format!("tok-{TOKEN_MARKER}-0123456789");
    let mut seen = Vec::new();
    let mut step = |r: &(StatusCode, String, Value), want: u16, what: &str| {
        assert_eq!(r.0.as_u16(), want, "{what}: {}", r.2);
        assert!(!r.1.is_empty(), "{what}: no X-Request-Id");
        seen.push((r.1.clone(), r.0));
    };
    let email = format!("{EMAIL_MARKER}@example.com");
    let user = json!({
        "schemas": [USER_SCHEMA, "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
        "userName": email,
        "externalId": EXTERNAL_MARKER,
        "password": PASSWORD_MARKER,
        "name": {"givenName": GIVEN_MARKER, "familyName": FAMILY_MARKER},
        "emails": [{"type": "work", "value": email, "primary": true}],
        "phoneNumbers": [{"type": "work", "value": PHONE_MARKER}],
        "active": true,
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": DEPARTMENT_MARKER},
    });

    // Users: create, get, list by filter (pushed down and scanned), PUT, PATCH deactivate.
    let r = call(&c, base, &token, Method::POST, "/Users", Some(user.clone())).await;
    step(&r, 201, "create user");
    let id = r.2["id"].as_str().expect("id").to_owned();
    let r = call(&c, base, &token, Method::GET, &format!("/Users/{id}"), None).await;
    step(&r, 200, "get user");
    assert_eq!(r.2["name"]["givenName"], GIVEN_MARKER);
    let filter = format!("/Users?filter=userName%20eq%20%22{EMAIL_MARKER}%40example.com%22");
    let r = call(&c, base, &token, Method::GET, &filter, None).await;
    step(&r, 200, "list by userName");
    assert_eq!(r.2["totalResults"], 1);
    let filter = format!("/Users?filter=name.familyName%20eq%20%22{FAMILY_MARKER}%22");
    let r = call(&c, base, &token, Method::GET, &filter, None).await;
    step(&r, 200, "list by familyName (scan)");
    assert_eq!(r.2["totalResults"], 1);
    let mut replaced = user.clone();
    replaced["title"] = json!(TITLE_MARKER);
    replaced["id"] = json!(id);
    let r = call(
        &c,
        base,
        &token,
        Method::PUT,
        &format!("/Users/{id}"),
        Some(replaced),
    )
    .await;
    step(&r, 200, "replace user");
    let r = call(
        &c,
        base,
        &token,
        Method::PATCH,
        &format!("/Users/{id}"),
        Some(patch(
            json!([{"op": "replace", "value": {"active": false}}]),
        )),
    )
    .await;
    step(&r, 200, "deactivate user");

    // A duplicate: the upstream's 422 on email becomes 409.
    let r = call(&c, base, &token, Method::POST, "/Users", Some(user.clone())).await;
    step(&r, 409, "duplicate user");

    // Upstream error bodies with markers: a 422 whose errors reach the SCIM detail, a 500.
    *inject.lock().expect("lock") = Inject::Status422;
    let r = call(&c, base, &token, Method::GET, &format!("/Users/{id}"), None).await;
    step(&r, 400, "upstream 422");
    assert!(
        r.2.to_string().contains(UPSTREAM_ERROR_MARKER),
        "the marker should reach the client, proving it passed the gateway: {}",
        r.2
    );
    *inject.lock().expect("lock") = Inject::Status500;
    let r = call(&c, base, &token, Method::GET, &format!("/Users/{id}"), None).await;
    step(&r, 502, "upstream 500");

    // Groups: create with members, get, rename, PATCH members, list by filter, delete.
    let group = json!({
        "schemas": [GROUP_SCHEMA],
        "displayName": GROUP_MARKER,
        "members": [{"value": id}, {"value": "1001"}],
    });
    let r = call(&c, base, &token, Method::POST, "/Groups", Some(group)).await;
    step(&r, 201, "create group");
    let gid = r.2["id"].as_str().expect("group id").to_owned();
    let r = call(
        &c,
        base,
        &token,
        Method::GET,
        &format!("/Groups/{gid}"),
        None,
    )
    .await;
    step(&r, 200, "get group");
    let r = call(
        &c,
        base,
        &token,
        Method::PATCH,
        &format!("/Groups/{gid}"),
        Some(patch(json!([
            {"op": "replace", "value": {"id": gid, "displayName": GROUP_RENAMED_MARKER}},
            {"op": "remove", "path": format!("members[value eq \"{id}\"]")},
            {"op": "add", "path": "members", "value": [{"value": "1002"}]},
        ]))),
    )
    .await;
    step(&r, 204, "patch group");
    let r = call(
        &c,
        base,
        &token,
        Method::PUT,
        &format!("/Groups/{gid}"),
        Some(json!({
            "schemas": [GROUP_SCHEMA],
            "displayName": GROUP_RENAMED_MARKER,
            "members": [{"value": "1001"}, {"value": id}],
        })),
    )
    .await;
    step(&r, 200, "replace group");
    let filter = format!("/Groups?filter=displayName%20eq%20%22{GROUP_RENAMED_MARKER}%22");
    let r = call(&c, base, &token, Method::GET, &filter, None).await;
    step(&r, 200, "list groups by name");
    assert_eq!(r.2["totalResults"], 1);
    let r = call(
        &c,
        base,
        &token,
        Method::DELETE,
        &format!("/Groups/{gid}"),
        None,
    )
    .await;
    step(&r, 204, "delete group");

    // Delete the user; then a wrong token and a malformed body.
    let r = call(
        &c,
        base,
        &token,
        Method::DELETE,
        &format!("/Users/{id}"),
        None,
    )
    .await;
    step(&r, 204, "delete user");
    let wrong = format!("tok-{WRONG_TOKEN_MARKER}");
    let r = call(&c, base, &wrong, Method::GET, "/Users", None).await;
    step(&r, 401, "wrong token");
    let r = c
        .post(format!("{base}/Users"))
        .bearer_auth(&token)
        .header("content-type", "application/scim+json")
        .body(format!("{{\"userName\": \"{EMAIL_MARKER}\", "))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 400);
    seen
}

async fn run_flows_and_read_the_log(log_format: &str) -> (String, Vec<(String, StatusCode)>) {
    let (demo, upstream, inject) = marker_upstream().await;
    let mut gw = Binary::spawn(upstream, log_format);
    let (listen, admin) = gw.addresses().await;
    let base = format!("http://{listen}/scim/v2");
    let seen = flows(&base, &inject).await;
    // Every upstream call carried a request id.
    assert!(demo
        .requests()
        .iter()
        .all(|r| r.request_id.as_deref().is_some_and(|id| !id.is_empty())));
    // The binary serves its metrics on the admin address, not on the SCIM port.
    let (status, metrics) = get_text(&format!("http://{admin}/metrics")).await;
    assert_eq!(status, 200);
    assert!(metrics.contains(
        r#"scimgate_scim_requests_total{resource="User",operation="create",status="201"} 1"#
    ));
    let (status, _) = get_text(&format!("http://{listen}/metrics")).await;
    assert_eq!(status, 404);
    // Let the last lines be written before stopping.
    tokio::time::sleep(Duration::from_millis(200)).await;
    (gw.finish(), seen)
}

fn assert_no_markers(log: &str) {
    assert!(
        log.len() > 10_000,
        "the trace log is suspiciously short ({} bytes):\n{log}",
        log.len()
    );
    for marker in markers() {
        if let Some(i) = log.find(marker) {
            let start = log[..i].rfind('\n').map_or(0, |n| n + 1);
            let end = log[i..].find('\n').map_or(log.len(), |n| i + n);
            panic!("{marker:?} is in the log:\n{}", &log[start..end]);
        }
    }
    if let Some(line) = log.lines().find(|l| {
        l.to_ascii_lowercase().contains("bearer tok-")
            || l.to_ascii_lowercase().contains("bearer svc-")
    }) {
        panic!("an Authorization value is in the log:\n{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_carry_no_secrets_and_one_line_per_request() {
    let (log, seen) = run_flows_and_read_the_log("text").await;
    assert_no_markers(&log);
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("scimgate::request") && l.contains("scim request"))
        .collect();
    for (id, status) in &seen {
        let mine: Vec<&&str> = lines
            .iter()
            .filter(|l| l.contains(&format!("request_id={id} ")))
            .collect();
        assert_eq!(mine.len(), 1, "one line for {id}:\n{}", lines.join("\n"));
        let line = mine[0];
        assert!(
            line.contains(&format!("status={}", status.as_u16())),
            "{line}"
        );
        assert!(line.contains("latency_ms="), "{line}");
        assert!(line.contains("upstream_calls="), "{line}");
        assert!(line.contains("operation="), "{line}");
        assert!(line.contains("resource="), "{line}");
        if status.as_u16() != 401 {
            assert!(line.contains("key_id=k_obs"), "{line}");
            assert!(line.contains("tenant=company_id=42"), "{line}");
        }
    }
    assert!(lines.iter().any(|l| l.contains("resource=User")
        && l.contains("operation=create")
        && l.contains("status=201")));
    assert!(lines.iter().any(|l| l.contains("resource=Group")
        && l.contains("operation=patch")
        && l.contains("status=204")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_no_secrets_and_one_line_per_request() {
    let (log, seen) = run_flows_and_read_the_log("json").await;
    assert_no_markers(&log);
    let requests: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "scimgate::request")
        .collect();
    assert!(
        log.lines()
            .filter(|l| !l.trim().is_empty())
            .all(|l| serde_json::from_str::<Value>(l).is_ok()),
        "every log line is JSON"
    );
    for (id, status) in &seen {
        let mine: Vec<&Value> = requests
            .iter()
            .filter(|v| v["fields"]["request_id"] == json!(id))
            .collect();
        assert_eq!(mine.len(), 1, "one line for {id}");
        let f = &mine[0]["fields"];
        assert_eq!(f["message"], "scim request");
        assert_eq!(f["status"], json!(status.as_u16()));
        assert!(f["latency_ms"].is_number(), "{f}");
        assert!(f["upstream_calls"].is_number(), "{f}");
        assert!(
            f["resource"].is_string() && f["operation"].is_string(),
            "{f}"
        );
        if status.as_u16() != 401 {
            assert_eq!(f["key_id"], "k_obs");
            assert_eq!(f["tenant"], "company_id=42");
        }
    }
    let create = requests
        .iter()
        .map(|v| &v["fields"])
        .find(|f| f["resource"] == "User" && f["operation"] == "create" && f["status"] == 201)
        .expect("the create line");
    // Introspection is cached: create is one upstream call (plus the first introspection).
    assert!(create["upstream_calls"].as_u64().is_some_and(|n| n >= 1));
}

#[tokio::test]
async fn probes_and_labels_work_with_an_empty_base_path() {
    let token = "root-token-0123456789";
    let run = start(token, |c| c.base_path = "/".into()).await;
    let c = client();
    let r = c
        .get(format!("{}/Users/1001", run.origin))
        .bearer_auth(token)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));
    let (status, text) = get_text(&format!("{}/healthz", run.origin)).await;
    assert_eq!((status, text.as_str()), (StatusCode::OK, "ok"));
    let (status, _) = get_text(&format!("{}/readyz", run.origin)).await;
    assert_eq!(status, 200);
    let (status, _) = get_text(&format!("{}/metrics", run.origin)).await;
    assert_eq!(status, 401, "/metrics is just an unknown endpoint here");
    let (_, metrics) = get_text(&format!("{}/metrics", run.admin)).await;
    assert_eq!(
        sample(
            &metrics,
            r#"scimgate_scim_requests_total{resource="User",operation="get",status="200"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        !metrics.contains("healthz") && !metrics.contains("readyz"),
        "{metrics}"
    );
}
