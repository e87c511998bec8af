//! Writing an upstream object straight out as SCIM JSON text.
//!
//! [`Resource::to_scim`] builds the SCIM document as a `Value` tree, which the response
//! then serializes and drops: for a page of 100 users that tree was most of the request's
//! cost. A [`Layout`], derived once per resource when the mapping loads, knows where every
//! mapped attribute lands in the document, so [`Resource::write_scim`] reads the upstream
//! fields and writes the text directly, in the same key order `serde_json` gives the
//! document. The document is the same: `write_scim`'s text parses to exactly what
//! `to_scim` returns (tested below against every shipped mapping).
//!
//! The cost follows the attributes an upstream object has, not the attributes the mapping
//! declares: the fields read through top-level paths (`$.email`, nearly all of them) are
//! found by one pass over the object's own members, and a member of the document is only
//! visited when something in it has a value.
//!
//! Mappings whose attributes land in ways the layout does not model (filters other than
//! `eq` selectors, two selectors on one attribute, a name used both as a value and as a
//! parent) get no layout and are written from `to_scim`'s document, as before.

use std::borrow::Cow;
use std::sync::Arc;

use smallvec::SmallVec;

use serde_json::Value;

use super::engine::{coerce_read, ReadError};
use super::fields::{FieldSet, Fields, Found, UpstreamObj};
use super::{Mutability, Resource};
use crate::scim::filter::AttrRef;
use crate::scim::schema::AttrType;

/// Where a resource's attributes land in its SCIM document.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The document's top-level members, in output (byte-wise key) order. Once built,
    /// each key is held as the JSON text that introduces it (`"name":`).
    top: Vec<(String, Node)>,
    /// Per extension URN (as JSON text, escaped once here), the attributes whose presence
    /// makes the document carry it.
    extensions: Vec<(String, Vec<usize>)>,
    /// The core schema URN and the resource type's name as JSON text, and the endpoint
    /// as the escaped inside of a JSON string (constant parts of every document).
    schema_text: String,
    resource_type_text: String,
    endpoint_text: String,
    /// Upstream member name → the attributes read from it: attributes whose path is one
    /// top-level member. Hashed (foldhash), since every member of every object is looked
    /// up here.
    by_member: hashbrown::HashMap<String, Vec<usize>>,
    /// Attributes read through any other path (nested, filtered, wildcards).
    other_paths: Vec<usize>,
    /// The members objects are read through, when all are top-level (list pages are then
    /// read as [`Fields`]).
    fields: Option<Arc<FieldSet>>,
    /// Per attribute, as JSON text made once here: its constant; its enum's SCIM values
    /// (in the order of its pairs); its `extra` properties as `"key":` and value.
    constant_texts: Vec<Option<String>>,
    enum_texts: Vec<Vec<String>>,
    extra_texts: Vec<Vec<(String, String)>>,
}

/// One member of the document.
#[derive(Debug, Clone)]
enum Node {
    Id,
    Schemas,
    Meta,
    /// A value written by the last of these sources that has one.
    Leaf(Vec<Source>),
    /// An object written when any member has a value (a complex attribute, an extension).
    Object(Vec<(String, Node)>),
    /// A multi-valued attribute with one element, picked by `eq` terms
    /// (`emails[type eq "work"]`): the terms, then its sub-attributes in mapping order.
    Element {
        terms: Vec<(String, Value)>,
        subs: Vec<(String, Source)>,
        /// Filled by [`finish`]: each term as `"key":` and its value's JSON text, and each
        /// sub-attribute's `"key":`, in the orders above.
        term_texts: Vec<(String, String)>,
        sub_keys: Vec<String>,
    },
}

/// Where a leaf's value comes from.
#[derive(Debug, Clone)]
enum Source {
    /// Attribute `i` of the resource, read upstream (or its constant).
    Attr(usize),
    /// The `$ref` built from attribute `i`'s referenced id.
    Ref(usize),
}

