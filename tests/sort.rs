//! `sortBy`/`sortOrder` (RFC 7644 §3.4.2.3): asked of the upstream as the mapping's `sort`
//! table says, on every list call of a request; ignored where a mapping declares no sort.
//!
//! The sorting upstream is a tiny "roster" API served here on a loopback port (Blacksmith
//! has no sort, and neither example upstream sorts): `GET /people?sort=&order=&page=&size=`,
//! ordered by `login` or `joined`, ascending (`up`) or descending (`down`), two per page.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use scimgate::config::{AuthMode, Config, StaticKey};
use scimgate::mapping::{load_sources, Source};
use scimgate::server::{serve, Gateway};
use support::{assert_scim_error, filter_query, Harness, TOKEN};

const SERVICE_TOKEN: &str = "roster-service-token";
const SEARCH: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";

/// The roster mapping: page paging of two, and a sort table with a direction parameter.
const MAPPING: &str = r#"
version = 1
[resources.User]
endpoint = "/Users"
schema = "urn:ietf:params:scim:schemas:core:2.0:User"
id = { upstream = "$.id" }
meta = { created = "$.joined" }
[resources.User.operations]
list = { method = "GET", path = "/people", items = "$.items", total = "$.total" }
get  = { method = "GET", path = "/people/{id}" }
[resources.User.pagination]
style = "page"
page_param = "page"
size_param = "size"
max_size = 2
[resources.User.filter]
unsupported = "scan"
[resources.User.attributes]
userName = { upstream = "$.login" }
"name.familyName" = { upstream = "$.family" }
[resources.User.sort]
by_param = "sort"
order_param = "order"
ascending = "up"
descending = "down"
attributes = { userName = "login", "meta.created" = "joined" }
"#;

/// (id, login, family, joined)
const PEOPLE: [(&str, &str, &str, &str); 5] = [
    ("p1", "carol", "Zed", "2026-01-03T00:00:00Z"),
    ("p2", "alice", "Young", "2026-01-05T00:00:00Z"),
    ("p3", "eve", "Xu", "2026-01-01T00:00:00Z"),
    ("p4", "bob", "Zed", "2026-01-04T00:00:00Z"),
    ("p5", "dave", "Wu", "2026-01-02T00:00:00Z"),
];

type Queries = Arc<Mutex<Vec<String>>>;

fn person(p: &(&str, &str, &str, &str)) -> Value {
    json!({"id": p.0, "login": p.1, "family": p.2, "joined": p.3})
}

