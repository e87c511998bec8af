//! The JSON Schema of mapping files (`docs/mapping.schema.json`): it is what `scimgate
//! schema` prints (regenerate with `cargo run -- schema > docs/mapping.schema.json`, or
//! run this test with `SCIMGATE_BLESS=1`), and every mapping file that `scimgate check`
//! accepts validates against it.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

const COMMITTED: &str = "docs/mapping.schema.json";

fn printed_schema() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_scimgate"))
        .arg("schema")
        .output()
        .expect("scimgate schema runs");
    assert!(out.status.success(), "scimgate schema failed: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

fn schema() -> Value {
    serde_json::from_str(&std::fs::read_to_string(COMMITTED).expect("committed schema"))
        .expect("the committed schema is JSON")
}

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&schema()).expect("the schema is a valid JSON Schema")
}

/// A mapping file as the JSON value the schema describes.
fn as_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("read mapping file");
    if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).expect("JSON mapping file")
    } else {
        toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }
}

fn mapping_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "toml" || e == "json"))
        .collect();
    files.sort();
    files
}

/// Every mapping directory under `mappings/` that compiles (what `check` accepts).
fn accepted_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("mappings")
        .expect("mappings/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .filter(|p| scimgate::mapping::load_dir(p).is_ok())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn the_committed_schema_is_what_scimgate_schema_prints() {
    let printed = printed_schema();
    if std::env::var_os("SCIMGATE_BLESS").is_some() {
        std::fs::write(COMMITTED, &printed).expect("write the schema");
    }
    let committed = std::fs::read_to_string(COMMITTED).expect("committed schema");
    assert!(
        committed == printed,
        "{COMMITTED} is stale: run `cargo run -- schema > {COMMITTED}` (or this test with \
         SCIMGATE_BLESS=1) and commit it"
    );
}

#[test]
fn every_accepted_mapping_file_validates() {
    let validator = validator();
    let dirs = accepted_dirs();
    assert!(
        dirs.iter().any(|d| d.ends_with("blacksmith")),
        "mappings/blacksmith must compile: {dirs:?}"
    );
    let mut checked = 0;
    for dir in &dirs {
        for file in mapping_files(dir) {
            let value = as_json(&file);
            let errors: Vec<String> = validator
                .iter_errors(&value)
                .map(|e| format!("  at {}: {e}", e.instance_path()))
                .collect();
            assert!(
                errors.is_empty(),
                "{} does not match {COMMITTED}:\n{}",
                file.display(),
                errors.join("\n")
            );
            checked += 1;
        }
    }
    assert!(checked >= 3, "only {checked} files checked");
}

#[test]
fn the_schema_catches_what_editors_should_flag() {
    let validator = validator();
    let users = as_json(Path::new("mappings/blacksmith/users.toml"));
    assert!(validator.is_valid(&users));

    // A misspelt key, at the top and deep inside.
    let mut bad = users.clone();
    bad["resource"] = json!({});
    assert!(!validator.is_valid(&bad));
    let mut bad = users.clone();
    bad["resources"]["User"]["attributes"]["userName"]["upstraem"] = json!("$.email");
    assert!(!validator.is_valid(&bad));
    // A required key missing, and a value of the wrong type.
    let mut bad = users.clone();
    bad["resources"]["User"]
        .as_object_mut()
        .expect("resource")
        .remove("endpoint");
    assert!(!validator.is_valid(&bad));
    let mut bad = users.clone();
    bad["resources"]["User"]["operations"]["get"]["method"] = json!(7);
    assert!(!validator.is_valid(&bad));
    let mut bad = users;
    bad["resources"]["User"]["attributes"]["active"]["enum"] = json!([[true]]);
    assert!(!validator.is_valid(&bad));
}

/// Every property name anywhere in the schema.
fn property_names(schema: &Value, out: &mut std::collections::BTreeSet<String>) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::Object(props)) = map.get("properties") {
                out.extend(props.keys().cloned());
            }
            map.values().for_each(|v| property_names(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| property_names(v, out)),
        _ => {}
    }
}

#[test]
fn the_reference_names_every_key() {
    let doc = std::fs::read_to_string("docs/mapping.md").expect("docs/mapping.md");
    let mut keys = std::collections::BTreeSet::new();
    property_names(&schema(), &mut keys);
    assert!(keys.len() > 50, "{keys:?}");
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| !doc.contains(&format!("| `{k}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/mapping.md has no table row for: {missing:?}"
    );
}
