//! The HTTP client for the upstream API: one pooled keep-alive client, URLs built only from
//! the configured origin and a mapping's path template, service credential attached here.
//! Every call carries the SCIM request's `X-Request-Id` and is counted by its mapped route
//! (the path template, never the concrete URL).
//!
//! Calls go out on hyper's HTTP/1.1 connections kept in [`pool`], one origin's stack of
//! idle connections: each call's target is the base path and the rendered path, its `Host`
//! made once at start, so no call parses a URL, and no redirect layer runs (the gateway
//! follows no redirects). reqwest's URL handling and redirect layer were about 25,000
//! instructions of every call, hyper-util's general pool about 8,000 (BENCHMARKS.md).
//!
//! Every call passes through [`resilience`]: a cap on calls in flight, a circuit breaker,
//! and retries of the calls that are safe to repeat, within a retry budget and the SCIM
//! request's deadline.

mod pool;
pub mod resilience;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use serde_json::Value;
use url::Url;

use crate::mapping::template::{RenderError, Vars};
use crate::mapping::Call;
use resilience::{Attempt, Guard, Policy, Retry};

/// Upstream bodies larger than this are refused rather than buffered.
const MAX_UPSTREAM_BODY: usize = 32 * 1024 * 1024;

/// What a path may not carry unescaped (the URL standard's path percent-encode set): a
/// mapping's literal text is escaped as `Url::set_path` would; rendered ids are already
/// escaped as single segments.
const PATH: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\');

/// Idle connections are closed after this long unused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why an upstream call produced no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("the upstream is unreachable ({0})")]
    Unreachable(String),
    #[error("the upstream did not answer in time")]
    Timeout,
    #[error("the upstream answer could not be read: {0}")]
    BadBody(String),
    #[error("cannot build the upstream URL: {0}")]
    Render(#[from] RenderError),
    /// The gateway did not send the call: too many calls in flight, or the circuit breaker
    /// is open. `retry_after` is in seconds.
    #[error("{why}")]
    Unavailable { why: String, retry_after: u64 },
}

/// A received upstream answer, its body as it arrived.
#[derive(Debug)]
pub struct RawResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl RawResponse {
    /// The answer with its body parsed as JSON.
    pub fn parse(self) -> Response {
        let (body, unparsable) = if self.body.iter().all(|b| b.is_ascii_whitespace()) {
            (Value::Null, false)
        } else {
            // UTF-8 checked once for the whole text, so the parser need not check each
            // string (invalid UTF-8 is not JSON either way).
            match std::str::from_utf8(&self.body).map(serde_json::from_str) {
                Ok(Ok(v)) => (v, false),
                _ => (Value::Null, true),
            }
        };
        Response {
            status: self.status,
            headers: self.headers,
            body,
            unparsable,
        }
    }
}

/// A received upstream answer.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The parsed JSON body; `Null` when empty.
    pub body: Value,
    /// Whether a non-empty body failed to parse as JSON.
    pub unparsable: bool,
}

/// The upstream client.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// The connections to the base URL's origin, the only one calls reach.
    pool: Arc<pool::Pool>,
    base: Url,
    /// Every call's `Host` header: the origin's authority, made once.
    host: HeaderValue,
    /// The base URL's path without its trailing `/`, prefixed to every call's path.
    prefix: String,
    token: Option<HeaderValue>,
    /// Concurrency cap, breaker and retry budget, shared by every clone.
    guard: Arc<Guard>,
    /// Per-call timeout and connect timeout the client was built with.
    timeouts: (Duration, Duration),
    /// The per-call knobs (queue wait, retries, backoff); a reload may change them, while
    /// the guard keeps the cap, breaker and budget it was built with.
    policy: Policy,
}

/// Settings the client is built from.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// `http://127.0.0.1:3000` or with a path prefix.
    pub url: String,
    pub token: Option<String>,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Concurrency cap, retries and circuit breaker.
    pub policy: Policy,
}

