//! The process: SIGTERM stops accepting, finishes what is in flight, and exits 0; `workers`
//! sets the threads serving requests.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `scimgate demo` with `args` and the `env` variable set, and returns it with the
/// URL its banner prints after `label`.
fn start_demo(args: &[&str], env: (&str, &str), label: &str) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_scimgate"))
        .arg("demo")
        .args(args)
        .env(env.0, env.1)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start scimgate demo");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
    let url = lines
        .by_ref()
        .find_map(|l| l.split_once(label).map(|(_, u)| u.trim().to_owned()))
        .unwrap_or_else(|| panic!("the demo prints {label:?}"));
    // Keep reading: a closed pipe would make the demo's next print fail.
    std::thread::spawn(move || lines.for_each(drop));
    (child, url)
}

/// Runs one async step of a test (the tests themselves are sync: they own a process).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

#[test]
fn sigterm_exits_cleanly() {
    let (mut child, base) = start_demo(
        &["--listen", "127.0.0.1:0", "--token", "shutdown-token"],
        ("SCIMGATE_SHUTDOWN_GRACE_MS", "3000"),
        "SCIM base URL: ",
    );
    let status = block_on(async {
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
        let (mut child, metrics) = start_demo(
            &["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
            ("SCIMGATE_WORKERS", workers),
            "metrics: ",
        );
        let text = block_on(async {
            reqwest::get(&metrics)
                .await
                .expect("metrics answer")
                .text()
                .await
                .expect("metrics text")
        });
        // The serving threads start as the SCIM listener does, just after the admin one.
        let mut serving = serving_threads(child.id());
        for _ in 0..100 {
            if serving.is_none_or(|n| n >= expected) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            serving = serving_threads(child.id());
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            text.contains(&format!("\nscimgate_runtime_workers {expected}\n")),
            "workers={workers}: expected {expected} threads; metrics:\n{text}"
        );
        if let Some(serving) = serving {
            assert_eq!(
                serving, expected,
                "workers={workers}: threads serving plain-HTTP connections"
            );
        }
    }
}

/// How many threads of process `pid` serve plain-HTTP connections (named
/// `scimgate-serve-N`, which Linux cuts to 15 bytes); `None` where `/proc` cannot say.
fn serving_threads(pid: u32) -> Option<usize> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    Some(
        tasks
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|name| name.starts_with("scimgate-serve"))
            .count(),
    )
}