impl Layout {
    /// The layout of `resource`'s documents, or `None` when an attribute lands in a way
    /// this module does not model (those resources are written from `to_scim`).
    pub fn build(resource: &Resource) -> Option<Layout> {
        let mut top: Vec<(String, Node)> = vec![
            ("id".into(), Node::Id),
            ("schemas".into(), Node::Schemas),
            ("meta".into(), Node::Meta),
        ];
        for (i, a) in resource.attributes.iter().enumerate() {
            if a.mutability == Mutability::WriteOnly {
                continue;
            }
            place(&mut top, &a.scim, Source::Attr(i))?;
            if let Some(r) = &a.reference {
                place(&mut top, &r.path, Source::Ref(i))?;
            }
        }
        finish(&mut top);
        let extensions = resource
            .extensions
            .iter()
            .map(|ext| {
                let attrs = resource.attributes.iter().enumerate();
                let carriers = attrs
                    .filter(|(_, a)| {
                        a.mutability != Mutability::WriteOnly
                            && a.scim.attr.urn.as_deref() == Some(ext.as_str())
                    })
                    .map(|(i, _)| i)
                    .collect();
                (json_text(ext), carriers)
            })
            .collect();
        let mut by_member: hashbrown::HashMap<String, Vec<usize>> = hashbrown::HashMap::new();
        let mut other_paths = Vec::new();
        for (i, a) in resource.attributes.iter().enumerate() {
            let Some(path) = &a.read else { continue };
            match path.top_level_member() {
                Some(member) => by_member.entry(member.to_owned()).or_default().push(i),
                None => other_paths.push(i),
            }
        }
        Some(Layout {
            top,
            extensions,
            by_member,
            other_paths,
            fields: FieldSet::build(resource).map(Arc::new),
            constant_texts: resource
                .attributes
                .iter()
                .map(|a| a.constant.as_ref().map(value_text))
                .collect(),
            enum_texts: resource
                .attributes
                .iter()
                .map(|a| {
                    a.enum_map.as_ref().map_or_else(Vec::new, |map| {
                        map.pairs.iter().map(|(scim, _)| value_text(scim)).collect()
                    })
                })
                .collect(),
            extra_texts: resource
                .attributes
                .iter()
                .map(|a| {
                    a.extra
                        .iter()
                        .map(|(k, v)| (key_text(k), value_text(v)))
                        .collect()
                })
                .collect(),
            schema_text: json_text(&resource.schema),
            resource_type_text: json_text(&resource.name),
            endpoint_text: {
                let mut text = Vec::new();
                write_str_contents(&mut text, &resource.endpoint);
                String::from_utf8(text).unwrap_or_default()
            },
        })
    }

    /// The members the resource's objects are read through, when all are top-level.
    pub fn fields(&self) -> Option<&Arc<FieldSet>> {
        self.fields.as_ref()
    }

    /// Each attribute's upstream value in `obj` (`None`: absent or null), by attribute
    /// index: one pass over `obj`'s members, plus a read per attribute with another path.
    pub(crate) fn read_all<'v>(
        &self,
        resource: &Resource,
        obj: &'v Value,
    ) -> Vec<Option<&'v Value>> {
        let mut found = vec![None; resource.attributes.len()];
        if let Value::Object(members) = obj {
            for (name, value) in members {
                if value.is_null() {
                    continue;
                }
                for &a in self.by_member.get(name.as_str()).into_iter().flatten() {
                    found[a] = Some(value);
                }
            }
        }
        for &a in &self.other_paths {
            found[a] = resource.attributes[a]
                .read
                .as_ref()
                .and_then(|p| p.read(obj));
        }
        found
    }
}

/// Adds `source` at `path`; `None` when the path does not fit the layout model.
fn place(top: &mut Vec<(String, Node)>, path: &AttrRef, source: Source) -> Option<()> {
    let mut level = top;
    if let Some(urn) = &path.attr.urn {
        level = object_at(level, urn)?;
    }
    let name = &path.attr.name;
    if ["id", "schemas", "meta"]
        .iter()
        .any(|k| k.eq_ignore_ascii_case(name))
        && path.attr.urn.is_none()
    {
        return None;
    }
    match (&path.filter, &path.attr.sub, &path.sub) {
        (None, None, _) => leaf_at(level, name, source),
        (None, Some(sub), _) => leaf_at(object_at(level, name)?, sub, source),
        (Some(filter), None, Some(sub)) => {
            let terms = crate::mapping::scim_doc::selector_terms(filter)?;
            if terms.iter().any(|(k, _)| k.eq_ignore_ascii_case(sub)) {
                return None;
            }
            match find(level, name) {
                None => level.push((
                    name.clone(),
                    Node::Element {
                        terms,
                        subs: vec![(sub.clone(), source)],
                        term_texts: Vec::new(),
                        sub_keys: Vec::new(),
                    },
                )),
                Some(i) => match &mut level[i].1 {
                    Node::Element { terms: t, subs, .. } if *t == terms => {
                        subs.push((sub.clone(), source));
                    }
                    _ => return None,
                },
            }
            Some(())
        }
        _ => None,
    }
}

