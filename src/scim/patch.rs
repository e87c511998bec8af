//! SCIM PATCH (RFC 7644 §3.5.2) applied to a resource's JSON document.
//!
//! Clients differ in how they spell the same change; each dialect is recognised in one
//! named place ([`normalize_op_name`], [`split_no_path_value`], [`OKTA_ID_IN_VALUE`],
//! [`entra_bare_value`]) and everything after that works on one canonical form.

use serde_json::{Map, Value};

use super::filter::{parse_attr_ref, AttrRef, Filter};
use super::{ScimError, ScimType, PATCH_SCHEMA};
use crate::mapping::scim_doc;

/// The three PATCH operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Add,
    Replace,
    Remove,
}

/// One operation, with its path parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchOp {
    pub op: OpKind,
    pub path: Option<AttrRef>,
    pub value: Option<Value>,
}

/// What the resource says about a path an operation targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathClass {
    /// Writable: apply it.
    Writable,
    /// Accepted and dropped (`writes.ignore`).
    Ignored,
    /// Exists but cannot be written: 400 `mutability`.
    ReadOnly,
    /// Not an attribute of this resource: 400 `invalidPath`.
    Unknown,
}

/// What PATCH needs to know about the resource it patches.
pub trait PatchTarget {
    /// The resource's core schema URN (URN-qualified core paths are plain paths).
    fn core_schema(&self) -> &str;
    /// Is `urn` one of the resource's extension schemas?
    fn is_extension(&self, urn: &str) -> bool;
    /// Classifies a (canonical, core URN stripped) path.
    fn classify(&self, path: &AttrRef) -> PathClass;
    /// Does the resource keep only the primary value of this multi-valued attribute?
    fn primary_only(&self, _path: &AttrRef) -> bool {
        false
    }
    /// Is `path` a singular complex attribute whose `value` sub-attribute the resource
    /// maps (the enterprise `manager`)? See [`entra_bare_value`].
    fn takes_bare_value(&self, _path: &AttrRef) -> bool {
        false
    }
}

/// Entra ID writes the enterprise `manager` as the manager's bare id
/// (`{"op": "Add", "path": "…:manager", "value": "26118915"}`, or
/// `{"…:manager": "26118915"}` in a no-path value) where RFC 7643 has
/// `{"value": "26118915"}`. A string given for a singular complex attribute whose `value`
/// the resource maps is read as that `value`.
fn entra_bare_value(target: &dyn PatchTarget, path: &AttrRef, value: Value) -> Value {
    let whole_attribute = path.filter.is_none() && path.attr.sub.is_none() && path.sub.is_none();
    match value {
        Value::String(id) if whole_attribute && target.takes_bare_value(path) => {
            let mut wrapped = Map::new();
            wrapped.insert("value".into(), Value::String(id));
            Value::Object(wrapped)
        }
        other => other,
    }
}

/// Entra ID sends `"Replace"`, `"Add"`, `"Remove"`; the RFC's names are lowercase.
fn normalize_op_name(op: &str) -> Option<OpKind> {
    match op.to_ascii_lowercase().as_str() {
        "add" => Some(OpKind::Add),
        "replace" => Some(OpKind::Replace),
        "remove" => Some(OpKind::Remove),
        _ => None,
    }
}

/// Okta puts the resource's own `id` inside a no-path replace value (a group rename sends
/// `{"id": "…", "displayName": "…"}`); `id` is read-only, so it is dropped, not rejected.
pub const OKTA_ID_IN_VALUE: &str = "id";

