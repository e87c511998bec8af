//! Bad input of every kind, over HTTP: each must be a SCIM Error (schema, `status` as a
//! string, `scimType` where RFC 7644 has one) and must never turn into an upstream call.
//!
//! Hostile ids are sent over a raw TCP connection: HTTP client libraries normalise `..`
//! and `%2e%2e` away before sending, which would hide exactly what is being tested.
//!
//! An empty id (`/Users/`) is a 404, not the list: `/Users/` names the empty id, no SCIM
//! client lists with a trailing slash, and answering it as a list would make a DELETE or PUT
//! with an accidentally empty id a request against the collection.

mod support;

use reqwest::header::WWW_AUTHENTICATE;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use support::{
    assert_scim_error, content_type, filter_query, Harness, RawReply, COMPANY, GROUP_SCHEMA,
    PATCH_SCHEMA, SCIM_MEDIA_TYPE, USER_SCHEMA,
};

/// A table row: name, method, path under the base URL, body, status, `scimType`.
type Row = (
    &'static str,
    Method,
    String,
    Body,
    u16,
    Option<&'static str>,
);

/// A request body in a table row.
enum Body {
    None,
    Json(Value),
    Bytes(Vec<u8>),
}

fn valid_user() -> Value {
    json!({
        "schemas": [USER_SCHEMA],
        "userName": "new.person@example.com",
        "name": {"givenName": "New", "familyName": "Person"}
    })
}

fn with(mut base: Value, key: &str, value: Value) -> Value {
    base[key] = value;
    base
}

fn without(mut base: Value, key: &str) -> Value {
    base.as_object_mut().expect("object").remove(key);
    base
}

fn patch_ops(operations: Value) -> Value {
    json!({"schemas": [PATCH_SCHEMA], "Operations": operations})
}

