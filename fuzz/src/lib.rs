//! Fixtures shared by the fuzz targets: the shipped Blacksmith mapping, compiled once, the
//! SCIM documents a PATCH starts from, and a permissive [`PatchTarget`] that lets any path
//! through so the document editing code sees every path shape the parser accepts.

use std::sync::{Arc, OnceLock};

use scimgate::mapping::{load_sources, Mapping, Resource, Source};
use scimgate::scim::filter::AttrRef;
use scimgate::scim::patch::{PatchTarget, PathClass};
use serde_json::{json, Value};

pub const CORE_USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const BASE_URL: &str = "https://scim.example.com/scim/v2";

/// The shipped mapping files, as `scimgate` reads them from `mappings/blacksmith/`.
pub fn blacksmith_sources() -> Vec<Source> {
    [
        (
            "gateway.toml",
            include_str!("../../mappings/blacksmith/gateway.toml"),
        ),
        (
            "users.toml",
            include_str!("../../mappings/blacksmith/users.toml"),
        ),
        (
            "groups.toml",
            include_str!("../../mappings/blacksmith/groups.toml"),
        ),
    ]
    .into_iter()
    .map(|(name, text)| Source {
        name: name.to_owned(),
        text: text.to_owned(),
    })
    .collect()
}

/// The compiled Blacksmith mapping and, per resource, the SCIM document the gateway would
/// have fetched before applying a PATCH (built with the mapping's own `to_scim`).
pub struct Fixtures {
    pub mapping: Mapping,
    pub current: Vec<(Arc<Resource>, Value)>,
}

pub fn fixtures() -> &'static Fixtures {
    static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let mapping = load_sources(&blacksmith_sources()).expect("the shipped mapping compiles");
        let upstream_user = json!({
            "id": 42, "email": "ada@example.com", "external_id": "00u1abcd",
            "first_name": "Ada", "last_name": "Lovelace", "display_name": "Ada Lovelace",
            "title": "Analyst", "phone": "+1 555 0100", "status": "active", "role": "member",
            "department": "R&D",
            "created_at": "2024-01-02T03:04:05Z", "updated_at": "2024-06-07T08:09:10Z"
        });
        let upstream_team = json!({
            "id": 7, "name": "Engineering",
            "created_at": "2024-01-02T03:04:05Z", "updated_at": "2024-06-07T08:09:10Z"
        });
        let current = mapping
            .resources
            .iter()
            .map(|r| {
                let obj = if r.name == "Group" {
                    &upstream_team
                } else {
                    &upstream_user
                };
                let doc = r.to_scim(obj, BASE_URL).expect("fixture maps to SCIM");
                (r.clone(), doc)
            })
            .collect();
        Fixtures { mapping, current }
    })
}

/// A User as Okta and Entra see one: every shape the document code handles (complex,
/// multi-valued with selectors, an extension with a complex sub-attribute, read-only meta).
pub fn rich_user() -> Value {
    json!({
        "schemas": [CORE_USER, ENTERPRISE],
        "id": "42",
        "externalId": "00u1abcd",
        "userName": "ada@example.com",
        "name": {"givenName": "Ada", "familyName": "Lovelace", "formatted": "Ada Lovelace"},
        "displayName": "Ada Lovelace",
        "active": true,
        "emails": [
            {"type": "work", "value": "ada@example.com", "primary": true},
            {"type": "home", "value": "ada@home.example"}
        ],
        "phoneNumbers": [{"type": "work", "value": "+1 555 0100"}],
        "roles": [{"value": "member", "primary": true}],
        "groups": [{"value": "7", "display": "Engineering"}],
        "members": [{"value": "1"}, {"value": "2"}],
        "x509Certificates": ["MIIB", "MIIC"],
        (ENTERPRISE): {"department": "R&D", "employeeNumber": "1701",
                       "manager": {"value": "9", "displayName": "Charles"}},
        "meta": {"resourceType": "User", "created": "2024-01-02T03:04:05Z",
                 "lastModified": "2024-06-07T08:09:10Z", "version": "W/\"3\""}
    })
}

/// Accepts every path except the read-only and ignored ones a real mapping has, so that
/// `apply` reaches the document editing code with whatever the parser produced.
pub struct Permissive;

impl PatchTarget for Permissive {
    fn core_schema(&self) -> &str {
        CORE_USER
    }

    fn is_extension(&self, urn: &str) -> bool {
        urn.eq_ignore_ascii_case(ENTERPRISE)
    }

    fn classify(&self, path: &AttrRef) -> PathClass {
        let name = path.attr.name.to_ascii_lowercase();
        match name.as_str() {
            "id" | "meta" if path.attr.urn.is_none() => PathClass::ReadOnly,
            "password" => PathClass::Ignored,
            _ => PathClass::Writable,
        }
    }

    fn primary_only(&self, path: &AttrRef) -> bool {
        path.attr.name.eq_ignore_ascii_case("roles")
    }
}
