//! Golden PATCH payloads as Okta and Entra ID document them (`tests/golden/*.json`, each
//! naming its source), replayed against the demo upstream: status and resulting state.

mod support;

use serde_json::Value;
use support::*;

/// Every key of `want` is in `got` with the same value (objects compared recursively).
fn subset(want: &Value, got: &Value) -> bool {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => w
            .iter()
            .all(|(k, v)| g.get(k).is_some_and(|gv| subset(v, gv))),
        _ => want == got,
    }
}

#[tokio::test]
async fn golden_okta_and_entra_payloads() {
    let mut files: Vec<_> = std::fs::read_dir("tests/golden")
        .expect("tests/golden")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "golden fixtures present");
    let mut failures = Vec::new();
    for file in &files {
        let name = file
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(file).expect("read");
        let h = Harness::start().await;
        let users = h.upstream.seed_users(COMPANY, 2);
        let (u1, u2) = (users[0].to_string(), users[1].to_string());
        let fixture: Value =
            serde_json::from_str(&text.replace("{{user1}}", &u1).replace("{{user2}}", &u2))
                .expect("fixture JSON");
        let endpoint = fixture["endpoint"].as_str().expect("endpoint");
        let id = if endpoint == "Groups" {
            let before: Vec<i64> = fixture["members_before"]
                .as_array()
                .map(|m| {
                    m.iter()
                        .map(|v| v.as_str().expect("id").parse().expect("int"))
                        .collect()
                })
                .unwrap_or_default();
            h.upstream.seed_team(COMPANY, "Golden", &before).to_string()
        } else {
            u1.clone()
        };
        let request: Value =
            serde_json::from_str(&fixture["request"].to_string().replace("{{id}}", &id))
                .expect("request");
        let (status, _, body) = h.patch(&format!("/{endpoint}/{id}"), &request).await;
        let want_status = fixture["status"].as_u64().expect("status");
        if u64::from(status.as_u16()) != want_status {
            failures.push(format!(
                "{name}: status {status}, want {want_status}: {body}"
            ));
            continue;
        }
        let (_, _, after) = h.get(&format!("/{endpoint}/{id}")).await;
        if let Some(expect) = fixture.get("expect") {
            if !subset(expect, &after) {
                failures.push(format!("{name}: expected {expect} within {after}"));
            }
        }
        if let Some(members) = fixture.get("expect_members") {
            let mut want: Vec<&str> = members
                .as_array()
                .expect("list")
                .iter()
                .map(|v| v.as_str().expect("id"))
                .collect();
            let mut got: Vec<&str> = after["members"]
                .as_array()
                .map(|m| m.iter().filter_map(|v| v["value"].as_str()).collect())
                .unwrap_or_default();
            want.sort();
            got.sort();
            if want != got {
                failures.push(format!("{name}: members {got:?}, want {want:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    println!("{} golden payloads replayed", files.len());
}
