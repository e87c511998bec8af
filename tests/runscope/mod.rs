//! Runner for Okta's own SCIM conformance suites.
//!
//! Okta publishes its SCIM 2.0 "SPEC" and "CRUD" test suites as Runscope
//! (BlazeMeter API Monitoring) JSON exports. This module loads such an export
//! and executes it the way Runscope would: request steps in order, variables
//! substituted into URL, headers and body, assertions checked against the
//! response, variables extracted from the response for later steps.
//!
//! What Runscope itself provides and the export does not contain is emulated:
//!
//! * Okta's "Initial Script" (not in the export) sets the environment
//!   variables; [`initial_variables`] sets every one the suites reference.
//! * Pause steps are not slept: the gateway is synchronous.
//! * JavaScript step scripts cannot run here. Empty scripts are no-ops, the one
//!   script of the SPEC "Verify Groups endpoint" step is checked natively, and
//!   any other script makes its step fail.
//! * The CRUD suite drives an Okta org (`{{oktaOrgUrl}}`); there is none here,
//!   so [`OktaOrgEmulator`] stands in for it and sends the SCIM calls Okta
//!   documents for each event.
//!
//! Anything the runner cannot honour (an unknown comparison, step type,
//! assertion source, auth block, form body, script) fails the step with a
//! message saying so; nothing is silently passed.
//!
//! This is integration-test support code: it deliberately uses nothing from the
//! scimgate crate.
#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{json, Map, Value};

/// The SCIM service the suite is run against.
#[derive(Debug, Clone)]
pub struct Target {
    /// Base URL of the SCIM API, e.g. `http://127.0.0.1:8080/scim/v2`.
    pub scim_base_url: String,
    /// The full `Authorization` header value, e.g. `Bearer xyz`.
    pub authorization: String,
}

/// The result of one step of a suite (pause steps are not reported).
#[derive(Debug, Clone)]
pub struct StepOutcome {
    /// Position of the step in the export's `steps` array (0-based, pauses
    /// included), so that it can be found in the file.
    pub index: usize,
    /// The step's `note` as written in the export (not substituted).
    pub name: String,
    pub passed: bool,
    pub failures: Vec<String>,
    /// The export marks the step `"skipped": true`; it was not run.
    pub skipped: bool,
}

/// The outcome of running one suite.
#[derive(Debug, Clone)]
pub struct SuiteReport {
    /// The suite's `name` from the export.
    pub suite: String,
    pub steps: Vec<StepOutcome>,
}

impl SuiteReport {
    /// Number of steps that were run (not skipped).
    pub fn ran(&self) -> usize {
        self.steps.iter().filter(|s| !s.skipped).count()
    }

    /// Steps that ran and failed.
    pub fn failed(&self) -> Vec<&StepOutcome> {
        self.steps
            .iter()
            .filter(|s| !s.skipped && !s.passed)
            .collect()
    }

    /// One line per step, then `N steps ran, M failed`.
    pub fn print(&self) {
        println!("== {} ==", self.suite);
        for step in &self.steps {
            let verdict = if step.skipped {
                "SKIP"
            } else if step.passed {
                "PASS"
            } else {
                "FAIL"
            };
            let mut line = format!("{verdict} #{:<2} {}", step.index, step.name);
            if !step.failures.is_empty() {
                let _ = write!(line, " -- {}", step.failures.join(" | "));
            }
            println!("{line}");
        }
        println!("{} steps ran, {} failed", self.ran(), self.failed().len());
    }
}

/// Load the Runscope export at `path` and run it against `target`.
///
/// Returns `Err` when the export cannot be read or parsed, or when a step
/// references a variable that neither the Initial Script emulation nor an
/// earlier step defines. Step failures are reported in the [`SuiteReport`].
pub async fn run_suite(path: &Path, target: &Target) -> Result<SuiteReport, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read suite {}: {e}", path.display()))?;
    let export: Value = serde_json::from_str(&text)
        .map_err(|e| format!("suite {} is not valid JSON: {e}", path.display()))?;
    let suite_name = export
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("(unnamed suite)")
        .to_string();
    let raw_steps = export
        .get("steps")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("suite {} has no `steps` array", path.display()))?;
    let steps = raw_steps
        .iter()
        .enumerate()
        .map(|(i, s)| parse_step(i, s))
        .collect::<Result<Vec<_>, _>>()?;

    let vars = initial_variables(target);
    check_variable_coverage(&suite_name, &steps, &vars)?;

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("cannot build HTTP client: {e}"))?;
    let emulator = OktaOrgEmulator::new(
        vars["oktaOrgUrl"].clone(),
        vars["oktaAppId"].clone(),
        vars["oktaToken"].clone(),
        ScimClient {
            http: client.clone(),
            base_url: target.scim_base_url.trim_end_matches('/').to_string(),
            authorization: target.authorization.clone(),
        },
    );
    let mut runner = Runner {
        vars,
        defined_by: HashMap::new(),
        client,
        emulator,
    };

    let mut outcomes = Vec::new();
    for (index, step) in steps.iter().enumerate() {
        match step {
            Step::Pause => {
                // Runscope waits here for asynchronous provisioning; the
                // gateway answers synchronously, so there is nothing to wait for.
            }
            Step::Other { step_type } => outcomes.push(StepOutcome {
                index,
                name: format!("({step_type} step)"),
                passed: false,
                failures: vec![format!(
                    "unsupported step type `{step_type}`: this runner only runs request and pause steps"
                )],
                skipped: false,
            }),
            Step::Request(req) => outcomes.push(runner.run_request(index, req).await),
        }
    }
    Ok(SuiteReport {
        suite: suite_name,
        steps: outcomes,
    })
}

/// File name of Okta's SPEC suite.
pub const SPEC_SUITE: &str = "Okta-SCIM-20-SPEC-Test.json";
/// File name of Okta's CRUD suite.
pub const CRUD_SUITE: &str = "Okta-SCIM-20-CRUD-Test.json";

/// Find one of Okta's suite files: in `$SCIMGATE_OKTA_SUITES_DIR` when set,
/// otherwise in `shared/acceptance/okta/` of the crate directory or of its
/// nearest ancestor that has one.
pub fn locate_suite(file_name: &str) -> Result<std::path::PathBuf, String> {
    if let Ok(dir) = std::env::var("SCIMGATE_OKTA_SUITES_DIR") {
        let path = Path::new(&dir).join(file_name);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{} does not exist", path.display()))
        };
    }
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .ancestors()
        .map(|dir| dir.join("shared/acceptance/okta").join(file_name))
        .find(|path| path.is_file())
        .ok_or_else(|| {
            format!(
                "{file_name} not found in shared/acceptance/okta/ of {} or any parent (set SCIMGATE_OKTA_SUITES_DIR)",
                manifest_dir.display()
            )
        })
}

