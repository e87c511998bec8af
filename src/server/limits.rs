//! Inbound limits: request target and header sizes, the per-request deadline, per-tenant
//! rate limiting, and the counts a single request may carry (PATCH operations, members).
//! Each answers a SCIM error, and each is set in `[limits]`:
//!
//! | limit | key | answer |
//! |---|---|---|
//! | request target (path + query) | `url_bytes` | 414 |
//! | header names + values | `header_bytes` | 431 |
//! | body | `body_bytes` | 413 (axum's body limit, rewritten in [`super`]) |
//! | PATCH operations | `patch_operations` | 413 |
//! | distinct members named | `members_per_request` | 413 |
//! | whole request, upstream calls included | `request_timeout_ms` | 504 |
//! | requests per tenant | `rate_per_second`, `burst` | 429 + `Retry-After` |
//!
//! Filter length (4096 bytes) and depth (32 levels) are the filter parser's own limits and
//! answer 400 `invalidFilter`; JSON nesting deeper than serde_json's 128 levels is 400
//! `invalidSyntax`.
//!
//! The rate limiter keeps one token bucket per tenant (the tenant fields the mapping uses,
//! e.g. `company_id`, or the key id when it uses none) in a bounded cache: a bucket idle
//! long enough to be full again is dropped without changing anything, and at most
//! `rate_buckets` are kept.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use moka::future::Cache;
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tower::Service;

use super::auth::Tenant;
use super::Gateway;
use crate::config::Limits;
use crate::scim::ScimError;

tokio::task_local! {
    /// When the current SCIM request must have its answer.
    static DEADLINE: Instant;
}

/// Time left before the current SCIM request's deadline (`None` outside a request). The
/// upstream client uses it to skip retries that could not finish in time.
pub fn time_left() -> Option<Duration> {
    DEADLINE
        .try_with(|d| d.saturating_duration_since(Instant::now()))
        .ok()
}

/// The layer in front of the SCIM API: URL and header sizes first (before any work), the
/// body's limit for the extractors that read it, then the request runs under its deadline.
#[derive(Clone)]
pub struct Inbound<S> {
    gateway: Arc<Gateway>,
    inner: S,
}

impl<S> Inbound<S> {
    pub fn new(gateway: Arc<Gateway>, inner: S) -> Self {
        Inbound { gateway, inner }
    }
}

impl<S> Service<Request> for Inbound<S>
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
        let limits = &self.gateway.config.limits;
        if let Err(refused) = check_sizes(limits, &request) {
            return Box::pin(std::future::ready(Ok(refused.into_response())));
        }
        // The body's limit, which axum's body extractors apply as they read it.
        let mut request = request;
        DefaultBodyLimit::max(limits.body_bytes).apply(&mut request);
        let budget = Duration::from_millis(limits.request_timeout_ms);
        let deadline = Instant::now() + budget;
        // Routing happens here; the handler's own work only when the future is polled,
        // inside the deadline's scope.
        let answer = self.inner.call(request);
        Box::pin(async move {
            match DEADLINE
                .scope(deadline, tokio::time::timeout_at(deadline, answer))
                .await
            {
                Ok(answered) => answered,
                Err(_) => Ok(deadline_passed(budget)),
            }
        })
    }
}

/// The request target and headers within `[limits]`, or the SCIM error that says which is
/// too long.
fn check_sizes(limits: &Limits, request: &Request) -> Result<(), ScimError> {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if target > limits.url_bytes {
        return Err(ScimError::new(
            StatusCode::URI_TOO_LONG,
            format!(
                "the request URL is {target} bytes long; this gateway accepts at most {}",
                limits.url_bytes
            ),
        ));
    }
    // As on the wire: `name: value\r\n`.
    let headers: usize = request
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    if headers > limits.header_bytes {
        return Err(ScimError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "the request headers are {headers} bytes long; this gateway accepts at most {}",
                limits.header_bytes
            ),
        ));
    }
    Ok(())
}

fn deadline_passed(budget: Duration) -> Response {
    tracing::warn!(
        timeout_ms = budget.as_millis() as u64,
        "request deadline passed; the request was abandoned"
    );
    ScimError::new(
        StatusCode::GATEWAY_TIMEOUT,
        format!(
            "the request did not finish within {} ms; a write it made may have been applied in part, so read the resource before retrying",
            budget.as_millis()
        ),
    )
    .into_response()
}

/// 413 when a PATCH carries more operations than `limits.patch_operations`.
pub fn check_patch_operations(limits: &Limits, operations: usize) -> Result<(), ScimError> {
    if operations > limits.patch_operations {
        return Err(ScimError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the PATCH request has {operations} operations; this gateway accepts at most {} in one request",
                limits.patch_operations
            ),
        ));
    }
    Ok(())
}

/// 413 when one request names more distinct members than `limits.members_per_request`.
pub fn check_members(limits: &Limits, members: usize) -> Result<(), ScimError> {
    if members > limits.members_per_request {
        return Err(ScimError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request names {members} members; this gateway accepts at most {} in one request, so send the changes in several",
                limits.members_per_request
            ),
        ));
    }
    Ok(())
}

