//! The Dockerfile, checked without a Docker engine so it cannot rot.
//!
//! The file is parsed; the build stage's context is staged in a temporary directory with
//! exactly what its COPY lines copy; the cargo command is checked against that tree
//! (`cargo fetch --locked` there fails when a declared target's file was not copied or the
//! lock file is stale; `cargo metadata` confirms `--bin`; the final stage's
//! `COPY --from` must name the file that command produces; every `include_str!` of the
//! sources must be inside the copied tree). The final stage is staged too, and the image's
//! own configuration is checked and served from it (`scimgate check`, then `CMD` with the
//! image's `ENV`), and the `HEALTHCHECK` command must pass against that gateway and fail once
//! it is gone. Only the compile itself is left out: it is the test suite's own build.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One instruction, continuation lines joined.
#[derive(Debug, Clone)]
struct Instr {
    keyword: String,
    args: String,
}

/// A build stage: its base, name and instructions.
#[derive(Debug, Default)]
struct Stage {
    from: String,
    name: Option<String>,
    instrs: Vec<Instr>,
}

fn parse(text: &str) -> Vec<Stage> {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if trimmed.starts_with('#') {
            continue; // a comment inside a continued instruction
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    assert!(
        current.is_empty(),
        "the Dockerfile ends inside a continuation"
    );
    let mut stages: Vec<Stage> = Vec::new();
    for line in logical {
        let (keyword, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let instr = Instr {
            keyword: keyword.to_ascii_uppercase(),
            args: args.trim().to_owned(),
        };
        if instr.keyword == "FROM" {
            let words: Vec<&str> = instr.args.split_whitespace().collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some((*name).to_owned()),
                [_] => None,
                other => panic!("unexpected FROM {other:?}"),
            };
            stages.push(Stage {
                from: words[0].to_owned(),
                name,
                instrs: Vec::new(),
            });
        } else {
            stages
                .last_mut()
                .expect("an instruction before FROM")
                .instrs
                .push(instr);
        }
    }
    stages
}

/// Exec-form (`["a", "b"]`) or shell-form arguments as words.
fn words(args: &str) -> Vec<String> {
    if args.starts_with('[') {
        serde_json::from_str(args).unwrap_or_else(|e| panic!("bad exec form {args}: {e}"))
    } else {
        args.split_whitespace().map(str::to_owned).collect()
    }
}

/// `COPY [--flag=…]… src… dest`: the flags and the paths.
fn copy_parts(args: &str) -> (BTreeMap<String, String>, Vec<String>, String) {
    let mut flags = BTreeMap::new();
    let mut paths = Vec::new();
    for w in words(args) {
        match w.strip_prefix("--") {
            Some(flag) => {
                let (k, v) = flag.split_once('=').unwrap_or((flag, ""));
                flags.insert(k.to_owned(), v.to_owned());
            }
            None => paths.push(w),
        }
    }
    let dest = paths.pop().expect("COPY has a destination");
    assert!(!paths.is_empty(), "COPY {args} has no source");
    (flags, paths, dest)
}

/// `root` joined with an absolute image path.
fn inside(root: &Path, image_path: &str) -> PathBuf {
    root.join(image_path.trim_start_matches('/'))
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("read dir") {
            let entry = entry.expect("entry");
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    }
}

/// Docker's COPY into `root` (the stage's filesystem) with `workdir` for relative
/// destinations: a directory source copies its contents; a file lands in a destination
/// ending in `/` by name, else as the destination.
fn stage_copy(root: &Path, workdir: &str, sources: &[PathBuf], dest: &str) {
    let dest_path = if dest.starts_with('/') {
        inside(root, dest)
    } else {
        inside(root, workdir).join(dest)
    };
    let into_dir = dest.ends_with('/') || dest == "." || sources.len() > 1;
    for src in sources {
        assert!(
            src.exists(),
            "COPY source {} does not exist in the build context",
            src.display()
        );
        if src.is_dir() {
            copy_tree(src, &dest_path);
        } else if into_dir {
            copy_tree(src, &dest_path.join(src.file_name().expect("file name")));
        } else {
            copy_tree(src, &dest_path);
        }
    }
}

/// What the Dockerfile says, staged on disk.
struct Staged {
    _tmp: tempfile::TempDir,
    /// The build stage's filesystem root and its WORKDIR.
    build_root: PathBuf,
    build_workdir: String,
    /// The cargo command of the build stage.
    cargo: Vec<String>,
    /// `COPY --from=<build>` source and destination in the final stage.
    artifact: (String, String),
    /// The final stage's filesystem root.
    root: PathBuf,
    workdir: String,
    env: Vec<(String, String)>,
    user: Option<String>,
    base: String,
    healthcheck: Vec<String>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    exposed: Vec<String>,
}

fn stage_dockerfile() -> Staged {
    let text = std::fs::read_to_string("Dockerfile").expect("Dockerfile");
    let stages = parse(&text);
    assert!(stages.len() >= 2, "a multi-stage build");
    let tmp = tempfile::tempdir().expect("temp dir");
    let build = &stages[0];
    let build_name = build.name.clone().expect("the build stage is named");
    let final_stage = stages.last().expect("a final stage");

    let build_root = tmp.path().join("build");
    let mut build_workdir = "/".to_owned();
    let mut cargo = Vec::new();
    for i in &build.instrs {
        match i.keyword.as_str() {
            "WORKDIR" => build_workdir = i.args.clone(),
            "COPY" => {
                let (flags, sources, dest) = copy_parts(&i.args);
                assert!(
                    !flags.contains_key("from"),
                    "the build stage copies the context"
                );
                let sources: Vec<PathBuf> = sources
                    .iter()
                    .map(|s| {
                        assert!(!s.contains('*'), "globs are not checked: {s}");
                        PathBuf::from(s)
                    })
                    .collect();
                stage_copy(&build_root, &build_workdir, &sources, &dest);
            }
            "RUN" => {
                let w = words(&i.args);
                assert_eq!(
                    w.first().map(String::as_str),
                    Some("cargo"),
                    "RUN {}",
                    i.args
                );
                assert!(cargo.is_empty(), "one cargo command");
                cargo = w;
            }
            "ENV" => {
                assert!(
                    !i.args.contains("CARGO_TARGET_DIR"),
                    "the artifact path assumes target/"
                );
            }
            "ARG" | "LABEL" => {}
            other => panic!("build stage: {other} is not checked by this test"),
        }
    }
    assert!(!cargo.is_empty(), "the build stage runs cargo");

    let root = tmp.path().join("image");
    let mut staged = Staged {
        build_root,
        build_workdir,
        cargo,
        artifact: (String::new(), String::new()),
        root,
        workdir: "/".to_owned(),
        env: Vec::new(),
        user: None,
        base: final_stage.from.clone(),
        healthcheck: Vec::new(),
        entrypoint: Vec::new(),
        cmd: Vec::new(),
        exposed: Vec::new(),
        _tmp: tmp,
    };
    for i in &final_stage.instrs {
        match i.keyword.as_str() {
            "WORKDIR" => staged.workdir = i.args.clone(),
            "COPY" => {
                let (flags, sources, dest) = copy_parts(&i.args);
                match flags.get("from") {
                    Some(from) => {
                        assert_eq!(from, &build_name, "copies from the build stage");
                        assert_eq!(sources.len(), 1);
                        staged.artifact = (sources[0].clone(), dest);
                    }
                    None => {
                        let sources: Vec<PathBuf> = sources.iter().map(PathBuf::from).collect();
                        stage_copy(&staged.root, &staged.workdir, &sources, &dest);
                    }
                }
            }
            "ENV" => {
                // `ENV K=V K2=V2` (values without spaces).
                for pair in i.args.split_whitespace() {
                    let (k, v) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("ENV {pair}: use K=V"));
                    staged
                        .env
                        .push((k.to_owned(), v.trim_matches('"').to_owned()));
                }
            }
            "USER" => staged.user = Some(i.args.clone()),
            "EXPOSE" => staged.exposed = words(&i.args),
            "HEALTHCHECK" => {
                let (_, cmd) = i.args.split_once("CMD").expect("HEALTHCHECK … CMD");
                staged.healthcheck = words(cmd.trim());
            }
            "ENTRYPOINT" => staged.entrypoint = words(&i.args),
            "CMD" => staged.cmd = words(&i.args),
            "ARG" | "LABEL" => {}
            other => panic!("final stage: {other} is not checked by this test"),
        }
    }
    staged
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.stdin(Stdio::null());
    c
}

