//! End-to-end tests: the demo served on 127.0.0.1:0 and driven over real HTTP.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::{DemoUpstream, Fault};

const SERVICE_TOKEN: &str = "svc-token";
const COMPANY: i64 = 42;
const OTHER_COMPANY: i64 = 7;

struct Harness {
    demo: DemoUpstream,
    base: String,
    client: reqwest::Client,
}

struct Reply {
    status: StatusCode,
    retry_after: Option<String>,
    body: Value,
}

impl Harness {
    async fn start() -> Self {
        let demo = DemoUpstream::new(SERVICE_TOKEN);
        demo.add_scim_key("scim-secret", COMPANY, "k_9f2c", "SCIM Provisioning");
        demo.add_company(OTHER_COMPANY);
        let addr = demo
            .spawn("127.0.0.1:0".parse().unwrap())
            .await
            .expect("bind");
        Harness {
            demo,
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Reply {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("x-scim-key-id", "k_9f2c");
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_owned());
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = resp.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("non-JSON body {text:?}: {e}"))
        };
        Reply {
            status,
            retry_after,
            body,
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let body = body.map(|b| b.to_string());
        self.send(method, path, Some(SERVICE_TOKEN), body.as_deref())
            .await
    }

    fn company(&self, company: i64, rest: &str) -> String {
        format!("/api/v1/companies/{company}{rest}")
    }

