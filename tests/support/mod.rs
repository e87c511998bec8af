//! Shared harness for the gateway's integration tests: a demo Blacksmith upstream and the
//! gateway, both real servers on 127.0.0.1 ports inside the test's runtime, spoken to over
//! HTTP.
//!
//! Each test builds its own [`Harness`], so tests share no state and may run in parallel.
//! Use it from a test file with `mod support;`.

#![allow(dead_code)] // each test file uses a different part of the harness

use std::net::SocketAddr;
use std::path::Path;

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use scimgate::config::{AuthMode, Config};
use scimgate::demo::{DemoUpstream, RecordedRequest};
use scimgate::mapping::Mapping;
use scimgate::server::{serve, Gateway};

/// The company every harness provisions into.
pub const COMPANY: i64 = 42;
/// The key id the test SCIM key introspects to (sent upstream as `X-Scim-Key-Id`).
pub const KEY_ID: &str = "k_test";
/// The SCIM bearer token the harness registers and sends.
pub const TOKEN: &str = "scim-test-token-0123456789";
/// The gateway's own credential towards the demo upstream.
pub const SERVICE_TOKEN: &str = "service-test-token-9876543210";
/// The upstream path of token introspection.
pub const INTROSPECT_PATH: &str = "/api/v1/scim_keys/introspect";

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
pub const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
pub const SCIM_MEDIA_TYPE: &str = "application/scim+json";

/// One answer: status, headers and the body as JSON (`Null` when the body is empty; a
/// non-JSON body is returned as a JSON string so assertions can show it).
pub type Reply = (StatusCode, HeaderMap, Value);

/// A running upstream + gateway pair.
pub struct Harness {
    /// The in-memory Blacksmith the gateway calls; inspect it directly in assertions.
    pub upstream: DemoUpstream,
    /// The gateway's listening address.
    pub addr: SocketAddr,
    /// The SCIM base URL, e.g. `http://127.0.0.1:40123/scim/v2`.
    pub base: String,
    /// The bearer token sent by the helper methods.
    pub token: String,
    pub client: reqwest::Client,
}

/// The Blacksmith mapping as shipped (`mappings/blacksmith`, cwd is the crate root).
pub fn blacksmith_mapping() -> Mapping {
    mapping_from(Path::new("mappings/blacksmith"))
}

/// A mapping directory compiled, panicking with every compile error.
pub fn mapping_from(dir: &Path) -> Mapping {
    scimgate::mapping::load_dir(dir)
        .unwrap_or_else(|e| panic!("mapping {} does not compile:\n{e}", dir.display()))
}

impl Harness {
    /// Upstream with an empty company 42 and the shipped mapping.
    pub async fn start() -> Harness {
        Self::start_with(blacksmith_mapping(), |_| {}).await
    }

    /// Upstream with the example data of `scimgate demo` (five users, two teams).
    pub async fn with_example_data() -> Harness {
        let h = Self::start().await;
        h.upstream.seed_example_data(COMPANY);
        h
    }

    /// A given mapping, and a chance to adjust the configuration before the gateway starts.
    pub async fn start_with(mapping: Mapping, adjust: impl FnOnce(&mut Config)) -> Harness {
        let upstream = DemoUpstream::new(SERVICE_TOKEN);
        upstream.add_scim_key(TOKEN, COMPANY, KEY_ID, "SCIM Provisioning");
        upstream.add_company(COMPANY);
        let upstream_addr = upstream
            .spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("demo upstream binds");

        let mut config = Config::default();
        config.upstream.url = format!("http://{upstream_addr}");
        config.upstream.token = Some(SERVICE_TOKEN.to_owned());
        config.auth.mode = AuthMode::Introspect;
        adjust(&mut config);
        let base_path = config.base_path_trimmed().to_owned();

        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("gateway binds");
        let addr = listener.local_addr().expect("gateway address");
        let gateway = Gateway::new(config, mapping).expect("gateway builds");
        tokio::spawn(async move {
            if let Err(e) = serve(gateway, listener).await {
                eprintln!("gateway stopped: {e}");
            }
        });

        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client builds");
        Harness {
            upstream,
            addr,
            base: format!("http://{addr}{base_path}"),
            token: TOKEN.to_owned(),
            client,
        }
    }

    /// `base` + `path` (`path` starts with `/`, e.g. `/Users?count=1`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The path part of the base URL (`/scim/v2`), for raw requests.
    pub fn base_path(&self) -> String {
        let after_scheme = self.base.trim_start_matches("http://");
        match after_scheme.find('/') {
            Some(i) => after_scheme[i..].to_owned(),
            None => String::new(),
        }
    }

