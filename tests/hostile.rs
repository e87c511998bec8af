//! A battery of hostile input against the gateway in front of the demo upstream: JSON
//! nested far past any sane depth, huge strings, invalid UTF-8, NUL bytes, duplicate keys,
//! a wrong type for every User attribute, filters built to be slow, thousands of PATCH
//! operations and members, oversized URLs and headers, and a tenant over its rate limit.
//!
//! Whatever arrives, the gateway must answer (no panic: a panicking handler would close
//! the connection without an answer), never with a 5xx of its own making, and every 4xx
//! must be a SCIM Error.

mod support;

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::{
    assert_scim_error, blacksmith_mapping, filter_query, Harness, Reply, COMPANY, GROUP_SCHEMA,
    PATCH_SCHEMA, USER_SCHEMA,
};

/// The harness with the rate limit out of the way (these tests send bursts on purpose).
async fn harness() -> Harness {
    Harness::start_with(blacksmith_mapping(), |c| {
        c.limits.rate_per_second = 1_000_000;
        c.limits.burst = 1_000_000;
    })
    .await
}

/// An answer that is not a 5xx, and a SCIM Error when it is a 4xx.
fn assert_handled(context: &str, reply: &Reply) {
    let (status, _, body) = reply;
    assert!(
        status.as_u16() < 500,
        "{context}: the gateway answered {status}: {body}"
    );
    if status.is_client_error() {
        assert_scim_error(context, body, status.as_u16(), None);
    }
}

fn user(user_name: &str) -> Value {
    json!({
        "schemas": [USER_SCHEMA],
        "userName": user_name,
        "name": {"givenName": "Hostile", "familyName": "Input"}
    })
}

fn patch_ops(ops: Value) -> Value {
    json!({"schemas": [PATCH_SCHEMA], "Operations": ops})
}

#[tokio::test]
async fn deeply_nested_json_is_400_not_a_stack_overflow() {
    let h = harness().await;
    let id = h.upstream.seed_users(COMPANY, 1)[0];
    let depth = 100_000;
    let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes();
    let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth)).into_bytes();
    let unclosed = "[".repeat(depth).into_bytes();
    let in_a_value = format!(
        "{{\"schemas\":[\"{USER_SCHEMA}\"],\"userName\":\"deep@example.com\",\"title\":{}1{}}}",
        "[".repeat(depth),
        "]".repeat(depth)
    )
    .into_bytes();
    for (name, body) in [
        ("100k nested arrays", arrays),
        ("100k nested objects", objects),
        ("100k unclosed arrays", unclosed),
        ("100k nested arrays in a value", in_a_value),
    ] {
        for (method, path) in [
            (Method::POST, "/Users".to_owned()),
            (Method::PUT, format!("/Users/{id}")),
            (Method::PATCH, format!("/Users/{id}")),
            (Method::POST, "/Users/.search".to_owned()),
            (Method::POST, "/Groups".to_owned()),
        ] {
            let context = format!("{name}, {method} {path}");
            let mark = h.mark();
            let reply = h.send_bytes(method, &path, body.clone()).await;
            assert_eq!(reply.0, StatusCode::BAD_REQUEST, "{context}: {}", reply.2);
            assert_scim_error(&context, &reply.2, 400, Some("invalidSyntax"));
            assert!(
                h.calls_since(mark).is_empty(),
                "{context}: no upstream call"
            );
        }
    }
    // Nesting serde_json accepts (under its 128 levels) in places the mapping does not
    // expect objects: refused or ignored, never a crash.
    let mut deep = json!("bottom");
    for _ in 0..120 {
        deep = json!({ "x": [deep] });
    }
    for (name, body) in [
        (
            "deep title",
            json!({"schemas": [USER_SCHEMA], "userName": "deep1@example.com", "title": deep}),
        ),
        (
            "deep name",
            json!({"schemas": [USER_SCHEMA], "userName": "deep2@example.com", "name": deep}),
        ),
        (
            "deep extension",
            json!({"schemas": [USER_SCHEMA], "userName": "deep3@example.com", "urn:x:deep": deep}),
        ),
    ] {
        let reply = h.post("/Users", &body).await;
        assert_handled(name, &reply);
    }
    let reply = h
        .patch(
            &format!("/Users/{id}"),
            &patch_ops(json!([{"op": "replace", "path": "title", "value": deep}])),
        )
        .await;
    assert_handled("deep PATCH value", &reply);
    let reply = h
        .patch(
            &format!("/Users/{id}"),
            &patch_ops(json!([{"op": "add", "value": deep}])),
        )
        .await;
    assert_handled("deep PATCH add without path", &reply);
}

