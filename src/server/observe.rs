//! Observability: Prometheus metrics, request ids, and the one log line per SCIM request.
//!
//! Metrics live in a small registry of atomics owned by each [`Gateway`] (no global
//! recorder, so several gateways in one process — the tests — keep separate counts). They
//! are rendered in the Prometheus text format on the admin listener only ([`admin_router`]),
//! never on the SCIM port.
//!
//! Every SCIM request runs inside a [`Scope`] held in a task-local: the request id, the
//! tenant once authenticated, and the count of upstream calls. Code deeper down (the
//! upstream client, authentication, member fan-out) reports into the current scope through
//! the free functions here ([`record_fan_out`], …) without any handler passing it along;
//! outside a request they do nothing.
//!
//! Label cardinality is bounded: resource names and upstream routes come from the mapping
//! (`Call.route` is the path *template*, never a concrete id), statuses are HTTP codes or a
//! few error words, unknown endpoints share one label, and every family caps its number of
//! series (further label sets are counted under `overflow`).
//!
//! What is never logged or labelled: tokens, the `Authorization` header, request or
//! upstream bodies, query strings (filters carry attribute values) and ids in paths.

use std::fmt::Write as _;

use hashbrown::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower::Service;
use tracing::Instrument;

use super::auth::Tenant;
use super::Gateway;

/// The header that carries the request id, in both directions and upstream.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Most series one metric family keeps; label sets beyond it are counted as `overflow`.
const MAX_SERIES: usize = 1000;

/// Latency buckets, in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Member fan-out buckets, in member calls per SCIM request.
const FAN_OUT_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

// ---- the registry ----------------------------------------------------------------------

/// A counter or a histogram for one label set.
trait Series: Send + Sync {
    fn new(buckets: &'static [f64]) -> Self;
}

/// A monotonically increasing count.
#[derive(Debug, Default)]
struct Counter(AtomicU64);

impl Series for Counter {
    fn new(_: &'static [f64]) -> Self {
        Counter::default()
    }
}

/// Observations sorted into cumulative buckets, with their sum and count.
#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    /// Non-cumulative counts per bound (cumulated when rendered).
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    /// The sum as `f64` bits.
    sum: AtomicU64,
}

impl Series for Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }
}

impl Histogram {
    fn observe(&self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|b| value <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut current = self.sum.load(Ordering::Relaxed);
        loop {
            let next = (f64::from_bits(current) + value).to_bits();
            match self.sum.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(seen) => current = seen,
            }
        }
    }
}

/// One metric name with its label names and a series per label set.
struct Family<S> {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    buckets: &'static [f64],
    series: RwLock<HashMap<Vec<String>, Arc<S>>>,
}

/// The label values of a lookup, borrowed: it hashes as the `Vec<String>` key it equals
/// (a slice hashes its length, then each string), so finding a series allocates nothing.
#[derive(Hash)]
struct LabelValues<'a, 'v>(&'a [&'v str]);

impl hashbrown::Equivalent<Vec<String>> for LabelValues<'_, '_> {
    fn equivalent(&self, key: &Vec<String>) -> bool {
        self.0.len() == key.len() && self.0.iter().zip(key).all(|(a, b)| *a == b)
    }
}

impl<S: Series> Family<S> {
    fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        buckets: &'static [f64],
    ) -> Self {
        Family {
            name,
            help,
            labels,
            buckets,
            series: RwLock::new(HashMap::new()),
        }
    }

    /// Runs `update` on the series for `values` (one per label name), created on first
    /// use. The series is used under the read lock rather than cloned out of it: a clone
    /// and drop of its `Arc` would be two more writes to a cache line every worker thread
    /// shares.
    fn with(&self, values: &[&str], update: impl FnOnce(&S)) {
        debug_assert_eq!(values.len(), self.labels.len());
        if let Some(s) = self
            .series
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&LabelValues(values))
        {
            update(s);
            return;
        }
        let key: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        let mut map = self.series.write().unwrap_or_else(|e| e.into_inner());
        let key = if map.len() >= MAX_SERIES && !map.contains_key(&key) {
            vec!["overflow".to_owned(); self.labels.len()]
        } else {
            key
        };
        update(
            map.entry(key)
                .or_insert_with(|| Arc::new(S::new(self.buckets))),
        );
    }

    /// Label sets and their series, sorted for a stable rendering.
    fn snapshot(&self) -> Vec<(Vec<String>, Arc<S>)> {
        let map = self.series.read().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> = map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    fn header(&self, out: &mut String, kind: &str) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {kind}", self.name);
    }
}