/// Number of `request` steps in a suite export (what a full run must run).
pub fn count_request_steps(path: &Path) -> Result<usize, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let export: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(export
        .get("steps")
        .and_then(Value::as_array)
        .map(|steps| {
            steps
                .iter()
                .filter(|s| s.get("step_type").and_then(Value::as_str) == Some("request"))
                .count()
        })
        .unwrap_or(0))
}

// ---------------------------------------------------------------------------
// Initial Script emulation
// ---------------------------------------------------------------------------

const GIVEN_NAMES: &[&str] = &[
    "Ada", "Bruno", "Chiara", "Dmitri", "Elif", "Farah", "Gustav", "Hana", "Ines", "Jonas",
    "Keiko", "Lucia", "Mateo", "Nadia", "Omar", "Priya",
];
const FAMILY_NAMES: &[&str] = &[
    "Okafor",
    "Lindqvist",
    "Moreau",
    "Tanaka",
    "Novak",
    "Silva",
    "Kowalski",
    "Haddad",
    "Brennan",
    "Ferreira",
    "Nakamura",
    "Rossi",
];

/// The variables Okta's Initial Scripts (`Initial_Script_Spec.txt`,
/// `Initial_Script_CRUD.txt`, run by Runscope before the first step and not
/// part of the exports) provide, plus the CRUD suite's "Initial Variables".
///
/// Random values follow the scripts' style: `Runscope<digits>@atko.com` user
/// names, realistic person names.
pub fn initial_variables(target: &Target) -> HashMap<String, String> {
    let mut rng = rand::rng();
    let base = target.scim_base_url.trim_end_matches('/').to_string();
    let mut distinct_numbers = BTreeSet::new();
    while distinct_numbers.len() < 4 {
        distinct_numbers.insert(rng.random_range(100_000_000u64..1_000_000_000));
    }
    let numbers: Vec<u64> = distinct_numbers.into_iter().collect();
    let pick = |rng: &mut rand::rngs::ThreadRng, pool: &[&str]| -> String {
        pool[rng.random_range(0..pool.len())].to_string()
    };
    let alnum = |rng: &mut rand::rngs::ThreadRng, n: usize| -> String {
        (0..n)
            .map(|_| char::from(rng.sample(rand::distr::Alphanumeric)))
            .collect()
    };

    let random_username = format!("Runscope{}@atko.com", numbers[0]);
    let okta_first = pick(&mut rng, GIVEN_NAMES);
    let mut okta_first_update = pick(&mut rng, GIVEN_NAMES);
    while okta_first_update == okta_first {
        okta_first_update = pick(&mut rng, GIVEN_NAMES);
    }

    let mut v = HashMap::new();
    let mut set = |k: &str, val: String| {
        v.insert(k.to_string(), val);
    };
    // SPEC suite.
    set("SCIMBaseURL", base.clone());
    set("auth", target.authorization.clone());
    set("randomUsernameCaps", random_username.to_uppercase());
    set("randomUsername", random_username);
    set("randomEmail", format!("Runscope{}@atko.com", numbers[1]));
    set("randomGivenName", pick(&mut rng, GIVEN_NAMES));
    set("randomFamilyName", pick(&mut rng, FAMILY_NAMES));
    set(
        "InvalidUserEmail",
        format!("InvalidUser{}@atko.com", numbers[2]),
    );
    set("UserIdThatDoesNotExist", random_uuid(&mut rng));
    // CRUD suite.
    set("SCIMUrl", base);
    set("SCIMAuth", target.authorization.clone());
    set("oktaOrgUrl", OktaOrgEmulator::ORG_URL.to_string());
    set("oktaAppId", format!("0oa{}", alnum(&mut rng, 17)));
    set("oktaToken", format!("00{}", alnum(&mut rng, 40)));
    set("okta_user_firstname", okta_first);
    set("okta_user_firstname_update", okta_first_update);
    set("okta_user_lastname", pick(&mut rng, FAMILY_NAMES));
    set(
        "okta_user_email",
        format!("Runscope{}@atko.com", numbers[3]),
    );
    set("okta_user_title", "Integration Tester".to_string());
    set(
        "okta_user_primaryphone",
        format!("+1-415-555-{:04}", rng.random_range(0..10_000)),
    );
    v
}

/// A random RFC 4122 version-4 style identifier.
fn random_uuid(rng: &mut rand::rngs::ThreadRng) -> String {
    let mut b: [u8; 16] = rng.random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

// ---------------------------------------------------------------------------
// The export's step model
// ---------------------------------------------------------------------------

enum Step {
    Request(Box<RequestStep>),
    Pause,
    Other { step_type: String },
}

struct RequestStep {
    name: String,
    skipped: bool,
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<String>,
    assertions: Vec<Assertion>,
    extractions: Vec<Extraction>,
    scripts: Vec<String>,
    before_scripts: Vec<String>,
    /// Parts of the step this runner cannot honour; each fails the step.
    unsupported: Vec<String>,
}

struct Assertion {
    source: String,
    comparison: String,
    property: Option<String>,
    value: Option<String>,
}

struct Extraction {
    source: String,
    name: String,
    property: String,
}

/// A scalar from the export as text: strings as is, numbers and booleans as
/// their JSON text, `null` as absent.
fn scalar_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn parse_step(index: usize, v: &Value) -> Result<Step, String> {
    let step_type = v
        .get("step_type")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("step #{index} has no step_type"))?;
    match step_type {
        "request" => parse_request(index, v).map(|r| Step::Request(Box::new(r))),
        "pause" => Ok(Step::Pause),
        other => Ok(Step::Other {
            step_type: other.to_string(),
        }),
    }
}

