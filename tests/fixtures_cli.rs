//! `scimgate test` and `scimgate explain`, run as the real binary: the shipped Blacksmith
//! fixtures pass, a wrong fixture fails with a diff naming the difference, and `explain`
//! lists the upstream calls of a request in order without sending anything anywhere.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn scimgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_scimgate"))
        .args(args)
        .env_remove("SCIMGATE_UPSTREAM__URL")
        .env_remove("SCIMGATE_MAPPINGS")
        .output()
        .expect("run scimgate")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Common options: no configuration file, the shipped mapping.
const NO_CONFIG: [&str; 4] = [
    "--config",
    "/nonexistent/config.toml",
    "--mappings",
    "mappings/blacksmith",
];

fn run_tests(extra: &[&str]) -> (bool, String, String) {
    let mut args = vec!["test"];
    args.extend(NO_CONFIG);
    args.extend(extra);
    let out = scimgate(&args);
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn the_shipped_fixtures_pass() {
    let (ok, stdout, stderr) = run_tests(&[]);
    assert!(ok, "scimgate test failed:\n{stdout}\n{stderr}");
    for fixture in [
        "users/list-filter-username.toml",
        "users/get.toml",
        "users/create.toml",
        "users/create-conflict.toml",
        "users/put.toml",
        "users/patch-deactivate.toml",
        "users/delete.toml",
        "groups/get-with-members.toml",
        "groups/patch-members.toml",
        "groups/rename.toml",
    ] {
        assert!(
            stdout.contains(&format!("PASS {fixture} (")),
            "{fixture} must be shipped and pass:\n{stdout}"
        );
    }
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.ends_with(" passed, 0 failed"),
        "summary line: {last:?}"
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");
}

#[test]
fn the_fixtures_are_not_read_as_mapping_files() {
    let sources = scimgate::mapping::read_dir_sources(Path::new("mappings/blacksmith"))
        .expect("mapping sources");
    assert!(
        sources.iter().all(|s| !s.name.contains("tests")),
        "{:?}",
        sources.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    let out = scimgate(&[
        "check",
        "--config",
        "/nonexistent/config.toml",
        "--mappings",
        "mappings/blacksmith",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

const CONFLICT_WRONG: &str = r#"
description = "deliberately wrong: the mapping says uniqueness"
tenant = { company_id = 42 }

[request]
method = "POST"
path = "/Users"
body = { schemas = ["urn:ietf:params:scim:schemas:core:2.0:User"], userName = "ada@example.com" }

[[upstream]]
expect = { method = "POST", path = "/api/v1/companies/42/users", body = { user = { email = "ada@example.com" } } }
answer = { status = 422, body = { errors = { email = ["has already been taken"] } } }

[response]
status = 409
body = { status = "409", scimType = "invalidValue" }
"#;

const DEACTIVATE_WRONG: &str = r#"
[request]
method = "PATCH"
path = "/Users/1042"
body = { schemas = ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], Operations = [{ op = "replace", value = { active = false } }] }

[[upstream]]
expect = { method = "GET", path = "/api/v1/companies/1/users/1042" }
answer = { status = 200, body = { data = { id = 1042, email = "ada@example.com", status = "active" } } }

[[upstream]]
expect = { method = "POST", path = "/api/v1/companies/1/users/1042/suspend" }
answer = { status = 200, body = { data = { id = 1042, email = "ada@example.com", status = "deactivated" } } }

[response]
status = 200
body = { active = false }
"#;

#[test]
fn a_wrong_fixture_fails_with_a_diff_naming_the_difference() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("conflict.toml"), CONFLICT_WRONG).expect("write");
    std::fs::write(dir.path().join("deactivate.toml"), DEACTIVATE_WRONG).expect("write");
    let root = dir.path().to_str().expect("utf-8 path");
    let (ok, stdout, stderr) = run_tests(&[root]);
    assert!(!ok, "wrong fixtures must fail:\n{stdout}\n{stderr}");

    // The response body: the JSON path of the first difference, expected and actual.
    assert!(stdout.contains("FAIL conflict.toml ("), "{stdout}");
    assert!(
        stdout.contains(
            r#"response body differs at $.scimType: expected "invalidValue", got "uniqueness""#
        ),
        "{stdout}"
    );
    assert!(stdout.contains("expected (a subset):"), "{stdout}");
    assert!(stdout.contains("actual:"), "{stdout}");

    // An upstream call other than the one expected, named both ways.
    assert!(stdout.contains("FAIL deactivate.toml ("), "{stdout}");
    assert!(
        stdout.contains("expected: POST /api/v1/companies/1/users/1042/suspend"),
        "{stdout}"
    );
    assert!(
        stdout.contains("got:      POST /api/v1/companies/1/users/1042/deactivate"),
        "{stdout}"
    );
    assert!(stdout.contains("upstream calls made:"), "{stdout}");
    assert!(
        stdout.trim_end().ends_with("0 passed, 2 failed"),
        "{stdout}"
    );
}

#[test]
fn an_unexpected_extra_call_and_a_missing_one_are_failures() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Expects no upstream call at all, but the gateway must read the user.
    let fixture = r#"
[request]
method = "GET"
path = "/Users/1042"
[response]
status = 200
"#;
    std::fs::write(dir.path().join("no-calls.toml"), fixture).expect("write");
    // Expects a call the gateway never makes (ids that are not integers are 404 at once).
    let fixture = r#"
[request]
method = "GET"
path = "/Users/abc"
[[upstream]]
expect = { method = "GET", path = "/api/v1/companies/1/users/abc" }
answer = { status = 404 }
[response]
status = 404
"#;
    std::fs::write(dir.path().join("never-made.toml"), fixture).expect("write");
    let (ok, stdout, _) = run_tests(&[dir.path().to_str().expect("utf-8")]);
    assert!(!ok);
    assert!(
        stdout.contains("upstream call 1 was not expected: GET /api/v1/companies/1/users/1042"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "expected upstream call [[upstream]] #1 (GET /api/v1/companies/1/users/abc) was never made"
        ),
        "{stdout}"
    );
}

#[test]
fn a_fixture_that_is_not_one_is_a_failure_with_the_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("typo.toml"),
        "[request]\nmethod = \"GET\"\npath = \"/Users\"\n[response]\nstatsu = 200\n",
    )
    .expect("write");
    let (ok, stdout, _) = run_tests(&[dir.path().to_str().expect("utf-8")]);
    assert!(!ok);
    assert!(stdout.contains("FAIL typo.toml"), "{stdout}");
    assert!(stdout.contains("statsu"), "{stdout}");
}

