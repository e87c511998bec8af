//! `{placeholder}` templates: URL paths, request bodies and SCIM-side string defaults.
//! Parsed and checked at load; rendering is a walk over pre-split parts.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

use crate::scim::filter::{parse_attr_ref, AttrRef};

/// Everything but RFC 3986 unreserved characters is encoded, so a value always stays
/// inside one path segment: `/`, `?`, `#`, `%` and CR/LF cannot change the URL's shape.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A value a template can refer to.
#[derive(Debug, Clone, PartialEq)]
pub enum Var {
    /// `{id}`: the upstream id of the resource addressed.
    Id,
    /// `{tenant.NAME}`: a field of the authenticated tenant.
    Tenant(String),
    /// `{token}`: the SCIM bearer token (introspection only).
    Token,
    /// `{member.value}`: one member's upstream id (membership calls).
    MemberValue,
    /// `{members.value}`: every member's id, as an array (bulk membership calls).
    MemberValues,
    /// `{userName}`, `{name.givenName}`: a SCIM attribute of the request (SCIM-side templates).
    Scim(AttrRef),
}

/// How a placeholder's text is typed when it fills a whole JSON body value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cast {
    Text,
    Int,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Literal(String),
    Var(Var, Cast),
}

/// Which placeholders a template may use where it appears.
#[derive(Debug, Clone, Copy)]
pub struct Allowed<'a> {
    pub id: bool,
    pub token: bool,
    pub member: bool,
    pub scim: bool,
    pub tenant_fields: &'a [String],
}

/// Values for rendering.
#[derive(Debug, Default, Clone, Copy)]
pub struct Vars<'a> {
    pub id: Option<&'a str>,
    pub tenant: Option<&'a crate::server::auth::Tenant>,
    pub token: Option<&'a str>,
    pub member: Option<&'a str>,
    pub members: Option<&'a [String]>,
    pub scim: Option<&'a Value>,
}

/// Why a template could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unclosed `{{` in template {0:?}")]
    Unclosed(String),
    #[error("unknown placeholder {{{0}}}")]
    Unknown(String),
    #[error("unknown cast `:{0}` (allowed: int)")]
    BadCast(String),
    #[error("path template {0:?} must start with `/` and stay on the upstream origin (no scheme, `//`, `?`, `#`, `\\`, `.` or `..` segments)")]
    LeavesOrigin(String),
}

/// Why a template could not be rendered for this request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("no value for {{{0}}}")]
    Missing(String),
    #[error("value for {{{0}}} is not a safe path segment")]
    UnsafeSegment(String),
    #[error("value for {{{0}}} is not an integer")]
    NotInteger(String),
}

