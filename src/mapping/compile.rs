//! Raw mapping files → a validated, compiled [`Mapping`]. Every problem is reported with
//! file, line and reason, all at once, so an operator fixes a broken edit in one pass.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use http::{HeaderName, Method, StatusCode};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::jsonpath::{ReadPath, WritePath};
use super::raw::{RawCall, RawErrorRule, RawFile, RawResource};
use super::template::{Allowed, BodyTemplate, Template, Var};
use super::*;
use crate::scim::filter::{parse_attr_path, parse_attr_ref};
use crate::scim::schema::{standard_attribute, AttrDef, AttrType};

/// One mapping file's text and name.
#[derive(Debug, Clone)]
pub struct Source {
    /// Shown in error messages (usually the file path).
    pub name: String,
    pub text: String,
}

/// One problem in the mapping files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    pub file: String,
    pub line: Option<usize>,
    pub reason: String,
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file, line, self.reason),
            None => write!(f, "{}: {}", self.file, self.reason),
        }
    }
}

/// Every problem found in a load.
#[derive(Debug, Clone, thiserror::Error)]
pub struct CompileErrors(pub Vec<CompileError>);

impl fmt::Display for CompileErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Loads and compiles every `*.toml` and `*.json` file in `dir` (sorted by name).
pub fn load_dir(dir: &Path) -> Result<Mapping, CompileErrors> {
    load_sources(&read_dir_sources(dir)?)
}

/// Reads the mapping files of `dir` (sorted by name), without compiling them.
pub fn read_dir_sources(dir: &Path) -> Result<Vec<Source>, CompileErrors> {
    let fail = |reason: String| {
        CompileErrors(vec![CompileError {
            file: dir.display().to_string(),
            line: None,
            reason,
        }])
    };
    let entries =
        std::fs::read_dir(dir).map_err(|e| fail(format!("cannot read directory: {e}")))?;
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|x| x.to_str()),
                    Some("toml") | Some("json")
                )
        })
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(fail("no *.toml or *.json mapping files".into()));
    }
    let mut sources = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
        sources.push(Source {
            name: path.display().to_string(),
            text,
        });
    }
    Ok(sources)
}

/// The hash a mapping compiled from `sources` reports (to tell an unchanged directory).
pub fn sources_hash(sources: &[Source]) -> String {
    let mut hasher = Sha256::new();
    for s in sources {
        hasher.update(s.name.as_bytes());
        hasher.update([0]);
        hasher.update(s.text.as_bytes());
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())[..16].to_owned()
}

/// Compiles mapping sources (TOML, or JSON when the name ends in `.json`).
pub fn load_sources(sources: &[Source]) -> Result<Mapping, CompileErrors> {
    let mut errors = Vec::new();
    let mut files = Vec::new();
    for source in sources {
        match parse_file(source) {
            Ok(raw) => files.push((source, raw)),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(CompileErrors(errors));
    }
    let mut c = Compiler {
        errors: Vec::new(),
        tenant_fields: Vec::new(),
        prefix: Vec::new(),
    };
    let mapping = c.compile(files, sources);
    if c.errors.is_empty() {
        Ok(mapping)
    } else {
        Err(CompileErrors(c.errors))
    }
}

fn parse_file(source: &Source) -> Result<RawFile, CompileError> {
    if source.name.ends_with(".json") {
        serde_json::from_str(&source.text).map_err(|e| CompileError {
            file: source.name.clone(),
            line: Some(e.line()),
            reason: e.to_string(),
        })
    } else {
        toml::from_str(&source.text).map_err(|e| CompileError {
            file: source.name.clone(),
            line: e.span().map(|s| {
                source.text[..s.start.min(source.text.len())]
                    .lines()
                    .count()
                    .max(1)
            }),
            reason: e.message().to_owned(),
        })
    }
}

/// Finds the line of a key path by searching for each key in turn after the previous one.
/// Mapping files are small and keys distinctive, so this is exact in practice and needs no
/// span-preserving parser for both formats.
fn locate(text: &str, keys: &[&str]) -> Option<usize> {
    let mut pos = 0;
    let mut found = None;
    for key in keys {
        let hit = find_key(&text[pos..], key)?;
        pos += hit + key.len();
        found = Some(pos);
    }
    found.map(|p| text[..p].lines().count().max(1))
}

fn find_key(haystack: &str, key: &str) -> Option<usize> {
    let bytes = haystack.as_bytes();
    let mut from = 0;
    while let Some(i) = haystack[from..].find(key) {
        let start = from + i;
        let end = start + key.len();
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        let before_ok = start == 0 || !word(bytes[start - 1]);
        let after_ok = end >= bytes.len() || !word(bytes[end]);
        let line_start = haystack[..start].rfind('\n').map_or(0, |n| n + 1);
        let in_comment = haystack[line_start..start].trim_start().starts_with('#');
        if before_ok && after_ok && !in_comment {
            return Some(start);
        }
        from = end;
    }
    None
}

struct Compiler {
    errors: Vec<CompileError>,
    tenant_fields: Vec<String>,
    /// Keys of the section being compiled (`resources`, `User`), searched before an
    /// error's own keys when locating its line.
    prefix: Vec<String>,
}

/// Where in which file a value came from, for error messages.
#[derive(Clone, Copy)]
struct At<'a> {
    source: &'a Source,
    keys: &'a [&'a str],
}

impl Compiler {
    fn error(&mut self, at: At<'_>, reason: impl Into<String>) {
        let keys: Vec<&str> = self
            .prefix
            .iter()
            .map(String::as_str)
            .chain(at.keys.iter().copied())
            .collect();
        self.errors.push(CompileError {
            file: at.source.name.clone(),
            line: locate(&at.source.text, &keys).or_else(|| locate(&at.source.text, at.keys)),
            reason: reason.into(),
        });
    }