/// Parses a PatchOp request body.
pub fn parse_patch(body: &Value) -> Result<Vec<PatchOp>, ScimError> {
    let syntax = |d: &str| ScimError::bad_request(ScimType::InvalidSyntax, d.to_owned());
    let obj = body
        .as_object()
        .ok_or_else(|| syntax("the PATCH body must be a JSON object"))?;
    let schemas_ok = obj
        .get("schemas")
        .and_then(Value::as_array)
        .is_some_and(|s| {
            s.iter().any(|s| {
                s.as_str()
                    .is_some_and(|s| s.eq_ignore_ascii_case(PATCH_SCHEMA))
            })
        });
    if !schemas_ok {
        return Err(syntax(&format!("`schemas` must list {PATCH_SCHEMA}")));
    }
    let ops = super::super::mapping::scim_doc::get_ci(obj, "Operations")
        .and_then(Value::as_array)
        .ok_or_else(|| syntax("`Operations` must be an array"))?;
    if ops.is_empty() {
        return Err(syntax("`Operations` is empty"));
    }
    ops.iter()
        .enumerate()
        .map(|(i, op)| {
            let o = op
                .as_object()
                .ok_or_else(|| syntax(&format!("operation {i} is not an object")))?;
            let name = scim_doc::get_ci(o, "op")
                .and_then(Value::as_str)
                .unwrap_or("");
            let kind = normalize_op_name(name).ok_or_else(|| {
                syntax(&format!(
                    "operation {i}: op {name:?} must be add, replace or remove"
                ))
            })?;
            let path = match scim_doc::get_ci(o, "path") {
                None | Some(Value::Null) => None,
                Some(Value::String(p)) if p.is_empty() => None,
                Some(Value::String(p)) => Some(parse_attr_ref(p).map_err(|e| {
                    ScimError::bad_request(
                        ScimType::InvalidPath,
                        format!("operation {i}: path {p:?}: {e}"),
                    )
                })?),
                Some(_) => {
                    return Err(ScimError::bad_request(
                        ScimType::InvalidPath,
                        format!("operation {i}: path must be a string"),
                    ))
                }
            };
            let value = scim_doc::get_ci(o, "value").cloned();
            if kind != OpKind::Remove && value.is_none() {
                return Err(ScimError::bad_request(
                    ScimType::InvalidValue,
                    format!("operation {i}: {name} needs a value"),
                ));
            }
            if kind == OpKind::Remove && path.is_none() {
                return Err(ScimError::bad_request(
                    ScimType::NoTarget,
                    format!("operation {i}: remove needs a path"),
                ));
            }
            Ok(PatchOp {
                op: kind,
                path,
                value,
            })
        })
        .collect()
}

/// A no-path add/replace carries an object of attributes. Entra also puts dotted paths
/// (`"name.givenName"`) and URN-qualified paths (`"urn:…:User:department"`) in it as keys;
/// extension objects (`"urn:…:User": {…}`) are opened up. Each key becomes its own path.
fn split_no_path_value(
    target: &dyn PatchTarget,
    value: &Value,
) -> Result<Vec<(AttrRef, Value)>, ScimError> {
    let obj = value.as_object().ok_or_else(|| {
        ScimError::bad_request(
            ScimType::InvalidValue,
            "an operation without a path needs an object value",
        )
    })?;
    let mut out = Vec::new();
    for (key, v) in obj {
        if key.eq_ignore_ascii_case("schemas")
            || key.eq_ignore_ascii_case("meta")
            || key == OKTA_ID_IN_VALUE
        {
            continue;
        }
        if target.is_extension(key) {
            if let Value::Object(inner) = v {
                for (k, v2) in inner
                    .iter()
                    .filter(|(k, _)| !k.eq_ignore_ascii_case("schemas"))
                {
                    let r = parse_key(&format!("{key}:{k}"))?;
                    out.push((r, v2.clone()));
                }
                continue;
            }
        }
        out.push((parse_key(key)?, v.clone()));
    }
    Ok(out)
}

/// The extension schema URN a path names as a whole (`urn:…:enterprise:2.0:User`), if any.
fn extension_urn(target: &dyn PatchTarget, path: &AttrRef) -> Option<String> {
    let urn = path.attr.urn.as_deref()?;
    if path.attr.sub.is_some() || path.filter.is_some() || path.sub.is_some() {
        return None;
    }
    let full = format!("{urn}:{}", path.attr.name);
    target.is_extension(&full).then_some(full)
}

fn parse_key(key: &str) -> Result<AttrRef, ScimError> {
    parse_attr_ref(key)
        .map_err(|e| ScimError::bad_request(ScimType::InvalidPath, format!("{key:?}: {e}")))
}

fn canonical(target: &dyn PatchTarget, mut r: AttrRef) -> AttrRef {
    if r.attr
        .urn
        .as_deref()
        .is_some_and(|u| u.eq_ignore_ascii_case(target.core_schema()))
    {
        r.attr.urn = None;
    }
    r
}