/// A parsed template string.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses `text`, accepting only the placeholders `allowed` lists.
    pub fn parse(text: &str, allowed: Allowed<'_>) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_owned()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| TemplateError::Unclosed(text.to_owned()))?;
            let inner = &after[..close];
            let (name, cast) = match inner.split_once(':') {
                Some((n, "int")) => (n, Cast::Int),
                Some((_, c)) if !inner.starts_with("urn:") => {
                    return Err(TemplateError::BadCast(c.to_owned()))
                }
                _ => (inner, Cast::Text),
            };
            parts.push(Part::Var(Self::var(name, allowed)?, cast));
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    /// Parses a URL path template and checks it cannot leave the upstream origin.
    pub fn parse_path(text: &str, allowed: Allowed<'_>) -> Result<Template, TemplateError> {
        let leaves = !text.starts_with('/')
            || text.contains("//")
            || text.contains("://")
            || text.contains(['?', '#', '\\'])
            || text.split('/').any(|seg| seg == ".." || seg == ".");
        if leaves {
            return Err(TemplateError::LeavesOrigin(text.to_owned()));
        }
        Self::parse(text, allowed)
    }

    fn var(name: &str, allowed: Allowed<'_>) -> Result<Var, TemplateError> {
        let unknown = || TemplateError::Unknown(name.to_owned());
        match name {
            "id" if allowed.id => Ok(Var::Id),
            "token" if allowed.token => Ok(Var::Token),
            "member.value" if allowed.member => Ok(Var::MemberValue),
            "members.value" if allowed.member => Ok(Var::MemberValues),
            _ => {
                if let Some(field) = name.strip_prefix("tenant.") {
                    if allowed.tenant_fields.iter().any(|f| f == field) {
                        return Ok(Var::Tenant(field.to_owned()));
                    }
                    return Err(unknown());
                }
                if allowed.scim {
                    return parse_attr_ref(name).map(Var::Scim).map_err(|_| unknown());
                }
                Err(unknown())
            }
        }
    }

    /// The placeholders this template uses.
    pub fn vars(&self) -> impl Iterator<Item = &Var> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v, _) => Some(v),
            Part::Literal(_) => None,
        })
    }

    /// Renders a URL path: every placeholder becomes exactly one percent-encoded segment.
    pub fn render_path(&self, vars: &Vars<'_>) -> Result<String, RenderError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Var(var, _) => {
                    let text = lookup_text(var, vars)?;
                    if text.is_empty() || text == "." || text == ".." {
                        return Err(RenderError::UnsafeSegment(var_name(var)));
                    }
                    out.extend(utf8_percent_encode(&text, SEGMENT));
                }
            }
        }
        Ok(out)
    }

    /// Renders as text (no encoding); `None` when a SCIM attribute it names is absent.
    pub fn render_text(&self, vars: &Vars<'_>) -> Option<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Var(var, _) => out.push_str(&lookup_text(var, vars).ok()?),
            }
        }
        Some(out)
    }

    /// Renders as a JSON value: a template that is one placeholder keeps the value's type.
    pub fn render_value(&self, vars: &Vars<'_>) -> Result<Value, RenderError> {
        if let [Part::Var(var, cast)] = self.parts.as_slice() {
            if let Var::MemberValues = var {
                let ids = vars
                    .members
                    .ok_or_else(|| RenderError::Missing(var_name(var)))?;
                return ids.iter().map(|id| cast_value(var, id, *cast)).collect();
            }
            if let (Var::Tenant(field), Cast::Text) = (var, cast) {
                if let Some(v) = vars.tenant.and_then(|t| t.get(field)) {
                    return Ok(v.clone());
                }
            }
            let text = lookup_text(var, vars)?;
            return cast_value(var, &text, *cast);
        }
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Var(var, _) => out.push_str(&lookup_text(var, vars)?),
            }
        }
        Ok(Value::String(out))
    }
}

fn cast_value(var: &Var, text: &str, cast: Cast) -> Result<Value, RenderError> {
    match cast {
        Cast::Text => Ok(Value::String(text.to_owned())),
        Cast::Int => text
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| RenderError::NotInteger(var_name(var))),
    }
}

fn var_name(var: &Var) -> String {
    match var {
        Var::Id => "id".into(),
        Var::Tenant(f) => format!("tenant.{f}"),
        Var::Token => "token".into(),
        Var::MemberValue => "member.value".into(),
        Var::MemberValues => "members.value".into(),
        Var::Scim(r) => r.to_string(),
    }
}

fn lookup_text(var: &Var, vars: &Vars<'_>) -> Result<String, RenderError> {
    let missing = || RenderError::Missing(var_name(var));
    match var {
        Var::Id => vars.id.map(str::to_owned).ok_or_else(missing),
        Var::Token => vars.token.map(str::to_owned).ok_or_else(missing),
        Var::MemberValue => vars.member.map(str::to_owned).ok_or_else(missing),
        Var::MemberValues => Err(missing()),
        Var::Tenant(field) => vars
            .tenant
            .and_then(|t| t.get(field))
            .and_then(scalar_text)
            .ok_or_else(missing),
        Var::Scim(r) => vars
            .scim
            .and_then(|doc| crate::mapping::scim_doc::get(doc, r))
            .and_then(|v| scalar_text(&v))
            .ok_or_else(missing),
    }
}

/// Text form of a scalar JSON value; objects, arrays and null have none.
pub fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        // Ids are mostly unsigned integers: formatted without `fmt`'s machinery.
        Value::Number(n) => Some(match n.as_u64() {
            Some(u) => itoa::Buffer::new().format(u).to_owned(),
            None => n.to_string(),
        }),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A JSON body template: string leaves are [`Template`]s.
#[derive(Debug, Clone, PartialEq)]
pub enum BodyTemplate {
    Template(Template),
    Literal(Value),
    Array(Vec<BodyTemplate>),
    Object(Vec<(String, BodyTemplate)>),
}