    fn compile(&mut self, files: Vec<(&Source, RawFile)>, sources: &[Source]) -> Mapping {
        let hash = sources_hash(sources);

        let mut auth = None;
        let mut upstream = None;
        let mut resources: Vec<(&Source, String, RawResource)> = Vec::new();
        for (source, file) in files {
            if let Some(v) = file.version {
                if v != 1 {
                    self.error(
                        At {
                            source,
                            keys: &["version"],
                        },
                        format!("unsupported mapping version {v} (this gateway reads version 1)"),
                    );
                }
            }
            if let Some(a) = file.auth {
                if auth.is_some() {
                    self.error(
                        At {
                            source,
                            keys: &["auth"],
                        },
                        "`auth` is defined in more than one file",
                    );
                }
                auth = Some((source, a));
            }
            if let Some(u) = file.upstream {
                if upstream.is_some() {
                    self.error(
                        At {
                            source,
                            keys: &["upstream"],
                        },
                        "`upstream` is defined in more than one file",
                    );
                }
                upstream = Some((source, u));
            }
            for (name, r) in file.resources {
                if resources.iter().any(|(_, n, _)| *n == name) {
                    self.error(
                        At {
                            source,
                            keys: &["resources", &name],
                        },
                        format!("resource {name} is defined in more than one file"),
                    );
                }
                resources.push((source, name, r));
            }
        }

        // Tenant fields first: every path template is checked against them.
        let mut introspect_raw = None;
        if let Some((source, a)) = auth {
            self.tenant_fields = a.tenant_fields.clone();
            if let Some(i) = a.introspect {
                self.tenant_fields.extend(i.tenant.keys().cloned());
                introspect_raw = Some((source, i));
            }
        }
        let (base_path, key_id_header, default_item, global_errors) = match &upstream {
            Some((source, u)) => {
                let key_id_header = u.key_id_header.as_deref().and_then(|h| {
                    HeaderName::from_bytes(h.as_bytes())
                        .map_err(|_| {
                            self.error(
                                At {
                                    source,
                                    keys: &["key_id_header"],
                                },
                                format!("invalid header name {h:?}"),
                            )
                        })
                        .ok()
                });
                let item = u.item.as_deref().and_then(|p| {
                    self.read_path(
                        At {
                            source,
                            keys: &["upstream", "item"],
                        },
                        p,
                    )
                });
                let errors = self.error_rules(source, &u.errors);
                (u.base_path.clone(), key_id_header, item, errors)
            }
            None => (String::new(), None, None, Vec::new()),
        };

        let introspect = introspect_raw.and_then(|(source, i)| {
            let at = |keys: &'static [&'static str]| At { source, keys };
            let allowed = Allowed {
                id: false,
                token: true,
                member: false,
                scim: false,
                tenant_fields: &[],
            };
            let call = self.call(at(&["introspect", "call"]), &i.call, "", allowed, None)?;
            let active = self.read_path(at(&["introspect", "active"]), &i.active)?;
            let accept = i
                .accept
                .iter()
                .filter_map(|(p, v)| {
                    Some((self.read_path(at(&["introspect", "accept"]), p)?, v.clone()))
                })
                .collect();
            let tenant = i
                .tenant
                .iter()
                .filter_map(|(k, p)| {
                    Some((k.clone(), self.read_path(at(&["introspect", "tenant"]), p)?))
                })
                .collect();
            let key_id = i
                .key_id
                .as_deref()
                .and_then(|p| self.read_path(at(&["introspect", "key_id"]), p));
            Some(Introspect {
                call,
                active,
                accept,
                tenant,
                key_id,
            })
        });