impl Family<Counter> {
    fn inc(&self, values: &[&str]) {
        self.with(values, |c| {
            c.0.fetch_add(1, Ordering::Relaxed);
        });
    }

    fn render(&self, out: &mut String) {
        self.header(out, "counter");
        for (values, series) in self.snapshot() {
            let _ = writeln!(
                out,
                "{}{} {}",
                self.name,
                label_set(self.labels, &values, None),
                series.0.load(Ordering::Relaxed)
            );
        }
    }
}

impl Family<Histogram> {
    fn observe(&self, values: &[&str], value: f64) {
        self.with(values, |h| h.observe(value));
    }

    fn render(&self, out: &mut String) {
        self.header(out, "histogram");
        for (values, h) in self.snapshot() {
            let mut cumulative = 0;
            for (bound, n) in h.bounds.iter().zip(&h.buckets) {
                cumulative += n.load(Ordering::Relaxed);
                let le = format_number(*bound);
                let _ = writeln!(
                    out,
                    "{}_bucket{} {cumulative}",
                    self.name,
                    label_set(self.labels, &values, Some(&le))
                );
            }
            let count = h.count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{}_bucket{} {count}",
                self.name,
                label_set(self.labels, &values, Some("+Inf"))
            );
            let _ = writeln!(
                out,
                "{}_sum{} {}",
                self.name,
                label_set(self.labels, &values, None),
                format_number(f64::from_bits(h.sum.load(Ordering::Relaxed)))
            );
            let _ = writeln!(
                out,
                "{}_count{} {count}",
                self.name,
                label_set(self.labels, &values, None)
            );
        }
    }
}

/// `{a="x",b="y"}` (with `le` last when given), or nothing without labels.
fn label_set(names: &[&str], values: &[String], le: Option<&str>) -> String {
    if names.is_empty() && le.is_none() {
        return String::new();
    }
    let mut pairs: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", escape_label(v)))
        .collect();
    if let Some(le) = le {
        pairs.push(format!("le=\"{le}\""));
    }
    format!("{{{}}}", pairs.join(","))
}