impl Upstream {
    /// Builds the client; the URL must be absolute http(s).
    pub fn new(settings: &UpstreamSettings) -> anyhow::Result<Upstream> {
        let mut base = Url::parse(&settings.url)
            .map_err(|e| anyhow::anyhow!("upstream.url {:?}: {e}", settings.url))?;
        if !matches!(base.scheme(), "http" | "https") || base.host().is_none() {
            anyhow::bail!("upstream.url {:?} must be an http(s) URL", settings.url);
        }

        let prefix = base.path().trim_end_matches('/').to_owned();
        base.set_query(None);
        base.set_fragment(None);
        let origin: Uri = base
            .origin()
            .ascii_serialization()
            .parse()
            .map_err(|e| anyhow::anyhow!("upstream.url {:?}: {e}", settings.url))?;
        let Some(authority) = origin.authority() else {
            anyhow::bail!("upstream.url {:?} has no origin", settings.url);
        };
        let token = authorization(settings.token.as_deref(), &base)?;
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|e| anyhow::anyhow!("upstream.url {:?}: {e}", settings.url))?;
        Ok(Upstream {
            pool: pool(settings, &origin)?,
            host,
            base,
            prefix,
            token,
            guard: Arc::new(Guard::new(settings.policy.clone())),
            timeouts: (settings.timeout, settings.connect_timeout),
            policy: settings.policy.clone(),
        })
    }

    /// This upstream with what a configuration reload may change: the service token, the
    /// timeouts, the queue wait, retries and backoff. The URL, the concurrency cap, the
    /// circuit breaker and the retry budget (and their counters) stay shared with `self`;
    /// the connection pool too, unless a timeout changed (its connector holds those).
    pub fn reconfigured(&self, settings: &UpstreamSettings) -> anyhow::Result<Upstream> {
        let timeouts = (settings.timeout, settings.connect_timeout);
        Ok(Upstream {
            pool: if timeouts == self.timeouts {
                self.pool.clone()
            } else {
                pool(settings, self.pool.origin())?
            },
            base: self.base.clone(),
            host: self.host.clone(),
            prefix: self.prefix.clone(),
            token: authorization(settings.token.as_deref(), &self.base)?,
            guard: self.guard.clone(),
            timeouts,
            policy: settings.policy.clone(),
        })
    }

    /// The URI a call reaches: the pool's origin (always: only the path and query come
    /// from the mapping and the request) and [`Upstream::target_for`]. Calls send the
    /// two apart (the target in the request line, the origin as the connection and
    /// `Host`); the tests read them whole.
    #[cfg(test)]
    fn uri_for(
        &self,
        call: &Call,
        vars: &Vars<'_>,
        query: &[(String, String)],
    ) -> Result<Uri, UpstreamError> {
        let path_and_query = self.target_for(call, vars, query)?;
        let origin = self.pool.origin();
        Uri::builder()
            .scheme(origin.scheme_str().unwrap_or("http"))
            .authority(origin.authority().map_or("", |a| a.as_str()))
            .path_and_query(path_and_query)
            .build()
            .map_err(|_| UpstreamError::Render(RenderError::UnsafeSegment("path".into())))
    }

    /// A call's origin-form target, what its request line carries: the base path, the
    /// rendered path template (ids escaped as single segments), then the mapping's and the
    /// request's query parameters, form-encoded.
    fn target_for(
        &self,
        call: &Call,
        vars: &Vars<'_>,
        query: &[(String, String)],
    ) -> Result<PathAndQuery, UpstreamError> {
        let path = call.path.render_path(vars)?;
        let mut target = String::with_capacity(self.prefix.len() + path.len() + 64);
        target.extend(utf8_percent_encode(&self.prefix, PATH));
        target.extend(utf8_percent_encode(&path, PATH));
        if !call.query.is_empty() || !query.is_empty() {
            target.push('?');
            let start = target.len();
            let mut pairs = url::form_urlencoded::Serializer::for_suffix(target, start);
            for (k, v) in call.query.iter().chain(query) {
                pairs.append_pair(k, v);
            }
            target = pairs.finish();
        }
        PathAndQuery::try_from(target)
            .map_err(|_| UpstreamError::Render(RenderError::UnsafeSegment("path".into())))
    }

    /// Parses `text` (absolute, or relative to the upstream URL) and returns it only when it
    /// is on the upstream's own origin.
    pub fn resolve_same_origin(&self, text: &str) -> Option<Url> {
        let url = self.base.join(text).ok()?;
        (url.origin() == self.base.origin()).then_some(url)
    }

    /// Sends one call and parses the answer's body (see [`Upstream::send_raw`]).
    pub async fn send(
        &self,
        call: &Call,
        vars: &Vars<'_>,
        query: &[(String, String)],
        body: Option<&Value>,
        headers: &[(&HeaderName, &str)],
    ) -> Result<Response, UpstreamError> {
        self.send_raw(call, vars, query, body, headers)
            .await
            .map(RawResponse::parse)
    }

    /// Sends one call. `body` is the rendered body (if any); `headers` are extra headers
    /// (the SCIM key's id for the upstream's audit log, `If-Match` for conditional writes).
    /// Safe calls are retried on transient failures (see [`resilience::Retry`]); each
    /// attempt is counted in the metrics.
    pub async fn send_raw(
        &self,
        call: &Call,
        vars: &Vars<'_>,
        query: &[(String, String)],
        body: Option<&Value>,
        headers: &[(&HeaderName, &str)],
    ) -> Result<RawResponse, UpstreamError> {
        let uri = Uri::from(self.target_for(call, vars, query)?);
        let body = body.map(|b| Bytes::from(serde_json::to_vec(b).unwrap_or_default()));
        // A retry sends the same request again, built anew (an `http::Request` is not
        // `Clone`): most calls are sent once, and building the headers costs less than
        // keeping a copy of them for a retry that rarely comes.
        let build = || {
            let mut request = http::Request::new(Full::new(body.clone().unwrap_or_default()));
            *request.method_mut() = call.method.clone();
            *request.uri_mut() = uri.clone();
            let fixed = request.headers_mut();
            fixed.reserve(5 + headers.len());
            fixed.insert(http::header::HOST, self.host.clone());
            fixed.insert(
                http::header::ACCEPT,
                HeaderValue::from_static("application/json"),
            );
            if let Some(token) = &self.token {
                fixed.insert(http::header::AUTHORIZATION, token.clone());
            }
            for (name, value) in headers {
                if let Ok(v) = HeaderValue::from_str(value) {
                    fixed.append((*name).clone(), v);
                }
            }
            if let Some(id) = crate::server::observe::request_id() {
                fixed.insert(crate::server::observe::REQUEST_ID, id);
            }
            if body.is_some() {
                fixed.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
            }
            request
        };
        let retry = Retry::of(&call.method);
        let policy = &self.policy;
        self.guard.budget.deposit();
        let mut retries = 0;
        let received = loop {
            let (slot, ticket) = self
                .guard
                .enter_within(policy.queue_wait)
                .await
                .map_err(|r| UpstreamError::Unavailable {
                    why: r.why,
                    retry_after: r.retry_after,
                })?;
            let started = std::time::Instant::now();
            let received = match tokio::time::timeout(self.timeouts.0, self.receive(build())).await
            {
                Ok(received) => received,
                Err(_) => Err((Attempt::TimedOut, UpstreamError::Timeout)),
            };
            let attempt = match &received {
                Ok((status, _, _)) => Attempt::Answered(*status),
                Err((attempt, _)) => *attempt,
            };
            ticket.finish(attempt);
            drop(slot);
            let status_label = match &received {
                Ok((status, _, _)) => status.as_str(),
                Err((_, UpstreamError::Timeout)) => "timeout",
                Err((_, UpstreamError::BadBody(_))) => "bad_body",
                Err(_) => "unreachable",
            };
            crate::server::observe::record_upstream(&call.route, status_label, started.elapsed());
            tracing::debug!(route = %call.route, status = %status_label, elapsed_ms = started.elapsed().as_millis() as u64, "upstream call");
            if retries >= policy.retries || !retry.allows(attempt) {
                break received;
            }
            // A 503 that asks for a longer pause than retries take is passed on as it is.
            let asked = match &received {
                Ok((_, headers, _)) => retry_after_secs(headers).map(Duration::from_secs),
                Err(_) => None,
            };
            if asked.is_some_and(|a| a > resilience::MAX_BACKOFF) {
                break received;
            }
            let pause = resilience::backoff(policy.retry_backoff, retries + 1)
                .max(asked.unwrap_or_default());
            // No retry that the SCIM request's deadline would cut short.
            let fits = crate::server::limits::time_left()
                .is_none_or(|left| left > pause + Duration::from_millis(50));
            if !fits || !self.guard.budget.withdraw() {
                break received;
            }
            retries += 1;
            self.guard.retries.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(route = %call.route, status = %status_label, retry = retries, pause_ms = pause.as_millis() as u64, "retrying upstream call");
            tokio::time::sleep(pause).await;
        };
        let (status, headers, body) = received.map_err(|(_, e)| e)?;
        Ok(RawResponse {
            status,
            headers,
            body,
        })
    }

    /// The shared resilience state (concurrency, breaker, retry budget), for metrics.
    pub fn guard(&self) -> &Guard {
        &self.guard
    }
}

