//! `?filter=` as clients send it: parse, print back canonically, evaluate against a User
//! (the scan path) and plan the upstream query (the push-down path). PATCH paths share the
//! parser, so `parse_attr_ref` sees the same input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scimgate::scim::filter::{parse_attr_ref, parse_filter, MAX_FILTER_LEN};
use scimgate_fuzz::{fixtures, rich_user};

fuzz_target!(|data: &[u8]| {
    // Query strings reach the parser as decoded UTF-8 text.
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let fx = fixtures();
    match parse_filter(input) {
        Ok(filter) => {
            // The canonical form must parse back to the same tree (when it still fits the
            // length cap: escaping control characters can make it longer than the input).
            let printed = filter.to_string();
            if printed.len() <= MAX_FILTER_LEN {
                assert_eq!(
                    parse_filter(&printed).as_ref(),
                    Ok(&filter),
                    "canonical form {printed:?} of {input:?} does not round-trip"
                );
            }
            let user = rich_user();
            let _ = filter.matches(&user, &|p| p.name.eq_ignore_ascii_case("externalId"));
            for (resource, doc) in &fx.current {
                let _ = resource.matches(doc, &filter);
                let _ = resource.plan_filter(&filter);
            }
        }
        Err(e) => assert!(
            e.offset <= input.len(),
            "error offset {} past the end of {input:?}",
            e.offset
        ),
    }
    if let Err(e) = parse_attr_ref(input) {
        assert!(e.offset <= input.len());
    }
});
