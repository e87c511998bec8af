//! A built-in, in-memory implementation of the Blacksmith internal REST API
//! (`shared/blacksmith-api.md`).
//!
//! It serves two audiences: `scimgate demo`, so a newcomer can curl SCIM against a real
//! upstream at once, and the integration tests, which use it as the upstream HTTP server
//! and need to look inside it (recorded requests, direct reads) and make it misbehave
//! (latency, injected faults, rate limiting).
//!
//! Layout: `store.rs` holds the data model and rules, `routes.rs` the HTTP layer, and this
//! file the shared handle plus the test-facing knobs.

mod routes;
mod store;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::{json, Value};

pub use store::Company;
use store::Store;

/// A fault to inject into one member call (`POST`/`DELETE /teams/{id}/members…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer `500` without applying the call.
    Status500,
    /// Sleep this long, then apply the call normally (for gateway timeout tests).
    Hang(Duration),
}

/// One request as the demo received it, for test assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method, e.g. `"POST"`.
    pub method: String,
    /// Raw path as received, percent-encoding intact (`%2F` stays `%2F`).
    pub path: String,
    /// Raw query string without the `?`, if any.
    pub query: Option<String>,
    /// The `X-Scim-Key-Id` header, if sent.
    pub key_id: Option<String>,
    /// Whether an `Authorization` header was present at all (its value is not kept).
    pub has_authorization: bool,
    /// The `X-Request-Id` header, if sent.
    pub request_id: Option<String>,
}

/// Which upcoming member calls should fail, counted in one sequence across all member
/// `POST`/`DELETE` calls.
#[derive(Debug, Default)]
struct FaultPlan {
    /// Member calls seen so far.
    seen: usize,
    /// Absolute call number (1-based) → fault.
    pending: std::collections::BTreeMap<usize, Fault>,
}

/// State shared by the handle, the router and every handler.
pub(crate) struct Inner {
    service_token: String,
    store: Mutex<Store>,
    requests: Mutex<Vec<RecordedRequest>>,
    faults: Mutex<FaultPlan>,
    member_latency: Mutex<Duration>,
    rate_limit: Mutex<Option<u64>>,
    member_in_flight: AtomicUsize,
    member_in_flight_max: AtomicUsize,
}

/// Locks a mutex, ignoring poisoning: a panicking test handler must not turn every later
/// request into a second panic. The data behind these locks stays consistent because no
/// store operation panics half-way through a mutation.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    /// The store. Callers must drop the guard before any `.await`.
    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    fn record(&self, request: RecordedRequest) {
        lock(&self.requests).push(request);
    }

    fn rate_limit(&self) -> Option<u64> {
        *lock(&self.rate_limit)
    }

    fn member_latency(&self) -> Duration {
        *lock(&self.member_latency)
    }

    /// Counts a member call as started (for the high-water mark) and takes the fault
    /// scheduled for it, if any.
    fn begin_member_call(&self) -> (MemberCallGuard<'_>, Option<Fault>) {
        let now = self.member_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.member_in_flight_max.fetch_max(now, Ordering::SeqCst);
        let guard = MemberCallGuard(self);
        let mut plan = lock(&self.faults);
        plan.seen += 1;
        let n = plan.seen;
        let fault = plan.pending.remove(&n);
        (guard, fault)
    }
}

/// Keeps a member call counted as in flight; the count drops when the guard does, which
/// also covers requests whose client went away mid-sleep.
pub(crate) struct MemberCallGuard<'a>(&'a Inner);

impl Drop for MemberCallGuard<'_> {
    fn drop(&mut self) {
        self.0.member_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Handle to one in-memory Blacksmith. Cheap to clone; all clones share the same state,
/// so a test can keep one while the server task owns another.
#[derive(Clone)]
pub struct DemoUpstream {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DemoUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The service token is deliberately left out of debug output.
        f.debug_struct("DemoUpstream").finish_non_exhaustive()
    }
}

