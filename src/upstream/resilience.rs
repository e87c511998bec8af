//! What keeps a slow or dead upstream from taking the gateway down with it: a cap on calls
//! in flight, a circuit breaker, and retries that are safe, spaced and budgeted.
//!
//! - **Concurrency cap.** Every upstream call holds one of `max_concurrent` slots while it
//!   runs (its pooled connection included). A call that cannot get a slot within
//!   `queue_wait` fails with a 503 and `Retry-After` instead of queueing without bound.
//! - **Circuit breaker.** After `breaker_failures` consecutive calls that could not connect,
//!   lost their connection before an answer, or timed out, calls fail fast (503, `Retry-After` = the rest of the cool-down) for
//!   `breaker_cooldown`; then one probe call is let through (half-open): success closes the
//!   breaker, failure opens it for another cool-down. Any HTTP answer, even a 500, counts as
//!   success: the upstream is there.
//! - **Retries.** Only where repeating a call cannot do harm (see [`Retry::of`]), with
//!   exponential backoff and jitter, and only while the retry budget (a token bucket filled
//!   by `retry_budget_percent` of every first attempt, plus a reserve of [`BUDGET_RESERVE`])
//!   has a token: over any period, retries stay under that share of calls plus the reserve.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Retries the budget allows before any call has paid into it, and its ceiling.
pub const BUDGET_RESERVE: f64 = 10.0;

/// The longest pause between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The knobs, from `[upstream]` in the configuration.
#[derive(Debug, Clone)]
pub struct Policy {
    pub max_concurrent: usize,
    pub queue_wait: Duration,
    pub retries: u32,
    pub retry_backoff: Duration,
    pub retry_budget_percent: u32,
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_concurrent: 128,
            queue_wait: Duration::from_secs(1),
            retries: 2,
            retry_backoff: Duration::from_millis(50),
            retry_budget_percent: 10,
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(5),
        }
    }
}

/// How one attempt ended, as far as retries and the breaker care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// An HTTP answer with this status (read in full).
    Answered(StatusCode),
    /// No connection could be made: nothing was sent.
    ConnectFailed,
    /// The connection broke before an answer began: the request may have been received.
    Reset,
    /// The answer began but broke off.
    Truncated,
    /// No answer within the timeout: the call may still be running upstream.
    TimedOut,
    /// The answer is unusable for reasons a retry will not change (too large).
    Unusable,
}

/// Which failures a call may be repeated after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// GET, HEAD, OPTIONS: reads. Repeated after connection failures, resets, truncated
    /// answers and 502/503/504.
    Read,
    /// PUT, DELETE: idempotent writes, repeated only when nothing was sent (connection
    /// refused or not established), because a repeated DELETE that had landed answers 404.
    WhenUnsent,
    /// POST, PATCH and anything else: never repeated.
    Never,
}

impl Retry {
    /// The retry class of an HTTP method.
    pub fn of(method: &Method) -> Retry {
        match *method {
            Method::GET | Method::HEAD | Method::OPTIONS => Retry::Read,
            Method::PUT | Method::DELETE => Retry::WhenUnsent,
            _ => Retry::Never,
        }
    }

    /// Whether an attempt that ended so may be repeated (budget and deadline aside).
    /// Timeouts never are: the call may still be running, and a slow upstream is not
    /// helped by more calls.
    pub fn allows(self, attempt: Attempt) -> bool {
        match (self, attempt) {
            (Retry::Never, _) => false,
            (_, Attempt::ConnectFailed) => true,
            (Retry::Read, Attempt::Reset | Attempt::Truncated) => true,
            (Retry::Read, Attempt::Answered(s)) => matches!(s.as_u16(), 502..=504),
            _ => false,
        }
    }
}

/// Breaker states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is out; everyone else fails fast until it comes back.
    HalfOpen,
}

/// The circuit breaker. Its state is one small mutex, held for a few instructions.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<State>,
    opened: AtomicU64,
}