        let mut compiled = Vec::new();
        let mut endpoints: Vec<String> = Vec::new();
        for (source, name, raw) in &resources {
            if let Some(r) = self.resource(source, name, raw, &base_path, default_item.as_ref()) {
                if endpoints
                    .iter()
                    .any(|e| e.eq_ignore_ascii_case(&r.endpoint))
                {
                    self.error(
                        At {
                            source,
                            keys: &["resources", name, "endpoint"],
                        },
                        format!("endpoint /{} is used by two resources", r.endpoint),
                    );
                }
                endpoints.push(r.endpoint.clone());
                compiled.push(r);
            }
        }
        // Members name another resource type: resolve it now that all are compiled.
        let shapes: Vec<(String, String, IdKind)> = compiled
            .iter()
            .map(|r| (r.name.clone(), r.endpoint.clone(), r.id_kind))
            .collect();
        for r in compiled.iter_mut() {
            let Some(members) = &mut r.members else {
                continue;
            };
            let Some((source, _, raw)) = resources.iter().find(|(_, n, _)| *n == r.name) else {
                continue;
            };
            let wanted = raw
                .members
                .as_ref()
                .and_then(|m| m.resource.clone())
                .unwrap_or_else(|| "User".to_owned());
            match shapes.iter().find(|(name, _, _)| *name == wanted) {
                Some((name, endpoint, kind)) => {
                    members.member_type = name.clone();
                    members.member_endpoint = endpoint.clone();
                    members.member_id = *kind;
                }
                None if resources.iter().any(|(_, n, _)| *n == wanted) => {}
                None => self.error(
                    At {
                        source,
                        keys: &["resources", &r.name, "members"],
                    },
                    format!("members refer to resource type {wanted:?}, which is not defined"),
                ),
            }
        }
        // References name another resource type too.
        for r in compiled.iter_mut() {
            let Some((source, _, _)) = resources.iter().find(|(_, n, _)| *n == r.name) else {
                continue;
            };
            for a in r.attributes.iter_mut() {
                let Some(reference) = &mut a.reference else {
                    continue;
                };
                match shapes
                    .iter()
                    .find(|(name, _, _)| *name == reference.resource)
                {
                    Some((_, endpoint, kind)) => {
                        reference.endpoint = endpoint.clone();
                        reference.id_kind = *kind;
                    }
                    None if resources.iter().any(|(_, n, _)| *n == reference.resource) => {}
                    None => self.error(
                        At {
                            source,
                            keys: &["resources", &r.name, "attributes", &a.key],
                        },
                        format!(
                            "{} refers to resource type {:?}, which is not defined",
                            a.key, reference.resource
                        ),
                    ),
                }
            }
        }
        let compiled = compiled.into_iter().map(Arc::new).collect();
        if resources.is_empty() {
            if let Some(s) = sources.first() {
                self.error(
                    At {
                        source: s,
                        keys: &[],
                    },
                    "no resources are defined",
                );
            }
        }
        Mapping {
            introspect,
            tenant_fields: self.tenant_fields.clone(),
            key_id_header,
            resources: compiled,
            errors: global_errors,
            hash,
        }
    }

    fn read_path(&mut self, at: At<'_>, text: &str) -> Option<ReadPath> {
        ReadPath::parse(text)
            .map_err(|e| self.error(at, e.to_string()))
            .ok()
    }

    fn write_path(&mut self, at: At<'_>, text: &str) -> Option<WritePath> {
        WritePath::parse(text)
            .map_err(|e| self.error(at, e.to_string()))
            .ok()
    }

    fn error_rules(&mut self, source: &Source, rules: &[RawErrorRule]) -> Vec<ErrorRule> {
        let mut out = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            // The i-th rule starts at the (i+1)-th `status` after `errors`.
            let mut keys = vec!["errors"];
            keys.extend(std::iter::repeat_n("status", i + 1));
            let at = At {
                source,
                keys: &keys,
            };
            let status = match &rule.status {
                Value::Number(n) => n
                    .as_u64()
                    .filter(|s| (100..600).contains(s))
                    .map(|s| StatusMatch::Exact(s as u16)),
                Value::String(s) => match s.as_bytes() {
                    [c @ b'1'..=b'5', b'x' | b'X', b'x' | b'X'] => {
                        Some(StatusMatch::Class((c - b'0') as u16))
                    }
                    _ => s
                        .parse::<u16>()
                        .ok()
                        .filter(|s| (100..600).contains(s))
                        .map(StatusMatch::Exact),
                },
                _ => None,
            };
            let Some(status) = status else {
                self.error(
                    at,
                    format!(
                        "error rule status {} must be a status code or a class like \"5xx\"",
                        rule.status
                    ),
                );
                continue;
            };
            let Some(scim_status) = StatusCode::from_u16(rule.scim_status)
                .ok()
                .filter(|s| s.is_client_error() || s.is_server_error())
            else {
                let mut keys = keys.clone();
                keys.push("scim_status");
                self.error(
                    At {
                        source,
                        keys: &keys,
                    },
                    format!(
                        "scim_status {} must be a 4xx or 5xx status",
                        rule.scim_status
                    ),
                );
                continue;
            };
            let scim_type = match rule.scim_type.as_deref() {
                None => None,
                Some(t) => match ScimType::parse(t) {
                    Some(t) => Some(t),
                    None => {
                        let mut keys = keys.clone();
                        keys.push("scim_type");
                        self.error(
                            At {
                                source,
                                keys: &keys,
                            },
                            format!("unknown scim_type {t:?}"),
                        );
                        continue;
                    }
                },
            };
            let when = rule.when.as_deref().and_then(|p| self.read_path(at, p));
            let detail = match rule.detail.as_deref() {
                Some(p) if p.starts_with('$') => self.read_path(at, p).map(Detail::Path),
                Some(text) => Some(Detail::Literal(text.to_owned())),
                None => None,
            };
            if rule.equals.is_some() && when.is_none() {
                self.error(
                    at,
                    "`equals` needs `when` (the JSONPath whose value it compares)",
                );
            }
            if matches!(
                status,
                StatusMatch::Exact(200..=299) | StatusMatch::Class(2)
            ) && when.is_none()
            {
                self.error(
                    at,
                    "a rule for a success status needs `when`, or every success would be an error",
                );
            }
            out.push(ErrorRule {
                status,
                when,
                equals: rule.equals.clone(),
                scim_status,
                scim_type,
                detail,
            });
        }
        out
    }

    /// Compiles a call whose path is `base_path + raw.path`.
    fn call(
        &mut self,
        at: At<'_>,
        raw: &RawCall,
        base_path: &str,
        allowed: Allowed<'_>,
        default_item: Option<&ReadPath>,
    ) -> Option<Call> {
        let method = match Method::from_bytes(raw.method.to_ascii_uppercase().as_bytes()) {
            Ok(m) => m,
            Err(_) => {
                self.error(at, format!("invalid HTTP method {:?}", raw.method));
                return None;
            }
        };
        let full = format!("{base_path}{}", raw.path);
        let path = Template::parse_path(&full, allowed)
            .map_err(|e| self.error(at, e.to_string()))
            .ok()?;
        // A mapping whose tenants have fields must use one in every upstream path, or one
        // company's key could reach another company's data.
        if !allowed.token
            && !self.tenant_fields.is_empty()
            && !path.vars().any(|v| matches!(v, Var::Tenant(_)))
        {
            self.error(
                at,
                format!(
                    "path {full:?} does not use the tenant ({}): every upstream call must be scoped to the authenticated tenant",
                    self.tenant_fields.iter().map(|f| format!("{{tenant.{f}}}")).collect::<Vec<_>>().join(", ")
                ),
            );
        }
        let body = match &raw.body {
            Some(b) => Some(
                BodyTemplate::parse(b, allowed)
                    .map_err(|e| self.error(at, e.to_string()))
                    .ok()?,
            ),
            None => None,
        };
        let items = raw.items.as_deref().and_then(|p| self.read_path(at, p));
        let total = match (&raw.total, &raw.total_header) {
            (Some(p), None) => self.read_path(at, p).map(Total::Body),
            (None, Some(h)) => match HeaderName::from_bytes(h.as_bytes()) {
                Ok(h) => Some(Total::Header(h)),
                Err(_) => {
                    self.error(at, format!("invalid header name {h:?}"));
                    None
                }
            },
            (Some(_), Some(_)) => {
                self.error(at, "give either `total` or `total_header`, not both");
                None
            }
            (None, None) => None,
        };
        let item = match &raw.item {
            Some(p) => self.read_path(at, p),
            None => default_item.cloned(),
        };
        Some(Call {
            route: format!("{method} {full}"),
            method,
            path,
            body,
            query: raw
                .query
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            items,
            total,
            item,
        })
    }

    fn resource(
        &mut self,
        source: &Source,
        name: &str,
        raw: &RawResource,
        base_path: &str,
        default_item: Option<&ReadPath>,
    ) -> Option<Resource> {
        let errors_before = self.errors.len();
        self.prefix = vec!["resources".to_owned(), name.to_owned()];
        let compiled = self.resource_inner(source, name, raw, base_path, default_item);
        self.prefix.clear();
        if self.errors.len() > errors_before {
            return None;
        }
        compiled
    }

    fn resource_inner(
        &mut self,
        source: &Source,
        name: &str,
        raw: &RawResource,
        base_path: &str,
        default_item: Option<&ReadPath>,
    ) -> Option<Resource> {
        let errors_before = self.errors.len();
        let at = |keys: &'static [&'static str]| At { source, keys };
        let endpoint = match raw.endpoint.strip_prefix('/') {
            Some(e)
                if !e.is_empty()
                    && e.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
            {
                e.to_owned()
            }
            _ => {
                self.error(
                    at(&["endpoint"]),
                    format!("endpoint {:?} must look like \"/Users\"", raw.endpoint),
                );
                String::new()
            }
        };
        let id = self.read_path(at(&["id"]), &raw.id.upstream);
        let id_kind = match raw.id.r#type.as_str() {
            "integer" => IdKind::Integer,
            "string" => IdKind::String,
            "uuid" => IdKind::Uuid,
            other => {
                self.error(
                    at(&["id"]),
                    format!("id type {other:?} must be integer, string or uuid"),
                );
                IdKind::String
            }
        };
        let created = raw
            .meta
            .created
            .as_deref()
            .and_then(|p| self.read_path(at(&["meta"]), p));
        let last_modified = raw
            .meta
            .last_modified
            .as_deref()
            .and_then(|p| self.read_path(at(&["meta"]), p));
        let version = raw
            .meta
            .version
            .as_deref()
            .and_then(|p| self.read_path(at(&["meta"]), p));
        let request_envelope = raw
            .request_envelope
            .as_deref()
            .and_then(|p| self.write_path(at(&["request_envelope"]), p));

        let tenant_fields = self.tenant_fields.clone();
        let with_id = Allowed {
            id: true,
            token: false,
            member: false,
            scim: false,
            tenant_fields: &tenant_fields,
        };
        let without_id = Allowed {
            id: false,
            ..with_id
        };
        let op = |c: &mut Self, keys: &'static [&'static str], call: &Option<RawCall>, allowed| {
            call.as_ref()
                .and_then(|r| c.call(At { source, keys }, r, base_path, allowed, default_item))
        };
        let ops = Operations {
            list: op(
                self,
                &["operations", "list"],
                &raw.operations.list,
                without_id,
            ),
            get: op(self, &["operations", "get"], &raw.operations.get, with_id),
            create: op(
                self,
                &["operations", "create"],
                &raw.operations.create,
                without_id,
            ),
            update: op(
                self,
                &["operations", "update"],
                &raw.operations.update,
                with_id,
            ),
            delete: op(
                self,
                &["operations", "delete"],
                &raw.operations.delete,
                with_id,
            ),
        };
        if let Some(list) = &ops.list {
            if list.items.is_none() {
                self.error(at(&["operations", "list"]), "a list call needs `items`");
            }
        }
        if ops.get.is_none() {
            self.error(
                at(&["operations"]),
                "a resource needs at least a `get` operation",
            );
        }

        let pagination = self.pagination(source, raw);
        let schema = raw.schema.clone();
        let attributes = self.attributes(source, raw, &schema);
        let ignore = raw
            .writes
            .ignore
            .iter()
            .filter_map(|k| {
                parse_attr_ref(k)
                    .map_err(|e| {
                        self.error(
                            At {
                                source,
                                keys: &["ignore"],
                            },
                            format!("ignore entry {k:?}: {e}"),
                        )
                    })
                    .ok()
                    .map(|r| strip_core_urn(r, &schema))
            })
            .collect();
        let put_omitted = match raw.writes.put_omitted.as_deref() {
            None | Some("keep") => PutOmitted::Keep,
            Some("clear") => PutOmitted::Clear,
            Some(other) => {
                self.error(
                    at(&["put_omitted"]),
                    format!("put_omitted {other:?} must be keep or clear"),
                );
                PutOmitted::Keep
            }
        };
        let mut attributes = attributes;
        self.resolve_writers(source, raw, &mut attributes);
        let filter = self.filter_policy(source, raw, &schema, &attributes, ops.list.is_some());
        let sort = raw.sort.as_ref().and_then(|sort| {
            let facts = SortFacts {
                schema: &schema,
                attributes: &attributes,
                has_list: ops.list.is_some(),
                has_created: created.is_some(),
                has_last_modified: last_modified.is_some(),
                pagination: &pagination,
            };
            self.sort(source, sort, &facts)
        });

        let mut actions = Vec::new();
        for (i, action) in raw.actions.iter().enumerate() {
            let mut when_keys = vec!["actions"];
            when_keys.extend(std::iter::repeat_n("when", i + 1));
            let mut call_keys = vec!["actions"];
            call_keys.extend(std::iter::repeat_n("call", i + 1));
            let at = At {
                source,
                keys: &when_keys,
            };
            let Ok(r) = parse_attr_ref(&action.when.attribute) else {
                self.error(at, format!("invalid attribute {:?}", action.when.attribute));
                continue;
            };
            let r = strip_core_urn(r, &schema);
            let Some(index) = attributes.iter().position(|a| a.scim == r) else {
                self.error(
                    at,
                    format!(
                        "action on {:?}, which is not a mapped attribute",
                        action.when.attribute
                    ),
                );
                continue;
            };
            let order = match action.run.as_deref() {
                None | Some("after_write") => ActionOrder::AfterWrite,
                Some("before_write") => ActionOrder::BeforeWrite,
                Some(other) => {
                    let mut keys = when_keys.clone();
                    keys.push("run");
                    self.error(
                        At {
                            source,
                            keys: &keys,
                        },
                        format!("run {other:?} must be before_write or after_write"),
                    );
                    continue;
                }
            };
            if let Some(call) = self.call(
                At {
                    source,
                    keys: &call_keys,
                },
                &action.call,
                base_path,
                with_id,
                default_item,
            ) {
                actions.push(Action {
                    attribute: index,
                    becomes: action.when.becomes.clone(),
                    call,
                    order,
                });
            }
        }
        for (i, a) in attributes.iter().enumerate() {
            if a.via == WriteVia::Actions && !actions.iter().any(|x| x.attribute == i) {
                self.error(
                    At {
                        source,
                        keys: &["attributes", &a.key],
                    },
                    format!(
                        "{} is written through actions, but no action names it",
                        a.key
                    ),
                );
            }
        }
        let errors = self.error_rules(source, &raw.errors);
        let members = match &raw.members {
            Some(m) => self.members(source, m, base_path, default_item),
            None => None,
        };
        let patch_response = match raw.patch_response.as_deref() {
            Some("no_content") => PatchResponse::NoContent,
            None | Some("resource") => PatchResponse::Resource,
            Some(other) => {
                self.error(
                    at(&["patch_response"]),
                    format!("patch_response {other:?} must be no_content or resource"),
                );
                PatchResponse::NoContent
            }
        };
        let gone_when = raw
            .gone_when
            .iter()
            .filter_map(|(p, v)| Some((self.read_path(at(&["gone_when"]), p)?, v.clone())))
            .collect();
        let mut unique = Vec::new();
        for (attr, param) in &raw.unique {
            match parse_attr_ref(attr) {
                Ok(r) => {
                    let r = strip_core_urn(r, &schema);
                    if !attributes.iter().any(|a| a.scim == r) {
                        self.error(
                            at(&["unique"]),
                            format!("unique names {attr:?}, which is not a mapped attribute"),
                        );
                    }
                    unique.push((r, param.clone()));
                }
                Err(e) => self.error(at(&["unique"]), format!("unique key {attr:?}: {e}")),
            }
        }
        if !unique.is_empty() && ops.list.is_none() {
            self.error(at(&["unique"]), "uniqueness lookups need a list operation");
        }
        let update_body = match raw.writes.update_body.as_deref() {
            None | Some("partial") => UpdateBody::Partial,
            Some("full") => UpdateBody::Full,
            Some(other) => {
                self.error(
                    at(&["update_body"]),
                    format!("update_body {other:?} must be partial or full"),
                );
                UpdateBody::Partial
            }
        };
        if self.errors.len() > errors_before {
            return None;
        }
        let mut resource = Resource {
            name: name.to_owned(),
            endpoint,
            schema,
            extensions: raw.extensions.clone(),
            description: raw.description.clone().unwrap_or_else(|| name.to_owned()),
            id: id?,
            id_kind,
            created,
            last_modified,
            version,
            request_envelope,
            ops,
            pagination,
            filter,
            sort,
            attributes,
            ignore,
            put_omitted,
            actions,
            errors,
            members,
            patch_response,
            gone_when,
            unique,
            update_body,
            layout: None,
        };
        resource.layout = super::render::Layout::build(&resource);
        Some(resource)
    }

    fn members(
        &mut self,
        source: &Source,
        raw: &super::raw::RawMembers,
        base_path: &str,
        default_item: Option<&ReadPath>,
    ) -> Option<Members> {
        let tenant_fields = self.tenant_fields.clone();
        let allowed = Allowed {
            id: true,
            token: false,
            member: true,
            scim: false,
            tenant_fields: &tenant_fields,
        };
        let at = |keys: &'static [&'static str]| At { source, keys };
        let embedded = match raw.model.as_deref() {
            None | Some("collection") => false,
            Some("embedded") => true,
            Some(other) => {
                self.error(
                    at(&["members", "model"]),
                    format!("members model {other:?} must be collection or embedded"),
                );
                return None;
            }
        };
        let (list, value, embedded) = if embedded {
            let Some(ids) = raw.ids.as_deref() else {
                self.error(
                    at(&["members"]),
                    "embedded members need `ids` (the id array's path)",
                );
                return None;
            };
            let ids = self.write_path(at(&["members", "ids"]), ids)?;
            let version = raw
                .version
                .as_deref()
                .and_then(|p| self.read_path(at(&["members", "version"]), p));
            if version.is_none() && !raw.accept_lost_updates {
                self.error(
                    at(&["members"]),
                    "embedded members without `version` can lose concurrent updates: give `version`, or say `accept_lost_updates = true`",
                );
            }
            if raw.list.is_some()
                || raw.add.is_some()
                || raw.remove.is_some()
                || raw.replace.is_some()
            {
                self.error(
                    at(&["members"]),
                    "embedded members are written through the group's update: list/add/remove/replace do not apply",
                );
            }
            let mut conflict_status = Vec::new();
            for c in &raw.conflict_status {
                match StatusCode::from_u16(*c) {
                    Ok(c) => conflict_status.push(c),
                    Err(_) => self.error(
                        at(&["members", "conflict_status"]),
                        format!("{c} is not a status code"),
                    ),
                }
            }
            if conflict_status.is_empty() {
                conflict_status = vec![StatusCode::CONFLICT, StatusCode::PRECONDITION_FAILED];
            }
            (
                None,
                None,
                Some(Embedded {
                    ids,
                    version,
                    conflict_status,
                    max_retries: raw.max_retries.unwrap_or(5),
                }),
            )
        } else {
            let (Some(list), Some(value)) = (&raw.list, &raw.value) else {
                self.error(
                    at(&["members"]),
                    "collection members need `list` and `value`",
                );
                return None;
            };
            let list = self.call(
                at(&["members", "list"]),
                list,
                base_path,
                allowed,
                default_item,
            )?;
            if list.items.is_none() {
                self.error(
                    at(&["members", "list"]),
                    "the member list call needs `items`",
                );
            }
            let value = self.read_path(at(&["members", "value"]), value)?;
            (Some(list), Some(value), None)
        };
        let display = raw
            .display
            .as_deref()
            .and_then(|p| self.read_path(at(&["members", "display"]), p));
        let member_call =
            |c: &mut Self, keys: &'static [&'static str], m: &Option<super::raw::RawMemberCall>| {
                let m = m.as_ref()?;
                let raw_call = RawCall {
                    method: m.method.clone(),
                    path: m.path.clone(),
                    body: m.body.clone(),
                    query: Default::default(),
                    items: None,
                    total: None,
                    total_header: None,
                    item: None,
                };
                let call = c.call(
                    At { source, keys },
                    &raw_call,
                    base_path,
                    allowed,
                    default_item,
                )?;
                if !call
                    .path
                    .vars()
                    .chain(call.body.iter().flat_map(|b| b.vars()))
                    .any(|v| matches!(v, Var::MemberValue))
                {
                    c.error(At { source, keys }, "a member call must use {member.value}");
                }
                let mut already_done = Vec::new();
                for s in &m.already_done {
                    match StatusCode::from_u16(*s) {
                        Ok(s) => already_done.push(s),
                        Err(_) => c.error(
                            At { source, keys },
                            format!("already_done status {s} is not a status code"),
                        ),
                    }
                }
                Some(MemberCall { call, already_done })
            };
        let add = member_call(self, &["members", "add"], &raw.add);
        let remove = member_call(self, &["members", "remove"], &raw.remove);
        let replace = match &raw.replace {
            Some(r) => {
                let call = self.call(
                    at(&["members", "replace"]),
                    r,
                    base_path,
                    allowed,
                    default_item,
                )?;
                let uses_all = call
                    .body
                    .iter()
                    .flat_map(|b| b.vars())
                    .any(|v| matches!(v, Var::MemberValues));
                if !uses_all {
                    self.error(
                        at(&["members", "replace"]),
                        "the replace call's body must use {members.value}",
                    );
                }
                Some(call)
            }
            None => None,
        };
        let unknown_member = raw.unknown_member.as_ref().and_then(|u| {
            let status = StatusCode::from_u16(u.status).ok();
            let when = u
                .when
                .as_deref()
                .and_then(|p| self.read_path(at(&["members", "unknown_member"]), p));
            status.map(|status| UnknownMemberRule {
                status,
                when,
                equals: u.equals.clone(),
            })
        });
        let unknown_members = match raw.unknown_members.as_deref() {
            None | Some("skip") => UnknownMembers::Skip,
            Some("reject_batch") => UnknownMembers::RejectBatch,
            Some(other) => {
                self.error(
                    at(&["members", "unknown_members"]),
                    format!("unknown_members {other:?} must be skip or reject_batch"),
                );
                UnknownMembers::Skip
            }
        };
        let on_partial_failure = match raw.on_partial_failure.as_deref() {
            None | Some("report") => PartialFailure::Report,
            Some("compensate") => {
                if add.is_none() || remove.is_none() {
                    self.error(
                        at(&["members", "on_partial_failure"]),
                        "compensate needs both add and remove calls to undo with",
                    );
                }
                PartialFailure::Compensate
            }
            Some(other) => {
                self.error(
                    at(&["members", "on_partial_failure"]),
                    format!("on_partial_failure {other:?} must be report or compensate"),
                );
                PartialFailure::Report
            }
        };
        let concurrency = raw.concurrency.unwrap_or(8);
        if concurrency == 0 || concurrency > 256 {
            self.error(
                at(&["members", "concurrency"]),
                "concurrency must be between 1 and 256",
            );
        }
        Some(Members {
            list,
            value,
            embedded,
            display,
            add,
            remove,
            replace,
            member_endpoint: String::new(),
            member_type: String::new(),
            member_id: IdKind::String,
            unknown_member,
            unknown_members,
            concurrency: concurrency.clamp(1, 256),
            deadline: std::time::Duration::from_millis(raw.deadline_ms.unwrap_or(50_000)),
            on_partial_failure,
        })
    }

    fn pagination(&mut self, source: &Source, raw: &RawResource) -> Pagination {
        let p = &raw.pagination;
        let at = At {
            source,
            keys: &["pagination", "style"],
        };
        let max_size = p.max_size.unwrap_or(100).max(1);
        let size_param = || p.size_param.clone();
        match p.style.as_str() {
            "none" => Pagination::None,
            "page" => match (p.page_param.clone(), size_param()) {
                (Some(page_param), Some(size_param)) => Pagination::Page {
                    page_param,
                    size_param,
                    first_page: p.first_page.unwrap_or(1),
                    max_size,
                },
                _ => {
                    self.error(at, "page pagination needs page_param and size_param");
                    Pagination::None
                }
            },
            "offset" => match (p.offset_param.clone(), size_param()) {
                (Some(offset_param), Some(size_param)) => Pagination::Offset {
                    offset_param,
                    size_param,
                    max_size,
                },
                _ => {
                    self.error(at, "offset pagination needs offset_param and size_param");
                    Pagination::None
                }
            },
            "cursor" => {
                let next = match (&p.next_cursor, &p.next_url, p.next_link_header) {
                    (Some(c), None, false) => self.read_path(at, c).map(NextCursor::Token),
                    (None, Some(u), false) => self.read_path(at, u).map(NextCursor::Url),
                    (None, None, true) => Some(NextCursor::LinkHeader),
                    _ => {
                        self.error(at, "cursor pagination needs exactly one of next_cursor, next_url or next_link_header = true");
                        None
                    }
                };
                match (p.cursor_param.clone(), size_param(), next) {
                    (Some(cursor_param), Some(size_param), Some(next)) => Pagination::Cursor {
                        cursor_param,
                        size_param,
                        max_size,
                        next,
                    },
                    (None, _, _) | (_, None, _) => {
                        self.error(at, "cursor pagination needs cursor_param and size_param");
                        Pagination::None
                    }
                    _ => Pagination::None,
                }
            }
            other => {
                self.error(
                    at,
                    format!("pagination style {other:?} must be page, offset or none"),
                );
                Pagination::None
            }
        }
    }

    fn attributes(&mut self, source: &Source, raw: &RawResource, schema: &str) -> Vec<Attribute> {
        let mut out = Vec::new();
        for (key, a) in &raw.attributes {
            let at = At {
                source,
                keys: &["attributes", key],
            };
            let scim = match parse_attr_ref(key) {
                Ok(r) => strip_core_urn(r, schema),
                Err(e) => {
                    self.error(
                        at,
                        format!("attribute key {key:?} is not a SCIM attribute path: {e}"),
                    );
                    continue;
                }
            };
            if let Some(urn) = &scim.attr.urn {
                if !raw.extensions.iter().any(|x| x.eq_ignore_ascii_case(urn)) {
                    self.error(
                        at,
                        format!("{urn} is not listed in the resource's `extensions`"),
                    );
                }
            }
            if let Some(f) = &scim.filter {
                if scim_doc::selector_terms(f).is_none() {
                    self.error(at, format!("the filter in {key:?} must be `eq` terms joined by `and`, so it can select one element"));
                    continue;
                }
            }
            let schema_of = scim.attr.urn.as_deref().unwrap_or(schema);
            let leaf_sub = scim.sub.as_deref().or(scim.attr.sub.as_deref());
            let standard = standard_attribute(schema_of, &scim.attr.name, leaf_sub);
            let mut def = standard.unwrap_or(AttrDef {
                ty: AttrType::String,
                multi_valued: false,
                case_exact: false,
            });
            if let Some(t) = a.r#type.as_deref() {
                def.ty = match t {
                    "string" => AttrType::String,
                    "boolean" => AttrType::Boolean,
                    "integer" => AttrType::Integer,
                    "decimal" => AttrType::Decimal,
                    "dateTime" => AttrType::DateTime,
                    "reference" => AttrType::Reference,
                    other => {
                        self.error(at, format!("type {other:?} must be string, boolean, integer, decimal, dateTime or reference"));
                        continue;
                    }
                };
            }
            if let Some(ce) = a.case_exact {
                def.case_exact = ce;
            }
            let (read, upstream) = match (&a.upstream, &a.constant) {
                (Some(p), None) => match self.read_path(at, p) {
                    Some(r) => (Some(r), p.as_str()),
                    None => continue,
                },
                (None, Some(_)) => (None, ""),
                _ => {
                    self.error(
                        at,
                        format!("{key} needs exactly one of `upstream` or `constant`"),
                    );
                    continue;
                }
            };
            let mutability = match a.mutability.as_deref() {
                _ if a.constant.is_some() => Mutability::ReadOnly,
                None | Some("readWrite") => Mutability::ReadWrite,
                Some("readOnly") => Mutability::ReadOnly,
                Some("immutable") => Mutability::Immutable,
                Some("writeOnly") => Mutability::WriteOnly,
                Some(other) => {
                    self.error(at, format!("mutability {other:?} must be readWrite, readOnly, immutable or writeOnly"));
                    continue;
                }
            };
            let via = match a.write.as_deref() {
                None | Some("body") => WriteVia::Body,
                Some("actions") => WriteVia::Actions,
                Some(other) => {
                    self.error(at, format!("write {other:?} must be body or actions"));
                    continue;
                }
            };
            let write = if mutability == Mutability::ReadOnly || via == WriteVia::Actions {
                None
            } else {
                match self.write_path(at, upstream) {
                    Some(w) => Some(w),
                    None => continue,
                }
            };
            let enum_map = match &a.r#enum {
                None => None,
                Some(pairs) => {
                    let mut ok = !pairs.is_empty();
                    for (i, (s, u)) in pairs.iter().enumerate() {
                        for (s2, u2) in &pairs[..i] {
                            if s == s2 || u == u2 {
                                ok = false;
                            }
                        }
                    }
                    if !ok {
                        self.error(at, format!("enum of {key} is not two-way: every SCIM value and every upstream value must appear exactly once"));
                        continue;
                    }
                    if let Some((s, _)) = pairs.first() {
                        if s.is_boolean() && a.r#type.is_none() {
                            def.ty = AttrType::Boolean;
                        }
                    }
                    Some(EnumMap {
                        pairs: pairs.clone(),
                    })
                }
            };
            let template = match &a.template {
                None => None,
                Some(t) => {
                    let allowed = Allowed {
                        id: false,
                        token: false,
                        member: false,
                        scim: true,
                        tenant_fields: &[],
                    };
                    match Template::parse(t, allowed) {
                        Ok(t) => Some(t),
                        Err(e) => {
                            self.error(at, e.to_string());
                            continue;
                        }
                    }
                }
            };
            let Some(upstream_type) = self.upstream_type(at, a, &def) else {
                continue;
            };
            let Some(reference) = self.reference(at, key, a, &scim) else {
                continue;
            };
            if let (Some(default), Some(map)) = (&a.default_on_create, &enum_map) {
                if !map.pairs.iter().any(|(s, _)| s == default) {
                    self.error(
                        at,
                        format!("default_on_create {default} is not one of the enum's SCIM values"),
                    );
                    continue;
                }
            }
            out.push(Attribute {
                key: key.clone(),
                case_exact: def.case_exact,
                scim,
                def,
                read,
                constant: a.constant.clone(),
                write,
                via,
                mutability,
                required: a.required,
                enum_map,
                default_on_create: a.default_on_create.clone(),
                template,
                extra: a
                    .extra
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                yields_to: None,
                upstream_type,
                reference,
            });
        }
        self.check_reference_siblings(source, &out);
        out
    }

    /// `upstream_type`: `Some(None)` when absent, `None` after reporting an error.
    fn upstream_type(
        &mut self,
        at: At<'_>,
        a: &super::raw::RawAttribute,
        def: &AttrDef,
    ) -> Option<Option<UpstreamType>> {
        let t = match a.upstream_type.as_deref() {
            None => return Some(None),
            Some("integer") => UpstreamType::Integer,
            Some(other) => {
                self.error(
                    at,
                    format!("upstream_type {other:?} must be integer (the only conversion so far)"),
                );
                return None;
            }
        };
        if def.ty != AttrType::String {
            self.error(at, format!("upstream_type applies to string attributes; this one is {} and is sent as such", def.ty.as_str()));
            return None;
        }
        if a.r#enum.is_some() {
            self.error(
                at,
                "upstream_type and enum do not go together: the enum gives the upstream values",
            );
            return None;
        }
        Some(Some(t))
    }

    /// `reference`: `Some(None)` when absent, `None` after reporting an error. The
    /// referenced type's endpoint and id shape are filled in once every resource is compiled.
    fn reference(
        &mut self,
        at: At<'_>,
        key: &str,
        a: &super::raw::RawAttribute,
        scim: &crate::scim::filter::AttrRef,
    ) -> Option<Option<Reference>> {
        let Some(resource) = &a.reference else {
            return Some(None);
        };
        let leaf = scim.sub.as_deref().or(scim.attr.sub.as_deref());
        if !leaf.is_some_and(|l| l.eq_ignore_ascii_case("value")) || a.r#enum.is_some() {
            self.error(at, format!("reference applies to a `value` sub-attribute without an enum (like manager.value), not {key:?}"));
            return None;
        }
        let mut path = scim.clone();
        match &mut path.sub {
            Some(sub) => *sub = "$ref".to_owned(),
            None => path.attr.sub = Some("$ref".to_owned()),
        }
        Some(Some(Reference {
            resource: resource.clone(),
            endpoint: String::new(),
            id_kind: IdKind::String,
            path,
        }))
    }

    /// A `$ref` rendered from a reference must not also be mapped to a field of its own.
    fn check_reference_siblings(&mut self, source: &Source, attributes: &[Attribute]) {
        for a in attributes {
            let Some(r) = &a.reference else { continue };
            if let Some(twin) = attributes.iter().find(|b| b.scim == r.path) {
                let keys = ["attributes", twin.key.as_str()];
                self.error(
                    At {
                        source,
                        keys: &keys,
                    },
                    format!(
                        "{} is rendered from {} (reference), so it cannot be mapped too",
                        twin.key, a.key
                    ),
                );
            }
        }
    }

    /// Two attributes may write one upstream field only when the mapping says which wins.
    fn resolve_writers(
        &mut self,
        source: &Source,
        raw: &RawResource,
        attributes: &mut [Attribute],
    ) {
        let mut by_field: BTreeMap<WritePath, Vec<usize>> = BTreeMap::new();
        for (i, a) in attributes.iter().enumerate() {
            if let Some(w) = &a.write {
                by_field.entry(w.clone()).or_default().push(i);
            }
        }
        for (field, writers) in by_field {
            if writers.len() < 2 {
                continue;
            }
            let names: Vec<&str> = writers
                .iter()
                .map(|&i| attributes[i].key.as_str())
                .collect();
            let declared = raw.writes.writer.get(field.as_str());
            let Some(winner) =
                declared.and_then(|d| writers.iter().copied().find(|&i| attributes[i].key == *d))
            else {
                let keys = ["attributes", names[1]];
                self.error(
                    At { source, keys: &keys },
                    format!(
                        "{} all write {}: declare which one wins with writes.writer = {{ \"{}\" = \"{}\" }}",
                        names.join(" and "),
                        field.as_str(),
                        field.as_str(),
                        names[0]
                    ),
                );
                continue;
            };
            for &i in &writers {
                if i != winner {
                    attributes[i].yields_to = Some(winner);
                }
            }
        }
        for (field, writer) in &raw.writes.writer {
            if !attributes
                .iter()
                .any(|a| a.write.as_ref().is_some_and(|w| w.as_str() == field) && a.key == *writer)
            {
                self.error(
                    At { source, keys: &["writer"] },
                    format!("writes.writer names {writer:?} for {field}, but {writer:?} does not write {field}"),
                );
            }
        }
    }

    fn filter_policy(
        &mut self,
        source: &Source,
        raw: &RawResource,
        schema: &str,
        attributes: &[Attribute],
        has_list: bool,
    ) -> FilterPolicy {
        let at = At {
            source,
            keys: &["filter"],
        };
        let mut push_down = Vec::new();
        for (attr, param) in &raw.filter.push_down {
            match parse_attr_path(attr) {
                Ok(p) => {
                    let p = if p
                        .urn
                        .as_deref()
                        .is_some_and(|u| u.eq_ignore_ascii_case(schema))
                    {
                        crate::scim::filter::AttrPath { urn: None, ..p }
                    } else {
                        p
                    };
                    let known = p.name.eq_ignore_ascii_case("id")
                        || attributes
                            .iter()
                            .any(|a| a.scim.filter.is_none() && a.scim.attr.eq_ignore_case(&p));
                    if !known {
                        self.error(
                            At {
                                source,
                                keys: &["filter", "push_down", attr],
                            },
                            format!("push_down names {attr:?}, which is not a mapped attribute"),
                        );
                    }
                    push_down.push((p, param.clone()));
                }
                Err(e) => self.error(at, format!("push_down key {attr:?}: {e}")),
            }
        }
        if !push_down.is_empty() && !has_list {
            self.error(at, "push_down needs a list operation");
        }
        let unsupported = match raw.filter.unsupported.as_deref() {
            None | Some("reject") => Unsupported::Reject,
            Some("scan") => Unsupported::Scan(raw.filter.scan_limit.unwrap_or(1000)),
            Some(other) => {
                self.error(at, format!("unsupported {other:?} must be scan or reject"));
                Unsupported::Reject
            }
        };
        FilterPolicy {
            push_down,
            unsupported,
        }
    }
}