impl Upstream {
    /// Whether the upstream's host accepts a TCP connection within `timeout` (for
    /// `/readyz`; nothing is sent).
    pub async fn probe(&self, timeout: Duration) -> Result<(), String> {
        let host = self.base.host_str().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = self.base.port_or_known_default().unwrap_or(80);
        let origin = self.base.origin().ascii_serialization();
        let connect = async {
            let addrs = tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| format!("cannot resolve {host}: {e}"))?;
            let mut last = format!("{host} resolves to no address");
            for addr in addrs {
                match tokio::net::TcpStream::connect(addr).await {
                    Ok(_) => return Ok(()),
                    Err(e) => last = e.to_string(),
                }
            }
            Err(last)
        };
        match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("the upstream {origin} is unreachable: {e}")),
            Err(_) => Err(format!(
                "the upstream {origin} did not accept a connection within {} ms",
                timeout.as_millis()
            )),
        }
    }
}

/// How connections are made, as the URL's scheme says: plain TCP without Nagle, or HTTPS
/// verified against the Mozilla roots (webpki-roots) with rustls on *ring*.
fn connector(connect_timeout: Duration) -> anyhow::Result<HttpsConnector<HttpConnector>> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(provider)
        .map_err(|e| anyhow::anyhow!("cannot set up TLS for the upstream: {e}"))?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}

