//! Writes that need more than a copy of the SCIM value: an upstream field of another JSON
//! type (`upstream_type`), and ids of a referenced resource type (`reference`), whose
//! `$ref` reads render. Checked before any upstream call, so a bad value never leaves.

use serde_json::Value;

use super::engine::id_is_plausible;
use super::template::scalar_text;
use super::{Attribute, Reference, UpstreamType};
use crate::scim::{ScimError, ScimType};

/// Why a SCIM value cannot be written to its upstream field: a 400 `invalidValue`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CastError {
    #[error("{attribute} must be an integer written as a string (such as \"1043\"), not {shown}")]
    NotAnInteger { attribute: String, shown: String },
    #[error("{attribute} must be the id of a {resource}, not {shown}")]
    NotAnId {
        attribute: String,
        resource: String,
        shown: String,
    },
}

impl From<CastError> for ScimError {
    fn from(e: CastError) -> ScimError {
        ScimError::bad_request(ScimType::InvalidValue, e.to_string())
    }
}

/// A value for an error message: JSON, shortened.
fn shown(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 64 {
        format!("{}…", text.chars().take(64).collect::<String>())
    } else {
        text
    }
}

/// A decimal integer (optionally negative, digits only: no `+`, spaces or exponent) as a
/// JSON number; JSON integers pass as they are.
fn to_integer(v: &Value) -> Option<Value> {
    match v {
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(v.clone()),
        Value::String(s) => {
            let digits = s.strip_prefix('-').unwrap_or(s);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse::<i64>().ok().map(Value::from)
        }
        _ => None,
    }
}

impl UpstreamType {
    /// The value in this JSON type, or `None` when it has no such form.
    fn convert(self, v: &Value) -> Option<Value> {
        match self {
            UpstreamType::Integer => to_integer(v),
        }
    }
}

impl Reference {
    /// `$ref` of a referenced id, built like a group member's: `<base>/<endpoint>/<id>`.
    pub fn url(&self, value: &Value, base_url: &str) -> Option<Value> {
        let id = scalar_text(value)?;
        Some(Value::String(format!("{base_url}/{}/{id}", self.endpoint)))
    }
}

