//! Mapping generality (issue 5): one gateway, three REST APIs of different shapes, and
//! nothing but the mapping directory changes between them.
//!
//! - Blacksmith (`mappings/blacksmith`, the demo upstream): envelopes, page/per_page with
//!   the total in the body, integer ids, action endpoints for `active`, members behind
//!   their own endpoints, tenant-scoped paths, token introspection.
//! - Acme Directory (`mappings/examples/acme-directory`, `tests/upstreams/acme.rs`): bare
//!   JSON, offset/limit with `X-Total-Count`, UUIDs, a boolean `enabled`, member id arrays
//!   inside groups written back with a conditional PUT, static keys and no tenant.
//! - Beacon HR (`mappings/examples/beacon-hr`, `tests/upstreams/beacon.rs`): cursor paging
//!   without a total, `emp_123` ids, problem+json errors, a status enum, PUT-only updates,
//!   soft delete, a 400 for duplicates and uniqueness it does not enforce.
//!
//! The same Okta user flow, group-push flow and import paging run against each, through
//! the same library, and the upstream's own state is checked after every step. Then what
//! is peculiar to one shape: concurrent read-modify-writes of one Acme group, Beacon's
//! uniqueness rules, and `scimgate check` on both example directories.

mod support;
mod upstreams;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use reqwest::header::LOCATION;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use scimgate::config::{AuthMode, Config, StaticKey};
use scimgate::server::{serve, Gateway};
use support::{
    assert_scim_error, content_type, filter_query, mapping_from, Harness, Reply, COMPANY,
    GROUP_SCHEMA, LIST_SCHEMA, PATCH_SCHEMA, SCIM_MEDIA_TYPE, TOKEN, USER_SCHEMA,
};
use upstreams::acme::{self, Acme};
use upstreams::beacon::{self, Beacon};
use upstreams::Recorded;

const ACME_MAPPING: &str = "mappings/examples/acme-directory";
const BEACON_MAPPING: &str = "mappings/examples/beacon-hr";
const PASSWORD: &str = "0kta-Sends-Th1s-Password!";

// ---------------------------------------------------------------------------------------
// A SCIM client, and the three targets behind one interface.
// ---------------------------------------------------------------------------------------

/// Speaks SCIM to one gateway with the test token.
#[derive(Clone)]
struct Scim {
    base: String,
    token: String,
    client: reqwest::Client,
}

impl Scim {
    fn new(base: String) -> Scim {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client builds");
        Scim {
            base,
            token: TOKEN.to_owned(),
            client,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Reply {
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, SCIM_MEDIA_TYPE)
                .body(serde_json::to_vec(body).expect("body serialises"));
        }
        let response = request.send().await.expect("gateway answers");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body readable");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        (status, headers, body)
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(Method::POST, path, Some(body)).await
    }

    async fn put(&self, path: &str, body: &Value) -> Reply {
        self.send(Method::PUT, path, Some(body)).await
    }

    async fn patch(&self, path: &str, body: &Value) -> Reply {
        self.send(Method::PATCH, path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, None).await
    }
}

/// A user as the upstream stores it, in SCIM terms, comparable across the three APIs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UserState {
    user_name: String,
    given: String,
    family: String,
    email: String,
    active: bool,
}

impl UserState {
    fn new(user_name: &str, given: &str, family: &str, email: &str, active: bool) -> Self {
        UserState {
            user_name: user_name.to_owned(),
            given: given.to_owned(),
            family: family.to_owned(),
            email: email.to_owned(),
            active,
        }
    }
}

/// A group as the upstream stores it: its name and its members' SCIM ids.
#[derive(Debug, Clone, PartialEq, Eq)]
struct GroupState {
    name: String,
    members: BTreeSet<String>,
}

fn group_state(name: &str, members: &[&String]) -> GroupState {
    GroupState {
        name: name.to_owned(),
        members: members.iter().map(|m| (*m).clone()).collect(),
    }
}

enum Upstream {
    Blacksmith(Harness),
    Acme(Acme),
    Beacon(Beacon),
}

/// A gateway in front of one upstream, with a view of the upstream's state.
struct Target {
    name: &'static str,
    scim: Scim,
    upstream: Upstream,
}

impl Target {
    /// The shipped Blacksmith mapping in front of the demo upstream (token introspection).
    async fn on_blacksmith() -> Target {
        let h = Harness::start().await;
        let scim = Scim::new(h.base.clone());
        Target {
            name: "blacksmith",
            scim,
            upstream: Upstream::Blacksmith(h),
        }
    }

    /// `mappings/examples/acme-directory` in front of an empty Acme directory.
    async fn on_acme() -> Target {
        let acme = Acme::start().await;
        let scim = static_key_gateway(acme.addr(), ACME_MAPPING).await;
        Target {
            name: "acme",
            scim,
            upstream: Upstream::Acme(acme),
        }
    }

    /// `mappings/examples/beacon-hr` in front of an empty Beacon HR.
    async fn on_beacon() -> Target {
        let beacon = Beacon::start().await;
        let scim = static_key_gateway(beacon.addr(), BEACON_MAPPING).await;
        Target {
            name: "beacon",
            scim,
            upstream: Upstream::Beacon(beacon),
        }
    }

