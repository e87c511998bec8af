//! Shared by the resilience and load tests: the gateway with its admin listener (so tests
//! read its own `/metrics`), and a fault-injecting HTTP proxy between the gateway and the
//! demo upstream that can refuse, reset, stall, truncate or answer anything, per request.
//!
//! Use it from a test file with `mod stress;`.

#![allow(dead_code)] // each test file uses a different part of it

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use scimgate::config::{AuthMode, Config, StaticKey};
use scimgate::demo::DemoUpstream;
use scimgate::server::{serve, serve_admin, Gateway};

pub const SERVICE_TOKEN: &str = "svc-stress-7d1c";
pub const STATIC_TOKEN: &str = "static-stress-token-5e2a";
pub const COMPANY: i64 = 42;
pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// The demo upstream with company 42, on a loopback port.
pub async fn start_demo() -> (DemoUpstream, String) {
    let demo = DemoUpstream::new(SERVICE_TOKEN);
    demo.add_company(COMPANY);
    let addr = demo
        .spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("the demo upstream starts");
    (demo, format!("http://{addr}"))
}

/// Static-key configuration in front of `upstream_url`: [`STATIC_TOKEN`] is company 42.
/// (Static keys keep introspection out of the upstream call counts.)
pub fn static_config(upstream_url: &str) -> Config {
    let mut config = Config::default();
    config.upstream.url = upstream_url.to_owned();
    config.upstream.token = Some(SERVICE_TOKEN.to_owned());
    config.auth.mode = AuthMode::Static;
    config.auth.static_keys = vec![StaticKey {
        sha256: hex::encode(Sha256::digest(STATIC_TOKEN.as_bytes())),
        tenant: [("company_id".to_owned(), serde_json::json!(COMPANY))]
            .into_iter()
            .collect(),
        key_id: Some("k_stress".to_owned()),
    }];
    config
}

/// A running gateway: its SCIM base URL, its admin (`/metrics`) URL, and the gateway.
pub struct Gate {
    pub gateway: Arc<Gateway>,
    pub base: String,
    pub admin: String,
    pub client: reqwest::Client,
    pub token: String,
}

/// One SCIM answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn retry_after(&self) -> Option<u64> {
        self.headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
    }

    /// Asserts a SCIM Error with this status; returns its detail.
    pub fn assert_error(&self, status: u16, context: &str) -> String {
        assert_eq!(self.status, status, "{context}: {}", self.body);
        assert_eq!(
            self.headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/scim+json"),
            "{context}: content type"
        );
        assert_eq!(
            self.body["schemas"],
            serde_json::json!([ERROR_SCHEMA]),
            "{context}: {}",
            self.body
        );
        assert_eq!(
            self.body["status"],
            Value::String(status.to_string()),
            "{context}"
        );
        let detail = self.body["detail"].as_str().unwrap_or_default().to_owned();
        assert!(!detail.is_empty(), "{context}: a detail");
        detail
    }
}

impl Gate {
    /// Starts the gateway (Blacksmith mapping) and its admin listener on loopback ports.
    pub async fn start(config: Config, token: &str) -> Gate {
        let mapping = scimgate::mapping::load_dir(Path::new("mappings/blacksmith"))
            .unwrap_or_else(|e| panic!("the Blacksmith mapping does not load: {e}"));
        let gateway = Gateway::new(config, mapping).expect("the gateway builds");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let admin_addr = admin_listener.local_addr().expect("addr");
        let g = gateway.clone();
        tokio::spawn(async move {
            let _ = serve(g, listener).await;
        });
        let g = gateway.clone();
        tokio::spawn(async move {
            let _ = serve_admin(g, admin_listener).await;
        });
        Gate {
            gateway,
            base: format!("http://{addr}/scim/v2"),
            admin: format!("http://{admin_addr}/metrics"),
            client: reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(256)
                .build()
                .expect("client"),
            token: token.to_owned(),
        }
    }

    /// A SCIM request with the gate's token.
    pub async fn send(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Answer {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(60));
        if let Some(b) = body {
            request = request
                .header("content-type", "application/scim+json")
                .body(serde_json::to_vec(b).expect("serialise"));
        }
        let response = request.send().await.expect("the gateway answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!(
                    "the gateway answered {status} with a non-JSON body: {:?}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(reqwest::Method::GET, path, None).await
    }

    /// The gateway's `/metrics` text, from its admin listener.
    pub async fn metrics(&self) -> String {
        self.client
            .get(&self.admin)
            .send()
            .await
            .expect("the admin listener answers")
            .text()
            .await
            .expect("metrics text")
    }
}

/// The value of one sample (`name` with its labels exactly as rendered, e.g.
/// `scimgate_upstream_refused_total{reason="saturated"}`), if present.
pub fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(sample)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The sum of every sample of a family whose labels contain each of `labels`.
pub fn metric_sum(text: &str, family: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(family)?;
            if !(rest.starts_with('{') || rest.starts_with(' ')) {
                return None;
            }
            if !labels.iter().all(|want| rest.contains(want)) {
                return None;
            }
            rest.rsplit(' ').next()?.parse::<f64>().ok()
        })
        .sum()
}