impl Attribute {
    /// A SCIM value (already type-checked) as the upstream field takes it: a referenced id
    /// must have the referenced type's id shape, and `upstream_type` converts it.
    pub fn cast_for_upstream(&self, v: Value) -> Result<Value, CastError> {
        if let Some(r) = &self.reference {
            let plausible = scalar_text(&v).is_some_and(|id| id_is_plausible(r.id_kind, &id));
            if !plausible {
                return Err(CastError::NotAnId {
                    attribute: self.key.clone(),
                    resource: r.resource.clone(),
                    shown: shown(&v),
                });
            }
        }
        match self.upstream_type {
            None => Ok(v),
            Some(t) => t.convert(&v).ok_or_else(|| CastError::NotAnInteger {
                attribute: self.key.clone(),
                shown: shown(&v),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::{load_sources, Source};
    use serde_json::json;

    const MAPPING: &str = r#"
[resources.User]
endpoint = "/Users"
schema = "urn:ietf:params:scim:schemas:core:2.0:User"
extensions = ["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]
id = { upstream = "$.id", type = "integer" }
[resources.User.operations]
get = { method = "GET", path = "/people/{id}" }
update = { method = "PATCH", path = "/people/{id}" }
[resources.User.attributes]
userName = { upstream = "$.login" }
"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value" = { upstream = "$.boss", upstream_type = "integer", reference = "User" }
"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber" = { upstream = "$.number", upstream_type = "integer" }
"#;

    fn users() -> std::sync::Arc<crate::mapping::Resource> {
        load_sources(&[Source {
            name: "m.toml".into(),
            text: MAPPING.into(),
        }])
        .unwrap_or_else(|e| panic!("compiles: {e}"))
        .resource("Users")
        .expect("Users")
        .clone()
    }

    #[test]
    fn integers_for_integer_upstream_fields() {
        let cases = [
            (json!("1043"), Some(json!(1043))),
            (json!("-7"), Some(json!(-7))),
            (json!("0"), Some(json!(0))),
            (json!(12), Some(json!(12))),
            (json!("9223372036854775807"), Some(json!(i64::MAX))),
            (json!("9223372036854775808"), None),
            (json!("+5"), None),
            (json!(" 5"), None),
            (json!("1e3"), None),
            (json!("5.0"), None),
            (json!(""), None),
            (json!("-"), None),
            (json!("abc"), None),
            (json!(1.5), None),
            (json!(true), None),
        ];
        for (scim, want) in cases {
            assert_eq!(UpstreamType::Integer.convert(&scim), want, "{scim}");
        }
    }

    #[test]
    fn writes_cast_and_check_references() {
        let r = users();
        let body =
            |doc: serde_json::Value| r.body_for(&doc, crate::mapping::engine::WriteMode::Create);
        let ext = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
        let written = body(json!({"userName": "a", ext: {"manager": {"value": "1043", "$ref": "https://x/Users/1043"}, "employeeNumber": "0042"}}))
            .expect("valid")
            .expect("a body");
        assert_eq!(written, json!({"login": "a", "boss": 1043, "number": 42}));
        // Not a User id: refused before anything is sent, naming the attribute.
        let err = body(json!({"userName": "a", ext: {"manager": {"value": "bob"}}})).unwrap_err();
        assert_eq!(err.scim_type, Some(ScimType::InvalidValue));
        assert!(
            err.detail
                .contains("manager.value must be the id of a User"),
            "{}",
            err.detail
        );
        let err = body(json!({"userName": "a", ext: {"employeeNumber": "A-17"}})).unwrap_err();
        assert_eq!(err.scim_type, Some(ScimType::InvalidValue));
        assert!(err.detail.contains("must be an integer"), "{}", err.detail);
    }

    #[test]
    fn reads_render_the_reference() {
        let doc = users()
            .to_scim(
                &json!({"id": 7, "login": "a", "boss": 1043}),
                "https://gw/scim/v2",
            )
            .expect("readable");
        let ext = &doc["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"];
        assert_eq!(
            ext["manager"],
            json!({"value": "1043", "$ref": "https://gw/scim/v2/Users/1043"})
        );
        let doc = users()
            .to_scim(
                &json!({"id": 7, "login": "a", "boss": null}),
                "https://gw/scim/v2",
            )
            .expect("readable");
        assert!(
            doc.get("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User")
                .is_none(),
            "no manager: {doc}"
        );
    }

    #[test]
    fn casts_and_references_are_checked_at_load() {
        let cases = [
            (
                r#"title = { upstream = "$.t", upstream_type = "float" }"#,
                "upstream_type \"float\" must be integer",
            ),
            (
                r#"active = { upstream = "$.a", upstream_type = "integer" }"#,
                "string attributes",
            ),
            (
                r#"title = { upstream = "$.t", upstream_type = "integer", enum = [["a", 1]] }"#,
                "enum",
            ),
            (
                r#"title = { upstream = "$.t", reference = "User" }"#,
                "`value` sub-attribute",
            ),
            (
                r#""urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value" = { upstream = "$.b", reference = "Robot" }"#,
                "not defined",
            ),
            (
                r#""urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value" = { upstream = "$.b", reference = "User" }
"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.$ref" = { upstream = "$.c" }"#,
                "$ref",
            ),
        ];
        for (attribute, want) in cases {
            let text = format!(
                r#"
[resources.User]
endpoint = "/Users"
schema = "urn:ietf:params:scim:schemas:core:2.0:User"
extensions = ["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]
id = {{ upstream = "$.id" }}
[resources.User.operations]
get = {{ method = "GET", path = "/people/{{id}}" }}
[resources.User.attributes]
userName = {{ upstream = "$.login" }}
{attribute}
"#
            );
            let errors = load_sources(&[Source {
                name: "m.toml".into(),
                text,
            }])
            .expect_err(attribute)
            .to_string();
            assert!(errors.contains(want), "{attribute}: {errors}");
            assert!(
                errors.contains("m.toml:1"),
                "{attribute}: located: {errors}"
            );
        }
    }
}
