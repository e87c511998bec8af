//! Live mapping reload: the mapping directory is polled and reloaded on SIGHUP. A new set is
//! compiled fully before it is swapped in; a broken edit is logged with file, line and
//! reason and the previous mapping keeps serving. Requests in flight keep the mapping they
//! started with (they hold their own `Arc`).
//!
//! Polling by content hash rather than filesystem events: editors save by rename and
//! Kubernetes ConfigMaps swap a symlink, and both look the same to a hash of the files'
//! contents. A few small files read twice a second cost nothing.
//!
//! Each swap counts as `scimgate_mapping_reloads_total{result="success"}`; each distinct
//! broken edit once as `result="rejected"` (not once per poll while it stays broken).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::Gateway;
use crate::mapping::{load_sources, read_dir_sources, sources_hash};

/// What a reload attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// The files are what is serving already.
    Unchanged,
    /// A new mapping (this hash) is serving.
    Swapped(String),
    /// The files do not compile; the previous mapping keeps serving.
    Rejected(String),
}

/// Checks `dir` once and swaps in a new mapping if it changed and compiles.
pub fn reload_once(gateway: &Arc<Gateway>, dir: &std::path::Path, force: bool) -> Reloaded {
    let sources = match read_dir_sources(dir) {
        Ok(s) => s,
        Err(e) => return Reloaded::Rejected(e.to_string()),
    };
    let hash = sources_hash(&sources);
    if !force && hash == gateway.mapping.load().hash {
        return Reloaded::Unchanged;
    }
    let mapping = match load_sources(&sources) {
        Ok(m) => m,
        Err(e) => return Reloaded::Rejected(e.to_string()),
    };
    // Checked against the authentication settings serving now, with no configuration
    // reload swapping others in meanwhile.
    let live = gateway.live();
    let _reloading = live.as_ref().map(|l| l.reloading());
    let current = gateway.current();
    if let Err(e) = current.auth.accepts(&mapping) {
        return Reloaded::Rejected(e.to_string());
    }
    current.mapping.store(Arc::new(mapping));
    current.auth.forget_all();
    Reloaded::Swapped(hash)
}

/// The pace of a watcher: the next poll after `interval`, or at once on SIGHUP.
pub(super) struct Wake {
    interval: Duration,
    #[cfg(unix)]
    hangup: Option<tokio::signal::unix::Signal>,
}

impl Wake {
    /// Listens for SIGHUP from now on (where signals exist).
    pub(super) fn new(interval: Duration) -> Wake {
        Wake {
            interval,
            #[cfg(unix)]
            hangup: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
        }
    }

    /// Waits for the next poll; `true` when SIGHUP asked for it (a forced reload).
    pub(super) async fn next(&mut self) -> bool {
        #[cfg(unix)]
        if let Some(h) = self.hangup.as_mut() {
            return tokio::select! {
                _ = tokio::time::sleep(self.interval) => false,
                _ = h.recv() => true,
            };
        }
        tokio::time::sleep(self.interval).await;
        false
    }
}

/// Watches `dir` every `interval` and on SIGHUP, for as long as the process runs.
pub fn spawn(gateway: Arc<Gateway>, dir: PathBuf, interval: Duration) {
    tokio::spawn(async move {
        let mut wake = Wake::new(interval);
        let mut last_rejected: Option<String> = None;
        let mut seen: Option<Vec<(PathBuf, u64, std::time::SystemTime)>> = None;
        loop {
            let forced = wake.next().await;
            // Reading and hashing the files only when their metadata moved keeps an idle
            // gateway's polling to a few `stat` calls.
            let now = fingerprint(&dir);
            if !forced && now.is_some() && now == seen {
                continue;
            }
            seen = now;
            let dir2 = dir.clone();
            let gw = gateway.clone();
            let outcome = tokio::task::spawn_blocking(move || reload_once(&gw, &dir2, forced))
                .await
                .unwrap_or_else(|e| Reloaded::Rejected(format!("reload task failed: {e}")));
            match outcome {
                Reloaded::Unchanged => {}
                Reloaded::Swapped(hash) => {
                    last_rejected = None;
                    gateway.metrics.record_reload(true);
                    let config = gateway.current().config_hash.clone();
                    tracing::info!(mapping = %hash, config = %config, dir = %dir.display(), "mapping reloaded");
                }
                Reloaded::Rejected(why) => {
                    // Log a broken edit once, not on every poll.
                    if last_rejected.as_deref() != Some(why.as_str()) {
                        gateway.metrics.record_reload(false);
                        tracing::error!(dir = %dir.display(), serving = %gateway.mapping.load().hash, "mapping reload rejected, previous mapping keeps serving:\n{why}");
                        last_rejected = Some(why);
                    }
                }
            }
        }
    });
}

/// Name, size and modification time of each entry of `dir` (symlinks followed, so a
/// ConfigMap's swapped `..data` link shows), sorted; `None` when it cannot be read.
fn fingerprint(dir: &std::path::Path) -> Option<Vec<(PathBuf, u64, std::time::SystemTime)>> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let path = e.path();
            let meta = std::fs::metadata(&path).ok()?;
            Some((path, meta.len(), meta.modified().ok()?))
        })
        .collect();
    entries.sort();
    Some(entries)
}