    fn acme(&self) -> &Acme {
        match &self.upstream {
            Upstream::Acme(a) => a,
            _ => panic!("{} is not Acme", self.name),
        }
    }

    fn beacon(&self) -> &Beacon {
        match &self.upstream {
            Upstream::Beacon(b) => b,
            _ => panic!("{} is not Beacon", self.name),
        }
    }

    /// The live user behind a SCIM id (`None` when deleted, soft or hard).
    fn user(&self, id: &str) -> Option<UserState> {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        match &self.upstream {
            Upstream::Blacksmith(h) => h.upstream_user(id).map(|u| UserState {
                user_name: text(&u["email"]),
                given: text(&u["first_name"]),
                family: text(&u["last_name"]),
                email: text(&u["email"]),
                active: u["status"] == "active",
            }),
            Upstream::Acme(a) => a.user(id).map(|u| UserState {
                user_name: u.login,
                given: u.given_name.unwrap_or_default(),
                family: u.family_name.unwrap_or_default(),
                email: u.email.unwrap_or_default(),
                active: u.enabled,
            }),
            Upstream::Beacon(b) => b.employee(id).filter(|e| !e.deleted).map(|e| UserState {
                user_name: e.username,
                given: e.first,
                family: e.last,
                email: e.work_email,
                active: e.status == "ENABLED",
            }),
        }
    }

    /// How many live users the upstream holds.
    fn live_users(&self) -> usize {
        match &self.upstream {
            Upstream::Blacksmith(h) => h.upstream.users(COMPANY).len(),
            Upstream::Acme(a) => a.users().len(),
            Upstream::Beacon(b) => b.employees().iter().filter(|e| !e.deleted).count(),
        }
    }

    /// Everything the upstream stores about users, as text (to look for a password).
    fn stored_users_text(&self) -> String {
        match &self.upstream {
            Upstream::Blacksmith(h) => {
                serde_json::to_string(&h.upstream.users(COMPANY)).expect("serialise")
            }
            Upstream::Acme(a) => format!("{:?}", a.users()),
            Upstream::Beacon(b) => format!("{:?}", b.employees()),
        }
    }

    /// Adds `n` users directly upstream; their SCIM ids in the upstream's list order.
    fn seed_users(&self, n: usize) -> Vec<String> {
        match &self.upstream {
            Upstream::Blacksmith(h) => h
                .upstream
                .seed_users(COMPANY, n)
                .iter()
                .map(i64::to_string)
                .collect(),
            Upstream::Acme(a) => a.seed_users(n),
            Upstream::Beacon(b) => b.seed_employees(n),
        }
    }

