//! Test upstreams shaped unlike Blacksmith, for `tests/generality.rs`: small in-memory REST
//! APIs served by axum on `127.0.0.1:0`, whose state a test can read (and seed) directly.
//!
//! - [`acme`]: the "Acme Directory API" (bare JSON, UUIDs, offset/limit with
//!   `X-Total-Count`, member id arrays inside groups changed by a conditional PUT).
//! - [`beacon`]: the "Beacon HR API" (cursor paging without a total, `emp_123` ids,
//!   problem+json errors, PUT-only updates, soft delete, members behind their own endpoints).
//!
//! Both record every request they receive (with its body) and insist on the gateway's
//! service credential. Use from a test file with `mod upstreams;`.

#![allow(dead_code)] // each test uses a different part of the upstreams

pub mod acme;
pub mod beacon;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::net::TcpListener;

/// The bearer token both upstreams require from the gateway (its `upstream.token`).
pub const SERVICE_TOKEN: &str = "upstream-service-token-0246813579";

/// One request as an upstream received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub method: String,
    /// The path as received (percent-encoding intact).
    pub path: String,
    /// The raw query string, without `?`.
    pub query: Option<String>,
    /// The `If-Match` header, if sent.
    pub if_match: Option<String>,
    /// The JSON body (`Null` when there was none; a JSON string when it was not JSON).
    pub body: Value,
    /// The status the upstream answered.
    pub status: u16,
}

impl Recorded {
    /// `METHOD path`, for readable assertions.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// The decoded query parameters.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(self.query.as_deref().unwrap_or_default().as_bytes())
            .into_owned()
            .collect()
    }

    /// One decoded query parameter.
    pub fn param(&self, name: &str) -> Option<String> {
        self.query_pairs()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

/// Locks a mutex, ignoring poisoning (a failed assertion in one handler must not turn
/// every later request into a second panic).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Binds `127.0.0.1:0` and serves `router` for the rest of the runtime's life.
pub async fn serve(router: axum::Router) -> SocketAddr {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("test upstream binds");
    let addr = listener.local_addr().expect("test upstream address");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            eprintln!("test upstream stopped: {e}");
        }
    });
    addr
}

/// Reads a request's body (to record it) and rebuilds the request for the handler.
pub async fn take_body(request: Request) -> (Request, Recorded) {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 1024 * 1024)
        .await
        .unwrap_or_default();
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    let recorded = Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        if_match: parts
            .headers
            .get(header::IF_MATCH)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: json,
        status: 0,
    };
    (Request::from_parts(parts, Body::from(bytes)), recorded)
}

/// Does the request carry `Authorization: Bearer SERVICE_TOKEN`?
pub fn has_service_token(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {SERVICE_TOKEN}"))
}

/// An error answer from a helper, boxed so `Result`s stay small.
#[derive(Debug)]
pub struct Fail(Box<Response>);

impl From<Response> for Fail {
    fn from(r: Response) -> Fail {
        Fail(Box::new(r))
    }
}

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        *self.0
    }
}

/// The query parameters of a request, last value wins.
pub type Params = HashMap<String, String>;

/// A random (version 4) UUID in its canonical lower-case form.
pub fn new_uuid() -> String {
    use rand::Rng;
    let mut b: [u8; 16] = rand::rng().random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Now, as RFC 3339.
pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("RFC 3339 formats")
}
