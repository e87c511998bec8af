//! Live reload: an edited mapping serves within 2 s without a restart; a broken edit is
//! rejected and the previous mapping keeps serving.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use scimgate::config::Config;
use scimgate::demo::DemoUpstream;
use scimgate::mapping::load_dir;
use scimgate::server::{self, reload, Gateway};
use serde_json::Value;

async fn get(client: &reqwest::Client, url: &str) -> Value {
    client
        .get(url)
        .bearer_auth("reload-token")
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json")
}

#[tokio::test]
async fn edits_are_picked_up_and_broken_edits_are_not() {
    let dir = tempfile::tempdir().expect("temp dir");
    for entry in std::fs::read_dir("mappings/blacksmith").expect("mappings") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            continue; // the fixtures under tests/ are not mapping files
        }
        std::fs::copy(&path, dir.path().join(path.file_name().expect("name"))).expect("copy");
    }
    let demo = DemoUpstream::new("svc");
    demo.add_scim_key("reload-token", 42, "k", "SCIM Provisioning");
    demo.seed_example_data(42);
    let upstream = demo
        .spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("demo");
    let mut config = Config::default();
    config.upstream.url = format!("http://{upstream}");
    config.upstream.token = Some("svc".into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let gateway = Gateway::new(config, load_dir(dir.path()).expect("mapping")).expect("gateway");
    reload::spawn(
        gateway.clone(),
        dir.path().to_owned(),
        Duration::from_millis(100),
    );
    tokio::spawn(server::serve(gateway, listener));
    let client = reqwest::Client::new();
    let base = format!("http://{addr}/scim/v2");
    let ready = |c: reqwest::Client| async move {
        c.get(format!("http://{addr}/readyz"))
            .send()
            .await
            .expect("ready")
            .json::<Value>()
            .await
            .expect("json")["mapping"]
            .clone()
    };

    let user = get(&client, &format!("{base}/Users/1002")).await;
    let (title, department) = (
        user["title"].clone(),
        user["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["department"].clone(),
    );
    assert_ne!(title, department);
    let first_hash = ready(client.clone()).await;

    // Edit: title now comes from the department field.
    let users = dir.path().join("users.toml");
    let text = std::fs::read_to_string(&users).expect("read");
    let edited = text.replace(
        "title             = { upstream = \"$.title\" }",
        "title = { upstream = \"$.department\", mutability = \"readOnly\" }",
    );
    assert_ne!(text, edited);
    write_by_rename(&users, &edited);
    let started = Instant::now();
    loop {
        let user = get(&client, &format!("{base}/Users/1002")).await;
        if user["title"] == department {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the edit was not picked up within 2 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second_hash = ready(client.clone()).await;
    assert_ne!(first_hash, second_hash);

    // A broken edit: rejected, the edited mapping keeps serving.
    write_by_rename(
        &users,
        &edited.replace("[resources.User.attributes]", "[resources.User.attributes"),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let user = get(&client, &format!("{base}/Users/1002")).await;
    assert_eq!(user["title"], department);
    assert_eq!(ready(client.clone()).await, second_hash);

    // Fixed again: serves again.
    write_by_rename(&users, &text);
    let started = Instant::now();
    while get(&client, &format!("{base}/Users/1002")).await["title"] != title {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the fix was not picked up within 2 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Saves the way editors do: write a temporary file, then rename it over the original.
fn write_by_rename(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}
