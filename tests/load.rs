//! Bounded load on loopback, through the real gateway:
//!
//! - mixed Okta traffic (existence checks, creates, reads, PUTs, PATCHes, deactivations,
//!   group pushes with member adds and removes, renames, deletes, list pages) from 64
//!   concurrent connections to the demo upstream: every answer exactly the expected one
//!   (so no 5xx at all), the final upstream state exactly as expected, and every bounded
//!   structure of the gateway within its bound, read from its own `/metrics`;
//! - a flood of random bearer tokens against introspection: the introspection cache must
//!   stay within `auth.cache_capacity`.
//!
//! Sizes: 10,000 requests and 100,000 random tokens (100 times the cache capacity) by
//! default, about 30 s in a debug build on 2 cores; `LOADTEST_REQUESTS` and
//! `LOADTEST_TOKENS` change them (not `SCIMGATE_*`: those are gateway settings).

mod stress;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use scimgate::config::{AuthMode, Config};
use stress::{
    metric, metric_sum, start_demo, Gate, COMPANY, GROUP_SCHEMA, PATCH_SCHEMA, SERVICE_TOKEN,
    USER_SCHEMA,
};

const CONNECTIONS: usize = 64;
const LOAD_TOKEN: &str = "load-test-token-8c0f2e";

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One Okta request of a worker's script.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// `GET /Users?filter=userName eq …`, expecting this many results.
    FindUser(usize, u64),
    CreateUser(usize),
    GetUser(usize),
    PutUser(usize),
    PatchFamilyName(usize),
    Deactivate(usize),
    FindGroup,
    CreateGroup,
    AddMembers,
    RemoveMembers,
    RenameGroup,
    GetGroup,
    DeleteUser(usize),
    ListPage(usize),
}

fn email(w: usize, u: usize) -> String {
    format!("load-{w}-{u}@example.com")
}

fn team_name(w: usize) -> String {
    format!("load-team-{w}")
}

fn deactivated(u: usize) -> bool {
    u % 3 == 0
}

fn removed_from_team(u: usize) -> bool {
    u % 4 == 0
}

fn deleted(u: usize) -> bool {
    u % 8 == 0
}

/// The script of one worker: `users` user lifecycles, one group push, deletes, and list
/// reads to make up `total` requests.
fn script(users: usize, total: usize) -> Vec<Step> {
    let mut steps = Vec::new();
    for u in 0..users {
        steps.push(Step::FindUser(u, 0));
        steps.push(Step::CreateUser(u));
        steps.push(Step::GetUser(u));
        steps.push(Step::PutUser(u));
        steps.push(Step::PatchFamilyName(u));
        if deactivated(u) {
            steps.push(Step::Deactivate(u));
        } else {
            steps.push(Step::FindUser(u, 1));
        }
    }
    steps.extend([
        Step::FindGroup,
        Step::CreateGroup,
        Step::AddMembers,
        Step::RemoveMembers,
        Step::RenameGroup,
        Step::GetGroup,
    ]);
    for u in (0..users).filter(|u| deleted(*u)) {
        steps.push(Step::DeleteUser(u));
    }
    let mut page = 0;
    while steps.len() < total {
        steps.push(Step::ListPage(page));
        page += 1;
    }
    assert_eq!(steps.len(), total, "the script fits its share");
    steps
}

fn patch(ops: Value) -> Value {
    json!({"schemas": [PATCH_SCHEMA], "Operations": ops})
}

