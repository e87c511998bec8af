//! A whole PATCH request body: parsed, split into member edits and the rest, and applied,
//! both to a rich User through a target that accepts every path and through the pure part
//! of the gateway's PATCH handler for each resource of the shipped Blacksmith mapping
//! (apply, validate, refuse impossible removals, diff, actions, upstream body).
#![no_main]

use libfuzzer_sys::fuzz_target;
use scimgate::mapping::engine::WriteMode;
use scimgate::scim::membership::{split_member_ops, MemberEdit};
use scimgate::scim::patch::{apply, parse_patch, OpKind, PatchOp};
use scimgate_fuzz::{fixtures, rich_user, Permissive};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Ok(ops) = parse_patch(&body) else {
        return;
    };

    for start in [rich_user(), Value::Object(Default::default())] {
        let mut doc = start;
        let _ = apply(&mut doc, &ops, &Permissive);
    }

    if let Ok((rest, edit)) = split_member_ops(ops.clone()) {
        if edit.target.is_some() {
            assert!(
                edit.changes.is_empty(),
                "a whole-set edit kept per-member changes: {edit:?}"
            );
        }
        if !edit.touched {
            // Nothing to do for members (none named, or only empty adds and removes).
            assert_eq!(edit, MemberEdit::default());
        }
        // Operations that name no member pass through untouched and in order.
        let names_members = |op: &PatchOp| match (&op.path, &op.value) {
            (Some(p), _) => p.attr.urn.is_none() && p.attr.name.eq_ignore_ascii_case("members"),
            (None, Some(Value::Object(m))) => {
                op.op != OpKind::Remove && m.keys().any(|k| k.eq_ignore_ascii_case("members"))
            }
            _ => false,
        };
        if !ops.iter().any(names_members) {
            assert_eq!(rest, ops, "operations changed though none names members");
            assert!(!edit.touched);
        }
        assert!(rest.len() <= ops.len());
        let _ = edit.values().count();
    }

    for (resource, current) in &fixtures().current {
        let ops = if resource.members.is_some() {
            match split_member_ops(ops.clone()) {
                Ok((rest, _)) => rest,
                Err(_) => continue,
            }
        } else {
            ops.clone()
        };
        let mut updated = current.clone();
        if apply(&mut updated, &ops, resource.as_ref()).is_err()
            || resource.validate_values(&updated).is_err()
            || resource.check_removals(current, &updated).is_err()
        {
            continue;
        }
        let changed = resource.changed_attributes(current, &updated);
        let _ = resource.actions_for(current, &updated);
        if let Ok(Some(body)) = resource.body_for(&updated, WriteMode::Changed(&changed)) {
            let _ = resource.wrap(body);
        }
    }
});
