//! Micro-benchmarks of the translation work scimgate does per request (criterion), with
//! the heap allocations each operation makes.
//!
//! `cargo bench --bench gateway` (add `-- --warm-up-time 1 --measurement-time 3` for a
//! quicker run, or a name filter such as `-- patch/`). One criterion group per concern:
//!
//! - `filter`: parsing a SCIM filter (Okta's `userName eq "…"`, and a complex one).
//! - `patch`: parsing and applying real Okta/Entra PATCH bodies (`tests/golden`).
//! - `create`: an Okta create body → the validated upstream body.
//! - `read`: one upstream user → SCIM (`to_scim`, and `write_scim` as `GET` does).
//! - `list`: a page of 100 upstream users → ListResponse bytes, as `list_plain` builds it
//!   (from parsed objects, and from the page text read as fields).
//! - `scaling`: the Blacksmith Users mapping against one with 10× the attributes
//!   (generated into a temporary directory), with the usual fields present and with all.
//!
//! A counting global allocator wraps the system allocator (the library sets none; the
//! binary's mimalloc is not used here). Each operation is run outside criterion's timing
//! loop to count its allocations, and the end of the run prints one table with criterion's
//! median time and the allocations per operation, plus the per-attribute costs of the
//! scaling group. The end-to-end comparison (loopback, nginx hop, wrk, callgrind) is
//! `bench/run.sh`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput};
use scimgate::mapping::engine::WriteMode;
use scimgate::mapping::fields::{read_page, PagePaths};
use scimgate::mapping::{load_dir, Resource};
use scimgate::scim::filter::parse_filter;
use scimgate::scim::membership::split_member_ops;
use scimgate::scim::patch::{apply, parse_patch};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------
// The counting allocator.

/// The system allocator, counting allocations (`alloc`, `alloc_zeroed`, `realloc`) and the
/// bytes they hand out (a `realloc` counts what it grows by).
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(
            new_size.saturating_sub(layout.size()) as u64,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations and bytes per call of `f` (its result dropped inside, as criterion does),
/// averaged over `runs` calls after one warm-up call.
fn count_allocations<R>(runs: u64, f: &mut impl FnMut() -> R) -> (f64, f64) {
    black_box(f());
    let (a0, b0) = (
        ALLOCATIONS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    for _ in 0..runs {
        black_box(f());
    }
    let (a1, b1) = (
        ALLOCATIONS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    (
        (a1 - a0) as f64 / runs as f64,
        (b1 - b0) as f64 / runs as f64,
    )
}

/// One benchmark's row of the closing table.
struct Row {
    id: String,
    allocations: f64,
    bytes: f64,
}

static ROWS: Mutex<Vec<Row>> = Mutex::new(Vec::new());

/// Counts `f`'s allocations, then hands it to criterion as `group/name`.
fn bench<R>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    group_name: &str,
    name: &str,
    f: impl FnMut() -> R,
) {
    let mut f = f;
    let (allocations, bytes) = count_allocations(100, &mut f);
    ROWS.lock().expect("rows").push(Row {
        id: format!("{group_name}/{name}"),
        allocations,
        bytes,
    });
    group.bench_function(name, |b| b.iter(&mut f));
}

// ---------------------------------------------------------------------------------------
// Inputs.

const BASE: &str = "https://scim.example.com/scim/v2";

/// A Blacksmith user as `GET /users/{id}` returns it (every mapped field present).
fn upstream_user(id: u64) -> Value {
    json!({"id": id, "email": "ada@example.com", "first_name": "Ada", "last_name": "Lovelace",
        "display_name": "Ada Lovelace", "title": "Engineer", "department": "R&D",
        "phone": "+1 555 0100", "role": "member", "status": "active",
        "external_id": "00u1abcd", "manager_id": 7,
        "created_at": "2026-01-02T03:04:05Z", "updated_at": "2026-01-03T10:00:00Z"})
}

/// The attributes of the Blacksmith Users mapping that `upstream_user` carries (all of them).
const BLACKSMITH_ATTRIBUTES: usize = 12;

/// Okta's documented create request (developer.okta.com SCIM 2.0 guide, "Create the user").
fn okta_create() -> Value {
    json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "test.user@okta.local",
        "name": {"givenName": "Test", "familyName": "User"},
        "emails": [{"primary": true, "value": "test.user@okta.local", "type": "work"}],
        "displayName": "Test User", "locale": "en-US", "externalId": "00ujl29u0le5T6Aj10h7",
        "groups": [], "password": "1mz050nq", "active": true})
}

