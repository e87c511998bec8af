//! `scimgate check` on the shipped mappings and on broken edits of them: every problem is
//! reported with the file, the line and the reason, and the exit code says it failed.

use std::path::{Path, PathBuf};
use std::process::Command;

fn scimgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_scimgate"))
}

/// Copies the Blacksmith mapping into a temporary directory.
fn copy_mapping() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for entry in std::fs::read_dir("mappings/blacksmith").expect("mappings") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            continue; // the fixtures under tests/ are not mapping files
        }
        std::fs::copy(&path, dir.path().join(path.file_name().expect("name"))).expect("copy");
    }
    dir
}

fn check(dir: &Path) -> (bool, String, String) {
    let out = scimgate()
        .args([
            "check",
            "--config",
            "/nonexistent/config.toml",
            "--mappings",
        ])
        .arg(dir)
        .output()
        .expect("run scimgate check");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn shipped_mappings_pass() {
    let (ok, stdout, stderr) = check(Path::new("mappings/blacksmith"));
    assert!(ok, "check failed:\n{stderr}");
    assert!(stdout.contains("2 resource type(s)"), "{stdout}");
}

#[test]
fn json_mapping_files_load_too() {
    let dir = copy_mapping();
    // users.toml → users.json, same content.
    let toml_path = dir.path().join("users.toml");
    let text = std::fs::read_to_string(&toml_path).expect("read");
    let value: toml::Value = toml::from_str(&text).expect("parse");
    std::fs::write(
        dir.path().join("users.json"),
        serde_json::to_string_pretty(&value).expect("json"),
    )
    .expect("write");
    std::fs::remove_file(toml_path).expect("remove");
    let (ok, _, stderr) = check(dir.path());
    assert!(ok, "{stderr}");
}

/// (file, find, replace, reason, anchor): see below.
type Case<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    Option<(&'a str, &'a str)>,
);

