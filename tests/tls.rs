//! Optional HTTPS: the gateway serves SCIM over TLS from a PEM certificate and key, picks
//! up a renewed pair without a restart, keeps serving the previous pair when the files
//! are broken, and refuses to start with a pair that does not load.
//!
//! Certificates are made here with rcgen: a test CA, and leaves for `scimgate.test` signed
//! by it; the client trusts only that CA.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

use scimgate::config::{AuthMode, Config};
use scimgate::demo::DemoUpstream;
use scimgate::server::{serve, Gateway};

const SERVICE_TOKEN: &str = "svc-tls-test";
const TOKEN: &str = "tls-scim-token-41aa";
const HOST: &str = "scimgate.test";

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca() -> Ca {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "scimgate test CA");
    let cert = params.self_signed(&key).expect("CA certificate");
    Ca { cert, key }
}

/// A leaf for [`HOST`] signed by `ca`: (certificate PEM, key PEM, certificate DER).
fn leaf(ca: &Ca, serial: u64) -> (String, String, Vec<u8>) {
    let key = KeyPair::generate().expect("leaf key");
    let mut params = CertificateParams::new(vec![HOST.to_owned()]).expect("leaf params");
    params.serial_number = Some(serial.into());
    let cert = params
        .signed_by(&key, &ca.cert, &ca.key)
        .expect("leaf certificate");
    (cert.pem(), key.serialize_pem(), cert.der().to_vec())
}

fn write_pair(dir: &Path, cert: &str, key: &str) -> (PathBuf, PathBuf) {
    let (c, k) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&k, key).expect("write key");
    std::fs::write(&c, cert).expect("write cert");
    (c, k)
}

async fn gateway_config(cert: &Path, key: &Path) -> (Config, DemoUpstream) {
    let demo = DemoUpstream::new(SERVICE_TOKEN);
    demo.add_company(42);
    demo.add_scim_key(TOKEN, 42, "k_tls", "SCIM Provisioning");
    let addr = demo
        .spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("demo starts");
    let mut config = Config::default();
    config.upstream.url = format!("http://{addr}");
    config.upstream.token = Some(SERVICE_TOKEN.to_owned());
    config.auth.mode = AuthMode::Introspect;
    config.tls.cert = Some(cert.to_owned());
    config.tls.key = Some(key.to_owned());
    (config, demo)
}

/// Serves `config` with the Blacksmith mapping on a loopback port, in the background.
async fn spawn_gateway(config: Config) -> SocketAddr {
    let mapping = scimgate::mapping::load_dir(Path::new("mappings/blacksmith")).expect("mapping");
    let gateway = Gateway::new(config, mapping).expect("gateway");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        if let Err(e) = serve(gateway, listener).await {
            panic!("serve: {e}");
        }
    });
    addr
}

