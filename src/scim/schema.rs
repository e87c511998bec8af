//! What RFC 7643 says about the standard attributes: their types and characteristics.
//! The mapping decides which of them exist for a resource; this table only says what they are.

/// SCIM attribute data types (RFC 7643 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrType {
    String,
    Boolean,
    Decimal,
    Integer,
    DateTime,
    Reference,
    Complex,
}

impl AttrType {
    /// The name used in `/Schemas`.
    pub fn as_str(self) -> &'static str {
        match self {
            AttrType::String => "string",
            AttrType::Boolean => "boolean",
            AttrType::Decimal => "decimal",
            AttrType::Integer => "integer",
            AttrType::DateTime => "dateTime",
            AttrType::Reference => "reference",
            AttrType::Complex => "complex",
        }
    }
}

/// Characteristics of one standard attribute or sub-attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttrDef {
    pub ty: AttrType,
    pub multi_valued: bool,
    pub case_exact: bool,
}

/// Core User schema URN.
pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// Core Group schema URN.
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// Enterprise User extension URN.
pub const ENTERPRISE_USER_SCHEMA: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

const fn def(ty: AttrType, multi_valued: bool, case_exact: bool) -> AttrDef {
    AttrDef {
        ty,
        multi_valued,
        case_exact,
    }
}

/// Looks up a standard attribute (`name`, optionally `sub`) of a standard schema.
/// Unknown attributes are treated by callers as single-valued, case-insensitive strings,
/// which is RFC 7643's default.
pub fn standard_attribute(schema: &str, name: &str, sub: Option<&str>) -> Option<AttrDef> {
    use AttrType::*;
    let name = name.to_ascii_lowercase();
    let sub = sub.map(str::to_ascii_lowercase);
    let common = match (name.as_str(), sub.as_deref()) {
        ("id", None) => Some(def(String, false, true)),
        ("externalid", None) => Some(def(String, false, true)),
        ("meta", None) => Some(def(Complex, false, false)),
        ("meta", Some("created" | "lastmodified")) => Some(def(DateTime, false, false)),
        ("meta", Some("location")) => Some(def(Reference, false, true)),
        ("meta", Some(_)) => Some(def(String, false, true)),
        _ => None,
    };
    if common.is_some() {
        return common;
    }
    if schema.eq_ignore_ascii_case(USER_SCHEMA) {
        return match (name.as_str(), sub.as_deref()) {
            ("active", None) => Some(def(Boolean, false, false)),
            ("name", None) => Some(def(Complex, false, false)),
            (
                "emails" | "phonenumbers" | "ims" | "photos" | "addresses" | "groups"
                | "entitlements" | "roles" | "x509certificates",
                None,
            ) => Some(def(Complex, true, false)),
            (_, Some("primary")) => Some(def(Boolean, false, false)),
            ("groups", Some("value")) => Some(def(String, false, true)),
            ("photos", Some("value")) | (_, Some("$ref")) => Some(def(Reference, false, true)),
            ("username" | "displayname" | "nickname" | "title" | "usertype", None)
            | ("preferredlanguage" | "locale" | "timezone" | "password", None)
            | ("profileurl", None) => Some(def(String, false, false)),
            (_, Some(_)) => Some(def(String, false, false)),
            _ => None,
        };
    }
    if schema.eq_ignore_ascii_case(GROUP_SCHEMA) {
        return match (name.as_str(), sub.as_deref()) {
            ("displayname", None) => Some(def(String, false, false)),
            ("members", None) => Some(def(Complex, true, false)),
            ("members", Some("value")) => Some(def(String, false, true)),
            ("members", Some("$ref")) => Some(def(Reference, false, true)),
            ("members", Some(_)) => Some(def(String, false, false)),
            _ => None,
        };
    }
    if schema.eq_ignore_ascii_case(ENTERPRISE_USER_SCHEMA) {
        return match (name.as_str(), sub.as_deref()) {
            ("manager", None) => Some(def(Complex, false, false)),
            ("manager", Some("value")) => Some(def(String, false, true)),
            ("manager", Some("$ref")) => Some(def(Reference, false, true)),
            _ => Some(def(String, false, false)),
        };
    }
    None
}
