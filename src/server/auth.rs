//! Authentication of the SCIM bearer token, resolving it to a tenant.
//!
//! Tokens are reduced to their SHA-256 at once; only the hash is compared, cached or logged
//! about. Static keys are compared in constant time; introspection answers are cached in a
//! bounded cache (positive and negative TTLs), and concurrent checks of one token share one
//! upstream call.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{AuthConfig, AuthMode};
use crate::mapping::template::Vars;
use crate::mapping::Mapping;
use crate::scim::ScimError;
use crate::upstream::Upstream;

/// The authenticated company (or whatever the mapping's tenant is).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tenant {
    fields: BTreeMap<String, Value>,
    /// The SCIM key's id, for the upstream's audit log.
    pub key_id: Option<String>,
}

impl Tenant {
    /// A tenant with these fields.
    pub fn new(fields: BTreeMap<String, Value>, key_id: Option<String>) -> Tenant {
        Tenant { fields, key_id }
    }

    /// One tenant field.
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.fields.get(field)
    }
}

/// SHA-256 of a token.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[derive(Clone)]
enum Cached {
    Valid(Arc<Tenant>),
    Invalid,
}

struct Ttl {
    positive: Duration,
    negative: Duration,
}

impl moka::Expiry<[u8; 32], Cached> for Ttl {
    fn expire_after_create(&self, _: &[u8; 32], value: &Cached, _: Instant) -> Option<Duration> {
        Some(match value {
            Cached::Valid(_) => self.positive,
            Cached::Invalid => self.negative,
        })
    }
}

/// Checks bearer tokens.
pub struct Authenticator {
    mode: AuthMode,
    static_keys: Vec<([u8; 32], Arc<Tenant>)>,
    cache: Cache<[u8; 32], Cached>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the bearer token is not valid")]
    Rejected,
    #[error("the token introspection endpoint is unavailable: {0}")]
    Unavailable(String),
}

impl From<AuthError> for ScimError {
    fn from(e: AuthError) -> ScimError {
        match e {
            AuthError::Rejected => ScimError::unauthorized(
                "the bearer token is missing, unknown or not allowed to provision",
            ),
            AuthError::Unavailable(why) => {
                let mut err = ScimError::new(
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot check the bearer token right now: {why}"),
                );
                err.retry_after = Some(5);
                err
            }
        }
    }
}

impl Authenticator {
    /// Builds the authenticator; static keys must carry every tenant field the mapping uses.
    pub fn new(config: &AuthConfig, mapping: &Mapping) -> anyhow::Result<Authenticator> {
        let mut static_keys = Vec::new();
        if config.mode == AuthMode::Static {
            if config.static_keys.is_empty() {
                anyhow::bail!("auth.mode is static but auth.static_keys is empty");
            }
            for key in &config.static_keys {
                let mut hash = [0u8; 32];
                hex::decode_to_slice(&key.sha256, &mut hash)?;
                for field in &mapping.tenant_fields {
                    if !key.tenant.contains_key(field) {
                        anyhow::bail!(
                            "a static key's tenant lacks {field:?}, which the mapping's paths use"
                        );
                    }
                }
                static_keys.push((
                    hash,
                    Arc::new(Tenant::new(key.tenant.clone(), key.key_id.clone())),
                ));
            }
        } else if mapping.introspect.is_none() {
            anyhow::bail!(
                "auth.mode is introspect but the mapping has no [auth.introspect] section"
            );
        }
        let cache = Cache::builder()
            .max_capacity(config.cache_capacity)
            .expire_after(Ttl {
                positive: Duration::from_secs(config.cache_ttl_s),
                negative: Duration::from_secs(config.negative_ttl_s),
            })
            .build();
        Ok(Authenticator {
            mode: config.mode,
            static_keys,
            cache,
        })
    }

    /// Resolves a bearer token to its tenant.
    pub async fn authenticate(
        &self,
        token: &str,
        mapping: &Mapping,
        upstream: &Upstream,
    ) -> Result<Arc<Tenant>, AuthError> {
        let hash = token_hash(token);
        match self.mode {
            AuthMode::Static => {
                // Every key is compared, so timing says nothing about which one nearly matched.
                let mut found = None;
                for (h, tenant) in &self.static_keys {
                    if bool::from(h.ct_eq(&hash)) {
                        found = Some(tenant.clone());
                    }
                }
                found.ok_or(AuthError::Rejected)
            }
            AuthMode::Introspect => {
                let cached = match self.cache.get(&hash).await {
                    Some(cached) => {
                        crate::server::observe::record_introspection_cache(true);
                        cached
                    }
                    // Boxed: the miss path (the single-flight entry, the introspection
                    // call) is several kilobytes of future that every request would
                    // otherwise carry and copy.
                    None => Box::pin(self.check_and_cache(hash, token, mapping, upstream)).await?,
                };
                match cached {
                    Cached::Valid(t) => Ok(t),
                    Cached::Invalid => Err(AuthError::Rejected),
                }
            }
        }
    }