    /// The group behind a SCIM id.
    fn group(&self, id: &str) -> Option<GroupState> {
        match &self.upstream {
            Upstream::Blacksmith(h) => {
                let team: i64 = id.parse().ok()?;
                let name = h.upstream.team(COMPANY, team)?["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let members = h
                    .upstream
                    .team_members(COMPANY, team)?
                    .iter()
                    .map(i64::to_string)
                    .collect();
                Some(GroupState { name, members })
            }
            Upstream::Acme(a) => a.group(id).map(|g| GroupState {
                name: g.name,
                members: g.member_ids.into_iter().collect(),
            }),
            Upstream::Beacon(b) => b.team(id).map(|t| GroupState {
                name: t.name,
                members: t.members.into_iter().collect(),
            }),
        }
    }
}

/// A gateway with one static SCIM key (the harness token, no tenant) in front of
/// `upstream`, serving the mapping directory `dir`.
async fn static_key_gateway(upstream: SocketAddr, dir: &str) -> Scim {
    let mut config = Config::default();
    config.upstream.url = format!("http://{upstream}");
    config.upstream.token = Some(upstreams::SERVICE_TOKEN.to_owned());
    config.auth.mode = AuthMode::Static;
    config.auth.static_keys = vec![StaticKey {
        sha256: hex::encode(scimgate::server::auth::token_hash(TOKEN)),
        tenant: BTreeMap::new(),
        key_id: Some("k_test".to_owned()),
    }];
    let base_path = config.base_path_trimmed().to_owned();
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("gateway binds");
    let addr = listener.local_addr().expect("gateway address");
    let gateway = Gateway::new(config, mapping_from(Path::new(dir))).expect("gateway builds");
    tokio::spawn(async move {
        if let Err(e) = serve(gateway, listener).await {
            eprintln!("gateway stopped: {e}");
        }
    });
    Scim::new(format!("http://{addr}{base_path}"))
}

// ---------------------------------------------------------------------------------------
// Helpers shared by the flows.
// ---------------------------------------------------------------------------------------

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

fn patch_body(operations: Value) -> Value {
    json!({"schemas": [PATCH_SCHEMA], "Operations": operations})
}

fn group_body(name: &str, members: &[&String]) -> Value {
    let members: Vec<Value> = members.iter().map(|m| json!({"value": m})).collect();
    json!({"schemas": [GROUP_SCHEMA], "displayName": name, "members": members})
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

fn string_id(context: &str, doc: &Value) -> String {
    doc["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{context}: id must be a string in {doc}"))
        .to_owned()
}

fn assert_no_content(context: &str, reply: &Reply) {
    let (status, _, body) = reply;
    assert_eq!(*status, StatusCode::NO_CONTENT, "{context}: {body}");
    assert_eq!(*body, Value::Null, "{context}: a 204 has no body");
}

/// The member `value`s of a SCIM group (an absent `members` is no members).
fn member_set(context: &str, group: &Value) -> BTreeSet<String> {
    match group.get("members") {
        None => BTreeSet::new(),
        Some(Value::Array(members)) => members
            .iter()
            .map(|m| {
                m["value"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{context}: member value must be a string in {m}"))
                    .to_owned()
            })
            .collect(),
        Some(other) => panic!("{context}: members must be an array, got {other}"),
    }
}

// ---------------------------------------------------------------------------------------
// The flows, identical for every target.
// ---------------------------------------------------------------------------------------

/// Okta's user lifecycle: existence check, create, duplicate, read, PUT, PATCH
/// deactivate/reactivate (no-path and by path), lookup of the deactivated user, delete.
/// Returns the SCIM id of the user it created and deleted.
async fn okta_user_flow(t: &Target) -> String {
    let name = t.name;
    let user_name = "isaac.newton@example.com";
    let lookup = format!(
        "/Users?{}&startIndex=1&count=100",
        filter_query(&format!("userName eq \"{user_name}\""))
    );

    // Okta checks whether the user exists.
    let reply = t.scim.get(&lookup).await;
    let resources = assert_list(&format!("{name}: existence check"), &reply);
    assert_eq!(reply.2["totalResults"], 0, "{name}: {}", reply.2);
    assert!(resources.is_empty(), "{name}: {}", reply.2);

    // Create, with Okta's exact body.
    let before = t.live_users();
    let (status, headers, created) = t
        .scim
        .post(
            "/Users",
            &okta_create_body(user_name, "Isaac", "Newton", "00u1newton"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{name}: create: {created}");
    assert_eq!(content_type(&headers), Some(SCIM_MEDIA_TYPE), "{name}");
    let id = string_id(name, &created);
    let location = created["meta"]["location"]
        .as_str()
        .unwrap_or_else(|| panic!("{name}: meta.location in {created}"));
    assert_eq!(location, t.scim.url(&format!("/Users/{id}")), "{name}");
    assert_eq!(
        headers.get(LOCATION).and_then(|v| v.to_str().ok()),
        Some(location),
        "{name}: Location header equals meta.location"
    );
    assert_eq!(created["meta"]["resourceType"], "User", "{name}: {created}");
    assert_eq!(created["userName"], user_name, "{name}: {created}");
    assert_eq!(created["name"]["givenName"], "Isaac", "{name}: {created}");
    assert_eq!(created["active"], true, "{name}: {created}");
    assert!(created.get("password").is_none(), "{name}: {created}");
    assert_eq!(
        t.user(&id),
        Some(UserState::new(
            user_name, "Isaac", "Newton", user_name, true
        )),
        "{name}: upstream after create"
    );
    assert_eq!(t.live_users(), before + 1, "{name}: one user created");
    assert!(
        !t.stored_users_text().contains(PASSWORD),
        "{name}: the password must not be stored upstream"
    );

    // The existence check now finds it.
    let reply = t.scim.get(&lookup).await;
    let resources = assert_list(&format!("{name}: existence check after create"), &reply);
    assert_eq!(ids(&resources), vec![id.clone()], "{name}: {}", reply.2);

    // A second create of the same person, in any casing, is a conflict.
    for again in [user_name, "Isaac.Newton@EXAMPLE.com"] {
        let body = okta_create_body(again, "Isaac", "Newton", "00u1other");
        let (status, _, error) = t.scim.post("/Users", &body).await;
        let context = format!("{name}: duplicate {again}");
        assert_eq!(status, StatusCode::CONFLICT, "{context}: {error}");
        assert_scim_error(&context, &error, 409, Some("uniqueness"));
    }
    assert_eq!(t.live_users(), before + 1, "{name}: no second user created");

    // Read it back.
    let (status, _, fetched) = t.scim.get(&format!("/Users/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{name}: {fetched}");
    assert_eq!(fetched, created, "{name}: GET answers what create answered");

    // PUT: Okta sends the whole user back, changed, with the password.
    let mut put = fetched.clone();
    put["name"]["familyName"] = json!("Newton-Smythe");
    put["password"] = json!(PASSWORD);
    let (status, _, replaced) = t.scim.put(&format!("/Users/{id}"), &put).await;
    assert_eq!(status, StatusCode::OK, "{name}: PUT: {replaced}");
    assert_eq!(replaced["name"]["familyName"], "Newton-Smythe", "{name}");
    assert_eq!(replaced["name"]["givenName"], "Isaac", "{name}");
    assert_eq!(
        t.user(&id),
        Some(UserState::new(
            user_name,
            "Isaac",
            "Newton-Smythe",
            user_name,
            true
        )),
        "{name}: upstream after PUT"
    );
    assert!(
        !t.stored_users_text().contains(PASSWORD),
        "{name}: PUT must not store the password"
    );

    // PATCHes, in the order a directory sends them: (case, operations, active, givenName).
    let cases = [
        (
            "Okta deactivate, no path",
            json!([{"op": "replace", "value": {"active": false}}]),
            false,
            "Isaac",
        ),
        (
            "Okta reactivate, no path",
            json!([{"op": "replace", "value": {"active": true}}]),
            true,
            "Isaac",
        ),
        (
            "givenName by path",
            json!([{"op": "replace", "path": "name.givenName", "value": "Ike"}]),
            true,
            "Ike",
        ),
        (
            "deactivate by path",
            json!([{"op": "replace", "path": "active", "value": false}]),
            false,
            "Ike",
        ),
    ];
    for (case, operations, active, given) in cases {
        let context = format!("{name}: {case}");
        let (status, headers, answer) = t
            .scim
            .patch(&format!("/Users/{id}"), &patch_body(operations))
            .await;
        assert_eq!(status, StatusCode::OK, "{context}: {answer}");
        assert_eq!(content_type(&headers), Some(SCIM_MEDIA_TYPE), "{context}");
        assert_eq!(answer["id"], id.as_str(), "{context}: {answer}");
        assert_eq!(answer["active"], active, "{context}: {answer}");
        assert_eq!(answer["name"]["givenName"], given, "{context}: {answer}");
        assert_eq!(
            t.user(&id),
            Some(UserState::new(
                user_name,
                given,
                "Newton-Smythe",
                user_name,
                active
            )),
            "{context}: upstream"
        );
    }

    // Okta still finds the deactivated user by userName (to reactivate it later).
    let reply = t.scim.get(&lookup).await;
    let resources = assert_list(&format!("{name}: lookup of the deactivated user"), &reply);
    assert_eq!(ids(&resources), vec![id.clone()], "{name}: {}", reply.2);
    assert_eq!(resources[0]["active"], false, "{name}: {}", reply.2);

    // Delete, then it is gone.
    let (status, _, body) = t.scim.delete(&format!("/Users/{id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{name}: DELETE: {body}");
    assert_eq!(body, Value::Null, "{name}: a 204 has no body");
    assert_eq!(t.user(&id), None, "{name}: deleted upstream");
    assert_eq!(t.live_users(), before, "{name}: back to where it started");
    let (status, headers, body) = t.scim.get(&format!("/Users/{id}")).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "{name}: GET after DELETE: {body}"
    );
    assert_eq!(content_type(&headers), Some(SCIM_MEDIA_TYPE), "{name}");
    assert_scim_error(&format!("{name}: GET after DELETE"), &body, 404, None);
    assert!(
        body["detail"].as_str().is_some_and(|d| d.contains(&id)),
        "{name}: the detail names the id: {body}"
    );
    let reply = t.scim.get(&lookup).await;
    assert_list(&format!("{name}: lookup after DELETE"), &reply);
    assert_eq!(reply.2["totalResults"], 0, "{name}: {}", reply.2);
    id
}

/// Okta's import: 250 users, `count=100`, every page and windows that start inside an
/// upstream page. The upstream holds exactly these users.
async fn import_flow(t: &Target) {
    let name = t.name;
    let all = t.seed_users(250);
    assert_eq!(t.live_users(), 250, "{name}");
    // (query, expected slice of the upstream order)
    let cases = [
        ("startIndex=1&count=100", 0..100),
        ("startIndex=101&count=100", 100..200),
        ("startIndex=201&count=100", 200..250),
        ("startIndex=50&count=100", 49..149),
        ("startIndex=150&count=30", 149..179),
        ("startIndex=240&count=100", 239..250),
        ("startIndex=1&count=0", 0..0),
        ("startIndex=300&count=10", 250..250),
    ];
    for (query, range) in cases {
        let path = format!("/Users?{query}");
        let context = format!("{name}: {path}");
        let reply = t.scim.get(&path).await;
        let resources = assert_list(&context, &reply);
        assert_eq!(reply.2["totalResults"], 250, "{context}: {}", reply.2);
        assert_eq!(ids(&resources), all[range].to_vec(), "{context}");
    }
    // Okta's loop: startIndex 1, 101, 201 until past totalResults; every user once.
    let mut seen = Vec::new();
    let mut start_index = 1;
    loop {
        let path = format!("/Users?startIndex={start_index}&count=100");
        let reply = t.scim.get(&path).await;
        seen.extend(ids(&assert_list(&format!("{name}: {path}"), &reply)));
        let total = reply.2["totalResults"].as_u64().expect("totalResults");
        start_index += 100;
        if start_index > total {
            break;
        }
    }
    assert_eq!(seen, all, "{name}: no gaps, no duplicates, upstream order");
}

/// Okta's group push: existence check, create without members, add two, remove one by
/// filter together with an add, replace all, rename with the no-path replace, PUT, DELETE.
/// Returns the SCIM id of the group it created and deleted.
async fn group_push_flow(t: &Target) -> String {
    let name = t.name;
    let users = t.seed_users(4);
    let (a, b, c, d) = (&users[0], &users[1], &users[2], &users[3]);
    let exists = format!("/Groups?{}", filter_query("displayName eq \"Engineering\""));

    let reply = t.scim.get(&exists).await;
    assert_list(&format!("{name}: group existence check"), &reply);
    assert_eq!(reply.2["totalResults"], 0, "{name}: {}", reply.2);

    // Create with no members.
    let (status, headers, group) = t
        .scim
        .post("/Groups", &group_body("Engineering", &[]))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{name}: {group}");
    let id = string_id(name, &group);
    let location = headers
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("{name}: Location header"));
    assert_eq!(location, t.scim.url(&format!("/Groups/{id}")), "{name}");
    assert_eq!(group["meta"]["location"], location, "{name}: {group}");
    assert_eq!(group["displayName"], "Engineering", "{name}: {group}");
    assert!(member_set(name, &group).is_empty(), "{name}: {group}");
    assert_eq!(
        t.group(&id),
        Some(group_state("Engineering", &[])),
        "{name}: upstream after create"
    );

    let reply = t.scim.get(&exists).await;
    let found = assert_list(
        &format!("{name}: group existence check after create"),
        &reply,
    );
    assert_eq!(ids(&found), vec![id.clone()], "{name}: {}", reply.2);

    let gpath = format!("/Groups/{id}");
    // (step, operations, upstream group afterwards)
    let steps = [
        (
            "add two members",
            json!([{"op": "add", "path": "members", "value": [
                {"value": a, "display": "first"}, {"value": b}
            ]}]),
            group_state("Engineering", &[a, b]),
        ),
        (
            "remove by filter together with an add",
            json!([
                {"op": "remove", "path": format!("members[value eq \"{a}\"]")},
                {"op": "add", "path": "members", "value": [{"value": c}]}
            ]),
            group_state("Engineering", &[b, c]),
        ),
        (
            "replace all members",
            json!([{"op": "replace", "path": "members", "value": [{"value": a}, {"value": d}]}]),
            group_state("Engineering", &[a, d]),
        ),
        (
            "rename with the no-path replace Okta sends",
            json!([{"op": "replace", "value": {"id": id, "displayName": "Engineering Team"}}]),
            group_state("Engineering Team", &[a, d]),
        ),
    ];
    for (step, operations, want) in steps {
        let context = format!("{name}: {step}");
        let reply = t.scim.patch(&gpath, &patch_body(operations)).await;
        assert_no_content(&context, &reply);
        assert_eq!(t.group(&id), Some(want), "{context}: upstream");
    }

    let (status, _, group) = t.scim.get(&gpath).await;
    assert_eq!(status, StatusCode::OK, "{name}: {group}");
    assert_eq!(group["displayName"], "Engineering Team", "{name}: {group}");
    assert_eq!(
        member_set(name, &group),
        [a.clone(), d.clone()].into(),
        "{name}: {group}"
    );
    for m in group["members"].as_array().expect("members") {
        let value = m["value"].as_str().unwrap_or_default();
        assert_eq!(
            m["$ref"],
            t.scim.url(&format!("/Users/{value}")),
            "{name}: {m}"
        );
    }

    // PUT: the name and the whole membership.
    let mut body = group_body("Platform", &[c, b]);
    body["id"] = json!(id);
    let (status, _, group) = t.scim.put(&gpath, &body).await;
    assert_eq!(status, StatusCode::OK, "{name}: PUT: {group}");
    assert_eq!(group["displayName"], "Platform", "{name}: {group}");
    assert_eq!(
        member_set(name, &group),
        [b.clone(), c.clone()].into(),
        "{name}: {group}"
    );
    assert_eq!(
        t.group(&id),
        Some(group_state("Platform", &[b, c])),
        "{name}: upstream after PUT"
    );

    // Delete, then it is gone.
    let reply = t.scim.delete(&gpath).await;
    assert_no_content(&format!("{name}: DELETE"), &reply);
    assert_eq!(t.group(&id), None, "{name}: deleted upstream");
    let (status, _, body) = t.scim.get(&gpath).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{name}: {body}");
    assert_scim_error(&format!("{name}: GET after DELETE"), &body, 404, None);
    // The users themselves are untouched.
    for u in &users {
        assert!(t.user(u).is_some(), "{name}: user {u} still there");
    }
    id
}

/// Requests to `path` with `method`, in order.
fn calls<'a>(requests: &'a [Recorded], method: &str, path: &str) -> Vec<&'a Recorded> {
    requests
        .iter()
        .filter(|r| r.method == method && r.path == path)
        .collect()
}

// ---------------------------------------------------------------------------------------
// Blacksmith: the shipped mapping through the same flows.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn blacksmith_okta_user_flow() {
    let t = Target::on_blacksmith().await;
    okta_user_flow(&t).await;
}

#[tokio::test]
async fn blacksmith_group_push_flow() {
    let t = Target::on_blacksmith().await;
    group_push_flow(&t).await;
}

#[tokio::test]
async fn blacksmith_import_paging() {
    let t = Target::on_blacksmith().await;
    import_flow(&t).await;
}

// ---------------------------------------------------------------------------------------
// Acme Directory.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn acme_okta_user_flow() {
    let t = Target::on_acme().await;
    let id = okta_user_flow(&t).await;
    let requests = t.acme().requests();
    let user_path = format!("{}/users/{id}", acme::BASE);