impl DemoUpstream {
    /// Empty store; `service_token` is the bearer the gateway must send.
    pub fn new(service_token: impl Into<String>) -> Self {
        DemoUpstream {
            inner: Arc::new(Inner {
                service_token: service_token.into(),
                store: Mutex::new(Store::default()),
                requests: Mutex::new(Vec::new()),
                faults: Mutex::new(FaultPlan::default()),
                member_latency: Mutex::new(Duration::ZERO),
                rate_limit: Mutex::new(None),
                member_in_flight: AtomicUsize::new(0),
                member_in_flight_max: AtomicUsize::new(0),
            }),
        }
    }

    /// Register a SCIM key: `token` introspects as active for `company_id` with `key_id`
    /// and `purpose`. The company is created if needed.
    pub fn add_scim_key(&self, token: &str, company_id: i64, key_id: &str, purpose: &str) {
        self.inner
            .store()
            .add_scim_key(token, company_id, key_id, purpose);
    }

    /// Revoke a SCIM key (it then introspects as inactive); returns whether it existed.
    pub fn remove_scim_key(&self, token: &str) -> bool {
        self.inner.store().remove_scim_key(token)
    }

    /// Make a company exist with no users or teams (unknown companies answer 404).
    pub fn add_company(&self, company_id: i64) {
        self.inner.store().ensure_company(company_id);
    }

    /// Seed a company with five realistic users (active and deactivated, admins and
    /// members, one with a manager) and two teams with members.
    ///
    /// # Panics
    /// If the company already holds users with the same emails or teams with the same names.
    pub fn seed_example_data(&self, company_id: i64) {
        let mut store = self.inner.store();
        store.ensure_company(company_id);
        let mut create = |v: Value| -> i64 {
            let attrs = v.as_object().cloned().unwrap_or_default();
            let user = store
                .create_user(company_id, &attrs)
                .unwrap_or_else(|e| panic!("seed_example_data: {e}"));
            user["id"].as_i64().unwrap_or_default()
        };
        let grace = create(json!({
            "email": "grace@example.com", "first_name": "Grace", "last_name": "Hopper",
            "display_name": "Grace Hopper", "title": "Head of Engineering",
            "department": "R&D", "phone": "+1 555 0101", "role": "admin",
            "external_id": "00u1grace"
        }));
        let ada = create(json!({
            "email": "ada@example.com", "first_name": "Ada", "last_name": "Lovelace",
            "display_name": "Ada Lovelace", "title": "Engineer", "department": "R&D",
            "phone": "+1 555 0100", "role": "member", "external_id": "00u1abcd",
            "manager_id": grace
        }));
        let alan = create(json!({
            "email": "alan@example.com", "first_name": "Alan", "last_name": "Turing",
            "display_name": "Alan Turing", "title": "Research Scientist",
            "department": "R&D", "role": "member"
        }));
        let margaret = create(json!({
            "email": "margaret@example.com", "first_name": "Margaret",
            "last_name": "Hamilton", "display_name": "Margaret Hamilton",
            "title": "Security Lead", "department": "Security", "role": "admin"
        }));
        let _katherine = create(json!({
            "email": "katherine@example.com", "first_name": "Katherine",
            "last_name": "Johnson", "display_name": "Katherine Johnson",
            "title": "Analyst", "department": "Finance", "role": "member",
            "status": "deactivated"
        }));
        drop(store);
        self.seed_team_with(
            company_id,
            "Security",
            Some("Blue team"),
            &[margaret, ada, alan],
        );
        self.seed_team_with(
            company_id,
            "Research",
            Some("R&D guild"),
            &[grace, ada, alan],
        );
    }

    /// Create `n` active member users directly in the store (for paging tests), with emails
    /// `user1@example.com` … `user{n}@example.com` and names `User 1` …; returns their ids
    /// in order.
    ///
    /// # Panics
    /// If one of those emails already exists in the company.
    pub fn seed_users(&self, company_id: i64, n: usize) -> Vec<i64> {
        let mut store = self.inner.store();
        store.ensure_company(company_id);
        (1..=n)
            .map(|i| {
                let attrs = json!({
                    "email": format!("user{i}@example.com"),
                    "first_name": "User",
                    "last_name": i.to_string(),
                    "display_name": format!("User {i}"),
                });
                let attrs = attrs.as_object().cloned().unwrap_or_default();
                let user = store
                    .create_user(company_id, &attrs)
                    .unwrap_or_else(|e| panic!("seed_users: {e}"));
                user["id"].as_i64().unwrap_or_default()
            })
            .collect()
    }

