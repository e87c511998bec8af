//! PATCH operations on `members`, reduced to one net change per member before any call.
//!
//! Okta sends `add` with `path: "members"`, `remove` with `path: members[value eq "…"]`, and
//! `replace` of `members`; Entra sends `remove` with `path: "members"` and a value array. All
//! of them become a [`MemberEdit`]: either a set of per-member changes (an add and a remove of
//! one member in one request cancel out), or a whole target set (after a replace or a
//! remove-all) that the executor diffs against the current membership.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::filter::{CompValue, CompareOp, Filter};
use super::patch::{OpKind, PatchOp};
use super::{ScimError, ScimType};

/// One member's net change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Add,
    Remove,
}

/// The net effect of a request on a membership.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberEdit {
    /// The whole new membership, when the request replaced or cleared it.
    pub target: Option<BTreeSet<String>>,
    /// Per-member changes, when it did not.
    pub changes: BTreeMap<String, Change>,
    /// Whether the request touched `members` at all.
    pub touched: bool,
}

impl MemberEdit {
    fn add(&mut self, value: String) {
        self.touched = true;
        match &mut self.target {
            Some(target) => {
                target.insert(value);
            }
            None => match self.changes.get(&value) {
                Some(Change::Remove) => {
                    self.changes.remove(&value);
                }
                _ => {
                    self.changes.insert(value, Change::Add);
                }
            },
        }
    }

    fn remove(&mut self, value: String) {
        self.touched = true;
        match &mut self.target {
            Some(target) => {
                target.remove(&value);
            }
            None => match self.changes.get(&value) {
                Some(Change::Add) => {
                    self.changes.remove(&value);
                }
                _ => {
                    self.changes.insert(value, Change::Remove);
                }
            },
        }
    }

    fn replace(&mut self, values: BTreeSet<String>) {
        self.touched = true;
        self.changes.clear();
        self.target = Some(values);
    }

    /// Every member value the request names (to check their shape before any call).
    pub fn values(&self) -> impl Iterator<Item = &String> {
        self.target.iter().flatten().chain(self.changes.keys())
    }
}

fn is_members(op: &PatchOp) -> bool {
    op.path
        .as_ref()
        .is_some_and(|p| p.attr.urn.is_none() && p.attr.name.eq_ignore_ascii_case("members"))
}

/// Member values of a PATCH or resource value: `[{"value": "1"}, …]` or one `{"value": "1"}`.
pub fn member_values(value: &Value) -> Result<Vec<String>, ScimError> {
    let items: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        single => vec![single],
    };
    items
        .into_iter()
        .map(|item| {
            let v = item
                .as_object()
                .and_then(|o| crate::mapping::scim_doc::get_ci(o, "value"))
                .ok_or_else(|| {
                    ScimError::bad_request(ScimType::InvalidValue, "each member needs a `value`")
                })?;
            match v {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                _ => Err(ScimError::bad_request(
                    ScimType::InvalidValue,
                    "a member `value` must be a string",
                )),
            }
        })
        .collect()
}

/// `value eq "1"` (or `or` of such terms) inside `members[…]`.
fn filter_values(filter: &Filter, out: &mut Vec<String>) -> Result<(), ScimError> {
    match filter {
        Filter::Compare {
            path,
            op: CompareOp::Eq,
            value,
        } if path.urn.is_none()
            && path.sub.is_none()
            && path.name.eq_ignore_ascii_case("value") =>
        {
            match value {
                CompValue::String(s) => out.push(s.clone()),
                CompValue::Number(n) => out.push(n.to_string()),
                _ => {
                    return Err(ScimError::bad_request(
                        ScimType::InvalidFilter,
                        "members[value eq …] needs a string",
                    ))
                }
            }
            Ok(())
        }
        Filter::Or(a, b) => {
            filter_values(a, out)?;
            filter_values(b, out)
        }
        _ => Err(ScimError::bad_request(
            ScimType::InvalidFilter,
            "a members filter must be `value eq \"…\"` (or `or` of such terms)",
        )),
    }
}