    // Bare bodies, and `active` is a field write in the update: no action endpoints.
    let creates = calls(&requests, "POST", &format!("{}/users", acme::BASE));
    assert_eq!(
        creates[0].body,
        json!({"login": "isaac.newton@example.com", "givenName": "Isaac",
               "familyName": "Newton", "email": "isaac.newton@example.com", "enabled": true}),
        "the create body is bare and carries only mapped fields"
    );
    let patches = calls(&requests, "PATCH", &user_path);
    assert!(
        patches
            .iter()
            .any(|p| p.body == json!({"enabled": false}) && p.status == 200),
        "deactivation is the field write {{\"enabled\": false}}: {patches:?}"
    );
    assert!(
        requests
            .iter()
            .all(|r| !r.path.ends_with("/deactivate") && !r.path.ends_with("/reactivate")),
        "no action endpoints"
    );
    // A hard delete.
    assert_eq!(calls(&requests, "DELETE", &user_path).len(), 1);

    // The 409 detail is Acme's own message; ids that are not UUIDs never reach Acme.
    let mut dup = okta_create_body("x@example.com", "X", "Y", "00u");
    let (status, _, _) = t.scim.post("/Users", &dup).await;
    assert_eq!(status, StatusCode::CREATED);
    dup["emails"][0]["value"] = json!("other@example.com");
    let (status, _, error) = t.scim.post("/Users", &dup).await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    assert!(
        error["detail"]
            .as_str()
            .is_some_and(|d| d.contains("already taken")),
        "{error}"
    );
    let before = t.acme().requests().len();
    for bad in ["emp_101", "42", "not-a-uuid"] {
        let (status, _, body) = t.scim.get(&format!("/Users/{bad}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{bad}: {body}");
    }
    assert_eq!(t.acme().requests().len(), before, "no upstream call");
}

#[tokio::test]
async fn acme_group_push_flow() {
    let t = Target::on_acme().await;
    let id = group_push_flow(&t).await;
    let requests = t.acme().requests();
    let group_path = format!("{}/groups/{id}", acme::BASE);
    // Membership is read-modify-write of the group: no member endpoints exist, and every
    // write of the group was conditional on the version read.
    let puts = calls(&requests, "PUT", &group_path);
    assert!(puts.len() >= 5, "one PUT per change: {puts:?}");
    for put in &puts {
        assert!(
            put.if_match.is_some(),
            "every group PUT carries If-Match: {put:?}"
        );
        assert_eq!(put.status, 200, "{put:?}");
        assert!(
            put.body["memberIds"].is_array() && put.body["name"].is_string(),
            "the whole group is sent: {put:?}"
        );
    }
    assert!(
        requests.iter().all(|r| !r.path.contains("/members")),
        "no member endpoints"
    );
}

#[tokio::test]
async fn acme_import_paging() {
    let t = Target::on_acme().await;
    import_flow(&t).await;
    // offset/limit, never above Acme's 100.
    let requests = t.acme().requests();
    let lists = calls(&requests, "GET", &format!("{}/users", acme::BASE));
    assert!(lists
        .iter()
        .any(|r| r.param("offset").as_deref() == Some("49")));
    for r in &lists {
        let limit: usize = r.param("limit").and_then(|l| l.parse().ok()).unwrap_or(0);
        assert!((1..=100).contains(&limit), "{r:?}");
    }
}

/// 20 concurrent PATCHes, each adding a different member to one Acme group, lose none:
/// the first reads are held so that their writes collide for certain, Acme answers the
/// stale ones 412, and the gateway re-reads and retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_twenty_concurrent_member_adds_lose_none() {
    let t = Target::on_acme().await;
    let acme = t.acme();
    let users = acme.seed_users(20);
    let group = acme.seed_group("Race", &[]);