/// The `request` of a golden file.
fn golden(text: &str) -> Value {
    let file: Value = serde_json::from_str(text).expect("golden JSON");
    file["request"].clone()
}

/// Entra's "update multi-valued properties" and "no path, dotted keys" PATCHes as one
/// body: 3 operations (`Replace` spelled Entra's way, a value-path, a no-path value with
/// dotted and URN keys and `"True"`), 5 attribute changes.
fn entra_multi_op() -> Value {
    let mut body = golden(include_str!(
        "../tests/golden/entra-user-update-multi-valued.json"
    ));
    let more = golden(include_str!(
        "../tests/golden/entra-user-no-path-dotted.json"
    ));
    let ops = body["Operations"].as_array_mut().expect("operations");
    ops.extend(
        more["Operations"]
            .as_array()
            .expect("operations")
            .iter()
            .cloned(),
    );
    body
}

/// Okta's group membership add (`tests/golden/okta-group-add-members.json`) with 10 members.
fn okta_add_members(n: u64) -> Value {
    let members: Vec<Value> = (0..n)
        .map(|i| json!({"value": (2001 + i).to_string(), "display": format!("user{i}@okta.local")}))
        .collect();
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "add", "path": "members", "value": members}]})
}

/// A Users mapping with `factor` × the Blacksmith attributes: the Blacksmith file plus
/// `x1…xN` strings in a custom extension schema, each mapped to upstream `$.xI`.
fn scaled_mapping(dir: &Path, factor: usize) -> usize {
    let blacksmith = Path::new("mappings/blacksmith");
    std::fs::copy(blacksmith.join("gateway.toml"), dir.join("gateway.toml")).expect("copy");
    let users = std::fs::read_to_string(blacksmith.join("users.toml")).expect("users.toml");
    let extra = BLACKSMITH_ATTRIBUTES * factor - BLACKSMITH_ATTRIBUTES;
    let old_ext = r#"extensions = ["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]"#;
    let new_ext = format!(
        r#"extensions = ["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User", "{BENCH_URN}"]"#
    );
    let writes = "[resources.User.writes]";
    assert!(
        users.contains(old_ext) && users.contains(writes),
        "users.toml changed shape"
    );
    let mut attributes = String::new();
    for i in 1..=extra {
        attributes.push_str(&format!(
            "\"{BENCH_URN}:x{i}\" = {{ upstream = \"$.x{i}\" }}\n"
        ));
    }
    let users = users.replacen(old_ext, &new_ext, 1).replacen(
        writes,
        &format!("{attributes}\n{writes}"),
        1,
    );
    std::fs::write(dir.join("users.toml"), users).expect("write users.toml");
    extra
}

const BENCH_URN: &str = "urn:example:scim:schemas:extension:bench:2.0:User";

// ---------------------------------------------------------------------------------------
// The groups.

fn filters(c: &mut Criterion) {
    let mapping = load_dir(Path::new("mappings/blacksmith")).expect("mapping");
    let users = mapping.resource("Users").expect("Users").clone();
    let okta = r#"userName eq "test.user@okta.local""#;
    let complex = r#"emails[type eq "work" and value co "@example.com"] and (title pr or not (userType eq "Contractor")) or meta.lastModified gt "2026-01-01T00:00:00Z""#;
    parse_filter(complex).expect("complex filter parses");

    let mut g = c.benchmark_group("filter");
    bench(&mut g, "filter", "parse_okta_username_eq", || {
        parse_filter(black_box(okta)).ok()
    });
    bench(&mut g, "filter", "parse_complex", || {
        parse_filter(black_box(complex)).ok()
    });
    bench(&mut g, "filter", "parse_and_plan_okta_username_eq", || {
        let f = parse_filter(black_box(okta)).ok()?;
        users.plan_filter(&f).ok()
    });
    g.finish();
}