fn parse_request(index: usize, v: &Value) -> Result<RequestStep, String> {
    let str_field = |k: &str| v.get(k).and_then(Value::as_str);
    let method = str_field("method")
        .ok_or_else(|| format!("request step #{index} has no method"))?
        .to_ascii_uppercase();
    let url = str_field("url")
        .ok_or_else(|| format!("request step #{index} has no url"))?
        .to_string();
    let name = match str_field("note").map(str::trim) {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => format!("{method} {url}"),
    };

    let mut headers = Vec::new();
    if let Some(h) = v.get("headers") {
        let obj = h
            .as_object()
            .ok_or_else(|| format!("step #{index}: headers is not an object"))?;
        for (k, val) in obj {
            match val {
                Value::String(s) => headers.push((k.clone(), s.clone())),
                Value::Array(items) => {
                    for item in items {
                        let s = scalar_text(Some(item))
                            .ok_or_else(|| format!("step #{index}: header {k} has a null value"))?;
                        headers.push((k.clone(), s));
                    }
                }
                other => headers.push((k.clone(), other.to_string())),
            }
        }
    }

    let body = match v.get("body") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    };

    let mut unsupported = Vec::new();
    if v.get("auth")
        .and_then(Value::as_object)
        .is_some_and(|o| !o.is_empty())
    {
        unsupported.push("step-level `auth` settings are not supported by this runner".to_string());
    }
    if v.get("form")
        .and_then(Value::as_object)
        .is_some_and(|o| !o.is_empty())
    {
        unsupported.push("form bodies are not supported by this runner".to_string());
    }
    if v.get("multipart_form")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
    {
        unsupported.push("multipart bodies are not supported by this runner".to_string());
    }
    if v.get("binary_body").is_some_and(|b| !b.is_null()) {
        unsupported.push("binary bodies are not supported by this runner".to_string());
    }

    let mut assertions = Vec::new();
    for a in v
        .get("assertions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        assertions.push(Assertion {
            source: scalar_text(a.get("source")).unwrap_or_default(),
            comparison: scalar_text(a.get("comparison")).unwrap_or_default(),
            property: scalar_text(a.get("property")),
            value: scalar_text(a.get("value")),
        });
    }

    let mut extractions = Vec::new();
    for x in v
        .get("variables")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = scalar_text(x.get("name")).unwrap_or_default();
        let property = scalar_text(x.get("property")).unwrap_or_default();
        if name.trim().is_empty() || property.trim().is_empty() {
            continue; // Runscope's editor leaves such empty rows behind.
        }
        extractions.push(Extraction {
            source: scalar_text(x.get("source")).unwrap_or_default(),
            name: name.trim().to_string(),
            property,
        });
    }

    let strings = |k: &str| -> Vec<String> {
        v.get(k)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|s| scalar_text(Some(s)).unwrap_or_default())
            .collect()
    };

    Ok(RequestStep {
        name,
        skipped: v.get("skipped").and_then(Value::as_bool).unwrap_or(false),
        method,
        url,
        headers,
        body,
        assertions,
        extractions,
        scripts: strings("scripts"),
        before_scripts: strings("before_scripts"),
        unsupported,
    })
}

// ---------------------------------------------------------------------------
// Variables
// ---------------------------------------------------------------------------

/// Names referenced as `{{name}}` in `text`.
fn referenced_variables(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                names.push(after[..end].trim().to_string());
                rest = &after[end + 2..];
            }
            None => break,
        }
    }
    names
}

/// Replace every `{{name}}` in `text`; every referenced variable must be set.
fn substitute(text: &str, vars: &HashMap<String, String>) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(text.len());
    let mut missing = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        out.push_str(&rest[..start]);
        let name = after[..end].trim();
        match vars.get(name) {
            Some(value) => out.push_str(value),
            None => missing.push(name.to_string()),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(missing)
    }
}

impl RequestStep {
    /// Every text of the step that is substituted before sending.
    fn templated_texts(&self) -> Vec<&str> {
        let mut texts = vec![self.url.as_str()];
        texts.extend(self.headers.iter().map(|(_, v)| v.as_str()));
        texts.extend(self.body.as_deref());
        for a in &self.assertions {
            texts.extend(a.value.as_deref());
            texts.extend(a.property.as_deref());
        }
        texts.extend(self.extractions.iter().map(|x| x.property.as_str()));
        texts
    }
}

/// Before running anything: every `{{variable}}` a step uses must be set by the
/// Initial Script emulation or extracted by an earlier step.
fn check_variable_coverage(
    suite: &str,
    steps: &[Step],
    initial: &HashMap<String, String>,
) -> Result<(), String> {
    let mut known: BTreeSet<String> = initial.keys().cloned().collect();
    let mut problems = Vec::new();
    for (index, step) in steps.iter().enumerate() {
        let Step::Request(req) = step else { continue };
        if req.skipped {
            continue;
        }
        for text in req.templated_texts() {
            for name in referenced_variables(text) {
                if !known.contains(&name) {
                    problems.push(format!(
                        "step #{index} `{}` uses {{{{{name}}}}}, which neither the Initial Script emulation nor an earlier step defines",
                        req.name
                    ));
                }
            }
        }
        known.extend(req.extractions.iter().map(|x| x.name.clone()));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("suite `{suite}`: {}", problems.join("; ")))
    }
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

/// What a step observed: a real HTTP response or one produced by the emulator.
struct Observed {
    status: u16,
    body: String,
    json: Result<Value, String>,
    elapsed_ms: u128,
}

impl Observed {
    fn new(status: u16, body: String, elapsed_ms: u128) -> Self {
        let json = if body.trim().is_empty() {
            Err("the response has no body".to_string())
        } else {
            serde_json::from_str(&body)
                .map_err(|e| format!("the response body is not JSON ({e}): {}", excerpt(&body)))
        };
        Observed {
            status,
            body,
            json,
            elapsed_ms,
        }
    }

    fn from_json(status: u16, value: Value) -> Self {
        Observed::new(status, value.to_string(), 0)
    }
}

fn excerpt(text: &str) -> String {
    const MAX: usize = 300;
    let trimmed = text.trim();
    if trimmed.chars().count() <= MAX {
        trimmed.to_string()
    } else {
        let cut: String = trimmed.chars().take(MAX).collect();
        format!("{cut}...")
    }
}

fn is_hex(b: u8) -> bool {
    b.is_ascii_hexdigit()
}

/// Percent-encode a query string the way a browser (and Runscope) sends it:
/// spaces become `%20`, quotes `%22`; separators (`&`, `=`) and existing
/// `%XX` escapes are kept.
pub fn encode_query(query: &str) -> String {
    let bytes = query.as_bytes();
    let mut out = String::with_capacity(query.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' && i + 2 < bytes.len() && is_hex(bytes[i + 1]) && is_hex(bytes[i + 2]) {
            out.push_str(&query[i..i + 3]);
            i += 3;
            continue;
        }
        if b.is_ascii_alphanumeric() || b"-._~!$&()*+,;=:@/?".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
        i += 1;
    }
    out
}