impl BodyTemplate {
    /// Compiles a JSON value whose strings may hold placeholders.
    pub fn parse(value: &Value, allowed: Allowed<'_>) -> Result<BodyTemplate, TemplateError> {
        Ok(match value {
            Value::String(s) if s.contains('{') => {
                BodyTemplate::Template(Template::parse(s, allowed)?)
            }
            Value::Array(items) => BodyTemplate::Array(
                items
                    .iter()
                    .map(|v| Self::parse(v, allowed))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => BodyTemplate::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), Self::parse(v, allowed)?)))
                    .collect::<Result<_, TemplateError>>()?,
            ),
            other => BodyTemplate::Literal(other.clone()),
        })
    }

    /// Renders the body.
    pub fn render(&self, vars: &Vars<'_>) -> Result<Value, RenderError> {
        Ok(match self {
            BodyTemplate::Template(t) => t.render_value(vars)?,
            BodyTemplate::Literal(v) => v.clone(),
            BodyTemplate::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|t| t.render(vars))
                    .collect::<Result<_, _>>()?,
            ),
            BodyTemplate::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, t)| Ok((k.clone(), t.render(vars)?)))
                    .collect::<Result<_, RenderError>>()?,
            ),
        })
    }

    /// Every placeholder used anywhere in the body.
    pub fn vars(&self) -> Vec<&Var> {
        match self {
            BodyTemplate::Template(t) => t.vars().collect(),
            BodyTemplate::Literal(_) => Vec::new(),
            BodyTemplate::Array(items) => items.iter().flat_map(|t| t.vars()).collect(),
            BodyTemplate::Object(fields) => fields.iter().flat_map(|(_, t)| t.vars()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Allowed<'static> {
        static FIELDS: [String; 0] = [];
        Allowed {
            id: true,
            token: false,
            member: true,
            scim: false,
            tenant_fields: &FIELDS,
        }
    }

    #[test]
    fn path_placeholders_are_single_encoded_segments() {
        let t = Template::parse_path("/users/{id}/x", allowed()).unwrap();
        let cases = [
            ("1042", Ok("/users/1042/x".to_owned())),
            ("a/b", Ok("/users/a%2Fb/x".to_owned())),
            ("?x=1#y", Ok("/users/%3Fx%3D1%23y/x".to_owned())),
            ("a\r\nb", Ok("/users/a%0D%0Ab/x".to_owned())),
            ("%2e%2e", Ok("/users/%252e%252e/x".to_owned())),
            ("..", Err(RenderError::UnsafeSegment("id".into()))),
            (".", Err(RenderError::UnsafeSegment("id".into()))),
            ("", Err(RenderError::UnsafeSegment("id".into()))),
        ];
        for (id, want) in cases {
            let vars = Vars {
                id: Some(id),
                ..Vars::default()
            };
            assert_eq!(t.render_path(&vars), want, "id {id:?}");
        }
    }

    #[test]
    fn templates_that_leave_the_origin_are_rejected() {
        for bad in [
            "users",
            "//evil.example/x",
            "http://evil/x",
            "/a/../b",
            "/a?x=1",
            "/a#f",
            "/a\\b",
        ] {
            assert!(
                matches!(
                    Template::parse_path(bad, allowed()),
                    Err(TemplateError::LeavesOrigin(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn unknown_placeholders_and_casts_are_rejected() {
        assert_eq!(
            Template::parse("/x/{nope}", allowed()),
            Err(TemplateError::Unknown("nope".into()))
        );
        assert_eq!(
            Template::parse("/x/{tenant.company_id}", allowed()),
            Err(TemplateError::Unknown("tenant.company_id".into()))
        );
        assert_eq!(
            Template::parse("/x/{id:float}", allowed()),
            Err(TemplateError::BadCast("float".into()))
        );
        assert!(matches!(
            Template::parse("/x/{id", allowed()),
            Err(TemplateError::Unclosed(_))
        ));
    }

    #[test]
    fn body_values_keep_their_type() {
        let body = BodyTemplate::parse(
            &serde_json::json!({"user_id": "{member.value:int}", "note": "m-{member.value}"}),
            allowed(),
        )
        .unwrap();
        let vars = Vars {
            member: Some("17"),
            ..Vars::default()
        };
        assert_eq!(
            body.render(&vars).unwrap(),
            serde_json::json!({"user_id": 17, "note": "m-17"})
        );
        let vars = Vars {
            member: Some("x"),
            ..Vars::default()
        };
        assert_eq!(
            body.render(&vars),
            Err(RenderError::NotInteger("member.value".into()))
        );
    }
}
