//! The HTTP client for the upstream API: one pooled keep-alive client, URLs built only from
//! the configured origin and a mapping's path template, service credential attached here.

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

    /// Sends one call. `body` is the rendered body (if any); `audit` is an extra header
    /// (the SCIM key's id) sent for the upstream's audit log.
    pub async fn send(
        &self,
        call: &Call,
        vars: &Vars<'_>,
        query: &[(String, String)],
        body: Option<&Value>,
        audit: Option<(&HeaderName, &str)>,
    ) -> Result<Response, UpstreamError> {
        let url = self.url_for(call, vars, query)?;
        let mut request = self
            .client
            .request(call.method.clone(), url)
            .header(http::header::ACCEPT, "application/json");
        if let Some(token) = &self.token {
            request = request.header(http::header::AUTHORIZATION, token.clone());
        }
        if let Some((name, value)) = audit {
            if let Ok(v) = HeaderValue::from_str(value) {
                request = request.header(name.clone(), v);
            }
        }
        if let Some(b) = body {
            request = request
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(b).unwrap_or_default());
        }
        let started = std::time::Instant::now();
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