    /// Runs the introspection call for a token not in the cache, once however many
    /// requests ask for it at the same time, and caches the answer.
    async fn check_and_cache(
        &self,
        hash: [u8; 32],
        token: &str,
        mapping: &Mapping,
        upstream: &Upstream,
    ) -> Result<Cached, AuthError> {
        // Metrics: a miss is a check that ran the introspection call itself (another
        // request may have run it meanwhile).
        let missed = std::sync::atomic::AtomicBool::new(false);
        let cached = self
            .cache
            .try_get_with(hash, async {
                missed.store(true, std::sync::atomic::Ordering::Relaxed);
                introspect(token, mapping, upstream).await
            })
            .await;
        crate::server::observe::record_introspection_cache(
            !missed.load(std::sync::atomic::Ordering::Relaxed),
        );
        cached.map_err(|e| AuthError::Unavailable(e.to_string()))
    }

    /// Can this authenticator serve with `mapping`? (A reload must not strand static keys
    /// without the tenant fields the new paths use.)
    pub fn accepts(&self, mapping: &Mapping) -> anyhow::Result<()> {
        match self.mode {
            AuthMode::Static => {
                for (_, tenant) in &self.static_keys {
                    if let Some(field) = mapping
                        .tenant_fields
                        .iter()
                        .find(|f| tenant.get(f).is_none())
                    {
                        anyhow::bail!(
                            "a static key's tenant lacks {field:?}, which the mapping's paths use"
                        );
                    }
                }
                Ok(())
            }
            AuthMode::Introspect if mapping.introspect.is_none() => {
                anyhow::bail!(
                    "auth.mode is introspect but the mapping has no [auth.introspect] section"
                )
            }
            AuthMode::Introspect => Ok(()),
        }
    }

    /// Forgets every cached introspection answer (the rules that produced them changed).
    pub fn forget_all(&self) {
        self.cache.invalidate_all();
    }

    /// Entries currently cached (for tests and metrics).
    pub async fn cached_entries(&self) -> u64 {
        self.cache.run_pending_tasks().await;
        self.cache.entry_count()
    }
}

async fn introspect(token: &str, mapping: &Mapping, upstream: &Upstream) -> Result<Cached, String> {
    let Some(spec) = &mapping.introspect else {
        return Ok(Cached::Invalid);
    };
    let vars = Vars {
        token: Some(token),
        ..Vars::default()
    };
    let body = match &spec.call.body {
        Some(b) => Some(b.render(&vars).map_err(|e| e.to_string())?),
        None => None,
    };
    let response = upstream
        .send(&spec.call, &vars, &[], body.as_ref(), &[])
        .await
        .map_err(|e| e.to_string())?;
    if response.status.is_server_error() || response.status == http::StatusCode::TOO_MANY_REQUESTS {
        return Err(format!(
            "introspection answered {}",
            response.status.as_u16()
        ));
    }
    if matches!(response.status.as_u16(), 401 | 403) {
        return Err("introspection refused the gateway's service credential".into());
    }
    if response.status.is_success() && response.unparsable {
        // A 2xx that is not JSON (a proxy's maintenance page, say) is no verdict on the
        // token: treat it as unavailable (503, not cached) rather than rejecting the key.
        return Err("introspection answered with a body that is not JSON".into());
    }
    if !response.status.is_success() {
        return Ok(Cached::Invalid);
    }
    let body = &response.body;
    if spec.active.read(body) != Some(&Value::Bool(true)) {
        return Ok(Cached::Invalid);
    }
    for (path, want) in &spec.accept {
        if path.read(body) != Some(want) {
            return Ok(Cached::Invalid);
        }
    }
    let mut fields = BTreeMap::new();
    for (name, path) in &spec.tenant {
        // A tenant without its fields would make paths that name no company: fail closed.
        match path.read(body) {
            Some(v) if !v.is_object() && !v.is_array() => {
                fields.insert(name.clone(), v.clone());
            }
            _ => return Ok(Cached::Invalid),
        }
    }
    let key_id = spec
        .key_id
        .as_ref()
        .and_then(|p| p.read(body))
        .and_then(crate::mapping::template::scalar_text);
    Ok(Cached::Valid(Arc::new(Tenant::new(fields, key_id))))
}