/// What a resource's `sort` table is checked against.
struct SortFacts<'a> {
    schema: &'a str,
    attributes: &'a [Attribute],
    has_list: bool,
    has_created: bool,
    has_last_modified: bool,
    pagination: &'a Pagination,
}

impl SortFacts<'_> {
    /// Can the gateway name this SCIM attribute to the upstream as a sort key? Mapped
    /// attributes (a multi-valued one by its selected element's path), `id`, and the `meta`
    /// timestamps the mapping reads.
    fn sortable(&self, path: &AttrPath) -> bool {
        let meta = |sub: &str| {
            path.urn.is_none()
                && path.name.eq_ignore_ascii_case("meta")
                && path
                    .sub
                    .as_deref()
                    .is_some_and(|s| s.eq_ignore_ascii_case(sub))
        };
        (path.urn.is_none() && path.sub.is_none() && path.name.eq_ignore_ascii_case("id"))
            || (meta("created") && self.has_created)
            || (meta("lastModified") && self.has_last_modified)
            || self
                .attributes
                .iter()
                .any(|a| a.constant.is_none() && plain_path(&a.scim).eq_ignore_case(path))
    }

    /// The upstream query parameters the pagination already uses.
    fn paging_params(&self) -> Vec<&str> {
        match self.pagination {
            Pagination::None => Vec::new(),
            Pagination::Page {
                page_param,
                size_param,
                ..
            } => vec![page_param.as_str(), size_param.as_str()],
            Pagination::Offset {
                offset_param,
                size_param,
                ..
            } => vec![offset_param.as_str(), size_param.as_str()],
            Pagination::Cursor {
                cursor_param,
                size_param,
                ..
            } => vec![cursor_param.as_str(), size_param.as_str()],
        }
    }
}

