//! Which [`Gateway`] serves new requests.
//!
//! A configuration reload does not change a gateway in place: it builds a new one (a
//! snapshot) that shares what outlives settings — the mapping cell, metrics, the upstream's
//! concurrency cap and breaker, caches whose settings did not change — and carries its own
//! `config`, token, limits and keys. The snapshot and its router are swapped in with one
//! atomic pointer store. Each request loads that pointer once and runs wholly on the router
//! it got, so requests in flight finish with the settings they started with, and the
//! request path takes no lock.
//!
//! The gateway built at start owns the [`Live`] cell; snapshots only point back to it
//! weakly, so no reference cycle keeps a stopped gateway alive.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};

use arc_swap::ArcSwapOption;
use axum::extract::Request;
use axum::response::Response;

use super::Gateway;

/// The reloadable state shared by a gateway and its snapshots.
#[derive(Default)]
pub struct Live {
    /// The snapshot serving new requests, once a configuration reload has made one; until
    /// then the gateway built at start serves.
    current: ArcSwapOption<Serving>,
    /// Serialises reloads (mapping and configuration), never taken by requests: each
    /// checks its change against what the other last swapped in.
    reloading: Mutex<()>,
    /// `scimgate_config_reloads_total`: success, rejected.
    reloads: [AtomicU64; 2],
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").finish_non_exhaustive()
    }
}

/// A snapshot and the service built on it.
struct Serving {
    gateway: Arc<Gateway>,
    app: super::App,
}

/// How a gateway reaches the [`Live`] cell: the one built at start owns it.
pub(super) enum Link {
    Origin(Arc<Live>),
    Snapshot(Weak<Live>),
}

impl Live {
    /// Holds off other reloads while one checks and swaps.
    pub fn reloading(&self) -> MutexGuard<'_, ()> {
        self.reloading.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `gateway` (a snapshot) serve new requests.
    pub(super) fn swap_in(&self, gateway: Arc<Gateway>) {
        let app = super::router(gateway.clone());
        self.current.store(Some(Arc::new(Serving { gateway, app })));
    }

    /// Counts one configuration reload.
    pub fn record_reload(&self, success: bool) {
        self.reloads[usize::from(!success)].fetch_add(1, Ordering::Relaxed);
    }

    /// Configuration reloads so far: (applied, rejected).
    pub fn reloads(&self) -> (u64, u64) {
        (
            self.reloads[0].load(Ordering::Relaxed),
            self.reloads[1].load(Ordering::Relaxed),
        )
    }
}

impl Gateway {
    /// The gateway serving new requests: the latest snapshot, or this one when no
    /// configuration reload has happened.
    pub fn current(self: &Arc<Self>) -> Arc<Gateway> {
        self.live()
            .and_then(|live| live.current.load_full())
            .map_or_else(|| self.clone(), |s| s.gateway.clone())
    }

    /// The reloadable state, while the gateway built at start is alive.
    pub fn live(&self) -> Option<Arc<Live>> {
        match &self.live {
            Link::Origin(live) => Some(live.clone()),
            Link::Snapshot(weak) => weak.upgrade(),
        }
    }

    /// A snapshot of this gateway with other settings (see the module documentation).
    pub(super) fn snapshot(
        &self,
        live: &Arc<Live>,
        config: crate::config::Config,
        upstream: crate::upstream::Upstream,
        auth: Arc<super::auth::Authenticator>,
        rate_limiter: Arc<super::limits::RateLimiter>,
        restart_required: Vec<crate::config::runtime::Pending>,
    ) -> Gateway {
        Gateway {
            mapping: self.mapping.clone(),
            upstream,
            auth,
            config_hash: config.hash(),
            config,
            metrics: self.metrics.clone(),
            readiness: self.readiness.clone(),
            rate_limiter,
            restart_required,
            live: Link::Snapshot(Arc::downgrade(live)),
        }
    }
}

/// The SCIM listener's service: hands each request to the service of the gateway serving
/// at that moment (one atomic load and a clone of that service per request).
#[derive(Clone)]
pub(super) struct Dispatch {
    live: Option<Arc<Live>>,
    /// The service of the gateway built at start, until a reload swaps another in.
    initial: super::App,
}

impl Dispatch {
    pub(super) fn new(gateway: &Arc<Gateway>) -> Dispatch {
        Dispatch {
            live: gateway.live(),
            initial: super::router(gateway.clone()),
        }
    }
}

impl tower::Service<Request> for Dispatch {
    type Response = Response;
    type Error = Infallible;
    type Future = tower::util::Oneshot<super::App, Request>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let app = match &self.live {
            Some(live) => match live.current.load().as_ref() {
                Some(serving) => serving.app.clone(),
                None => self.initial.clone(),
            },
            None => self.initial.clone(),
        };
        tower::ServiceExt::oneshot(app, request)
    }
}
