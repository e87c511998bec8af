//! Running a compiled [`Resource`]: upstream objects → SCIM resources, SCIM requests →
//! upstream bodies and actions, SCIM filters → query parameters plus what is left to check.
//! Pure functions; the HTTP calls are made by `server::resource`.

use serde_json::{json, Map, Value};
use std::borrow::Cow;

use super::fields::UpstreamObj;
use super::scim_doc;
use super::template::{scalar_text, Vars};
use super::*;
use crate::scim::filter::{AttrPath, CompValue, CompareOp, Filter};
use crate::scim::schema::AttrType;
use crate::scim::{ScimError, ScimType};

/// Why an upstream object could not be turned into a SCIM resource (a 502: the upstream
/// answered something the mapping does not describe).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("the upstream object has no id at {0}")]
    NoId(String),
    #[error("upstream value {value} of {attribute} is not in the mapping's enum")]
    NotInEnum { attribute: String, value: String },
}

/// Which attributes a write carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode<'a> {
    /// POST: every writable attribute, with defaults and templates for absent ones.
    Create,
    /// PUT: every writable attribute present (absent ones kept or cleared per mapping).
    Replace,
    /// PATCH: only these attribute indexes, as changed by the operations.
    Changed(&'a [usize]),
}

/// How a list request's filter reaches the upstream.
#[derive(Debug, Clone, PartialEq)]
pub enum FilterPlan {
    /// `id eq "…"`: a single get.
    ById(String),
    /// Query parameters for the list call, and whether every result must also be filtered
    /// here (`scan`) or only re-checked (`recheck`).
    Query {
        params: Vec<(String, String)>,
        scan: bool,
    },
}

/// SCIM `id`s that can never name an upstream object: checked before any call.
pub fn id_is_plausible(kind: IdKind, id: &str) -> bool {
    if id.is_empty() || id.len() > 256 || id == "." || id == ".." {
        return false;
    }
    match kind {
        IdKind::Integer => id.len() <= 19 && id.bytes().all(|b| b.is_ascii_digit()),
        IdKind::Uuid => {
            id.len() == 36
                && id.bytes().enumerate().all(|(i, b)| match i {
                    8 | 13 | 18 | 23 => b == b'-',
                    _ => b.is_ascii_hexdigit(),
                })
        }
        IdKind::String => !id.chars().any(|c| c.is_control() || c == '/' || c == '\\'),
    }
}

impl Resource {
    /// The upstream object's id as a SCIM string id.
    pub fn upstream_id(&self, obj: &Value) -> Result<String, ReadError> {
        self.read_id(UpstreamObj::Whole(obj))
    }

    /// [`Resource::upstream_id`] of an object whole or read as fields.
    pub(crate) fn read_id(&self, obj: UpstreamObj<'_>) -> Result<String, ReadError> {
        obj.read(&self.id)
            .and_then(super::fields::Found::scalar_text)
            .map(Cow::into_owned)
            .ok_or_else(|| ReadError::NoId(self.id.as_str().to_owned()))
    }

    /// Case-exactness of an attribute in filters (RFC 7643 default: not case-exact).
    pub fn case_exact(&self, path: &AttrPath) -> bool {
        if path.urn.is_none() && path.sub.is_none() && path.name.eq_ignore_ascii_case("id") {
            return true;
        }
        self.attributes
            .iter()
            .find(|a| a.scim.filter.is_none() && a.scim.attr.eq_ignore_case(path))
            .is_some_and(|a| a.case_exact)
    }

    /// Does a SCIM resource match `filter`, honouring each attribute's `caseExact`?
    pub fn matches(&self, doc: &Value, filter: &Filter) -> bool {
        filter.matches(doc, &|p| self.case_exact(p))
    }