/// Makes the calling thread keep its own idle upstream connections, apart from other
/// threads': for the threads serving SCIM connections (`server::threads`), each with a
/// runtime of its own. `shard` is the thread's number from 1.
pub fn use_pool_shard(shard: usize) {
    pool::set_shard(shard);
}

/// The connection pool for `settings`. The whole-call timeout is applied per call.
fn pool(settings: &UpstreamSettings, origin: &Uri) -> anyhow::Result<Arc<pool::Pool>> {
    // Connections in use never exceed the calls in flight; idle ones are kept up to the
    // same number.
    Ok(pool::Pool::new(
        connector(settings.connect_timeout)?,
        origin.clone(),
        settings.policy.max_concurrent,
        IDLE_TIMEOUT,
    )
    .shared())
}

/// The `Authorization` value every call carries (marked sensitive, so it is never
/// printed): the service token as `Bearer`, or else the URL's `user:password` as `Basic`
/// (what reqwest made of such a URL). URIs are built from the origin, so the credentials
/// never travel in the URL itself.
fn authorization(token: Option<&str>, base: &Url) -> anyhow::Result<Option<HeaderValue>> {
    use base64::Engine as _;
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let text = match token {
        Some(t) => format!("Bearer {t}"),
        None if !base.username().is_empty() || base.password().is_some() => {
            let pair = format!(
                "{}:{}",
                decode(base.username()),
                decode(base.password().unwrap_or_default())
            );
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        }
        None => return Ok(None),
    };
    let mut v = HeaderValue::from_str(&text).map_err(|_| {
        anyhow::anyhow!("upstream.token or upstream.url has characters not allowed in a header")
    })?;
    v.set_sensitive(true);
    Ok(Some(v))
}