// ---- the fault proxy -------------------------------------------------------------------

/// What the proxy does with one request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Forward to the upstream and relay its answer.
    Pass,
    /// Answer this status with this content type and body, without forwarding.
    Answer(u16, &'static str, String),
    /// Answer with extra headers too.
    AnswerWith(u16, Vec<(&'static str, String)>, String),
    /// Close the connection at once (RST), without forwarding: the request never applied.
    Reset,
    /// Forward (so the upstream applies it), then close without answering.
    ForwardThenReset,
    /// Announce a 200 JSON body of 1000 bytes, send 20, close.
    Truncate,
    /// Wait this long, then forward.
    Stall(Duration),
    /// Forward and answer in full on a keep-alive connection, then close it a moment later
    /// (FIN): an upstream that closes idle connections.
    PassThenClose,
}

/// A rule: requests whose method and path match get `fault`, `times` times (then the rule
/// is spent), after skipping the first `skip` matches.
#[derive(Debug, Clone)]
struct Rule {
    method: &'static str,
    /// The path must contain this.
    path: String,
    /// The path must end with this (empty: anything).
    suffix: String,
    fault: Fault,
    skip: usize,
    times: Option<usize>,
}

/// One request as the proxy saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    pub path: String,
}

#[derive(Default)]
struct ProxyState {
    rules: Mutex<VecDeque<Rule>>,
    seen: Mutex<Vec<Seen>>,
    connections: AtomicUsize,
}

/// A raw HTTP/1.1 proxy to an upstream, whose faults tests script per request.
pub struct FaultProxy {
    pub addr: SocketAddr,
    upstream: String,
    state: Arc<ProxyState>,
    accept: Mutex<Option<JoinHandle<()>>>,
    client: reqwest::Client,
}

impl FaultProxy {
    /// Starts in front of `upstream` (an `http://host:port` URL).
    pub async fn start(upstream: &str) -> Arc<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let proxy = Arc::new(FaultProxy {
            addr,
            upstream: upstream.to_owned(),
            state: Arc::new(ProxyState::default()),
            accept: Mutex::new(None),
            client: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("client"),
        });
        proxy.listen(listener);
        proxy
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn listen(self: &Arc<Self>, listener: TcpListener) {
        let me = self.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                me.state.connections.fetch_add(1, Ordering::SeqCst);
                let me = me.clone();
                tokio::spawn(async move { me.connection(stream).await });
            }
        });
        *self.accept.lock().unwrap() = Some(task);
    }

    /// Stops listening: new connections are refused (the port is closed), and connections
    /// already open are closed at their next request.
    pub async fn go_down(&self) {
        let task = self.accept.lock().unwrap().take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        self.add(Rule {
            method: "",
            path: String::new(),
            suffix: String::new(),
            fault: Fault::Reset,
            skip: 0,
            times: None,
        });
    }

    /// Listens again on the same port, with no rules.
    pub async fn come_up(self: &Arc<Self>) {
        self.clear();
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("the proxy rebinds its port");
        self.listen(listener);
    }

    fn add(&self, rule: Rule) {
        self.state.rules.lock().unwrap().push_back(rule);
    }

    /// `method` requests whose path contains `path` and ends with `suffix` get `fault`
    /// (`times`: that many times, then no more; `None`: always).
    pub fn on(
        &self,
        method: &'static str,
        path: &str,
        suffix: &str,
        fault: Fault,
        times: Option<usize>,
    ) {
        self.add(Rule {
            method,
            path: path.to_owned(),
            suffix: suffix.to_owned(),
            fault,
            skip: 0,
            times,
        });
    }

    /// Like [`FaultProxy::on`], once, for the `nth` (1-based) matching request from now.
    pub fn on_nth(&self, method: &'static str, path: &str, suffix: &str, nth: usize, fault: Fault) {
        self.add(Rule {
            method,
            path: path.to_owned(),
            suffix: suffix.to_owned(),
            fault,
            skip: nth - 1,
            times: Some(1),
        });
    }

    /// Forgets every rule.
    pub fn clear(&self) {
        self.state.rules.lock().unwrap().clear();
    }

    /// Every request seen so far (method and path).
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Requests seen with this method whose path ends with `suffix` (and is not token
    /// introspection).
    pub fn count(&self, method: &str, suffix: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.method == method && s.path.ends_with(suffix))
            .count()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    pub fn clear_seen(&self) {
        self.state.seen.lock().unwrap().clear();
    }

    fn fault_for(&self, method: &str, path: &str) -> Fault {
        let mut rules = self.state.rules.lock().unwrap();
        let mut spent = None;
        let mut fault = Fault::Pass;
        for (i, rule) in rules.iter_mut().enumerate() {
            let matches = (rule.method.is_empty() || rule.method == method)
                && path.contains(&rule.path)
                && path.ends_with(&rule.suffix);
            if !matches {
                continue;
            }
            if rule.skip > 0 {
                rule.skip -= 1;
                continue;
            }
            fault = rule.fault.clone();
            if let Some(t) = &mut rule.times {
                *t -= 1;
                if *t == 0 {
                    spent = Some(i);
                }
            }
            break;
        }
        if let Some(i) = spent {
            rules.remove(i);
        }
        fault
    }

    async fn connection(&self, stream: TcpStream) {
        let mut reader = BufReader::new(stream);
        loop {
            let Some((method, target, headers, body)) = read_request(&mut reader).await else {
                return;
            };
            let path = target.split('?').next().unwrap_or_default().to_owned();
            self.state.seen.lock().unwrap().push(Seen {
                method: method.clone(),
                path: path.clone(),
            });
            let fault = self.fault_for(&method, &path);
            let close_after = matches!(fault, Fault::PassThenClose);
            let stream = reader.get_mut();
            let answer = match fault {
                Fault::Pass | Fault::PassThenClose => {
                    self.forward(&method, &target, &headers, body).await
                }
                Fault::Stall(d) => {
                    tokio::time::sleep(d).await;
                    self.forward(&method, &target, &headers, body).await
                }
                Fault::Answer(status, content_type, text) => (
                    status,
                    vec![("content-type", content_type.to_owned())],
                    text.into_bytes(),
                ),
                Fault::AnswerWith(status, extra, text) => (status, extra, text.into_bytes()),
                Fault::Reset => {
                    reset(stream);
                    return;
                }
                Fault::ForwardThenReset => {
                    let _ = self.forward(&method, &target, &headers, body).await;
                    reset(stream);
                    return;
                }
                Fault::Truncate => {
                    let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n";
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(br#"{"data": {"id": 1, "#).await;
                    let _ = stream.flush().await;
                    return;
                }
            };
            let (status, headers, body) = answer;
            let mut head = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", body.len());
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            if stream.write_all(head.as_bytes()).await.is_err()
                || stream.write_all(&body).await.is_err()
            {
                return;
            }
            if close_after {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let _ = stream.shutdown().await;
                return;
            }
        }
    }

    async fn forward(
        &self,
        method: &str,
        target: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> (u16, Vec<(&'static str, String)>, Vec<u8>) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self
            .client
            .request(method, format!("{}{target}", self.upstream));
        for (name, value) in headers {
            if !matches!(name.as_str(), "host" | "connection" | "content-length") {
                request = request.header(name.as_str(), value.as_str());
            }
        }
        let response = match request.body(body).send().await {
            Ok(r) => r,
            Err(_) => return (502, Vec::new(), Vec::new()),
        };
        let status = response.status().as_u16();
        let mut out = Vec::new();
        for name in ["content-type", "retry-after", "x-total-count", "link"] {
            if let Some(v) = response.headers().get(name).and_then(|v| v.to_str().ok()) {
                out.push((name, v.to_owned()));
            }
        }
        let bytes = response
            .bytes()
            .await
            .map(|b| b.to_vec())
            .unwrap_or_default();
        (status, out, bytes)
    }
}

/// Makes the close that follows a reset (RST) rather than an orderly FIN.
#[allow(deprecated)] // SO_LINGER blocks on drop only for a non-zero linger
fn reset(stream: &TcpStream) {
    let _ = stream.set_linger(Some(Duration::ZERO));
}

type Request = (String, String, Vec<(String, String)>, Vec<u8>);

/// Reads one HTTP/1.1 request (head and `Content-Length` body); `None` at end of stream.
async fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).await.ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.ok()?;
    Some((method, target, headers, body))
}
