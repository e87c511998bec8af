//! The HTTP side: routing, authentication, body limits, and turning every failure into a
//! SCIM Error answer in one place.

pub mod auth;
pub mod config_reload;
mod discovery;
pub mod health;
pub mod limits;
pub mod live;
mod members;
pub mod observe;
pub mod reload;
pub mod request;
pub mod resource;
mod threads;
pub mod tls;

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::mapping::Mapping;
use crate::scim::ScimError;
use crate::upstream::Upstream;
use auth::{Authenticator, Tenant};

/// Everything a request needs, shared by all requests.
///
/// A configuration reload makes a new `Gateway` (a snapshot, see [`live`]) rather than
/// changing this one, so the settings a request reads here stay the same until it ends.
pub struct Gateway {
    /// The mapping in use; swapped whole on reload, read without locks. Shared by every
    /// snapshot.
    pub mapping: Arc<ArcSwap<Mapping>>,
    pub upstream: Upstream,
    pub auth: Arc<Authenticator>,
    /// The settings this gateway serves with: the file and environment as of the last
    /// reload, with restart-only settings as they were at start.
    pub config: Config,
    /// [`Config::hash`] of `config`.
    pub config_hash: String,
    /// Restart-only settings changed in the file since start (their old values serve).
    pub restart_required: Vec<crate::config::runtime::Pending>,
    /// Counters and histograms, rendered on the admin listener.
    pub metrics: Arc<observe::Metrics>,
    /// The cached upstream reachability answer of `/readyz`.
    pub readiness: Arc<health::Readiness>,
    /// Per-tenant token buckets (`limits.rate_per_second`, `limits.burst`).
    pub rate_limiter: Arc<limits::RateLimiter>,
    /// The reloadable state this gateway belongs to.
    live: live::Link,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").finish_non_exhaustive()
    }
}

/// The upstream client's settings from `[upstream]`.
pub fn upstream_settings(u: &crate::config::UpstreamConfig) -> crate::upstream::UpstreamSettings {
    use std::time::Duration;
    crate::upstream::UpstreamSettings {
        url: u.url.clone(),
        token: u.token.clone(),
        timeout: Duration::from_millis(u.timeout_ms),
        connect_timeout: Duration::from_millis(u.connect_timeout_ms),
        policy: crate::upstream::resilience::Policy {
            max_concurrent: u.max_concurrent,
            queue_wait: Duration::from_millis(u.queue_wait_ms),
            retries: u.retries,
            retry_backoff: Duration::from_millis(u.retry_backoff_ms),
            retry_budget_percent: u.retry_budget_percent,
            breaker_failures: u.breaker_failures,
            breaker_cooldown: Duration::from_millis(u.breaker_cooldown_ms),
        },
    }
}

impl Gateway {
    /// Builds the gateway from a loaded configuration and a compiled mapping.
    pub fn new(config: Config, mapping: Mapping) -> anyhow::Result<Arc<Gateway>> {
        let upstream = Upstream::new(&upstream_settings(&config.upstream))?;
        let auth = Authenticator::new(&config.auth, &mapping)?;
        let rate_limiter = limits::RateLimiter::new(&config.limits);
        Ok(Arc::new(Gateway {
            mapping: Arc::new(ArcSwap::from_pointee(mapping)),
            upstream,
            auth: Arc::new(auth),
            config_hash: config.hash(),
            config,
            restart_required: Vec::new(),
            metrics: Arc::new(observe::Metrics::new()),
            readiness: Arc::default(),
            rate_limiter: Arc::new(rate_limiter),
            live: live::Link::Origin(Arc::default()),
        }))
    }
}

/// The future of the listener's own layers ([`observe::Track`], [`limits::Inbound`]):
/// boxed, since each wraps an async block around the inner service's future.
pub type LayerFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Response, std::convert::Infallible>> + Send>,
>;

/// The whole SCIM listener as one service, cheap to clone (a few reference counts; each
/// request clones it once).
pub type App = observe::Track<Listener>;

/// The SCIM API's routes under their layers: sizes, body limit and deadline
/// ([`limits::Inbound`]), then framework rejections rewritten as SCIM errors.
type ScimStack = limits::Inbound<tower::util::MapResponse<Router, fn(Response) -> Response>>;

