//! The gateway's own cost per request, measured rather than asserted.
//!
//! `cargo bench --bench gateway` prints (1) the CPU cost of the translation steps, and
//! (2) loopback latency of `GET /Users/{id}` straight to the demo upstream and through
//! scimgate, sequentially on one keep-alive connection each, so the difference is the
//! gateway's added cost per request. Results go in BENCHMARKS.md with the machine.

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use scimgate::config::Config;
use scimgate::demo::DemoUpstream;
use scimgate::mapping::engine::WriteMode;
use scimgate::mapping::load_dir;
use scimgate::scim::filter::parse_filter;
use scimgate::server::{self, Gateway};
use serde_json::json;

fn time_per_op(name: &str, iterations: u32, mut f: impl FnMut()) {
    for _ in 0..iterations / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    let per = start.elapsed() / iterations;
    println!("| {name} | {:.2} µs |", per.as_secs_f64() * 1e6);
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn latency(
    client: &reqwest::Client,
    url: &str,
    auth: Option<&str>,
    n: usize,
) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        let mut request = client.get(url);
        if let Some(a) = auth {
            request = request.header("Authorization", a);
        }
        let started = Instant::now();
        let response = request.send().await.expect("request");
        assert!(
            response.status().is_success(),
            "{url}: {}",
            response.status()
        );
        let _ = response.bytes().await.expect("body");
        if i >= n / 10 {
            samples.push(started.elapsed());
        }
    }
    samples.sort();
    samples
}

fn main() {
    let mapping = load_dir(Path::new("mappings/blacksmith")).expect("mapping");
    let users = mapping.resource("Users").expect("Users").clone();
    let upstream_user = json!({"id": 1042, "email": "ada@example.com", "first_name": "Ada", "last_name": "Lovelace",
        "display_name": "Ada Lovelace", "title": "Engineer", "department": "R&D", "phone": "+1 555 0100",
        "role": "member", "status": "active", "external_id": "00u1abcd", "manager_id": null,
        "created_at": "2026-01-02T03:04:05Z", "updated_at": "2026-01-02T03:04:05Z"});
    let okta_user = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "ada@example.com",
        "name": {"givenName": "Ada", "familyName": "Lovelace"}, "emails": [{"primary": true, "value": "ada@example.com", "type": "work"}],
        "displayName": "Ada Lovelace", "locale": "en-US", "externalId": "00u1abcd", "groups": [], "password": "x", "active": true});
    let base = "http://127.0.0.1:8080/scim/v2";

    println!("## Translation (CPU, per operation)\n");
    println!("| step | time |\n|---|---|");
    time_per_op(
        "parse filter `userName eq \"…\" and active eq true`",
        200_000,
        || {
            black_box(
                parse_filter(black_box(
                    "userName eq \"ada@example.com\" and active eq true",
                ))
                .ok(),
            );
        },
    );
    time_per_op("upstream user → SCIM User", 100_000, || {
        black_box(users.to_scim(black_box(&upstream_user), base).ok());
    });
    time_per_op(
        "Okta create body → validated upstream body",
        100_000,
        || {
            users.validate_request(black_box(&okta_user)).ok();
            black_box(
                users
                    .body_for(black_box(&okta_user), WriteMode::Create)
                    .ok(),
            );
        },
    );
    let page: Vec<_> = (0..100)
        .map(|i| {
            let mut u = upstream_user.clone();
            u["id"] = json!(i);
            u
        })
        .collect();
    time_per_op(
        "100 upstream users → SCIM ListResponse bytes",
        5_000,
        || {
            let docs: Vec<_> = page
                .iter()
                .filter_map(|u| users.to_scim(u, base).ok())
                .collect();
            black_box(serde_json::to_vec(&json!({"Resources": docs})).ok());
        },
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let demo = DemoUpstream::new("svc-token");
        demo.add_scim_key("bench-token", 42, "k_bench", "SCIM Provisioning");
        let ids = demo.seed_users(42, 10);
        let upstream_addr = demo
            .spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("demo");
        let mut config = Config::default();
        config.upstream.url = format!("http://{upstream_addr}");
        config.upstream.token = Some("svc-token".into());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let gateway_addr = listener.local_addr().expect("addr");
        let gateway = Gateway::new(
            config,
            load_dir(Path::new("mappings/blacksmith")).expect("mapping"),
        )
        .expect("gateway");
        tokio::spawn(server::serve(gateway, listener));

        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()
            .expect("client");
        let n = 3000;
        let direct = latency(
            &client,
            &format!(
                "http://{upstream_addr}/api/v1/companies/42/users/{}",
                ids[0]
            ),
            Some("Bearer svc-token"),
            n,
        )
        .await;
        let through = latency(
            &client,
            &format!("http://{gateway_addr}/scim/v2/Users/{}", ids[0]),
            Some("Bearer bench-token"),
            n,
        )
        .await;
        println!("\n## GET /Users/{{id}} on loopback, sequential, {n} requests each\n");
        println!("| path | p50 | p99 | mean |\n|---|---|---|---|");
        for (name, s) in [
            ("straight to the demo upstream", &direct),
            ("through scimgate", &through),
        ] {
            let mean = s.iter().sum::<Duration>() / s.len() as u32;
            println!(
                "| {name} | {:.0} µs | {:.0} µs | {:.0} µs |",
                percentile(s, 0.5).as_secs_f64() * 1e6,
                percentile(s, 0.99).as_secs_f64() * 1e6,
                mean.as_secs_f64() * 1e6
            );
        }
        let added = percentile(&through, 0.5).saturating_sub(percentile(&direct, 0.5));
        println!(
            "\nGateway's added cost per request (p50 difference): {:.0} µs",
            added.as_secs_f64() * 1e6
        );
    });
}