    /// Converts an upstream object into the SCIM resource.
    pub fn to_scim(&self, obj: &Value, base_url: &str) -> Result<Value, ReadError> {
        let id = self.upstream_id(obj)?;
        let mut doc = json!({ "schemas": [self.schema], "id": id });
        // With a layout, one pass over the object's members finds every attribute's value,
        // so an attribute the object lacks costs a look at its slot, not a map lookup.
        let found = self.layout.as_ref().map(|l| l.read_all(self, obj));
        for (i, a) in self.attributes.iter().enumerate() {
            if a.mutability == Mutability::WriteOnly {
                continue;
            }
            if let Some(c) = &a.constant {
                scim_doc::set(&mut doc, &a.scim, c.clone(), &a.extra);
                continue;
            }
            let raw = match &found {
                Some(found) => found[i],
                None => a.read.as_ref().and_then(|p| p.read(obj)),
            };
            let Some(raw) = raw else {
                continue;
            };
            let value = self.scim_value(a, raw)?.into_owned();
            let reference = a
                .reference
                .as_ref()
                .and_then(|r| Some((r, r.url(&value, base_url)?)));
            scim_doc::set(&mut doc, &a.scim, value, &a.extra);
            if let Some((r, url)) = reference {
                scim_doc::set(&mut doc, &r.path, url, &a.extra);
            }
        }
        if let Value::Object(map) = &mut doc {
            let mut schemas = vec![Value::String(self.schema.clone())];
            for ext in &self.extensions {
                if map.contains_key(ext) {
                    schemas.push(Value::String(ext.clone()));
                }
            }
            map.insert("schemas".into(), Value::Array(schemas));
            let mut meta = Map::new();
            meta.insert("resourceType".into(), json!(self.name));
            for (key, path) in [
                ("created", &self.created),
                ("lastModified", &self.last_modified),
                ("version", &self.version),
            ] {
                if let Some(v) = path
                    .as_ref()
                    .and_then(|p| p.read(obj))
                    .and_then(scalar_text)
                {
                    let v = if key == "version" {
                        format!("W/\"{v}\"")
                    } else {
                        v
                    };
                    meta.insert(key.into(), Value::String(v));
                }
            }
            meta.insert(
                "location".into(),
                json!(format!("{base_url}/{}/{}", self.endpoint, id)),
            );
            map.insert("meta".into(), Value::Object(meta));
        }
        Ok(doc)
    }

    /// Checks a POST/PUT body: its `schemas`, that every attribute it carries is mapped or
    /// ignored, and that required attributes are present.
    pub fn validate_request(&self, doc: &Value) -> Result<(), ScimError> {
        let Some(obj) = doc.as_object() else {
            return Err(ScimError::bad_request(
                ScimType::InvalidSyntax,
                "the request body must be a JSON object",
            ));
        };
        let schemas_ok = match obj.get("schemas") {
            Some(Value::Array(list)) => list.iter().any(|s| {
                s.as_str()
                    .is_some_and(|s| s.eq_ignore_ascii_case(&self.schema))
            }),
            _ => false,
        };
        if !schemas_ok {
            return Err(ScimError::bad_request(
                ScimType::InvalidSyntax,
                format!("`schemas` must list {}", self.schema),
            ));
        }
        self.validate_values(doc)?;
        for a in self.attributes.iter().filter(|a| a.required) {
            if scim_doc::get(doc, &a.scim).is_none() {
                return Err(ScimError::bad_request(
                    ScimType::InvalidValue,
                    format!("{} is required", a.key),
                ));
            }
        }
        Ok(())
    }

    /// Checks that every attribute a document carries is mapped or ignored (also after a
    /// PATCH, so that a value no mapping selector takes is refused, not dropped).
    pub fn validate_values(&self, doc: &Value) -> Result<(), ScimError> {
        let Some(obj) = doc.as_object() else {
            return Err(ScimError::bad_request(
                ScimType::InvalidSyntax,
                "the request body must be a JSON object",
            ));
        };
        for (key, value) in obj {
            if ["schemas", "id", "meta"]
                .iter()
                .any(|k| k.eq_ignore_ascii_case(key))
            {
                continue;
            }
            // Membership is written through its own calls, not the body.
            if self.members.is_some() && key.eq_ignore_ascii_case("members") {
                continue;
            }
            if let Some(ext) = self.extensions.iter().find(|x| x.eq_ignore_ascii_case(key)) {
                let Some(inner) = value.as_object() else {
                    return Err(ScimError::bad_request(
                        ScimType::InvalidSyntax,
                        format!("{ext} must be an object"),
                    ));
                };
                for (k, v) in inner {
                    self.check_mapped(Some(ext), k, v)?;
                }
                continue;
            }
            self.check_mapped(None, key, value)?;
        }
        Ok(())
    }