/// `GET /people`: sorted as asked (unknown keys or directions are a 400), then paged.
async fn list_people(
    State(queries): State<Queries>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
    uri: axum::http::Uri,
) -> Response {
    if !authorised(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    queries
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(uri.query().unwrap_or_default().to_owned());
    let mut people: Vec<Value> = PEOPLE.iter().map(person).collect();
    if let Some(key) = q.get("sort") {
        if key != "login" && key != "joined" {
            return (StatusCode::BAD_REQUEST, "unknown sort key").into_response();
        }
        people.sort_by(|a, b| a[key].as_str().cmp(&b[key].as_str()));
    }
    match q.get("order").map(String::as_str) {
        None | Some("up") => {}
        Some("down") => people.reverse(),
        Some(_) => return (StatusCode::BAD_REQUEST, "unknown order").into_response(),
    }
    let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let size: usize = q.get("size").and_then(|s| s.parse().ok()).unwrap_or(2);
    let total = people.len();
    let items: Vec<Value> = people
        .into_iter()
        .skip((page.max(1) - 1) * size)
        .take(size)
        .collect();
    Json(json!({"items": items, "total": total})).into_response()
}

async fn get_person(headers: HeaderMap, Path(id): Path<String>) -> Response {
    if !authorised(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    match PEOPLE.iter().find(|p| p.0 == id) {
        Some(p) => Json(person(p)).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn authorised(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {SERVICE_TOKEN}"))
}

async fn bind() -> TcpListener {
    TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("binds")
}

/// The roster upstream and a gateway in front of it with `mapping`: (SCIM base URL, the
/// upstream's log of query strings).
async fn roster_gateway(mapping: &str) -> (String, Queries) {
    let queries = Queries::default();
    let app = Router::new()
        .route("/people", get(list_people))
        .route("/people/{id}", get(get_person))
        .with_state(queries.clone());
    let upstream = bind().await;
    let upstream_addr = upstream.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(upstream, app).await });

    let mut config = Config::default();
    config.upstream.url = format!("http://{upstream_addr}");
    config.upstream.token = Some(SERVICE_TOKEN.to_owned());
    config.auth.mode = AuthMode::Static;
    config.auth.static_keys = vec![StaticKey {
        sha256: hex::encode(scimgate::server::auth::token_hash(TOKEN)),
        tenant: BTreeMap::new(),
        key_id: None,
    }];
    let base_path = config.base_path_trimmed().to_owned();
    let mapping = load_sources(&[Source {
        name: "roster.toml".into(),
        text: mapping.into(),
    }])
    .unwrap_or_else(|e| panic!("the roster mapping compiles:\n{e}"));
    let listener = bind().await;
    let addr = listener.local_addr().expect("address");
    let gateway = Gateway::new(config, mapping).expect("gateway builds");
    tokio::spawn(async move { serve(gateway, listener).await });
    (format!("http://{addr}{base_path}"), queries)
}

async fn send(
    base: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let mut request = client
        .request(method, format!("{base}{path}"))
        .bearer_auth(TOKEN);
    if let Some(b) = body {
        request = request
            .header(header::CONTENT_TYPE, "application/scim+json")
            .body(b.to_string());
    }
    let response = request.send().await.expect("gateway answers");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

fn logins(list: &Value) -> Vec<&str> {
    list["Resources"]
        .as_array()
        .unwrap_or_else(|| panic!("a ListResponse: {list}"))
        .iter()
        .map(|u| u["userName"].as_str().expect("userName"))
        .collect()
}

#[tokio::test]
async fn sort_is_asked_of_the_upstream_on_every_list_call() {
    let (base, queries) = roster_gateway(MAPPING).await;
    let take = || std::mem::take(&mut *queries.lock().unwrap_or_else(PoisonError::into_inner));
    let scan_filter = filter_query("name.familyName sw \"Z\"");

    // (SCIM request, upstream queries expected in order, logins answered)
    let cases: Vec<(String, Vec<&str>, Vec<&str>)> = vec![
        (
            "/Users?sortBy=userName&count=2".into(),
            vec!["sort=login&order=up&page=1&size=2"],
            vec!["alice", "bob"],
        ),
        (
            "/Users?SORTBY=USERNAME&sortOrder=Descending&startIndex=3&count=2".into(),
            vec!["sort=login&order=down&page=2&size=2"],
            vec!["carol", "bob"],
        ),
        (
            "/Users?sortBy=urn:ietf:params:scim:schemas:core:2.0:User:meta.created&count=3".into(),
            vec![
                "sort=joined&order=up&page=1&size=2",
                "sort=joined&order=up&page=2&size=2",
            ],
            vec!["eve", "dave", "carol"],
        ),
        // A filter the upstream cannot answer: the scan pages through, sorted.
        (
            format!("/Users?{scan_filter}&sortBy=userName&sortOrder=descending"),
            vec![
                "sort=login&order=down&page=1&size=2",
                "sort=login&order=down&page=2&size=2",
                "sort=login&order=down&page=3&size=2",
            ],
            vec!["carol", "bob"],
        ),
        // A lone sortOrder is ignored: the upstream's order.
        (
            "/Users?sortOrder=descending&count=2".into(),
            vec!["page=1&size=2"],
            vec!["carol", "alice"],
        ),
    ];
    for (path, upstream, want) in cases {
        let (status, list) = send(&base, reqwest::Method::GET, &path, None).await;
        assert_eq!(status, 200, "{path}: {list}");
        assert_eq!(logins(&list), want, "{path}");
        assert_eq!(take(), upstream, "{path}");
    }

    // POST .search carries sortBy/sortOrder in the body.
    let (status, list) = send(
        &base,
        reqwest::Method::POST,
        "/Users/.search",
        Some(&json!({"schemas": [SEARCH], "sortBy": "meta.created", "sortOrder": "descending", "count": 2})),
    )
    .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(logins(&list), ["alice", "bob"]);
    assert_eq!(take(), ["sort=joined&order=down&page=1&size=2"]);

    // What cannot be honoured is a 400 invalidValue, before any upstream call.
    let refused = [
        ("/Users?sortBy=name.familyName", "userName, meta.created"),
        ("/Users?sortBy=userName&sortOrder=sideways", "sortOrder"),
        ("/Users?sortBy=user%20name", "attribute path"),
    ];
    for (path, detail) in refused {
        let (status, body) = send(&base, reqwest::Method::GET, path, None).await;
        assert_scim_error(path, &body, 400, Some("invalidValue"));
        assert_eq!(status, 400);
        let shown = body["detail"].as_str().unwrap_or_default();
        assert!(shown.contains(detail), "{path}: {shown}");
        assert!(take().is_empty(), "{path}: no upstream call");
    }
    let (status, body) = send(
        &base,
        reqwest::Method::POST,
        "/Users/.search",
        Some(&json!({"schemas": [SEARCH], "sortBy": "title"})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_scim_error("search sortBy title", &body, 400, Some("invalidValue"));

    let (_, spc) = send(&base, reqwest::Method::GET, "/ServiceProviderConfig", None).await;
    assert_eq!(spc["sort"]["supported"], true);
}

#[tokio::test]
async fn ascending_only_upstreams_refuse_descending() {
    let mapping = MAPPING.replace(
        "order_param = \"order\"\nascending = \"up\"\ndescending = \"down\"\n",
        "",
    );
    assert_ne!(mapping, MAPPING, "the direction parameter is taken out");
    let (base, queries) = roster_gateway(&mapping).await;
    let (status, list) = send(
        &base,
        reqwest::Method::GET,
        "/Users?sortBy=userName&sortOrder=ascending&count=2",
        None,
    )
    .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(logins(&list), ["alice", "bob"]);
    let (status, body) = send(
        &base,
        reqwest::Method::GET,
        "/Users?sortBy=userName&sortOrder=descending",
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_scim_error("descending", &body, 400, Some("invalidValue"));
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("ascending order only"),
        "{body}"
    );
    let sent = queries
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    assert_eq!(sent, ["sort=login&page=1&size=2"]);
}

#[tokio::test]
async fn without_a_sort_table_sort_by_is_ignored() {
    let h = Harness::with_example_data().await;
    let (_, _, spc) = h.get("/ServiceProviderConfig").await;
    assert_eq!(spc["sort"]["supported"], false);
    let (status, _, plain) = h.get("/Users").await;
    assert_eq!(status, 200);
    let mark = h.mark();
    for path in [
        "/Users?sortBy=userName",
        "/Users?sortBy=userName&sortOrder=descending",
        "/Users?sortBy=no%20such%20thing&sortOrder=sideways",
    ] {
        let (status, _, sorted) = h.get(path).await;
        assert_eq!(status, 200, "{path}: {sorted}");
        assert_eq!(
            sorted["Resources"], plain["Resources"],
            "{path}: upstream order"
        );
    }
    for call in h.calls_since(mark) {
        let query = call.query.unwrap_or_default();
        assert!(
            !query.contains("sort"),
            "nothing about sorting is sent: {query}"
        );
    }
    let (status, _, _) = h
        .post(
            "/Users/.search",
            &json!({"schemas": [SEARCH], "sortBy": "userName", "sortOrder": "descending"}),
        )
        .await;
    assert_eq!(status, 200);
}
