//! Which settings a running gateway takes from an edited `config.toml`, and which wait for
//! the next start.
//!
//! Live settings are the ones read afresh by each request (limits, the upstream's token,
//! timeouts and retries, the SCIM keys and the introspection cache's lifetimes). A reload
//! builds a new snapshot of them and swaps it in whole; requests in flight finish on the
//! snapshot they started with.
//!
//! Restart-only settings shape something the process built once and shares between all
//! requests: a bound socket, the log output, the concurrency cap, the breaker's state. A
//! changed value is reported ([`Split::restart_required`]) and the running one is kept.
//! Anything not listed in [`LIVE`] is treated as restart-only, so a setting added later
//! without a decision here can never be half-applied.

use std::collections::BTreeMap;

use serde_json::Value;

use super::Config;

/// Settings a reload applies to the requests that start after it.
pub const LIVE: &[&str] = &[
    "public_url",
    "shutdown_grace_ms",
    "upstream.token",
    "upstream.timeout_ms",
    "upstream.connect_timeout_ms",
    "upstream.queue_wait_ms",
    "upstream.retries",
    "upstream.retry_backoff_ms",
    "auth.cache_ttl_s",
    "auth.negative_ttl_s",
    "auth.cache_capacity",
    "auth.static_keys",
    "limits.body_bytes",
    "limits.max_results",
    "limits.request_timeout_ms",
    "limits.url_bytes",
    "limits.header_bytes",
    "limits.patch_operations",
    "limits.members_per_request",
    "limits.rate_per_second",
    "limits.burst",
    "limits.rate_buckets",
];

/// Settings read only at start, each with the reason.
pub const RESTART_ONLY: &[(&str, &str)] = &[
    ("listen", "the SCIM socket is bound at start"),
    ("admin_listen", "the metrics socket is bound at start"),
    (
        "base_path",
        "it is the SCIM API's address, which clients and probes are configured with",
    ),
    ("mappings", "the watched mapping directory is chosen at start"),
    ("log_format", "the log output is set up at start"),
    ("workers", "the runtime's threads start with the process"),
    (
        "tls.cert",
        "HTTPS is set up on the listener at start (the files themselves are re-read when they change)",
    ),
    (
        "tls.key",
        "HTTPS is set up on the listener at start (the files themselves are re-read when they change)",
    ),
    (
        "upstream.url",
        "the connection pool, circuit breaker and readiness probe belong to one upstream",
    ),
    (
        "upstream.max_concurrent",
        "it sizes the concurrency cap and connection pool that calls in flight hold",
    ),
    (
        "upstream.retry_budget_percent",
        "the retry budget is one bucket shared by every request",
    ),
    (
        "upstream.breaker_failures",
        "the circuit breaker's state is shared by every request",
    ),
    (
        "upstream.breaker_cooldown_ms",
        "the circuit breaker's state is shared by every request",
    ),
    (
        "auth.mode",
        "switching between introspection and static keys changes who is let in: do it deliberately",
    ),
];

/// A restart-only setting whose value in the file differs from the one serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Dotted name, e.g. `listen` or `upstream.max_concurrent`.
    pub setting: &'static str,
    /// Why it waits for a restart.
    pub why: &'static str,
    /// The value still in use, for the log (restart-only settings hold no secrets; an
    /// upstream URL's user and password are left out).
    pub serving: String,
}

/// What an edited configuration means for a running gateway.
#[derive(Debug, Clone)]
pub struct Split {
    /// The configuration to serve: the edited one with every restart-only setting at its
    /// running value.
    pub effective: Config,
    /// Live settings whose value changes. Names only: some are secrets.
    pub changed: Vec<&'static str>,
    /// Restart-only settings whose value in the file differs from the running one.
    pub restart_required: Vec<Pending>,
}

/// Why two configurations could not be compared (a serialisation that cannot happen for
/// the types involved, reported rather than unwrapped).
#[derive(Debug, thiserror::Error)]
#[error("cannot compare configurations: {0}")]
pub struct SplitError(#[from] serde_json::Error);

/// Compares the running configuration with an edited one (both already validated).
pub fn split(running: &Config, wanted: &Config) -> Result<Split, SplitError> {
    let running_json = serde_json::to_value(running)?;
    let wanted_json = serde_json::to_value(wanted)?;
    let (old, new) = (leaves(&running_json), leaves(&wanted_json));
    let mut effective = running_json.clone();
    let mut changed = Vec::new();
    let mut restart_required = Vec::new();
    for (name, value) in &new {
        if old.get(name) == Some(value) {
            continue;
        }
        if let Some(live) = LIVE.iter().find(|l| **l == name) {
            set(&mut effective, name, (*value).clone());
            changed.push(*live);
        } else {
            let (setting, why) = RESTART_ONLY
                .iter()
                .find(|(n, _)| *n == name)
                .copied()
                .unwrap_or(("(unclassified setting)", "it is read only at start"));
            restart_required.push(Pending {
                setting,
                why,
                serving: shown(name, old.get(name).copied()),
            });
        }
    }
    Ok(Split {
        effective: serde_json::from_value(effective)?,
        changed,
        restart_required,
    })
}

/// Every setting by dotted name. Lists (`auth.static_keys`) are one setting.
fn leaves(value: &Value) -> BTreeMap<String, &Value> {
    fn walk<'a>(prefix: &str, value: &'a Value, out: &mut BTreeMap<String, &'a Value>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    let name = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&name, v, out);
                }
            }
            v => {
                out.insert(prefix.to_owned(), v);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", value, &mut out);
    out
}