    fn ignored(&self, urn: Option<&str>, name: &str, sub: Option<&str>) -> bool {
        // `externalId` is common to every resource (RFC 7643 §3.1): unmapped, it is dropped.
        if urn.is_none()
            && name.eq_ignore_ascii_case("externalId")
            && self.attrs_named(None, name).next().is_none()
        {
            return true;
        }
        self.ignore.iter().any(|r| {
            r.filter.is_none()
                && r.attr.urn.as_deref().map(str::to_ascii_lowercase)
                    == urn.map(str::to_ascii_lowercase)
                && r.attr.name.eq_ignore_ascii_case(name)
                && match (&r.attr.sub, sub) {
                    (None, _) => true,
                    (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                    (Some(_), None) => false,
                }
        })
    }

    fn attrs_named<'a>(
        &'a self,
        urn: Option<&'a str>,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Attribute> + 'a {
        self.attributes.iter().filter(move |a| {
            a.scim.attr.name.eq_ignore_ascii_case(name)
                && a.scim.attr.urn.as_deref().map(str::to_ascii_lowercase)
                    == urn.map(str::to_ascii_lowercase)
        })
    }

    fn unmapped(urn: Option<&str>, path: &str) -> ScimError {
        let full = match urn {
            Some(u) => format!("{u}:{path}"),
            None => path.to_owned(),
        };
        ScimError::bad_request(
            ScimType::InvalidValue,
            format!("attribute {full} is not supported by this gateway's mapping"),
        )
    }

    fn check_mapped(&self, urn: Option<&str>, key: &str, value: &Value) -> Result<(), ScimError> {
        if value.is_null() || self.ignored(urn, key, None) {
            return Ok(());
        }
        let candidates: Vec<&Attribute> = self.attrs_named(urn, key).collect();
        if candidates.is_empty() {
            return Err(Self::unmapped(urn, key));
        }
        if candidates
            .iter()
            .any(|a| a.scim.attr.sub.is_none() && a.scim.filter.is_none())
        {
            return Ok(());
        }
        match value {
            Value::Object(fields) if candidates.iter().all(|a| a.scim.filter.is_none()) => {
                for (sub, v) in fields {
                    let known = candidates.iter().any(|a| {
                        a.scim
                            .attr
                            .sub
                            .as_deref()
                            .is_some_and(|s| s.eq_ignore_ascii_case(sub))
                            || is_rendered_ref(a, sub)
                    });
                    if !v.is_null() && !known && !self.ignored(urn, key, Some(sub)) {
                        return Err(Self::unmapped(urn, &format!("{key}.{sub}")));
                    }
                }
                Ok(())
            }
            Value::Array(elements) => {
                for (index, element) in elements.iter().enumerate() {
                    let Some(fields) = element.as_object() else {
                        return Err(ScimError::bad_request(
                            ScimType::InvalidSyntax,
                            format!("elements of {key} must be objects"),
                        ));
                    };
                    let selected: Vec<&&Attribute> = candidates
                        .iter()
                        .filter(|a| {
                            a.scim
                                .filter
                                .as_ref()
                                .is_some_and(|f| scim_doc::selects(elements, index, f))
                        })
                        .collect();
                    if selected.is_empty() {
                        return Err(Self::unmapped(
                            urn,
                            &format!("{key}[{}]", describe(element)),
                        ));
                    }
                    for sub in fields.keys() {
                        let known = selected.iter().any(|a| {
                            a.scim
                                .sub
                                .as_deref()
                                .is_some_and(|s| s.eq_ignore_ascii_case(sub))
                                || a.extra.iter().any(|(k, _)| k.eq_ignore_ascii_case(sub))
                                || is_rendered_ref(a, sub)
                                || a.scim
                                    .filter
                                    .as_ref()
                                    .and_then(scim_doc::selector_terms)
                                    .is_some_and(|t| {
                                        t.iter().any(|(k, _)| k.eq_ignore_ascii_case(sub))
                                    })
                        }) || sub.eq_ignore_ascii_case("display");
                        if !known && !self.ignored(urn, key, Some(sub)) {
                            return Err(Self::unmapped(urn, &format!("{key}.{sub}")));
                        }
                    }
                }
                Ok(())
            }
            _ => Err(ScimError::bad_request(
                ScimType::InvalidValue,
                format!("{key} has the wrong type for this mapping"),
            )),
        }
    }

    /// The request's value for an attribute, as the upstream should receive it.
    fn upstream_value(&self, a: &Attribute, doc: &Value) -> Result<Option<Value>, ScimError> {
        let Some(v) = scim_doc::get(doc, &a.scim) else {
            return Ok(None);
        };
        self.to_upstream_value(a, v).map(Some)
    }

    /// Converts one SCIM value for the upstream: enum lookup and type checks.
    pub fn to_upstream_value(&self, a: &Attribute, v: Value) -> Result<Value, ScimError> {
        let v = normalize_value(a.def.ty, v);
        if let Some(map) = &a.enum_map {
            return map
                .pairs
                .iter()
                .find(|(s, _)| enum_key_eq(s, &v))
                .map(|(_, u)| u.clone())
                .ok_or_else(|| {
                    ScimError::bad_request(
                        ScimType::InvalidValue,
                        format!(
                            "{} must be one of {}",
                            a.key,
                            map.pairs
                                .iter()
                                .map(|(s, _)| s.to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                });
        }
        let ok = match (a.def.ty, &v) {
            (AttrType::Boolean, Value::Bool(_)) => true,
            (AttrType::Integer, Value::Number(n)) => n.is_i64() || n.is_u64(),
            (AttrType::Decimal, Value::Number(_)) => true,
            (AttrType::Complex, Value::Object(_)) => true,
            (AttrType::String | AttrType::DateTime | AttrType::Reference, Value::String(_)) => true,
            _ => false,
        };
        if !ok {
            return Err(ScimError::bad_request(
                ScimType::InvalidValue,
                format!("{} must be a {}", a.key, a.def.ty.as_str()),
            ));
        }
        Ok(a.cast_for_upstream(v)?)
    }

    /// The upstream fields a write carries (not yet wrapped: see [`Resource::wrap`]);
    /// `None` when there is none (so no call is needed).
    pub fn body_for(&self, doc: &Value, mode: WriteMode<'_>) -> Result<Option<Value>, ScimError> {
        let mut body = Value::Object(Map::new());
        let writes = |i: usize| -> bool {
            match mode {
                WriteMode::Changed(set) => set.contains(&i),
                _ => true,
            }
        };
        for (i, a) in self.attributes.iter().enumerate() {
            let Some(path) = &a.write else { continue };
            if !writes(i) {
                continue;
            }
            if a.mutability == Mutability::Immutable && mode != WriteMode::Create {
                continue;
            }
            // The declared writer of a shared field wins whenever it has something to write.
            if let Some(w) = a.yields_to {
                let winner = &self.attributes[w];
                if writes(w)
                    && (scim_doc::get(doc, &winner.scim).is_some() || mode != WriteMode::Create)
                {
                    continue;
                }
            }
            let value = match self.upstream_value(a, doc)? {
                Some(v) => Some(v),
                None => match mode {
                    WriteMode::Create => {
                        if let Some(d) = &a.default_on_create {
                            Some(self.to_upstream_value(a, d.clone())?)
                        } else {
                            a.template
                                .as_ref()
                                .and_then(|t| {
                                    t.render_text(&Vars {
                                        scim: Some(doc),
                                        ..Vars::default()
                                    })
                                })
                                .map(Value::String)
                        }
                    }
                    WriteMode::Replace if self.put_omitted == PutOmitted::Keep => None,
                    WriteMode::Replace | WriteMode::Changed(_) => Some(Value::Null),
                },
            };
            if let Some(v) = value {
                path.set(&mut body, v);
            }
        }
        if body.as_object().is_some_and(Map::is_empty) {
            return Ok(None);
        }
        Ok(Some(body))
    }

    /// Refuses removals the upstream cannot represent: attributes written through actions
    /// (`active` has no "unset"), enums with no value for "unassigned", and attributes that
    /// share a required attribute's field.
    pub fn check_removals(&self, before: &Value, after: &Value) -> Result<(), ScimError> {
        for a in &self.attributes {
            let removed =
                scim_doc::get(before, &a.scim).is_some() && scim_doc::get(after, &a.scim).is_none();
            if !removed {
                continue;
            }
            let shares_required = a.yields_to.is_some_and(|w| self.attributes[w].required);
            // An enum without a SCIM null has no upstream value for "unassigned".
            let no_null = a
                .enum_map
                .as_ref()
                .is_some_and(|m| !m.pairs.iter().any(|(s, _)| s.is_null()));
            if a.via == WriteVia::Actions || shares_required || no_null {
                return Err(ScimError::bad_request(
                    ScimType::Mutability,
                    format!(
                        "{} cannot be removed here; replace it with another value",
                        a.key
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Indexes of attributes whose value differs between two SCIM documents.
    pub fn changed_attributes(&self, before: &Value, after: &Value) -> Vec<usize> {
        self.attributes
            .iter()
            .enumerate()
            .filter(|(_, a)| {
                let b = scim_doc::get(before, &a.scim).map(|v| normalize_value(a.def.ty, v));
                let n = scim_doc::get(after, &a.scim).map(|v| normalize_value(a.def.ty, v));
                b != n
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// The actions a write needs: the requested value of each action-written attribute,
    /// compared with its current value (`None` on create before the object exists).
    /// Actions already in effect are skipped.
    pub fn actions_for(
        &self,
        current: &Value,
        requested: &Value,
    ) -> Result<Vec<&Action>, ScimError> {
        let mut out = Vec::new();
        for (i, a) in self.attributes.iter().enumerate() {
            if a.via != WriteVia::Actions {
                continue;
            }
            let Some(want) =
                scim_doc::get(requested, &a.scim).map(|v| normalize_value(a.def.ty, v))
            else {
                continue;
            };
            let now = scim_doc::get(current, &a.scim).map(|v| normalize_value(a.def.ty, v));
            if now.as_ref().is_some_and(|n| enum_key_eq(n, &want)) {
                continue;
            }
            match self
                .actions
                .iter()
                .find(|x| x.attribute == i && enum_key_eq(&x.becomes, &want))
            {
                Some(action) => out.push(action),
                None => {
                    return Err(ScimError::bad_request(
                        ScimType::InvalidValue,
                        format!("{} cannot be set to {want}", a.key),
                    ))
                }
            }
        }
        Ok(out)
    }

    /// Plans a list filter: pushed-down `eq` terms become query parameters; the rest is
    /// scanned (bounded) or rejected, as the mapping says.
    pub fn plan_filter(&self, filter: &Filter) -> Result<FilterPlan, ScimError> {
        let mut terms = Vec::new();
        flatten_and(filter, &mut terms);
        let mut params: Vec<(String, String)> = Vec::new();
        let mut residual = false;
        for term in &terms {
            if let Filter::Compare {
                path,
                op: CompareOp::Eq,
                value,
            } = term
            {
                if terms.len() == 1
                    && path.urn.is_none()
                    && path.sub.is_none()
                    && path.name.eq_ignore_ascii_case("id")
                {
                    if let CompValue::String(id) = value {
                        return Ok(FilterPlan::ById(id.clone()));
                    }
                }
                let pushed = self
                    .filter
                    .push_down
                    .iter()
                    .find(|(p, _)| p.eq_ignore_case(path))
                    .and_then(|(_, param)| Some((param.clone(), comp_text(value)?)));
                if let Some((param, text)) = pushed {
                    if !params.iter().any(|(p, _)| *p == param) {
                        params.push((param, text));
                        continue;
                    }
                }
            }
            residual = true;
        }
        if residual {
            match self.filter.unsupported {
                Unsupported::Scan(_) => {}
                Unsupported::Reject => {
                    return Err(ScimError::bad_request(
                        ScimType::InvalidFilter,
                        format!(
                        "this filter cannot be answered: the upstream can only filter {} with `eq`",
                        if self.filter.push_down.is_empty() {
                            "nothing".to_owned()
                        } else {
                            self.filter
                                .push_down
                                .iter()
                                .map(|(p, _)| p.to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        }
                    ),
                    ))
                }
            }
        }
        Ok(FilterPlan::Query {
            params,
            scan: residual,
        })
    }
}

fn flatten_and<'a>(filter: &'a Filter, out: &mut Vec<&'a Filter>) {
    match filter {
        Filter::And(a, b) => {
            flatten_and(a, out);
            flatten_and(b, out);
        }
        other => out.push(other),
    }
}

fn comp_text(value: &CompValue) -> Option<String> {
    match value {
        CompValue::String(s) => Some(s.clone()),
        CompValue::Number(n) => Some(n.to_string()),
        CompValue::Bool(b) => Some(b.to_string()),
        CompValue::Null => None,
    }
}

fn describe(element: &Value) -> String {
    element
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| !k.eq_ignore_ascii_case("value"))
                .map(|(k, v)| format!("{k} eq {v}"))
                .collect::<Vec<_>>()
                .join(" and ")
        })
        .unwrap_or_default()
}

/// A reference's `$ref` is rendered on read; a client may send it back, and `value` is
/// what is written.
fn is_rendered_ref(a: &Attribute, sub: &str) -> bool {
    a.reference.is_some() && sub.eq_ignore_ascii_case("$ref")
}

/// Upstream scalars in the SCIM type the attribute has (integer ids as strings and so on).
pub(crate) fn coerce_read(ty: AttrType, raw: &Value) -> Cow<'_, Value> {
    Cow::Owned(match (ty, raw) {
        (AttrType::String | AttrType::Reference | AttrType::DateTime, Value::Number(n)) => {
            Value::String(n.to_string())
        }
        (AttrType::String, Value::Bool(b)) => Value::String(b.to_string()),
        (AttrType::Boolean, Value::String(s)) if s.eq_ignore_ascii_case("true") => {
            Value::Bool(true)
        }
        (AttrType::Boolean, Value::String(s)) if s.eq_ignore_ascii_case("false") => {
            Value::Bool(false)
        }
        _ => return Cow::Borrowed(raw),
    })
}

/// Entra ID sends booleans as the strings `"True"`/`"False"`; every other client sends
/// JSON booleans. Normalised here, for boolean attributes only.
fn normalize_value(ty: AttrType, v: Value) -> Value {
    match (ty, &v) {
        (AttrType::Boolean, Value::String(s)) if s.eq_ignore_ascii_case("true") => {
            Value::Bool(true)
        }
        (AttrType::Boolean, Value::String(s)) if s.eq_ignore_ascii_case("false") => {
            Value::Bool(false)
        }
        _ => v,
    }
}

/// Enum keys compare exactly, except strings, which compare case-insensitively as SCIM's
/// canonical values do.
fn enum_key_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x.eq_ignore_ascii_case(y),
        _ => a == b,
    }
}

impl crate::scim::patch::PatchTarget for Resource {
    fn core_schema(&self) -> &str {
        &self.schema
    }

    fn is_extension(&self, urn: &str) -> bool {
        self.extensions.iter().any(|x| x.eq_ignore_ascii_case(urn))
    }

    fn primary_only(&self, path: &crate::scim::filter::AttrRef) -> bool {
        let mut named = self
            .attrs_named(path.attr.urn.as_deref(), &path.attr.name)
            .peekable();
        named.peek().is_some()
            && named.all(|a| {
                a.scim
                    .filter
                    .as_ref()
                    .and_then(scim_doc::selector_terms)
                    .is_some_and(|t| {
                        t.len() == 1
                            && t[0].0.eq_ignore_ascii_case("primary")
                            && t[0].1 == Value::Bool(true)
                    })
            })
    }

    fn takes_bare_value(&self, path: &crate::scim::filter::AttrRef) -> bool {
        self.attrs_named(path.attr.urn.as_deref(), &path.attr.name)
            .any(|a| {
                a.scim.filter.is_none()
                    && !a.def.multi_valued
                    && a.scim
                        .attr
                        .sub
                        .as_deref()
                        .is_some_and(|s| s.eq_ignore_ascii_case("value"))
            })
    }

    fn classify(&self, path: &crate::scim::filter::AttrRef) -> crate::scim::patch::PathClass {
        use crate::scim::patch::PathClass;
        let urn = path.attr.urn.as_deref();
        let name = path.attr.name.as_str();
        if urn.is_none()
            && ["id", "meta", "schemas"]
                .iter()
                .any(|k| k.eq_ignore_ascii_case(name))
        {
            return PathClass::ReadOnly;
        }
        let leaf = path.sub.as_deref().or(path.attr.sub.as_deref());
        if self.ignored(urn, name, leaf) {
            return PathClass::Ignored;
        }
        let same_sub = |a: &str, b: Option<&str>| b.is_some_and(|b| a.eq_ignore_ascii_case(b));
        let targets: Vec<&Attribute> = self
            .attrs_named(urn, name)
            .filter(|a| {
                let a_leaf = a.scim.sub.as_deref().or(a.scim.attr.sub.as_deref());
                match (leaf, a_leaf) {
                    (None, _) => true,
                    (Some(_), None) => a.scim.filter.is_none(),
                    (Some(l), Some(al)) => same_sub(al, Some(l)),
                }
            })
            .collect();
        if targets.is_empty() {
            return PathClass::Unknown;
        }
        if targets.iter().all(|a| a.mutability == Mutability::ReadOnly) {
            return PathClass::ReadOnly;
        }
        PathClass::Writable
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::{load_sources, Source};
    use serde_json::json;

    /// A small bare-JSON API: no envelope, string ids, a status enum, a constant.
    const MAPPING: &str = r#"
version = 1
[resources.User]
endpoint = "/Users"
schema = "urn:ietf:params:scim:schemas:core:2.0:User"
id = { upstream = "$.uid" }
[resources.User.operations]
get = { method = "GET", path = "/people/{id}" }
update = { method = "PUT", path = "/people/{id}" }
[resources.User.attributes]
userName = { upstream = "$.login", required = true }
'emails[type eq "work"].value' = { upstream = "$.login" }
"name.givenName" = { upstream = "$.first" }
active = { upstream = "$.state", enum = [[true, "on"], [false, "off"]] }
userType = { constant = "Employee" }
nickName = { upstream = "$.nick", mutability = "immutable" }
[resources.User.writes]
writer = { "$.login" = "userName" }
"#;

    fn users() -> Arc<Resource> {
        let mapping = load_sources(&[Source {
            name: "m.toml".into(),
            text: MAPPING.into(),
        }])
        .expect("compiles");
        mapping.resource("Users").expect("Users").clone()
    }

    #[test]
    fn upstream_object_to_scim() {
        let doc = users()
            .to_scim(&json!({"uid": "u1", "login": "ada@x", "first": "Ada", "state": "off", "nick": null}), "http://gw/scim/v2")
            .expect("readable");
        assert_eq!(doc["id"], "u1");
        assert_eq!(doc["userName"], "ada@x");
        assert_eq!(doc["emails"], json!([{"type": "work", "value": "ada@x"}]));
        assert_eq!(doc["name"], json!({"givenName": "Ada"}));
        assert_eq!(doc["active"], false);
        assert_eq!(doc["userType"], "Employee");
        assert!(
            doc.get("nickName").is_none(),
            "null upstream values are omitted"
        );
        assert_eq!(doc["meta"]["location"], "http://gw/scim/v2/Users/u1");
        let err = users()
            .to_scim(&json!({"uid": "u1", "state": "paused"}), "x")
            .unwrap_err();
        assert!(matches!(err, ReadError::NotInEnum { .. }));
        assert!(matches!(
            users().to_scim(&json!({"login": "a"}), "x"),
            Err(ReadError::NoId(_))
        ));
    }

    #[test]
    fn write_bodies_by_mode() {
        let r = users();
        let request = json!({"schemas": [r.schema], "userName": "ada@x", "emails": [{"type": "work", "value": "other@x"}],
            "name": {"givenName": "Ada"}, "active": "False", "nickName": "ada"});
        // The declared writer wins; the Entra "False" string is a boolean; constants and
        // create-only fields behave per mode.
        let cases = [
            (
                WriteMode::Create,
                json!({"login": "ada@x", "first": "Ada", "state": "off", "nick": "ada"}),
            ),
            (
                WriteMode::Replace,
                json!({"login": "ada@x", "first": "Ada", "state": "off"}),
            ),
        ];
        for (mode, want) in cases {
            assert_eq!(
                r.body_for(&request, mode).expect("body"),
                Some(want),
                "{mode:?}"
            );
        }
        // Only the email changed: the yielding attribute writes the shared field.
        let before = json!({"userName": "ada@x", "emails": [{"type": "work", "value": "ada@x"}]});
        let after = json!({"userName": "ada@x", "emails": [{"type": "work", "value": "new@x"}]});
        let changed = r.changed_attributes(&before, &after);
        assert_eq!(
            r.body_for(&after, WriteMode::Changed(&changed))
                .expect("body"),
            Some(json!({"login": "new@x"}))
        );
        // Nothing changed: no body at all.
        assert_eq!(
            r.body_for(&after, WriteMode::Changed(&[])).expect("body"),
            None
        );
        // A value outside the enum is the client's error.
        let bad = json!({"schemas": [r.schema], "userName": "a", "active": "maybe"});
        assert_eq!(
            r.body_for(&bad, WriteMode::Create).unwrap_err().scim_type,
            Some(ScimType::InvalidValue)
        );
    }

    #[test]
    fn filter_plans() {
        let r = users();
        let f = |s: &str| crate::scim::filter::parse_filter(s).expect("filter");
        assert_eq!(
            r.plan_filter(&f("id eq \"u1\"")).expect("plan"),
            FilterPlan::ById("u1".into())
        );
        // Nothing is pushed down in this mapping and unsupported defaults to reject.
        assert_eq!(
            r.plan_filter(&f("userName eq \"a\""))
                .unwrap_err()
                .scim_type,
            Some(ScimType::InvalidFilter)
        );
    }

    #[test]
    fn implausible_ids() {
        let cases = [
            (IdKind::Integer, "1042", true),
            (IdKind::Integer, "10a", false),
            (IdKind::Integer, "", false),
            (IdKind::Integer, "99999999999999999999", false),
            (IdKind::Uuid, "123e4567-e89b-12d3-a456-426614174000", true),
            (IdKind::Uuid, "123e4567e89b12d3a456426614174000", false),
            (IdKind::String, "abc-1", true),
            (IdKind::String, "..", false),
            (IdKind::String, "a/b", false),
            (IdKind::String, "a\nb", false),
        ];
        for (kind, id, ok) in cases {
            assert_eq!(id_is_plausible(kind, id), ok, "{kind:?} {id:?}");
        }
    }
}