/// A token bucket: `tokens` as of `at`.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Per-tenant token buckets in a bounded cache.
pub struct RateLimiter {
    /// Tokens per second; 0 turns the limiter off.
    rate: f64,
    burst: f64,
    buckets: Cache<[u8; 32], Arc<Mutex<Bucket>>>,
    capacity: u64,
    /// Shared with the limiters later reloads make, so the counter never goes back.
    limited: Arc<AtomicU64>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("rate", &self.rate)
            .field("burst", &self.burst)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limiter for `limits` (`rate_per_second`, `burst`, `rate_buckets`).
    pub fn new(limits: &Limits) -> RateLimiter {
        let rate = f64::from(limits.rate_per_second);
        let burst = f64::from(limits.burst.max(1));
        // A bucket untouched this long has refilled: forgetting it changes nothing.
        let refill = if rate > 0.0 { burst / rate } else { 1.0 };
        let idle = Duration::from_secs_f64(refill.min(86_400.0)) + Duration::from_secs(1);
        RateLimiter {
            rate,
            burst,
            buckets: Cache::builder()
                .max_capacity(limits.rate_buckets)
                .time_to_idle(idle)
                .build(),
            capacity: limits.rate_buckets,
            limited: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A limiter for changed `limits`, keeping the count of refused requests. Its buckets
    /// start full: a bucket's size, refill rate and idle expiry all follow from the
    /// settings, and one extra burst per tenant at a reload is the same as at a restart.
    pub fn reconfigured(&self, limits: &Limits) -> RateLimiter {
        RateLimiter {
            limited: self.limited.clone(),
            ..RateLimiter::new(limits)
        }
    }

    /// Whether `limits` differ from this limiter's in anything it was built from.
    pub fn differs(old: &Limits, new: &Limits) -> bool {
        (old.rate_per_second, old.burst, old.rate_buckets)
            != (new.rate_per_second, new.burst, new.rate_buckets)
    }

    /// The bucket key of a tenant: its fields the mapping uses (`company_id=42`), or its
    /// key id when the mapping uses none, hashed to a fixed size.
    fn key(tenant: &Tenant, fields: &[String]) -> [u8; 32] {
        let mut hasher = Sha256::new();
        if fields.is_empty() {
            hasher.update(b"key\0");
            hasher.update(tenant.key_id.as_deref().unwrap_or_default().as_bytes());
        }
        for f in fields {
            hasher.update(f.as_bytes());
            hasher.update(b"\0");
            let value = tenant.get(f).map(|v| v.to_string()).unwrap_or_default();
            hasher.update(value.as_bytes());
            hasher.update(b"\0");
        }
        hasher.finalize().into()
    }

    /// Takes a token from the tenant's bucket, or answers 429 with the seconds until one
    /// is there.
    pub async fn admit(&self, tenant: &Tenant, fields: &[String]) -> Result<(), ScimError> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let key = Self::key(tenant, fields);
        let burst = self.burst;
        // A plain look-up first: the entry future (boxed, for the first request of a
        // tenant) is most of this future's size otherwise.
        let bucket = match self.buckets.get(&key).await {
            Some(bucket) => bucket,
            None => {
                Box::pin(self.buckets.get_with(key, async move {
                    Arc::new(Mutex::new(Bucket {
                        tokens: burst,
                        at: Instant::now(),
                    }))
                }))
                .await
            }
        };
        let wait = {
            let mut b = bucket.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let refilled = b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * self.rate;
            b.tokens = refilled.min(self.burst);
            b.at = now;
            if b.tokens >= 1.0 {
                b.tokens -= 1.0;
                None
            } else {
                Some((1.0 - b.tokens) / self.rate)
            }
        };
        match wait {
            None => Ok(()),
            Some(secs) => {
                self.limited.fetch_add(1, Ordering::Relaxed);
                let mut err = ScimError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "this tenant is over its rate limit of {} requests per second (bursts of {}); retry later",
                        self.rate, self.burst
                    ),
                );
                err.retry_after = Some((secs.ceil() as u64).max(1));
                Err(err)
            }
        }
    }

    /// Buckets held now.
    pub async fn buckets(&self) -> u64 {
        self.buckets.run_pending_tasks().await;
        self.buckets.entry_count()
    }

    /// Requests refused so far.
    pub fn limited(&self) -> u64 {
        self.limited.load(Ordering::Relaxed)
    }
}

