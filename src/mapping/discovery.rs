//! The discovery documents (RFC 7643 §5–7), generated from the compiled mapping: they
//! advertise exactly the attributes and operations the loaded mapping supports.

use serde_json::{json, Map, Value};

use super::scim_doc::selector_terms;
use super::{Mapping, Mutability, Resource, WriteVia};
use crate::scim::schema::AttrType;

/// Facts about the running gateway that discovery reports besides the mapping.
#[derive(Debug, Clone, Copy)]
pub struct Capabilities {
    /// Largest page served.
    pub max_results: usize,
}

fn meta(resource_type: &str, location: String) -> Value {
    json!({ "resourceType": resource_type, "location": location })
}

/// `/ServiceProviderConfig`.
pub fn service_provider_config(mapping: &Mapping, caps: Capabilities, base_url: &str) -> Value {
    let patch = mapping.resources.iter().any(|r| {
        r.ops.get.is_some()
            && (r.ops.update.is_some() || r.members.is_some() || !r.actions.is_empty())
    });
    let filter = mapping.resources.iter().any(|r| r.ops.list.is_some());
    let etag = mapping.resources.iter().any(|r| r.version.is_some());
    // Sorting is the upstream's: supported where a mapping says how to ask for it.
    let sort = mapping.resources.iter().any(|r| r.sort.is_some());
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "patch": { "supported": patch },
        "bulk": { "supported": false, "maxOperations": 0, "maxPayloadSize": 0 },
        "filter": { "supported": filter, "maxResults": caps.max_results },
        "changePassword": { "supported": false },
        "sort": { "supported": sort },
        "etag": { "supported": etag },
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "Authentication with a bearer token (the SCIM key)",
            "primary": true
        }],
        "meta": meta("ServiceProviderConfig", format!("{base_url}/ServiceProviderConfig")),
    })
}

/// One `/ResourceTypes` entry.
pub fn resource_type(r: &Resource, base_url: &str) -> Value {
    let extensions: Vec<Value> = r
        .extensions
        .iter()
        .map(|x| json!({ "schema": x, "required": false }))
        .collect();
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
        "id": r.name,
        "name": r.name,
        "endpoint": format!("/{}", r.endpoint),
        "description": r.description,
        "schema": r.schema,
        "schemaExtensions": extensions,
        "meta": meta("ResourceType", format!("{base_url}/ResourceTypes/{}", r.name)),
    })
}

/// Every schema URN the mapping serves, with the resources that use it.
pub fn schema_ids(mapping: &Mapping) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for r in &mapping.resources {
        for s in std::iter::once(&r.schema).chain(&r.extensions) {
            if !ids.iter().any(|i| i.eq_ignore_ascii_case(s)) {
                ids.push(s.clone());
            }
        }
    }
    ids
}

struct AttrDoc {
    name: String,
    ty: AttrType,
    multi: bool,
    required: bool,
    case_exact: bool,
    mutability: Mutability,
    returned: &'static str,
    uniqueness: &'static str,
    canonical: Vec<Value>,
    /// `referenceTypes` of a reference (resource type names; `external` when empty).
    reference_types: Vec<Value>,
    subs: Vec<AttrDoc>,
}

impl AttrDoc {
    fn new(name: &str, ty: AttrType) -> AttrDoc {
        AttrDoc {
            name: name.to_owned(),
            ty,
            multi: false,
            required: false,
            case_exact: false,
            mutability: Mutability::ReadWrite,
            returned: "default",
            uniqueness: "none",
            canonical: Vec::new(),
            reference_types: Vec::new(),
            subs: Vec::new(),
        }
    }

    fn sub(&mut self, name: &str, ty: AttrType) -> &mut AttrDoc {
        let i = match self
            .subs
            .iter()
            .position(|s| s.name.eq_ignore_ascii_case(name))
        {
            Some(i) => i,
            None => {
                self.subs.push(AttrDoc::new(name, ty));
                self.subs.len() - 1
            }
        };
        &mut self.subs[i]
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "name": self.name,
            "type": self.ty.as_str(),
            "multiValued": self.multi,
            "description": "",
            "required": self.required,
            "caseExact": self.case_exact,
            "mutability": self.mutability.as_str(),
            "returned": self.returned,
            "uniqueness": self.uniqueness,
        });
        if let Value::Object(map) = &mut v {
            if self.ty == AttrType::Reference {
                let types = if self.reference_types.is_empty() {
                    vec![json!("external")]
                } else {
                    self.reference_types.clone()
                };
                map.insert("referenceTypes".into(), Value::Array(types));
            }
            if !self.canonical.is_empty() {
                map.insert(
                    "canonicalValues".into(),
                    Value::Array(self.canonical.clone()),
                );
            }
            if !self.subs.is_empty() {
                map.insert(
                    "subAttributes".into(),
                    Value::Array(self.subs.iter().map(AttrDoc::to_json).collect()),
                );
            }
        }
        v
    }
}

fn top<'a>(list: &'a mut Vec<AttrDoc>, name: &str, ty: AttrType) -> &'a mut AttrDoc {
    let i = match list.iter().position(|a| a.name.eq_ignore_ascii_case(name)) {
        Some(i) => i,
        None => {
            list.push(AttrDoc::new(name, ty));
            list.len() - 1
        }
    };
    &mut list[i]
}

fn value_type(v: &Value) -> AttrType {
    match v {
        Value::Bool(_) => AttrType::Boolean,
        Value::Number(n) if n.is_i64() || n.is_u64() => AttrType::Integer,
        Value::Number(_) => AttrType::Decimal,
        _ => AttrType::String,
    }
}

