//! The HTTP client for the upstream API: one pooled keep-alive client, URLs built only from
//! the configured origin and a mapping's path template, service credential attached here.
//! Every call carries the SCIM request's `X-Request-Id` and is counted by its mapped route
//! (the path template, never the concrete URL).
//!
//! Every call passes through [`resilience`]: a cap on calls in flight, a circuit breaker,
//! and retries of the calls that are safe to repeat, within a retry budget and the SCIM
//! request's deadline.

pub mod resilience;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::Value;
use url::Url;

use crate::mapping::template::{RenderError, Vars};
use crate::mapping::Call;
use resilience::{Attempt, Guard, Policy, Retry};

/// Upstream bodies larger than this are refused rather than buffered.
const MAX_UPSTREAM_BODY: usize = 32 * 1024 * 1024;

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
    client: reqwest::Client,
    base: Url,
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
        Ok(Upstream {
            client: client(settings)?,
            base,
            prefix,
            token: token_header(settings.token.as_deref())?,
            guard: Arc::new(Guard::new(settings.policy.clone())),
            timeouts: (settings.timeout, settings.connect_timeout),
            policy: settings.policy.clone(),
        })
    }

    /// This upstream with what a configuration reload may change: the service token, the
    /// timeouts, the queue wait, retries and backoff. The URL, the concurrency cap, the
    /// circuit breaker and the retry budget (and their counters) stay shared with `self`;
    /// the connection pool too, unless a timeout changed (the client holds those).
    pub fn reconfigured(&self, settings: &UpstreamSettings) -> anyhow::Result<Upstream> {
        let timeouts = (settings.timeout, settings.connect_timeout);
        Ok(Upstream {
            client: if timeouts == self.timeouts {
                self.client.clone()
            } else {
                client(settings)?
            },
            base: self.base.clone(),
            prefix: self.prefix.clone(),
            token: token_header(settings.token.as_deref())?,
            guard: self.guard.clone(),
            timeouts,
            policy: settings.policy.clone(),
        })
    }

    /// The absolute URL a call would reach, without sending it (used by tests and `explain`).
    pub fn url_for(
        &self,
        call: &Call,
        vars: &Vars<'_>,
        query: &[(String, String)],
    ) -> Result<Url, UpstreamError> {
        let path = call.path.render_path(vars)?;
        let mut url = self.base.clone();
        url.set_path(&format!("{}{}", self.prefix, path));
        if !call.query.is_empty() || !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in call.query.iter().chain(query) {
                pairs.append_pair(k, v);
            }
        }
        // Belt and braces: encoded segments cannot change the origin, and this proves it.
        if url.origin() != self.base.origin() {
            return Err(UpstreamError::Render(RenderError::UnsafeSegment(
                "path".into(),
            )));
        }
        Ok(url)
    }

    /// Parses `text` (absolute, or relative to the upstream URL) and returns it only when it
    /// is on the upstream's own origin.
    pub fn resolve_same_origin(&self, text: &str) -> Option<Url> {
        let url = self.base.join(text).ok()?;
        (url.origin() == self.base.origin()).then_some(url)
    }

    /// Sends one call. `body` is the rendered body (if any); `headers` are extra headers
    /// (the SCIM key's id for the upstream's audit log, `If-Match` for conditional writes).
    /// Safe calls are retried on transient failures (see [`resilience::Retry`]); each
    /// attempt is counted in the metrics.
    pub async fn send(
        &self,
        call: &Call,
        vars: &Vars<'_>,
        query: &[(String, String)],
        body: Option<&Value>,
        headers: &[(&HeaderName, &str)],
    ) -> Result<Response, UpstreamError> {
        let url = self.url_for(call, vars, query)?;
        let body = body.map(|b| bytes::Bytes::from(serde_json::to_vec(b).unwrap_or_default()));
        let request_id = crate::server::observe::request_id();
        let build = || {
            let mut request = self
                .client
                .request(call.method.clone(), url.clone())
                .header(http::header::ACCEPT, "application/json");
            if let Some(token) = &self.token {
                request = request.header(http::header::AUTHORIZATION, token.clone());
            }
            for (name, value) in headers {
                if let Ok(v) = HeaderValue::from_str(value) {
                    request = request.header((*name).clone(), v);
                }
            }
            if let Some(id) = &request_id {
                if let Ok(v) = HeaderValue::from_str(id) {
                    request = request.header(crate::server::observe::REQUEST_ID, v);
                }
            }
            if let Some(b) = &body {
                request = request
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(b.clone());
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
            let received = receive(build()).await;
            let attempt = match &received {
                Ok((status, _, _)) => Attempt::Answered(*status),
                Err((attempt, _)) => *attempt,
            };
            ticket.finish(attempt);
            drop(slot);
            let status_label = match &received {
                Ok((status, _, _)) => status.as_str().to_owned(),
                Err((_, UpstreamError::Timeout)) => "timeout".to_owned(),
                Err((_, UpstreamError::BadBody(_))) => "bad_body".to_owned(),
                Err(_) => "unreachable".to_owned(),
            };
            crate::server::observe::record_upstream(&call.route, &status_label, started.elapsed());
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
        let (status, headers, bytes) = received.map_err(|(_, e)| e)?;
        let (body, unparsable) = if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            (Value::Null, false)
        } else {
            match serde_json::from_slice(&bytes) {
                Ok(v) => (v, false),
                Err(_) => (Value::Null, true),
            }
        };
        Ok(Response {
            status,
            headers,
            body,
            unparsable,
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

/// The pooled client for `settings`.
fn client(settings: &UpstreamSettings) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(settings.timeout)
        .connect_timeout(settings.connect_timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        // Connections in use never exceed the calls in flight; idle ones are kept up to
        // the same number.
        .pool_max_idle_per_host(settings.policy.max_concurrent)
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// The `Authorization` value carrying the service token (marked sensitive, so it is never
/// printed).
fn token_header(token: Option<&str>) -> anyhow::Result<Option<HeaderValue>> {
    let Some(t) = token else { return Ok(None) };
    let mut v = HeaderValue::from_str(&format!("Bearer {t}"))
        .map_err(|_| anyhow::anyhow!("upstream.token has characters not allowed in a header"))?;
    v.set_sensitive(true);
    Ok(Some(v))
}

/// What [`receive`] gives: the answer, or how the attempt failed and the error for it.
type Received = Result<(StatusCode, HeaderMap, bytes::Bytes), (Attempt, UpstreamError)>;

/// Sends a prepared request and reads the whole answer (bounded).
async fn receive(request: reqwest::RequestBuilder) -> Received {
    let response = request.send().await.map_err(classify_send)?;
    let status = response.status();
    let headers = response.headers().clone();
    let too_large = || {
        (
            Attempt::Unusable,
            UpstreamError::BadBody("the answer is too large".into()),
        )
    };
    if response
        .content_length()
        .is_some_and(|l| l as usize > MAX_UPSTREAM_BODY)
    {
        return Err(too_large());
    }
    let mut response = response;
    let mut bytes = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(classify_body)? {
        if bytes.len() + chunk.len() > MAX_UPSTREAM_BODY {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok((status, headers, bytes.freeze()))
}

/// A failure before the answer began.
fn classify_send(e: reqwest::Error) -> (Attempt, UpstreamError) {
    if e.is_connect() {
        // Refused, unresolvable, or not established within connect_timeout: nothing was sent.
        (
            Attempt::ConnectFailed,
            UpstreamError::Unreachable("connection failed".into()),
        )
    } else if e.is_timeout() {
        (Attempt::TimedOut, UpstreamError::Timeout)
    } else {
        (
            Attempt::Reset,
            UpstreamError::Unreachable(
                "the connection closed before an answer, so the call may have reached the upstream"
                    .into(),
            ),
        )
    }
}

/// A failure while the answer was being read.
fn classify_body(e: reqwest::Error) -> (Attempt, UpstreamError) {
    if e.is_timeout() {
        (Attempt::TimedOut, UpstreamError::Timeout)
    } else {
        (
            Attempt::Truncated,
            UpstreamError::BadBody("the connection closed mid-answer".into()),
        )
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
