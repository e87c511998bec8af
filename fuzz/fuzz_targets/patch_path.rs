//! A PATCH operation's `path`: the attribute-path grammar on its own (`parse_attr_ref`,
//! `parse_attr_path`), then the same text as the path of each kind of operation, applied to
//! a User and split into member edits, as the gateway does with a request body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scimgate::mapping::scim_doc;
use scimgate::scim::filter::{parse_attr_path, parse_attr_ref, Filter, MAX_FILTER_LEN};
use scimgate::scim::membership::split_member_ops;
use scimgate::scim::patch::{apply, parse_patch, OpKind, PatchOp};
use scimgate::scim::PATCH_SCHEMA;
use scimgate_fuzz::{rich_user, Permissive, CORE_USER, ENTERPRISE};
use serde_json::{json, Value};

/// What a successful operation must have done: after `remove` the path reads as absent,
/// after `replace` with a plain value it reads as that value. Paths the target drops
/// (`password`) and a whole extension addressed by its URN are left out.
fn check_effect(doc: &Value, op: &PatchOp, input: &str) {
    let Some(mut path) = op.path.clone() else {
        return;
    };
    if path
        .attr
        .urn
        .as_deref()
        .is_some_and(|u| u.eq_ignore_ascii_case(CORE_USER))
    {
        path.attr.urn = None;
    }
    let whole_extension =
        path.attr.sub.is_none()
            && path.filter.is_none()
            && path.attr.urn.as_deref().is_some_and(|u| {
                format!("{u}:{}", path.attr.name).eq_ignore_ascii_case(ENTERPRISE)
            });
    if whole_extension || path.attr.name.eq_ignore_ascii_case("password") {
        return;
    }
    // Writing a sub-attribute the filter selects by can move the element out of the
    // selection (`emails[type eq "work"].type` → "home"): nothing to check then.
    if let (Some(filter), Some(sub)) = (&path.filter, &path.sub) {
        if mentions(filter, sub) {
            return;
        }
    }
    let now = scim_doc::get(doc, &path);
    match (op.op, &op.value) {
        (OpKind::Remove, _) => {
            assert_eq!(
                now, None,
                "remove {input:?} succeeded but the value is still there"
            )
        }
        (OpKind::Replace, Some(v @ Value::String(_))) => assert_eq!(
            now.as_ref(),
            Some(v),
            "replace {input:?} with {v} succeeded but the path reads {now:?}"
        ),
        _ => {}
    }
}

/// Does `filter` read the attribute `name` anywhere?
fn mentions(filter: &Filter, name: &str) -> bool {
    match filter {
        Filter::Compare { path, .. } | Filter::Present(path) => {
            path.name.eq_ignore_ascii_case(name)
        }
        Filter::And(a, b) | Filter::Or(a, b) => mentions(a, name) || mentions(b, name),
        Filter::Not(inner) => mentions(inner, name),
        Filter::ValuePath { path, filter } => {
            path.name.eq_ignore_ascii_case(name) || mentions(filter, name)
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The path arrives inside a JSON string, so it is always valid UTF-8.
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let full = parse_attr_ref(input);
    let plain = parse_attr_path(input);
    // A plain path is exactly an attribute reference without a value filter.
    match (&full, &plain) {
        (Ok(r), Ok(p)) => assert!(
            r.filter.is_none() && r.sub.is_none() && &r.attr == p,
            "{input:?}: parse_attr_ref {r:?} disagrees with parse_attr_path {p:?}"
        ),
        (Ok(r), Err(e)) => assert!(
            r.filter.is_some(),
            "{input:?}: parse_attr_ref accepted {r:?}, parse_attr_path refused it: {e}"
        ),
        (Err(e), Ok(p)) => {
            panic!("{input:?}: parse_attr_path accepted {p:?}, parse_attr_ref refused it: {e}")
        }
        (Err(a), Err(b)) => assert!(a.offset <= input.len() && b.offset <= input.len()),
    }
    if let Ok(r) = &full {
        let printed = r.to_string();
        if printed.len() <= MAX_FILTER_LEN {
            assert_eq!(
                parse_attr_ref(&printed).as_ref(),
                Ok(r),
                "canonical form {printed:?} of {input:?} does not round-trip"
            );
        }
    }
    let values = [
        None,
        Some(json!("x")),
        Some(json!({"value": "x", "type": "work", "primary": true})),
        Some(json!([{"value": "9"}, {"value": "10", "display": "Ten"}])),
    ];
    for op in ["add", "replace", "remove"] {
        for value in &values {
            let mut operation = json!({"op": op, "path": input});
            if let Some(v) = value {
                operation["value"] = v.clone();
            }
            let body = json!({"schemas": [PATCH_SCHEMA], "Operations": [operation]});
            let Ok(ops) = parse_patch(&body) else {
                continue;
            };
            let mut doc = rich_user();
            if apply(&mut doc, &ops, &Permissive).is_ok() {
                check_effect(&doc, &ops[0], input);
            }
            let _ = split_member_ops(ops);
        }
    }
});
