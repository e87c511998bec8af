//! Health: `/healthz` says the process is alive; `/readyz` says it can serve (the mapping
//! is loaded and the upstream accepts connections). The upstream check is a TCP connect
//! with a short timeout, cached for [`READY_TTL`] so probes and load balancers hammering
//! `/readyz` cost the upstream at most one connection per interval.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Gateway;

/// How long an upstream reachability answer is reused.
pub const READY_TTL: Duration = Duration::from_secs(2);

/// Longest the upstream connect may take before the gateway calls itself not ready.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The cached answer of the last upstream probe.
#[derive(Debug, Default)]
pub struct Readiness {
    last: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
}

impl Readiness {
    /// Whether the upstream accepted a connection recently (probing it when the cached
    /// answer is older than [`READY_TTL`]; concurrent callers share one probe).
    pub async fn upstream(&self, gateway: &Gateway) -> Result<(), String> {
        let mut last = self.last.lock().await;
        if let Some((at, answer)) = last.as_ref() {
            if at.elapsed() < READY_TTL {
                return answer.clone();
            }
        }
        let timeout = PROBE_TIMEOUT.min(Duration::from_millis(
            gateway.config.upstream.connect_timeout_ms.max(1),
        ));
        let answer = gateway.upstream.probe(timeout).await;
        *last = Some((Instant::now(), answer.clone()));
        answer
    }
}

/// `GET /healthz`: the process is alive.
pub async fn alive() -> &'static str {
    "ok"
}

/// `GET /readyz`: 200 when the mapping is loaded and the upstream is reachable, else 503
/// with the reason. Both answers name the mapping and configuration hashes in use, and the
/// restart-only settings changed in the configuration file since start.
pub async fn ready(State(gateway): State<Arc<Gateway>>) -> Response {
    let mapping = gateway.mapping.load_full();
    let restart_required: Vec<&str> = gateway.restart_required.iter().map(|p| p.setting).collect();
    let problem = if mapping.resources.is_empty() {
        Some("the mapping serves no resource types".to_owned())
    } else {
        gateway.readiness.upstream(&gateway).await.err()
    };
    match problem {
        None => axum::Json(json!({
            "status": "ready",
            "mapping": mapping.hash,
            "config": gateway.config_hash,
            "restart_required": restart_required,
            "upstream": "reachable",
        }))
        .into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({
                "status": "not ready",
                "mapping": mapping.hash,
                "config": gateway.config_hash,
                "restart_required": restart_required,
                "reason": reason,
            })),
        )
            .into_response(),
    }
}

/// The URL `scimgate health` checks by default: `/healthz` on the configured listener,
/// with a wildcard address replaced by loopback.
pub fn default_health_url(listen: &str) -> String {
    let (host, port) = match listen.rsplit_once(':') {
        Some((h, p)) => (h, p),
        None => (listen, "8080"),
    };
    let host = match host {
        "" | "0.0.0.0" => "127.0.0.1",
        "[::]" | "::" => "[::1]",
        h => h,
    };
    format!("http://{host}:{port}/healthz")
}

/// `scimgate health`: GETs `url`; `Ok` for a 2xx answer within `timeout`. `own_tls`: the
/// URL is the gateway's own HTTPS listener on loopback, whose certificate need not name
/// `127.0.0.1`, so it is not verified.
pub async fn check(url: &str, timeout: Duration, own_tls: bool) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .danger_accept_invalid_certs(own_tls)
        .build()
        .map_err(|e| e.to_string())?;
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("{url} answered {}", response.status().as_u16()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_url_from_listen() {
        assert_eq!(
            default_health_url("0.0.0.0:8080"),
            "http://127.0.0.1:8080/healthz"
        );
        assert_eq!(
            default_health_url("127.0.0.1:9000"),
            "http://127.0.0.1:9000/healthz"
        );
        assert_eq!(default_health_url("[::]:8080"), "http://[::1]:8080/healthz");
        assert_eq!(
            default_health_url("gateway.local:8081"),
            "http://gateway.local:8081/healthz"
        );
    }
}
