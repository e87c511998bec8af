//! Okta's own SCIM 2.0 conformance suites (SPEC, then CRUD) against the
//! gateway's demo mode.
//!
//! By default the test spawns `scimgate demo --listen 127.0.0.1:0 --token ...`
//! and reads the SCIM base URL from its stdout. To run the suites against a
//! gateway that is already running, set both `SCIMGATE_SUITE_URL` (the SCIM
//! base URL) and `SCIMGATE_SUITE_TOKEN` (its bearer token).

mod runscope;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use runscope::{Target, CRUD_SUITE, SPEC_SUITE};

const TOKEN: &str = "okta-suites-demo-token";
const URL_MARKER: &str = "SCIM base URL: ";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// The spawned gateway; killed when dropped.
struct Gateway {
    child: Child,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawn the demo gateway and wait for it to print its SCIM base URL.
fn spawn_demo() -> (Gateway, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_scimgate"))
        .args(["demo", "--listen", "127.0.0.1:0", "--token", TOKEN])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cannot spawn the scimgate binary");
    let mut gateway = Gateway { child };
    let stdout = gateway.child.stdout.take().expect("stdout is piped");

    // A reader thread forwards every line (and keeps draining the pipe so
    // the gateway never blocks on a full stdout); the first URL line is sent
    // back here.
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            println!("[scimgate] {line}");
            let Some(pos) = line.find(URL_MARKER) else {
                continue;
            };
            if let Some(tx) = tx.take() {
                let _ = tx.send(line[pos + URL_MARKER.len()..].trim().to_string());
            }
        }
    });

    match rx.recv_timeout(STARTUP_TIMEOUT) {
        Ok(url) => (gateway, url),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            let status = gateway.child.wait().ok();
            panic!(
                "scimgate demo closed stdout without printing `{URL_MARKER}...` (exit: {status:?})"
            )
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("scimgate demo did not print `{URL_MARKER}...` within {STARTUP_TIMEOUT:?}")
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn okta_spec_and_crud_suites_pass_against_the_demo_gateway() {
    let external = match (
        std::env::var("SCIMGATE_SUITE_URL"),
        std::env::var("SCIMGATE_SUITE_TOKEN"),
    ) {
        (Ok(url), Ok(token)) => Some((url, token)),
        _ => None,
    };
    let (_gateway, target) = match external {
        Some((url, token)) => {
            println!("running against the external gateway at {url}");
            (
                None,
                Target {
                    scim_base_url: url,
                    authorization: format!("Bearer {token}"),
                },
            )
        }
        None => {
            let (gateway, url) = spawn_demo();
            println!("running against the spawned demo gateway at {url}");
            (
                Some(gateway),
                Target {
                    scim_base_url: url,
                    authorization: format!("Bearer {TOKEN}"),
                },
            )
        }
    };

    let mut problems = Vec::new();
    for file in [SPEC_SUITE, CRUD_SUITE] {
        let path = runscope::locate_suite(file).unwrap_or_else(|e| panic!("{e}"));
        let request_steps = runscope::count_request_steps(&path).unwrap();
        let report = runscope::run_suite(&path, &target)
            .await
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        report.print();
        if report.ran() != request_steps {
            problems.push(format!(
                "{}: {} steps ran, but the export has {request_steps} request steps",
                report.suite,
                report.ran()
            ));
        }
        for step in report.failed() {
            problems.push(format!(
                "{} step #{} `{}`: {}",
                report.suite,
                step.index,
                step.name,
                step.failures.join(" | ")
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "Okta suites failed:\n{}",
        problems.join("\n")
    );
}