    async fn create_user(&self, email: &str) -> i64 {
        let r = self
            .call(
                Method::POST,
                &self.company(COMPANY, "/users"),
                Some(json!({"user": {"email": email}})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        r.body["data"]["id"].as_i64().unwrap()
    }
}

fn assert_error(r: &Reply, status: StatusCode, code: &str) {
    assert_eq!(r.status, status, "{:?}", r.body);
    assert_eq!(r.body["error"]["code"], code, "{:?}", r.body);
    assert!(r.body["error"]["message"].is_string(), "{:?}", r.body);
}

#[tokio::test]
async fn create_user_and_duplicate_email() {
    let h = Harness::start().await;
    let r = h
        .call(
            Method::POST,
            &h.company(COMPANY, "/users"),
            Some(json!({"user": {
                "email": "Ada@Example.com", "first_name": "Ada", "last_name": "Lovelace",
                "role": "admin", "external_id": "00u1abcd", "favourite_colour": "green"
            }})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let user = &r.body["data"];
    assert_eq!(user["email"], "Ada@Example.com");
    assert_eq!(user["role"], "admin");
    assert_eq!(user["status"], "active");
    assert!(user.get("favourite_colour").is_none());
    let id = user["id"].as_i64().unwrap();
    assert_eq!(h.demo.user(COMPANY, id).as_ref(), Some(user));

    let r = h
        .call(
            Method::POST,
            &h.company(COMPANY, "/users"),
            Some(json!({"user": {"email": "ada@EXAMPLE.COM"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        r.body,
        json!({"errors": {"email": ["has already been taken"]}})
    );

    for (body, field) in [
        (json!({"user": {"email": "no-at-sign"}}), "email"),
        (
            json!({"user": {"email": "b@example.com", "role": "owner"}}),
            "role",
        ),
        (json!({"email": "b@example.com"}), "base"),
    ] {
        let r = h
            .call(
                Method::POST,
                &h.company(COMPANY, "/users"),
                Some(body.clone()),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(r.body["errors"][field].is_array(), "{body}: {:?}", r.body);
    }
    let r = h
        .send(
            Method::POST,
            &h.company(COMPANY, "/users"),
            Some(SERVICE_TOKEN),
            Some("{\"user\": {"),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body["errors"]["base"][0].is_string());
    assert_eq!(h.demo.users(COMPANY).len(), 1);
}

#[tokio::test]
async fn list_users_paging_and_filters() {
    let h = Harness::start().await;
    let ids = h.demo.seed_users(COMPANY, 7);
    let path = h.company(COMPANY, "/users");

    let r = h
        .call(Method::GET, &format!("{path}?page=3&per_page=3"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.body["meta"],
        json!({"page": 3, "per_page": 3, "total": 7})
    );
    assert_eq!(r.body["data"][0]["id"], ids[6]);
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1);

    let r = h
        .call(Method::GET, &format!("{path}?per_page=500"), None)
        .await;
    assert_eq!(
        r.body["meta"],
        json!({"page": 1, "per_page": 100, "total": 7})
    );
    let listed: Vec<i64> = r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, ids);

    for bad in ["page=0", "per_page=0", "page=abc", "status=gone"] {
        let r = h.call(Method::GET, &format!("{path}?{bad}"), None).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert!(r.body["errors"].is_object(), "{bad}");
    }

    let r = h
        .call(
            Method::GET,
            &format!("{path}?email=USER3%40example.com"),
            None,
        )
        .await;
    assert_eq!(r.body["meta"]["total"], 1);
    assert_eq!(r.body["data"][0]["id"], ids[2]);

    let r = h
        .call(Method::GET, &format!("{path}?status=deactivated"), None)
        .await;
    assert_eq!(r.body["meta"]["total"], 0);
}

#[tokio::test]
async fn patch_deactivate_reactivate_delete() {
    let h = Harness::start().await;
    let id = h.create_user("grace@example.com").await;
    let user_path = h.company(COMPANY, &format!("/users/{id}"));

    let r = h
        .call(
            Method::PATCH,
            &user_path,
            Some(json!({"user": {"title": "Admiral", "phone": "+1 555 0101"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["data"]["title"], "Admiral");

    let r = h
        .call(
            Method::PATCH,
            &user_path,
            Some(json!({"user": {"title": null}})),
        )
        .await;
    assert_eq!(r.body["data"]["title"], Value::Null);
    assert_eq!(r.body["data"]["phone"], "+1 555 0101");

    let r = h
        .call(
            Method::PATCH,
            &user_path,
            Some(json!({"user": {"status": "deactivated"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body["errors"]["status"].is_array());

    let r = h
        .call(Method::POST, &format!("{user_path}/deactivate"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["data"]["status"], "deactivated");
    // Deactivated users are still listed.
    let r = h
        .call(
            Method::GET,
            &h.company(COMPANY, "/users?status=deactivated"),
            None,
        )
        .await;
    assert_eq!(r.body["meta"]["total"], 1);

    let r = h
        .call(Method::POST, &format!("{user_path}/reactivate"), None)
        .await;
    assert_eq!(r.body["data"]["status"], "active");

    let r = h.call(Method::DELETE, &user_path, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_error(
        &h.call(Method::GET, &user_path, None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert!(h.demo.user(COMPANY, id).is_none());
}

#[tokio::test]
async fn introspection_and_service_token() {
    let h = Harness::start().await;
    let path = "/api/v1/scim_keys/introspect";
    let r = h
        .call(Method::POST, path, Some(json!({"token": "scim-secret"})))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.body,
        json!({"active": true, "company_id": 42, "key_id": "k_9f2c", "purpose": "SCIM Provisioning"})
    );
    let r = h
        .call(Method::POST, path, Some(json!({"token": "nope"})))
        .await;
    assert_eq!(r.body, json!({"active": false}));

    let users = h.company(COMPANY, "/users");
    for token in [None, Some("wrong"), Some("scim-secret")] {
        let r = h.send(Method::GET, &users, token, None).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
        let r = h
            .send(
                Method::POST,
                path,
                token,
                Some(r#"{"token":"scim-secret"}"#),
            )
            .await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let recorded = h.demo.requests();
    // [0], [1]: the introspections; then (GET, POST) pairs per token.
    assert!(!recorded[2].has_authorization && !recorded[3].has_authorization);
    assert!(recorded[4].has_authorization);
    assert_eq!(recorded[4].key_id.as_deref(), Some("k_9f2c"));
}

#[tokio::test]
async fn team_members() {
    let h = Harness::start().await;
    let a = h.create_user("a@example.com").await;
    let b = h.create_user("b@example.com").await;
    let r = h
        .call(
            Method::POST,
            &h.company(COMPANY, "/teams"),
            Some(json!({"team": {"name": "Security", "description": "Blue team"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let team = r.body["data"]["id"].as_i64().unwrap();
    let r = h
        .call(
            Method::POST,
            &h.company(COMPANY, "/teams"),
            Some(json!({"team": {"name": "Security"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        r.body,
        json!({"errors": {"name": ["has already been taken"]}})
    );

    let members = h.company(COMPANY, &format!("/teams/{team}/members"));
    let add = |user: Value| h.call(Method::POST, &members, Some(json!({"user_id": user})));
    assert_eq!(add(json!(b)).await.status, StatusCode::CREATED);
    let again = add(json!(b)).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(
        again.body["data"],
        json!({"user_id": b, "email": "b@example.com"})
    );
    assert_eq!(add(json!(a)).await.status, StatusCode::CREATED);
    assert_error(
        &add(json!(999_999)).await,
        StatusCode::NOT_FOUND,
        "user_not_found",
    );
    assert_eq!(
        add(json!(a.to_string())).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    let r = h
        .call(Method::GET, &format!("{members}?per_page=1&page=2"), None)
        .await;
    assert_eq!(
        r.body["meta"],
        json!({"page": 2, "per_page": 1, "total": 2})
    );
    assert_eq!(
        r.body["data"],
        json!([{"user_id": b, "email": "b@example.com"}])
    );
    let r = h
        .call(
            Method::GET,
            &h.company(COMPANY, &format!("/teams/{team}")),
            None,
        )
        .await;
    assert_eq!(r.body["data"]["member_count"], 2);

    let r = h
        .call(Method::DELETE, &format!("{members}/{a}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = h
        .call(Method::DELETE, &format!("{members}/{a}"), None)
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");

    let r = h
        .call(
            Method::PUT,
            &members,
            Some(json!({"user_ids": [a, 424_242]})),
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "user_not_found");
    assert_eq!(h.demo.team_members(COMPANY, team), Some(vec![b]));
    let r = h
        .call(Method::PUT, &members, Some(json!({"user_ids": [a]})))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(h.demo.team_members(COMPANY, team), Some(vec![a]));

    // Deleting a user removes it from its teams.
    h.call(
        Method::DELETE,
        &h.company(COMPANY, &format!("/users/{a}")),
        None,
    )
    .await;
    assert_eq!(h.demo.team_members(COMPANY, team), Some(vec![]));
}

#[tokio::test]
async fn company_isolation_and_routing() {
    let h = Harness::start().await;
    let id = h.create_user("a@example.com").await;
    let team = h.demo.seed_team(COMPANY, "Ops", &[id]);
    for path in [
        h.company(OTHER_COMPANY, &format!("/users/{id}")),
        h.company(OTHER_COMPANY, &format!("/teams/{team}")),
        h.company(OTHER_COMPANY, &format!("/teams/{team}/members")),
        h.company(999, "/users"),
        h.company(COMPANY, "/users/abc"),
        h.company(COMPANY, "/users/-1"),
        h.company(COMPANY, "/users/1%2F2"),
        "/api/v1/companies/x/users".to_owned(),
        "/api/v1/nowhere".to_owned(),
    ] {
        let r = h.call(Method::GET, &path, None).await;
        assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    }
    // Wrong method on a known path, Rails style.
    let r = h
        .call(Method::PUT, &h.company(COMPANY, "/users"), None)
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    // Same email in another company is allowed: uniqueness is per company.
    let r = h
        .call(
            Method::POST,
            &h.company(OTHER_COMPANY, "/users"),
            Some(json!({"user": {"email": "a@example.com"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
}

#[tokio::test]
async fn records_raw_requests() {
    let h = Harness::start().await;
    h.demo.clear_requests();
    let path = h.company(COMPANY, "/users/a%2Fb");
    h.call(Method::GET, &path, None).await;
    h.call(
        Method::GET,
        &h.company(COMPANY, "/users?email=a%2Bb%40x.com"),
        None,
    )
    .await;
    let recorded = h.demo.requests();
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[0].method, "GET");
    assert_eq!(recorded[0].path, path);
    assert_eq!(recorded[0].query, None);
    assert_eq!(recorded[0].key_id.as_deref(), Some("k_9f2c"));
    assert_eq!(recorded[1].query.as_deref(), Some("email=a%2Bb%40x.com"));
    h.demo.clear_requests();
    assert!(h.demo.requests().is_empty());
}

#[tokio::test]
async fn rate_limiting_spares_introspection() {
    let h = Harness::start().await;
    h.demo.set_rate_limited(Some(3));
    let r = h
        .call(Method::GET, &h.company(COMPANY, "/users"), None)
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.retry_after.as_deref(), Some("3"));
    let r = h
        .call(
            Method::POST,
            "/api/v1/scim_keys/introspect",
            Some(json!({"token": "scim-secret"})),
        )
        .await;
    assert_eq!(r.body["active"], true);
    h.demo.set_rate_limited(None);
    let r = h
        .call(Method::GET, &h.company(COMPANY, "/users"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn member_call_concurrency_high_water_mark() {
    let h = Harness::start().await;
    let users = h.demo.seed_users(COMPANY, 5);
    let team = h.demo.seed_team(COMPANY, "Big", &[]);
    h.demo.set_member_call_latency(Duration::from_millis(200));
    assert_eq!(h.demo.max_member_calls_in_flight(), 0);

    let members = format!(
        "{}{}",
        h.base,
        h.company(COMPANY, &format!("/teams/{team}/members"))
    );
    let mut calls = tokio::task::JoinSet::new();
    for user in users.clone() {
        let req = h
            .client
            .post(&members)
            .bearer_auth(SERVICE_TOKEN)
            .json(&json!({"user_id": user}));
        calls.spawn(async move { req.send().await.unwrap().status() });
    }
    while let Some(status) = calls.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::CREATED);
    }
    assert_eq!(h.demo.max_member_calls_in_flight(), 5);
    assert_eq!(h.demo.team_members(COMPANY, team), Some(users));
}

#[tokio::test]
async fn injected_member_faults() {
    let h = Harness::start().await;
    let users = h.demo.seed_users(COMPANY, 3);
    let team = h.demo.seed_team(COMPANY, "Flaky", &[]);
    let members = h.company(COMPANY, &format!("/teams/{team}/members"));
    h.demo.fail_member_call(2, Fault::Status500);
    h.demo
        .fail_member_call(3, Fault::Hang(Duration::from_millis(300)));

    let add = |user: i64| h.call(Method::POST, &members, Some(json!({"user_id": user})));
    assert_eq!(add(users[0]).await.status, StatusCode::CREATED);
    assert_eq!(
        add(users[1]).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(h.demo.team_members(COMPANY, team), Some(vec![users[0]]));
    let started = Instant::now();
    assert_eq!(add(users[2]).await.status, StatusCode::CREATED);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        h.demo.team_members(COMPANY, team),
        Some(vec![users[0], users[2]])
    );
    // Faults are one-shot.
    assert_eq!(add(users[1]).await.status, StatusCode::CREATED);
}

#[tokio::test]
async fn example_data_is_served() {
    let h = Harness::start().await;
    h.demo.seed_example_data(COMPANY);
    let users = h.demo.users(COMPANY);
    assert_eq!(users.len(), 5);
    assert!(users.iter().any(|u| u["status"] == "deactivated"));
    assert!(users.iter().any(|u| u["role"] == "admin"));
    assert!(users.iter().any(|u| u["manager_id"].is_i64()));
    let r = h
        .call(Method::GET, &h.company(COMPANY, "/teams"), None)
        .await;
    assert_eq!(r.body["meta"]["total"], 2);
    let security = h
        .call(
            Method::GET,
            &h.company(COMPANY, "/teams?name=Security"),
            None,
        )
        .await;
    assert_eq!(security.body["data"][0]["member_count"], 3);
}