#[test]
fn the_build_stage_builds_from_what_it_copies() {
    let s = stage_dockerfile();
    let dir = inside(&s.build_root, &s.build_workdir);

    // The flags: only ones this test understands, and a binary that exists.
    let args = &s.cargo[1..];
    assert_eq!(
        args.first().map(String::as_str),
        Some("build"),
        "{:?}",
        s.cargo
    );
    let mut bin = None;
    let mut release = false;
    let mut locked = false;
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--release" => release = true,
            "--locked" | "--frozen" => locked = true,
            "--bin" => bin = Some(it.next().expect("--bin NAME").clone()),
            other => panic!("cargo flag {other} is not checked by this test"),
        }
    }
    assert!(
        locked,
        "the image build must use the committed Cargo.lock (--locked)"
    );
    let bin = bin.expect("--bin NAME");

    // Every target cargo.toml declares is there, and Cargo.lock is current for it.
    let out = cargo()
        .args(["fetch", "--locked", "--offline"])
        .current_dir(&dir)
        .output()
        .expect("cargo fetch runs");
    let offline_ok = out.status.success();
    if !offline_ok {
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Offline can only lack downloads; anything else (a missing target, a stale lock)
        // is the Dockerfile's fault.
        assert!(
            stderr.contains("offline") || stderr.contains("download"),
            "cargo fetch --locked fails on the staged context:\n{stderr}"
        );
        let out = cargo()
            .args(["fetch", "--locked"])
            .current_dir(&dir)
            .output()
            .expect("cargo fetch runs");
        assert!(
            out.status.success(),
            "cargo fetch --locked fails on the staged context:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = cargo()
        .args([
            "metadata",
            "--locked",
            "--offline",
            "--no-deps",
            "--format-version",
            "1",
        ])
        .current_dir(&dir)
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let bins: Vec<&str> = meta["packages"][0]["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .filter(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"))
        })
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        bins.contains(&bin.as_str()),
        "--bin {bin} is not among {bins:?}"
    );

    // The final stage copies the file that command produces.
    let profile = if release { "release" } else { "debug" };
    let produced = format!(
        "{}/target/{profile}/{bin}",
        s.build_workdir.trim_end_matches('/')
    );
    assert_eq!(
        s.artifact.0, produced,
        "COPY --from must take the built binary"
    );

    // Files the sources compile in must be in the copied tree.
    let mut includes = 0;
    let mut pending = vec![dir.join("src")];
    while let Some(p) = pending.pop() {
        if p.is_dir() {
            pending.extend(
                std::fs::read_dir(&p)
                    .expect("dir")
                    .map(|e| e.expect("e").path()),
            );
            continue;
        }
        if p.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&p).expect("source");
        for mac in ["include_str!(\"", "include_bytes!(\""] {
            for (i, _) in text.match_indices(mac) {
                let rest = &text[i + mac.len()..];
                let rel = &rest[..rest.find('"').expect("closing quote")];
                let target = p.parent().expect("parent").join(rel);
                assert!(
                    target.exists(),
                    "{} includes {rel}, which the Dockerfile does not copy",
                    p.display()
                );
                includes += 1;
            }
        }
    }
    assert!(includes > 0, "the embedded demo mapping is found");
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The image's command line and environment, run against the staged final stage: image
/// paths map into it, the built binary stands in for the copied one, and listeners move to
/// free loopback ports.
fn image_command(s: &Staged, argv: &[String], listen: u16) -> Command {
    let binary = &s.artifact.1;
    let (program, args) = argv.split_first().expect("a command");
    assert_eq!(program, binary, "runs the binary the image copies");
    let mut c = Command::new(env!("CARGO_BIN_EXE_scimgate"));
    for a in args {
        c.arg(if a.starts_with('/') {
            inside(&s.root, a).display().to_string()
        } else {
            a.clone()
        });
    }
    for (k, _) in std::env::vars() {
        if k.starts_with("SCIMGATE_") || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
    for (k, v) in &s.env {
        let v = match k.as_str() {
            "SCIMGATE_LISTEN" => format!("127.0.0.1:{listen}"),
            "SCIMGATE_ADMIN_LISTEN" => "127.0.0.1:0".to_owned(),
            _ if v.starts_with('/') => inside(&s.root, v).display().to_string(),
            _ => v.clone(),
        };
        c.env(k, v);
    }
    c.current_dir(inside(&s.root, &s.workdir));
    c.stdin(Stdio::null());
    c
}

#[test]
fn the_image_runs_and_its_healthcheck_passes() {
    let s = stage_dockerfile();
    assert!(
        s.base.starts_with("gcr.io/distroless/") || s.base == "scratch",
        "a small base without a shell: {}",
        s.base
    );
    let user = s.user.clone().expect("USER");
    assert!(user != "root" && user != "0", "runs as non-root: {user}");
    assert!(s.exposed.iter().any(|p| p == "8080"), "{:?}", s.exposed);
    assert_eq!(s.entrypoint.first(), Some(&s.artifact.1));
    assert_eq!(s.healthcheck.first(), Some(&s.artifact.1));
    assert_eq!(s.healthcheck.get(1).map(String::as_str), Some("health"));

    // The configuration and mappings in the image load and compile, with the image's ENV.
    let check: Vec<String> = std::iter::once(s.artifact.1.clone())
        .chain(["check".to_owned()])
        .chain(s.cmd.iter().skip_while(|a| !a.starts_with("--")).cloned())
        .collect();
    let out = image_command(&s, &check, free_port())
        .output()
        .expect("scimgate check runs");
    assert!(
        out.status.success(),
        "scimgate check on the image's files:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // CMD serves; HEALTHCHECK passes while it does and fails once it is gone.
    let port = free_port();
    let serve: Vec<String> = std::iter::once(s.artifact.1.clone())
        .chain(s.cmd.iter().cloned())
        .collect();
    let mut gateway = image_command(&s, &serve, port)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("scimgate serve starts");
    let started = Instant::now();
    let healthy = loop {
        let status = image_command(&s, &s.healthcheck, port)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("scimgate health runs");
        if status.success() {
            break true;
        }
        if started.elapsed() > Duration::from_secs(20)
            || gateway.try_wait().ok().flatten().is_some()
        {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = gateway.kill();
    let _ = gateway.wait();
    assert!(healthy, "the HEALTHCHECK command never passed against CMD");
    let out = image_command(&s, &s.healthcheck, port)
        .output()
        .expect("scimgate health runs");
    assert!(
        !out.status.success(),
        "health passes with no gateway running"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("/healthz"));
}

#[test]
fn deployment_examples_use_real_settings() {
    let config = serde_json::to_value(scimgate::config::Config::default()).expect("config");
    let mut seen = 0;
    for file in [
        "Dockerfile",
        "deploy/compose.yaml",
        "deploy/kubernetes/pod.yaml",
    ] {
        let text = std::fs::read_to_string(file).expect("deployment file");
        for (i, _) in text.match_indices("SCIMGATE_") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let path: Vec<String> = name["SCIMGATE_".len()..]
                .split("__")
                .map(str::to_ascii_lowercase)
                .collect();
            let mut at = &config;
            for key in &path {
                at = at
                    .get(key)
                    .unwrap_or_else(|| panic!("{file}: {name} is not a setting (no {key:?})"));
            }
            seen += 1;
        }
    }
    assert!(seen >= 10);
    let pod = std::fs::read_to_string("deploy/kubernetes/pod.yaml").expect("pod.yaml");
    for probe in [
        "path: /healthz",
        "path: /readyz",
        "secretKeyRef",
        "configMap:",
    ] {
        assert!(pod.contains(probe), "pod.yaml lacks {probe}");
    }
}