fn find(level: &[(String, Node)], key: &str) -> Option<usize> {
    level.iter().position(|(k, _)| k.eq_ignore_ascii_case(key))
}

/// The object member `key` of `level` (created when absent; first spelling wins, as
/// `scim_doc::set` does).
fn object_at<'a>(
    level: &'a mut Vec<(String, Node)>,
    key: &str,
) -> Option<&'a mut Vec<(String, Node)>> {
    let i = match find(level, key) {
        Some(i) => i,
        None => {
            level.push((key.to_owned(), Node::Object(Vec::new())));
            level.len() - 1
        }
    };
    match &mut level[i].1 {
        Node::Object(members) => Some(members),
        _ => None,
    }
}

fn leaf_at(level: &mut Vec<(String, Node)>, key: &str, source: Source) -> Option<()> {
    match find(level, key) {
        None => level.push((key.to_owned(), Node::Leaf(vec![source]))),
        Some(i) => match &mut level[i].1 {
            Node::Leaf(sources) => sources.push(source),
            _ => return None,
        },
    }
    Some(())
}

/// Puts members in `serde_json`'s order (its maps are BTreeMaps: byte-wise key order) and
/// turns each key into the JSON text that introduces it, escaped once here.
fn finish(level: &mut [(String, Node)]) {
    level.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, node) in level.iter_mut() {
        let mut text = Vec::new();
        write_str(&mut text, key);
        text.push(b':');
        *key = String::from_utf8(text).unwrap_or_default();
        match node {
            Node::Object(members) => finish(members),
            Node::Element {
                terms,
                subs,
                term_texts,
                sub_keys,
            } => {
                *term_texts = terms
                    .iter()
                    .map(|(k, v)| (key_text(k), value_text(v)))
                    .collect();
                *sub_keys = subs.iter().map(|(k, _)| key_text(k)).collect();
            }
            _ => {}
        }
    }
}

/// What one render reads from the upstream object.
struct Render<'a> {
    resource: &'a Resource,
    layout: &'a Layout,
    /// Each attribute's upstream value, by index (see [`Layout::read_all`]).
    found: Vec<Option<Found<'a>>>,
    obj: UpstreamObj<'a>,
    base_url: &'a str,
    id: String,
}

impl Resource {
    /// Appends the SCIM document of `obj` to `out` as JSON text: the text of
    /// [`Resource::to_scim`]'s document, written without building it where the resource
    /// has a [`Layout`].
    pub fn write_scim(
        &self,
        obj: &Value,
        base_url: &str,
        out: &mut Vec<u8>,
    ) -> Result<(), ReadError> {
        let Some(layout) = &self.layout else {
            write_value(out, &self.to_scim(obj, base_url)?);
            return Ok(());
        };
        let found = layout.read_all(self, obj);
        let found = found.into_iter().map(|v| v.map(Found::Value)).collect();
        self.render(
            layout,
            UpstreamObj::Whole(obj),
            found,
            base_url,
            out,
            || Cow::Borrowed(obj),
        )
    }

    /// [`Resource::write_scim`] for an object read as `fields` (of this resource's
    /// [`Layout::fields`]).
    pub fn write_scim_fields(
        &self,
        fields: &Fields,
        base_url: &str,
        out: &mut Vec<u8>,
    ) -> Result<(), ReadError> {
        let Some(layout) = &self.layout else {
            return self.write_scim(&fields.to_object(), base_url, out);
        };
        let found = fields.attributes();
        self.render(
            layout,
            UpstreamObj::Fields(fields),
            found,
            base_url,
            out,
            || Cow::Owned(fields.to_object()),
        )
    }