fn patch(c: &mut Criterion) {
    let mapping = load_dir(Path::new("mappings/blacksmith")).expect("mapping");
    let users = mapping.resource("Users").expect("Users").clone();
    let groups = mapping.resource("Groups").expect("Groups").clone();
    let current = users.to_scim(&upstream_user(1042), BASE).expect("user");
    let group = groups
        .to_scim(
            &json!({"id": 7, "name": "Security", "created_at": "2026-01-02T03:04:05Z",
                "updated_at": "2026-01-03T10:00:00Z"}),
            BASE,
        )
        .expect("group");
    let deactivate = golden(include_str!("../tests/golden/okta-user-deactivate.json"));
    let entra = entra_multi_op();
    let add10 = okta_add_members(10);

    // What the PATCH handler does before any upstream call: parse, apply to a copy of the
    // current document (and, for the full row, validate and derive the upstream writes).
    let parse_apply = |resource: &Resource, doc: &Value, body: &Value| {
        let ops = parse_patch(body)?;
        let mut updated = doc.clone();
        apply(&mut updated, &ops, resource)?;
        Ok::<_, scimgate::scim::ScimError>(updated)
    };
    let full = |resource: &Resource, doc: &Value, body: &Value| {
        let updated = parse_apply(resource, doc, body)?;
        resource.validate_values(&updated)?;
        resource.check_removals(doc, &updated)?;
        let changed = resource.changed_attributes(doc, &updated);
        let actions = resource.actions_for(doc, &updated)?.len();
        let body = resource.body_for(&updated, WriteMode::Changed(&changed))?;
        Ok::<_, scimgate::scim::ScimError>((actions, body))
    };
    let members = |resource: &Resource, doc: &Value, body: &Value| {
        let (rest, edit) = split_member_ops(parse_patch(body)?)?;
        let mut updated = doc.clone();
        apply(&mut updated, &rest, resource)?;
        Ok::<_, scimgate::scim::ScimError>((updated, edit))
    };
    let (actions, _) = full(&users, &current, &deactivate).expect("deactivate");
    assert_eq!(actions, 1, "deactivate runs the deactivate action");
    let (_, body) = full(&users, &current, &entra).expect("entra");
    assert!(body.is_some(), "the Entra PATCH writes fields");
    let (_, edit) = members(&groups, &group, &add10).expect("members");
    assert_eq!(edit.values().count(), 10);

    let mut g = c.benchmark_group("patch");
    bench(&mut g, "patch", "okta_deactivate_parse_apply", || {
        parse_apply(&users, &current, black_box(&deactivate)).ok()
    });
    bench(&mut g, "patch", "okta_deactivate_full", || {
        full(&users, &current, black_box(&deactivate)).ok()
    });
    bench(&mut g, "patch", "entra_3_ops_parse_apply", || {
        parse_apply(&users, &current, black_box(&entra)).ok()
    });
    bench(&mut g, "patch", "entra_3_ops_full", || {
        full(&users, &current, black_box(&entra)).ok()
    });
    bench(&mut g, "patch", "okta_group_add_10_members", || {
        members(&groups, &group, black_box(&add10)).ok()
    });
    g.finish();
}

fn create(c: &mut Criterion) {
    let mapping = load_dir(Path::new("mappings/blacksmith")).expect("mapping");
    let users = mapping.resource("Users").expect("Users").clone();
    let okta = okta_create();
    users.validate_request(&okta).expect("valid");
    let body = users.body_for(&okta, WriteMode::Create).expect("body");
    assert!(body.is_some());

    let mut g = c.benchmark_group("create");
    bench(&mut g, "create", "okta_user_to_upstream_body", || {
        users.validate_request(black_box(&okta)).ok()?;
        users.body_for(black_box(&okta), WriteMode::Create).ok()
    });
    g.finish();
}

fn read(c: &mut Criterion) {
    let mapping = load_dir(Path::new("mappings/blacksmith")).expect("mapping");
    let users = mapping.resource("Users").expect("Users").clone();
    assert!(
        users.layout.is_some(),
        "Blacksmith Users has a write layout"
    );
    let user = upstream_user(1042);
    let doc = users.to_scim(&user, BASE).expect("to_scim");
    let mut text = Vec::new();
    users
        .write_scim(&user, BASE, &mut text)
        .expect("write_scim");
    assert_eq!(text, serde_json::to_vec(&doc).expect("json"));

    let mut g = c.benchmark_group("read");
    bench(&mut g, "read", "to_scim_value", || {
        users.to_scim(black_box(&user), BASE).ok()
    });
    bench(&mut g, "read", "to_scim_then_serialize", || {
        let doc = users.to_scim(black_box(&user), BASE).ok()?;
        serde_json::to_vec(&doc).ok()
    });
    bench(&mut g, "read", "write_scim", || {
        // As `GET /Users/{id}` does it.
        let mut body = Vec::with_capacity(1024);
        users.write_scim(black_box(&user), BASE, &mut body).ok()?;
        Some(body)
    });
    g.finish();
}