/// The metrics of the limits, the upstream guard and the caches, in the Prometheus text
/// format (appended to `/metrics` on the admin listener): each bounded structure shows its
/// size beside its bound.
pub async fn render_metrics(gateway: &Gateway) -> String {
    use std::fmt::Write as _;
    let guard = gateway.upstream.guard();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    metric(
        "scimgate_upstream_in_flight",
        "gauge",
        "Upstream calls in flight now.",
        &[("", guard.in_flight() as u64)],
    );
    metric(
        "scimgate_upstream_in_flight_peak",
        "gauge",
        "The most upstream calls ever in flight at once (never above upstream.max_concurrent).",
        &[("", guard.peak_in_flight() as u64)],
    );
    metric(
        "scimgate_upstream_in_flight_limit",
        "gauge",
        "upstream.max_concurrent: the cap on upstream calls (and pooled connections in use).",
        &[("", guard.policy.max_concurrent as u64)],
    );
    metric(
        "scimgate_upstream_retries_total",
        "counter",
        "Upstream calls repeated after a transient failure.",
        &[("", guard.retries.load(Ordering::Relaxed))],
    );
    metric(
        "scimgate_upstream_retry_budget_exhausted_total",
        "counter",
        "Retries not made because the retry budget was empty.",
        &[("", guard.budget.times_exhausted())],
    );
    metric(
        "scimgate_upstream_refused_total",
        "counter",
        "Upstream calls not made: saturated (no slot within upstream.queue_wait_ms) or circuit_open.",
        &[
            (
                "{reason=\"saturated\"}",
                guard.rejected_saturated.load(Ordering::Relaxed),
            ),
            (
                "{reason=\"circuit_open\"}",
                guard.rejected_open.load(Ordering::Relaxed),
            ),
        ],
    );
    metric(
        "scimgate_upstream_circuit_open",
        "gauge",
        "1 while the upstream circuit breaker fails calls fast (open or half-open), else 0.",
        &[("", u64::from(guard.breaker.is_open()))],
    );
    metric(
        "scimgate_upstream_circuit_opened_total",
        "counter",
        "Times the upstream circuit breaker opened.",
        &[("", guard.breaker.times_opened())],
    );
    metric(
        "scimgate_introspection_cache_entries",
        "gauge",
        "Tokens whose introspection answer is cached now.",
        &[("", gateway.auth.cached_entries().await)],
    );
    metric(
        "scimgate_introspection_cache_capacity",
        "gauge",
        "auth.cache_capacity: the most tokens the introspection cache holds.",
        &[("", gateway.config.auth.cache_capacity)],
    );
    metric(
        "scimgate_rate_limit_buckets",
        "gauge",
        "Tenants with a rate-limit bucket now.",
        &[("", gateway.rate_limiter.buckets().await)],
    );
    metric(
        "scimgate_rate_limit_buckets_capacity",
        "gauge",
        "limits.rate_buckets: the most rate-limit buckets kept.",
        &[("", gateway.rate_limiter.capacity)],
    );
    metric(
        "scimgate_rate_limited_total",
        "counter",
        "SCIM requests answered 429 by the per-tenant rate limit.",
        &[("", gateway.rate_limiter.limited())],
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use serde_json::json;

    fn tenant(company: i64) -> Tenant {
        Tenant::new(
            [("company_id".to_owned(), json!(company))]
                .into_iter()
                .collect(),
            Some(format!("k_{company}")),
        )
    }

    #[tokio::test]
    async fn buckets_allow_the_burst_then_the_rate_per_tenant() {
        let mut limits = Config::default().limits;
        limits.rate_per_second = 10;
        limits.burst = 5;
        let limiter = RateLimiter::new(&limits);
        let fields = vec!["company_id".to_owned()];
        for _ in 0..5 {
            limiter.admit(&tenant(1), &fields).await.expect("burst");
        }
        let refused = limiter.admit(&tenant(1), &fields).await.expect_err("empty");
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.retry_after, Some(1));
        // Another tenant has its own bucket.
        limiter.admit(&tenant(2), &fields).await.expect("tenant 2");
        tokio::time::sleep(Duration::from_millis(250)).await;
        // 2.5 tokens refilled (a little more if the test ran slowly, but fewer than 4).
        limiter
            .admit(&tenant(1), &fields)
            .await
            .expect("refilled 1");
        limiter
            .admit(&tenant(1), &fields)
            .await
            .expect("refilled 2");
        let mut extra = 0;
        while limiter.admit(&tenant(1), &fields).await.is_ok() {
            extra += 1;
            assert!(extra < 3, "the bucket refills at the rate, no faster");
        }
    }

    #[tokio::test]
    async fn a_zero_rate_turns_the_limiter_off() {
        let mut limits = Config::default().limits;
        limits.rate_per_second = 0;
        let limiter = RateLimiter::new(&limits);
        for _ in 0..1000 {
            limiter.admit(&tenant(1), &[]).await.expect("no limit");
        }
        assert_eq!(limiter.buckets().await, 0);
    }

    #[tokio::test]
    async fn the_bucket_map_is_bounded() {
        let mut limits = Config::default().limits;
        limits.rate_buckets = 50;
        let limiter = RateLimiter::new(&limits);
        let fields = vec!["company_id".to_owned()];
        for company in 0..2_000 {
            limiter
                .admit(&tenant(company), &fields)
                .await
                .expect("admit");
        }
        assert!(limiter.buckets().await <= 50);
    }

    #[test]
    fn counts_over_their_limit_are_413() {
        let limits = Config::default().limits;
        assert!(check_patch_operations(&limits, limits.patch_operations).is_ok());
        let e = check_patch_operations(&limits, limits.patch_operations + 1).expect_err("413");
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(check_members(&limits, limits.members_per_request).is_ok());
        let e = check_members(&limits, limits.members_per_request + 1).expect_err("413");
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
