//! `config.toml` layered with `SCIMGATE_*` environment variables (`__` for nesting).
//! Secrets (the upstream service token) live here or in the environment, never in mappings.
//!
//! [`runtime`] says which settings a running gateway takes from an edited file and which
//! need a restart.

pub mod runtime;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Most worker threads `workers` may ask for.
pub const MAX_WORKERS: usize = 1024;

/// The gateway's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// SCIM listener address.
    pub listen: String,
    /// Admin listener address (`/metrics`); empty disables it. Keep it off the public
    /// network: it is not authenticated.
    pub admin_listen: String,
    /// Path prefix of the SCIM API.
    pub base_path: String,
    /// External base URL for `Location` and `meta.location` (otherwise taken from `Host`).
    pub public_url: Option<String>,
    /// Mapping directory.
    pub mappings: PathBuf,
    pub upstream: UpstreamConfig,
    pub auth: AuthConfig,
    pub limits: Limits,
    /// Log format: `text` or `json`.
    pub log_format: String,
    /// On SIGTERM: stop accepting, let requests in flight finish for at most this long.
    pub shutdown_grace_ms: u64,
    /// Threads that serve requests; 0: one per CPU core. Beside an app on a busy host,
    /// fewer threads cost less CPU per request (less waking of idle threads) but cap the
    /// gateway at that many cores (BENCHMARKS.md).
    pub workers: usize,
    /// HTTPS on the SCIM listener (off unless both files are named).
    #[serde(default)]
    pub tls: TlsConfig,
}

/// Terminating HTTPS in the gateway. Both paths or neither; the files are re-read when
/// they change, so a renewed certificate needs no restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
}

impl TlsConfig {
    /// The certificate and key paths, when HTTPS is on.
    pub fn paths(&self) -> Option<(&Path, &Path)> {
        match (&self.cert, &self.key) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            _ => None,
        }
    }
}

/// The upstream web app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub url: String,
    /// The gateway's own service credential.
    pub token: Option<String>,
    /// Per upstream call.
    pub timeout_ms: u64,
    pub connect_timeout_ms: u64,
    /// Most upstream calls in flight at once, over all SCIM requests.
    pub max_concurrent: usize,
    /// How long a call waits for one of those slots before the SCIM request gets a 503.
    pub queue_wait_ms: u64,
    /// Most retries of one safe call (GET/HEAD on transient failures; PUT/DELETE only when
    /// no connection could be made; POST and PATCH never). 0 disables retries.
    pub retries: u32,
    /// First retry pause; each further retry doubles it (with jitter), at most 2 s.
    pub retry_backoff_ms: u64,
    /// Retries allowed as a percentage of calls (plus a small reserve), so that retries
    /// cannot multiply the load on an upstream that is already failing.
    pub retry_budget_percent: u32,
    /// Consecutive connection failures or timeouts that open the circuit breaker; 0
    /// disables it.
    pub breaker_failures: u32,
    /// How long an open breaker fails calls fast before letting one probe through.
    pub breaker_cooldown_ms: u64,
}

/// How SCIM bearer tokens are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Ask the upstream (the mapping's `auth.introspect`).
    Introspect,
    /// Hashes listed in `auth.static_keys`.
    Static,
}

/// Authentication settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// Seconds a positive introspection answer is reused.
    pub cache_ttl_s: u64,
    /// Seconds a negative introspection answer is reused.
    pub negative_ttl_s: u64,
    /// Most tokens remembered at once.
    pub cache_capacity: u64,
    #[serde(default)]
    pub static_keys: Vec<StaticKey>,
}

/// A statically configured SCIM key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticKey {
    /// Hex SHA-256 of the token (`scimgate hash-token`).
    pub sha256: String,
    /// Tenant fields, e.g. `{ company_id = 42 }`.
    pub tenant: BTreeMap<String, Value>,
    /// Sent upstream for the audit log.
    pub key_id: Option<String>,
}