/// Permission to make one call, from [`Breaker::admit`]. Report how it went with
/// [`Ticket::finish`]; a ticket dropped unfinished (the SCIM request went away) frees the
/// probe slot so the breaker does not stay half-open for ever.
#[derive(Debug)]
pub struct Ticket<'a> {
    breaker: &'a Breaker,
    probe: bool,
    finished: bool,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            threshold,
            cooldown,
            state: Mutex::new(State::Closed { failures: 0 }),
            opened: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Seconds until a call may be tried, when calls are failing fast now (without
    /// claiming the probe).
    pub fn refusing(&self) -> Option<u64> {
        if self.threshold == 0 {
            return None;
        }
        match *self.lock() {
            State::Open { until } => {
                let now = Instant::now();
                (until > now).then(|| ceil_secs(until - now))
            }
            State::HalfOpen => Some(1),
            State::Closed { .. } => None,
        }
    }

    /// A ticket for one call, or the seconds to wait (the breaker is open, or half-open
    /// with its probe out).
    pub fn admit(&self) -> Result<Ticket<'_>, u64> {
        let ticket = |probe| Ticket {
            breaker: self,
            probe,
            finished: false,
        };
        if self.threshold == 0 {
            return Ok(ticket(false));
        }
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Ok(ticket(false)),
            State::HalfOpen => Err(1),
            State::Open { until } => {
                let now = Instant::now();
                if until > now {
                    Err(ceil_secs(until - now))
                } else {
                    *state = State::HalfOpen;
                    Ok(ticket(true))
                }
            }
        }
    }

    /// Whether the breaker is failing calls fast (open or half-open).
    pub fn is_open(&self) -> bool {
        !matches!(*self.lock(), State::Closed { .. })
    }

    /// How many times the breaker has opened.
    pub fn times_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    fn record(&self, probe: bool, failed: bool) {
        let mut state = self.lock();
        let open = |state: &mut State| {
            *state = State::Open {
                until: Instant::now() + self.cooldown,
            };
            self.opened.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                cooldown_ms = self.cooldown.as_millis() as u64,
                "upstream circuit breaker open: calls fail fast until the cool-down ends"
            );
        };
        match (*state, failed) {
            (_, false) => {
                if probe {
                    tracing::info!("upstream circuit breaker closed: the probe call succeeded");
                }
                // A late success from before the breaker opened proves little: only the
                // probe closes an open breaker.
                if probe || matches!(*state, State::Closed { .. }) {
                    *state = State::Closed { failures: 0 };
                }
            }
            (State::HalfOpen, true) if probe => open(&mut state),
            (State::Closed { failures }, true) => {
                if failures + 1 >= self.threshold {
                    open(&mut state);
                } else {
                    *state = State::Closed {
                        failures: failures + 1,
                    };
                }
            }
            // A late failure from before the breaker opened changes nothing.
            _ => {}
        }
    }
}

impl Ticket<'_> {
    /// Reports how the call went: only failures to connect and timeouts count against the
    /// upstream.
    pub fn finish(mut self, attempt: Attempt) {
        self.finished = true;
        let failed = matches!(
            attempt,
            Attempt::ConnectFailed | Attempt::TimedOut | Attempt::Reset
        );
        self.breaker.record(self.probe, failed);
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.probe && !self.finished {
            // The probe never reported: let the next call probe at once.
            let mut state = self.breaker.lock();
            if *state == State::HalfOpen {
                *state = State::Open {
                    until: Instant::now(),
                };
            }
        }
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000).max(1) as u64
}

/// The retry budget: a token bucket that every first attempt pays a fraction of a token
/// into and every retry takes a whole token out of.
#[derive(Debug)]
pub struct Budget {
    per_call: f64,
    tokens: Mutex<f64>,
    exhausted: AtomicU64,
}

impl Budget {
    pub fn new(percent: u32) -> Budget {
        Budget {
            per_call: f64::from(percent) / 100.0,
            tokens: Mutex::new(if percent == 0 { 0.0 } else { BUDGET_RESERVE }),
            exhausted: AtomicU64::new(0),
        }
    }

    /// A first attempt pays in.
    pub fn deposit(&self) {
        if self.per_call > 0.0 {
            let mut t = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
            *t = (*t + self.per_call).min(BUDGET_RESERVE.max(1.0));
        }
    }