/// What [`Upstream::receive`] gives: the answer, or how the attempt failed and the error
/// for it.
type Received = Result<(StatusCode, HeaderMap, Bytes), (Attempt, UpstreamError)>;

impl Upstream {
    /// Sends a prepared request and reads the whole answer (bounded). The caller bounds
    /// the time.
    async fn receive(&self, request: http::Request<Full<Bytes>>) -> Received {
        let (conn, response) = self.pool.send(request).await.map_err(classify_send)?;
        let (parts, body) = response.into_parts();
        let too_large = || {
            (
                Attempt::Unusable,
                UpstreamError::BadBody("the answer is too large".into()),
            )
        };
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|l| l > MAX_UPSTREAM_BODY as u64) {
            return Err(too_large());
        }
        // A body that arrives in one piece is kept as it is, not copied.
        let bytes = match Limited::new(body, MAX_UPSTREAM_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<LengthLimitError>() => return Err(too_large()),
            Err(_) => {
                return Err((
                    Attempt::Truncated,
                    UpstreamError::BadBody("the connection closed mid-answer".into()),
                ))
            }
        };
        self.pool.put(conn);
        Ok((parts.status, parts.headers, bytes))
    }
}

/// A failure before the answer began.
fn classify_send(e: pool::SendError) -> (Attempt, UpstreamError) {
    match e {
        pool::SendError::Connect(why) => {
            // Refused, unresolvable, or not established within connect_timeout: nothing
            // was sent.
            tracing::debug!(error = %why, "upstream connection failed");
            (
                Attempt::ConnectFailed,
                UpstreamError::Unreachable("connection failed".into()),
            )
        }
        pool::SendError::Broken(e) => {
            tracing::debug!(error = %e, "upstream connection broke");
            let why =
                "the connection closed before an answer, so the call may have reached the upstream";
            (Attempt::Reset, UpstreamError::Unreachable(why.into()))
        }
    }
}