/// Label values escape `\`, `"` and newlines (Prometheus text format 0.0.4).
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn format_number(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Every metric the gateway keeps.
pub struct Metrics {
    scim_requests: Family<Counter>,
    scim_duration: Family<Histogram>,
    upstream_requests: Family<Counter>,
    upstream_duration: Family<Histogram>,
    fan_out: Family<Histogram>,
    auth_failures: Family<Counter>,
    introspection_cache: Family<Counter>,
    reloads: Family<Counter>,
    in_flight: AtomicI64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Metrics {
        Metrics {
            scim_requests: Family::new(
                "scimgate_scim_requests_total",
                "SCIM requests answered, by resource type, operation and HTTP status.",
                &["resource", "operation", "status"],
                &[],
            ),
            scim_duration: Family::new(
                "scimgate_scim_request_duration_seconds",
                "Time to answer a SCIM request, upstream calls included.",
                &["resource", "operation"],
                LATENCY_BUCKETS,
            ),
            upstream_requests: Family::new(
                "scimgate_upstream_requests_total",
                "Upstream calls, by mapped route (method and path template) and HTTP status, or timeout, unreachable, bad_body.",
                &["route", "status"],
                &[],
            ),
            upstream_duration: Family::new(
                "scimgate_upstream_request_duration_seconds",
                "Time of one upstream call, by mapped route.",
                &["route"],
                LATENCY_BUCKETS,
            ),
            fan_out: Family::new(
                "scimgate_member_fan_out_size",
                "Member calls made for one SCIM request that changed a group's members.",
                &[],
                FAN_OUT_BUCKETS,
            ),
            auth_failures: Family::new(
                "scimgate_auth_failures_total",
                "SCIM requests refused by authentication: missing, rejected (401) or unavailable (503).",
                &["reason"],
                &[],
            ),
            introspection_cache: Family::new(
                "scimgate_introspection_cache_total",
                "Token checks answered from the introspection cache (hit) or by an upstream call (miss).",
                &["result"],
                &[],
            ),
            reloads: Family::new(
                "scimgate_mapping_reloads_total",
                "Mapping reloads: success (swapped in) or rejected (the previous mapping keeps serving).",
                &["result"],
                &[],
            ),
            in_flight: AtomicI64::new(0),
        }
    }

    /// Counts one mapping reload (`success` or `rejected`).
    pub fn record_reload(&self, success: bool) {
        self.reloads
            .inc(&[if success { "success" } else { "rejected" }]);
    }

    /// SCIM requests being answered right now.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition; `mapping_hash` is exported as an info metric.
    pub fn render(&self, mapping_hash: &str) -> String {
        let mut out = String::new();
        self.scim_requests.render(&mut out);
        self.scim_duration.render(&mut out);
        let _ = writeln!(
            out,
            "# HELP scimgate_scim_requests_in_flight SCIM requests being answered.\n# TYPE scimgate_scim_requests_in_flight gauge\nscimgate_scim_requests_in_flight {}",
            self.in_flight()
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let _ = writeln!(
                out,
                "# HELP scimgate_runtime_workers Threads serving requests (the workers setting).\n# TYPE scimgate_runtime_workers gauge\nscimgate_runtime_workers {}",
                runtime.metrics().num_workers()
            );
        }
        self.upstream_requests.render(&mut out);
        self.upstream_duration.render(&mut out);
        self.fan_out.render(&mut out);
        self.auth_failures.render(&mut out);
        self.introspection_cache.render(&mut out);
        self.reloads.render(&mut out);
        let _ = writeln!(
            out,
            "# HELP scimgate_mapping_info The mapping set serving (hash of its files).\n# TYPE scimgate_mapping_info gauge\nscimgate_mapping_info{{hash=\"{}\"}} 1",
            escape_label(mapping_hash)
        );
        out
    }
}

/// Keeps a request counted in flight until dropped (also when the client goes away).
struct InFlight(Arc<Scope>);

impl InFlight {
    fn new(scope: Arc<Scope>) -> InFlight {
        scope.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(scope)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

// ---- the request scope -----------------------------------------------------------------

tokio::task_local! {
    static SCOPE: Arc<Scope>;
}

/// What the current SCIM request has gathered so far.
struct Scope {
    /// A valid header value by construction (see [`sane_request_id`]), so it is sent
    /// upstream and back as it is.
    request_id: HeaderValue,
    metrics: Arc<Metrics>,
    /// Set once authentication succeeded.
    tenant: OnceLock<TenantLabel>,
    upstream_calls: AtomicU32,
}

/// The tenant as logged: the key id and the tenant fields the mapping names, never the
/// token. Kept as references and written only when the log line is.
struct TenantLabel {
    tenant: Arc<Tenant>,
    mapping: Arc<crate::mapping::Mapping>,
}

impl TenantLabel {
    /// The key id, printable ASCII, at most 64 characters.
    fn key_id(&self) -> Option<String> {
        self.tenant.key_id.as_deref().map(|k| clean(k, 64))
    }

    /// The tenant fields the mapping names (scalars only), as `company_id=42,…`.
    fn fields(&self) -> String {
        self.mapping
            .tenant_fields
            .iter()
            .filter_map(|f| {
                let v = self.tenant.get(f)?;
                let text = crate::mapping::template::scalar_text(v)?;
                Some(format!("{f}={}", clean(&text, 64)))
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn with_scope<R>(f: impl FnOnce(&Scope) -> R) -> Option<R> {
    SCOPE.try_with(|s| f(s)).ok()
}

/// The current request's id, to send upstream (`None` outside a SCIM request).
pub fn request_id() -> Option<HeaderValue> {
    with_scope(|s| s.request_id.clone())
}

/// Records how many member calls one SCIM request made (the members code calls this once
/// per request that changes members).
pub fn record_fan_out(n: usize) {
    with_scope(|s| s.metrics.fan_out.observe(&[], n as f64));
}

/// Counts an authentication failure: `missing`, `rejected` or `unavailable`.
pub fn record_auth_failure(reason: &'static str) {
    with_scope(|s| s.metrics.auth_failures.inc(&[reason]));
}

/// Counts a token check answered from the introspection cache (`hit`) or not.
pub fn record_introspection_cache(hit: bool) {
    with_scope(|s| {
        s.metrics
            .introspection_cache
            .inc(&[if hit { "hit" } else { "miss" }])
    });
}

/// Remembers the authenticated tenant for the request's log line: its key id and the
/// tenant fields `mapping` names (scalars only, e.g. `company_id=42`).
pub fn set_tenant(tenant: &Arc<Tenant>, mapping: &Arc<crate::mapping::Mapping>) {
    with_scope(|s| {
        let _ = s.tenant.set(TenantLabel {
            tenant: tenant.clone(),
            mapping: mapping.clone(),
        });
    });
}

/// Counts one upstream call of the current request: `status` is the HTTP status or
/// `timeout`, `unreachable`, `bad_body`.
pub fn record_upstream(route: &str, status: &str, elapsed: Duration) {
    with_scope(|s| {
        s.upstream_calls.fetch_add(1, Ordering::Relaxed);
        s.metrics.upstream_requests.inc(&[route, status]);
        s.metrics
            .upstream_duration
            .observe(&[route], elapsed.as_secs_f64());
    });
}

/// Printable ASCII only, at most `max` characters (for values that reach a log line).
fn clean(text: &str, max: usize) -> String {
    text.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect()
}

/// An incoming request id is reused when it is printable ASCII and at most 128 characters.
pub fn sane_request_id(value: &HeaderValue) -> Option<HeaderValue> {
    let bytes = value.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 128
        && bytes.iter().all(|b| (0x20..0x7f).contains(b))
        && bytes.iter().any(|b| *b != b' ');
    ok.then(|| value.clone())
}

/// A fresh request id: 128 random bits in hex.
pub fn new_request_id() -> HeaderValue {
    use rand::Rng;
    let bytes: [u8; 16] = rand::rng().random();
    let mut text = [0u8; 32];
    // Infallible: the buffer is exactly twice the bytes' length.
    let _ = hex::encode_to_slice(bytes, &mut text);
    HeaderValue::from_bytes(&text).unwrap_or(HeaderValue::from_static("-"))
}

/// The resource and operation labels of a request, from its path and method. Resource
/// names come from the mapping (or are the discovery endpoints); anything else is
/// `unknown`, so arbitrary paths cannot create series.
fn classify(gateway: &Gateway, method: &Method, path: &str) -> (String, &'static str) {
    const UNKNOWN: (&str, &str) = ("unknown", "other");
    let base = gateway.config.base_path_trimmed();
    let Some(rest) = path.strip_prefix(base) else {
        return (UNKNOWN.0.into(), UNKNOWN.1);
    };
    if !base.is_empty() && !rest.is_empty() && !rest.starts_with('/') {
        return (UNKNOWN.0.into(), UNKNOWN.1);
    }
    // At most two segments (`/Users`, `/Users/{id}`); anything deeper is unknown.
    let mut segments = rest.trim_start_matches('/').split('/');
    let first = segments.next().unwrap_or_default();
    let second = segments.next();
    if segments.next().is_some() {
        return (UNKNOWN.0.into(), UNKNOWN.1);
    }
    let read = |single: bool| match (method, single) {
        (&Method::GET, false) => "list",
        (&Method::GET, true) => "get",
        _ => "other",
    };
    match (first, second) {
        ("ServiceProviderConfig", None) => ("ServiceProviderConfig".into(), read(true)),
        (d @ ("ResourceTypes" | "Schemas"), second) => (d.into(), read(second.is_some())),
        (endpoint, second) => {
            let endpoint = percent_encoding::percent_decode_str(endpoint).decode_utf8_lossy();
            let mapping = gateway.mapping.load();
            let Some(resource) = mapping.resource(&endpoint) else {
                return (UNKNOWN.0.into(), UNKNOWN.1);
            };
            let operation = match (method, second) {
                (&Method::POST, Some(".search")) => "search",
                (&Method::GET, None) => "list",
                (&Method::POST, None) => "create",
                (&Method::GET, Some(_)) => "get",
                (&Method::PUT, _) => "replace",
                (&Method::PATCH, _) => "patch",
                (&Method::DELETE, _) => "delete",
                _ => "other",
            };
            (resource.name.clone(), operation)
        }
    }
}

/// The outermost layer of the SCIM listener: request id in and out, the request's
/// metrics, and its one log line. `/healthz` and `/readyz` (probes, every few seconds) pass
/// through untouched.
#[derive(Clone)]
pub struct Track<S> {
    gateway: Arc<Gateway>,
    inner: S,
}

impl<S> Track<S> {
    pub fn new(gateway: Arc<Gateway>, inner: S) -> Self {
        Track { gateway, inner }
    }
}

impl<S> Service<Request> for Track<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = super::LayerFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let path = request.uri().path();
        if super::is_probe(path) {
            return Box::pin(self.inner.call(request));
        }
        let request_id = request
            .headers()
            .get(&REQUEST_ID)
            .and_then(sane_request_id)
            .unwrap_or_else(new_request_id);
        let method = request.method().clone();
        let (resource, operation) = classify(&self.gateway, &method, path);
        // One clone of the shared metrics per request, the scope's: every clone and drop
        // of that `Arc` is a write to a cache line all worker threads share.
        let scope = Arc::new(Scope {
            request_id,
            metrics: self.gateway.metrics.clone(),
            tenant: OnceLock::new(),
            upstream_calls: AtomicU32::new(0),
        });
        let in_flight = InFlight::new(scope.clone());
        let started = Instant::now();
        let span = tracing::debug_span!("scim_request", request_id = ?scope.request_id);
        // Routing happens here; the handlers run when the future is polled, in the scope.
        let answer = self.inner.call(request);
        Box::pin(async move {
            let Ok(mut response) = SCOPE.scope(scope.clone(), answer).instrument(span).await;
            drop(in_flight);
            let elapsed = started.elapsed();
            let status = response.status();
            let metrics = &scope.metrics;
            metrics
                .scim_requests
                .inc(&[&resource, operation, status.as_str()]);
            metrics
                .scim_duration
                .observe(&[&resource, operation], elapsed.as_secs_f64());
            // Only evaluated when the line is written.
            let key_id = || scope.tenant.get().and_then(TenantLabel::key_id);
            let tenant = || scope.tenant.get().map(TenantLabel::fields);
            tracing::info!(
                target: "scimgate::request",
                request_id = %scope.request_id.to_str().unwrap_or("-"),
                key_id = %key_id().as_deref().unwrap_or("-"),
                tenant = %tenant().as_deref().unwrap_or("-"),
                method = %method,
                resource = %resource,
                operation = %operation,
                status = status.as_u16(),
                upstream_calls = scope.upstream_calls.load(Ordering::Relaxed),
                latency_ms = (elapsed.as_secs_f64() * 1e6).round() / 1e3,
                "scim request"
            );
            response
                .headers_mut()
                .insert(REQUEST_ID, scope.request_id.clone());
            Ok(response)
        })
    }
}

// ---- the admin listener ----------------------------------------------------------------

/// The admin listener's router: `GET /metrics` only.
pub fn admin_router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(gateway)
}

async fn metrics(State(gateway): State<Arc<Gateway>>) -> Response {
    // The admin listener holds the gateway built at start; caches and limits are the
    // serving snapshot's.
    let gateway = gateway.current();
    let hash = gateway.mapping.load().hash.clone();
    let mut text = gateway.metrics.render(&hash);
    text.push_str(&super::limits::render_metrics(&gateway).await);
    text.push_str(&super::config_reload::render_metrics(&gateway));
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::new();
        m.scim_requests.inc(&["User", "get", "200"]);
        m.scim_requests.inc(&["User", "get", "200"]);
        m.scim_duration.observe(&["User", "get"], 0.02);
        m.scim_duration.observe(&["User", "get"], 7.0);
        m.fan_out.observe(&[], 3.0);
        m.record_reload(false);
        let text = m.render("abc");
        assert!(text.contains(
            "scimgate_scim_requests_total{resource=\"User\",operation=\"get\",status=\"200\"} 2"
        ));
        assert!(text.contains(
            "scimgate_scim_request_duration_seconds_bucket{resource=\"User\",operation=\"get\",le=\"0.025\"} 1"
        ));
        assert!(text.contains(
            "scimgate_scim_request_duration_seconds_bucket{resource=\"User\",operation=\"get\",le=\"10\"} 2"
        ));
        assert!(text.contains(
            "scimgate_scim_request_duration_seconds_bucket{resource=\"User\",operation=\"get\",le=\"+Inf\"} 2"
        ));
        assert!(text.contains(
            "scimgate_scim_request_duration_seconds_sum{resource=\"User\",operation=\"get\"} 7.02"
        ));
        assert!(text.contains("scimgate_member_fan_out_size_bucket{le=\"5\"} 1"));
        assert!(text.contains("scimgate_member_fan_out_size_count 1"));
        assert!(text.contains("scimgate_mapping_reloads_total{result=\"rejected\"} 1"));
        assert!(text.contains("scimgate_mapping_info{hash=\"abc\"} 1"));
        assert!(text.contains("scimgate_scim_requests_in_flight 0"));
    }

    #[test]
    fn series_are_capped() {
        let m = Metrics::new();
        for i in 0..MAX_SERIES + 50 {
            m.upstream_requests.inc(&[&format!("GET /r{i}"), "200"]);
        }
        let series = m.upstream_requests.snapshot();
        assert_eq!(series.len(), MAX_SERIES + 1);
        let overflow = series
            .iter()
            .find(|(k, _)| k[0] == "overflow")
            .expect("overflow series");
        assert_eq!(overflow.1 .0.load(Ordering::Relaxed), 50);
    }

    #[test]
    fn series_are_found_by_borrowed_label_values() {
        let m = Metrics::new();
        m.scim_requests.inc(&["User", "get", "200"]);
        let map = m.scim_requests.series.read().expect("lock");
        assert!(map.get(&LabelValues(&["User", "get", "200"])).is_some());
        assert!(map.get(&LabelValues(&["User", "get", "404"])).is_none());
        assert!(map.get(&LabelValues(&["User", "get"])).is_none());
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn request_ids() {
        let ok = HeaderValue::from_static("abc-123 x");
        assert_eq!(sane_request_id(&ok), Some(ok));
        let long = HeaderValue::from_str(&"a".repeat(129)).expect("header");
        assert_eq!(sane_request_id(&long), None);
        let max = HeaderValue::from_str(&"a".repeat(128)).expect("header");
        assert!(sane_request_id(&max).is_some());
        let high = HeaderValue::from_bytes(b"caf\xc3\xa9").expect("header");
        assert_eq!(sane_request_id(&high), None);
        let tab = HeaderValue::from_bytes(b"a\tb").expect("header");
        assert_eq!(sane_request_id(&tab), None);
        let fresh = new_request_id();
        assert_eq!(fresh.len(), 32);
        assert!(fresh.as_bytes().iter().all(u8::is_ascii_hexdigit));
        assert_ne!(fresh, new_request_id());
    }

    #[test]
    fn outside_a_request_the_hooks_do_nothing() {
        record_fan_out(3);
        record_auth_failure("missing");
        record_introspection_cache(true);
        record_upstream("GET /x", "200", Duration::from_millis(1));
        assert_eq!(request_id(), None);
    }
}