    /// Takes a token for one retry, if there is one.
    pub fn withdraw(&self) -> bool {
        let mut t = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if *t >= 1.0 {
            *t -= 1.0;
            true
        } else {
            self.exhausted.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Retries refused because the budget was empty.
    pub fn times_exhausted(&self) -> u64 {
        self.exhausted.load(Ordering::Relaxed)
    }
}

/// The pause before retry number `retry` (1-based): `base · 2^(retry-1)`, at most
/// [`MAX_BACKOFF`], of which a random half is jitter (so callers that failed together do
/// not retry together).
pub fn backoff(base: Duration, retry: u32) -> Duration {
    use rand::Rng;
    let ceiling = base
        .saturating_mul(1u32 << (retry.saturating_sub(1)).min(16))
        .min(MAX_BACKOFF);
    let half = ceiling / 2;
    let jitter_ms = half.as_millis() as u64;
    half + Duration::from_millis(rand::rng().random_range(0..=jitter_ms))
}

/// Everything shared by the clones of one upstream client.
#[derive(Debug)]
pub struct Guard {
    pub policy: Policy,
    slots: std::sync::Arc<Semaphore>,
    pub breaker: Breaker,
    pub budget: Budget,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    pub retries: AtomicU64,
    pub rejected_saturated: AtomicU64,
    pub rejected_open: AtomicU64,
}

/// A slot of the concurrency cap, counted in flight while held.
#[derive(Debug)]
pub struct Slot<'a> {
    guard: &'a Guard,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.guard.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a call was not even tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub why: String,
    pub retry_after: u64,
}

impl Guard {
    pub fn new(policy: Policy) -> Guard {
        Guard {
            slots: std::sync::Arc::new(Semaphore::new(policy.max_concurrent.max(1))),
            breaker: Breaker::new(policy.breaker_failures, policy.breaker_cooldown),
            budget: Budget::new(policy.retry_budget_percent),
            policy,
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            retries: AtomicU64::new(0),
            rejected_saturated: AtomicU64::new(0),
            rejected_open: AtomicU64::new(0),
        }
    }

    /// Waits (at most the policy's `queue_wait`) for a slot, then asks the breaker.
    pub async fn enter(&self) -> Result<(Slot<'_>, Ticket<'_>), Refused> {
        self.enter_within(self.policy.queue_wait).await
    }

    /// Waits at most `queue_wait` (which a configuration reload may have changed) for a
    /// slot, then asks the breaker.
    pub async fn enter_within(
        &self,
        queue_wait: Duration,
    ) -> Result<(Slot<'_>, Ticket<'_>), Refused> {
        // Fail fast without queueing while the breaker is open.
        if let Some(secs) = self.breaker.refusing() {
            return Err(self.open(secs));
        }
        let permit = match tokio::time::timeout(queue_wait, self.slots.clone().acquire_owned())
            .await
        {
            Ok(Ok(p)) => p,
            _ => {
                self.rejected_saturated.fetch_add(1, Ordering::Relaxed);
                return Err(Refused {
                    why: format!(
                        "the gateway already has {} calls to the upstream in flight and none finished within {} ms",
                        self.policy.max_concurrent,
                        queue_wait.as_millis()
                    ),
                    retry_after: 1,
                });
            }
        };
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(now, Ordering::Relaxed);
        let slot = Slot {
            guard: self,
            _permit: permit,
        };
        match self.breaker.admit() {
            Ok(ticket) => Ok((slot, ticket)),
            Err(secs) => Err(self.open(secs)),
        }
    }

