//! Okta's user provisioning flow, over HTTP, through the gateway to the demo Blacksmith API:
//! Test API Credentials, existence check, create, duplicate, read, PUT, PATCH (Okta and
//! Entra dialects), deactivation through the action endpoints, import paging, filters the
//! upstream cannot answer, and delete.

mod support;

use std::collections::HashSet;

use reqwest::header::LOCATION;
use reqwest::StatusCode;
use serde_json::{json, Value};

use support::{
    assert_scim_error, content_type, filter_query, mapping_variant, Harness, Reply, COMPANY,
    KEY_ID, LIST_SCHEMA, PATCH_SCHEMA, SCIM_MEDIA_TYPE, USER_SCHEMA,
};

const PASSWORD: &str = "0kta-Sends-Th1s-Password!";

/// The body Okta POSTs to create a user (Okta SCIM 2.0 integration guide).
fn okta_create_body(user_name: &str, given: &str, family: &str, external_id: &str) -> Value {
    json!({
        "schemas": [USER_SCHEMA],
        "userName": user_name,
        "name": {"givenName": given, "familyName": family},
        "emails": [{"primary": true, "value": user_name, "type": "work"}],
        "displayName": format!("{given} {family}"),
        "locale": "en-US",
        "externalId": external_id,
        "groups": [],
        "password": PASSWORD,
        "active": true
    })
}