/// Applies operations in order to `doc`. Paths the mapping ignores are dropped.
pub fn apply(doc: &mut Value, ops: &[PatchOp], target: &dyn PatchTarget) -> Result<(), ScimError> {
    for op in ops {
        let targets = match &op.path {
            Some(p) => match extension_urn(target, p) {
                // A path that is an extension schema URN addresses the whole extension.
                Some(urn) => match (op.op, &op.value) {
                    (OpKind::Remove, _) => {
                        let whole = AttrRef {
                            attr: super::filter::AttrPath {
                                urn: None,
                                name: urn,
                                sub: None,
                            },
                            filter: None,
                            sub: None,
                        };
                        scim_doc::remove(doc, &whole);
                        continue;
                    }
                    (_, Some(value)) => {
                        let mut wrapped = Map::new();
                        wrapped.insert(urn, value.clone());
                        split_no_path_value(target, &Value::Object(wrapped))?
                    }
                    (_, None) => Vec::new(),
                },
                None => vec![(p.clone(), op.value.clone().unwrap_or(Value::Null))],
            },
            None => split_no_path_value(target, op.value.as_ref().unwrap_or(&Value::Null))?,
        };
        for (path, value) in targets {
            let path = canonical(target, path);
            let value = entra_bare_value(target, &path, value);
            match target.classify(&path) {
                PathClass::Writable => {}
                PathClass::Ignored => continue,
                PathClass::ReadOnly => {
                    return Err(ScimError::bad_request(
                        ScimType::Mutability,
                        format!("{path} is read-only"),
                    ))
                }
                PathClass::Unknown => {
                    return Err(ScimError::bad_request(
                        ScimType::InvalidPath,
                        format!("{path} is not an attribute this gateway's mapping supports"),
                    ))
                }
            }
            if op.op == OpKind::Add
                && path.filter.is_none()
                && path.attr.sub.is_none()
                && target.primary_only(&path)
            {
                add_primary(doc, &path, value)?;
                continue;
            }
            apply_one(doc, op.op, &path, value)?;
        }
    }
    Ok(())
}

fn apply_one(doc: &mut Value, op: OpKind, path: &AttrRef, value: Value) -> Result<(), ScimError> {
    match op {
        OpKind::Remove => {
            scim_doc::remove(doc, path);
            Ok(())
        }
        OpKind::Add | OpKind::Replace => {
            if path.filter.is_some() {
                return apply_filtered(doc, op, path, value);
            }
            let current = scim_doc::get(doc, path);
            let new = match (op, current, value) {
                // Complex values merge: sub-attributes not given are left as they are.
                (_, Some(Value::Object(mut old)), Value::Object(given)) => {
                    merge(&mut old, given);
                    Value::Object(old)
                }
                // `add` to a multi-valued attribute appends what is not there yet.
                (OpKind::Add, Some(Value::Array(mut old)), given) => {
                    let items = match given {
                        Value::Array(items) => items,
                        single => vec![single],
                    };
                    for item in items {
                        if !old.contains(&item) {
                            old.push(item);
                        }
                    }
                    Value::Array(old)
                }
                (_, _, given) => given,
            };
            scim_doc::set(doc, path, new, &[]);
            Ok(())
        }
    }
}

/// `add` to a multi-valued attribute the resource keeps only the primary value of (one role,
/// say): the added value becomes the primary (RFC 7643 §2.4 allows one), replacing the old.
fn add_primary(doc: &mut Value, path: &AttrRef, value: Value) -> Result<(), ScimError> {
    let mut items = match value {
        Value::Array(items) => items,
        single => vec![single],
    };
    let Some(Value::Object(last)) = items.last_mut() else {
        return Err(ScimError::bad_request(
            ScimType::InvalidValue,
            format!("{path} takes objects"),
        ));
    };
    // `primary` is read-only here: whatever was sent, the kept value is the primary one.
    last.insert("primary".into(), Value::Bool(true));
    let newest = items.pop().unwrap_or(Value::Null);
    scim_doc::set(doc, path, Value::Array(vec![newest]), &[]);
    Ok(())
}

fn merge(into: &mut Map<String, Value>, given: Map<String, Value>) {
    for (k, v) in given {
        let existing = into.keys().find(|x| x.eq_ignore_ascii_case(&k)).cloned();
        into.insert(existing.unwrap_or(k), v);
    }
}