/// A client that trusts only `ca` and resolves [`HOST`] to `addr`; a new one per check so
/// that no pooled connection hides a certificate change.
fn client(ca: &Ca, addr: SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(
            reqwest::Certificate::from_pem(ca.cert.pem().as_bytes()).expect("CA PEM"),
        )
        .resolve(HOST, addr)
        .tls_info(true)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// GETs `path` over HTTPS; the status and the DER of the certificate the server showed.
async fn get(ca: &Ca, addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let response = client(ca, addr)
        .get(format!("https://{HOST}:{}{path}", addr.port()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("an HTTPS answer");
    let der = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("the peer certificate")
        .to_vec();
    (response.status().as_u16(), der)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_scim_and_picks_up_a_renewed_certificate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = ca();
    let (cert1, key1, der1) = leaf(&ca, 1);
    let (cert_path, key_path) = write_pair(dir.path(), &cert1, &key1);
    let (config, _demo) = gateway_config(&cert_path, &key_path).await;
    let addr = spawn_gateway(config).await;

    let (status, der) = get(&ca, addr, "/scim/v2/Users").await;
    assert_eq!(status, 200);
    assert_eq!(der, der1, "the configured certificate");
    let (status, _) = get(&ca, addr, "/healthz").await;
    assert_eq!(status, 200);

    // Plain HTTP on the HTTPS port gets no SCIM answer, and the gateway carries on.
    let plain = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
        .get(format!("http://{addr}/scim/v2/Users"))
        .bearer_auth(TOKEN)
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP must fail: {plain:?}");
    // A client that does not trust the CA refuses the connection.
    let untrusting = reqwest::Client::builder()
        .no_proxy()
        .resolve(HOST, addr)
        .build()
        .expect("client")
        .get(format!("https://{HOST}:{}/healthz", addr.port()))
        .send()
        .await;
    assert!(untrusting.is_err(), "{untrusting:?}");
    assert_eq!(get(&ca, addr, "/scim/v2/Users").await.0, 200);

    // Renewal: a new pair in the same files is served to new connections.
    let (cert2, key2, der2) = leaf(&ca, 2);
    write_pair(dir.path(), &cert2, &key2);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, der) = get(&ca, addr, "/scim/v2/Users").await;
        assert_eq!(status, 200);
        if der == der2 {
            break;
        }
        assert_eq!(der, der1, "the old certificate until the new one is loaded");
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was not loaded"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Broken files (a key that does not match, then not PEM at all) are rejected and the
    // last good pair keeps serving.
    let (_, other_key, _) = leaf(&ca, 3);
    std::fs::write(&key_path, other_key).expect("write");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(get(&ca, addr, "/scim/v2/Users").await, (200, der2.clone()));
    std::fs::write(&cert_path, "not a certificate").expect("write");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(get(&ca, addr, "/scim/v2/Users").await, (200, der2.clone()));
    // Fixed again: picked up.
    let (cert4, key4, der4) = leaf(&ca, 4);
    write_pair(dir.path(), &cert4, &key4);
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&ca, addr, "/scim/v2/Users").await.1 != der4 {
        assert!(Instant::now() < deadline, "the fixed pair was not loaded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_pair_that_does_not_load_stops_the_gateway_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = ca();
    let (cert, _, _) = leaf(&ca, 1);
    let (_, wrong_key, _) = leaf(&ca, 2);
    let cases: Vec<(&str, String, String)> = vec![
        ("a key that does not match", cert.clone(), wrong_key),
        ("no certificate", String::new(), ca.key.serialize_pem()),
        ("not PEM", "garbage".into(), "garbage".into()),
    ];
    for (name, cert, key) in cases {
        let (cert_path, key_path) = write_pair(dir.path(), &cert, &key);
        let (config, _demo) = gateway_config(&cert_path, &key_path).await;
        let mapping =
            scimgate::mapping::load_dir(Path::new("mappings/blacksmith")).expect("mapping");
        let gateway = Gateway::new(config, mapping).expect("gateway");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let outcome = tokio::time::timeout(Duration::from_secs(5), serve(gateway, listener))
            .await
            .expect("serve returns at once");
        assert!(outcome.is_err(), "{name}: serve must fail");
    }
    // Missing files too.
    let (config, _demo) = gateway_config(
        &dir.path().join("missing.crt"),
        &dir.path().join("missing.key"),
    )
    .await;
    let mapping = scimgate::mapping::load_dir(Path::new("mappings/blacksmith")).expect("mapping");
    let gateway = Gateway::new(config, mapping).expect("gateway");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let err = serve(gateway, listener).await.expect_err("missing files");
    assert!(err.to_string().contains("missing.crt"), "{err}");
}

/// Upstream calls over HTTPS verify the upstream's certificate (Mozilla's roots, the URL's
/// host name): pointed at an HTTPS upstream whose certificate it cannot trust, the gateway
/// sends no request over that connection and answers 503, the connection having failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_whose_certificate_is_not_trusted_is_refused() {
    // The upstream: an HTTPS server (a TLS-serving gateway) with a leaf of the test CA,
    // which the gateway under test does not know, for a name other than the one it dials.
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = ca();
    let (cert, key, _) = leaf(&ca, 1);
    let (cert_path, key_path) = write_pair(dir.path(), &cert, &key);
    let (upstream_config, _demo) = gateway_config(&cert_path, &key_path).await;
    let upstream_addr = spawn_gateway(upstream_config).await;
    assert_eq!(get(&ca, upstream_addr, "/healthz").await.0, 200);

    let mut config = Config::default();
    config.upstream.url = format!("https://{upstream_addr}");
    config.upstream.token = Some(SERVICE_TOKEN.to_owned());
    config.auth.mode = AuthMode::Static;
    config.auth.static_keys = vec![scimgate::config::StaticKey {
        sha256: hex::encode(scimgate::server::auth::token_hash(TOKEN)),
        tenant: [("company_id".to_owned(), serde_json::json!(42))].into(),
        key_id: Some("k_tls".to_owned()),
    }];
    let addr = spawn_gateway(config).await;

    let response = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
        .get(format!("http://{addr}/scim/v2/Users/1042"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status().as_u16(), 503);
    let body: serde_json::Value = response.json().await.expect("SCIM error body");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("unreachable") && detail.contains("connection failed"),
        "{body}"
    );
}