    // Acme really checks If-Match: stale is 412, absent is 428.
    let direct = acme_direct(&t);
    for (if_match, want) in [(Some("0"), 412), (None, 428)] {
        let mut request = direct
            .client
            .put(format!("{}/groups/{group}", direct.base))
            .bearer_auth(upstreams::SERVICE_TOKEN)
            .json(&json!({"name": "Race", "memberIds": []}));
        if let Some(v) = if_match {
            request = request.header("If-Match", v);
        }
        let status = request.send().await.expect("acme answers").status();
        assert_eq!(status.as_u16(), want, "If-Match {if_match:?}");
    }
    let failures_before = acme.precondition_failures();
    assert_eq!(acme.group(&group).expect("group").version, 1);

    acme.hold_group_reads(5);
    let mark = acme.requests().len();
    let patches: Vec<_> = users
        .iter()
        .map(|user| {
            let scim = t.scim.clone();
            let path = format!("/Groups/{group}");
            let body =
                patch_body(json!([{"op": "add", "path": "members", "value": [{"value": user}]}]));
            tokio::spawn(async move { scim.patch(&path, &body).await })
        })
        .collect();
    for (user, patch) in users.iter().zip(patches) {
        let reply = patch.await.expect("PATCH task");
        assert_no_content(&format!("adding {user}"), &reply);
    }