/// Sets the setting `name` (dotted) in a serialised configuration.
fn set(root: &mut Value, name: &str, value: Value) {
    let mut at = root;
    let mut parts = name.split('.').peekable();
    while let Some(part) = parts.next() {
        let Value::Object(map) = at else { return };
        if parts.peek().is_none() {
            map.insert(part.to_owned(), value);
            return;
        }
        at = map.entry(part.to_owned()).or_insert(Value::Null);
    }
}

/// A running value as the log shows it.
fn shown(name: &str, value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "(not set)".to_owned(),
        Some(Value::String(s)) if name == "upstream.url" => match url::Url::parse(s) {
            Ok(mut u) => {
                let _ = u.set_username("");
                let _ = u.set_password(None);
                u.to_string()
            }
            Err(_) => "(unparsable URL)".to_owned(),
        },
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{StaticKey, TlsConfig};

    #[test]
    fn every_setting_is_classified_once() {
        let json = serde_json::to_value(Config::default()).expect("serialises");
        let all = leaves(&json);
        for name in all.keys() {
            let live = LIVE.contains(&name.as_str());
            let restart = RESTART_ONLY.iter().any(|(n, _)| n == name);
            assert!(
                live != restart,
                "{name}: live {live}, restart-only {restart}"
            );
        }
        assert_eq!(all.len(), LIVE.len() + RESTART_ONLY.len());
    }

    #[test]
    fn live_settings_apply_and_restart_only_ones_are_kept_and_reported() {
        let running = Config::default();
        let mut wanted = running.clone();
        wanted.limits.body_bytes = 10;
        wanted.upstream.token = Some("new-secret".into());
        wanted.auth.static_keys.push(StaticKey {
            sha256: "ab".repeat(32),
            tenant: BTreeMap::new(),
            key_id: None,
        });
        wanted.listen = "127.0.0.1:1".into();
        wanted.upstream.url = "http://user:pw@app:3000/api".into();
        wanted.upstream.max_concurrent = 3;
        wanted.tls = TlsConfig {
            cert: Some("/c".into()),
            key: Some("/k".into()),
        };
        let split = split(&running, &wanted).expect("split");
        assert_eq!(
            split.changed,
            vec!["auth.static_keys", "limits.body_bytes", "upstream.token"]
        );
        let pending: Vec<_> = split.restart_required.iter().map(|p| p.setting).collect();
        assert_eq!(
            pending,
            vec![
                "listen",
                "tls.cert",
                "tls.key",
                "upstream.max_concurrent",
                "upstream.url"
            ]
        );
        assert_eq!(split.restart_required[0].serving, "127.0.0.1:8080");
        assert_eq!(split.restart_required[1].serving, "(not set)");
        let e = &split.effective;
        assert_eq!(e.limits.body_bytes, 10);
        assert_eq!(e.upstream.token.as_deref(), Some("new-secret"));
        assert_eq!(e.auth.static_keys.len(), 1);
        assert_eq!(e.listen, running.listen);
        assert_eq!(e.upstream.url, running.upstream.url);
        assert_eq!(e.upstream.max_concurrent, running.upstream.max_concurrent);
        assert_eq!(e.tls, running.tls);
        // Nothing printed about a restart-only URL carries its credentials.
        let mut running_with_creds = running.clone();
        running_with_creds.upstream.url = "http://user:pw@app:3000/".into();
        let back = super::split(&running_with_creds, &running).expect("split");
        assert_eq!(back.restart_required[0].serving, "http://app:3000/");
    }

    #[test]
    fn an_unchanged_file_changes_nothing() {
        let c = Config::default();
        let split = split(&c, &c).expect("split");
        assert!(split.changed.is_empty() && split.restart_required.is_empty());
        assert_eq!(split.effective, c);
        assert_eq!(split.effective.hash(), c.hash());
    }
}
