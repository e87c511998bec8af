//! Live configuration reload: the file given to `scimgate serve` is polled and re-read on
//! SIGHUP, the same way as the mapping directory ([`super::reload`]). The file and the
//! process's `SCIMGATE_*` variables are evaluated exactly as at start; the whole new
//! configuration is validated first, and a file that does not load (bad TOML, a bad
//! value, keys that do not suit the mapping) is logged with its reason and changes
//! nothing.
//!
//! What a valid edit changes is split by [`crate::config::runtime`]: live settings go into
//! a new gateway snapshot swapped in atomically ([`super::live`]); restart-only settings
//! that changed are logged once per setting, listed by `/readyz` under
//! `restart_required`, counted by `scimgate_config_restart_required`, and keep their
//! running values. Logs name settings, never their values when they may be secret.
//!
//! Polling looks at the file's metadata (through symlinks: a Kubernetes ConfigMap swaps
//! a `..data` link; editors rename a new file over the old) and reads and hashes the
//! file only when that moved.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use super::auth::Authenticator;
use super::limits::RateLimiter;
use super::reload::Wake;
use super::Gateway;
use crate::config::runtime::{self, Pending};
use crate::config::{Config, ConfigError};

/// Where the configuration comes from: the file, the environment, and the command line's
/// overrides (re-applied on each reload, so they never look like edits).
#[derive(Debug, Clone)]
pub struct ConfigSource {
    /// `--config`: missing is fine at start (defaults and environment apply).
    pub path: PathBuf,
    /// `--mappings`, which overrides the file's `mappings`.
    pub mappings: Option<PathBuf>,
}

impl ConfigSource {
    /// Defaults, the file, `SCIMGATE_*` variables, then the command line's overrides.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut config = Config::load(&self.path)?;
        if let Some(dir) = &self.mappings {
            config.mappings = dir.clone();
        }
        Ok(config)
    }
}

/// Why an edited configuration was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{path}: cannot read it: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is gone; the running configuration is kept")]
    Gone { path: String },
    #[error("{path}: {source}")]
    Invalid { path: String, source: ConfigError },
    #[error("{path}: {why}")]
    Unusable { path: String, why: String },
    #[error(transparent)]
    Compare(#[from] runtime::SplitError),
}

/// What a reload changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Hash of the configuration now serving.
    pub config_hash: String,
    /// Live settings that changed (names only).
    pub changed: Vec<&'static str>,
    /// Restart-only settings whose file value differs from the one serving.
    pub restart_required: Vec<Pending>,
}

/// What a reload attempt did.
#[derive(Debug)]
pub enum Reloaded {
    /// Nothing serving would change.
    Unchanged,
    /// A new snapshot serves (or only the restart-required list changed).
    Applied(Applied),
    /// The file does not load; the running configuration keeps serving.
    Rejected(ReloadError),
}

/// Swaps in a gateway serving `wanted`'s live settings; `None` when nothing would change.
pub fn apply(gateway: &Arc<Gateway>, wanted: &Config) -> Result<Option<Applied>, ReloadError> {
    let unusable = |why: String| ReloadError::Unusable {
        path: "configuration".into(),
        why,
    };
    let live = gateway
        .live()
        .ok_or_else(|| unusable("the gateway is shutting down".into()))?;
    let _reloading = live.reloading();
    let current = gateway.current();
    let split = runtime::split(&current.config, wanted)?;
    if split.changed.is_empty() && split.restart_required == current.restart_required {
        return Ok(None);
    }
    let next = &split.effective;
    // Parts whose settings did not change are shared, so their state (cached tokens,
    // rate-limit buckets, the connection pool) carries over.
    let auth = if next.auth == current.config.auth {
        current.auth.clone()
    } else {
        // A new authenticator has an empty introspection cache: a revoked key or a
        // shortened TTL cannot be outlived by an answer cached under the old settings.
        let mapping = current.mapping.load();
        Arc::new(Authenticator::new(&next.auth, &mapping).map_err(|e| unusable(format!("{e:#}")))?)
    };
    let upstream = current
        .upstream
        .reconfigured(&super::upstream_settings(&next.upstream))
        .map_err(|e| unusable(format!("{e:#}")))?;
    let rate_limiter = if RateLimiter::differs(&current.config.limits, &next.limits) {
        Arc::new(current.rate_limiter.reconfigured(&next.limits))
    } else {
        current.rate_limiter.clone()
    };
    let snapshot = current.snapshot(
        &live,
        split.effective,
        upstream,
        auth,
        rate_limiter,
        split.restart_required.clone(),
    );
    let applied = Applied {
        config_hash: snapshot.config_hash.clone(),
        changed: split.changed,
        restart_required: split.restart_required,
    };
    live.swap_in(Arc::new(snapshot));
    Ok(Some(applied))
}