/// Encode like JavaScript's `encodeURIComponent` (used for Okta's own filter
/// query, e.g. `userName%20eq%20%22a%40b.com%22`).
fn encode_component(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Turn a step URL into what goes on the wire: the path as given, the query
/// percent-encoded, any fragment dropped.
pub fn wire_url(raw: &str) -> Result<reqwest::Url, String> {
    let without_fragment = raw.split('#').next().unwrap_or(raw);
    let encoded = match without_fragment.split_once('?') {
        Some((path, query)) => format!("{path}?{}", encode_query(query)),
        None => without_fragment.to_string(),
    };
    reqwest::Url::parse(&encoded).map_err(|e| format!("invalid URL `{encoded}`: {e}"))
}

/// An error with all its causes ("error sending request: ...: Connection refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

async fn send(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: Option<String>,
) -> Result<Observed, String> {
    let url = wire_url(url)?;
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .map_err(|e| format!("invalid method `{method}`: {e}"))?;
    let mut req = client.request(method.clone(), url.clone());
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    if let Some(body) = body {
        req = req.body(body);
    }
    let started = Instant::now();
    let resp = req
        .send()
        .await
        .map_err(|e| format!("{method} {url} failed: {}", error_chain(&e)))?;
    let status = resp.status().as_u16();
    let text = resp.text().await.map_err(|e| {
        format!(
            "{method} {url}: reading the response failed: {}",
            error_chain(&e)
        )
    })?;
    Ok(Observed::new(status, text, started.elapsed().as_millis()))
}

// ---------------------------------------------------------------------------
// JSON paths and assertions
// ---------------------------------------------------------------------------

/// Look up a Runscope JSON property path such as `Resources[0].emails[0].value`.
/// An empty path is the whole document. `Ok(None)` when the path is absent.
pub fn json_path<'a>(root: &'a Value, path: &str) -> Result<Option<&'a Value>, String> {
    let path = path.trim();
    let mut current = root;
    if path.is_empty() {
        return Ok(Some(current));
    }
    for segment in path.split('.') {
        let (key, mut indexes) = match segment.find('[') {
            Some(pos) => (&segment[..pos], &segment[pos..]),
            None => (segment, ""),
        };
        if !key.is_empty() {
            match current.get(key) {
                Some(next) if current.is_object() => current = next,
                _ => return Ok(None),
            }
        } else if indexes.is_empty() {
            return Err(format!("malformed property path `{path}`: empty segment"));
        }
        while !indexes.is_empty() {
            let close = indexes
                .find(']')
                .filter(|_| indexes.starts_with('['))
                .ok_or_else(|| format!("malformed property path `{path}`"))?;
            let n: usize = indexes[1..close]
                .trim()
                .parse()
                .map_err(|_| format!("malformed index in property path `{path}`"))?;
            match current.as_array().and_then(|a| a.get(n)) {
                Some(next) => current = next,
                None => return Ok(None),
            }
            indexes = &indexes[close + 1..];
        }
    }
    Ok(Some(current))
}

/// A value as Runscope compares it: strings raw, `true` as "true", numbers as
/// their text, objects and arrays as compact JSON.
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Bool(_) | Value::Number(_) => false,
    }
}