/// Inbound limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub body_bytes: usize,
    /// Largest `count` served in one list page; larger requests are clamped.
    pub max_results: usize,
    /// Time one SCIM request may take in all, upstream calls included (504 after it).
    pub request_timeout_ms: u64,
    /// Longest request target, path and query (414 above).
    pub url_bytes: usize,
    /// Most header bytes, names and values together (431 above).
    pub header_bytes: usize,
    /// Most operations in one PATCH request (413 above).
    pub patch_operations: usize,
    /// Most distinct members one request may name (413 above).
    pub members_per_request: usize,
    /// Requests per second each tenant may make (token bucket refill); 0 disables the
    /// rate limit.
    pub rate_per_second: u32,
    /// Requests a tenant may make at once after being idle (token bucket size).
    pub burst: u32,
    /// Most tenants whose buckets are remembered; idle (full) buckets go first.
    pub rate_buckets: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            admin_listen: "127.0.0.1:9090".into(),
            base_path: "/scim/v2".into(),
            public_url: None,
            mappings: PathBuf::from("mappings/blacksmith"),
            upstream: UpstreamConfig {
                url: "http://127.0.0.1:3000".into(),
                token: None,
                timeout_ms: 10_000,
                connect_timeout_ms: 2_000,
                max_concurrent: 128,
                queue_wait_ms: 1_000,
                retries: 2,
                retry_backoff_ms: 50,
                retry_budget_percent: 10,
                breaker_failures: 5,
                breaker_cooldown_ms: 5_000,
            },
            auth: AuthConfig {
                mode: AuthMode::Introspect,
                cache_ttl_s: 60,
                negative_ttl_s: 5,
                cache_capacity: 10_000,
                static_keys: Vec::new(),
            },
            limits: Limits {
                body_bytes: 1024 * 1024,
                max_results: 100,
                request_timeout_ms: 55_000,
                url_bytes: 16 * 1024,
                header_bytes: 16 * 1024,
                patch_operations: 1_000,
                members_per_request: 10_000,
                rate_per_second: 100,
                burst: 200,
                rate_buckets: 10_000,
            },
            log_format: "text".into(),
            shutdown_grace_ms: 25_000,
            workers: 0,
            tls: TlsConfig::default(),
        }
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Figment(#[from] Box<figment::Error>),
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Defaults, then `path` (when it exists), then `SCIMGATE_*` variables.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::from_figment(
            Figment::from(Serialized::defaults(Config::default()))
                .merge(Toml::file(path))
                .merge(Env::prefixed("SCIMGATE_").split("__")),
        )
    }

    fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if !self.base_path.starts_with('/')
            || self.base_path.ends_with('/') && self.base_path != "/"
        {
            return invalid(format!(
                "base_path {:?} must start with / and not end with /",
                self.base_path
            ));
        }
        if self.limits.max_results == 0 {
            return invalid("limits.max_results must be at least 1".into());
        }
        for (name, value) in [
            ("limits.request_timeout_ms", self.limits.request_timeout_ms),
            ("limits.url_bytes", self.limits.url_bytes as u64),
            ("limits.header_bytes", self.limits.header_bytes as u64),
            (
                "limits.patch_operations",
                self.limits.patch_operations as u64,
            ),
            (
                "limits.members_per_request",
                self.limits.members_per_request as u64,
            ),
            ("limits.rate_buckets", self.limits.rate_buckets),
            (
                "upstream.max_concurrent",
                self.upstream.max_concurrent as u64,
            ),
        ] {
            if value == 0 {
                return invalid(format!("{name} must be at least 1"));
            }
        }
        if self.limits.rate_per_second > 0 && self.limits.burst == 0 {
            return invalid("limits.burst must be at least 1 when rate_per_second is set".into());
        }
        if self.upstream.retry_budget_percent > 100 {
            return invalid("upstream.retry_budget_percent must be at most 100".into());
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return invalid("tls.cert and tls.key must be given together".into());
        }
        for key in &self.auth.static_keys {
            if key.sha256.len() != 64 || hex::decode(&key.sha256).is_err() {
                return invalid(
                    "auth.static_keys: sha256 must be 64 hex digits (see `scimgate hash-token`)"
                        .into(),
                );
            }
        }
        if !self.admin_listen.is_empty()
            && self.admin_listen == self.listen
            && !self.listen.ends_with(":0")
        {
            return invalid(format!(
                "admin_listen {:?} must differ from listen: /metrics is never served on the SCIM port",
                self.admin_listen
            ));
        }
        if self.workers > MAX_WORKERS {
            return invalid(format!(
                "workers {} is more than {MAX_WORKERS}",
                self.workers
            ));
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return invalid(format!(
                "log_format {:?} must be text or json",
                self.log_format
            ));
        }
        Ok(())
    }

    /// A short hash of the effective configuration (file and environment together), shown
    /// by `/readyz` and in reload logs so an operator can tell which settings serve. It is
    /// a digest, so the service token in it is not revealed.
    pub fn hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let text = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(&text))[..16].to_owned()
    }

    /// The base path with a trailing `/` removed (`/` becomes empty).
    pub fn base_path_trimmed(&self) -> &str {
        self.base_path.trim_end_matches('/')
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail API returns its large error type
mod tests {
    use super::*;

    #[test]
    fn file_then_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "config.toml",
                "listen = \"0.0.0.0:9000\"\n[upstream]\nurl = \"http://app:3000\"\ntimeout_ms = 5\n",
            )?;
            jail.set_env("SCIMGATE_UPSTREAM__TOKEN", "svc");
            jail.set_env("SCIMGATE_LIMITS__BODY_BYTES", "2048");
            jail.set_env("SCIMGATE_AUTH__MODE", "static");
            jail.set_env("SCIMGATE_ADMIN_LISTEN", "0.0.0.0:9191");
            let c = Config::load(Path::new("config.toml")).map_err(|e| e.to_string())?;
            assert_eq!(c.listen, "0.0.0.0:9000");
            assert_eq!(c.upstream.url, "http://app:3000");
            assert_eq!(c.upstream.timeout_ms, 5);
            assert_eq!(c.upstream.token.as_deref(), Some("svc"));
            assert_eq!(c.limits.body_bytes, 2048);
            assert_eq!(c.auth.mode, AuthMode::Static);
            assert_eq!(c.auth.cache_ttl_s, 60);
            assert_eq!(c.base_path, "/scim/v2");
            assert_eq!(c.admin_listen, "0.0.0.0:9191");
            Ok(())
        });
    }

    #[test]
    fn limits_resilience_and_tls_keys() {
        figment::Jail::expect_with(|jail| {
            let c = Config::load(Path::new("config.toml")).map_err(|e| e.to_string())?;
            assert_eq!(c.limits.request_timeout_ms, 55_000);
            assert_eq!(c.limits.patch_operations, 1_000);
            assert_eq!(c.limits.members_per_request, 10_000);
            assert_eq!((c.limits.rate_per_second, c.limits.burst), (100, 200));
            assert_eq!(c.upstream.retries, 2);
            assert!(c.tls.paths().is_none());
            jail.create_file(
                "config.toml",
                "[limits]\nrate_per_second = 5\nurl_bytes = 4096\n[upstream]\nbreaker_failures = 0\n[tls]\ncert = \"/etc/tls.crt\"\nkey = \"/etc/tls.key\"\n",
            )?;
            jail.set_env("SCIMGATE_LIMITS__BURST", "9");
            jail.set_env("SCIMGATE_UPSTREAM__MAX_CONCURRENT", "16");
            jail.set_env("SCIMGATE_TLS__KEY", "/run/secrets/tls.key");
            let c = Config::load(Path::new("config.toml")).map_err(|e| e.to_string())?;
            assert_eq!((c.limits.rate_per_second, c.limits.burst), (5, 9));
            assert_eq!(c.limits.url_bytes, 4096);
            assert_eq!(c.upstream.breaker_failures, 0);
            assert_eq!(c.upstream.max_concurrent, 16);
            assert_eq!(
                c.tls.paths(),
                Some((Path::new("/etc/tls.crt"), Path::new("/run/secrets/tls.key")))
            );
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            for bad in [
                "[tls]\ncert = \"/etc/tls.crt\"\n",
                "[limits]\npatch_operations = 0\n",
                "[limits]\nrate_per_second = 10\nburst = 0\n",
                "[upstream]\nmax_concurrent = 0\n",
                "[upstream]\nretry_budget_percent = 150\n",
                "[tls]\ncertificate = \"x\"\n",
                "workers = 1025\n",
                "workers = -1\n",
            ] {
                jail.create_file("config.toml", bad)?;
                assert!(Config::load(Path::new("config.toml")).is_err(), "{bad}");
            }
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("config.toml", "lissten = \"x\"\n")?;
            assert!(Config::load(Path::new("config.toml")).is_err());
            jail.create_file("config.toml", "base_path = \"scim\"\n")?;
            assert!(Config::load(Path::new("config.toml")).is_err());
            jail.create_file(
                "config.toml",
                "listen = \"0.0.0.0:80\"\nadmin_listen = \"0.0.0.0:80\"\n",
            )?;
            assert!(Config::load(Path::new("config.toml")).is_err());
            Ok(())
        });
    }
}