/// Reads `source` once; applies it when its text differs from `seen` (the hash of the
/// text last applied, updated here) or when `force`d.
pub fn reload_once(
    gateway: &Arc<Gateway>,
    source: &ConfigSource,
    seen: &mut Option<[u8; 32]>,
    force: bool,
) -> Reloaded {
    let path = source.path.display().to_string();
    let text = match std::fs::read(&source.path) {
        Ok(t) => t,
        // A file that was never there leaves defaults and environment as they were; one
        // that vanished (deleted before a rewrite) must not reset settings to defaults.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return match seen {
                None => Reloaded::Unchanged,
                Some(_) => Reloaded::Rejected(ReloadError::Gone { path }),
            }
        }
        Err(e) => return Reloaded::Rejected(ReloadError::Read { path, source: e }),
    };
    let hash: [u8; 32] = Sha256::digest(&text).into();
    if !force && *seen == Some(hash) {
        return Reloaded::Unchanged;
    }
    let wanted = match source.load() {
        Ok(c) => c,
        Err(e) => return Reloaded::Rejected(ReloadError::Invalid { path, source: e }),
    };
    match apply(gateway, &wanted) {
        Ok(outcome) => {
            *seen = Some(hash);
            outcome.map_or(Reloaded::Unchanged, Reloaded::Applied)
        }
        Err(ReloadError::Unusable { why, .. }) => {
            Reloaded::Rejected(ReloadError::Unusable { path, why })
        }
        Err(e) => Reloaded::Rejected(e),
    }
}

/// Watches `source.path` every `interval` and on SIGHUP, for as long as the process runs.
pub fn spawn(gateway: Arc<Gateway>, source: ConfigSource, interval: Duration) {
    tokio::spawn(async move {
        let mut wake = Wake::new(interval);
        let mut last_rejected: Option<String> = None;
        // The text loaded at start is not known here; the first look loads it and finds
        // nothing to change (unless the file was edited meanwhile).
        let mut seen_text: Option<[u8; 32]> = None;
        let mut seen_meta = fingerprint(&source.path);
        step(&gateway, &source, &mut seen_text, &mut last_rejected, false).await;
        loop {
            let forced = wake.next().await;
            // Reading and hashing the file only when its metadata moved keeps an idle
            // gateway's polling to a `stat`.
            let now = fingerprint(&source.path);
            if !forced && now == seen_meta {
                continue;
            }
            seen_meta = now;
            step(
                &gateway,
                &source,
                &mut seen_text,
                &mut last_rejected,
                forced,
            )
            .await;
        }
    });
}

/// One reload attempt, logged and counted.
async fn step(
    gateway: &Arc<Gateway>,
    source: &ConfigSource,
    seen: &mut Option<[u8; 32]>,
    last_rejected: &mut Option<String>,
    forced: bool,
) {
    let (gw, src, mut s) = (gateway.clone(), source.clone(), *seen);
    let outcome = tokio::task::spawn_blocking(move || {
        let r = reload_once(&gw, &src, &mut s, forced);
        (r, s)
    })
    .await;
    let outcome = match outcome {
        Ok((r, s)) => {
            *seen = s;
            r
        }
        Err(e) => Reloaded::Rejected(ReloadError::Unusable {
            path: source.path.display().to_string(),
            why: format!("reload task failed: {e}"),
        }),
    };
    let file = source.path.display();
    let live = gateway.live();
    match outcome {
        Reloaded::Unchanged => {
            if forced {
                tracing::info!(file = %file, "configuration re-read on SIGHUP: nothing to change");
            }
        }
        Reloaded::Applied(applied) => {
            *last_rejected = None;
            if let Some(live) = &live {
                live.record_reload(true);
            }
            let mapping = gateway.mapping.load().hash.clone();
            tracing::info!(
                config = %applied.config_hash,
                mapping = %mapping,
                changed = %applied.changed.join(", "),
                file = %file,
                "configuration reloaded"
            );
            for p in &applied.restart_required {
                tracing::warn!(
                    setting = p.setting,
                    file = %file,
                    "{} changed: needs a restart ({}); still serving with {}",
                    p.setting,
                    p.why,
                    p.serving
                );
            }
        }
        Reloaded::Rejected(why) => {
            let why = why.to_string();
            // Log and count a broken edit once, not on every poll.
            if last_rejected.as_deref() != Some(why.as_str()) {
                if let Some(live) = &live {
                    live.record_reload(false);
                }
                let serving = gateway.current().config_hash.clone();
                tracing::error!(file = %file, config = %serving, "configuration reload rejected, the running configuration keeps serving: {why}");
                *last_rejected = Some(why);
            }
        }
    }
}

/// The file's resolved path (a swapped symlink changes it), size, modification time and
/// inode; `None` when it cannot be read.
type Fingerprint = (PathBuf, u64, SystemTime, u64);

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let resolved = std::fs::canonicalize(path).ok()?;
    let meta = std::fs::metadata(&resolved).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some((resolved, meta.len(), meta.modified().ok()?, inode))
}

/// The configuration reload metrics, in the Prometheus text format (appended to
/// `/metrics`).
pub fn render_metrics(gateway: &Gateway) -> String {
    let (applied, rejected) = gateway.live().map_or((0, 0), |l| l.reloads());
    format!(
        "# HELP scimgate_config_reloads_total Configuration reloads: success (applied) or rejected (the running configuration keeps serving).\n\
         # TYPE scimgate_config_reloads_total counter\n\
         scimgate_config_reloads_total{{result=\"success\"}} {applied}\n\
         scimgate_config_reloads_total{{result=\"rejected\"}} {rejected}\n\
         # HELP scimgate_config_restart_required Settings changed in the configuration file that take effect only after a restart.\n\
         # TYPE scimgate_config_restart_required gauge\n\
         scimgate_config_restart_required {}\n\
         # HELP scimgate_config_info The configuration serving (hash of its effective settings).\n\
         # TYPE scimgate_config_info gauge\n\
         scimgate_config_info{{hash=\"{}\"}} 1\n",
        gateway.restart_required.len(),
        gateway.config_hash
    )
}
