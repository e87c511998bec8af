//! One mapping file, as an operator might write it, compiled as TOML and, separately, as
//! JSON; whatever compiles is served as discovery documents, as a reload would.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scimgate::mapping::discovery::{
    resource_type, schema, schema_ids, service_provider_config, Capabilities,
};
use scimgate::mapping::{load_sources, Source};
use scimgate_fuzz::BASE_URL;

fuzz_target!(|data: &[u8]| {
    // Mapping files are read as UTF-8 text.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for name in ["fuzz.toml", "fuzz.json"] {
        let source = Source {
            name: name.to_owned(),
            text: text.to_owned(),
        };
        match load_sources(std::slice::from_ref(&source)) {
            Ok(mapping) => {
                let _ =
                    service_provider_config(&mapping, Capabilities { max_results: 100 }, BASE_URL);
                for r in &mapping.resources {
                    let _ = resource_type(r, BASE_URL);
                }
                for id in schema_ids(&mapping) {
                    assert!(
                        schema(&mapping, &id, BASE_URL).is_some(),
                        "schema {id} listed but not served"
                    );
                }
            }
            Err(errors) => {
                assert!(!errors.0.is_empty(), "a failed load reports no error");
                let _ = errors.to_string();
            }
        }
    }
});
