//! SCIM protocol details beyond Okta's corner: `.search`, projections.

mod support;

use serde_json::json;
use support::*;

const SEARCH: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

#[tokio::test]
async fn search_by_post_answers_like_get() {
    let h = Harness::with_example_data().await;
    let (status, headers, by_get) = h
        .get(&format!(
            "/Users?{}&attributes=userName&count=5",
            filter_query("userName sw \"a\"")
        ))
        .await;
    assert_eq!(status, 200);
    let (status, post_headers, by_post) = h
        .post(
            "/Users/.search",
            &json!({"schemas": [SEARCH], "filter": "userName sw \"a\"", "attributes": ["userName"], "count": 5}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(content_type(&headers), content_type(&post_headers));
    assert_eq!(by_get, by_post);
    assert!(by_post["totalResults"].as_u64().expect("total") >= 1);
    for user in by_post["Resources"].as_array().expect("resources") {
        let keys: Vec<&str> = user
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        // Members in any order: JSON objects are unordered (scimgate writes keys sorted).
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, ["id", "schemas", "userName"], "{user}");
        assert_eq!(
            user["schemas"],
            json!([USER_SCHEMA]),
            "no extension listed once it is projected away"
        );
    }

    let cases = [
        (json!({"filter": "userName sw \"a\""}), "invalidSyntax"),
        (
            json!({"schemas": [SEARCH], "filter": "userName zz \"a\""}),
            "invalidFilter",
        ),
        (json!({"schemas": [SEARCH], "attributes": "userName"}), ""),
        (
            json!({"schemas": [SEARCH], "count": "many"}),
            "invalidValue",
        ),
    ];
    for (body, scim_type) in cases {
        let (status, _, answer) = h.post("/Users/.search", &body).await;
        if scim_type.is_empty() {
            assert_eq!(status, 200, "{body}: {answer}");
        } else {
            assert_scim_error(&body.to_string(), &answer, 400, Some(scim_type));
        }
    }
}

#[tokio::test]
async fn projections_on_reads() {
    let h = Harness::with_example_data().await;
    let (_, _, list) = h.get("/Users?count=1").await;
    let id = list["Resources"][0]["id"].as_str().expect("id").to_owned();
    let cases = [
        ("attributes=name.givenName", vec!["schemas", "id", "name"]),
        (
            "attributes=urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
            vec!["schemas", "id", ENTERPRISE],
        ),
        (
            "excludedAttributes=emails,meta,name",
            vec![
                "schemas",
                "id",
                "userName",
                "externalId",
                "displayName",
                "title",
                "phoneNumbers",
                "active",
                "roles",
                ENTERPRISE,
            ],
        ),
    ];
    for (query, keys) in cases {
        let (status, _, user) = h.get(&format!("/Users/{id}?{query}")).await;
        assert_eq!(status, 200, "{query}");
        let mut got: Vec<&str> = user
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        // Members in any order: JSON objects are unordered (scimgate writes keys sorted).
        got.sort_unstable();
        let mut keys = keys.to_vec();
        keys.sort_unstable();
        assert_eq!(got, keys, "{query}: {user}");
    }
    let (_, _, user) = h
        .get(&format!("/Users/{id}?attributes=name.givenName"))
        .await;
    assert!(user["name"].get("familyName").is_none());
    assert!(user["name"].get("givenName").is_some());
}

#[tokio::test]
async fn etags_when_the_mapping_declares_a_version() {
    let (_dir, mapping) = mapping_variant(
        "users.toml",
        "meta = { created = \"$.created_at\", last_modified = \"$.updated_at\" }",
        "meta = { created = \"$.created_at\", last_modified = \"$.updated_at\", version = \"$.updated_at\" }",
    );
    let h = Harness::start_with(mapping, |_| {}).await;
    let id = h.upstream.seed_users(COMPANY, 1)[0].to_string();
    let (_, _, spc) = h.get("/ServiceProviderConfig").await;
    assert_eq!(spc["etag"]["supported"], true);

    let (status, headers, user) = h.get(&format!("/Users/{id}")).await;
    assert_eq!(status, 200);
    let etag = headers
        .get("etag")
        .expect("ETag header")
        .to_str()
        .expect("text")
        .to_owned();
    assert_eq!(user["meta"]["version"], etag.as_str());
    assert!(etag.starts_with("W/\""), "{etag}");

    let send = |method: reqwest::Method,
                header: &'static str,
                tag: String,
                body: Option<serde_json::Value>| {
        let mut request = h
            .client
            .request(method, h.url(&format!("/Users/{id}")))
            .bearer_auth(&h.token)
            .header(header, tag);
        if let Some(b) = body {
            request = request
                .header("content-type", SCIM_MEDIA_TYPE)
                .body(b.to_string());
        }
        request.send()
    };
    let not_modified = send(reqwest::Method::GET, "if-none-match", etag.clone(), None)
        .await
        .expect("answer");
    assert_eq!(not_modified.status(), 304);
    let changed = send(
        reqwest::Method::GET,
        "if-none-match",
        "W/\"other\"".into(),
        None,
    )
    .await
    .expect("answer");
    assert_eq!(changed.status(), 200);

    let patch = json!({"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "path": "title", "value": "Dr"}]});
    let stale = send(
        reqwest::Method::PATCH,
        "if-match",
        "W/\"2001-01-01T00:00:00Z\"".into(),
        Some(patch.clone()),
    )
    .await
    .expect("answer");
    assert_eq!(stale.status(), 412);
    let body: serde_json::Value = stale.json().await.expect("json");
    assert_scim_error("stale If-Match", &body, 412, None);
    let current = send(
        reqwest::Method::PATCH,
        "if-match",
        etag.clone(),
        Some(patch),
    )
    .await
    .expect("answer");
    assert_eq!(current.status(), 200);
    assert_eq!(h.upstream_user(&id).expect("user")["title"], "Dr");
    let stale_delete = send(
        reqwest::Method::DELETE,
        "if-match",
        "W/\"nope\"".into(),
        None,
    )
    .await
    .expect("answer");
    assert_eq!(stale_delete.status(), 412);
}