/// Splits a PATCH into the operations on other attributes and the net member edit.
pub fn split_member_ops(ops: Vec<PatchOp>) -> Result<(Vec<PatchOp>, MemberEdit), ScimError> {
    let mut edit = MemberEdit::default();
    let mut rest = Vec::new();
    for op in ops {
        if is_members(&op) {
            let path = op
                .path
                .as_ref()
                .ok_or_else(|| ScimError::bad_request(ScimType::InvalidPath, "missing path"))?;
            if path.attr.sub.is_some() || path.sub.is_some() {
                return Err(ScimError::bad_request(
                    ScimType::InvalidPath,
                    "members sub-attributes cannot be patched one by one",
                ));
            }
            let mut filtered = Vec::new();
            if let Some(f) = &path.filter {
                filter_values(f, &mut filtered)?;
            }
            let value = op.value.clone().unwrap_or(Value::Null);
            match (op.op, path.filter.is_some()) {
                (OpKind::Remove, true) => filtered.into_iter().for_each(|v| edit.remove(v)),
                (OpKind::Remove, false) if value.is_null() => edit.replace(BTreeSet::new()),
                (OpKind::Remove, false) => member_values(&value)?
                    .into_iter()
                    .for_each(|v| edit.remove(v)),
                (OpKind::Add, false) => {
                    member_values(&value)?.into_iter().for_each(|v| edit.add(v))
                }
                (OpKind::Replace, false) => {
                    edit.replace(member_values(&value)?.into_iter().collect())
                }
                (OpKind::Add | OpKind::Replace, true) => {
                    // `replace members[value eq "1"]` with a member value: the named member
                    // is swapped for the given one.
                    filtered.into_iter().for_each(|v| edit.remove(v));
                    member_values(&value)?.into_iter().for_each(|v| edit.add(v));
                }
            }
            continue;
        }
        // A no-path value may carry `members` beside other attributes.
        if op.path.is_none() && op.op != OpKind::Remove {
            if let Some(Value::Object(map)) = &op.value {
                let key = map
                    .keys()
                    .find(|k| k.eq_ignore_ascii_case("members"))
                    .cloned();
                if let Some(key) = key {
                    let mut others = map.clone();
                    let members = others.remove(&key).unwrap_or(Value::Null);
                    match op.op {
                        OpKind::Add => member_values(&members)?
                            .into_iter()
                            .for_each(|v| edit.add(v)),
                        _ => edit.replace(member_values(&members)?.into_iter().collect()),
                    }
                    if !others.is_empty() {
                        rest.push(PatchOp {
                            op: op.op,
                            path: None,
                            value: Some(Value::Object(others)),
                        });
                    }
                    continue;
                }
            }
        }
        rest.push(op);
    }
    Ok((rest, edit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::patch::parse_patch;
    use serde_json::json;

    fn edit(ops: Value) -> Result<(usize, MemberEdit), ScimError> {
        let body = json!({"schemas": [crate::scim::PATCH_SCHEMA], "Operations": ops});
        let (rest, edit) = split_member_ops(parse_patch(&body)?)?;
        Ok((rest.len(), edit))
    }

    fn set(values: &[&str]) -> BTreeSet<String> {
        values.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn shapes_reduce_to_net_changes() {
        use Change::*;
        // (operations, other ops left, target set, per-member changes)
        type Case = (
            Value,
            usize,
            Option<BTreeSet<String>>,
            Vec<(&'static str, Change)>,
        );
        let cases: Vec<Case> = vec![
            // Okta add.
            (
                json!([{"op": "add", "path": "members", "value": [{"value": "1", "display": "a"}, {"value": "2"}]}]),
                0,
                None,
                vec![("1", Add), ("2", Add)],
            ),
            // Okta remove by filter, with an add in the same request.
            (
                json!([{"op": "remove", "path": "members[value eq \"1\"]"}, {"op": "add", "path": "members", "value": [{"value": "3"}]}]),
                0,
                None,
                vec![("1", Remove), ("3", Add)],
            ),
            // Add then remove of one member is nothing.
            (
                json!([{"op": "add", "path": "members", "value": [{"value": "1"}]}, {"op": "remove", "path": "members[value eq \"1\"]"}]),
                0,
                None,
                vec![],
            ),
            // Entra remove by value array, capitalised op.
            (
                json!([{"op": "Remove", "path": "members", "value": [{"value": "4"}, {"value": "5"}]}]),
                0,
                None,
                vec![("4", Remove), ("5", Remove)],
            ),
            // Remove all.
            (
                json!([{"op": "remove", "path": "members"}]),
                0,
                Some(set(&[])),
                vec![],
            ),
            // Replace, then add on top.
            (
                json!([{"op": "replace", "path": "members", "value": [{"value": "7"}]}, {"op": "add", "path": "members", "value": [{"value": "8"}]}]),
                0,
                Some(set(&["7", "8"])),
                vec![],
            ),
            // Okta rename: no-path replace with id and displayName; not a member op.
            (
                json!([{"op": "replace", "value": {"id": "9", "displayName": "New"}}]),
                1,
                None,
                vec![],
            ),
            // No-path replace carrying members beside displayName.
            (
                json!([{"op": "replace", "value": {"displayName": "New", "members": [{"value": "1"}]}}]),
                1,
                Some(set(&["1"])),
                vec![],
            ),
            // or-filter.
            (
                json!([{"op": "remove", "path": "members[value eq \"1\" or value eq \"2\"]"}]),
                0,
                None,
                vec![("1", Remove), ("2", Remove)],
            ),
        ];
        for (ops, rest, target, changes) in cases {
            let (n, e) = edit(ops.clone()).unwrap_or_else(|err| panic!("{ops}: {err:?}"));
            assert_eq!(n, rest, "{ops}");
            assert_eq!(e.target, target, "{ops}");
            let want: BTreeMap<String, Change> = changes
                .into_iter()
                .map(|(k, c)| (k.to_owned(), c))
                .collect();
            assert_eq!(e.changes, want, "{ops}");
        }
    }

    #[test]
    fn bad_member_ops() {
        let cases = [
            (
                json!([{"op": "add", "path": "members", "value": [{"display": "x"}]}]),
                ScimType::InvalidValue,
            ),
            (
                json!([{"op": "remove", "path": "members[display eq \"x\"]"}]),
                ScimType::InvalidFilter,
            ),
            (
                json!([{"op": "add", "path": "members", "value": [{"value": true}]}]),
                ScimType::InvalidValue,
            ),
            (
                json!([{"op": "replace", "path": "members.value", "value": "1"}]),
                ScimType::InvalidPath,
            ),
        ];
        for (ops, want) in cases {
            let err = edit(ops.clone()).expect_err(&ops.to_string());
            assert_eq!(err.scim_type, Some(want), "{ops}");
        }
    }
}