/// `Retry-After` in whole seconds, when it is a number.
fn retry_after_secs(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::template::{Allowed, Template};

    fn settings(url: &str, token: Option<&str>) -> UpstreamSettings {
        UpstreamSettings {
            url: url.to_owned(),
            token: token.map(str::to_owned),
            timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            policy: Policy::default(),
        }
    }

    fn upstream(url: &str) -> Upstream {
        Upstream::new(&settings(url, None)).expect("upstream")
    }

    fn call(path: &str, query: &[(&str, &str)]) -> Call {
        let allowed = Allowed {
            id: true,
            token: false,
            member: false,
            scim: false,
            tenant_fields: &[],
        };
        Call {
            method: http::Method::GET,
            path: Template::parse_path(path, allowed).expect("template"),
            body: None,
            query: query
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            items: None,
            total: None,
            item: None,
            route: format!("GET {path}"),
        }
    }

    #[test]
    fn uris_keep_the_origin_and_escape_what_requests_bring() {
        let owned = |q: &[(&str, &str)]| -> Vec<(String, String)> {
            q.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        type Pairs = &'static [(&'static str, &'static str)];
        // (base URL, path template, id, mapping query, request query, expected URI)
        let cases: &[(&str, &str, &str, Pairs, Pairs, &str)] = &[
            (
                "http://127.0.0.1:9",
                "/users/{id}",
                "1042",
                &[],
                &[],
                "http://127.0.0.1:9/users/1042",
            ),
            (
                "http://127.0.0.1:9/api/",
                "/users/{id}",
                "1042",
                &[],
                &[],
                "http://127.0.0.1:9/api/users/1042",
            ),
            (
                "https://up.example",
                "/users/{id}",
                "../admin",
                &[],
                &[],
                "https://up.example/users/..%2Fadmin",
            ),
            (
                "http://up",
                "/users/{id}",
                "a%2Fb",
                &[],
                &[],
                "http://up/users/a%252Fb",
            ),
            (
                "http://up",
                "/users/{id}",
                "x?y#z",
                &[],
                &[],
                "http://up/users/x%3Fy%23z",
            ),
            (
                "http://up",
                "/users/{id}",
                "//evil.example",
                &[],
                &[],
                "http://up/users/%2F%2Fevil.example",
            ),
            (
                "http://up",
                "/users/{id}",
                "é",
                &[],
                &[],
                "http://up/users/%C3%A9",
            ),
            (
                "http://up",
                "/odd path/{id}",
                "1",
                &[],
                &[],
                "http://up/odd%20path/1",
            ),
            (
                "http://up",
                "/users",
                "",
                &[("kind", "a b")],
                &[],
                "http://up/users?kind=a+b",
            ),
            (
                "http://up",
                "/users",
                "",
                &[("kind", "x")],
                &[("email", "ada@example.com"), ("page", "2")],
                "http://up/users?kind=x&email=ada%40example.com&page=2",
            ),
            (
                "http://up",
                "/users",
                "",
                &[],
                &[("q", "a&b=c")],
                "http://up/users?q=a%26b%3Dc",
            ),
        ];
        for (base, path, id, call_query, query, expected) in cases {
            let vars = Vars {
                id: (!id.is_empty()).then_some(*id),
                ..Vars::default()
            };
            let uri = upstream(base)
                .uri_for(&call(path, call_query), &vars, &owned(query))
                .expect("uri");
            assert_eq!(uri.to_string(), *expected, "{base} {path} {id:?}");
        }
    }

    #[test]
    fn url_credentials_become_basic_authorization_unless_a_token_is_set() {
        // (URL, token, expected Authorization, expected URI)
        let cases = [
            (
                "http://user:p%40ss@up/api",
                None,
                Some("Basic dXNlcjpwQHNz"),
                "http://up/api/users",
            ),
            (
                "http://user@up",
                None,
                Some("Basic dXNlcjo="),
                "http://up/users",
            ),
            (
                "http://user:pw@up",
                Some("svc"),
                Some("Bearer svc"),
                "http://up/users",
            ),
            (
                "http://up",
                Some("svc"),
                Some("Bearer svc"),
                "http://up/users",
            ),
            ("http://up", None, None, "http://up/users"),
        ];
        for (url, token, expected, uri) in cases {
            let settings = settings(url, token);
            let up = Upstream::new(&settings).expect("upstream");
            let header = up.token.as_ref().map(|v| v.to_str().expect("ascii"));
            assert_eq!(header, expected, "{url}");
            assert!(up.token.as_ref().is_none_or(HeaderValue::is_sensitive));
            let built = up
                .uri_for(&call("/users", &[]), &Vars::default(), &[])
                .expect("uri");
            assert_eq!(built.to_string(), uri, "no credentials in the URI");
            // A reload keeps the URL's credentials when no token replaces them.
            let again = up.reconfigured(&settings).expect("reconfigured");
            assert_eq!(again.token, up.token, "{url}");
        }
    }

    #[test]
    fn dot_segments_and_empty_ids_are_refused() {
        for id in ["", ".", ".."] {
            let vars = Vars {
                id: Some(id),
                ..Vars::default()
            };
            let refused = upstream("http://up").uri_for(&call("/users/{id}", &[]), &vars, &[]);
            assert!(matches!(refused, Err(UpstreamError::Render(_))), "{id:?}");
        }
    }
}