    /// Writes the document of `obj`, whose attribute values are `found`; `whole` gives
    /// the object for `to_scim` when the render fails.
    fn render<'a>(
        &'a self,
        layout: &'a Layout,
        obj: UpstreamObj<'a>,
        found: Vec<Option<Found<'a>>>,
        base_url: &'a str,
        out: &mut Vec<u8>,
        whole: impl FnOnce() -> Cow<'a, Value>,
    ) -> Result<(), ReadError> {
        let render = Render {
            resource: self,
            layout,
            found,
            obj,
            base_url,
            id: self.read_id(obj)?,
        };
        let start = out.len();
        if render.object(&layout.top, out, true).is_err() {
            // The error `to_scim` reports (the first attribute in mapping order), not the
            // first this walk, in key order, happened upon.
            out.truncate(start);
            let doc = self.to_scim(&whole(), base_url)?;
            write_value(out, &doc);
        }
        Ok(())
    }
}

impl<'a> Render<'a> {
    /// Writes `members` as an object; `false` (and nothing written) when none has a value
    /// and the object is not the document itself.
    fn object(
        &self,
        members: &'a [(String, Node)],
        out: &mut Vec<u8>,
        always: bool,
    ) -> Result<bool, ReadError> {
        let mark = out.len();
        out.push(b'{');
        let mut any = false;
        for (key, node) in members {
            if let Node::Leaf(sources) = node {
                if !sources.iter().any(|s| self.may_have_value(s)) {
                    continue;
                }
            }
            let before = out.len();
            if any {
                out.push(b',');
            }
            out.extend_from_slice(key.as_bytes());
            if self.node(node, out)? {
                any = true;
            } else {
                out.truncate(before);
            }
        }
        if !any && !always {
            out.truncate(mark);
            return Ok(false);
        }
        out.push(b'}');
        Ok(true)
    }

    fn node(&self, node: &'a Node, out: &mut Vec<u8>) -> Result<bool, ReadError> {
        match node {
            Node::Id => write_str(out, &self.id),
            Node::Schemas => self.schemas(out),
            Node::Meta => self.meta(out),
            Node::Leaf(sources) => {
                let mut value = None;
                for s in sources.iter().rev() {
                    if let Some(v) = self.source(s)? {
                        value = Some(v);
                        break;
                    }
                }
                let Some(v) = value else {
                    return Ok(false);
                };
                v.write(out);
            }
            Node::Object(members) => return self.object(members, out, false),
            Node::Element {
                subs,
                term_texts,
                sub_keys,
                terms,
            } => return self.element(terms, term_texts, subs, sub_keys, out),
        }
        Ok(true)
    }

    /// False when the source certainly gives nothing (its upstream field is absent), so
    /// an absent attribute costs a look at one slot.
    fn may_have_value(&self, source: &Source) -> bool {
        let (Source::Attr(i) | Source::Ref(i)) = source;
        let a = &self.resource.attributes[*i];
        match source {
            Source::Attr(_) => a.constant.is_some() || self.found[*i].is_some(),
            Source::Ref(_) => a.constant.is_none() && self.found[*i].is_some(),
        }
    }

