//! `config.toml` layered with `SCIMGATE_*` environment variables (`__` for nesting).
//! Secrets (the upstream service token) live here or in the environment, never in mappings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The gateway's configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
}

/// The upstream web app.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub url: String,
    /// The gateway's own service credential.
    pub token: Option<String>,
    /// Per upstream call.
    pub timeout_ms: u64,
    pub connect_timeout_ms: u64,
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub body_bytes: usize,
    /// Largest `count` served in one list page; larger requests are clamped.
    pub max_results: usize,
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
            },
            log_format: "text".into(),
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
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return invalid(format!(
                "log_format {:?} must be text or json",
                self.log_format
            ));
        }
        Ok(())
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