#[test]
fn without_fixtures_the_run_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ok, _, stderr) = run_tests(&[dir.path().to_str().expect("utf-8")]);
    assert!(!ok);
    assert!(stderr.contains("no fixture files"), "{stderr}");
}

fn explain_json(args: &[&str]) -> Value {
    let mut all = vec!["explain"];
    all.extend(NO_CONFIG);
    all.extend(args);
    all.push("--json");
    let out = scimgate(&all);
    assert!(
        out.status.success(),
        "scimgate {all:?} failed:\n{}",
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", text(&out.stdout)))
}

fn calls(explained: &Value) -> Vec<(String, String)> {
    explained["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .map(|c| {
            (
                c["method"].as_str().expect("method").to_owned(),
                c["url"].as_str().expect("url").to_owned(),
            )
        })
        .collect()
}

#[test]
fn explain_get_is_one_get_of_the_user() {
    let explained = explain_json(&["GET", "/Users/1042"]);
    assert_eq!(
        calls(&explained),
        [(
            "GET".to_owned(),
            "<upstream>/api/v1/companies/1/users/1042".to_owned()
        )]
    );
    let response = &explained["response"];
    assert_eq!(response["status"], 200);
    assert_eq!(response["body"]["id"], "1042");
    assert_eq!(response["body"]["active"], true);

    let text_out = {
        let mut args = vec!["explain"];
        args.extend(NO_CONFIG);
        args.extend(["GET", "/Users/1042", "--tenant", "company_id=42"]);
        text(&scimgate(&args).stdout)
    };
    assert!(
        text_out.contains("1. GET <upstream>/api/v1/companies/42/users/1042"),
        "{text_out}"
    );
    assert!(text_out.contains("SCIM answer: 200"), "{text_out}");
    assert!(!text_out.contains("2. "), "{text_out}");
}