fn list(c: &mut Criterion) {
    let mapping = load_dir(Path::new("mappings/blacksmith")).expect("mapping");
    let users = mapping.resource("Users").expect("Users").clone();
    let page: Vec<Value> = (0..100).map(|i| upstream_user(2000 + i)).collect();
    let upstream_page =
        serde_json::to_vec(&json!({"data": page, "meta": {"total": 1000}})).expect("page");

    // `list_plain` in src/server/resource.rs: one buffer, `write_scim` per item.
    let list_response = |items: &[Value]| {
        let mut body = Vec::with_capacity(128 + items.len() * 768);
        body.extend_from_slice(
            b"{\"schemas\":[\"urn:ietf:params:scim:api:messages:2.0:ListResponse",
        );
        body.extend_from_slice(
            format!(
                "\"],\"totalResults\":{},\"startIndex\":{},\"itemsPerPage\":{},\"Resources\":[",
                1000,
                1,
                items.len()
            )
            .as_bytes(),
        );
        for (i, obj) in items.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            users.write_scim(obj, BASE, &mut body).ok()?;
        }
        body.extend_from_slice(b"]}");
        Some(body)
    };
    let text = list_response(&page).expect("list");
    let parsed: Value = serde_json::from_slice(&text).expect("ListResponse is JSON");
    assert_eq!(parsed["Resources"].as_array().map(Vec::len), Some(100));

    let mut g = c.benchmark_group("list");
    g.throughput(Throughput::Elements(100));
    bench(&mut g, "list", "100_users_list_response", || {
        list_response(black_box(&page))
    });
    // The whole path of a plain list (`list_plain`): the upstream page's text read as
    // fields (`mapping::fields`), then each item written.
    let set = users
        .layout
        .as_ref()
        .and_then(|l| l.fields())
        .expect("Blacksmith users are read as fields")
        .clone();
    let items_path = ["data".to_owned()];
    let total_path = ["meta".to_owned(), "total".to_owned()];
    let from_text = |text: &[u8]| {
        let paths = PagePaths {
            items: &items_path,
            total: Some(&total_path),
            cursor: None,
        };
        let text: std::sync::Arc<str> = std::str::from_utf8(text).ok()?.into();
        let page = read_page(&text, &set, paths)?;
        let mut body = Vec::with_capacity(128 + 100 * 768);
        for (i, fields) in page.items?.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            users.write_scim_fields(fields, BASE, &mut body).ok()?;
        }
        Some(body)
    };
    let resources = from_text(&upstream_page).expect("page read as fields");
    assert!(text.windows(resources.len()).any(|w| w == resources));
    bench(&mut g, "list", "100_users_page_text_to_resources", || {
        from_text(black_box(&upstream_page))
    });
    // For scale: what parsing the upstream's 100-user page whole costs, the way
    // `RawResponse::parse` parses it (UTF-8 checked once, then `from_str`).
    bench(&mut g, "list", "100_users_parse_upstream_page", || {
        std::str::from_utf8(black_box(&upstream_page))
            .ok()
            .and_then(|text| serde_json::from_str::<Value>(text).ok())
    });
    g.finish();
}

fn scaling(c: &mut Criterion) {
    let plain = load_dir(Path::new("mappings/blacksmith")).expect("mapping");
    let plain = plain.resource("Users").expect("Users").clone();
    let dir = tempfile::tempdir().expect("temp dir");
    let extra = scaled_mapping(dir.path(), 10);
    let scaled = load_dir(dir.path()).expect("the 10× mapping compiles");
    let scaled = scaled.resource("Users").expect("Users").clone();
    assert_eq!(scaled.attributes.len(), plain.attributes.len() + extra);
    assert!(
        scaled.layout.is_some(),
        "the 10× mapping has a write layout"
    );

    let usual = upstream_user(1042);
    let mut all = usual.clone();
    for i in 1..=extra {
        all[format!("x{i}")] = json!(format!("value {i}"));
    }
    for (resource, obj) in [(&plain, &usual), (&scaled, &usual), (&scaled, &all)] {
        let mut text = Vec::new();
        resource
            .write_scim(obj, BASE, &mut text)
            .expect("write_scim");
        let doc = resource.to_scim(obj, BASE).expect("to_scim");
        assert_eq!(text, serde_json::to_vec(&doc).expect("json"));
    }

    let mut g = c.benchmark_group("scaling");
    let cases = [
        (
            "blacksmith_12_mapped_12_present",
            &plain,
            &usual,
            BLACKSMITH_ATTRIBUTES,
        ),
        (
            "10x_120_mapped_12_present",
            &scaled,
            &usual,
            BLACKSMITH_ATTRIBUTES,
        ),
        (
            "10x_120_mapped_120_present",
            &scaled,
            &all,
            BLACKSMITH_ATTRIBUTES + extra,
        ),
    ];
    for (name, resource, obj, present) in cases {
        // Throughput in attributes present: criterion prints attributes per second.
        g.throughput(Throughput::Elements(present as u64));
        bench(&mut g, "scaling", &format!("write_scim_{name}"), || {
            let mut body = Vec::with_capacity(1024);
            resource.write_scim(black_box(obj), BASE, &mut body).ok()?;
            Some(body)
        });
        bench(&mut g, "scaling", &format!("to_scim_{name}"), || {
            resource.to_scim(black_box(obj), BASE).ok()
        });
    }
    g.finish();
}