#[tokio::test]
async fn strange_bytes_and_strings_are_answered() {
    let h = harness().await;
    let id = h.upstream.seed_users(COMPANY, 1)[0];
    let huge = "x".repeat(900 * 1024);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "invalid UTF-8 in a string",
            b"{\"schemas\":[\"urn:ietf:params:scim:schemas:core:2.0:User\"],\"userName\":\"\xff\xfe@example.com\"}".to_vec(),
        ),
        ("invalid UTF-8 outside strings", b"\xff{\"a\":1}".to_vec()),
        (
            "a raw NUL inside a string",
            b"{\"schemas\":[\"urn:ietf:params:scim:schemas:core:2.0:User\"],\"userName\":\"a\x00b@example.com\"}".to_vec(),
        ),
        (
            "an escaped NUL in userName",
            br#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"nul\u0000@example.com"}"#.to_vec(),
        ),
        (
            "an escaped NUL in a name",
            br#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"nul2@example.com","name":{"givenName":"\u0000\u0000"}}"#.to_vec(),
        ),
        (
            "lone surrogate escape",
            br#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"\ud800@example.com"}"#.to_vec(),
        ),
        (
            "duplicate keys",
            br#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"dup1@example.com","userName":"dup2@example.com","name":{"givenName":"A","givenName":"B"}}"#.to_vec(),
        ),
        (
            "a 900 kB userName",
            serde_json::to_vec(&user(&format!("{huge}@example.com"))).expect("json"),
        ),
        (
            "a 900 kB title",
            serde_json::to_vec(&json!({"schemas": [USER_SCHEMA], "userName": "big@example.com", "title": huge}))
                .expect("json"),
        ),
        ("empty body", Vec::new()),
        ("whitespace", b"  \r\n\t ".to_vec()),
        ("a bare string", b"\"just a string\"".to_vec()),
        ("a number", b"1e999999".to_vec()),
        ("truncated", b"{\"schemas\":[\"urn:".to_vec()),
        ("trailing garbage", b"{}{}".to_vec()),
        (
            "100k keys",
            format!(
                "{{{}\"userName\":\"keys@example.com\"}}",
                (0..100_000).map(|i| format!("\"k{i}\":0,")).collect::<String>()
            )
            .into_bytes(),
        ),
    ];
    for (name, body) in cases {
        for (method, path) in [
            (Method::POST, "/Users".to_owned()),
            (Method::PUT, format!("/Users/{id}")),
            (Method::PATCH, format!("/Users/{id}")),
            (Method::POST, "/Groups".to_owned()),
        ] {
            let context = format!("{name}, {method} {path}");
            let reply = h.send_bytes(method, &path, body.clone()).await;
            assert_handled(&context, &reply);
        }
    }
    // Duplicate keys: the last one counts, as serde_json reads them.
    let created = h
        .upstream
        .users(COMPANY)
        .into_iter()
        .filter(|u| u["email"].as_str().is_some_and(|e| e.starts_with("dup")))
        .map(|u| u["email"].clone())
        .collect::<Vec<_>>();
    assert!(created.len() <= 1, "{created:?}");
    // The gateway still serves normally.
    assert_eq!(h.get(&format!("/Users/{id}")).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_wrong_type_for_every_user_attribute_is_a_4xx() {
    let h = harness().await;
    let id = h.upstream.seed_users(COMPANY, 1)[0];
    let attributes = [
        "userName",
        "externalId",
        "name",
        "displayName",
        "title",
        "emails",
        "phoneNumbers",
        "active",
        "roles",
        "schemas",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
        "password",
        "groups",
        "meta",
        "id",
    ];
    let sub_attributes = ["name.givenName", "name.familyName"];
    let wrong = [
        json!(42),
        json!(-1.5e300),
        json!(true),
        json!([]),
        json!([1, "two", null]),
        json!({}),
        json!({"value": {"nested": true}}),
        json!("a string"),
        Value::Null,
    ];
    let mut seen = 0;
    for (i, value) in wrong.iter().enumerate() {
        for attr in attributes {
            let mut body = user(&format!("wrong{i}-{seen}@example.com"));
            body[attr] = value.clone();
            seen += 1;
            let reply = h.post("/Users", &body).await;
            assert_handled(&format!("POST {attr} = {value}"), &reply);
            let reply = h.put(&format!("/Users/{id}"), &body).await;
            assert_handled(&format!("PUT {attr} = {value}"), &reply);
            let reply = h
                .patch(
                    &format!("/Users/{id}"),
                    &patch_ops(json!([{"op": "replace", "path": attr, "value": value}])),
                )
                .await;
            assert_handled(&format!("PATCH replace {attr} = {value}"), &reply);
            let reply = h
                .patch(
                    &format!("/Users/{id}"),
                    &patch_ops(json!([{"op": "add", "value": {attr: value}}])),
                )
                .await;
            assert_handled(&format!("PATCH add {{{attr}: {value}}}"), &reply);
        }
        for attr in sub_attributes {
            let (outer, inner) = attr.split_once('.').expect("dotted");
            let mut body = user(&format!("wrongsub{i}-{seen}@example.com"));
            body[outer] = json!({ inner: value });
            seen += 1;
            let reply = h.post("/Users", &body).await;
            assert_handled(&format!("POST {attr} = {value}"), &reply);
            let reply = h
                .patch(
                    &format!("/Users/{id}"),
                    &patch_ops(json!([{"op": "replace", "path": attr, "value": value}])),
                )
                .await;
            assert_handled(&format!("PATCH replace {attr} = {value}"), &reply);
        }
        // PATCH requests themselves of the wrong shape.
        for (name, body) in [
            (
                "Operations not a list",
                json!({"schemas": [PATCH_SCHEMA], "Operations": value}),
            ),
            ("an operation of the wrong type", patch_ops(json!([value]))),
            (
                "op of the wrong type",
                patch_ops(json!([{"op": value, "path": "title", "value": "x"}])),
            ),
            (
                "path of the wrong type",
                patch_ops(json!([{"op": "replace", "path": value, "value": "x"}])),
            ),
            (
                "schemas of the wrong type",
                json!({"schemas": value, "Operations": []}),
            ),
        ] {
            let reply = h.patch(&format!("/Users/{id}"), &body).await;
            assert_handled(&format!("{name}: {value}"), &reply);
            assert!(reply.0.is_client_error(), "{name}: {value}: {}", reply.2);
        }
    }
    // Whatever was accepted, the seeded user still reads back through the mapping.
    let (status, _, body) = h.get(&format!("/Users/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_built_to_be_slow_are_answered_quickly() {
    let h = harness().await;
    h.upstream.seed_users(COMPANY, 1000);
    let long = "a".repeat(3000);
    let many_or = (0..200)
        .map(|i| format!("title co \"{i}{}\"", "b".repeat(5)))
        .collect::<Vec<_>>()
        .join(" or ");
    let value_path = format!(
        "emails[{}]",
        (0..120)
            .map(|i| format!("value co \"{i}x\""))
            .collect::<Vec<_>>()
            .join(" or ")
    );
    let filters = vec![
        (
            "a 3 kB co over every user",
            format!("userName co \"{long}\""),
        ),
        ("a 3 kB sw", format!("name.familyName sw \"{long}\"")),
        ("200 ors of co", many_or),
        ("a value path of 120 ors", value_path),
        (
            "nested not/and 32 deep",
            format!(
                "{}title pr{}",
                "not (title pr and ".repeat(31),
                ")".repeat(31)
            ),
        ),
        (
            "gt on a string over every user",
            "name.familyName gt \"\"".to_owned(),
        ),
        (
            "unicode escapes",
            format!("userName co \"{}\"", "\\u0000".repeat(500)),
        ),
        ("an unterminated string", format!("userName eq \"{long}")),
        (
            "quotes and brackets",
            "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[".repeat(50),
        ),
    ];
    for (name, filter) in filters {
        let started = Instant::now();
        let reply = h
            .get(&format!("/Users?{}&count=10", filter_query(&filter)))
            .await;
        assert_handled(name, &reply);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{name}: {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn thousands_of_patch_operations_and_members_meet_their_limits() {
    let h = harness().await;
    let users = h.upstream.seed_users(COMPANY, 3);
    let team = h.upstream.seed_team(COMPANY, "Limits", &users);
    let id = users[0];

    // At the limit (1,000 operations): applied, one write.
    let ops: Vec<Value> = (0..1000)
        .map(|i| json!({"op": "replace", "path": "title", "value": format!("Title {i}")}))
        .collect();
    let mark = h.mark();
    let reply = h
        .patch(&format!("/Users/{id}"), &patch_ops(Value::Array(ops)))
        .await;
    assert_eq!(reply.0, StatusCode::OK, "{}", reply.2);
    assert_eq!(reply.2["title"], "Title 999");
    let writes = h
        .calls_since(mark)
        .into_iter()
        .filter(|c| c.method != "GET")
        .count();
    assert_eq!(writes, 1, "one upstream write for 1,000 operations");

    // Over it: 413, before any upstream call.
    for n in [1001, 5000, 20_000] {
        let ops: Vec<Value> = (0..n)
            .map(|i| json!({"op": "add", "path": "title", "value": i.to_string()}))
            .collect();
        let mark = h.mark();
        let reply = h
            .patch(&format!("/Users/{id}"), &patch_ops(Value::Array(ops)))
            .await;
        let context = format!("{n} operations");
        assert_eq!(
            reply.0,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{context}: {}",
            reply.2
        );
        assert_scim_error(&context, &reply.2, 413, None);
        assert!(
            h.calls_since(mark).is_empty(),
            "{context}: no upstream call"
        );
    }

    // Members: 10,001 distinct values in one request are refused before any call.
    let members: Vec<Value> = (1..=10_001)
        .map(|i| json!({"value": (1_000_000 + i).to_string()}))
        .collect();
    let requests = [
        (
            "PATCH add",
            Method::PATCH,
            format!("/Groups/{team}"),
            patch_ops(json!([{"op": "add", "path": "members", "value": members}])),
        ),
        (
            "PATCH replace",
            Method::PATCH,
            format!("/Groups/{team}"),
            patch_ops(json!([{"op": "replace", "path": "members", "value": members}])),
        ),
        (
            "PUT",
            Method::PUT,
            format!("/Groups/{team}"),
            json!({"schemas": [GROUP_SCHEMA], "displayName": "Limits", "members": members}),
        ),
        (
            "POST",
            Method::POST,
            "/Groups".to_owned(),
            json!({"schemas": [GROUP_SCHEMA], "displayName": "Huge", "members": members}),
        ),
    ];
    for (name, method, path, body) in requests {
        let mark = h.mark();
        let reply = h.send(method, &path, Some(&body)).await;
        assert_eq!(
            reply.0,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{name}: {}",
            reply.2
        );
        assert_scim_error(name, &reply.2, 413, None);
        let detail = reply.2["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("10001 members"), "{name}: {detail}");
        assert!(h.calls_since(mark).is_empty(), "{name}: no upstream call");
    }
    assert_eq!(
        h.upstream.team_members(COMPANY, team),
        Some(users.clone()),
        "the team is unchanged"
    );
    // 2,000 PATCH operations on members, each one member: over the operation limit.
    let ops: Vec<Value> = (0..2000)
        .map(|i| json!({"op": "add", "path": "members", "value": [{"value": (5_000 + i).to_string()}]}))
        .collect();
    let reply = h
        .patch(&format!("/Groups/{team}"), &patch_ops(Value::Array(ops)))
        .await;
    assert_eq!(reply.0, StatusCode::PAYLOAD_TOO_LARGE, "{}", reply.2);
}

#[tokio::test]
async fn oversized_urls_and_headers_are_scim_errors() {
    let h = harness().await;
    let base = h.base_path();
    let auth = format!("Bearer {}", h.token);

    // Just under the URL limit: judged on its content (a filter that is too long is 400).
    let reply = h
        .raw(
            "GET",
            &format!("{base}/Users?filter={}", "a".repeat(12_000)),
            &[("Authorization", &auth)],
            None,
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    // Over it: 414, before authentication.
    let target = format!("{base}/Users?filter={}", "a".repeat(17 * 1024));
    for headers in [vec![("Authorization", auth.as_str())], vec![]] {
        let reply = h.raw("GET", &target, &headers, None).await;
        assert_eq!(reply.status, 414, "{}", reply.body);
        assert_eq!(reply.header("content-type"), Some("application/scim+json"));
        assert_scim_error("long URL", &reply.body, 414, None);
    }
    // Headers over 16 kB in all: 431.
    let padding = "p".repeat(6 * 1024);
    let reply = h
        .raw(
            "GET",
            &format!("{base}/Users"),
            &[
                ("Authorization", &auth),
                ("X-Pad-1", &padding),
                ("X-Pad-2", &padding),
                ("X-Pad-3", &padding),
            ],
            None,
        )
        .await;
    assert_eq!(reply.status, 431, "{}", reply.body);
    assert_scim_error("large headers", &reply.body, 431, None);
    // A huge bearer token is one of those headers.
    let huge_token = format!("Bearer {}", "t".repeat(20 * 1024));
    let reply = h
        .raw(
            "GET",
            &format!("{base}/Users"),
            &[("Authorization", &huge_token)],
            None,
        )
        .await;
    assert_eq!(reply.status, 431, "{}", reply.body);
    // Far past what the HTTP parser buffers: refused by the parser itself, and the
    // gateway carries on.
    let enormous = "e".repeat(600 * 1024);
    let head = format!(
        "GET {base}/Users HTTP/1.1\r\nHost: {}\r\nX-Enormous: {enormous}\r\nConnection: close\r\n\r\n",
        h.addr
    );
    let mut stream = tokio::net::TcpStream::connect(h.addr)
        .await
        .expect("connects");
    let _ = stream.write_all(head.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );
    assert_eq!(h.get("/Users").await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_tenant_over_its_rate_limit_gets_429_and_others_do_not() {
    let h = Harness::start_with(blacksmith_mapping(), |c| {
        c.limits.rate_per_second = 2;
        c.limits.burst = 5;
    })
    .await;
    h.upstream.add_company(43);
    h.upstream
        .add_scim_key("other-tenant-token-3f", 43, "k_43", "SCIM Provisioning");
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(h.get("/Users").await);
    }
    let ok = statuses.iter().filter(|r| r.0 == StatusCode::OK).count();
    assert_eq!(ok, 5, "the burst");
    let limited = statuses.last().expect("answers");
    assert_eq!(limited.0, StatusCode::TOO_MANY_REQUESTS);
    assert_scim_error("rate limited", &limited.2, 429, None);
    let retry_after: u64 = limited
        .1
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    // The rate-limited requests made no upstream call beyond the token check.
    // Another company is not affected.
    let other = h
        .client
        .get(h.url("/Users"))
        .bearer_auth("other-tenant-token-3f")
        .send()
        .await
        .expect("answer");
    assert_eq!(other.status(), StatusCode::OK);
    // After the refill, the first tenant is served again.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(h.get("/Users").await.0, StatusCode::OK);
}
