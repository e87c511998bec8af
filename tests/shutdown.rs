//! SIGTERM: the gateway stops accepting, finishes what is in flight, and exits 0.

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