// ---------------------------------------------------------------------------------------
// The closing table.

/// Where criterion writes its estimates (its own rule: `CRITERION_HOME`, else the cargo
/// target directory's `criterion/`).
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    let from_metadata = std::env::var_os("CARGO").and_then(|cargo| {
        let out = std::process::Command::new(cargo)
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .output()
            .ok()?;
        let meta: Value = serde_json::from_slice(&out.stdout).ok()?;
        Some(PathBuf::from(meta["target_directory"].as_str()?).join("criterion"))
    });
    from_metadata.unwrap_or_else(|| PathBuf::from("target/criterion"))
}

/// Criterion's median time (ns) for `id`, when this run measured it.
fn median_ns(dir: &Path, id: &str, since: SystemTime) -> Option<f64> {
    let path = dir.join(id).join("new").join("estimates.json");
    let fresh = std::fs::metadata(&path).ok()?.modified().ok()? >= since;
    if !fresh {
        return None;
    }
    let estimates: Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    estimates["median"]["point_estimate"].as_f64()
}

fn time_text(ns: Option<f64>) -> String {
    match ns {
        None => "–".into(),
        Some(ns) if ns < 1_000.0 => format!("{ns:.0} ns"),
        Some(ns) if ns < 1_000_000.0 => format!("{:.2} µs", ns / 1e3),
        Some(ns) => format!("{:.2} ms", ns / 1e6),
    }
}

fn summary(since: SystemTime) {
    let dir = criterion_dir();
    let rows = ROWS.lock().expect("rows");
    let time = |id: &str| median_ns(&dir, id, since);
    println!("\n## Time and allocations per operation\n");
    println!(
        "(median of criterion's samples; allocations counted once, outside the timing loop)\n"
    );
    println!("| benchmark | median time | allocations | bytes allocated |");
    println!("|---|---:|---:|---:|");
    for row in rows.iter() {
        println!(
            "| {} | {} | {:.0} | {:.0} |",
            row.id,
            time_text(time(&row.id)),
            row.allocations,
            row.bytes
        );
    }

    let extra = BLACKSMITH_ATTRIBUTES * 9;
    println!(
        "\n## Scaling: the 10× mapping ({} mapped attributes vs {BLACKSMITH_ATTRIBUTES})\n",
        BLACKSMITH_ATTRIBUTES + extra
    );
    println!("| operation | Blacksmith, 12 present: per attribute | 10×, 12 present: per attribute | 10×, 120 present: per attribute | each mapped-but-absent attribute adds |");
    println!("|---|---:|---:|---:|---:|");
    for op in ["write_scim", "to_scim"] {
        let t = |case: &str| time(&format!("scaling/{op}_{case}"));
        let (Some(plain), Some(usual), Some(all)) = (
            t("blacksmith_12_mapped_12_present"),
            t("10x_120_mapped_12_present"),
            t("10x_120_mapped_120_present"),
        ) else {
            println!("| {op} | – | – | – | – |");
            continue;
        };
        let present = BLACKSMITH_ATTRIBUTES as f64;
        println!(
            "| {op} | {} | {} | {} | {} |",
            time_text(Some(plain / present)),
            time_text(Some(usual / present)),
            time_text(Some(all / (present + extra as f64))),
            time_text(Some((usual - plain) / extra as f64)),
        );
    }
}

fn main() {
    let started = SystemTime::now();
    let mut c = Criterion::default().configure_from_args();
    filters(&mut c);
    patch(&mut c);
    create(&mut c);
    read(&mut c);
    list(&mut c);
    scaling(&mut c);
    c.final_summary();
    summary(started);
}