    /// A request with the harness token and an optional JSON body.
    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Reply {
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, SCIM_MEDIA_TYPE)
                .body(serde_json::to_vec(body).expect("body serialises"));
        }
        read_reply(request.send().await.expect("gateway answers")).await
    }

    /// A request with the harness token and a body sent byte for byte (for bodies that
    /// are not JSON, or too large to build as a [`Value`] comfortably).
    pub async fn send_bytes(&self, method: Method, path: &str, body: Vec<u8>) -> Reply {
        let request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, SCIM_MEDIA_TYPE)
            .body(body);
        read_reply(request.send().await.expect("gateway answers")).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Reply {
        self.send(Method::PUT, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Reply {
        self.send(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, None).await
    }

    /// Upstream requests other than token introspection, in order.
    pub fn upstream_calls(&self) -> Vec<RecordedRequest> {
        self.upstream
            .requests()
            .into_iter()
            .filter(|r| r.path != INTROSPECT_PATH)
            .collect()
    }

    /// How many upstream requests were recorded so far; pass to [`Harness::calls_since`].
    pub fn mark(&self) -> usize {
        self.upstream.requests().len()
    }

    /// Upstream requests other than token introspection recorded after `mark`.
    pub fn calls_since(&self, mark: usize) -> Vec<RecordedRequest> {
        self.upstream
            .requests()
            .into_iter()
            .skip(mark)
            .filter(|r| r.path != INTROSPECT_PATH)
            .collect()
    }

    /// The upstream user behind a SCIM id.
    pub fn upstream_user(&self, scim_id: &str) -> Option<Value> {
        let id: i64 = scim_id
            .parse()
            .unwrap_or_else(|_| panic!("SCIM id {scim_id:?} is not a Blacksmith integer id"));
        self.upstream.user(COMPANY, id)
    }

    /// A hand-written HTTP/1.1 request over a plain TCP connection, for request targets
    /// that HTTP clients would normalise (`..`, `%2e%2e`) or refuse. `target` is sent
    /// byte for byte. `headers` are added after `Host` and `Connection: close`.
    pub async fn raw(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> RawReply {
        let mut head = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(body) = body {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut stream = TcpStream::connect(self.addr).await.expect("connects");
        stream
            .write_all(head.as_bytes())
            .await
            .expect("writes head");
        if let Some(body) = body {
            // The server may answer and close before reading all of a body it refuses.
            let _ = stream.write_all(body).await;
        }
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes).await;
        RawReply::parse(&bytes)
    }

    /// [`Harness::raw`] with the harness token.
    pub async fn raw_authed(&self, method: &str, target: &str) -> RawReply {
        let auth = format!("Bearer {}", self.token);
        self.raw(method, target, &[("Authorization", &auth)], None)
            .await
    }
}

async fn read_reply(response: reqwest::Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("body readable");
    (status, headers, body_json(&bytes))
}

fn body_json(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
    }
}

/// An answer read off a raw connection.
#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl RawReply {
    fn parse(bytes: &[u8]) -> RawReply {
        let split = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| {
                panic!(
                    "no complete HTTP answer: {:?}",
                    String::from_utf8_lossy(bytes)
                )
            });
        let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
        let mut raw_body = bytes[split + 4..].to_vec();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let chunked = headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
        if chunked {
            raw_body = dechunk(&raw_body);
        }
        RawReply {
            status,
            headers,
            body: body_json(&raw_body),
        }
    }

    /// The first value of a header (name in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            break;
        };
        if size == 0 {
            break;
        }
        let start = end + 2;
        let stop = (start + size).min(data.len());
        out.extend_from_slice(&data[start..stop]);
        data = data.get(stop + 2..).unwrap_or_default();
    }
    out
}

/// A copy of `mappings/blacksmith` in a temporary directory with `from` replaced by `to`
/// in `file` (`from` must occur exactly once), compiled. Keep the directory alive as long
/// as the mapping's files should exist.
pub fn mapping_variant(file: &str, from: &str, to: &str) -> (tempfile::TempDir, Mapping) {
    let dir = tempfile::tempdir().expect("temp dir");
    let source = Path::new("mappings/blacksmith");
    for entry in std::fs::read_dir(source).expect("mappings/blacksmith is readable") {
        let entry = entry.expect("directory entry");
        if entry.path().is_dir() {
            continue; // the fixtures under tests/ are not mapping files
        }
        let name = entry.file_name();
        let mut text = std::fs::read_to_string(entry.path()).expect("mapping file is text");
        if name.to_str() == Some(file) {
            assert_eq!(
                text.matches(from).count(),
                1,
                "{file} must contain {from:?} exactly once"
            );
            text = text.replace(from, to);
        }
        std::fs::write(dir.path().join(name), text).expect("write mapping copy");
    }
    let mapping = mapping_from(dir.path());
    (dir, mapping)
}

/// `filter=<text>` percent-encoded for a query string.
pub fn filter_query(filter: &str) -> String {
    let encoded: String = url::form_urlencoded::byte_serialize(filter.as_bytes()).collect();
    format!("filter={encoded}")
}

/// Asserts that `body` is a SCIM Error with this status (as a string), and `scim_type`
/// when given; `context` names the case in failure messages.
pub fn assert_scim_error(context: &str, body: &Value, status: u16, scim_type: Option<&str>) {
    assert_eq!(
        body["schemas"],
        serde_json::json!([ERROR_SCHEMA]),
        "{context}: error schema in {body}"
    );
    assert_eq!(
        body["status"],
        Value::String(status.to_string()),
        "{context}: status must be the string \"{status}\" in {body}"
    );
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{context}: detail in {body}"
    );
    if let Some(t) = scim_type {
        assert_eq!(body["scimType"], t, "{context}: scimType in {body}");
    }
}

/// The value of a `Content-Type` header, if any.
pub fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
}