/// A reference's `$ref` (RFC 7643 §8.7.1 makes `manager.$ref` readWrite): rendered on
/// read and accepted on write with the `value` it goes with.
fn advertise_reference(parent: &mut AttrDoc, a: &super::Attribute, mutability: Mutability) {
    if let Some(r) = &a.reference {
        let d = parent.sub("$ref", AttrType::Reference);
        d.mutability = mutability;
        d.returned = if mutability == Mutability::WriteOnly {
            "never"
        } else {
            "default"
        };
        d.reference_types = vec![json!(r.resource)];
    }
}

/// The attributes of `schema` across the resources that use it.
fn attributes_of(mapping: &Mapping, schema: &str) -> Vec<AttrDoc> {
    let mut out: Vec<AttrDoc> = Vec::new();
    for r in &mapping.resources {
        let core = r.schema.eq_ignore_ascii_case(schema);
        for a in &r.attributes {
            let in_schema = match &a.scim.attr.urn {
                None => core,
                Some(urn) => urn.eq_ignore_ascii_case(schema),
            };
            if !in_schema {
                continue;
            }
            let writable = a.write.is_some() || a.via == WriteVia::Actions;
            let mutability = match a.mutability {
                Mutability::ReadWrite if !writable => Mutability::ReadOnly,
                m => m,
            };
            let returned = if mutability == Mutability::WriteOnly {
                "never"
            } else {
                "default"
            };
            let canonical: Vec<Value> = a
                .enum_map
                .as_ref()
                .map(|m| {
                    m.pairs
                        .iter()
                        .map(|(s, _)| s.clone())
                        .filter(|v| v.is_string())
                        .collect()
                })
                .unwrap_or_default();
            let leaf_name = a.scim.sub.as_deref().or(a.scim.attr.sub.as_deref());
            let fill = |d: &mut AttrDoc| {
                d.ty = a.def.ty;
                d.required = a.required;
                d.case_exact = a.case_exact;
                d.mutability = mutability;
                d.returned = returned;
                d.canonical = canonical.clone();
                if a.key.eq_ignore_ascii_case("userName") {
                    d.uniqueness = "server";
                }
            };
            match (&a.scim.filter, leaf_name) {
                (None, None) => fill(top(&mut out, &a.scim.attr.name, a.def.ty)),
                (None, Some(sub)) => {
                    let parent = top(&mut out, &a.scim.attr.name, AttrType::Complex);
                    fill(parent.sub(sub, a.def.ty));
                    advertise_reference(parent, a, mutability);
                }
                (Some(filter), leaf) => {
                    let parent = top(&mut out, &a.scim.attr.name, AttrType::Complex);
                    parent.multi = true;
                    fill(parent.sub(leaf.unwrap_or("value"), a.def.ty));
                    advertise_reference(parent, a, mutability);
                    for (k, v) in selector_terms(filter).unwrap_or_default() {
                        let d = parent.sub(&k, value_type(&v));
                        // A boolean selector (`primary eq true`) is not a value a client
                        // chooses: the mapping keeps exactly that one.
                        d.mutability = if v.is_boolean() {
                            Mutability::ReadOnly
                        } else {
                            mutability
                        };
                        if v.is_string() && !d.canonical.contains(&v) {
                            d.canonical.push(v);
                        }
                    }
                    for (k, v) in &a.extra {
                        let d = parent.sub(k, value_type(v));
                        d.mutability = Mutability::ReadOnly;
                    }
                }
            }
        }
        // `externalId` is common to every resource (RFC 7643 §3.1). Unmapped, it is accepted
        // and dropped, which is what readOnly means to a client.
        if core
            && !r.attributes.iter().any(|a| {
                a.scim.attr.urn.is_none() && a.scim.attr.name.eq_ignore_ascii_case("externalId")
            })
        {
            let ext = top(&mut out, "externalId", AttrType::String);
            ext.case_exact = true;
            ext.mutability = Mutability::ReadOnly;
        }
        if core {
            if let Some(m) = &r.members {
                let members = top(&mut out, "members", AttrType::Complex);
                members.multi = true;
                let writable = m.add.is_some() || m.replace.is_some();
                members.mutability = if writable {
                    Mutability::ReadWrite
                } else {
                    Mutability::ReadOnly
                };
                let v = members.sub("value", AttrType::String);
                v.case_exact = true;
                v.mutability = Mutability::Immutable;
                members.sub("display", AttrType::String).mutability = Mutability::ReadOnly;
                let reference = members.sub("$ref", AttrType::Reference);
                reference.mutability = Mutability::Immutable;
                reference.reference_types = vec![json!(m.member_type)];
                let t = members.sub("type", AttrType::String);
                t.mutability = Mutability::Immutable;
                t.canonical = vec![json!(m.member_type)];
            }
        }
    }
    out
}

/// One `/Schemas` entry, or `None` when the mapping does not serve `id`.
pub fn schema(mapping: &Mapping, id: &str, base_url: &str) -> Option<Value> {
    let id = schema_ids(mapping)
        .into_iter()
        .find(|s| s.eq_ignore_ascii_case(id))?;
    let name = id.rsplit(':').next().unwrap_or(&id).to_owned();
    let attributes: Vec<Value> = attributes_of(mapping, &id)
        .iter()
        .map(AttrDoc::to_json)
        .collect();
    let mut doc = Map::new();
    doc.insert(
        "schemas".into(),
        json!(["urn:ietf:params:scim:schemas:core:2.0:Schema"]),
    );
    doc.insert("id".into(), json!(id));
    doc.insert("name".into(), json!(name));
    doc.insert(
        "description".into(),
        json!(format!("{name}, as this gateway's mapping serves it")),
    );
    doc.insert("attributes".into(), Value::Array(attributes));
    doc.insert(
        "meta".into(),
        meta("Schema", format!("{base_url}/Schemas/{id}")),
    );
    Some(Value::Object(doc))
}