#[test]
fn explain_patch_deactivate_is_a_get_then_the_deactivate_action() {
    let dir = tempfile::tempdir().expect("temp dir");
    let body = dir.path().join("deactivate.json");
    std::fs::write(
        &body,
        r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations":[{"op":"replace","value":{"active":false}}]}"#,
    )
    .expect("write");
    let explained = explain_json(&[
        "PATCH",
        "/Users/1042",
        "--body",
        body.to_str().expect("utf-8"),
    ]);
    assert_eq!(
        calls(&explained),
        [
            (
                "GET".to_owned(),
                "<upstream>/api/v1/companies/1/users/1042".to_owned()
            ),
            (
                "POST".to_owned(),
                "<upstream>/api/v1/companies/1/users/1042/deactivate".to_owned()
            ),
        ]
    );
    assert_eq!(explained["response"]["status"], 200);
    assert_eq!(explained["response"]["body"]["active"], false);
}

#[test]
fn explain_shows_write_bodies_and_pushed_down_filters() {
    let dir = tempfile::tempdir().expect("temp dir");
    let body = dir.path().join("user.json");
    std::fs::write(
        &body,
        r#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"grace@example.com",
            "name":{"givenName":"Grace","familyName":"Hopper"}}"#,
    )
    .expect("write");
    let explained = explain_json(&["POST", "/Users", "--body", body.to_str().expect("utf-8")]);
    let only = &explained["calls"][0];
    assert_eq!(only["method"], "POST");
    assert_eq!(only["body"]["user"]["email"], "grace@example.com");
    assert_eq!(only["body"]["user"]["role"], "member");
    assert_eq!(explained["response"]["status"], 201);
    assert_eq!(
        explained["response"]["body"]["userName"],
        "grace@example.com"
    );

    let explained = explain_json(&["GET", r#"/Users?filter=userName eq "ada@example.com""#]);
    let listed = calls(&explained);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(
        listed[0].1.contains("email=ada%40example.com"),
        "{listed:?}"
    );
    assert_eq!(explained["response"]["body"]["totalResults"], 1);
    assert_eq!(
        explained["response"]["body"]["Resources"][0]["userName"],
        "ada@example.com"
    );
}

#[test]
fn explain_prints_the_configured_upstream_and_never_contacts_it() {
    // A listener standing in for the configured upstream: explain must not connect to it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let upstream = format!("http://{}/base", listener.local_addr().expect("addr"));
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, format!("[upstream]\nurl = \"{upstream}\"\n")).expect("write");
    let body = dir.path().join("deactivate.json");
    std::fs::write(
        &body,
        r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations":[{"op":"replace","path":"active","value":false}]}"#,
    )
    .expect("write");
    let out = scimgate(&[
        "explain",
        "--config",
        config.to_str().expect("utf-8"),
        "--mappings",
        "mappings/blacksmith",
        "PATCH",
        "/Users/1042",
        "--body",
        body.to_str().expect("utf-8"),
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let explained: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let listed = calls(&explained);
    assert_eq!(
        listed[1],
        (
            "POST".to_owned(),
            format!("{upstream}/api/v1/companies/1/users/1042/deactivate")
        ),
        "{listed:?}"
    );
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("explain connected to the configured upstream: {other:?}"),
    }
}

#[test]
fn explain_rejects_unknown_tenant_fields() {
    let mut args = vec!["explain"];
    args.extend(NO_CONFIG);
    args.extend(["GET", "/Users/1", "--tenant", "company=42"]);
    let out = scimgate(&args);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no tenant field \"company\""),
        "{}",
        text(&out.stderr)
    );
}