    let stored = acme.group(&group).expect("group");
    assert_eq!(
        stored.member_ids.iter().collect::<BTreeSet<_>>(),
        users.iter().collect::<BTreeSet<_>>(),
        "every member added, none lost"
    );
    assert_eq!(stored.member_ids.len(), 20, "no member twice");
    assert_eq!(stored.version, 21, "exactly one successful write per PATCH");
    let conflicts = acme.precondition_failures() - failures_before;
    assert!(conflicts >= 1, "the held reads made writes collide");
    let requests = acme.requests();
    let puts: Vec<&Recorded> = requests[mark..]
        .iter()
        .filter(|r| r.method == "PUT")
        .collect();
    assert_eq!(puts.len(), 20 + conflicts, "one PUT per attempt");
    assert!(
        puts.iter().all(|p| p.if_match.is_some()),
        "every write was conditional"
    );
}

/// A rename is a whole-group PUT too (name AND memberIds): racing member adds, it must be
/// as conditional as they are, or it writes back the member list it read and erases theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_a_rename_racing_member_adds_loses_nothing() {
    let t = Target::on_acme().await;
    let acme = t.acme();
    let users = acme.seed_users(10);
    let group = acme.seed_group("Race", &[]);
    acme.hold_group_reads(4);
    let path = format!("/Groups/{group}");
    let mut bodies: Vec<(String, Value)> = users
        .iter()
        .map(|u| {
            (
                format!("adding {u}"),
                patch_body(json!([{"op": "add", "path": "members", "value": [{"value": u}]}])),
            )
        })
        .collect();
    bodies.insert(
        2,
        (
            "rename".to_owned(),
            patch_body(json!([{"op": "replace", "value": {"id": group, "displayName": "Raced"}}])),
        ),
    );
    let tasks: Vec<_> = bodies
        .into_iter()
        .map(|(what, body)| {
            let scim = t.scim.clone();
            let path = path.clone();
            tokio::spawn(async move { (what, scim.patch(&path, &body).await) })
        })
        .collect();
    for task in tasks {
        let (what, reply) = task.await.expect("PATCH task");
        assert_no_content(&what, &reply);
    }
    let stored = acme.group(&group).expect("group");
    assert_eq!(stored.name, "Raced");
    assert_eq!(
        stored.member_ids.iter().collect::<BTreeSet<_>>(),
        users.iter().collect::<BTreeSet<_>>(),
        "no member lost to the rename"
    );
}