    /// Add a team with the given member user ids directly; returns the team id.
    ///
    /// # Panics
    /// If the name is taken or a member id is not a user of the company.
    pub fn seed_team(&self, company_id: i64, name: &str, members: &[i64]) -> i64 {
        self.seed_team_with(company_id, name, None, members)
    }

    fn seed_team_with(
        &self,
        company_id: i64,
        name: &str,
        description: Option<&str>,
        members: &[i64],
    ) -> i64 {
        let mut store = self.inner.store();
        store.ensure_company(company_id);
        let attrs = json!({"name": name, "description": description});
        let attrs = attrs.as_object().cloned().unwrap_or_default();
        let team = store
            .create_team(company_id, &attrs)
            .unwrap_or_else(|e| panic!("seed_team: {e}"));
        let id = team["id"].as_i64().unwrap_or_default();
        store
            .replace_members(company_id, id, members)
            .unwrap_or_else(|e| panic!("seed_team: {e}"));
        id
    }

    /// The axum router implementing the contract.
    pub fn router(&self) -> axum::Router {
        routes::router(self.inner.clone())
    }

    /// Bind `addr` (use `127.0.0.1:0` for a free port), serve in a spawned tokio task for
    /// the rest of the runtime's life, and return the bound address.
    pub async fn spawn(&self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let app = self.router();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "demo upstream server stopped");
            }
        });
        tracing::info!(%bound, "demo upstream listening");
        Ok(bound)
    }

    /// Every request received, in order (including ones answered 401, 404 or 429).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.inner.requests).clone()
    }

    /// Forget the recorded requests.
    pub fn clear_requests(&self) {
        lock(&self.inner.requests).clear();
    }

    /// A user exactly as `GET /users/{id}` would return it in `data`.
    pub fn user(&self, company_id: i64, id: i64) -> Option<Value> {
        self.inner.store().get_user(company_id, id).ok()
    }

    /// All users of a company in id order (empty for an unknown company).
    pub fn users(&self, company_id: i64) -> Vec<Value> {
        self.inner.store().all_users(company_id)
    }

    /// A team exactly as `GET /teams/{id}` would return it in `data`.
    pub fn team(&self, company_id: i64, id: i64) -> Option<Value> {
        self.inner.store().get_team(company_id, id).ok()
    }

    /// Member user ids of a team, ascending; `None` if there is no such team.
    pub fn team_members(&self, company_id: i64, team_id: i64) -> Option<Vec<i64>> {
        self.inner.store().team_member_ids(company_id, team_id)
    }

    /// Sleep this long inside each member `POST`/`DELETE` call (zero turns it off).
    pub fn set_member_call_latency(&self, d: Duration) {
        *lock(&self.inner.member_latency) = d;
    }

    /// High-water mark of concurrent member `POST`/`DELETE` calls since creation.
    pub fn max_member_calls_in_flight(&self) -> usize {
        self.inner.member_in_flight_max.load(Ordering::SeqCst)
    }

    /// Make the `nth` member call from now (1-based, counted across all member
    /// `POST`/`DELETE` calls) fail with `fault`. Several faults may be pending at once.
    ///
    /// # Panics
    /// If `nth` is 0.
    pub fn fail_member_call(&self, nth: usize, fault: Fault) {
        assert!(nth >= 1, "fail_member_call: nth is 1-based");
        let mut plan = lock(&self.inner.faults);
        let at = plan.seen + nth;
        plan.pending.insert(at, fault);
    }

    /// `Some(secs)`: every call except introspection answers 429 with `Retry-After: secs`.
    /// `None` turns it off.
    pub fn set_rate_limited(&self, retry_after_s: Option<u64>) {
        *lock(&self.inner.rate_limit) = retry_after_s;
    }
}