/// A PATCH table row: name, operations, upstream fields afterwards, SCIM answer fields
/// (JSON pointers), the exact upstream calls (`METHOD path`).
type PatchRow<'a> = (
    &'static str,
    Value,
    Vec<(&'static str, Value)>,
    Vec<(&'static str, Value)>,
    Vec<&'a String>,
);

fn patch_body(operations: Value) -> Value {
    json!({"schemas": [PATCH_SCHEMA], "Operations": operations})
}

/// Checks the ListResponse envelope and returns its `Resources`.
fn assert_list(context: &str, reply: &Reply) -> Vec<Value> {
    let (status, headers, body) = reply;
    assert_eq!(*status, StatusCode::OK, "{context}: {body}");
    assert_eq!(
        content_type(headers),
        Some(SCIM_MEDIA_TYPE),
        "{context}: content type"
    );
    assert_eq!(body["schemas"], json!([LIST_SCHEMA]), "{context}: {body}");
    for field in ["totalResults", "startIndex", "itemsPerPage"] {
        assert!(
            body[field].is_u64(),
            "{context}: {field} must be an integer in {body}"
        );
    }
    let resources = body["Resources"]
        .as_array()
        .unwrap_or_else(|| panic!("{context}: Resources must be an array in {body}"))
        .clone();
    assert_eq!(
        body["itemsPerPage"].as_u64(),
        Some(resources.len() as u64),
        "{context}: itemsPerPage"
    );
    resources
}

fn ids(resources: &[Value]) -> Vec<String> {
    resources
        .iter()
        .map(|r| {
            r["id"]
                .as_str()
                .unwrap_or_else(|| panic!("id must be a string in {r}"))
                .to_owned()
        })
        .collect()
}

/// SCIM ids of every upstream user of the company, in the upstream's (id) order.
fn upstream_ids(h: &Harness) -> Vec<String> {
    h.upstream
        .users(COMPANY)
        .iter()
        .map(|u| u["id"].as_i64().expect("integer id").to_string())
        .collect()
}

fn user_path(id: &str) -> String {
    format!("/api/v1/companies/{COMPANY}/users/{id}")
}

/// `method path` of each call, for readable assertions.
fn described(calls: &[scimgate::demo::RecordedRequest]) -> Vec<String> {
    calls
        .iter()
        .map(|c| format!("{} {}", c.method, c.path))
        .collect()
}

#[tokio::test]
async fn okta_test_api_credentials() {
    let h = Harness::with_example_data().await;
    let empty = Harness::start().await;
    // (harness, path, total, items)
    let cases = [
        (&h, "/Users?startIndex=1&count=2", 5, 2),
        (&h, "/Groups?startIndex=1&count=100", 2, 2),
        (&empty, "/Users?startIndex=1&count=2", 0, 0),
        (&empty, "/Groups?startIndex=1&count=100", 0, 0),
    ];
    for (harness, path, total, items) in cases {
        let reply = harness.get(path).await;
        let resources = assert_list(path, &reply);
        let body = &reply.2;
        assert_eq!(body["totalResults"], total, "{path}: {body}");
        assert_eq!(body["startIndex"], 1, "{path}: {body}");
        assert_eq!(resources.len(), items, "{path}: {body}");
        for r in &resources {
            assert!(r["id"].is_string(), "{path}: id must be a string in {r}");
            assert!(r["meta"]["location"].is_string(), "{path}: {r}");
        }
    }
}

#[tokio::test]
async fn okta_user_lifecycle() {
    let h = Harness::with_example_data().await;
    let start = h.mark();

    // Okta checks whether the user exists, with its own casing of the userName.
    let existence = [
        ("ADA@Example.com", Some("ada@example.com")),
        ("isaac.newton@example.com", None),
    ];
    for (asked, found) in existence {
        let path = format!(
            "/Users?{}&startIndex=1&count=100",
            filter_query(&format!("userName eq \"{asked}\""))
        );
        let reply = h.get(&path).await;
        let resources = assert_list(&path, &reply);
        match found {
            Some(user_name) => {
                assert_eq!(reply.2["totalResults"], 1, "{path}: {}", reply.2);
                assert_eq!(resources[0]["userName"], user_name, "{path}");
            }
            None => {
                assert_eq!(reply.2["totalResults"], 0, "{path}: {}", reply.2);
                assert!(resources.is_empty(), "{path}");
            }
        }
    }

    // Create, with Okta's exact body.
    let create = okta_create_body("isaac.newton@example.com", "Isaac", "Newton", "00u1newton");
    let (status, headers, created) = h.post("/Users", &create).await;
    assert_eq!(status, StatusCode::CREATED, "create: {created}");
    assert_eq!(content_type(&headers), Some(SCIM_MEDIA_TYPE));
    let id = created["id"]
        .as_str()
        .unwrap_or_else(|| panic!("id must be a string: {created}"))
        .to_owned();
    let location = created["meta"]["location"].as_str().expect("meta.location");
    assert_eq!(location, format!("{}/Users/{id}", h.base));
    assert_eq!(
        headers.get(LOCATION).and_then(|v| v.to_str().ok()),
        Some(location),
        "Location header equals meta.location"
    );
    assert_eq!(created["meta"]["resourceType"], "User", "{created}");
    for stamp in ["created", "lastModified"] {
        assert!(
            created["meta"][stamp].is_string(),
            "meta.{stamp} in {created}"
        );
    }
    assert_eq!(created["userName"], "isaac.newton@example.com");
    assert_eq!(created["active"], true);
    assert!(created.get("password").is_none(), "{created}");

    let upstream_user = h.upstream_user(&id).expect("created upstream");
    for (field, want) in [
        ("email", "isaac.newton@example.com"),
        ("first_name", "Isaac"),
        ("last_name", "Newton"),
        ("display_name", "Isaac Newton"),
        ("external_id", "00u1newton"),
        ("role", "member"),
        ("status", "active"),
    ] {
        assert_eq!(
            upstream_user[field], want,
            "upstream {field}: {upstream_user}"
        );
    }
    let everything = serde_json::to_string(&h.upstream.users(COMPANY)).expect("serialise");
    assert!(
        !everything.contains(PASSWORD),
        "the password must not be stored upstream"
    );

    // A second create of the same person, in any casing, is a conflict.
    for user_name in ["isaac.newton@example.com", "Isaac.Newton@EXAMPLE.com"] {
        let body = okta_create_body(user_name, "Isaac", "Newton", "00u1other");
        let (status, _, error) = h.post("/Users", &body).await;
        assert_eq!(
            status,
            StatusCode::CONFLICT,
            "duplicate {user_name}: {error}"
        );
        assert_scim_error(user_name, &error, 409, Some("uniqueness"));
    }
    assert_eq!(h.upstream.users(COMPANY).len(), 6, "no second user created");

    // Read it back.
    let (status, _, fetched) = h.get(&format!("/Users/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{fetched}");
    assert_eq!(fetched, created, "GET answers what create answered");

    // PUT: Okta sends the whole user, id and meta included. Omitted attributes are kept.
    let mut put = fetched.clone();
    put["name"]["familyName"] = json!("Newton-Smythe");
    put["displayName"] = json!("Isaac Newton-Smythe");
    put["title"] = json!("Warden of the Mint");
    put["password"] = json!(PASSWORD);
    let put_map = put.as_object_mut().expect("object");
    put_map.remove("externalId");
    put_map.remove("roles");
    let (status, _, replaced) = h.put(&format!("/Users/{id}"), &put).await;
    assert_eq!(status, StatusCode::OK, "PUT: {replaced}");
    assert_eq!(replaced["name"]["familyName"], "Newton-Smythe");
    assert_eq!(replaced["title"], "Warden of the Mint");
    assert_eq!(
        replaced["externalId"], "00u1newton",
        "omitted, kept: {replaced}"
    );
    let upstream_user = h.upstream_user(&id).expect("still there");
    for (field, want) in [
        ("last_name", "Newton-Smythe"),
        ("display_name", "Isaac Newton-Smythe"),
        ("title", "Warden of the Mint"),
        ("external_id", "00u1newton"),
        ("role", "member"),
        ("first_name", "Isaac"),
    ] {
        assert_eq!(
            upstream_user[field], want,
            "upstream {field}: {upstream_user}"
        );
    }
    let everything = serde_json::to_string(&h.upstream.users(COMPANY)).expect("serialise");
    assert!(
        !everything.contains(PASSWORD),
        "PUT must not store the password"
    );

    // PATCHes, in the order a directory sends them.
    let get = format!("GET {}", user_path(&id));
    let patch = format!("PATCH {}", user_path(&id));
    let deactivate = format!("POST {}/deactivate", user_path(&id));
    let reactivate = format!("POST {}/reactivate", user_path(&id));
    let cases: Vec<PatchRow> = vec![
        (
            "Okta deactivate",
            json!([{"op": "replace", "value": {"active": false}}]),
            vec![("status", json!("deactivated"))],
            vec![("/active", json!(false))],
            vec![&get, &deactivate],
        ),
        (
            "Okta reactivate",
            json!([{"op": "replace", "value": {"active": true}}]),
            vec![("status", json!("active"))],
            vec![("/active", json!(true))],
            vec![&get, &reactivate],
        ),
        (
            "givenName by path",
            json!([{"op": "replace", "path": "name.givenName", "value": "Ike"}]),
            vec![("first_name", json!("Ike"))],
            vec![("/name/givenName", json!("Ike"))],
            vec![&get, &patch],
        ),
        (
            "work email by path",
            json!([{"op": "replace", "path": "emails[type eq \"work\"].value",
                    "value": "sir.isaac@example.com"}]),
            vec![("email", json!("sir.isaac@example.com"))],
            vec![
                ("/emails/0/value", json!("sir.isaac@example.com")),
                ("/userName", json!("sir.isaac@example.com")),
            ],
            vec![&get, &patch],
        ),
        (
            "Entra deactivate, no path",
            json!([{"op": "Replace", "value": {"active": "False"}}]),
            vec![("status", json!("deactivated"))],
            vec![("/active", json!(false))],
            vec![&get, &deactivate],
        ),
        (
            "Entra reactivate, by path",
            json!([{"op": "Replace", "path": "active", "value": "True"}]),
            vec![("status", json!("active"))],
            vec![("/active", json!(true))],
            vec![&get, &reactivate],
        ),
        (
            "Okta deactivate again",
            json!([{"op": "replace", "value": {"active": false}}]),
            vec![("status", json!("deactivated"))],
            vec![("/active", json!(false))],
            vec![&get, &deactivate],
        ),
    ];
    for (name, operations, upstream_fields, scim_fields, calls) in cases {
        let mark = h.mark();
        let (status, headers, answer) = h
            .patch(&format!("/Users/{id}"), &patch_body(operations))
            .await;
        assert_eq!(status, StatusCode::OK, "{name}: {answer}");
        assert_eq!(content_type(&headers), Some(SCIM_MEDIA_TYPE), "{name}");
        assert_eq!(answer["id"], id.as_str(), "{name}: {answer}");
        for (pointer, want) in &scim_fields {
            assert_eq!(
                answer.pointer(pointer),
                Some(want),
                "{name}: {pointer} in {answer}"
            );
        }
        let upstream_user = h.upstream_user(&id).expect("still there");
        for (field, want) in &upstream_fields {
            assert_eq!(&upstream_user[field], want, "{name}: upstream {field}");
        }
        assert_eq!(
            described(&h.calls_since(mark)),
            calls.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            "{name}: upstream calls (status changes only through the action endpoints)"
        );
    }

    // Okta still finds the deactivated user by userName (to reactivate it later).
    let path = format!(
        "/Users?{}",
        filter_query("userName eq \"SIR.ISAAC@example.com\"")
    );
    let reply = h.get(&path).await;
    let resources = assert_list(&path, &reply);
    assert_eq!(ids(&resources), vec![id.clone()], "{}", reply.2);
    assert_eq!(resources[0]["active"], false);

    // Delete, then it is gone.
    let (status, _, body) = h.delete(&format!("/Users/{id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(body, Value::Null, "204 has no body");
    assert!(h.upstream_user(&id).is_none(), "deleted upstream");
    let (status, headers, body) = h.get(&format!("/Users/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(content_type(&headers), Some(SCIM_MEDIA_TYPE));
    assert_scim_error("GET after DELETE", &body, 404, None);
    assert!(
        body["detail"].as_str().is_some_and(|d| d.contains(&id)),
        "the detail names the id: {body}"
    );

    // Every user call carried the SCIM key's id and the service credential.
    let calls = h.calls_since(start);
    assert!(calls.len() > 20, "{:?}", described(&calls));
    for call in &calls {
        assert_eq!(
            call.key_id.as_deref(),
            Some(KEY_ID),
            "X-Scim-Key-Id on {} {}",
            call.method,
            call.path
        );
        assert!(call.has_authorization, "{} {}", call.method, call.path);
    }
}

#[tokio::test]
async fn unknown_ids_are_scim_404s() {
    let h = Harness::with_example_data().await;
    let patch = patch_body(json!([{"op": "replace", "value": {"active": false}}]));
    let put = okta_create_body("nobody@example.com", "No", "Body", "00u0");
    for id in ["999999", "0"] {
        let path = format!("/Users/{id}");
        let replies = [
            ("GET", h.get(&path).await),
            ("PUT", h.put(&path, &put).await),
            ("PATCH", h.patch(&path, &patch).await),
            ("DELETE", h.delete(&path).await),
        ];
        for (method, (status, headers, body)) in replies {
            let context = format!("{method} {path}");
            assert_eq!(status, StatusCode::NOT_FOUND, "{context}: {body}");
            assert_eq!(content_type(&headers), Some(SCIM_MEDIA_TYPE), "{context}");
            assert_scim_error(&context, &body, 404, None);
            assert!(
                body["detail"].as_str().is_some_and(|d| d.contains(id)),
                "{context}: detail names the id: {body}"
            );
        }
    }
    assert_eq!(h.upstream.users(COMPANY).len(), 5, "nothing created");
}

#[tokio::test]
async fn import_pages_through_every_user_once() {
    let h = Harness::with_example_data().await;
    h.upstream.seed_users(COMPANY, 250);
    let all = upstream_ids(&h);
    assert_eq!(all.len(), 255);

    // Okta's import: startIndex 1, 101, 201, ... with count=100 until past totalResults.
    let mut seen = Vec::new();
    let mut start_index = 1;
    loop {
        let path = format!("/Users?startIndex={start_index}&count=100");
        let reply = h.get(&path).await;
        let resources = assert_list(&path, &reply);
        assert_eq!(reply.2["totalResults"], 255, "{path}");
        assert_eq!(reply.2["startIndex"], start_index, "{path}");
        let expected_items = (255 - (start_index - 1)).min(100);
        assert_eq!(resources.len(), expected_items, "{path}");
        seen.extend(ids(&resources));
        start_index += 100;
        if start_index > 255 {
            break;
        }
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no duplicates");
    assert_eq!(seen, all, "no gaps, upstream order");

    // (query, expected slice of the upstream order); totalResults is always 255
    let cases = [
        ("startIndex=50&count=100", 49..149),
        ("startIndex=1&count=0", 0..0),
        ("startIndex=1&count=1000", 0..100),
        ("startIndex=250&count=10", 249..255),
        ("startIndex=300&count=10", 255..255),
        ("startIndex=0&count=3", 0..3),
        ("startIndex=1&count=-5", 0..0),
        ("count=7", 0..7),
    ];
    for (query, range) in cases {
        let path = format!("/Users?{query}");
        let reply = h.get(&path).await;
        let resources = assert_list(&path, &reply);
        assert_eq!(reply.2["totalResults"], 255, "{path}: {}", reply.2);
        assert_eq!(ids(&resources), all[range].to_vec(), "{path}");
    }
}

#[tokio::test]
async fn filters_the_upstream_cannot_answer_are_a_bounded_scan() {
    let h = Harness::with_example_data().await;
    h.upstream.seed_users(COMPANY, 250);
    let (status, _, baxter) = h
        .post(
            "/Users",
            &okta_create_body("ann.baxter@example.com", "Ann", "Baxter", "00u1baxter"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{baxter}");

    // (filter, userNames expected, in order)
    let cases: [(&str, Vec<&str>); 5] = [
        ("name.familyName co \"x\"", vec!["ann.baxter@example.com"]),
        (
            "name.familyName sw \"Ham\" or title eq \"Engineer\"",
            vec!["ada@example.com", "margaret@example.com"],
        ),
        ("active eq false", vec!["katherine@example.com"]),
        (
            "userName eq \"ada@example.com\" and name.familyName eq \"Turing\"",
            vec![],
        ),
        (
            "externalId eq \"00u1baxter\"",
            vec!["ann.baxter@example.com"],
        ),
    ];
    for (filter, want) in cases {
        let mark = h.mark();
        let path = format!("/Users?{}", filter_query(filter));
        let reply = h.get(&path).await;
        let resources = assert_list(filter, &reply);
        let got: Vec<&str> = resources
            .iter()
            .map(|r| r["userName"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(got, want, "{filter}");
        assert_eq!(reply.2["totalResults"], want.len(), "{filter}");
        let calls = h.calls_since(mark);
        assert!(
            calls.len() <= 3,
            "{filter}: at most one call per upstream page of 100: {:?}",
            described(&calls)
        );
    }

    // A scan that would exceed the mapping's scan_limit is refused, not run.
    let (_dir, mapping) = mapping_variant("users.toml", "scan_limit = 5000", "scan_limit = 100");
    let small = Harness::start_with(mapping, |_| {}).await;
    small.upstream.seed_users(COMPANY, 150);
    let (status, _, body) = small
        .get(&format!(
            "/Users?{}",
            filter_query("name.familyName co \"x\"")
        ))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_scim_error("scan over the limit", &body, 400, Some("tooMany"));
}

#[tokio::test]
async fn a_mistyped_push_down_parameter_is_a_502_naming_it() {
    // The demo API ignores unknown query parameters, as many APIs do: `emial=` returns
    // every user, which the gateway must not pass on as "the" match.
    let (_dir, mapping) =
        mapping_variant("users.toml", "userName = \"email\"", "userName = \"emial\"");
    let h = Harness::start_with(mapping, |_| {}).await;
    h.upstream.seed_example_data(COMPANY);
    let mark = h.mark();
    let (status, headers, body) = h
        .get(&format!(
            "/Users?{}",
            filter_query("userName eq \"ada@example.com\"")
        ))
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(content_type(&headers), Some(SCIM_MEDIA_TYPE));
    assert_scim_error("mistyped push-down", &body, 502, None);
    assert!(
        body["detail"].as_str().is_some_and(|d| d.contains("emial")),
        "the detail names the parameter: {body}"
    );
    let calls = h.calls_since(mark);
    assert!(
        calls
            .iter()
            .any(|c| c.query.as_deref().is_some_and(|q| q.contains("emial="))),
        "the parameter was pushed down: {calls:?}"
    );
}

#[tokio::test]
async fn active_on_create_and_put_goes_through_the_action_endpoints() {
    let h = Harness::start().await;
    let mark = h.mark();
    let mut body = okta_create_body("hedy@example.com", "Hedy", "Lamarr", "00u1hedy");
    body["active"] = json!(false);
    let (status, _, created) = h.post("/Users", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["active"], false, "{created}");
    let id = created["id"].as_str().expect("string id").to_owned();
    assert_eq!(
        described(&h.calls_since(mark)),
        vec![
            format!("POST /api/v1/companies/{COMPANY}/users"),
            format!("POST {}/deactivate", user_path(&id)),
        ],
        "created, then deactivated"
    );

    // Okta's PUT carries `active`. Reactivation runs before the profile write (so it lands
    // on an active user), deactivation after it. (title, active, upstream calls after GET)
    let get = format!("GET {}", user_path(&id));
    let patch = format!("PATCH {}", user_path(&id));
    let reactivate = format!("POST {}/reactivate", user_path(&id));
    let deactivate = format!("POST {}/deactivate", user_path(&id));
    let cases = [
        ("Inventor", true, vec![&get, &reactivate, &patch]),
        ("Actress", false, vec![&get, &patch, &deactivate]),
        ("Actress", false, vec![&get, &patch]),
    ];
    let mut put = created.clone();
    for (title, active, calls) in cases {
        put["title"] = json!(title);
        put["active"] = json!(active);
        let mark = h.mark();
        let (status, _, answer) = h.put(&format!("/Users/{id}"), &put).await;
        let context = format!("PUT title={title} active={active}");
        assert_eq!(status, StatusCode::OK, "{context}: {answer}");
        assert_eq!(answer["active"], active, "{context}: {answer}");
        assert_eq!(answer["title"], title, "{context}: {answer}");
        let user = h.upstream_user(&id).expect("exists");
        let want_status = if active { "active" } else { "deactivated" };
        assert_eq!(user["status"], want_status, "{context}");
        assert_eq!(user["title"], title, "{context}");
        assert_eq!(
            described(&h.calls_since(mark)),
            calls.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            "{context}"
        );
    }
}

/// The enterprise `manager`: Blacksmith's integer `manager_id` behind `manager.value`
/// (a string in SCIM), with `$ref` rendered; removal writes null; what the upstream or the
/// gateway refuses is a SCIM 400.
#[tokio::test]
async fn enterprise_manager_is_the_upstream_manager_id() {
    const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
    let h = Harness::start().await;
    let ids: Vec<String> = h
        .upstream
        .seed_users(COMPANY, 2)
        .iter()
        .map(i64::to_string)
        .collect();
    let (boss, other) = (&ids[0], &ids[1]);
    let manager = |id: &str| json!({"value": id, "$ref": h.url(&format!("/Users/{id}"))});

    // Create with a manager: the upstream gets an integer; the answer renders $ref.
    let mut body = okta_create_body("ada@example.com", "Ada", "Lovelace", "00u1");
    body["schemas"] = json!([USER_SCHEMA, ENTERPRISE]);
    body[ENTERPRISE] = json!({"manager": {"value": boss}});
    let (status, _, created) = h.post("/Users", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created[ENTERPRISE]["manager"], manager(boss), "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    // The demo refuses a string manager_id (422): stored, it was sent as a number.
    assert_eq!(
        h.upstream_user(&id).expect("user")["manager_id"],
        json!(boss.parse::<i64>().expect("int"))
    );
    let (_, _, read) = h.get(&format!("/Users/{id}")).await;
    assert_eq!(read[ENTERPRISE]["manager"], manager(boss));

    // (PATCH operations, manager_id upstream afterwards, manager in the answer)
    let rows = [
        (
            json!([{"op": "replace", "path": format!("{ENTERPRISE}:manager"), "value": {"value": other}}]),
            json!(other.parse::<i64>().expect("int")),
            manager(other),
        ),
        (
            json!([{"op": "replace", "path": format!("{ENTERPRISE}:manager.value"), "value": boss}]),
            json!(boss.parse::<i64>().expect("int")),
            manager(boss),
        ),
        (
            // $ref as read is accepted back with its value.
            json!([{"op": "replace", "value": {ENTERPRISE: {"manager": manager(other)}}}]),
            json!(other.parse::<i64>().expect("int")),
            manager(other),
        ),
        (
            json!([{"op": "remove", "path": format!("{ENTERPRISE}:manager")}]),
            Value::Null,
            Value::Null,
        ),
    ];
    for (operations, upstream, answer) in rows {
        let (status, _, patched) = h
            .patch(&format!("/Users/{id}"), &patch_body(operations.clone()))
            .await;
        assert_eq!(status, StatusCode::OK, "{operations}: {patched}");
        assert_eq!(
            h.upstream_user(&id).expect("user")["manager_id"],
            upstream,
            "{operations}"
        );
        assert_eq!(
            patched[ENTERPRISE]["manager"], answer,
            "{operations}: {patched}"
        );
    }

    // Refused: by the gateway before any call (not an integer id), or by the upstream (422).
    let refusals = [
        (json!("bob"), "must be the id of a User", 0),
        (json!("12.5"), "must be the id of a User", 0),
        (json!(17), "must be a string", 0),
        (json!("999999"), "names no user of this company", 1),
        (json!(id), "cannot be their own manager", 1),
    ];
    for (value, detail, writes) in refusals {
        let operations = json!([{"op": "add", "path": format!("{ENTERPRISE}:manager"), "value": {"value": value}}]);
        let mark = h.mark();
        let (status, _, answer) = h
            .patch(&format!("/Users/{id}"), &patch_body(operations))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{value}: {answer}");
        assert_scim_error(&value.to_string(), &answer, 400, Some("invalidValue"));
        let shown = answer["detail"].as_str().unwrap_or_default();
        assert!(shown.contains(detail), "{value}: {shown}");
        let writes_made = h
            .calls_since(mark)
            .iter()
            .filter(|c| c.method != "GET")
            .count();
        assert_eq!(writes_made, writes, "{value}: upstream writes");
        assert_eq!(
            h.upstream_user(&id).expect("user")["manager_id"],
            Value::Null
        );
    }
    let mut bad = okta_create_body("bad@example.com", "B", "C", "00u2");
    bad[ENTERPRISE] = json!({"manager": {"value": "not-a-number"}});
    let mark = h.mark();
    let (status, _, answer) = h.post("/Users", &bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_scim_error("create", &answer, 400, Some("invalidValue"));
    assert!(h.calls_since(mark).is_empty(), "no upstream call at all");
}