fn number_of(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn parse_expected_number(expected: Option<&str>) -> Result<f64, String> {
    let text = expected.ok_or("the assertion has no value to compare with")?;
    text.trim()
        .parse::<f64>()
        .map_err(|_| format!("the assertion's value `{text}` is not a number"))
}

fn describe(actual: Option<&Value>) -> String {
    match actual {
        None => "property not found".to_string(),
        Some(v) => format!("got {}", excerpt(&v.to_string())),
    }
}

/// Check one comparison. `actual` is `None` when the property is absent.
fn compare(comparison: &str, actual: Option<&Value>, expected: Option<&str>) -> Result<(), String> {
    let need_expected = || expected.ok_or("the assertion has no value to compare with".to_string());
    let fail = || Err(describe(actual));
    match comparison {
        "equal" => {
            let e = need_expected()?;
            match actual {
                Some(v) if text_of(v) == e => Ok(()),
                _ => fail(),
            }
        }
        "not_equal" => {
            let e = need_expected()?;
            match actual {
                Some(v) if text_of(v) == e => fail(),
                _ => Ok(()),
            }
        }
        "empty" => match actual {
            None => Ok(()),
            Some(v) if is_empty_value(v) => Ok(()),
            _ => fail(),
        },
        "not_empty" => match actual {
            Some(v) if !is_empty_value(v) => Ok(()),
            _ => fail(),
        },
        "contains" | "does_not_contain" => {
            let e = need_expected()?;
            let found = match actual {
                None => false,
                Some(Value::Array(items)) => items.iter().any(|i| text_of(i).contains(e)),
                Some(v) => text_of(v).contains(e),
            };
            let wanted = comparison == "contains";
            if found == wanted {
                Ok(())
            } else {
                fail()
            }
        }
        "has_value" => {
            let e = need_expected()?;
            let found = match actual {
                None => false,
                Some(Value::Array(items)) => items.iter().any(|i| text_of(i) == e),
                Some(v) => text_of(v) == e,
            };
            if found {
                Ok(())
            } else {
                fail()
            }
        }
        "has_key" => {
            let e = need_expected()?;
            match actual {
                Some(Value::Object(o)) if o.contains_key(e) => Ok(()),
                _ => fail(),
            }
        }
        "is_null" => match actual {
            Some(Value::Null) => Ok(()),
            _ => fail(),
        },
        "is_a_number" => match actual {
            Some(Value::Number(_)) => Ok(()),
            _ => fail(),
        },
        "equal_number"
        | "is_less_than"
        | "is_less_than_or_equal"
        | "is_greater_than"
        | "is_greater_than_or_equal" => {
            let e = parse_expected_number(expected)?;
            let Some(a) = actual.and_then(number_of) else {
                return Err(format!("{} (not a number)", describe(actual)));
            };
            let ok = match comparison {
                "equal_number" => a == e,
                "is_less_than" => a < e,
                "is_less_than_or_equal" => a <= e,
                "is_greater_than" => a > e,
                _ => a >= e,
            };
            if ok {
                Ok(())
            } else {
                fail()
            }
        }
        other => Err(format!(
            "unsupported comparison `{other}`: this runner cannot evaluate it"
        )),
    }
}

/// Evaluate one assertion (already substituted) against what the step observed.
fn evaluate(a: &Assertion, observed: &Observed) -> Result<(), String> {
    let label = match &a.property {
        Some(p) if !p.is_empty() => format!("{} `{p}`", a.source),
        _ => a.source.clone(),
    };
    let expected = a.value.as_deref();
    let expectation = match expected {
        Some(e) => format!("{label} {} `{e}`", a.comparison),
        None => format!("{label} {}", a.comparison),
    };
    let status_value;
    let time_value;
    let actual: Option<&Value> = match a.source.as_str() {
        "response_status" => {
            status_value = Value::from(observed.status);
            Some(&status_value)
        }
        "response_time" => {
            time_value = Value::from(observed.elapsed_ms as u64);
            Some(&time_value)
        }
        "response_json" => {
            let doc = observed
                .json
                .as_ref()
                .map_err(|e| format!("{expectation}: {e}"))?;
            json_path(doc, a.property.as_deref().unwrap_or(""))
                .map_err(|e| format!("{expectation}: {e}"))?
        }
        other => {
            return Err(format!(
                "unsupported assertion source `{other}`: this runner cannot evaluate it"
            ));
        }
    };
    compare(&a.comparison, actual, expected).map_err(|why| {
        if a.source == "response_time" {
            format!("{expectation}: took {} ms", observed.elapsed_ms)
        } else {
            format!("{expectation}: {why}")
        }
    })
}

// ---------------------------------------------------------------------------
// Scripts
// ---------------------------------------------------------------------------

/// Recognise the SPEC suite's "Verify Groups endpoint" script, which asserts
/// that `Resources` is an array whenever `totalResults` is at least 1.
fn is_groups_array_script(script: &str) -> bool {
    script.contains("JSON.parse(response.body)")
        && script.contains("data.totalResults")
        && script.contains("data.Resources")
        && script.contains("Array.isArray(res)")
}

/// The native equivalent of that script.
fn check_groups_array_script(observed: &Observed) -> Result<(), String> {
    let data = observed.json.as_ref().map_err(|e| {
        format!("script (Groups Resources array check): JSON.parse would throw: {e}")
    })?;
    let max = data.get("totalResults");
    let at_least_one = max.and_then(Value::as_f64).is_some_and(|n| n >= 1.0);
    if at_least_one && !data.get("Resources").is_some_and(Value::is_array) {
        return Err(format!(
            "script (Groups Resources array check): totalResults is {} but Resources is not an array ({})",
            text_of(max.unwrap_or(&Value::Null)),
            describe(data.get("Resources"))
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Running steps
// ---------------------------------------------------------------------------

struct Runner {
    vars: HashMap<String, String>,
    /// Which step extracted each variable (for error messages).
    defined_by: HashMap<String, String>,
    client: reqwest::Client,
    emulator: OktaOrgEmulator,
}

impl Runner {
    fn explain_missing(&self, missing: &[String]) -> String {
        let parts: Vec<String> = missing
            .iter()
            .map(|name| match self.defined_by.get(name) {
                Some(origin) => {
                    format!("{{{{{name}}}}} is undefined ({origin} did not provide it)")
                }
                None => format!("{{{{{name}}}}} is undefined"),
            })
            .collect();
        format!("not sent: {}", parts.join(", "))
    }

    /// Set (or, without a usable response, unset) the step's variables.
    fn extract(
        &mut self,
        index: usize,
        step: &RequestStep,
        paths: &[String],
        observed: Option<&Observed>,
        failures: &mut Vec<String>,
    ) {
        for (x, path) in step.extractions.iter().zip(paths) {
            let origin = format!("step #{index} `{}` ({} `{path}`)", step.name, x.source);
            self.defined_by.insert(x.name.clone(), origin);
            let value = match (x.source.as_str(), observed) {
                (_, None) => None,
                ("response_json", Some(o)) => o
                    .json
                    .as_ref()
                    .ok()
                    .and_then(|doc| json_path(doc, path).ok().flatten())
                    .filter(|v| !v.is_null())
                    .map(text_of),
                ("response_status", Some(o)) => Some(o.status.to_string()),
                (other, Some(_)) => {
                    failures.push(format!(
                        "unsupported variable source `{other}` for {{{{{}}}}}",
                        x.name
                    ));
                    None
                }
            };
            match value {
                Some(v) => {
                    self.vars.insert(x.name.clone(), v);
                }
                None => {
                    // Never let a stale value stand in for a failed extraction.
                    self.vars.remove(&x.name);
                }
            }
        }
    }

    async fn run_request(&mut self, index: usize, step: &RequestStep) -> StepOutcome {
        let mut outcome = StepOutcome {
            index,
            name: step.name.clone(),
            passed: false,
            failures: step.unsupported.clone(),
            skipped: step.skipped,
        };
        if step.skipped {
            outcome.passed = true;
            outcome.failures.clear();
            return outcome;
        }

        // Scripts: only empty ones and the one known script can be honoured.
        let mut groups_script = false;
        for script in &step.before_scripts {
            if !script.trim().is_empty() {
                outcome.failures.push(format!(
                    "before_script cannot be executed by this runner: {}",
                    excerpt(script.lines().next().unwrap_or(""))
                ));
            }
        }
        for script in &step.scripts {
            if script.trim().is_empty() {
                continue;
            }
            if is_groups_array_script(script) {
                groups_script = true;
            } else {
                outcome.failures.push(format!(
                    "script cannot be executed by this runner: {}",
                    excerpt(script.lines().next().unwrap_or(""))
                ));
            }
        }

        // Substitute variables; a missing one stops the step here.
        let mut missing = Vec::new();
        let mut sub = |text: &str| -> String {
            substitute(text, &self.vars).unwrap_or_else(|m| {
                missing.extend(m);
                String::new()
            })
        };
        let url = sub(&step.url);
        let headers: Vec<(String, String)> = step
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), sub(v)))
            .collect();
        let body = step.body.as_deref().map(&mut sub);
        let assertions: Vec<Assertion> = step
            .assertions
            .iter()
            .map(|a| Assertion {
                source: a.source.clone(),
                comparison: a.comparison.clone(),
                property: a.property.as_deref().map(&mut sub),
                value: a.value.as_deref().map(&mut sub),
            })
            .collect();
        let extraction_paths: Vec<String> =
            step.extractions.iter().map(|x| sub(&x.property)).collect();
        if !missing.is_empty() {
            missing.sort();
            missing.dedup();
            outcome.failures.push(self.explain_missing(&missing));
            let raw_paths: Vec<String> = step
                .extractions
                .iter()
                .map(|x| x.property.clone())
                .collect();
            self.extract(index, step, &raw_paths, None, &mut outcome.failures);
            return outcome;
        }

        let observed = if self.emulator.handles(&url) {
            self.emulator
                .handle(&step.method, &url, &headers, body.as_deref())
                .await
        } else {
            send(&self.client, &step.method, &url, &headers, body)
                .await
                .map_err(|e| vec![e])
        };
        let observed = match observed {
            Ok(o) => o,
            Err(errors) => {
                outcome.failures.extend(errors);
                self.extract(index, step, &extraction_paths, None, &mut outcome.failures);
                return outcome;
            }
        };

        let before = outcome.failures.len();
        for a in &assertions {
            if let Err(e) = evaluate(a, &observed) {
                outcome.failures.push(e);
            }
        }
        let script_result = if groups_script {
            check_groups_array_script(&observed)
        } else {
            Ok(())
        };
        if let Err(e) = script_result {
            outcome.failures.push(e);
        }
        if outcome.failures.len() > before {
            outcome.failures.push(format!(
                "response {} in {} ms: {}",
                observed.status,
                observed.elapsed_ms,
                excerpt(&observed.body)
            ));
        }

        // Extract variables, whatever the assertions said (as Runscope does).
        self.extract(
            index,
            step,
            &extraction_paths,
            Some(&observed),
            &mut outcome.failures,
        );

        outcome.passed = outcome.failures.is_empty();
        outcome
    }
}

// ---------------------------------------------------------------------------
// Okta org emulation (CRUD suite)
// ---------------------------------------------------------------------------

const SCIM_USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const SCIM_PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// A small client for the SCIM calls the emulated Okta org sends.
struct ScimClient {
    http: reqwest::Client,
    base_url: String,
    authorization: String,
}

/// An Okta user as the emulated org knows it.
struct OktaUser {
    id: String,
    status: &'static str,
    /// The Okta user profile (`firstName`, `lastName`, `email`, `login`, ...).
    profile: Map<String, Value>,
    password: Option<String>,
    /// The app assignment (app user), when the user is assigned to the app.
    assignment: Option<AppUser>,
    /// The SCIM `id` of the provisioned user, once Okta has provisioned it.
    scim_id: Option<String>,
}

/// The app user profile Okta maps to SCIM attributes.
#[derive(Clone)]
struct AppUser {
    user_name: String,
    given_name: String,
    family_name: String,
    email: String,
    email_type: String,
}

/// Stands in for the Okta org that the CRUD suite drives through
/// `{{oktaOrgUrl}}/api/v1/...`.
///
/// For each Okta API call of the suite it reproduces the SCIM 2.0 requests that
/// Okta documents sending to the application when that event happens
/// (developer.okta.com, "SCIM 2.0 protocol reference" / Okta provisioning
/// flows): checking for an existing user with
/// `GET /Users?filter=userName eq "..."`, creating it with `POST /Users`,
/// updating a profile by `GET /Users/{id}` followed by a full `PUT`,
/// deactivating and reactivating with a `PATCH` of `active`. The Okta step's
/// own assertions (200/204) are then checked against an Okta-shaped answer,
/// which is only produced when every SCIM call got the success status Okta
/// expects; otherwise the step fails with the calls that were made.
pub struct OktaOrgEmulator {
    org_url: String,
    app_id: String,
    token: String,
    scim: ScimClient,
    users: HashMap<String, OktaUser>,
}

/// Failure of an emulated event: everything that was sent, then what went wrong.
type EmulationResult<T> = Result<T, String>;

impl OktaOrgEmulator {
    /// `oktaOrgUrl` as set by [`initial_variables`]; `.invalid` never resolves.
    pub const ORG_URL: &'static str = "https://emulated-okta-org.invalid";

    fn new(org_url: String, app_id: String, token: String, scim: ScimClient) -> Self {
        OktaOrgEmulator {
            org_url: org_url.trim_end_matches('/').to_string(),
            app_id,
            token,
            scim,
            users: HashMap::new(),
        }
    }

    fn handles(&self, url: &str) -> bool {
        url.starts_with(&self.org_url)
    }

    /// Handle one Okta API call of the suite. `Err` holds the step's failures.
    async fn handle(
        &mut self,
        method: &str,
        url: &str,
        headers: &[(String, String)],
        body: Option<&str>,
    ) -> Result<Observed, Vec<String>> {
        let rest = &url[self.org_url.len()..];
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();

        let authorized = headers.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("authorization") && *v == format!("SSWS {}", self.token)
        });
        if !authorized {
            return Ok(okta_error(
                401,
                "E0000011",
                "Invalid token provided (emulated org expects `SSWS {{oktaToken}}`)",
            ));
        }
        let body_json = match body {
            Some(b) => match serde_json::from_str::<Value>(b) {
                Ok(v) => Some(v),
                Err(e) => {
                    return Ok(okta_error(
                        400,
                        "E0000003",
                        &format!("body is not JSON: {e}"),
                    ));
                }
            },
            None => None,
        };

        let mut log = Vec::new();
        let started = Instant::now();
        let result = match (method, segments.as_slice()) {
            ("GET", ["api", "v1", "apps", app]) => self.get_app(app),
            ("POST", ["api", "v1", "users"]) => self.create_user(query, body_json.as_ref()),
            ("POST", ["api", "v1", "apps", app, "users"]) => {
                self.assign(&mut log, app, body_json.as_ref()).await
            }
            ("PUT", ["api", "v1", "users", id]) => {
                self.update_user(&mut log, id, body_json.as_ref()).await
            }
            ("POST", ["api", "v1", "users", id, "lifecycle", "deactivate"]) => {
                self.deactivate(&mut log, id).await
            }
            ("POST", ["api", "v1", "users", id, "lifecycle", "activate"]) => self.activate(id),
            ("DELETE", ["api", "v1", "apps", app, "users", id]) => {
                self.unassign(&mut log, app, id).await
            }
            _ => Err(format!("no emulation for {method} {url}")),
        };
        match result {
            Ok(mut observed) => {
                observed.elapsed_ms = started.elapsed().as_millis();
                Ok(observed)
            }
            Err(e) => {
                let mut failures = vec![format!("emulated Okta org: {e}")];
                if !log.is_empty() {
                    failures.push(format!("SCIM calls sent: {}", log.join("; ")));
                }
                Err(failures)
            }
        }
    }

    fn check_app(&self, app: &str) -> EmulationResult<()> {
        if app == self.app_id {
            Ok(())
        } else {
            Err(format!(
                "Okta would answer 404: app `{app}` is not the suite's app `{}`",
                self.app_id
            ))
        }
    }

    fn user_mut(&mut self, id: &str) -> EmulationResult<&mut OktaUser> {
        self.users
            .get_mut(id)
            .ok_or_else(|| format!("Okta would answer 404: no Okta user `{id}`"))
    }

    /// `GET /api/v1/apps/{app}`: nothing is sent to the SCIM server.
    fn get_app(&self, app: &str) -> EmulationResult<Observed> {
        self.check_app(app)?;
        Ok(Observed::from_json(
            200,
            json!({
                "id": self.app_id,
                "status": "ACTIVE",
                "signOnMode": "AUTO_LOGIN",
                "features": ["PUSH_NEW_USERS", "PUSH_PROFILE_UPDATES", "PUSH_USER_DEACTIVATION", "REACTIVATE_USERS"],
            }),
        ))
    }

    /// `POST /api/v1/users?activate=true`: the user exists in Okta only; it is
    /// not provisioned until it is assigned to the app.
    fn create_user(&mut self, query: &str, body: Option<&Value>) -> EmulationResult<Observed> {
        let body = body.ok_or("create user: no body")?;
        let profile = body
            .get("profile")
            .and_then(Value::as_object)
            .cloned()
            .ok_or("create user: body has no `profile` object")?;
        let login = profile.get("login").and_then(Value::as_str).unwrap_or("");
        if login.is_empty() {
            return Err("create user: profile.login is required".to_string());
        }
        if self
            .users
            .values()
            .any(|u| u.profile.get("login").and_then(Value::as_str) == Some(login))
        {
            return Ok(okta_error(
                400,
                "E0000001",
                "login: An object with this field already exists",
            ));
        }
        let password = body
            .pointer("/credentials/password/value")
            .and_then(Value::as_str)
            .map(str::to_string);
        let activate = !query.split('&').any(|kv| kv == "activate=false");
        let mut rng = rand::rng();
        let id: String = format!(
            "00u{}",
            (0..17)
                .map(|_| char::from(rng.sample(rand::distr::Alphanumeric)))
                .collect::<String>()
        );
        let user = OktaUser {
            id: id.clone(),
            status: if activate { "ACTIVE" } else { "STAGED" },
            profile,
            password,
            assignment: None,
            scim_id: None,
        };
        let answer = okta_user_json(&user);
        self.users.insert(id, user);
        Ok(Observed::from_json(200, answer))
    }

    /// `POST /api/v1/apps/{app}/users`: assignment provisions the user.
    async fn assign(
        &mut self,
        log: &mut Vec<String>,
        app: &str,
        body: Option<&Value>,
    ) -> EmulationResult<Observed> {
        self.check_app(app)?;
        let body = body.ok_or("assign: no body")?;
        let okta_id = body
            .get("id")
            .and_then(Value::as_str)
            .ok_or("assign: body has no user `id`")?
            .to_string();
        let str_at = |p: &str| body.pointer(p).and_then(Value::as_str).map(str::to_string);
        let user = self.user_mut(&okta_id)?;
        let login = user
            .profile
            .get("login")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let profile_str = |k: &str| {
            user.profile
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let app_user = AppUser {
            user_name: str_at("/credentials/userName").unwrap_or(login),
            given_name: str_at("/profile/givenName").unwrap_or_else(|| profile_str("firstName")),
            family_name: str_at("/profile/familyName").unwrap_or_else(|| profile_str("lastName")),
            email: str_at("/profile/email").unwrap_or_else(|| profile_str("email")),
            email_type: str_at("/profile/emailType").unwrap_or_else(|| "work".to_string()),
        };
        if user.status != "ACTIVE" {
            return Err(format!(
                "Okta would not provision user `{okta_id}` in status {}",
                user.status
            ));
        }
        user.assignment = Some(app_user.clone());
        let existing_scim_id = user.scim_id.clone();
        let password = user.password.clone();

        let scim_id = match existing_scim_id {
            None => {
                // New assignment: look the user up, create it if absent,
                // otherwise reactivate the matching account.
                let found = self
                    .scim_call(
                        log,
                        "GET",
                        &format!(
                            "/Users?filter={}&startIndex=1&count=100",
                            encode_component(&format!("userName eq \"{}\"", app_user.user_name))
                        ),
                        None,
                        200,
                    )
                    .await?;
                let doc = found.json.map_err(|e| format!("user lookup: {e}"))?;
                let total = doc
                    .get("totalResults")
                    .and_then(Value::as_u64)
                    .ok_or("user lookup: ListResponse has no numeric totalResults")?;
                if total == 0 {
                    let create = json!({
                        "schemas": [SCIM_USER_SCHEMA],
                        "userName": app_user.user_name,
                        "name": {
                            "givenName": app_user.given_name,
                            "familyName": app_user.family_name,
                        },
                        "emails": [{
                            "primary": true,
                            "value": app_user.email,
                            "type": app_user.email_type,
                        }],
                        "displayName": format!("{} {}", app_user.given_name, app_user.family_name),
                        "locale": "en-US",
                        "externalId": okta_id,
                        "groups": [],
                        "password": password.unwrap_or_else(|| "Okta-Generated-1".to_string()),
                        "active": true,
                    });
                    let created = self
                        .scim_call(log, "POST", "/Users", Some(&create), 201)
                        .await?;
                    created
                        .json
                        .ok()
                        .and_then(|d| d.get("id").and_then(Value::as_str).map(str::to_string))
                        .filter(|id| !id.is_empty())
                        .ok_or("POST /Users answered 201 without an `id`")?
                } else {
                    let id = doc
                        .pointer("/Resources/0/id")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .ok_or("user lookup: totalResults > 0 but no Resources[0].id")?;
                    self.patch_active(log, &id, true).await?;
                    id
                }
            }
            Some(id) => {
                // Re-assignment of a user Okta provisioned before: reactivate,
                // then push the current profile.
                let current = self
                    .scim_call(log, "GET", &format!("/Users/{id}"), None, 200)
                    .await?;
                self.patch_active(log, &id, true).await?;
                let mut full = current.json.map_err(|e| format!("GET /Users/{id}: {e}"))?;
                apply_app_user(&mut full, &id, &app_user);
                full["active"] = Value::Bool(true);
                self.scim_call(log, "PUT", &format!("/Users/{id}"), Some(&full), 200)
                    .await?;
                id
            }
        };
        let user = self.user_mut(&okta_id)?;
        user.scim_id = Some(scim_id.clone());
        Ok(Observed::from_json(
            200,
            json!({
                "id": okta_id,
                "externalId": scim_id,
                "scope": "USER",
                "status": "PROVISIONED",
                "syncState": "SYNCHRONIZED",
                "credentials": { "userName": app_user.user_name },
                "profile": {
                    "givenName": app_user.given_name,
                    "familyName": app_user.family_name,
                    "email": app_user.email,
                    "emailType": app_user.email_type,
                },
            }),
        ))
    }

    /// `PUT /api/v1/users/{id}`: a profile update is pushed to an assigned,
    /// provisioned user as `GET /Users/{id}` then a full `PUT /Users/{id}`.
    async fn update_user(
        &mut self,
        log: &mut Vec<String>,
        okta_id: &str,
        body: Option<&Value>,
    ) -> EmulationResult<Observed> {
        let profile = body
            .and_then(|b| b.get("profile"))
            .and_then(Value::as_object)
            .cloned()
            .ok_or("update user: body has no `profile` object")?;
        let user = self.user_mut(okta_id)?;
        let old_login = user.profile.get("login").cloned();
        user.profile = profile;
        let get = |k: &str| {
            user.profile
                .get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        if let Some(app_user) = user.assignment.as_mut() {
            // Okta's default attribute mappings: firstName -> givenName, ...
            if let Some(v) = get("firstName") {
                app_user.given_name = v;
            }
            if let Some(v) = get("lastName") {
                app_user.family_name = v;
            }
            if let Some(v) = get("email") {
                app_user.email = v;
            }
            // The app user name follows the login when it was derived from it.
            let follows_login =
                old_login.as_ref().and_then(Value::as_str) == Some(app_user.user_name.as_str());
            if let (true, Some(v)) = (follows_login, get("login")) {
                app_user.user_name = v;
            }
        }
        let push = match (&user.assignment, &user.scim_id, user.status) {
            (Some(app_user), Some(id), "ACTIVE") => Some((app_user.clone(), id.clone())),
            _ => None,
        };
        let answer = okta_user_json(user);
        if let Some((app_user, id)) = push {
            let current = self
                .scim_call(log, "GET", &format!("/Users/{id}"), None, 200)
                .await?;
            let mut full = current.json.map_err(|e| format!("GET /Users/{id}: {e}"))?;
            apply_app_user(&mut full, &id, &app_user);
            self.scim_call(log, "PUT", &format!("/Users/{id}"), Some(&full), 200)
                .await?;
        }
        Ok(Observed::from_json(200, answer))
    }

    /// `POST /api/v1/users/{id}/lifecycle/deactivate`: a provisioned user is
    /// deactivated with a `PATCH` of `active: false`; Okta drops the user's
    /// app assignments.
    async fn deactivate(
        &mut self,
        log: &mut Vec<String>,
        okta_id: &str,
    ) -> EmulationResult<Observed> {
        let user = self.user_mut(okta_id)?;
        user.status = "DEPROVISIONED";
        let had_assignment = user.assignment.take().is_some();
        let scim_id = user.scim_id.clone();
        if let (true, Some(id)) = (had_assignment, scim_id) {
            self.patch_active(log, &id, false).await?;
        }
        Ok(Observed::from_json(200, json!({})))
    }

    /// `POST /api/v1/users/{id}/lifecycle/activate`: nothing is sent; Okta
    /// provisions again when the user is next assigned to the app.
    fn activate(&mut self, okta_id: &str) -> EmulationResult<Observed> {
        let user = self.user_mut(okta_id)?;
        if user.status == "ACTIVE" {
            return Ok(okta_error(
                403,
                "E0000016",
                "Activation failed because the user is already active",
            ));
        }
        user.status = "ACTIVE";
        Ok(Observed::from_json(200, json!({})))
    }

    /// `DELETE /api/v1/apps/{app}/users/{id}`: unassignment deactivates the
    /// provisioned user with a `PATCH` of `active: false`; Okta answers 204.
    async fn unassign(
        &mut self,
        log: &mut Vec<String>,
        app: &str,
        okta_id: &str,
    ) -> EmulationResult<Observed> {
        self.check_app(app)?;
        let user = self.user_mut(okta_id)?;
        if user.assignment.take().is_none() {
            return Ok(okta_error(404, "E0000007", "Not found: app user"));
        }
        if let Some(id) = user.scim_id.clone() {
            self.patch_active(log, &id, false).await?;
        }
        Ok(Observed::new(204, String::new(), 0))
    }

    async fn patch_active(
        &self,
        log: &mut Vec<String>,
        id: &str,
        active: bool,
    ) -> EmulationResult<()> {
        let patch = json!({
            "schemas": [SCIM_PATCH_OP],
            "Operations": [{ "op": "replace", "value": { "active": active } }],
        });
        self.scim_call(log, "PATCH", &format!("/Users/{id}"), Some(&patch), 200)
            .await
            .map(|_| ())
    }

    /// Send one SCIM request as Okta does and require Okta's success status.
    async fn scim_call(
        &self,
        log: &mut Vec<String>,
        method: &str,
        path_and_query: &str,
        body: Option<&Value>,
        expected: u16,
    ) -> EmulationResult<Observed> {
        let url = format!("{}{path_and_query}", self.scim.base_url);
        let mut headers = vec![
            ("Authorization".to_string(), self.scim.authorization.clone()),
            ("Accept".to_string(), "application/scim+json".to_string()),
            (
                "User-Agent".to_string(),
                "Okta SCIM Client 1.0.0".to_string(),
            ),
        ];
        if body.is_some() {
            headers.push((
                "Content-Type".to_string(),
                "application/scim+json; charset=utf-8".to_string(),
            ));
        }
        let observed = send(
            &self.scim.http,
            method,
            &url,
            &headers,
            body.map(Value::to_string),
        )
        .await
        .map_err(|e| {
            log.push(format!("{method} {path_and_query} -> no response"));
            format!("{method} {path_and_query}: {e}")
        })?;
        log.push(format!("{method} {path_and_query} -> {}", observed.status));
        if observed.status != expected {
            return Err(format!(
                "{method} {path_and_query} answered {}, Okta expects {expected}: {}",
                observed.status,
                excerpt(&observed.body)
            ));
        }
        Ok(observed)
    }
}

/// Put the app user profile into a SCIM user as returned by the server, the
/// way Okta builds its full-replacement `PUT` body (`id` included).
fn apply_app_user(user: &mut Value, id: &str, app_user: &AppUser) {
    if !user.is_object() {
        *user = json!({});
    }
    user["id"] = Value::String(id.to_string());
    if user.get("schemas").is_none() {
        user["schemas"] = json!([SCIM_USER_SCHEMA]);
    }
    user["userName"] = Value::String(app_user.user_name.clone());
    if !user.get("name").is_some_and(Value::is_object) {
        user["name"] = json!({});
    }
    user["name"]["givenName"] = Value::String(app_user.given_name.clone());
    user["name"]["familyName"] = Value::String(app_user.family_name.clone());
    user["displayName"] =
        Value::String(format!("{} {}", app_user.given_name, app_user.family_name));
    let emails = user
        .get_mut("emails")
        .and_then(Value::as_array_mut)
        .filter(|a| !a.is_empty());
    match emails {
        Some(list) => {
            let slot = list
                .iter()
                .position(|e| e.get("primary").and_then(Value::as_bool) == Some(true))
                .unwrap_or(0);
            list[slot]["value"] = Value::String(app_user.email.clone());
        }
        None => {
            user["emails"] = json!([{
                "primary": true,
                "value": app_user.email,
                "type": app_user.email_type,
            }]);
        }
    }
}

fn okta_user_json(user: &OktaUser) -> Value {
    json!({
        "id": user.id,
        "status": user.status,
        "profile": user.profile,
        "credentials": { "provider": { "type": "OKTA", "name": "OKTA" } },
    })
}

fn okta_error(status: u16, code: &str, summary: &str) -> Observed {
    Observed::from_json(
        status,
        json!({ "errorCode": code, "errorSummary": summary, "errorCauses": [] }),
    )
}