    fn open(&self, secs: u64) -> Refused {
        self.rejected_open.fetch_add(1, Ordering::Relaxed);
        Refused {
            why: "the upstream failed repeatedly; calls are paused (circuit breaker open)"
                .to_owned(),
            retry_after: secs,
        }
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The most calls ever in flight at once.
    pub fn peak_in_flight(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_classes() {
        use Attempt::*;
        let bad_gateway = Answered(StatusCode::BAD_GATEWAY);
        let server_error = Answered(StatusCode::INTERNAL_SERVER_ERROR);
        let read = Retry::of(&Method::GET);
        assert!(read.allows(ConnectFailed) && read.allows(Reset) && read.allows(Truncated));
        assert!(read.allows(bad_gateway));
        assert!(read.allows(Answered(StatusCode::SERVICE_UNAVAILABLE)));
        assert!(!read.allows(server_error) && !read.allows(TimedOut));
        assert!(!read.allows(Answered(StatusCode::TOO_MANY_REQUESTS)));
        for m in [Method::PUT, Method::DELETE] {
            let r = Retry::of(&m);
            assert!(r.allows(ConnectFailed));
            assert!(!r.allows(Reset) && !r.allows(bad_gateway) && !r.allows(TimedOut));
        }
        for m in [Method::POST, Method::PATCH] {
            let r = Retry::of(&m);
            for a in [ConnectFailed, Reset, Truncated, TimedOut, bad_gateway] {
                assert!(!r.allows(a), "{m} {a:?}");
            }
        }
    }

    #[test]
    fn breaker_opens_fails_fast_and_recovers_through_one_probe() {
        let b = Breaker::new(3, Duration::from_millis(50));
        for _ in 0..2 {
            b.admit().expect("closed").finish(Attempt::ConnectFailed);
        }
        // A success in between resets the count.
        b.admit()
            .expect("closed")
            .finish(Attempt::Answered(StatusCode::INTERNAL_SERVER_ERROR));
        for _ in 0..2 {
            b.admit().expect("closed").finish(Attempt::TimedOut);
        }
        assert!(!b.is_open());
        b.admit().expect("closed").finish(Attempt::TimedOut);
        assert!(b.is_open());
        assert_eq!(b.times_opened(), 1);
        assert_eq!(b.admit().err(), Some(1), "open: fail fast");
        std::thread::sleep(Duration::from_millis(60));
        let probe = b.admit().expect("half-open: one probe");
        assert_eq!(b.admit().err(), Some(1), "only one probe at a time");
        probe.finish(Attempt::ConnectFailed);
        assert!(b.admit().is_err(), "a failed probe opens it again");
        assert_eq!(b.times_opened(), 2);
        std::thread::sleep(Duration::from_millis(60));
        let probe = b.admit().expect("probe");
        drop(probe);
        let probe = b
            .admit()
            .expect("an abandoned probe lets the next call probe");
        probe.finish(Attempt::Answered(StatusCode::OK));
        assert!(!b.is_open());
        b.admit()
            .expect("closed")
            .finish(Attempt::Answered(StatusCode::OK));
    }

    #[test]
    fn a_zero_threshold_disables_the_breaker() {
        let b = Breaker::new(0, Duration::from_secs(60));
        for _ in 0..100 {
            b.admit()
                .expect("never opens")
                .finish(Attempt::ConnectFailed);
        }
        assert!(b.refusing().is_none());
    }

    #[test]
    fn the_budget_allows_its_reserve_then_a_share_of_calls() {
        let budget = Budget::new(10);
        let mut granted = 0;
        while budget.withdraw() {
            granted += 1;
        }
        assert_eq!(granted, BUDGET_RESERVE as usize);
        for _ in 0..100 {
            budget.deposit();
        }
        let mut granted = 0;
        while budget.withdraw() {
            granted += 1;
        }
        assert!((9..=10).contains(&granted), "{granted}");
        assert!(!Budget::new(0).withdraw());
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let base = Duration::from_millis(100);
        for _ in 0..50 {
            let first = backoff(base, 1);
            assert!(
                first >= Duration::from_millis(50) && first <= base,
                "{first:?}"
            );
            let third = backoff(base, 3);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            assert!(backoff(base, 30) <= MAX_BACKOFF);
        }
    }

    #[tokio::test]
    async fn the_concurrency_cap_refuses_after_the_queue_wait() {
        let guard = Guard::new(Policy {
            max_concurrent: 2,
            queue_wait: Duration::from_millis(30),
            ..Policy::default()
        });
        let a = guard.enter().await.expect("slot 1");
        let b = guard.enter().await.expect("slot 2");
        assert_eq!(guard.in_flight(), 2);
        let refused = guard.enter().await.expect_err("no third slot");
        assert_eq!(refused.retry_after, 1);
        drop(a);
        let c = guard.enter().await.expect("a freed slot");
        drop((b, c));
        assert_eq!(guard.in_flight(), 0);
        assert_eq!(guard.peak_in_flight(), 2);
        assert_eq!(guard.rejected_saturated.load(Ordering::Relaxed), 1);
    }
}
