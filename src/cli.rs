//! The `scimgate` command line: `serve`, `demo`, `check`, `explain`, `test`, `hash-token`,
//! `health`, `schema`.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{AuthMode, Config};
use crate::mapping::{load_dir, load_sources, Mapping, Source};
use crate::server::{self, Gateway};

/// A SCIM 2.0 gateway in front of an existing REST API.
#[derive(Debug, Parser)]
#[command(name = "scimgate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options every subcommand takes.
#[derive(Debug, Args)]
struct Common {
    /// Configuration file (missing is fine: defaults and SCIMGATE_* apply).
    #[arg(long, default_value = "config.toml")]
    config: PathBuf,
    /// Mapping directory (overrides the configuration's `mappings`).
    #[arg(long)]
    mappings: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve SCIM in front of the configured upstream.
    Serve(Common),
    /// Run a built-in in-memory Blacksmith API with the gateway in front of it.
    Demo {
        #[command(flatten)]
        common: Common,
        /// Where the gateway listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// The SCIM bearer token to accept (random when not given).
        #[arg(long)]
        token: Option<String>,
        /// Where `/metrics` listens (default: the configuration's `admin_listen`; "" for none).
        #[arg(long)]
        admin_listen: Option<String>,
    },
    /// Load and compile the configuration and every mapping file; report every problem.
    Check(Common),
    /// Read a token on stdin and print the SHA-256 to put in `auth.static_keys`.
    HashToken(Common),
    /// GET the gateway's /healthz; exit 0 when it answers 2xx (a container health check
    /// that needs no shell or curl).
    Health {
        #[command(flatten)]
        common: Common,
        /// URL to check (default: /healthz on the configured `listen` address).
        #[arg(long)]
        url: Option<String>,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
    /// Print the JSON Schema of mapping files (docs/mapping.schema.json).
    Schema,
    /// Dry run of one SCIM request: the upstream calls the mapping makes, in order, and the
    /// SCIM answer, against a made-up upstream (nothing is sent anywhere).
    Explain {
        #[command(flatten)]
        common: Common,
        /// SCIM method: GET, POST, PUT, PATCH, DELETE.
        method: String,
        /// Path relative to the SCIM base path, query included (`/Users/1042`,
        /// `'/Users?filter=userName eq "ada@example.com"'`).
        path: String,
        /// JSON file with the SCIM request body (`-` for stdin).
        #[arg(long, value_name = "FILE")]
        body: Option<PathBuf>,
        /// A tenant field of the SCIM key (repeatable); fields not given are `1`.
        #[arg(long = "tenant", value_name = "KEY=VALUE")]
        tenant: Vec<String>,
        /// Print one JSON object (`calls`, `response`) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run mapping test fixtures offline: each SCIM request through the gateway against
    /// canned upstream answers, checking the calls made and the SCIM answer.
    Test {
        #[command(flatten)]
        common: Common,
        /// A fixture file or a directory of them (default: `tests/` in the mapping directory).
        dir: Option<PathBuf>,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(common) => check(&common),
        Command::HashToken(_) => hash_token(),
        // The configuration is read once, before the runtime: `workers` sizes it.
        Command::Serve(common) => match load_config(&common) {
            Ok(config) => run(config.workers, serve(common, config)),
            Err(e) => failed(&e),
        },
        Command::Demo {
            common,
            listen,
            token,
            admin_listen,
        } => match demo_config(&common) {
            Ok(config) => run(
                config.workers,
                demo(common, config, listen, token, admin_listen),
            ),
            Err(e) => failed(&e),
        },
        Command::Health {
            common,
            url,
            timeout,
        } => health(&common, url, timeout),
        Command::Explain {
            common,
            method,
            path,
            body,
            tenant,
            json,
        } => explain(&common, method, path, body, &tenant, json),
        Command::Test { common, dir } => mapping_tests(&common, dir),
        Command::Schema => {
            use std::io::Write;
            match writeln!(std::io::stdout(), "{}", mapping_schema()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            }
        }
    }
}

/// The JSON Schema of one mapping file, generated from the types files are read into
/// (`docs/mapping.schema.json`). Optional keys are simply not required: mapping files are
/// TOML, which has no null.
pub fn mapping_schema() -> String {
    let schema = schemars::schema_for!(crate::mapping::raw::RawFile);
    let mut schema = schema.to_value();
    drop_null(&mut schema);
    if let Some(root) = schema.as_object_mut() {
        root.insert("title".into(), "scimgate mapping file (version 1)".into());
    }
    serde_json::to_string_pretty(&schema).unwrap_or_default()
}

/// Removes the `null` alternative schemars gives `Option` fields (`"type": ["string",
/// "null"]`, `anyOf: [{…}, {"type": "null"}]`).
fn drop_null(schema: &mut serde_json::Value) {
    use serde_json::Value;
    match schema {
        Value::Object(map) => {
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    map.insert("type".into(), only);
                }
            }
            if let Some(Value::Array(any)) = map.get("anyOf") {
                let rest: Vec<Value> = any
                    .iter()
                    .filter(|s| s.get("type").and_then(Value::as_str) != Some("null"))
                    .cloned()
                    .collect();
                if rest.len() == 1 && rest.len() < any.len() {
                    map.remove("anyOf");
                    if let Value::Object(only) = &rest[0] {
                        for (k, v) in only {
                            map.entry(k.clone()).or_insert_with(|| v.clone());
                        }
                    }
                }
            }
            for v in map.values_mut() {
                drop_null(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(drop_null),
        _ => {}
    }
}

/// The upstream URL to print in `explain`, when one is configured (in the file or the
/// environment); the built-in default is not a real upstream, so it is not shown.
fn configured_upstream_url(common: &Common, config: &Config) -> Option<String> {
    if std::env::var_os("SCIMGATE_UPSTREAM__URL").is_some() {
        return Some(config.upstream.url.clone());
    }
    let text = std::fs::read_to_string(&common.config).ok()?;
    let file: toml::Value = toml::from_str(&text).ok()?;
    file.get("upstream")?.get("url")?;
    Some(config.upstream.url.clone())
}

fn current_thread_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the runtime: {e}"))
}

fn explain(
    common: &Common,
    method: String,
    path: String,
    body: Option<PathBuf>,
    tenant: &[String],
    json: bool,
) -> ExitCode {
    let run = || -> anyhow::Result<String> {
        let config = load_config(common)?;
        let mapping = load_dir(&config.mappings).map_err(|e| {
            anyhow::anyhow!("mapping errors in {}:\n{e}", config.mappings.display())
        })?;
        let body = match body {
            None => None,
            Some(file) => {
                let text = if file.as_os_str() == "-" {
                    let mut text = String::new();
                    std::io::stdin().read_to_string(&mut text)?;
                    text
                } else {
                    std::fs::read_to_string(&file)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?
                };
                Some(
                    serde_json::from_str(&text)
                        .map_err(|e| anyhow::anyhow!("{}: not JSON: {e}", file.display()))?,
                )
            }
        };
        let tenant = tenant
            .iter()
            .map(|t| crate::fixture::parse_tenant_arg(t))
            .collect::<anyhow::Result<_>>()?;
        let request = crate::fixture::explain::Request {
            method,
            path,
            body,
            tenant,
            upstream_url: configured_upstream_url(common, &config),
        };
        let explained = current_thread_runtime()?
            .block_on(crate::fixture::explain::explain(&config, mapping, request))?;
        Ok(if json {
            serde_json::to_string_pretty(&explained.to_json())? + "\n"
        } else {
            explained.to_text()
        })
    };
    match run() {
        Ok(text) => {
            use std::io::Write;
            match std::io::stdout().write_all(text.as_bytes()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            }
        }
        Err(e) => {
            eprintln!("scimgate explain: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn mapping_tests(common: &Common, dir: Option<PathBuf>) -> ExitCode {
    let run = || -> anyhow::Result<crate::fixture::runner::Summary> {
        let config = load_config(common)?;
        let sources = crate::mapping::read_dir_sources(&config.mappings)
            .map_err(|e| anyhow::anyhow!("cannot read {}:\n{e}", config.mappings.display()))?;
        // One compile up front, so a broken mapping is one clear error, not one per fixture.
        load_sources(&sources).map_err(|e| {
            anyhow::anyhow!("mapping errors in {}:\n{e}", config.mappings.display())
        })?;
        let root = dir.unwrap_or_else(|| config.mappings.join("tests"));
        let mut out = std::io::stdout();
        current_thread_runtime()?.block_on(crate::fixture::runner::run_all(
            &config, &sources, &root, &mut out,
        ))
    };
    match run() {
        Ok(summary) if summary.failed == 0 => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("scimgate test: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn health(common: &Common, url: Option<String>, timeout: u64) -> ExitCode {
    // With HTTPS configured, the default check speaks HTTPS to its own loopback listener
    // without verifying the certificate (made out to the public name, not to 127.0.0.1):
    // it sends nothing secret and only asks whether the process answers.
    let (url, own_tls) = match url {
        Some(u) => (u, false),
        None => match load_config(common) {
            Ok(config) => {
                let url = server::health::default_health_url(&config.listen);
                match config.tls.paths() {
                    Some(_) => (url.replacen("http://", "https://", 1), true),
                    None => (url, false),
                }
            }
            Err(e) => {
                eprintln!("scimgate health: {e:#}");
                return ExitCode::FAILURE;
            }
        },
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("scimgate health: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let timeout = std::time::Duration::from_secs(timeout.max(1));
    let checked = runtime.block_on(server::health::check(&url, timeout, own_tls));
    match checked {
        Ok(()) => {
            println!("ok: {url}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("scimgate health: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Binds the admin listener (`/metrics`) unless `addr` is empty, and serves it in the
/// background; returns the bound address.
async fn spawn_admin(
    gateway: &std::sync::Arc<Gateway>,
    addr: &str,
) -> anyhow::Result<Option<SocketAddr>> {
    if addr.is_empty() {
        return Ok(None);
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("admin_listen {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let gateway = gateway.clone();
    tokio::spawn(async move {
        if let Err(e) = server::serve_admin(gateway, listener).await {
            tracing::error!(error = %e, "admin listener stopped");
        }
    });
    Ok(Some(bound))
}

/// Reports a command's failure the way [`run`] does.
fn failed(e: &anyhow::Error) -> ExitCode {
    eprintln!("scimgate: {e:#}");
    ExitCode::FAILURE
}

/// Runs `future` on a multi-threaded runtime with `workers` threads (0: one per core).
fn run(workers: usize, future: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if workers > 0 {
        builder.worker_threads(workers);
    }
    // A task woken by another on the same worker (a request's upstream connection, then the
    // request with the answer) otherwise waits in that worker's LIFO slot, which the other
    // workers may not steal: when the OS preempts the worker thread, the request waits the
    // preemption out. Without the slot, the GET benchmark's p99 was 1–2 ms lower at the
    // same throughput (BENCHMARKS.md), when this runtime still served every connection;
    // since plain-HTTP connections have threads of their own (`server::threads`), it
    // serves TLS connections, the admin listener and the background tasks. tokio keeps
    // the switch behind its `tokio_unstable` cfg (.cargo/config.toml); a build without
    // the cfg keeps the slot.
    #[cfg(tokio_unstable)]
    builder.disable_lifo_slot();
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("scimgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(future) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => failed(&e),
    }
}

/// Where `serve` (and its reloads) read the configuration from.
fn config_source(common: &Common) -> server::config_reload::ConfigSource {
    server::config_reload::ConfigSource {
        path: common.config.clone(),
        mappings: common.mappings.clone(),
    }
}

fn load_config(common: &Common) -> anyhow::Result<Config> {
    config_source(common)
        .load()
        .map_err(|e| anyhow::anyhow!("{}: {e}", common.config.display()))
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = if config.log_format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

fn check(common: &Common) -> ExitCode {
    let config = match load_config(common) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::FAILURE;
        }
    };
    match load_dir(&config.mappings) {
        Ok(mapping) => {
            // Whether the mapping suits the authentication settings is only known with a
            // configuration; without one, the mapping is checked on its own.
            if common.config.exists() {
                if let Err(e) = crate::server::auth::Authenticator::new(&config.auth, &mapping) {
                    eprintln!("{}: {e:#}", common.config.display());
                    return ExitCode::FAILURE;
                }
            } else {
                eprintln!(
                    "note: {} does not exist; the mapping was checked without authentication settings",
                    common.config.display()
                );
            }
            println!(
                "ok: {} resource type(s) from {} (mapping {})",
                mapping.resources.len(),
                config.mappings.display(),
                mapping.hash
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            eprintln!("{} problem(s) found", errors.0.len());
            ExitCode::FAILURE
        }
    }
}

fn hash_token() -> ExitCode {
    let mut input = String::new();
    if std::io::stdin().read_to_string(&mut input).is_err() {
        eprintln!("cannot read the token from stdin");
        return ExitCode::FAILURE;
    }
    let token = input.trim_end_matches(['\r', '\n']);
    if token.is_empty() {
        eprintln!("no token on stdin");
        return ExitCode::FAILURE;
    }
    println!("{}", hex::encode(crate::server::auth::token_hash(token)));
    ExitCode::SUCCESS
}

async fn serve(common: Common, config: Config) -> anyhow::Result<()> {
    init_logging(&config);
    let mapping =
        load_dir(&config.mappings).map_err(|e| anyhow::anyhow!("mapping errors:\n{e}"))?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("listen {}: {e}", config.listen))?;
    let dir = config.mappings.clone();
    let admin_listen = config.admin_listen.clone();
    let hash = mapping.hash.clone();
    let gateway = Gateway::new(config, mapping)?;
    let admin = spawn_admin(&gateway, &admin_listen).await?;
    tracing::info!(
        listen = %listener.local_addr()?,
        scheme = if gateway.config.tls.paths().is_some() { "https" } else { "http" },
        admin_listen = %admin.map_or_else(|| "off".to_owned(), |a| a.to_string()),
        mapping = %hash,
        config = %gateway.config_hash,
        "scimgate serving"
    );
    server::reload::spawn(gateway.clone(), dir, std::time::Duration::from_millis(500));
    server::config_reload::spawn(
        gateway.clone(),
        config_source(&common),
        std::time::Duration::from_millis(500),
    );
    server::serve(gateway, listener).await?;
    Ok(())
}

/// The Blacksmith mapping compiled into the binary, so `scimgate demo` runs anywhere.
pub fn embedded_blacksmith_mapping() -> Result<Mapping, crate::mapping::CompileErrors> {
    let files = [
        (
            "gateway.toml",
            include_str!("../mappings/blacksmith/gateway.toml"),
        ),
        (
            "users.toml",
            include_str!("../mappings/blacksmith/users.toml"),
        ),
        (
            "groups.toml",
            include_str!("../mappings/blacksmith/groups.toml"),
        ),
    ];
    let sources: Vec<Source> = files
        .iter()
        .map(|(name, text)| Source {
            name: format!("(built-in) mappings/blacksmith/{name}"),
            text: (*text).to_owned(),
        })
        .collect();
    load_sources(&sources)
}

/// `demo`'s configuration: the file when there is one, the defaults otherwise.
fn demo_config(common: &Common) -> anyhow::Result<Config> {
    if common.config.exists() {
        load_config(common)
    } else {
        Ok(Config::default())
    }
}

async fn demo(
    common: Common,
    mut config: Config,
    listen: SocketAddr,
    token: Option<String>,
    admin_listen: Option<String>,
) -> anyhow::Result<()> {
    init_logging(&config);
    let mapping = match &common.mappings {
        Some(dir) => load_dir(dir),
        None => embedded_blacksmith_mapping(),
    }
    .map_err(|e| anyhow::anyhow!("mapping errors:\n{e}"))?;
    let token = token.unwrap_or_else(random_token);
    let service_token = random_token();
    let upstream = crate::demo::DemoUpstream::new(service_token.clone());
    upstream.add_scim_key(&token, 42, "k_demo", "SCIM Provisioning");
    upstream.seed_example_data(42);
    let upstream_addr = upstream
        .spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await?;

    config.upstream.url = format!("http://{upstream_addr}");
    config.upstream.token = Some(service_token);
    config.auth.mode = AuthMode::Introspect;
    // The per-tenant rate limit protects a real app; the demo's in-memory one needs none,
    // and conformance tools run against the demo at full speed.
    config.limits.rate_per_second = 0;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let scheme = if config.tls.paths().is_some() {
        "https"
    } else {
        "http"
    };
    let base = format!("{scheme}://{addr}{}", config.base_path_trimmed());
    let admin_listen = admin_listen.unwrap_or_else(|| config.admin_listen.clone());
    let gateway = Gateway::new(config, mapping)?;
    // The demo runs beside other things: a busy admin port is a warning, not a failure.
    let admin = match spawn_admin(&gateway, &admin_listen).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("scimgate demo: no metrics listener: {e:#}");
            None
        }
    };
    if let Some(dir) = common.mappings {
        server::reload::spawn(gateway.clone(), dir, std::time::Duration::from_millis(500));
    }
    use std::fmt::Write as _;
    let mut banner = String::new();
    let _ = writeln!(
        banner,
        "scimgate demo: an in-memory Blacksmith API behind the gateway"
    );
    let _ = writeln!(banner, "  SCIM base URL: {base}");
    let _ = writeln!(banner, "  token:         {token}");
    let _ = writeln!(
        banner,
        "  upstream:      http://{upstream_addr} (demo Blacksmith API)"
    );
    if let Some(admin) = admin {
        let _ = writeln!(banner, "  metrics:       http://{admin}/metrics");
    }
    let _ = writeln!(banner, "\nTry:");
    let _ = writeln!(
        banner,
        "  curl -H 'Authorization: Bearer {token}' {base}/Users"
    );
    let _ = writeln!(
        banner,
        "  curl -H 'Authorization: Bearer {token}' -H 'Content-Type: application/scim+json' \\\n    -d '{{\"schemas\":[\"urn:ietf:params:scim:schemas:core:2.0:User\"],\"userName\":\"grace@example.com\",\"name\":{{\"givenName\":\"Grace\",\"familyName\":\"Hopper\"}}}}' {base}/Users"
    );
    // A reader that went away (a script that only wanted the URL) is not an error.
    use std::io::Write as _;
    let mut stdout = std::io::stdout();
    let _ = stdout
        .write_all(banner.as_bytes())
        .and_then(|()| stdout.flush());
    server::serve(gateway, listener).await?;
    Ok(())
}

fn random_token() -> String {
    use rand::Rng;
    let bytes: [u8; 24] = rand::rng().random();
    hex::encode(bytes)
}
