//! Optional HTTPS on the SCIM listener, with rustls (`tls.cert` and `tls.key`, PEM).
//!
//! The certificate and key are read at start (a problem with them stops the gateway
//! there) and then polled by content hash every [`POLL_INTERVAL`], like the mapping
//! directory: a renewed pair is swapped in for new connections (connections already open
//! keep theirs); a pair that does not load — unreadable, not PEM, or a key that does not
//! match the certificate, as happens for a moment when the two files are replaced one
//! after the other — is logged once and the previous pair keeps serving.
//!
//! TLS handshakes run in their own tasks, at most [`MAX_HANDSHAKES`] at once and each
//! within [`HANDSHAKE_TIMEOUT`], so a client that opens connections and never completes a
//! handshake holds up nobody else.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How often the certificate and key files are checked for changes.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Most TLS handshakes in progress at once.
pub const MAX_HANDSHAKES: usize = 256;

/// Longest a client may take to complete its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a reload check did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// The files are what is serving.
    Unchanged,
    /// A new pair serves new connections.
    Swapped,
    /// The files changed but do not load; the previous pair keeps serving.
    Rejected(String),
}

/// The serving certificate and key, swapped whole when the files change.
pub struct CertStore {
    cert: PathBuf,
    key: PathBuf,
    config: ArcSwap<ServerConfig>,
    /// Hash of the files' contents as last seen (served or rejected).
    seen: Mutex<[u8; 32]>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), String> {
    let c = std::fs::read(cert).map_err(|e| format!("tls.cert {}: {e}", cert.display()))?;
    let k = std::fs::read(key).map_err(|e| format!("tls.key {}: {e}", key.display()))?;
    Ok((c, k))
}

fn fingerprint(cert: &[u8], key: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((cert.len() as u64).to_be_bytes());
    h.update(cert);
    h.update(key);
    h.finalize().into()
}

/// A rustls server configuration from PEM bytes (HTTP/1.1 only, as the server speaks).
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<ServerConfig, String> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls.cert is not a PEM certificate chain: {e}"))?;
    if chain.is_empty() {
        return Err("tls.cert holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("tls.key is not a PEM private key: {e}"))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("tls.cert and tls.key do not make a usable pair: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

impl CertStore {
    /// Loads the pair; any problem is an error (the gateway does not start without it).
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<CertStore>, String> {
        let (c, k) = read_pair(cert, key)?;
        let config = server_config(&c, &k)?;
        Ok(Arc::new(CertStore {
            cert: cert.to_owned(),
            key: key.to_owned(),
            config: ArcSwap::from_pointee(config),
            seen: Mutex::new(fingerprint(&c, &k)),
        }))
    }

    /// The configuration new connections get.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.config.load_full()
    }

    /// Re-reads the files and swaps in a changed pair that loads.
    pub fn reload_once(&self) -> Reloaded {
        let (c, k) = match read_pair(&self.cert, &self.key) {
            Ok(pair) => pair,
            Err(e) => return Reloaded::Rejected(e),
        };
        let print = fingerprint(&c, &k);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if *seen == print {
            return Reloaded::Unchanged;
        }
        *seen = print;
        match server_config(&c, &k) {
            Ok(config) => {
                self.config.store(Arc::new(config));
                Reloaded::Swapped
            }
            Err(e) => Reloaded::Rejected(e),
        }
    }

    /// Polls the files every `interval` for as long as the store is in use.
    pub fn watch(self: &Arc<Self>, interval: Duration) {
        let weak: Weak<CertStore> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut last_error: Option<String> = None;
            loop {
                tokio::time::sleep(interval).await;
                let Some(store) = weak.upgrade() else { return };
                let outcome = tokio::task::spawn_blocking(move || store.reload_once())
                    .await
                    .unwrap_or_else(|e| Reloaded::Rejected(format!("reload task failed: {e}")));
                match outcome {
                    Reloaded::Unchanged => {}
                    Reloaded::Swapped => {
                        last_error = None;
                        tracing::info!("TLS certificate reloaded; new connections use it");
                    }
                    Reloaded::Rejected(why) => {
                        if last_error.as_deref() != Some(why.as_str()) {
                            tracing::error!(
                                "TLS certificate reload rejected, the previous certificate keeps serving: {why}"
                            );
                            last_error = Some(why);
                        }
                    }
                }
            }
        });
    }
}

/// A listener that hands axum connections whose TLS handshake is complete.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    /// Accepts on `listener` in the background, handshaking with `store`'s current pair.
    pub fn new(listener: TcpListener, store: Arc<CertStore>) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                if tx.is_closed() {
                    return;
                }
                let (stream, peer) = match listener.accept().await {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of file descriptors and the like: pause rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // As on the plain listener (see `super::serve`).
                let _ = stream.set_nodelay(true);
                let Ok(permit) = handshakes.clone().acquire_owned().await else {
                    return;
                };
                let acceptor = TlsAcceptor::from(store.current());
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task ended: nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