/// An attribute's path as `sortBy` names it: a selected element's sub-attribute
/// (`emails[type eq "work"].value`) is `emails.value`.
fn plain_path(r: &crate::scim::filter::AttrRef) -> AttrPath {
    AttrPath {
        urn: r.attr.urn.clone(),
        name: r.attr.name.clone(),
        sub: r.sub.clone().or_else(|| r.attr.sub.clone()),
    }
}

impl Compiler {
    /// Compiles `[resources.NAME.sort]`: non-empty, distinct parameters that do not clash
    /// with paging, and only attributes the gateway can name to the upstream.
    fn sort(
        &mut self,
        source: &Source,
        raw: &super::raw::RawSort,
        facts: &SortFacts<'_>,
    ) -> Option<Sort> {
        let errors_before = self.errors.len();
        let at = |keys: &'static [&'static str]| At { source, keys };
        if !facts.has_list {
            self.error(at(&["sort"]), "sort needs a list operation");
        }
        let mut params = vec![("by_param", raw.by_param.as_str())];
        params.extend(raw.order_param.as_deref().map(|p| ("order_param", p)));
        for (key, param) in &params {
            let keys = ["sort", key];
            let at = At {
                source,
                keys: &keys,
            };
            if param.trim().is_empty() {
                self.error(at, format!("sort.{key} must not be empty"));
            } else if facts.paging_params().contains(param) {
                self.error(
                    at,
                    format!("sort.{key} {param:?} is already a pagination parameter"),
                );
            }
        }
        if raw.order_param.as_deref() == Some(raw.by_param.as_str()) {
            self.error(
                at(&["sort", "order_param"]),
                "sort.order_param must differ from sort.by_param",
            );
        }
        let order = match &raw.order_param {
            Some(param) => {
                let ascending = raw.ascending.clone().unwrap_or_else(|| "asc".to_owned());
                let descending = raw.descending.clone().unwrap_or_else(|| "desc".to_owned());
                if ascending.is_empty() || descending.is_empty() || ascending == descending {
                    self.error(
                        at(&["sort", "ascending"]),
                        "sort.ascending and sort.descending must be two different, non-empty values",
                    );
                }
                Some(SortOrderParam {
                    param: param.clone(),
                    ascending,
                    descending,
                })
            }
            None => {
                if raw.ascending.is_some() || raw.descending.is_some() {
                    self.error(
                        at(&["sort"]),
                        "sort.ascending and sort.descending need sort.order_param",
                    );
                }
                None
            }
        };
        if raw.attributes.is_empty() {
            self.error(
                at(&["sort", "attributes"]),
                "sort.attributes must name at least one sortable attribute",
            );
        }
        let mut keys = Vec::new();
        for (attr, upstream_key) in &raw.attributes {
            let names = ["sort", "attributes", attr.as_str()];
            let at = At {
                source,
                keys: &names,
            };
            let path = match parse_attr_path(attr) {
                Ok(p)
                    if p.urn
                        .as_deref()
                        .is_some_and(|u| u.eq_ignore_ascii_case(facts.schema)) =>
                {
                    AttrPath { urn: None, ..p }
                }
                Ok(p) => p,
                Err(e) => {
                    self.error(at, format!("sort attribute {attr:?}: {e}"));
                    continue;
                }
            };
            if !facts.sortable(&path) {
                self.error(
                    at,
                    format!("sort names {attr:?}, which is not a mapped attribute (nor id or a mapped meta timestamp)"),
                );
            }
            if upstream_key.trim().is_empty() {
                self.error(
                    at,
                    format!("the upstream sort key of {attr:?} must not be empty"),
                );
            }
            if keys
                .iter()
                .any(|(p, _): &(AttrPath, String)| p.eq_ignore_case(&path))
            {
                self.error(at, format!("sort names {attr:?} twice"));
            }
            keys.push((path, upstream_key.clone()));
        }
        if self.errors.len() > errors_before {
            return None;
        }
        Some(Sort {
            by_param: raw.by_param.clone(),
            order,
            keys,
        })
    }
}

/// A reference qualified with the resource's own core schema means the plain attribute.
fn strip_core_urn(
    mut r: crate::scim::filter::AttrRef,
    schema: &str,
) -> crate::scim::filter::AttrRef {
    if r.attr
        .urn
        .as_deref()
        .is_some_and(|u| u.eq_ignore_ascii_case(schema))
    {
        r.attr.urn = None;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::locate;

    #[test]
    fn locate_finds_nested_keys() {
        let text = "version = 1\n[resources.User]\nendpoint = \"/Users\"\n[resources.User.attributes]\nuserName = { upstream = \"$.email\" }\ntitle = { upstream = \"$[\" }\n";
        assert_eq!(
            locate(text, &["resources", "User", "attributes", "title"]),
            Some(6)
        );
        assert_eq!(locate(text, &["resources", "User", "endpoint"]), Some(3));
        assert_eq!(locate(text, &["nothing"]), None);
    }
}