/// The listener's two halves, told apart by the exact path: the health probes (plain JSON,
/// outside authentication and the SCIM layers) and the SCIM API. A comparison rather than
/// an outer router with the API as its fallback, which cost every SCIM request a second
/// routing pass and a boxed service clone (≈2,000 instructions, BENCHMARKS.md).
#[derive(Clone)]
pub struct Listener {
    probes: Router,
    scim: ScimStack,
}

impl tower::Service<Request> for Listener {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = LayerFuture;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        // Routers are always ready; both are asked, as the contract wants.
        let probes = tower::Service::<Request>::poll_ready(&mut self.probes, cx);
        let scim = self.scim.poll_ready(cx);
        if probes.is_ready() && scim.is_ready() {
            std::task::Poll::Ready(Ok(()))
        } else {
            std::task::Poll::Pending
        }
    }

    fn call(&mut self, request: Request) -> LayerFuture {
        if is_probe(request.uri().path()) {
            return Box::pin(self.probes.call(request));
        }
        self.scim.call(request)
    }
}

/// Whether `path` is a health probe's: those are answered outside the SCIM layers, and
/// neither logged nor counted.
pub(crate) fn is_probe(path: &str) -> bool {
    path == "/healthz" || path == "/readyz"
}

/// The SCIM listener's service: health endpoints outside authentication, the SCIM API
/// under the base path, and around them, one concern per layer: the request's id, metrics
/// and log line (outermost); URL and header sizes, the body limit and the deadline;
/// framework rejections rewritten as SCIM errors. Authentication is the handlers' first
/// extractor ([`Authenticated`]).
///
/// The layers wrap the router once rather than through `Router::layer`, which would wrap
/// every route and make each request clone (allocate) every layer's boxed route; and they
/// are plain services rather than `middleware::from_fn`, which boxes the rest of the stack
/// and its future again in every layer.
pub fn router(gateway: Arc<Gateway>) -> App {
    // Routes carry the base path themselves rather than being nested under it: a nested
    // router is a second routing pass, prefix strip and service clone on every request.
    let base = gateway.config.base_path_trimmed().to_owned();
    let at = |path: &str| format!("{base}{path}");
    let scim = Router::new()
        .route(
            &at("/ServiceProviderConfig"),
            get(discovery::service_provider_config),
        )
        .route(&at("/ResourceTypes"), get(discovery::resource_types))
        .route(&at("/ResourceTypes/{id}"), get(discovery::resource_type))
        .route(&at("/Schemas"), get(discovery::schemas))
        .route(&at("/Schemas/{id}"), get(discovery::schema))
        .route(
            &at("/{endpoint}"),
            get(resource::list).post(resource::create),
        )
        .route(
            &at("/{endpoint}/.search"),
            axum::routing::post(resource::search_post),
        )
        .route(&at("/.search"), axum::routing::post(resource::search_all))
        .route(
            &at("/{endpoint}/{id}"),
            get(resource::get_one)
                .put(resource::replace)
                .patch(resource::patch)
                .delete(resource::delete),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(gateway.clone());
    let rejections: fn(Response) -> Response = scim_errors_for_framework_rejections;
    let scim = limits::Inbound::new(
        gateway.clone(),
        tower::util::MapResponse::new(scim, rejections),
    );
    // Probes answer plain JSON (a 503 from /readyz keeps its reason), so they are outside
    // the layer that rewrites framework errors into SCIM errors.
    let probes = Router::new()
        .route("/healthz", get(health::alive))
        .route("/readyz", get(health::ready))
        .with_state(gateway.clone());
    observe::Track::new(gateway, Listener { probes, scim })
}

/// Serves the SCIM API on `listener` until the process is told to stop: HTTPS when
/// `tls.cert` and `tls.key` are configured (a pair that does not load is an error at once;
/// later changes to the files are picked up), plain HTTP otherwise, its connections handed
/// to `workers` threads of their own (`server::threads`).
pub async fn serve(gateway: Arc<Gateway>, listener: TcpListener) -> std::io::Result<()> {
    // Each request runs on the router of the gateway serving when it arrives, so a
    // configuration reload applies to new requests only.
    let app = live::Dispatch::new(&gateway);
    let draining = Arc::new(tokio::sync::Notify::new());
    let signal = {
        let draining = draining.clone();
        async move {
            shutdown_signal().await;
            tracing::info!("shutting down: no new connections, finishing requests in flight");
            draining.notify_one();
        }
    };
    // Requests in flight get `shutdown_grace_ms` (as configured when the signal comes) to
    // finish; then the process exits anyway, before an orchestrator's own kill.
    let deadline = {
        let gateway = gateway.clone();
        async move {
            draining.notified().await;
            let grace = gateway.current().config.shutdown_grace_ms;
            tokio::time::sleep(std::time::Duration::from_millis(grace)).await;
            tracing::warn!("shutdown grace period over; requests still in flight are abandoned");
        }
    };
    let served = async {
        match gateway.config.tls.paths() {
            None => {
                let workers = match gateway.config.workers {
                    0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                    n => n,
                };
                let mut threads = threads::Threads::start(workers, app)?;
                let mut signal = std::pin::pin!(signal);
                loop {
                    tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok((stream, _)) => threads.hand(stream),
                            Err(e) => {
                                // Out of file descriptors and the like: pause rather than spin.
                                tracing::warn!(error = %e, "accept failed");
                                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            }
                        },
                        () = &mut signal => break,
                    }
                }
                drop(listener);
                threads.drain().await;
                Ok(())
            }
            Some((cert, key)) => {
                let store = tls::CertStore::load(cert, key).map_err(std::io::Error::other)?;
                store.watch(tls::POLL_INTERVAL);
                let listener = tls::TlsListener::new(listener, store)?;
                let make_service = axum::ServiceExt::<Request>::into_make_service(app);
                axum::serve(listener, make_service)
                    .with_graceful_shutdown(signal)
                    .await
            }
        }
    };
    tokio::select! {
        result = served => result,
        () = deadline => Ok(()),
    }
}