/// `emails[type eq "work"].value`: update the matching elements; where none matches and the
/// filter only selects by `eq`, the element is created (the mapping's selectors work this
/// way); otherwise there is nothing to change (`noTarget`). Without a sub-attribute the
/// path names whole elements, so the value must be an object of their fields.
fn apply_filtered(
    doc: &mut Value,
    op: OpKind,
    path: &AttrRef,
    value: Value,
) -> Result<(), ScimError> {
    let filter: &Filter = path
        .filter
        .as_ref()
        .ok_or_else(|| ScimError::bad_request(ScimType::InvalidPath, "missing filter"))?;
    if path.sub.is_none() && !value.is_object() {
        return Err(ScimError::bad_request(
            ScimType::InvalidValue,
            format!(
                "{path} names whole values: the value must be an object of their sub-attributes"
            ),
        ));
    }
    let exists = scim_doc::get(
        doc,
        &AttrRef {
            sub: None,
            ..path.clone()
        },
    )
    .is_some();
    if !exists && scim_doc::selector_terms(filter).is_none() {
        return Err(ScimError::bad_request(
            ScimType::NoTarget,
            format!("{path} matches no value"),
        ));
    }
    let _ = op;
    scim_doc::set(doc, path, value, &[]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct UserTarget;
    impl PatchTarget for UserTarget {
        fn core_schema(&self) -> &str {
            "urn:ietf:params:scim:schemas:core:2.0:User"
        }
        fn is_extension(&self, urn: &str) -> bool {
            urn.eq_ignore_ascii_case("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User")
        }
        fn classify(&self, path: &AttrRef) -> PathClass {
            match path.attr.name.to_ascii_lowercase().as_str() {
                "password" => PathClass::Ignored,
                "meta" => PathClass::ReadOnly,
                "username" | "active" | "name" | "emails" | "department" | "displayname"
                | "manager" => PathClass::Writable,
                _ => PathClass::Unknown,
            }
        }
        fn takes_bare_value(&self, path: &AttrRef) -> bool {
            path.attr.name.eq_ignore_ascii_case("manager")
        }
    }

    fn patch(doc: Value, body: Value) -> Result<Value, ScimError> {
        let ops = parse_patch(&body)?;
        let mut doc = doc;
        apply(&mut doc, &ops, &UserTarget)?;
        Ok(doc)
    }

    fn ops(list: Value) -> Value {
        json!({"schemas": [PATCH_SCHEMA], "Operations": list})
    }

    #[test]
    fn dialects_and_shapes() {
        let user = json!({"userName": "ada", "active": true, "name": {"givenName": "Ada", "familyName": "L"},
            "emails": [{"type": "work", "value": "ada@x.com", "primary": true}]});
        let cases = [
            // Entra: the enterprise manager as a bare id, with a path and without.
            (
                json!([{"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", "value": "26118915"}]),
                json!({"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"manager": {"value": "26118915"}}}),
            ),
            (
                json!([{"op": "Replace", "value": {"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager": "7"}}]),
                json!({"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"manager": {"value": "7"}}}),
            ),
            // Okta deactivation: replace, no path.
            (
                json!([{"op": "replace", "value": {"active": false}}]),
                json!({"active": false}),
            ),
            // Entra: capitalised op, dotted key in a no-path value.
            (
                json!([{"op": "Replace", "value": {"name.givenName": "Augusta"}}]),
                json!({"name": {"givenName": "Augusta", "familyName": "L"}}),
            ),
            // Path to a sub-attribute.
            (
                json!([{"op": "replace", "path": "name.familyName", "value": "King"}]),
                json!({"name": {"givenName": "Ada", "familyName": "King"}}),
            ),
            // Value path with sub-attribute.
            (
                json!([{"op": "replace", "path": "emails[type eq \"work\"].value", "value": "a@y.com"}]),
                json!({"emails": [{"type": "work", "value": "a@y.com", "primary": true}]}),
            ),
            // Complex replace merges.
            (
                json!([{"op": "replace", "path": "name", "value": {"familyName": "K"}}]),
                json!({"name": {"givenName": "Ada", "familyName": "K"}}),
            ),
            // Extension object in a no-path value; Okta's id is dropped; ignored password too.
            (
                json!([{"op": "add", "value": {"id": "1", "password": "x",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "R&D"}}}]),
                json!({"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "R&D"}}),
            ),
            // A whole extension addressed by its URN.
            (
                json!([{"op": "add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User", "value": {"department": "Ops"}}]),
                json!({"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Ops"}}),
            ),
            // URN-qualified core path.
            (
                json!([{"op": "replace", "path": "urn:ietf:params:scim:schemas:core:2.0:User:userName", "value": "b"}]),
                json!({"userName": "b"}),
            ),
            // Remove.
            (
                json!([{"op": "remove", "path": "name.givenName"}]),
                json!({"name": {"familyName": "L"}}),
            ),
            // Seen while fixing a fuzz finding: a filter that is not an `eq` selector
            // updates what it selects (it used to answer success and change nothing).
            (
                json!([{"op": "replace", "path": "emails[value co \"@x.com\"].value", "value": "a@z.com"}]),
                json!({"emails": [{"type": "work", "value": "a@z.com", "primary": true}]}),
            ),
            // Seen while fixing a fuzz finding: remove selects elements as reads do, so a
            // lone value without `primary` is the primary one for removal too.
            (
                json!([{"op": "replace", "path": "emails", "value": [{"type": "work", "value": "b@x.com"}]},
                       {"op": "remove", "path": "emails[primary eq true]"}]),
                json!({"emails": []}),
            ),
            // Seen while fixing a fuzz finding: a single complex value read through a filter is
            // removed by it too.
            (
                json!([{"op": "remove", "path": "name[givenName eq \"Ada\"].familyName"}]),
                json!({"name": {"givenName": "Ada"}}),
            ),
        ];
        for (list, expect) in cases {
            let got =
                patch(user.clone(), ops(list.clone())).unwrap_or_else(|e| panic!("{list}: {e:?}"));
            for (k, v) in expect.as_object().unwrap() {
                assert_eq!(got.get(k), Some(v), "{list}");
            }
        }
    }

    #[test]
    fn errors() {
        let cases = [
            (json!({"Operations": []}), ScimType::InvalidSyntax),
            (ops(json!([])), ScimType::InvalidSyntax),
            (
                ops(json!([{"op": "frobnicate", "path": "userName", "value": 1}])),
                ScimType::InvalidSyntax,
            ),
            (ops(json!([{"op": "remove"}])), ScimType::NoTarget),
            (
                ops(json!([{"op": "replace", "path": "userName xx"}])),
                ScimType::InvalidPath,
            ),
            (
                ops(json!([{"op": "replace", "path": "nickName", "value": "x"}])),
                ScimType::InvalidPath,
            ),
            (
                ops(json!([{"op": "replace", "path": "meta", "value": {}}])),
                ScimType::Mutability,
            ),
            (
                ops(json!([{"op": "replace", "value": "x"}])),
                ScimType::InvalidValue,
            ),
            (
                ops(json!([{"op": "add", "path": "userName"}])),
                ScimType::InvalidValue,
            ),
            (
                ops(
                    json!([{"op": "replace", "path": "emails[type co \"w\"].value", "value": "x"}]),
                ),
                ScimType::NoTarget,
            ),
            // Found by fuzzing: whole elements replaced by a plain value were left as they
            // were, with a success answer.
            (
                ops(json!([{"op": "replace", "path": "emails[type eq \"work\"]", "value": "x"}])),
                ScimType::InvalidValue,
            ),
            (
                ops(json!([{"op": "add", "path": "emails[type eq \"home\"]", "value": ["x"]}])),
                ScimType::InvalidValue,
            ),
            // Found by fuzzing: a plain value is no element a filter selects (`active` is
            // `true` here, which `not (…)` used to select, and then nothing was written).
            (
                ops(
                    json!([{"op": "replace", "path": "active[not (type eq \"x\")].display", "value": "x"}]),
                ),
                ScimType::NoTarget,
            ),
        ];
        for (body, want) in cases {
            let err = patch(json!({"active": true}), body.clone()).expect_err(&body.to_string());
            assert_eq!(err.scim_type, Some(want), "{body}: {}", err.detail);
        }
    }
}