/// A plain HTTP client for calling Acme itself (not through the gateway).
struct Direct {
    base: String,
    client: reqwest::Client,
}

fn acme_direct(t: &Target) -> Direct {
    Direct {
        base: format!("http://{}{}", t.acme().addr(), acme::BASE),
        client: reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client"),
    }
}

// ---------------------------------------------------------------------------------------
// Beacon HR.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn beacon_okta_user_flow() {
    let t = Target::on_beacon().await;
    let id = okta_user_flow(&t).await;
    let requests = t.beacon().requests();
    let employee_path = format!("{}/employees/{id}", beacon::BASE);

    // Soft delete: the employee is still stored, marked deleted, and no DELETE was sent.
    let stored = t.beacon().employee(&id).expect("still stored");
    assert!(stored.deleted, "{stored:?}");
    let patches = calls(&requests, "PATCH", &employee_path);
    assert_eq!(patches.len(), 1, "PATCH is only the delete: {patches:?}");
    assert_eq!(patches[0].body, json!({"deleted": true}));
    assert!(calls(&requests, "DELETE", &employee_path).is_empty());

    // Updates are whole-object PUTs, every one accepted.
    let puts = calls(&requests, "PUT", &employee_path);
    assert!(
        puts.len() >= 5,
        "PUT, then one per changing PATCH: {puts:?}"
    );
    for put in &puts {
        assert_eq!(put.status, 200, "{put:?}");
        for field in [
            "/username",
            "/name/first",
            "/name/last",
            "/work_email",
            "/status",
        ] {
            assert!(put.body.pointer(field).is_some(), "{field} in {put:?}");
        }
    }
    // The work email was looked up before the create (Beacon does not keep it unique).
    let employees = format!("{}/employees", beacon::BASE);
    let first_post = requests
        .iter()
        .position(|r| r.method == "POST" && r.path == employees)
        .expect("a create");
    assert!(
        requests[..first_post].iter().any(|r| r.method == "GET"
            && r.path == employees
            && r.param("work_email").as_deref() == Some("isaac.newton@example.com")),
        "uniqueness lookup before the create"
    );
    // Never listed again.
    let reply = t.scim.get("/Users").await;
    let listed = assert_list("list after delete", &reply);
    assert!(!ids(&listed).contains(&id), "{}", reply.2);
}

#[tokio::test]
async fn beacon_group_push_flow() {
    let t = Target::on_beacon().await;
    let id = group_push_flow(&t).await;
    let requests = t.beacon().requests();
    let members = format!("{}/teams/{id}/members/", beacon::BASE);
    // One call per member change, on Beacon's member endpoints; no bulk call exists.
    let member_writes = requests
        .iter()
        .filter(|r| r.method != "GET" && r.path.starts_with(&members))
        .count();
    assert_eq!(
        member_writes,
        2 + 2 + 4 + 4,
        "add 2; remove 1 + add 1; replace (b, c) by (a, d); PUT (a, d) to (b, c)"
    );
}