/// Each case edits one file of a copy of the mapping: (file, text to find, replacement,
/// the reason expected). The expected line is where the replacement landed, or, where the
/// problem shows elsewhere, the line of an anchor text in another (file, text).
#[test]
fn broken_mappings_are_reported_with_file_line_and_reason() {
    const EMAILS: Option<(&str, &str)> = Some(("users.toml", "'emails[type eq"));
    const USERS_LIST: Option<(&str, &str)> = Some(("users.toml", "list   = {"));
    let cases: &[Case] = &[
        ("users.toml", "title             = { upstream = \"$.title\" }", "title = { upstream = \"$.title\", colour = \"red\" }", "unknown field `colour`", None),
        ("users.toml", "title             = { upstream = \"$.title\" }", "title = { upstream = \"$.title[\" }", "invalid JSONPath", None),
        ("users.toml", "path = \"/users/{id}/deactivate\"", "path = \"/users/{uid}/deactivate\"", "unknown placeholder {uid}", None),
        ("users.toml", "enum = [[true, \"active\"], [false, \"deactivated\"]]", "enum = [[true, \"active\"], [false, \"active\"]]", "not two-way", None),
        ("users.toml", "get    = { method = \"GET\",    path = \"/users/{id}\" }", "get = { method = \"GET\", path = \"https://evil.example/users/{id}\" }", "stay on the upstream origin", None),
        ("users.toml", "writer = { \"$.email\" = \"userName\" }", "writer = {}", "declare which one wins", EMAILS),
        ("gateway.toml", "base_path = \"/api/v1/companies/{tenant.company_id}\"", "base_path = \"/api/v1\"", "does not use the tenant", USERS_LIST),
        ("users.toml", "style = \"page\"", "style = \"pages\"", "must be page, offset or none", None),
        ("users.toml", "style = \"page\"", "style = \"cursor\"", "needs exactly one of next_cursor", None),
        ("users.toml", "\"name.givenName\"  = { upstream = \"$.first_name\" }", "\"name.givenName\" = { upstream = \"$.first_name[*]\" }", "must be singular", None),
        ("users.toml", "push_down = { userName = \"email\", externalId = \"external_id\" }", "push_down = { nickName = \"nick\" }", "not a mapped attribute", None),
        ("users.toml", "'roles[primary eq true].value' = { upstream = \"$.role\", enum = [[\"admin\", \"admin\"], [\"member\", \"member\"]], default_on_create = \"member\" }", "'roles[primary eq true].value' = { upstream = \"$.role\", enum = [[\"admin\", \"admin\"], [\"member\", \"member\"]], default_on_create = \"owner\" }", "not one of the enum's SCIM values", None),
        ("groups.toml", "displayName = { upstream = \"$.name\", required = true, case_exact = true }", "displayName = { upstream = \"$.name\", mutability = \"sometimes\" }", "mutability \"sometimes\"", None),
        ("gateway.toml", "scim_type = \"uniqueness\"", "scim_type = \"unique\"", "unknown scim_type", None),
        ("gateway.toml", "version = 1", "version = 2", "unsupported mapping version 2", None),
        ("gateway.toml", "scim_status = 502", "scim_status = 200", "must be a 4xx or 5xx status", None),
        ("groups.toml", "concurrency = 8 ", "concurrency = 0 ", "concurrency must be between 1 and 256", None),
        ("groups.toml", "on_partial_failure = \"report\"", "on_partial_failure = \"undo\"", "must be report or compensate", None),
        ("groups.toml", "unknown_members = \"skip\"", "unknown_members = \"ignore\"", "must be skip or reject_batch", None),
        ("groups.toml", "patch_response = \"no_content\"", "patch_response = \"maybe\"", "must be no_content or resource", None),
        ("users.toml", "run = \"after_write\"", "run = \"later\"", "must be before_write or after_write", None),
        ("users.toml", "title             = { upstream = \"$.title\" }", "\"title..x\" = { upstream = \"$.title\" }", "is not a SCIM attribute path", None),
        ("users.toml", "id = { upstream = \"$.id\", type = \"integer\" }", "id = { upstream = \"$.id\", type = \"float\" }", "must be integer, string or uuid", None),
        ("users.toml", "endpoint = \"/Users\"", "endpoint = \"Users\"", "must look like", None),
        ("users.toml", "path = \"/users/{id}/reactivate\"", "path = \"/users/{id}/reactivate?force=1\"", "stay on the upstream origin", None),
        ("groups.toml", "value   = \"$.user_id\"", "value   = \"$.user_id[\"", "invalid JSONPath", None),
    ];
    let mut failures = Vec::new();
    for (file, find, replace, reason, anchor) in cases {
        let dir = copy_mapping();
        let path: PathBuf = dir.path().join(file);
        let text = std::fs::read_to_string(&path).expect("read");
        let at = text
            .find(find)
            .unwrap_or_else(|| panic!("{file} does not contain {find:?}"));
        let line = text[..at].matches('\n').count() + 1;
        std::fs::write(&path, text.replacen(find, replace, 1)).expect("write");
        let (expect_path, line) = match anchor {
            None => (path.clone(), line),
            Some((anchor_file, anchor_text)) => {
                let p = dir.path().join(anchor_file);
                let t = std::fs::read_to_string(&p).expect("read anchor");
                let at = t.find(anchor_text).expect("anchor present");
                (p, t[..at].matches('\n').count() + 1)
            }
        };
        let (ok, _, stderr) = check(dir.path());
        let expected = format!("{}:{line}:", expect_path.display());
        if ok || !stderr.contains(&expected) || !stderr.contains(reason) {
            failures.push(format!(
                "{file} / {reason}: expected `{expected} …{reason}…`, got (ok={ok}):\n{stderr}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn hash_token_prints_the_sha256() {
    use std::io::Write;
    let mut child = scimgate()
        .arg("hash-token")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"secret\n")
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
    );
}
