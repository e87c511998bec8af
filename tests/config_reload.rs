//! Live configuration reload, against a real `scimgate serve` process: an edited
//! `config.toml` changes live settings within 2 s without a restart (by polling, and on
//! SIGHUP); a broken file changes nothing and is counted; a restart-only setting is
//! reported and keeps its running value.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use scimgate::demo::DemoUpstream;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const SERVICE_TOKEN: &str = "svc-token-5d1c0e7a";
const KEY_A: &str = "scim-key-a-0123456789";
const KEY_B: &str = "scim-key-b-9876543210";
/// Stands in for key B while it is not configured, so toggling B keeps the file's length.
const KEY_UNUSED: &str = "scim-key-z-0000000000";

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The settings the test edits; everything else is fixed.
#[derive(Clone)]
struct Settings {
    listen: u16,
    admin: u16,
    upstream: SocketAddr,
    service_token: String,
    body_bytes: usize,
    /// Tokens of the static keys (two entries, so the file keeps its shape).
    keys: [&'static str; 2],
}

impl Settings {
    fn text(&self) -> String {
        let mappings = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/blacksmith");
        let mut t = String::new();
        let _ = writeln!(t, "listen = \"127.0.0.1:{}\"", self.listen);
        let _ = writeln!(t, "admin_listen = \"127.0.0.1:{}\"", self.admin);
        let _ = writeln!(t, "mappings = {:?}", mappings.display().to_string());
        let _ = writeln!(t, "[upstream]\nurl = \"http://{}\"", self.upstream);
        let _ = writeln!(t, "token = \"{}\"", self.service_token);
        let _ = writeln!(t, "[auth]\nmode = \"static\"\nstatic_keys = [");
        for (i, key) in self.keys.iter().enumerate() {
            let _ = writeln!(
                t,
                "  {{ sha256 = \"{}\", tenant = {{ company_id = 42 }}, key_id = \"k_{i}\" }},",
                sha256_hex(key)
            );
        }
        let _ = writeln!(t, "]\n[limits]\nbody_bytes = {}", self.body_bytes);
        let _ = writeln!(t, "rate_per_second = 0");
        t
    }
}

/// The gateway process; killed when dropped.
struct Gateway {
    child: Child,
    scim: String,
    admin: String,
    log: Arc<Mutex<String>>,
    client: reqwest::Client,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    fn start(config: &Path, s: &Settings) -> Gateway {
        let mut command = Command::new(env!("CARGO_BIN_EXE_scimgate"));
        command.args(["serve", "--config"]).arg(config);
        // The test's own environment must not configure the gateway.
        for (k, _) in std::env::vars() {
            if k.starts_with("SCIMGATE_") {
                command.env_remove(k);
            }
        }
        let mut child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("scimgate serve starts");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap_or_else(|e| e.into_inner());
                l.push_str(&line);
                l.push('\n');
            }
        });
        Gateway {
            child,
            scim: format!("http://127.0.0.1:{}", s.listen),
            admin: format!("http://127.0.0.1:{}", s.admin),
            log,
            client: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("client"),
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            let ok = self
                .client
                .get(format!("{}/healthz", self.scim))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return;
            }
            if let Ok(Some(exit)) = self.child.try_wait() {
                panic!("scimgate exited ({exit}):\n{}", self.log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "not serving after 20 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn probe(&self, probe: &Probe) -> u16 {
        let request = match probe {
            Probe::Users(token) => self
                .client
                .get(format!("{}/scim/v2/Users?count=1", self.scim))
                .bearer_auth(token),
            Probe::PostPadded(len) => {
                static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let body = json!({
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                    "userName": format!("padded{n}@example.com"),
                    "name": {"givenName": "Pad", "familyName": "Ded"},
                    "displayName": "x".repeat(*len),
                });
                self.client
                    .post(format!("{}/scim/v2/Users", self.scim))
                    .bearer_auth(KEY_A)
                    .header("content-type", "application/scim+json")
                    .body(body.to_string())
            }
        };
        request
            .send()
            .await
            .expect("the gateway answers")
            .status()
            .as_u16()
    }

    async fn readyz(&self) -> Value {
        self.client
            .get(format!("{}/readyz", self.scim))
            .send()
            .await
            .expect("readyz")
            .json()
            .await
            .expect("readyz json")
    }

    async fn metric(&self, sample: &str) -> Option<f64> {
        let text = self
            .client
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
    }

    /// Polls `probe` until it answers `want`, for at most 2 s.
    async fn expect_within_2s(&self, case: &str, probe: &Probe, want: u16) {
        let started = Instant::now();
        loop {
            let got = self.probe(probe).await;
            if got == want {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{case}: still {got}, not {want}, 2 s after the edit\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// What a case checks.
#[derive(Debug)]
enum Probe {
    /// `GET /Users` with this SCIM key.
    Users(&'static str),
    /// `POST /Users` with key A and a body this much larger than a plain user.
    PostPadded(usize),
}

/// Saves the way editors do: write a temporary file, then rename it over the original.
fn write_by_rename(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// Rewrites the file in place with text of the same length and puts its modification
/// time back, so that polling sees no change and only SIGHUP picks the edit up.
fn write_unnoticed(path: &Path, text: &str) {
    let before = std::fs::metadata(path).expect("metadata");
    assert_eq!(before.len(), text.len() as u64, "same length");
    let mtime = before.modified().expect("mtime");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open");
    std::io::Write::write_all(&mut &file, text.as_bytes()).expect("write");
    file.set_modified(mtime).expect("set mtime");
}

#[tokio::test]
async fn config_edits_apply_live_and_bad_ones_do_not() {
    let demo = DemoUpstream::new(SERVICE_TOKEN);
    demo.add_company(42);
    demo.seed_example_data(42);
    let upstream = demo
        .spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("demo upstream");
    let dir = tempfile::tempdir().expect("temp dir");
    let config: PathBuf = dir.path().join("config.toml");
    let mut s = Settings {
        listen: free_port(),
        admin: free_port(),
        upstream,
        service_token: SERVICE_TOKEN.into(),
        body_bytes: 1024 * 1024,
        keys: [KEY_A, KEY_UNUSED],
    };
    std::fs::write(&config, s.text()).expect("write config");
    let mut gw = Gateway::start(&config, &s);
    gw.wait_ready().await;

    assert_eq!(gw.probe(&Probe::Users(KEY_A)).await, 200);
    assert_eq!(gw.probe(&Probe::Users(KEY_B)).await, 401);
    let padded = Probe::PostPadded(3000);
    assert_ne!(gw.probe(&padded).await, 413, "3 kB passes 1 MiB");
    let mut hash = gw.readyz().await["config"].clone();
    assert!(hash.is_string(), "{hash}");

    // Live settings, edited by rename-on-save and picked up by polling.
    type Edit = fn(&mut Settings);
    let cases: &[(&str, Edit, Probe, u16)] = &[
        (
            "lower limits.body_bytes",
            |s| s.body_bytes = 2048,
            Probe::PostPadded(3000),
            413,
        ),
        (
            "add static key B",
            |s| s.keys[1] = KEY_B,
            Probe::Users(KEY_B),
            200,
        ),
        (
            "revoke static key B",
            |s| s.keys[1] = KEY_UNUSED,
            Probe::Users(KEY_B),
            401,
        ),
        (
            "rotate upstream.token to one the app refuses",
            |s| s.service_token = "svc-token-revoked".into(),
            Probe::Users(KEY_A),
            502,
        ),
        (
            "rotate upstream.token back",
            |s| s.service_token = SERVICE_TOKEN.into(),
            Probe::Users(KEY_A),
            200,
        ),
    ];
    for (case, edit, probe, want) in cases {
        edit(&mut s);
        write_by_rename(&config, &s.text());
        gw.expect_within_2s(case, probe, *want).await;
        let now = gw.readyz().await["config"].clone();
        assert_ne!(now, hash, "{case}: /readyz shows the new configuration");
        hash = now;
    }
    assert_eq!(
        gw.metric("scimgate_config_reloads_total{result=\"success\"}")
            .await,
        Some(cases.len() as f64)
    );

    // SIGHUP: an edit that polling cannot see (same inode, size and time) is applied on
    // the signal.
    s.keys[1] = KEY_B;
    write_unnoticed(&config, &s.text());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(gw.probe(&Probe::Users(KEY_B)).await, 401, "not polled");
    let hup = Command::new("kill")
        .args(["-HUP", &gw.child.id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    gw.expect_within_2s("SIGHUP", &Probe::Users(KEY_B), 200)
        .await;
    let hash = gw.readyz().await["config"].clone();

    // Broken files: rejected with the reason, counted once each, and the running
    // settings keep serving.
    let good = s.text();
    let broken: &[(&str, String, &str)] = &[
        ("TOML syntax", good.replace("[limits]", "[limits"), "line"),
        (
            "a bad value",
            good.replace(
                "rate_per_second = 0",
                "rate_per_second = 0\nmax_results = 0",
            ),
            "limits.max_results must be at least 1",
        ),
        (
            "a wrong type",
            good.replace("body_bytes = 2048", "body_bytes = \"big\""),
            "body_bytes",
        ),
    ];
    for (i, (case, text, reason)) in broken.iter().enumerate() {
        write_by_rename(&config, text);
        let started = Instant::now();
        let want = Some((i + 1) as f64);
        while gw
            .metric("scimgate_config_reloads_total{result=\"rejected\"}")
            .await
            != want
        {
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{case}: not rejected within 2 s\n{}",
                gw.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = gw.log();
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains("configuration reload rejected"))
            .unwrap_or_default();
        assert!(
            line.contains("config.toml") && log.contains(reason),
            "{case}: the log names the file and {reason:?}:\n{log}"
        );
        assert_eq!(gw.probe(&Probe::Users(KEY_B)).await, 200, "{case}");
        assert_eq!(gw.probe(&padded).await, 413, "{case}");
        assert_eq!(gw.readyz().await["config"], hash, "{case}");
    }

    // A restart-only setting: reported, and the old value keeps serving.
    let old_listen = s.listen;
    s.listen = free_port();
    s.body_bytes = 4096;
    write_by_rename(&config, &s.text());
    gw.expect_within_2s("body_bytes beside listen", &padded, 201)
        .await;
    let ready = gw.readyz().await;
    assert_eq!(ready["restart_required"], json!(["listen"]), "{ready}");
    assert_eq!(
        gw.metric("scimgate_config_restart_required").await,
        Some(1.0)
    );
    let log = gw.log();
    assert!(
        log.contains(&format!(
            "listen changed: needs a restart (the SCIM socket is bound at start); still serving with 127.0.0.1:{old_listen}"
        )),
        "{log}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", s.listen)).is_err(),
        "nothing listens on the new port"
    );
    // Undoing the edit clears the report.
    s.listen = old_listen;
    write_by_rename(&config, &s.text());
    let started = Instant::now();
    while gw.readyz().await["restart_required"] != json!([]) {
        assert!(started.elapsed() < Duration::from_secs(2), "{}", gw.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Secrets are named, never shown.
    let log = gw.log();
    for secret in [
        SERVICE_TOKEN.to_owned(),
        "svc-token-revoked".to_owned(),
        sha256_hex(KEY_A),
        sha256_hex(KEY_B),
        KEY_A.to_owned(),
    ] {
        assert!(!log.contains(&secret), "{secret} in the log:\n{log}");
    }
    assert!(log.contains("upstream.token"), "{log}");
}