    /// The value a source gives, as `to_scim` would set it.
    fn source(&self, source: &Source) -> Result<Option<Out<'a>>, ReadError> {
        let (i, is_ref) = match source {
            Source::Attr(i) => (*i, false),
            Source::Ref(i) => (*i, true),
        };
        let a = &self.resource.attributes[i];
        // `to_scim` sets a constant as it is and builds no `$ref` from it.
        if a.constant.is_some() {
            let text = self.layout.constant_texts[i].as_deref().unwrap_or("null");
            return Ok((!is_ref).then_some(Out::Json(text)));
        }
        let Some(found) = self.found[i] else {
            return Ok(None);
        };
        if let (Found::Plain(text), false) = (found, is_ref) {
            if let Some(value) = plain_scim_value(a, &self.layout.enum_texts[i], text) {
                return Ok(Some(value));
            }
        }
        let value = match found.to_value() {
            Cow::Borrowed(raw) => self.resource.scim_value(a, raw)?,
            Cow::Owned(raw) => Cow::Owned(self.resource.scim_value(a, &raw)?.into_owned()),
        };
        if !is_ref {
            return Ok(Some(Out::Value(value)));
        }
        Ok(a.reference
            .as_ref()
            .and_then(|r| r.url(&value, self.base_url))
            .map(|url| Out::Value(Cow::Owned(url))))
    }

    /// One element `[{terms…, subs…, extras…}]`, when any sub-attribute has a value. The
    /// element is built the way `scim_doc::set` builds it: terms first, each present
    /// sub-attribute in mapping order (a later one overwrites), then each of that
    /// attribute's `extra` properties where the element has none of that name.
    fn element(
        &self,
        terms: &'a [(String, Value)],
        term_texts: &'a [(String, String)],
        subs: &'a [(String, Source)],
        sub_keys: &'a [String],
        out: &mut Vec<u8>,
    ) -> Result<bool, ReadError> {
        // Elements have a few members: no allocation for them. Each member: its name (to
        // match and order by), the JSON text that introduces it, its value.
        let mut fields: SmallVec<[(&str, &str, Out<'a>); 8]> = SmallVec::new();
        for ((sub, source), sub_key) in subs.iter().zip(sub_keys) {
            let Some(v) = self.source(source)? else {
                continue;
            };
            if fields.is_empty() {
                fields.extend(
                    terms
                        .iter()
                        .zip(term_texts)
                        .map(|((k, _), (key, t))| (k.as_str(), key.as_str(), Out::Json(t))),
                );
            }
            match fields
                .iter_mut()
                .find(|(k, _, _)| k.eq_ignore_ascii_case(sub))
            {
                Some(slot) => slot.2 = v,
                None => fields.push((sub, sub_key, v)),
            }
            let (Source::Attr(i) | Source::Ref(i)) = source;
            let extras = self.resource.attributes[*i].extra.iter();
            for ((k, _), (key, extra)) in extras.zip(&self.layout.extra_texts[*i]) {
                if !fields.iter().any(|(f, _, _)| f.eq_ignore_ascii_case(k)) {
                    fields.push((k, key, Out::Json(extra)));
                }
            }
        }
        if fields.is_empty() {
            return Ok(false);
        }
        fields.sort_by(|a, b| a.0.cmp(b.0));
        out.extend_from_slice(b"[{");
        for (n, (_, key, v)) in fields.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            out.extend_from_slice(key.as_bytes());
            v.write(out);
        }
        out.extend_from_slice(b"}]");
        Ok(true)
    }

    /// The core schema, then each extension the document has a member for: one of the
    /// attributes under exactly that URN has a value (a value the enum does not know
    /// fails the whole render, so presence is enough here).
    fn schemas(&self, out: &mut Vec<u8>) {
        out.push(b'[');
        out.extend_from_slice(self.layout.schema_text.as_bytes());
        for (ext, carriers) in &self.layout.extensions {
            let present = carriers.iter().any(|&i| {
                self.resource.attributes[i].constant.is_some() || self.found[i].is_some()
            });
            if present {
                out.push(b',');
                out.extend_from_slice(ext.as_bytes());
            }
        }
        out.push(b']');
    }

    fn meta(&self, out: &mut Vec<u8>) {
        let r = self.resource;
        let read =
            |p: &Option<super::jsonpath::ReadPath>| p.as_ref().and_then(|p| self.obj.read(p));
        // A timestamp's text as it is, when it is a string that needs no escape.
        let timestamp = |found: Found<'a>| match found {
            Found::Plain(text) => Some(Out::Plain(text)),
            other => other
                .scalar_text()
                .map(|t| Out::Value(Cow::Owned(Value::String(t.into_owned())))),
        };
        out.push(b'{');
        if let Some(v) = read(&r.created).and_then(timestamp) {
            out.extend_from_slice(br#""created":"#);
            v.write(out);
            out.push(b',');
        }
        if let Some(v) = read(&r.last_modified).and_then(timestamp) {
            out.extend_from_slice(br#""lastModified":"#);
            v.write(out);
            out.push(b',');
        }
        // `base_url/endpoint/id`, escaped piece by piece (JSON escapes each character on
        // its own, so the pieces' escapes are the whole's).
        out.extend_from_slice(br#""location":""#);
        write_str_contents(out, self.base_url);
        out.push(b'/');
        out.extend_from_slice(self.layout.endpoint_text.as_bytes());
        out.push(b'/');
        write_str_contents(out, &self.id);
        out.extend_from_slice(br#"","resourceType":"#);
        out.extend_from_slice(self.layout.resource_type_text.as_bytes());
        if let Some(v) = read(&r.version).and_then(Found::scalar_text) {
            out.push(b',');
            out.extend_from_slice(br#""version":"#);
            write_str(out, &format!("W/\"{v}\""));
        }
        out.push(b'}');
    }
}

/// `s` as a JSON string, as `serde_json` writes it.
fn write_str(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    write_str_contents(out, s);
    out.push(b'"');
}

/// The inside of `s`'s JSON string. Most strings need no escape (JSON escapes only `"`,
/// `\` and control characters): those are checked eight bytes at a time and copied
/// whole rather than escaped byte by byte.
fn write_str_contents(out: &mut Vec<u8>, s: &str) {
    if needs_escape(s.as_bytes()) {
        // Writing to a Vec cannot fail; the quotes serde_json adds are dropped.
        let quoted = serde_json::to_string(s).unwrap_or_default();
        let inside = quoted
            .get(1..quoted.len().saturating_sub(1))
            .unwrap_or_default();
        out.extend_from_slice(inside.as_bytes());
    } else {
        out.extend_from_slice(s.as_bytes());
    }
}

/// `s` as JSON text (a string with its quotes).
fn json_text(s: &str) -> String {
    let mut text = Vec::new();
    write_str(&mut text, s);
    String::from_utf8(text).unwrap_or_default()
}

/// `s` as the JSON text that introduces a member: `"s":`.
fn key_text(s: &str) -> String {
    let mut text = json_text(s);
    text.push(':');
    text
}

/// `v` as JSON text, as [`write_value`] writes it.
fn value_text(v: &Value) -> String {
    let mut text = Vec::new();
    write_value(&mut text, v);
    String::from_utf8(text).unwrap_or_default()
}

/// A value to write.
#[derive(Debug)]
enum Out<'a> {
    /// A string whose JSON text needs no escape.
    Plain(&'a str),
    /// JSON text made at load (a constant, an enum's value), written as it is.
    Json(&'a str),
    Value(Cow<'a, Value>),
}

impl Out<'_> {
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Out::Plain(s) => {
                out.reserve(s.len() + 2);
                out.push(b'"');
                out.extend_from_slice(s.as_bytes());
                out.push(b'"');
            }
            Out::Json(text) => out.extend_from_slice(text.as_bytes()),
            Out::Value(v) => write_value(out, v),
        }
    }
}

/// [`Resource::scim_value`] of a plain upstream string, without making it a `Value`
/// where the answer is the string itself or an enum's constant; `None` otherwise (a
/// boolean attribute, which coerces `"true"`; a value the enum lacks, an error).
fn plain_scim_value<'v>(
    a: &'v super::Attribute,
    enum_texts: &'v [String],
    text: &'v str,
) -> Option<Out<'v>> {
    match &a.enum_map {
        Some(map) => map
            .pairs
            .iter()
            .position(|(_, upstream)| upstream.as_str() == Some(text))
            .and_then(|i| enum_texts.get(i))
            .map(|scim| Out::Json(scim)),
        None if a.def.ty != AttrType::Boolean => Some(Out::Plain(text)),
        None => None,
    }
}

/// Whether `bytes` holds a byte JSON escapes: below 0x20, `"` or `\`. Eight bytes per
/// step: a word has a byte below `n` (n ≤ 128) when `(w - n·0x01…) & !w & 0x80…` is not
/// zero, and a byte equal to `c` when `w ^ c·0x01…` has a byte below 1.
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES * 0x80;
    let below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w & HIGH != 0;
    let has = |w: u64, c: u8| below(w ^ (ONES * u64::from(c)), 1);
    let special = |chunk: &[u8]| {
        // Short input is padded with spaces, which need no escape.
        let mut word = [b' '; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        below(w, 0x20) || has(w, b'"') || has(w, b'\\')
    };
    let mut words = bytes.chunks_exact(8);
    if words.any(special) {
        return true;
    }
    match bytes.len() {
        n if n % 8 == 0 => false,
        // The tail as one word, overlapping the last whole one when there is one.
        n if n > 8 => special(&bytes[n - 8..]),
        _ => special(bytes),
    }
}

fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::String(s) => write_str(out, s),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Null => out.extend_from_slice(b"null"),
        _ => {
            let _ = serde_json::to_writer(&mut *out, v);
        }
    }
}

