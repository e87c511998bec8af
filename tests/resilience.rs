//! Upstream faults, injected by a proxy between the gateway and the demo Blacksmith API:
//! down, refusing, resetting, slow past the timeout, 5xx, truncated and non-JSON answers,
//! and a connection reset in the middle of a member fan-out. Each must give its documented
//! SCIM status; only safe calls may be retried (the proxy counts every attempt); the
//! circuit breaker must open, fail fast and recover; the concurrency cap and the request
//! deadline must hold; and after a partial failure the upstream must be as the gateway
//! reported.

mod stress;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use stress::{
    metric, start_demo, static_config, Fault, FaultProxy, Gate, COMPANY, PATCH_SCHEMA,
    STATIC_TOKEN, USER_SCHEMA,
};

fn user_body(email: &str) -> Value {
    json!({
        "schemas": [USER_SCHEMA],
        "userName": email,
        "name": {"givenName": "Eve", "familyName": "Example"},
        "active": true
    })
}

fn patch(ops: Value) -> Value {
    json!({"schemas": [PATCH_SCHEMA], "Operations": ops})
}

fn users_path() -> String {
    format!("/api/v1/companies/{COMPANY}/users")
}

/// One fault case: what the proxy does to which upstream call, the SCIM request, the
/// status the client must get, and how many times the proxy must have seen that call.
struct Case {
    name: &'static str,
    /// Upstream method and path suffix the fault applies to (and that is counted).
    upstream: (&'static str, String),
    fault: Fault,
    /// `None`: every matching call; `Some(n)`: the first n.
    times: Option<usize>,
    request: (Method, String, Option<Value>),
    status: u16,
    attempts: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_fault_gives_its_documented_status_and_only_safe_calls_are_retried() {
    let (demo, demo_url) = start_demo().await;
    let ids = demo.seed_users(COMPANY, 3);
    let proxy = FaultProxy::start(&demo_url).await;
    let mut config = static_config(&proxy.url());
    config.upstream.timeout_ms = 300;
    config.upstream.retries = 2;
    config.upstream.retry_backoff_ms = 5;
    config.upstream.retry_budget_percent = 100;
    // Each case stands alone: the breaker has its own test.
    config.upstream.breaker_failures = 0;
    let gate = Gate::start(config, STATIC_TOKEN).await;

    let one = ids[0];
    let get_one = || (Method::GET, format!("/Users/{one}"), None);
    let user_call = |m: &'static str| (m, format!("{}/{one}", users_path()));
    let list_call = ("GET", users_path());
    let json_answer = |status: u16| Fault::Answer(status, "application/json", "{}".into());
    let text_answer =
        |status: u16| Fault::Answer(status, "text/html", "<html>Bad gateway</html>".into());
    let rename = patch(json!([{"op": "replace", "path": "name.givenName", "value": "Zed"}]));
    let cases = vec![
        Case {
            name: "GET, 500: not retried, 502",
            upstream: user_call("GET"),
            fault: json_answer(500),
            times: None,
            request: get_one(),
            status: 502,
            attempts: 1,
        },
        Case {
            name: "GET, 503 every time: retried twice, 502",
            upstream: user_call("GET"),
            fault: text_answer(503),
            times: None,
            request: get_one(),
            status: 502,
            attempts: 3,
        },
        Case {
            name: "GET, one 502 from a proxy: retried, 200",
            upstream: user_call("GET"),
            fault: text_answer(502),
            times: Some(1),
            request: get_one(),
            status: 200,
            attempts: 2,
        },
        Case {
            name: "GET, one 504: retried, 200",
            upstream: user_call("GET"),
            fault: json_answer(504),
            times: Some(1),
            request: get_one(),
            status: 200,
            attempts: 2,
        },
        Case {
            name: "GET, one connection reset: retried, 200",
            upstream: user_call("GET"),
            fault: Fault::Reset,
            times: Some(1),
            request: get_one(),
            status: 200,
            attempts: 2,
        },
        Case {
            name: "GET, resets every time (refusing): 503",
            upstream: user_call("GET"),
            fault: Fault::Reset,
            times: None,
            request: get_one(),
            status: 503,
            attempts: 3,
        },
        Case {
            name: "GET, one truncated answer: retried, 200",
            upstream: user_call("GET"),
            fault: Fault::Truncate,
            times: Some(1),
            request: get_one(),
            status: 200,
            attempts: 2,
        },
        Case {
            name: "GET, truncated every time: 502",
            upstream: user_call("GET"),
            fault: Fault::Truncate,
            times: None,
            request: get_one(),
            status: 502,
            attempts: 3,
        },
        Case {
            name: "GET, non-JSON 200: not retried, 502",
            upstream: user_call("GET"),
            fault: Fault::Answer(200, "text/html", "<html>Welcome</html>".into()),
            times: None,
            request: get_one(),
            status: 502,
            attempts: 1,
        },
        Case {
            name: "GET, slow past the timeout: not retried, 504",
            upstream: user_call("GET"),
            fault: Fault::Stall(Duration::from_millis(800)),
            times: None,
            request: get_one(),
            status: 504,
            attempts: 1,
        },
        Case {
            name: "GET, 429 with Retry-After: passed on, not retried",
            upstream: user_call("GET"),
            fault: Fault::AnswerWith(
                429,
                vec![
                    ("content-type", "application/json".into()),
                    ("retry-after", "7".into()),
                ],
                r#"{"error": {"code": "rate_limited"}}"#.into(),
            ),
            times: None,
            request: get_one(),
            status: 429,
            attempts: 1,
        },
        Case {
            name: "list, one 503: retried, 200",
            upstream: list_call.clone(),
            fault: text_answer(503),
            times: Some(1),
            request: (Method::GET, "/Users".into(), None),
            status: 200,
            attempts: 2,
        },
        Case {
            name: "list, non-JSON: 502",
            upstream: list_call.clone(),
            fault: Fault::Answer(200, "application/json", "{\"data\": [".into()),
            times: None,
            request: (Method::GET, "/Users".into(), None),
            status: 502,
            attempts: 1,
        },
        Case {
            name: "POST, 503: never retried, 502",
            upstream: ("POST", users_path()),
            fault: text_answer(503),
            times: None,
            request: (
                Method::POST,
                "/Users".into(),
                Some(user_body("post503@example.com")),
            ),
            status: 502,
            attempts: 1,
        },
        Case {
            name: "POST, reset: never retried, 503",
            upstream: ("POST", users_path()),
            fault: Fault::Reset,
            times: None,
            request: (
                Method::POST,
                "/Users".into(),
                Some(user_body("postreset@example.com")),
            ),
            status: 503,
            attempts: 1,
        },
        Case {
            name: "POST, slow: never retried, 504",
            upstream: ("POST", users_path()),
            fault: Fault::Stall(Duration::from_millis(800)),
            times: None,
            request: (
                Method::POST,
                "/Users".into(),
                Some(user_body("postslow@example.com")),
            ),
            status: 504,
            attempts: 1,
        },
        Case {
            name: "PATCH, reset: never retried, 503",
            upstream: user_call("PATCH"),
            fault: Fault::Reset,
            times: None,
            request: (Method::PATCH, format!("/Users/{one}"), Some(rename.clone())),
            status: 503,
            attempts: 1,
        },
        Case {
            name: "PATCH, 502: never retried, 502",
            upstream: user_call("PATCH"),
            fault: text_answer(502),
            times: None,
            request: (Method::PATCH, format!("/Users/{one}"), Some(rename.clone())),
            status: 502,
            attempts: 1,
        },
        Case {
            name: "DELETE, 503: not retried (a repeat could answer 404), 502",
            upstream: user_call("DELETE"),
            fault: text_answer(503),
            times: None,
            request: (Method::DELETE, format!("/Users/{one}"), None),
            status: 502,
            attempts: 1,
        },
        Case {
            name: "DELETE, reset after the request was sent: not retried, 503",
            upstream: user_call("DELETE"),
            fault: Fault::Reset,
            times: None,
            request: (Method::DELETE, format!("/Users/{one}"), None),
            status: 503,
            attempts: 1,
        },
    ];
    let users_before = demo.users(COMPANY);
    for case in cases {
        proxy.clear();
        proxy.clear_seen();
        let (method, suffix) = &case.upstream;
        proxy.on(method, suffix, suffix, case.fault.clone(), case.times);
        let (m, path, body) = &case.request;
        let started = Instant::now();
        let answer = gate.send(m.clone(), path, body.as_ref()).await;
        if case.status >= 400 {
            let detail = answer.assert_error(case.status, case.name);
            assert!(
                !detail.contains(stress::SERVICE_TOKEN) && !detail.contains(STATIC_TOKEN),
                "{}: {detail}",
                case.name
            );
        } else {
            assert_eq!(answer.status, case.status, "{}: {}", case.name, answer.body);
        }
        if matches!(case.status, 429 | 503) {
            assert!(
                answer.retry_after().is_some_and(|s| s >= 1),
                "{}: Retry-After",
                case.name
            );
        }
        if case.status == 429 {
            assert_eq!(answer.retry_after(), Some(7), "{}", case.name);
        }
        let attempts = proxy.count(method, suffix);
        assert_eq!(attempts, case.attempts, "{}: upstream attempts", case.name);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{}: answered in {:?}",
            case.name,
            started.elapsed()
        );
    }
    // No write that failed changed anything upstream (each failed before it was applied).
    proxy.clear();
    assert_eq!(demo.users(COMPANY), users_before);
    let metrics = gate.metrics().await;
    assert!(metric(&metrics, "scimgate_upstream_retries_total").unwrap_or(0.0) >= 10.0);
    assert_eq!(metric(&metrics, "scimgate_upstream_in_flight"), Some(0.0));
}

#[tokio::test]
async fn a_down_or_refusing_upstream_is_503_with_retry_after() {
    let (demo, demo_url) = start_demo().await;
    let ids = demo.seed_users(COMPANY, 1);
    let proxy = FaultProxy::start(&demo_url).await;
    let mut config = static_config(&proxy.url());
    config.upstream.retry_backoff_ms = 5;
    config.upstream.breaker_failures = 0;
    let gate = Gate::start(config, STATIC_TOKEN).await;
    assert_eq!(gate.get(&format!("/Users/{}", ids[0])).await.status, 200);

    // Refusing: connections accepted and closed at once.
    proxy.on("", "", "", Fault::Reset, None);
    for path in [format!("/Users/{}", ids[0]), "/Users".to_owned()] {
        let answer = gate.get(&path).await;
        answer.assert_error(503, &format!("refusing, {path}"));
        assert!(answer.retry_after().is_some_and(|s| s >= 1));
    }
    // Down: nothing listens.
    proxy.go_down().await;
    for path in [format!("/Users/{}", ids[0]), "/Users".to_owned()] {
        let answer = gate.get(&path).await;
        let detail = answer.assert_error(503, &format!("down, {path}"));
        assert!(detail.contains("unreachable"), "{detail}");
        assert!(answer.retry_after().is_some_and(|s| s >= 1));
    }
    let create = gate
        .send(Method::POST, "/Users", Some(&user_body("down@example.com")))
        .await;
    create.assert_error(503, "create while down");
    // Back up: served again.
    proxy.come_up().await;
    assert_eq!(gate.get(&format!("/Users/{}", ids[0])).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_breaker_opens_fails_fast_and_recovers_through_a_probe() {
    let (demo, demo_url) = start_demo().await;
    let ids = demo.seed_users(COMPANY, 1);
    let path = format!("/Users/{}", ids[0]);
    let proxy = FaultProxy::start(&demo_url).await;
    let mut config = static_config(&proxy.url());
    config.upstream.retries = 0;
    config.upstream.breaker_failures = 3;
    config.upstream.breaker_cooldown_ms = 400;
    config.upstream.timeout_ms = 200;
    let gate = Gate::start(config, STATIC_TOKEN).await;
    assert_eq!(gate.get(&path).await.status, 200);

    // Three failures to connect open it.
    proxy.go_down().await;
    for i in 0..3 {
        let answer = gate.get(&path).await;
        let detail = answer.assert_error(503, &format!("failure {i}"));
        assert!(!detail.contains("circuit"), "not open yet: {detail}");
    }
    let metrics = gate.metrics().await;
    assert_eq!(
        metric(&metrics, "scimgate_upstream_circuit_open"),
        Some(1.0)
    );
    assert_eq!(
        metric(&metrics, "scimgate_upstream_circuit_opened_total"),
        Some(1.0)
    );

    // Open: even with the upstream back, calls fail fast and none reaches it.
    proxy.come_up().await;
    proxy.clear_seen();
    let started = Instant::now();
    for _ in 0..5 {
        let answer = gate.get(&path).await;
        let detail = answer.assert_error(503, "open");
        assert!(detail.contains("circuit breaker"), "{detail}");
        assert!(answer.retry_after().is_some_and(|s| (1..=1).contains(&s)));
    }
    assert!(started.elapsed() < Duration::from_millis(300), "fast");
    assert!(proxy.seen().is_empty(), "{:?}", proxy.seen());
    // Also for writes, and for every resource.
    gate.send(Method::POST, "/Users", Some(&user_body("open@example.com")))
        .await
        .assert_error(503, "create while open");
    gate.get("/Groups")
        .await
        .assert_error(503, "groups while open");
    assert!(proxy.seen().is_empty());

    // After the cool-down one probe goes through; its success closes the breaker.
    tokio::time::sleep(Duration::from_millis(450)).await;
    for _ in 0..3 {
        let answer = gate.get(&path).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let metrics = gate.metrics().await;
    assert_eq!(
        metric(&metrics, "scimgate_upstream_circuit_open"),
        Some(0.0)
    );

    // Timeouts count too; a failed probe opens it again for another cool-down.
    proxy.on(
        "GET",
        "/users/",
        "",
        Fault::Stall(Duration::from_millis(600)),
        None,
    );
    for _ in 0..3 {
        gate.get(&path).await.assert_error(504, "slow");
    }
    gate.get(&path)
        .await
        .assert_error(503, "open after timeouts");
    tokio::time::sleep(Duration::from_millis(450)).await;
    gate.get(&path)
        .await
        .assert_error(504, "the probe times out");
    let detail = gate.get(&path).await.assert_error(503, "open again");
    assert!(detail.contains("circuit breaker"), "{detail}");
    proxy.clear();
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(gate.get(&path).await.status, 200, "recovered");
    let metrics = gate.metrics().await;
    assert_eq!(
        metric(&metrics, "scimgate_upstream_circuit_opened_total"),
        Some(3.0)
    );
    assert!(metric(
        &metrics,
        "scimgate_upstream_refused_total{reason=\"circuit_open\"}"
    )
    .is_some_and(|n| n >= 8.0));
}

#[tokio::test]
async fn retries_stay_within_the_budget() {
    let (demo, demo_url) = start_demo().await;
    let ids = demo.seed_users(COMPANY, 1);
    let proxy = FaultProxy::start(&demo_url).await;
    let mut config = static_config(&proxy.url());
    config.upstream.retries = 2;
    config.upstream.retry_backoff_ms = 1;
    config.upstream.retry_budget_percent = 10;
    config.upstream.breaker_failures = 0;
    let gate = Gate::start(config, STATIC_TOKEN).await;
    let suffix = format!("/users/{}", ids[0]);
    proxy.on(
        "GET",
        &suffix,
        &suffix,
        Fault::Answer(503, "text/plain", "busy".into()),
        None,
    );
    let requests = 60;
    for _ in 0..requests {
        gate.get(&format!("/Users/{}", ids[0]))
            .await
            .assert_error(502, "503 upstream");
    }
    let attempts = proxy.count("GET", &suffix);
    let retries = attempts - requests;
    // The reserve (10) plus a tenth of the calls, never the 2 per call asked for.
    assert!(
        (10..=10 + requests / 10 + 1).contains(&retries),
        "{retries} retries for {requests} requests"
    );
    let metrics = gate.metrics().await;
    assert_eq!(
        metric(&metrics, "scimgate_upstream_retries_total"),
        Some(retries as f64)
    );
    assert!(
        metric(&metrics, "scimgate_upstream_retry_budget_exhausted_total").is_some_and(|n| n > 0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrency_cap_sheds_load_with_503() {
    let (demo, demo_url) = start_demo().await;
    let ids = demo.seed_users(COMPANY, 1);
    let proxy = FaultProxy::start(&demo_url).await;
    let mut config = static_config(&proxy.url());
    config.upstream.max_concurrent = 2;
    config.upstream.queue_wait_ms = 100;
    let gate = std::sync::Arc::new(Gate::start(config, STATIC_TOKEN).await);
    proxy.on(
        "GET",
        "/users/",
        "",
        Fault::Stall(Duration::from_millis(700)),
        None,
    );
    let path = format!("/Users/{}", ids[0]);
    let answers = futures::future::join_all((0..6).map(|_| {
        let gate = gate.clone();
        let path = path.clone();
        tokio::spawn(async move { gate.get(&path).await })
    }))
    .await;
    let mut ok = 0;
    let mut shed = 0;
    for answer in answers {
        let answer = answer.expect("task");
        match answer.status {
            200 => ok += 1,
            503 => {
                let detail = answer.assert_error(503, "saturated");
                assert!(detail.contains("in flight"), "{detail}");
                assert_eq!(answer.retry_after(), Some(1));
                shed += 1;
            }
            other => panic!("unexpected {other}: {}", answer.body),
        }
    }
    assert_eq!((ok, shed), (2, 4));
    let metrics = gate.metrics().await;
    assert_eq!(
        metric(&metrics, "scimgate_upstream_in_flight_peak"),
        Some(2.0)
    );
    assert_eq!(
        metric(&metrics, "scimgate_upstream_in_flight_limit"),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &metrics,
            "scimgate_upstream_refused_total{reason=\"saturated\"}"
        ),
        Some(4.0)
    );
}

#[tokio::test]
async fn the_request_deadline_is_a_504() {
    let (demo, demo_url) = start_demo().await;
    let ids = demo.seed_users(COMPANY, 1);
    let proxy = FaultProxy::start(&demo_url).await;
    let mut config = static_config(&proxy.url());
    config.upstream.timeout_ms = 5_000;
    config.limits.request_timeout_ms = 300;
    let gate = Gate::start(config, STATIC_TOKEN).await;
    proxy.on(
        "GET",
        "/users/",
        "",
        Fault::Stall(Duration::from_secs(2)),
        None,
    );
    let started = Instant::now();
    let answer = gate.get(&format!("/Users/{}", ids[0])).await;
    let detail = answer.assert_error(504, "deadline");
    assert!(detail.contains("300 ms"), "{detail}");
    assert!(started.elapsed() < Duration::from_millis(1500));
    // Every upstream slot was given back when the request was abandoned.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let metrics = gate.metrics().await;
    assert_eq!(metric(&metrics, "scimgate_upstream_in_flight"), Some(0.0));
    assert_eq!(
        metric(&metrics, "scimgate_scim_requests_in_flight"),
        Some(0.0)
    );
}

/// Outcome of one member in the gateway's partial-failure report.
fn report_entries(detail: &str) -> Vec<(String, bool)> {
    let list = detail
        .split_once(". ")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("a report: {detail}"));
    list.split("; ")
        .map(|entry| {
            let (who, what) = entry
                .split_once(": ")
                .unwrap_or_else(|| panic!("{entry:?}"));
            let value = who.strip_prefix("add ").expect("an add").to_owned();
            let applied = if what.starts_with("applied") {
                true
            } else if what.starts_with("not applied") {
                false
            } else {
                panic!("a sure state for {entry:?} in {detail}")
            };
            (value, applied)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_resets_mid_fan_out_are_reported_as_they_landed() {
    let (demo, demo_url) = start_demo().await;
    let users = demo.seed_users(COMPANY, 20);
    let team = demo.seed_team(COMPANY, "Resilient", &[]);
    let proxy = FaultProxy::start(&demo_url).await;
    let mut config = static_config(&proxy.url());
    config.upstream.retry_backoff_ms = 5;
    let gate = Gate::start(config, STATIC_TOKEN).await;
    let members_suffix = format!("/teams/{team}/members");
    // The 7th member call is cut before it reaches the upstream; the 12th after the
    // upstream applied it, before the answer.
    proxy.on_nth("POST", &members_suffix, &members_suffix, 7, Fault::Reset);
    proxy.on_nth(
        "POST",
        &members_suffix,
        &members_suffix,
        11,
        Fault::ForwardThenReset,
    );
    let value: Vec<Value> = users
        .iter()
        .map(|u| json!({"value": u.to_string()}))
        .collect();
    let answer = gate
        .send(
            Method::PATCH,
            &format!("/Groups/{team}"),
            Some(&patch(
                json!([{"op": "add", "path": "members", "value": value}]),
            )),
        )
        .await;
    let detail = answer.assert_error(502, "a reset mid fan-out");
    assert!(
        detail.contains("19 applied, 1 not applied, 0 unknown"),
        "{detail}"
    );
    // Member adds are POSTs: each sent exactly once.
    assert_eq!(proxy.count("POST", &members_suffix), 20);

    // The upstream is exactly as reported.
    let present: BTreeSet<String> = demo
        .team_members(COMPANY, team)
        .expect("team")
        .into_iter()
        .map(|m| m.to_string())
        .collect();
    let entries = report_entries(&detail);
    assert_eq!(entries.len(), 20, "{detail}");
    for (value, applied) in &entries {
        assert_eq!(
            present.contains(value),
            *applied,
            "{value}: the report says applied={applied}; {detail}"
        );
    }
    assert_eq!(present.len(), 19);

    // Okta retries the PATCH: the one missing member is added, the rest are already so.
    let retry = gate
        .send(
            Method::PATCH,
            &format!("/Groups/{team}"),
            Some(&patch(
                json!([{"op": "add", "path": "members", "value": value}]),
            )),
        )
        .await;
    assert_eq!(retry.status, 204, "{}", retry.body);
    assert_eq!(demo.team_members(COMPANY, team).expect("team"), users);
}

/// Upstream connections are kept alive and reused; one the upstream closes once idle (as
/// Node's server does after five seconds) is noticed, and the next call goes out on a new
/// connection. A POST is never retried, so a call written to the closed connection would
/// be a 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_reused_until_the_upstream_closes_them() {
    let (_demo, demo_url) = start_demo().await;
    let proxy = FaultProxy::start(&demo_url).await;
    let gate = Gate::start(static_config(&proxy.url()), STATIC_TOKEN).await;
    let create = async |email: String| {
        let answer = gate
            .send(Method::POST, "/Users", Some(&user_body(&email)))
            .await;
        assert_eq!(answer.status, 201, "{email}: {}", answer.body);
    };
    for round in 0..5 {
        create(format!("kept-{round}@example.com")).await;
    }
    assert_eq!(proxy.connections(), 1, "5 calls one after another");

    for round in 0..3 {
        proxy.on(
            "POST",
            &users_path(),
            "/users",
            Fault::PassThenClose,
            Some(1),
        );
        create(format!("idle-{round}@example.com")).await;
        // The proxy closes the connection 20 ms after answering.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(proxy.count("POST", "/users"), 8);
    assert_eq!(
        proxy.connections(),
        3,
        "the first connection until its close, then one per call, each closed after it"
    );
}