/// Asserts the upstream saw nothing but (possibly) token introspection since `mark`.
fn assert_no_upstream_call(h: &Harness, mark: usize, context: &str) {
    let calls = h.calls_since(mark);
    assert!(
        calls.is_empty(),
        "{context}: the upstream must not be called, got {:?}",
        calls
            .iter()
            .map(|c| format!("{} {} {:?}", c.method, c.path, c.query))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn bad_requests_are_scim_errors_without_upstream_calls() {
    let h = Harness::with_example_data().await;
    let users_before = h.upstream.users(COMPANY);
    let ada = users_before
        .iter()
        .find(|u| u["email"] == "ada@example.com")
        .expect("seeded")["id"]
        .to_string();
    let ada = format!("/Users/{ada}");
    let ada = ada.as_str();

    let cases: Vec<Row> = vec![
        (
            "malformed JSON",
            Method::POST,
            "/Users".into(),
            Body::Bytes(
                br#"{"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "#
                    .to_vec(),
            ),
            400,
            Some("invalidSyntax"),
        ),
        (
            "empty body",
            Method::POST,
            "/Users".into(),
            Body::Bytes(Vec::new()),
            400,
            Some("invalidSyntax"),
        ),
        (
            "body is not an object",
            Method::POST,
            "/Users".into(),
            Body::Json(json!([valid_user()])),
            400,
            Some("invalidSyntax"),
        ),
        (
            "missing userName",
            Method::POST,
            "/Users".into(),
            Body::Json(without(valid_user(), "userName")),
            400,
            Some("invalidValue"),
        ),
        (
            "userName not a string",
            Method::POST,
            "/Users".into(),
            Body::Json(with(valid_user(), "userName", json!(42))),
            400,
            Some("invalidValue"),
        ),
        (
            "wrong schemas",
            Method::POST,
            "/Users".into(),
            Body::Json(with(valid_user(), "schemas", json!([GROUP_SCHEMA]))),
            400,
            Some("invalidSyntax"),
        ),
        (
            "unmapped attribute nickName",
            Method::POST,
            "/Users".into(),
            Body::Json(with(valid_user(), "nickName", json!("Newbie"))),
            400,
            Some("invalidValue"),
        ),
        (
            "active not a boolean",
            Method::POST,
            "/Users".into(),
            Body::Json(with(valid_user(), "active", json!("perhaps"))),
            400,
            Some("invalidValue"),
        ),
        (
            "PUT missing userName",
            Method::PUT,
            ada.into(),
            Body::Json(without(valid_user(), "userName")),
            400,
            Some("invalidValue"),
        ),
        (
            "PUT malformed JSON",
            Method::PUT,
            ada.into(),
            Body::Bytes(b"{not json".to_vec()),
            400,
            Some("invalidSyntax"),
        ),
        (
            "PATCH unknown op",
            Method::PATCH,
            ada.into(),
            Body::Json(patch_ops(
                json!([{"op": "merge", "value": {"active": false}}]),
            )),
            400,
            Some("invalidSyntax"),
        ),
        (
            "PATCH without the PatchOp schema",
            Method::PATCH,
            ada.into(),
            Body::Json(json!({"schemas": [USER_SCHEMA],
                "Operations": [{"op": "replace", "value": {"active": false}}]})),
            400,
            Some("invalidSyntax"),
        ),
        (
            "PATCH with no operations",
            Method::PATCH,
            ada.into(),
            Body::Json(patch_ops(json!([]))),
            400,
            Some("invalidSyntax"),
        ),
        (
            "PATCH replace without a value",
            Method::PATCH,
            ada.into(),
            Body::Json(patch_ops(json!([{"op": "replace", "path": "title"}]))),
            400,
            Some("invalidValue"),
        ),
        (
            "PATCH remove without a path",
            Method::PATCH,
            ada.into(),
            Body::Json(patch_ops(json!([{"op": "remove"}]))),
            400,
            Some("noTarget"),
        ),
        (
            "PATCH unparsable path",
            Method::PATCH,
            ada.into(),
            Body::Json(patch_ops(
                json!([{"op": "replace", "path": "emails[type eq", "value": "x"}]),
            )),
            400,
            Some("invalidPath"),
        ),
        (
            "filter with an unknown operator",
            Method::GET,
            format!("/Users?{}", filter_query("userName xx \"ada@example.com\"")),
            Body::None,
            400,
            Some("invalidFilter"),
        ),
        (
            "filter that does not parse",
            Method::GET,
            format!("/Users?{}", filter_query("userName eq \"ada@example.com")),
            Body::None,
            400,
            Some("invalidFilter"),
        ),
        (
            "startIndex not a number",
            Method::GET,
            "/Users?startIndex=first&count=10".into(),
            Body::None,
            400,
            Some("invalidValue"),
        ),
        (
            "unknown endpoint",
            Method::GET,
            "/Nope".into(),
            Body::None,
            404,
            None,
        ),
        (
            "unknown endpoint, with an id",
            Method::GET,
            "/Nope/1".into(),
            Body::None,
            404,
            None,
        ),
        (
            "DELETE on the collection",
            Method::DELETE,
            "/Users".into(),
            Body::None,
            405,
            None,
        ),
        (
            "POST to a resource",
            Method::POST,
            ada.into(),
            Body::Json(valid_user()),
            405,
            None,
        ),
    ];

    for (name, method, path, body, status, scim_type) in cases {
        let mark = h.mark();
        let (got, headers, answer) = match body {
            Body::None => h.send(method, &path, None).await,
            Body::Json(v) => h.send(method, &path, Some(&v)).await,
            Body::Bytes(b) => h.send_bytes(method, &path, b).await,
        };
        assert_eq!(got.as_u16(), status, "{name}: {answer}");
        assert_eq!(
            content_type(&headers),
            Some(SCIM_MEDIA_TYPE),
            "{name}: content type"
        );
        assert_scim_error(name, &answer, status, scim_type);
        assert_no_upstream_call(&h, mark, name);
    }

    // A value no action endpoint can produce: updates may read the user first, nothing more.
    let mut put = with(valid_user(), "active", json!("perhaps"));
    put["userName"] = json!("ada@example.com");
    let cases = [
        ("PUT active perhaps", Method::PUT, put),
        (
            "PATCH active perhaps, no path",
            Method::PATCH,
            patch_ops(json!([{"op": "replace", "value": {"active": "perhaps"}}])),
        ),
        (
            "PATCH active 7, by path",
            Method::PATCH,
            patch_ops(json!([{"op": "replace", "path": "active", "value": 7}])),
        ),
    ];
    for (name, method, body) in cases {
        let mark = h.mark();
        let (status, _, answer) = h.send(method, ada, Some(&body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {answer}");
        assert_scim_error(name, &answer, 400, Some("invalidValue"));
        let writes: Vec<String> = h
            .calls_since(mark)
            .iter()
            .filter(|c| c.method != "GET")
            .map(|c| format!("{} {}", c.method, c.path))
            .collect();
        assert!(writes.is_empty(), "{name}: no upstream writes: {writes:?}");
    }
    assert_eq!(h.upstream.users(COMPANY), users_before, "nothing changed");
}

#[tokio::test]
async fn bad_credentials_are_401_with_a_bearer_challenge() {
    let h = Harness::with_example_data().await;
    let base = h.base_path();
    // (name, Authorization header value or none, introspection allowed)
    let cases: [(&str, Option<&str>, bool); 6] = [
        (
            "unknown token",
            Some("Bearer not-a-key-anyone-issued"),
            true,
        ),
        ("empty bearer", Some("Bearer "), false),
        ("bearer with only spaces", Some("Bearer    "), false),
        ("Basic scheme", Some("Basic dXNlcjpwYXNz"), false),
        ("token without a scheme", Some(support::TOKEN), false),
        ("no header", None, false),
    ];
    for path in ["/Users", "/Users/1001", "/Groups"] {
        for (name, authorization, may_introspect) in cases {
            let context = format!("{name} on GET {path}");
            let mark = h.mark();
            let headers: Vec<(&str, &str)> = authorization
                .map(|v| vec![("Authorization", v)])
                .unwrap_or_default();
            let reply = h.raw("GET", &format!("{base}{path}"), &headers, None).await;
            assert_eq!(reply.status, 401, "{context}: {}", reply.body);
            assert!(
                reply
                    .header(WWW_AUTHENTICATE.as_str())
                    .is_some_and(|v| v.starts_with("Bearer")),
                "{context}: WWW-Authenticate must start with Bearer: {:?}",
                reply.headers
            );
            assert_eq!(
                reply.header("content-type"),
                Some(SCIM_MEDIA_TYPE),
                "{context}"
            );
            assert_scim_error(&context, &reply.body, 401, None);
            assert_no_upstream_call(&h, mark, &context);
            if !may_introspect {
                let introspected = h.upstream.requests().len() > mark;
                assert!(
                    !introspected,
                    "{context}: no token to check, so no introspection"
                );
            }
        }
    }
}

/// Authentication is checked before anything else the request carries: without a token,
/// a broken body, a bad escape in the path, an invalid filter or a discovery endpoint all
/// answer 401, never the 400 or 404 that would tell an unauthenticated caller about them.
#[tokio::test]
async fn authentication_comes_before_the_request_s_own_faults() {
    let h = Harness::with_example_data().await;
    let base = h.base_path();
    // (name, method, path under the base, body: sent as application/scim+json)
    let cases: [(&str, &str, &str, Option<&[u8]>); 8] = [
        ("malformed JSON body", "POST", "/Users", Some(b"{not json")),
        (
            "body of the wrong shape",
            "PATCH",
            "/Users/1001",
            Some(b"[1, 2]"),
        ),
        (
            "search with a broken body",
            "POST",
            "/Users/.search",
            Some(b"{"),
        ),
        ("bad escape in the id", "GET", "/Users/%ZZ", None),
        ("invalid filter", "GET", "/Users?filter=(((", None),
        ("unknown endpoint", "GET", "/Widgets", None),
        ("discovery", "GET", "/ServiceProviderConfig", None),
        ("schema by id", "GET", "/Schemas/urn:nothing", None),
    ];
    for (name, method, path, body) in cases {
        let headers: &[(&str, &str)] = match body {
            Some(_) => &[("Content-Type", "application/scim+json")],
            None => &[],
        };
        let mark = h.mark();
        let reply = h.raw(method, &format!("{base}{path}"), headers, body).await;
        assert_eq!(reply.status, 401, "{name}: {}", reply.body);
        assert_scim_error(name, &reply.body, 401, None);
        assert_no_upstream_call(&h, mark, name);
    }
}

#[tokio::test]
async fn hostile_ids_are_404_and_never_reach_the_upstream() {
    let h = Harness::with_example_data().await;
    let users_before = h.upstream.users(COMPANY);
    let base = h.base_path();
    let long_id = "1".repeat(10 * 1024);
    let long_text = "a".repeat(10 * 1024);
    let ids: Vec<(&str, &str)> = vec![
        ("dot dot", ".."),
        ("encoded dot dot", "%2e%2e"),
        ("encoded dot dot, upper case", "%2E%2E"),
        ("encoded traversal", "..%2F..%2Fadmin"),
        ("encoded slash into an action", "1001%2Fdeactivate"),
        ("encoded slash, first id", "1%2Fdeactivate"),
        ("encoded backslash", "1001%5C..%5Creactivate"),
        ("query smuggled in the id", "1001%3Fpage%3D2"),
        ("fragment smuggled in the id", "1001%23x"),
        ("encoded NUL", "1001%00"),
        ("encoded newline", "1001%0D%0AX-Injected:%201"),
        ("negative", "-1001"),
        ("not a number", "ada"),
        ("one dot", "."),
        ("empty", ""),
        ("10 kB of digits", &long_id),
        ("10 kB of letters", &long_text),
        ("number too large", "99999999999999999999999"),
    ];
    let auth = format!("Bearer {}", h.token);
    let patch = serde_json::to_vec(&patch_ops(
        json!([{"op": "replace", "value": {"active": false}}]),
    ))
    .expect("serialise");
    let put = serde_json::to_vec(&valid_user()).expect("serialise");
    for (name, id) in &ids {
        for (method, body) in [
            ("GET", None),
            ("DELETE", None),
            ("PATCH", Some(patch.as_slice())),
            ("PUT", Some(put.as_slice())),
        ] {
            let context = format!("{method} /Users/{name}");
            let mark = h.mark();
            let mut headers = vec![("Authorization", auth.as_str())];
            if body.is_some() {
                headers.push(("Content-Type", SCIM_MEDIA_TYPE));
            }
            let target = format!("{base}/Users/{id}");
            let reply: RawReply = h.raw(method, &target, &headers, body).await;
            assert_eq!(reply.status, 404, "{context}: {}", reply.body);
            assert_eq!(
                reply.header("content-type"),
                Some(SCIM_MEDIA_TYPE),
                "{context}"
            );
            assert_scim_error(&context, &reply.body, 404, None);
            if let Some(detail) = reply.body["detail"].as_str() {
                assert!(
                    detail.len() < 400,
                    "{context}: the detail must not echo a huge id ({} bytes)",
                    detail.len()
                );
                assert!(
                    !detail.chars().any(char::is_control),
                    "{context}: no control characters in the detail: {detail:?}"
                );
            }
            assert_no_upstream_call(&h, mark, &context);
        }
    }

    // Raw path traversal across segments is no route at all.
    for target in [
        format!("{base}/Users/../Groups"),
        format!("{base}/Users/1001/deactivate"),
        format!("{base}/Users/1001/../../../api/v1/companies/42/users"),
    ] {
        let mark = h.mark();
        let reply = h.raw_authed("GET", &target).await;
        assert_eq!(reply.status, 404, "{target}: {}", reply.body);
        assert_scim_error(&target, &reply.body, 404, None);
        assert_no_upstream_call(&h, mark, &target);
    }
    assert_eq!(h.upstream.users(COMPANY), users_before, "nothing changed");
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let h = Harness::with_example_data().await;
    let limit = 1024 * 1024;
    let mut padded = valid_user();
    padded["title"] = json!("x".repeat(limit));
    let too_big = serde_json::to_vec(&padded).expect("serialise");
    assert!(too_big.len() > limit);
    for (method, path) in [(Method::POST, "/Users"), (Method::PUT, "/Users/1001")] {
        let mark = h.mark();
        let (status, headers, body) = h.send_bytes(method.clone(), path, too_big.clone()).await;
        let context = format!("{method} {path}");
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{context}: {body}");
        assert_eq!(content_type(&headers), Some(SCIM_MEDIA_TYPE), "{context}");
        assert_scim_error(&context, &body, 413, None);
        assert_no_upstream_call(&h, mark, &context);
    }
    // Just under the limit is read (and then judged on its content).
    let mut fits = valid_user();
    fits["title"] = json!("x".repeat(limit - 1024));
    let (status, _, body) = h
        .send_bytes(
            Method::POST,
            "/Users",
            serde_json::to_vec(&fits).expect("serialise"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn worst_case_filters_are_answered_not_crashed_on() {
    let h = Harness::with_example_data().await;
    let max_len = 4096;
    // The longest chains that fit: left-leaning trees some 300 levels deep that are
    // planned, scanned and evaluated against every user.
    let longest = |term: &str, joiner: &str| {
        let mut chain = String::from(term);
        while chain.len() + joiner.len() + term.len() <= max_len {
            chain.push_str(joiner);
            chain.push_str(term);
        }
        chain
    };
    let nested = |n: usize| format!("{}title pr{}", "not (".repeat(n), ")".repeat(n));
    let parens = |n: usize| format!("{}title pr{}", "(".repeat(n), ")".repeat(n));
    // (name, filter, Ok(totalResults) or Err(scimType)); all five users have a title
    let cases: Vec<(&str, String, Result<u64, &str>)> = vec![
        ("longest or chain", longest("title eq \"x\"", " or "), Ok(0)),
        ("longest and chain", longest("title pr", " and "), Ok(5)),
        (
            "longest pushed-down and chain",
            longest("userName eq \"ada@example.com\"", " and "),
            Ok(1),
        ),
        ("32 nested parentheses", parens(32), Ok(5)),
        ("33 nested parentheses", parens(33), Err("invalidFilter")),
        ("32 nested nots", nested(32), Ok(5)),
        ("500 nested nots", nested(500), Err("invalidFilter")),
        (
            "one byte too long",
            format!("title eq \"{}\"", "x".repeat(max_len)),
            Err("invalidFilter"),
        ),
    ];
    for (name, filter, want) in cases {
        let (status, _, body) = h.get(&format!("/Users?{}", filter_query(&filter))).await;
        match want {
            Ok(total) => {
                assert_eq!(status, StatusCode::OK, "{name}: {body}");
                assert_eq!(body["totalResults"], total, "{name}: {body}");
            }
            Err(scim_type) => {
                assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {body}");
                assert_scim_error(name, &body, 400, Some(scim_type));
            }
        }
    }
}
