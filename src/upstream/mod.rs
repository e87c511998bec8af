//! The HTTP client for the upstream API: one pooled keep-alive client, URLs built only from
//! the configured origin and a mapping's path template, service credential attached here.
//! Every call carries the SCIM request's `X-Request-Id` and is counted by its mapped route
//! (the path template, never the concrete URL).

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::Value;
use url::Url;

use crate::mapping::template::{RenderError, Vars};
use crate::mapping::Call;

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
}

/// Settings the client is built from.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// `http://127.0.0.1:3000` or with a path prefix.
    pub url: String,
    pub token: Option<String>,
    pub timeout: Duration,
    pub connect_timeout: Duration,
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
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let token = match &settings.token {
            Some(t) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| {
                    anyhow::anyhow!("upstream.token has characters not allowed in a header")
                })?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        Ok(Upstream {
            client,
            base,
            prefix,
            token,
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
    pub async fn send(
        &self,
        call: &Call,
        vars: &Vars<'_>,
        query: &[(String, String)],
        body: Option<&Value>,
        headers: &[(&HeaderName, &str)],
    ) -> Result<Response, UpstreamError> {
        let url = self.url_for(call, vars, query)?;
        let mut request = self
            .client
            .request(call.method.clone(), url)
            .header(http::header::ACCEPT, "application/json");
        if let Some(token) = &self.token {
            request = request.header(http::header::AUTHORIZATION, token.clone());
        }
        for (name, value) in headers {
            if let Ok(v) = HeaderValue::from_str(value) {
                request = request.header((*name).clone(), v);
            }
        }
        if let Some(id) = crate::server::observe::request_id() {
            if let Ok(v) = HeaderValue::from_str(&id) {
                request = request.header(crate::server::observe::REQUEST_ID, v);
            }
        }
        if let Some(b) = body {
            request = request
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(b).unwrap_or_default());
        }
        let started = std::time::Instant::now();
        let received = receive(request).await;
        let status_label = match &received {
            Ok((status, _, _)) => status.as_str().to_owned(),
            Err(UpstreamError::Timeout) => "timeout".to_owned(),
            Err(UpstreamError::BadBody(_)) => "bad_body".to_owned(),
            Err(_) => "unreachable".to_owned(),
        };
        crate::server::observe::record_upstream(&call.route, &status_label, started.elapsed());
        let (status, headers, bytes) = received?;
        let (body, unparsable) = if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            (Value::Null, false)
        } else {
            match serde_json::from_slice(&bytes) {
                Ok(v) => (v, false),
                Err(_) => (Value::Null, true),
            }
        };
        tracing::debug!(route = %call.route, status = status.as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "upstream call");
        Ok(Response {
            status,
            headers,
            body,
            unparsable,
        })
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

/// Sends a prepared request and reads the whole answer (bounded).
async fn receive(
    request: reqwest::RequestBuilder,
) -> Result<(StatusCode, HeaderMap, bytes::Bytes), UpstreamError> {
    let response = request.send().await.map_err(classify)?;
    let status = response.status();
    let headers = response.headers().clone();
    if response
        .content_length()
        .is_some_and(|l| l as usize > MAX_UPSTREAM_BODY)
    {
        return Err(UpstreamError::BadBody("the answer is too large".into()));
    }
    let bytes = response.bytes().await.map_err(classify)?;
    if bytes.len() > MAX_UPSTREAM_BODY {
        return Err(UpstreamError::BadBody("the answer is too large".into()));
    }
    Ok((status, headers, bytes))
}

fn classify(e: reqwest::Error) -> UpstreamError {
    if e.is_timeout() {
        UpstreamError::Timeout
    } else if e.is_connect() {
        UpstreamError::Unreachable("connection failed".into())
    } else if e.is_body() || e.is_decode() {
        UpstreamError::BadBody("the connection closed mid-answer".into())
    } else {
        UpstreamError::Unreachable("request failed".into())
    }
}