#[tokio::test]
async fn beacon_import_paging() {
    let t = Target::on_beacon().await;
    import_flow(&t).await;
    // No totals: the gateway followed cursors to the end.
    let requests = t.beacon().requests();
    let lists = calls(&requests, "GET", &format!("{}/employees", beacon::BASE));
    assert!(lists.iter().any(|r| r.param("cursor").is_some()));
    assert!(lists.iter().all(|r| r.param("offset").is_none()));
}

/// Beacon says "duplicate username" with a 400, and does not keep work emails unique at all:
/// the mapping turns the first into a 409 and enforces the second by a lookup.
#[tokio::test]
async fn beacon_uniqueness() {
    let t = Target::on_beacon().await;
    let beacon = t.beacon();
    let (status, _, ada) = t
        .scim
        .post(
            "/Users",
            &okta_create_body("ada@example.com", "Ada", "Lovelace", "00u1"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ada}");
    let ada_id = string_id("ada", &ada);

    // (case, body, detail contains)
    let mut same_email = okta_create_body("countess@example.com", "Ada", "King", "00u2");
    same_email["emails"][0]["value"] = json!("ada@example.com");
    let mut same_username = okta_create_body("ADA@example.com", "Ada", "Byron", "00u3");
    same_username["emails"][0]["value"] = json!("byron@example.com");
    let cases = [
        ("the work email of another user", same_email, "emails"),
        (
            "a username taken in another casing",
            same_username,
            "already in use",
        ),
    ];
    for (case, body, detail) in cases {
        let (status, _, error) = t.scim.post("/Users", &body).await;
        assert_eq!(status, StatusCode::CONFLICT, "{case}: {error}");
        assert_scim_error(case, &error, 409, Some("uniqueness"));
        assert!(
            error["detail"].as_str().is_some_and(|d| d.contains(detail)),
            "{case}: {error}"
        );
    }
    assert_eq!(t.live_users(), 1, "nothing created");

    // Changing an email to one that is taken is refused too; the user keeps its own.
    let (status, _, grace) = t
        .scim
        .post(
            "/Users",
            &okta_create_body("grace@example.com", "Grace", "Hopper", "00u4"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{grace}");
    let grace_id = string_id("grace", &grace);
    let (status, _, error) = t
        .scim
        .patch(
            &format!("/Users/{grace_id}"),
            &patch_body(
                json!([{"op": "replace", "path": "emails[type eq \"work\"].value",
                                 "value": "ada@example.com"}]),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    assert_scim_error("email change", &error, 409, Some("uniqueness"));
    assert_eq!(
        t.user(&grace_id).map(|u| u.email).as_deref(),
        Some("grace@example.com")
    );
    // Changing to a free one is fine, and keeping one's own is no conflict with oneself.
    let (status, _, answer) = t
        .scim
        .patch(
            &format!("/Users/{ada_id}"),
            &patch_body(
                json!([{"op": "replace", "path": "emails[type eq \"work\"].value",
                                 "value": "ada@example.com"},
                               {"op": "replace", "path": "name.familyName", "value": "King"}]),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(t.user(&ada_id).map(|u| u.family).as_deref(), Some("King"));

    // Any other 400 stays a 400, with Beacon's detail.
    let mut blank = okta_create_body("blank@example.com", "", "Blank", "00u5");
    blank["name"]["givenName"] = json!("");
    let (status, _, error) = t.scim.post("/Users", &blank).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert_scim_error("blank first name", &error, 400, Some("invalidValue"));
    assert!(
        error["detail"]
            .as_str()
            .is_some_and(|d| d.contains("name.first")),
        "{error}"
    );

    // The API itself really accepts a duplicate work email: only the gateway checks.
    let addr = beacon.addr();
    let direct = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .post(format!("http://{addr}{}/employees", beacon::BASE))
        .bearer_auth(upstreams::SERVICE_TOKEN)
        .json(
            &json!({"username": "imposter", "name": {"first": "I", "last": "P"},
                      "work_email": "ada@example.com"}),
        )
        .send()
        .await
        .expect("beacon answers");
    assert_eq!(direct.status().as_u16(), 201);
}

// ---------------------------------------------------------------------------------------
// `scimgate check` accepts both example directories.
// ---------------------------------------------------------------------------------------

fn check(dir: &str, config: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_scimgate"))
        .args(["check", "--mappings", dir, "--config"])
        .arg(config)
        .output()
        .expect("run scimgate check");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn scimgate_check_accepts_the_examples_without_a_config() {
    for dir in [ACME_MAPPING, BEACON_MAPPING] {
        let (ok, stdout, stderr) = check(dir, Path::new("/nonexistent"));
        assert!(ok, "{dir}: check failed:\n{stderr}");
        assert!(stdout.contains("2 resource type(s)"), "{dir}: {stdout}");
    }
}

#[test]
fn scimgate_check_accepts_the_examples_with_static_keys() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\nmode = \"static\"\nstatic_keys = [{{ sha256 = \"{}\", tenant = {{}} }}]\n",
            hex::encode(scimgate::server::auth::token_hash(TOKEN))
        ),
    )
    .expect("write config");
    for dir in [ACME_MAPPING, BEACON_MAPPING] {
        let (ok, stdout, stderr) = check(dir, &config);
        assert!(ok, "{dir}: check failed:\n{stderr}");
        assert!(stdout.contains("2 resource type(s)"), "{dir}: {stdout}");
    }
}