/// Runs one worker's script; panics on the first unexpected answer.
async fn run_worker(
    gate: Arc<Gate>,
    w: usize,
    users: usize,
    steps: Vec<Step>,
    done: Arc<AtomicUsize>,
) -> (Vec<String>, String) {
    let mut ids = vec![String::new(); users];
    let mut group = String::new();
    let members = |ids: &[String], pick: &dyn Fn(usize) -> bool| -> Value {
        Value::Array(
            (0..users)
                .filter(|u| pick(*u))
                .map(|u| json!({"value": ids[u]}))
                .collect(),
        )
    };
    for step in steps {
        let (method, path, body, want): (Method, String, Option<Value>, u16) = match step {
            Step::FindUser(u, _) => (
                Method::GET,
                format!(
                    "/Users?filter={}&startIndex=1&count=100",
                    urlencode(&format!("userName eq \"{}\"", email(w, u)))
                ),
                None,
                200,
            ),
            Step::CreateUser(u) => (
                Method::POST,
                "/Users".into(),
                Some(json!({
                    "schemas": [USER_SCHEMA],
                    "userName": email(w, u),
                    "name": {"givenName": "Given", "familyName": "Family"},
                    "emails": [{"primary": true, "value": email(w, u), "type": "work"}],
                    "displayName": "Given Family",
                    "externalId": format!("00u{w}x{u}"),
                    "active": true,
                    "password": "not-stored-9f"
                })),
                201,
            ),
            Step::GetUser(u) => (Method::GET, format!("/Users/{}", ids[u]), None, 200),
            Step::PutUser(u) => (
                Method::PUT,
                format!("/Users/{}", ids[u]),
                Some(json!({
                    "schemas": [USER_SCHEMA],
                    "id": ids[u],
                    "userName": email(w, u),
                    "name": {"givenName": format!("Put{w}x{u}"), "familyName": "Family"},
                    "emails": [{"primary": true, "value": email(w, u), "type": "work"}],
                    "title": format!("Title {w}/{u}"),
                    "active": true
                })),
                200,
            ),
            Step::PatchFamilyName(u) => (
                Method::PATCH,
                format!("/Users/{}", ids[u]),
                Some(patch(
                    json!([{"op": "replace", "path": "name.familyName", "value": format!("Fam{w}x{u}")}]),
                )),
                200,
            ),
            Step::Deactivate(u) => (
                Method::PATCH,
                format!("/Users/{}", ids[u]),
                Some(patch(
                    json!([{"op": "replace", "value": {"active": false}}]),
                )),
                200,
            ),
            Step::FindGroup => (
                Method::GET,
                format!(
                    "/Groups?filter={}&startIndex=1&count=100",
                    urlencode(&format!("displayName eq \"{}\"", team_name(w)))
                ),
                None,
                200,
            ),
            Step::CreateGroup => (
                Method::POST,
                "/Groups".into(),
                Some(
                    json!({"schemas": [GROUP_SCHEMA], "displayName": team_name(w), "members": []}),
                ),
                201,
            ),
            Step::AddMembers => (
                Method::PATCH,
                format!("/Groups/{group}"),
                Some(patch(
                    json!([{"op": "add", "path": "members", "value": members(&ids, &|_| true)}]),
                )),
                204,
            ),
            Step::RemoveMembers => (
                Method::PATCH,
                format!("/Groups/{group}"),
                Some(patch(
                    json!([{"op": "remove", "path": "members", "value": members(&ids, &removed_from_team)}]),
                )),
                204,
            ),
            Step::RenameGroup => (
                Method::PATCH,
                format!("/Groups/{group}"),
                Some(patch(
                    json!([{"op": "replace", "value": {"id": group, "displayName": format!("{}-renamed", team_name(w))}}]),
                )),
                204,
            ),
            Step::GetGroup => (Method::GET, format!("/Groups/{group}"), None, 200),
            Step::DeleteUser(u) => (Method::DELETE, format!("/Users/{}", ids[u]), None, 204),
            Step::ListPage(p) => match p % 3 {
                0 => (
                    Method::GET,
                    format!("/Users?startIndex={}&count=10", 1 + (p * 7) % 500),
                    None,
                    200,
                ),
                1 => (
                    Method::GET,
                    "/Groups?count=5&excludedAttributes=members".into(),
                    None,
                    200,
                ),
                _ => (Method::GET, "/ServiceProviderConfig".into(), None, 200),
            },
        };
        let answer = gate.send(method.clone(), &path, body.as_ref()).await;
        assert_eq!(
            answer.status, want,
            "worker {w}, {step:?}: {method} {path}: {}",
            answer.body
        );
        match step {
            Step::FindUser(_, n) => {
                assert_eq!(
                    answer.body["totalResults"],
                    json!(n),
                    "{step:?}: {}",
                    answer.body
                );
            }
            Step::FindGroup => assert_eq!(answer.body["totalResults"], json!(0)),
            Step::CreateUser(u) => {
                ids[u] = answer.body["id"].as_str().expect("id").to_owned();
            }
            Step::CreateGroup => {
                group = answer.body["id"].as_str().expect("id").to_owned();
            }
            Step::GetGroup => {
                let mut got: Vec<String> = answer.body["members"]
                    .as_array()
                    .map(|m| {
                        m.iter()
                            .filter_map(|v| v["value"].as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                got.sort();
                let mut want: Vec<String> = (0..users)
                    .filter(|u| !removed_from_team(*u))
                    .map(|u| ids[u].clone())
                    .collect();
                want.sort();
                assert_eq!(got, want, "worker {w}: group members");
            }
            _ => {}
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    (ids, group)
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_okta_load_through_the_gateway() {
    let total = env_count("LOADTEST_REQUESTS", 10_000);
    let (demo, demo_url) = start_demo().await;
    demo.add_scim_key(LOAD_TOKEN, COMPANY, "k_load", "SCIM Provisioning");
    let mut config = Config::default();
    config.upstream.url = demo_url;
    config.upstream.token = Some(SERVICE_TOKEN.to_owned());
    config.auth.mode = AuthMode::Introspect;
    // The limiter stays on, with room for this load.
    config.limits.rate_per_second = 100_000;
    config.limits.burst = 100_000;
    let limit = config.upstream.max_concurrent;
    let gate = Arc::new(Gate::start(config, LOAD_TOKEN).await);

    // Each worker's share, and how many users fit in it (6 requests per user, one delete
    // per 8 users, 6 for the group push).
    let shares: Vec<usize> = (0..CONNECTIONS)
        .map(|w| total / CONNECTIONS + usize::from(w < total % CONNECTIONS))
        .collect();
    let users = ((total / CONNECTIONS).saturating_sub(6) * 8 / 49).max(1);
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = shares
        .iter()
        .enumerate()
        .map(|(w, share)| {
            let steps = script(users, *share);
            tokio::spawn(run_worker(gate.clone(), w, users, steps, done.clone()))
        })
        .collect();
    let mut results = Vec::new();
    for worker in workers {
        results.push(
            worker
                .await
                .expect("a worker finished without a wrong answer"),
        );
    }
    let elapsed = started.elapsed();
    assert_eq!(done.load(Ordering::Relaxed), total);
    eprintln!(
        "{total} requests at {CONNECTIONS} connections in {elapsed:.1?} ({:.0}/s); {} users, {} groups",
        total as f64 / elapsed.as_secs_f64(),
        users * CONNECTIONS,
        CONNECTIONS
    );

    // The upstream holds exactly what the requests said.
    let mut expected: BTreeMap<String, Value> = BTreeMap::new();
    for w in 0..CONNECTIONS {
        for u in (0..users).filter(|u| !deleted(*u)) {
            expected.insert(
                email(w, u),
                json!({
                    "first_name": format!("Put{w}x{u}"),
                    "last_name": format!("Fam{w}x{u}"),
                    "title": format!("Title {w}/{u}"),
                    "external_id": format!("00u{w}x{u}"),
                    "status": if deactivated(u) { "deactivated" } else { "active" },
                }),
            );
        }
    }
    let actual: BTreeMap<String, Value> = demo
        .users(COMPANY)
        .into_iter()
        .map(|u| {
            (
                u["email"].as_str().expect("email").to_owned(),
                json!({
                    "first_name": u["first_name"],
                    "last_name": u["last_name"],
                    "title": u["title"],
                    "external_id": u["external_id"],
                    "status": u["status"],
                }),
            )
        })
        .collect();
    assert_eq!(actual.len(), expected.len(), "users upstream");
    assert!(
        actual == expected,
        "the upstream users differ from the expected ones"
    );
    for (w, (ids, group)) in results.iter().enumerate() {
        let team_id: i64 = group.parse().expect("integer team id");
        let team = demo.team(COMPANY, team_id).expect("the team exists");
        assert_eq!(team["name"], json!(format!("{}-renamed", team_name(w))));
        let mut want: Vec<i64> = (0..users)
            .filter(|u| !removed_from_team(*u))
            .map(|u| ids[u].parse().expect("integer id"))
            .collect();
        want.sort_unstable();
        assert_eq!(demo.team_members(COMPANY, team_id), Some(want), "team {w}");
    }
    let groups = gate.get("/Groups?count=0").await;
    assert_eq!(groups.body["totalResults"], json!(CONNECTIONS));

    // Every bound held, as the gateway's own metrics say.
    let m = gate.metrics().await;
    let gauge = |name: &str| metric(&m, name).unwrap_or_else(|| panic!("{name} in /metrics"));
    assert_eq!(gauge("scimgate_scim_requests_in_flight"), 0.0);
    assert_eq!(gauge("scimgate_upstream_in_flight"), 0.0);
    assert!(gauge("scimgate_upstream_in_flight_peak") <= limit as f64);
    assert_eq!(gauge("scimgate_upstream_in_flight_limit"), limit as f64);
    assert!(
        gauge("scimgate_introspection_cache_entries")
            <= gauge("scimgate_introspection_cache_capacity")
    );
    assert_eq!(gauge("scimgate_rate_limit_buckets"), 1.0, "one tenant");
    assert!(gauge("scimgate_rate_limit_buckets") <= gauge("scimgate_rate_limit_buckets_capacity"));
    assert_eq!(gauge("scimgate_rate_limited_total"), 0.0);
    assert_eq!(gauge("scimgate_upstream_retries_total"), 0.0);
    assert_eq!(metric_sum(&m, "scimgate_upstream_refused_total", &[]), 0.0);
    let answered = metric_sum(&m, "scimgate_scim_requests_total", &[]);
    assert_eq!(answered as usize, total + 1);
    let server_errors: f64 = ["500", "502", "503", "504"]
        .iter()
        .map(|s| {
            metric_sum(
                &m,
                "scimgate_scim_requests_total",
                &[&format!("status=\"{s}\"")],
            )
        })
        .sum();
    assert_eq!(server_errors, 0.0, "no 5xx");
}

/// A stub whose token introspection answers "inactive" at once, counting the calls.
async fn inactive_introspection() -> (String, Arc<AtomicUsize>) {
    use axum::routing::post;
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let app = axum::Router::new().route(
        "/api/v1/scim_keys/introspect",
        post(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                axum::Json(json!({"active": false}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), calls)
}

/// Resident memory of this process, in bytes (Linux).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_tokens_cannot_grow_the_introspection_cache() {
    let tokens = env_count("LOADTEST_TOKENS", 100_000);
    let capacity = 1_000;
    let (url, calls) = inactive_introspection().await;
    let mut config = Config::default();
    config.upstream.url = url;
    config.upstream.token = Some(SERVICE_TOKEN.to_owned());
    config.auth.mode = AuthMode::Introspect;
    config.auth.cache_capacity = capacity;
    config.auth.negative_ttl_s = 300;
    let gate = Arc::new(Gate::start(config, "unused").await);
    let before = resident_bytes();
    let started = Instant::now();
    let per_task = tokens / CONNECTIONS;
    let rejected = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|t| {
            let gate = gate.clone();
            let rejected = rejected.clone();
            let n = per_task + usize::from(t < tokens % CONNECTIONS);
            tokio::spawn(async move {
                use rand::Rng;
                for _ in 0..n {
                    let token: [u8; 24] = rand::rng().random();
                    let response = gate
                        .client
                        .get(format!("{}/Users", gate.base))
                        .bearer_auth(hex::encode(token))
                        .timeout(Duration::from_secs(30))
                        .send()
                        .await
                        .expect("the gateway answers");
                    assert_eq!(response.status(), 401);
                    let _ = response.bytes().await;
                    rejected.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("every random token is a 401");
    }
    let elapsed = started.elapsed();
    assert_eq!(rejected.load(Ordering::Relaxed), tokens);
    assert_eq!(
        calls.load(Ordering::Relaxed),
        tokens,
        "each token checked once"
    );

    let m = gate.metrics().await;
    let entries = metric(&m, "scimgate_introspection_cache_entries").expect("entries");
    assert_eq!(
        metric(&m, "scimgate_introspection_cache_capacity"),
        Some(capacity as f64)
    );
    assert!(
        entries <= capacity as f64,
        "{entries} cached for a capacity of {capacity}"
    );
    assert_eq!(gate.gateway.auth.cached_entries().await, entries as u64);
    assert_eq!(
        metric(&m, "scimgate_auth_failures_total{reason=\"rejected\"}"),
        Some(tokens as f64)
    );
    assert_eq!(
        metric(&m, "scimgate_rate_limit_buckets"),
        Some(0.0),
        "no tenant, no bucket"
    );
    if let (Some(a), Some(b)) = (before, resident_bytes()) {
        let grown = b.saturating_sub(a);
        eprintln!(
            "{tokens} random tokens in {elapsed:.1?}; {entries} cached; RSS grew {} MiB",
            grown >> 20
        );
        assert!(grown < 256 << 20, "memory grew by {grown} bytes");
    }
}