impl Resource {
    /// The SCIM value of an attribute's (non-null) upstream value: its enum pair, or the
    /// value in the attribute's SCIM type.
    pub(crate) fn scim_value<'v>(
        &self,
        a: &'v super::Attribute,
        raw: &'v Value,
    ) -> Result<Cow<'v, Value>, ReadError> {
        match &a.enum_map {
            Some(map) => map
                .pairs
                .iter()
                .find(|(_, u)| u == raw)
                .map(|(s, _)| Cow::Borrowed(s))
                .ok_or_else(|| ReadError::NotInEnum {
                    attribute: a.key.clone(),
                    value: raw.to_string(),
                }),
            None => Ok(coerce_read(a.def.ty, raw)),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::mapping::compile::load_dir;
    use crate::mapping::fields::{read_page, PagePaths};

    /// Upstream objects with every field present, absent, null, or of an unexpected type.
    fn variants(full: &Value) -> Vec<Value> {
        let mut out = vec![full.clone()];
        let Some(obj) = full.as_object() else {
            return out;
        };
        for key in obj.keys() {
            let replacements = [
                None,
                Some(Value::Null),
                Some(json!(7)),
                Some(json!("x\"y")),
                Some(json!("True")),
                Some(json!("admin")),
            ];
            for replacement in replacements {
                let mut v = full.clone();
                match &replacement {
                    None => {
                        v.as_object_mut().map(|o| o.remove(key));
                    }
                    Some(r) => v[key] = r.clone(),
                }
                out.push(v);
            }
        }
        out
    }

    /// `write_scim`'s text is `to_scim`'s document, for every resource of every shipped
    /// mapping that has a layout, over many upstream shapes (errors included).
    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        let mut cases: Vec<String> = [
            "",
            "plain",
            "quo\"te",
            "back\\slash",
            "new\nline",
            "tab\t",
            "\u{1}",
            "\u{1f}",
            "\u{7f}",
            "é and 😀",
            "</script>",
            "ends with \\",
            " !#[]~\u{80}\u{ff}ÿ",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        // Each byte that needs an escape, and its neighbours, at every offset of a word.
        for special in [
            '\u{0}', '\u{1f}', '"', '\\', ' ', '!', '#', '[', ']', '\u{7f}',
        ] {
            for at in 0..17 {
                let mut s = "x".repeat(at);
                s.push(special);
                s.push_str("abcdefghij");
                cases.push(s);
            }
        }
        for s in &cases {
            let s = s.as_str();
            let mut out = Vec::new();
            super::write_str(&mut out, s);
            let expected = serde_json::to_string(s).expect("serialize");
            assert_eq!(String::from_utf8(out).expect("utf-8"), expected, "{s:?}");
        }
    }

    /// Compares, for each variant of each sample, the text `write_scim` writes with
    /// `to_scim`'s document, and with what `write_scim_fields` writes for the object read
    /// from a page's text. Returns how many documents and field reads compared equal.
    fn compare_with_to_scim(
        resource: &crate::mapping::Resource,
        samples: &[Value],
    ) -> (usize, usize) {
        let (mut checked, mut checked_fields) = (0, 0);
        let name = &resource.name;
        for sample in samples {
            for obj in variants(sample) {
                let expected = resource.to_scim(&obj, "https://gw/scim/v2");
                let mut out = Vec::new();
                let written = resource.write_scim(&obj, "https://gw/scim/v2", &mut out);
                // The object read from a page's text as fields writes the same.
                let set = resource.layout.as_ref().and_then(|l| l.fields());
                let set = set.expect("the resource reads singular paths");
                let page: std::sync::Arc<str> = format!(r#"{{"data":[{obj}],"n":2}}"#).into();
                let paths = PagePaths {
                    items: &["data".to_owned()],
                    total: None,
                    cursor: None,
                };
                let read = read_page(&page, set, paths).expect("readable page");
                let fields = &read.items.expect("items")[0];
                let mut from_fields = Vec::new();
                let written_fields =
                    resource.write_scim_fields(fields, "https://gw/scim/v2", &mut from_fields);
                match (&written, written_fields) {
                    (Ok(()), Ok(())) => {
                        assert_eq!(out, from_fields);
                        checked_fields += 1;
                    }
                    (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                    (a, b) => panic!("{name}: {a:?} vs {b:?} for {obj}"),
                }
                match (expected, written) {
                    (Ok(doc), Ok(())) => {
                        let text = String::from_utf8(out).expect("utf-8");
                        assert_eq!(text, serde_json::to_string(&doc).expect("json"));
                        checked += 1;
                    }
                    (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                    (a, b) => panic!("{name}: {a:?} vs {b:?} for {obj}"),
                }
            }
        }
        (checked, checked_fields)
    }

    #[test]
    fn written_text_is_the_to_scim_document() {
        let samples = [
            json!({"id": 1042, "email": "ada@example.com", "first_name": "Ada",
                   "last_name": "Lovelace", "display_name": "Ada Lovelace", "title": "Eng",
                   "department": "R&D", "phone": "+1 555", "role": "admin",
                   "status": "active", "external_id": "00u1", "manager_id": 7,
                   "created_at": "2026-01-02T03:04:05Z", "updated_at": "2026-01-03T03:04:05Z",
                   "name": "Security", "description": "Blue", "member_count": 3}),
            json!({"id": "p-1", "uuid": "4a7c3d5e-0000-4000-8000-000000000001",
                   "login": "grace", "mail": "g@x.io", "given": "Grace", "family": "Hopper",
                   "enabled": false, "version": 3, "groups": ["a"], "emails": [{"value": "q"}]}),
        ];
        let (mut checked, mut checked_fields) = (0, 0);
        for dir in [
            "mappings/blacksmith",
            "mappings/examples/acme-directory",
            "mappings/examples/beacon-hr",
        ] {
            let mapping = load_dir(std::path::Path::new(dir)).expect(dir);
            for resource in &mapping.resources {
                assert!(
                    resource.layout.is_some(),
                    "{dir}: {} has no layout",
                    resource.name
                );
                let (c, f) = compare_with_to_scim(resource, &samples);
                checked += c;
                checked_fields += f;
            }
        }
        assert!(checked > 100, "only {checked} documents compared");
        assert!(checked_fields > 100, "only {checked_fields} read as fields");
    }

    /// Constants, enum values, element terms and `extra` properties are written from JSON
    /// text made at load: the same text `to_scim`'s document has (escapes, numbers,
    /// objects and case-insensitive overrides included).
    #[test]
    fn texts_made_at_load_are_the_to_scim_document() {
        let source = crate::mapping::compile::Source {
            name: "m.toml".into(),
            text: r#"
version = 1
[resources.User]
endpoint = "/Users"
schema = "urn:ietf:params:scim:schemas:core:2.0:User"
extensions = ["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]
id = { upstream = "$.uid" }
[resources.User.operations]
get = { method = "GET", path = "/people/{id}" }
[resources.User.attributes]
userName = { upstream = "$.login" }
userType = { constant = "Emp\"loyee\u00e9" }
"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:costCenter" = { constant = "C\u00e9 \\ 1" }
title = { upstream = "$.title", enum = [["Chief \"A\"", "a"], ["B\\b", "b"]] }
active = { upstream = "$.state", enum = [[true, "on"], [false, "off"]] }
'emails[type eq "work"].value' = { upstream = "$.mail", extra = { primary = true, display = "M\u00fcller \"M\"", Type = "ignored" } }
'phoneNumbers[type eq "mobile"].value' = { upstream = "$.phone", extra = { primary = false } }
"#
            .into(),
        };
        let mapping = crate::mapping::compile::load_sources(&[source]).expect("compiles");
        let resource = mapping.resource("Users").expect("Users");
        assert!(resource.layout.is_some(), "the resource has a layout");
        let samples = [
            json!({"uid": "u\"1", "login": "ada", "title": "a", "state": "on",
                               "mail": "a@x.io", "phone": "+1"}),
            json!({"uid": 7, "title": "b", "state": "off", "phone": "\u{1}"}),
        ];
        let (checked, checked_fields) = compare_with_to_scim(resource, &samples);
        assert!(
            checked > 10 && checked_fields > 10,
            "{checked} / {checked_fields}"
        );
    }
}