/// Serves the admin listener (`/metrics`) until the process is told to stop.
pub async fn serve_admin(gateway: Arc<Gateway>, listener: TcpListener) -> std::io::Result<()> {
    axum::serve(listener, observe::admin_router(gateway))
        .with_graceful_shutdown(shutdown_signal())
        .await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

async fn not_found() -> ScimError {
    ScimError::not_found("no such endpoint")
}

async fn method_not_allowed() -> ScimError {
    ScimError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "this method is not allowed on this endpoint",
    )
}

/// The request's tenant: its `Authorization: Bearer …` token resolved by the
/// [`Authenticator`], within the tenant's rate limit. Every SCIM handler takes it right
/// after its state, so a request is authenticated before its path, query or body is read;
/// the fallbacks (unknown route, wrong method) do not take it.
///
/// An extractor rather than a middleware layer: a layer around every route boxes and
/// copies each request's whole handler future once more.
pub struct Authenticated(pub Arc<Tenant>);

impl FromRequestParts<Arc<Gateway>> for Authenticated {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        gateway: &Arc<Gateway>,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            observe::record_auth_failure("missing");
            return Err(ScimError::unauthorized("a bearer token is required").into_response());
        };
        let mapping = gateway.mapping.load_full();
        match gateway
            .auth
            .authenticate(token, &mapping, &gateway.upstream)
            .await
        {
            Ok(tenant) => {
                observe::set_tenant(&tenant, &mapping);
                gateway
                    .rate_limiter
                    .admit(&tenant, &mapping.tenant_fields)
                    .await
                    .map_err(IntoResponse::into_response)?;
                Ok(Authenticated(tenant))
            }
            Err(e) => {
                observe::record_auth_failure(match e {
                    auth::AuthError::Rejected => "rejected",
                    auth::AuthError::Unavailable(_) => "unavailable",
                });
                tracing::info!(reason = %e, "authentication failed");
                Err(ScimError::from(e).into_response())
            }
        }
    }
}

/// axum answers some failures itself (body too large, unreadable body, bad path escapes)
/// with plain text; rewrite those into SCIM errors so every 4xx and 5xx has the SCIM body.
fn scim_errors_for_framework_rejections(response: Response) -> Response {
    let status = response.status();
    let is_scim = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v == HeaderValue::from_static(crate::scim::MEDIA_TYPE));
    if (status.is_client_error() || status.is_server_error()) && !is_scim {
        let detail = match status {
            StatusCode::PAYLOAD_TOO_LARGE => {
                "the request body is larger than this gateway accepts".to_owned()
            }
            s => s.canonical_reason().unwrap_or("error").to_owned(),
        };
        return ScimError::new(status, detail).into_response();
    }
    response
}
