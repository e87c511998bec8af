//! The process: SIGTERM stops accepting, finishes what is in flight, and exits 0; `workers`
//! sets the threads serving requests.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn sigterm_exits_cleanly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_scimgate"))
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--token",
            "shutdown-token",
        ])
        .env("SCIMGATE_SHUTDOWN_GRACE_MS", "3000")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start scimgate demo");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
    let base = lines
        .by_ref()
        .find_map(|l| {
            l.split_once("SCIM base URL: ")
                .map(|(_, u)| u.trim().to_owned())
        })
        .expect("the demo prints its base URL");
    // Keep reading: a closed pipe would make the demo's next print fail.
    std::thread::spawn(move || lines.for_each(drop));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let status = runtime.block_on(async {
        reqwest::Client::new()
            .get(format!("{base}/Users?count=1"))
            .bearer_auth("shutdown-token")
            .send()
            .await
            .expect("answer")
            .status()
    });
    assert_eq!(status, 200);

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let started = Instant::now();
    loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            assert!(exit.success(), "exit status {exit:?}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "did not exit within 5 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `workers` (here from the environment) is the number of threads the runtime serves
/// with, as `/metrics` reports it; 0 is one per CPU core.
#[test]
fn workers_sets_the_serving_threads() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for (workers, expected) in [("1", 1), ("3", 3), ("0", cores)] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_scimgate"))
            .args([
                "demo",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .env("SCIMGATE_WORKERS", workers)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start scimgate demo");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
        let metrics = lines
            .by_ref()
            .find_map(|l| l.split_once("metrics: ").map(|(_, u)| u.trim().to_owned()))
            .expect("the demo prints its metrics URL");
        std::thread::spawn(move || lines.for_each(drop));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let text = runtime.block_on(async {
            reqwest::get(&metrics)
                .await
                .expect("metrics answer")
                .text()
                .await
                .expect("metrics text")
        });
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            text.contains(&format!("\nscimgate_runtime_workers {expected}\n")),
            "workers={workers}: expected {expected} threads; metrics:\n{text}"
        );
    }
}
