//! Upstream list pages read straight from their JSON text into the members the mapping
//! reads, without a `Value` tree per object.
//!
//! Parsing a page of 100 users into `serde_json::Value`s was half of a list request's
//! cost: every member name allocated, every object a `BTreeMap`, all of it dropped once
//! the page was written. Where every path a resource reads its objects through is one
//! top-level member (`$.email`; every shipped mapping), an object is held as just those
//! members' values, in slots fixed when the mapping loads ([`Fields`]). One pass over the
//! page text fills them, skipping everything else, and picks out the total and the next
//! cursor on the way. A string member without escapes is kept as its place in the page
//! text: that text is exactly what serde_json would write for it, so it is copied to the
//! SCIM document as it is, never allocated or checked again. Objects read this way render to exactly the text whole objects do
//! (tested in `render.rs`). A page this reader does not take (an item that is not an
//! object, a path that is not singular, anything unexpected) is read as `Value`s, as
//! before, so errors are reported as they always were.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::jsonpath::ReadPath;
use super::Resource;

/// The top-level members a resource reads its upstream objects through, when it reads
/// them only through singular paths (`$.email`, `$.name.first`).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldSet {
    /// Top-level member name → its slot in [`Fields`].
    slots: hashbrown::HashMap<String, usize>,
    /// Per attribute (by index), the slot its upstream value is read from and the member
    /// names below it (`$.name.first`: `name`'s slot, then `first`).
    attr_reads: Vec<Option<(usize, Vec<String>)>>,
}

impl FieldSet {
    /// `None` when the id, `meta`, `gone_when` or an attribute is read through a path
    /// that is not singular.
    pub fn build(resource: &Resource) -> Option<FieldSet> {
        let mut slots = hashbrown::HashMap::new();
        let mut slot_of = |path: &ReadPath| -> Option<usize> {
            let member = path.singular()?.first()?;
            let next = slots.len();
            Some(*slots.entry(member.to_owned()).or_insert(next))
        };
        slot_of(&resource.id)?;
        let meta = [
            &resource.created,
            &resource.last_modified,
            &resource.version,
        ];
        for path in meta.into_iter().flatten() {
            slot_of(path)?;
        }
        for (path, _) in &resource.gone_when {
            slot_of(path)?;
        }
        let mut attr_reads = Vec::with_capacity(resource.attributes.len());
        for a in &resource.attributes {
            attr_reads.push(match &a.read {
                Some(path) => Some((slot_of(path)?, path.singular()?[1..].to_vec())),
                None => None,
            });
        }
        Some(FieldSet { slots, attr_reads })
    }
}

/// An upstream object reduced to the members of its resource's [`FieldSet`]: `None`
/// where it has no such member, `Some(Null)` where the member is `null`.
#[derive(Debug, Clone)]
pub struct Fields {
    set: Arc<FieldSet>,
    /// The page's text, which [`Member::Text`]s point into.
    text: Arc<str>,
    values: Vec<Option<Member>>,
}

/// One member's value.
#[derive(Debug, Clone)]
enum Member {
    /// A string without escapes: the range of its contents in the page text.
    Text(Range<usize>),
    Value(Value),
}

/// A non-null value read from an upstream object.
#[derive(Debug, Clone, Copy)]
pub enum Found<'a> {
    Value(&'a Value),
    /// A string whose JSON text needs no escape (it had none in the upstream's text).
    Plain(&'a str),
}

impl<'a> Found<'a> {
    /// The value as a `Value` (a plain string is copied into one).
    pub fn to_value(self) -> Cow<'a, Value> {
        match self {
            Found::Value(v) => Cow::Borrowed(v),
            Found::Plain(s) => Cow::Owned(Value::String(s.to_owned())),
        }
    }

    /// [`super::template::scalar_text`], without copying a string.
    pub fn scalar_text(self) -> Option<Cow<'a, str>> {
        match self {
            Found::Plain(s) => Some(Cow::Borrowed(s)),
            Found::Value(Value::String(s)) => Some(Cow::Borrowed(s)),
            Found::Value(v) => super::template::scalar_text(v).map(Cow::Owned),
        }
    }
}

impl Fields {
    /// Each attribute's non-null upstream value, by attribute index.
    pub(crate) fn attributes(&self) -> Vec<Option<Found<'_>>> {
        self.set
            .attr_reads
            .iter()
            .map(|read| {
                let (slot, below) = read.as_ref()?;
                self.read(*slot, below)
            })
            .collect()
    }

    /// The non-null value at `below` inside slot `slot`'s member.
    fn read(&self, slot: usize, below: &[String]) -> Option<Found<'_>> {
        match self.values[slot].as_ref()? {
            Member::Text(range) if below.is_empty() => {
                self.text.get(range.clone()).map(Found::Plain)
            }
            Member::Text(_) => None,
            Member::Value(top) => below
                .iter()
                .try_fold(top, |v, k| v.get(k))
                .filter(|v| !v.is_null())
                .map(Found::Value),
        }
    }

    /// The object holding just these members: the same, to every path the set was built
    /// from, as the object the fields were read from.
    pub fn to_object(&self) -> Value {
        let mut members = Map::new();
        for (name, &slot) in &self.set.slots {
            let value = match &self.values[slot] {
                None => continue,
                Some(Member::Value(v)) => v.clone(),
                Some(Member::Text(range)) => {
                    Value::String(self.text.get(range.clone()).unwrap_or_default().to_owned())
                }
            };
            members.insert(name.clone(), value);
        }
        Value::Object(members)
    }
}

/// An upstream object, whole or as its [`Fields`].
#[derive(Debug, Clone, Copy)]
pub enum UpstreamObj<'a> {
    Whole(&'a Value),
    Fields(&'a Fields),
}

impl<'a> UpstreamObj<'a> {
    /// What `path` reads ([`ReadPath::read`]). Fields are only read through the paths
    /// their set was built from; any other path finds nothing.
    pub fn read(self, path: &ReadPath) -> Option<Found<'a>> {
        match self {
            UpstreamObj::Whole(obj) => path.read(obj).map(Found::Value),
            UpstreamObj::Fields(fields) => {
                let (first, below) = path.singular()?.split_first()?;
                fields.read(*fields.set.slots.get(first)?, below)
            }
        }
    }
}

/// Where a list page carries what a list reads from its body: member names from the root
/// (the singular paths of the mapping's `items`, `total` and next cursor).
#[derive(Debug, Clone, Copy)]
pub struct PagePaths<'p> {
    pub items: &'p [String],
    pub total: Option<&'p [String]>,
    pub cursor: Option<&'p [String]>,
}

/// What [`read_page`] picks out of a page.
#[derive(Debug, Default)]
pub struct PageFields {
    /// `None` when nothing is at the items path.
    pub items: Option<Vec<Fields>>,
    pub total: Option<Value>,
    pub cursor: Option<Value>,
    /// For [`read_object`].
    object: Option<Fields>,
}

/// Reads a list page's text: the items as [`Fields`], the total and cursor as values.
/// `None` when the page is not one this reader takes (see the module docs); the caller
/// then parses it whole.
pub fn read_page(text: &Arc<str>, set: &Arc<FieldSet>, paths: PagePaths<'_>) -> Option<PageFields> {
    let no_member = |p: Option<&[String]>| p.is_some_and(<[String]>::is_empty);
    if no_member(paths.total) || no_member(paths.cursor) {
        return None;
    }
    let mut out = PageFields::default();
    let mut de = serde_json::Deserializer::from_str(text);
    let page = Page { text, set };
    if paths.items.is_empty() {
        // The body is the list itself: nothing else can be in it.
        if paths.total.is_some() || paths.cursor.is_some() {
            return None;
        }
        out.items = Some(ItemsSeed(page).deserialize(&mut de).ok()?);
    } else {
        let wants = [
            (Some(paths.items), Target::Items),
            (paths.total, Target::Total),
            (paths.cursor, Target::Cursor),
        ];
        let level = Level {
            wants: &wants,
            active: 0b111,
            depth: 0,
            page,
            out: &mut out,
        };
        level.deserialize(&mut de).ok()?;
    }
    de.end().ok()?;
    Some(out)
}

/// Reads a single-object answer's text: the object at `path` (member names from the root;
/// empty: the body itself) as [`Fields`]. `None` when the answer is not one this reader
/// takes, nothing is at `path`, or it is not an object; the caller then parses it whole.
pub fn read_object(text: &Arc<str>, set: &Arc<FieldSet>, path: &[String]) -> Option<Fields> {
    let mut de = serde_json::Deserializer::from_str(text);
    let page = Page { text, set };
    let object = if path.is_empty() {
        FieldsSeed(page).deserialize(&mut de).ok()?
    } else {
        let mut out = PageFields::default();
        let wants = [
            (Some(path), Target::Object),
            (None, Target::Total),
            (None, Target::Cursor),
        ];
        let level = Level {
            wants: &wants,
            active: 0b001,
            depth: 0,
            page,
            out: &mut out,
        };
        level.deserialize(&mut de).ok()?;
        out.object?
    };
    de.end().ok()?;
    Some(object)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Items,
    Total,
    Cursor,
    Object,
}

/// The page being read: its text and the members wanted from each item.
#[derive(Clone, Copy)]
struct Page<'p> {
    text: &'p Arc<str>,
    set: &'p Arc<FieldSet>,
}

/// One object of the envelope, `depth` members below the root, on the way to the
/// `active` wants (a bit per entry of `wants`).
struct Level<'p, 'o> {
    wants: &'p [(Option<&'p [String]>, Target); 3],
    active: u8,
    depth: usize,
    page: Page<'p>,
    out: &'o mut PageFields,
}

impl<'de> DeserializeSeed<'de> for Level<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Level<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(key)) = map.next_key()? {
            let mut here = 0u8;
            let mut ends = None;
            for (bit, (keys, target)) in self.wants.iter().enumerate() {
                let Some(keys) = keys else { continue };
                if self.active & (1 << bit) == 0 || keys[self.depth] != key {
                    continue;
                }
                // A later duplicate of a member replaces it, as in a parsed object.
                match target {
                    Target::Items => self.out.items = None,
                    Target::Total => self.out.total = None,
                    Target::Cursor => self.out.cursor = None,
                    Target::Object => self.out.object = None,
                }
                if keys.len() == self.depth + 1 {
                    if ends.is_some() {
                        return Err(serde::de::Error::custom("two paths end at one member"));
                    }
                    ends = Some(*target);
                } else {
                    here |= 1 << bit;
                }
            }
            match (ends, here) {
                (Some(_), here) if here != 0 => {
                    return Err(serde::de::Error::custom(
                        "a path ends inside another's value",
                    ));
                }
                (Some(Target::Items), _) => {
                    self.out.items = Some(map.next_value_seed(ItemsSeed(self.page))?);
                }
                (Some(Target::Total), _) => self.out.total = Some(map.next_value()?),
                (Some(Target::Cursor), _) => self.out.cursor = Some(map.next_value()?),
                (Some(Target::Object), _) => {
                    self.out.object = Some(map.next_value_seed(FieldsSeed(self.page))?);
                }
                (None, 0) => {
                    map.next_value::<IgnoredAny>()?;
                }
                (None, here) => map.next_value_seed(Level {
                    wants: self.wants,
                    active: here,
                    depth: self.depth + 1,
                    page: self.page,
                    out: &mut *self.out,
                })?,
            }
        }
        Ok(())
    }
}

/// A page's item array.
struct ItemsSeed<'p>(Page<'p>);

impl<'de> DeserializeSeed<'de> for ItemsSeed<'_> {
    type Value = Vec<Fields>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<Fields>, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ItemsSeed<'_> {
    type Value = Vec<Fields>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Fields>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(fields) = seq.next_element_seed(FieldsSeed(self.0))? {
            items.push(fields);
        }
        Ok(items)
    }
}

/// One item: the values of the set's members, every other member skipped unparsed.
struct FieldsSeed<'p>(Page<'p>);

impl<'de> DeserializeSeed<'de> for FieldsSeed<'_> {
    type Value = Fields;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Fields, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FieldsSeed<'_> {
    type Value = Fields;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
        let Page { text, set } = self.0;
        let mut values = vec![None; set.slots.len()];
        while let Some(Key(key)) = map.next_key()? {
            match set.slots.get(&*key) {
                Some(&slot) => values[slot] = Some(map.next_value_seed(MemberSeed(text))?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Fields {
            set: Arc::clone(set),
            text: Arc::clone(text),
            values,
        })
    }
}

/// A wanted member's value: a string borrowed from the page text is kept as its range,
/// anything else parsed as a `Value`.
struct MemberSeed<'p>(&'p str);

impl<'de> DeserializeSeed<'de> for MemberSeed<'_> {
    type Value = Member;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Member, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MemberSeed<'_> {
    type Value = Member;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Member, E> {
        // Where `s` lies in the text: the parser lends strings without escapes from it.
        let start = (s.as_ptr() as usize).wrapping_sub(self.0.as_ptr() as usize);
        let range = start..start.wrapping_add(s.len());
        Ok(match self.0.get(range.clone()) {
            Some(t) if std::ptr::eq(t, s) => Member::Text(range),
            _ => Member::Value(Value::String(s.to_owned())),
        })
    }
    fn visit_str<E>(self, s: &str) -> Result<Member, E> {
        Ok(Member::Value(Value::String(s.to_owned())))
    }
    fn visit_string<E>(self, s: String) -> Result<Member, E> {
        Ok(Member::Value(Value::String(s)))
    }
    fn visit_bool<E>(self, b: bool) -> Result<Member, E> {
        Ok(Member::Value(Value::Bool(b)))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Member, E> {
        Ok(Member::Value(Value::from(n)))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Member, E> {
        Ok(Member::Value(Value::from(n)))
    }
    fn visit_f64<E>(self, n: f64) -> Result<Member, E> {
        Ok(Member::Value(Value::from(n)))
    }
    fn visit_unit<E>(self) -> Result<Member, E> {
        Ok(Member::Value(Value::Null))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Member, A::Error> {
        Value::deserialize(SeqAccessDeserializer::new(seq)).map(Member::Value)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Member, A::Error> {
        Value::deserialize(MapAccessDeserializer::new(map)).map(Member::Value)
    }
}

/// A member name, borrowed from the text unless it has escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::Value;

    use super::{read_object, read_page, FieldSet, PagePaths};

    /// A set reading the members `id` and `email`.
    fn id_and_email() -> Arc<FieldSet> {
        Arc::new(FieldSet {
            slots: [("id".to_owned(), 0), ("email".to_owned(), 1)]
                .into_iter()
                .collect(),
            attr_reads: Vec::new(),
        })
    }

    /// `obj` with only the members `set` reads: what its fields stand for.
    fn kept(set: &FieldSet, obj: &Value) -> Value {
        let members = obj.as_object().expect("an object").iter();
        let kept = members.filter(|(k, _)| set.slots.contains_key(*k));
        Value::Object(kept.map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    /// Single-object answers read as fields: the object its fields stand for, or `None`
    /// where it must be read whole; checked against the same answer parsed whole.
    #[test]
    fn objects_read_as_fields_agree_with_whole_answers() {
        let set = id_and_email();
        // text, item path, readable as fields
        let cases: &[(&str, &str, bool)] = &[
            (r#"{"id":1,"email":"a@x","other":{"deep":[1]}}"#, "", true),
            (
                r#"{"user":{"id":"u-1","email":"q\"uote"},"meta":{}}"#,
                "user",
                true,
            ),
            (
                r#"{"data":{"user":{"id":2}},"data":{"user":{"id":3}}}"#,
                "data.user",
                true,
            ),
            (r#"{"id":1} trailing"#, "", false),
            (r#"[{"id":1}]"#, "", false),
            (r#"{"user":null}"#, "user", false),
            (r#"{"other":{}}"#, "user", false),
            (r#"{"user":{"id":1}"#, "user", false),
        ];
        for &(text, path, readable) in cases {
            let path = keys(path);
            let read = read_object(&Arc::from(text), &set, &path);
            assert_eq!(read.is_some(), readable, "{text}");
            let Some(fields) = read else { continue };
            let whole: Value = serde_json::from_str(text).expect(text);
            let obj = path.iter().try_fold(&whole, |v, k| v.get(k)).expect(text);
            assert_eq!(fields.to_object(), kept(&set, obj), "{text}");
        }
    }

    fn keys(path: &str) -> Vec<String> {
        path.split('.')
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Pages read as fields: the items (as the objects their fields stand for), total and
    /// cursor, or `None` where the page must be read whole; each checked against the
    /// same page parsed whole.
    #[test]
    fn pages_read_as_fields_agree_with_whole_pages() {
        let set = id_and_email();
        // text, items path, total path, cursor path, readable as fields
        type Case<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>, bool);
        let cases: &[Case] = &[
            (
                r#"{"data":[{"id":1,"email":"a","x":[{"deep":{}}]}],"meta":{"total":5}}"#,
                "data",
                Some("meta.total"),
                None,
                true,
            ),
            (
                r#"{"data":[{"id":1}],"data":[{"id":2},{"id":3}]}"#,
                "data",
                None,
                None,
                true,
            ),
            (
                r#"{"meta":{"total":5},"meta":{"page":1},"data":[]}"#,
                "data",
                Some("meta.total"),
                None,
                true,
            ),
            (
                r#"{"d\u0061ta":[{"\u0069d":7,"email":"q\"uote"}]}"#,
                "data",
                None,
                None,
                true,
            ),
            (r#"[{"id":1},{"email":null}]"#, "", None, None, true),
            (
                r#"{"page":{"items":[{"id":"u-1"}],"next":"c2"}}"#,
                "page.items",
                None,
                Some("page.next"),
                true,
            ),
            (
                r#"{"data":[],"next":null}"#,
                "data",
                None,
                Some("next"),
                true,
            ),
            (r#"{"other":1}"#, "data", Some("total"), None, true),
            (r#"{"data":[1]}"#, "data", None, None, false),
            (r#"{"data":{}}"#, "data", None, None, false),
            (
                r#"{"data":[],"meta":null}"#,
                "data",
                Some("meta.total"),
                None,
                false,
            ),
            (r#"{"data":[]} x"#, "data", None, None, false),
            (r#"{"data":[]}"#, "data", Some("data"), None, false),
            (r#"{"data":[]}"#, "data", Some("data.n"), None, false),
            (r#"[{"id":1}]"#, "", Some("total"), None, false),
            (r#"{"data":[{"id":1}"#, "data", None, None, false),
        ];
        for &(text, items, total, cursor, readable) in cases {
            let (items, total, cursor) = (keys(items), total.map(keys), cursor.map(keys));
            let paths = PagePaths {
                items: &items,
                total: total.as_deref(),
                cursor: cursor.as_deref(),
            };
            let read = read_page(&Arc::from(text), &set, paths);
            assert_eq!(read.is_some(), readable, "{text}");
            let Some(read) = read else { continue };
            let whole: Value = serde_json::from_str(text).expect(text);
            let at = |path: &[String]| path.iter().try_fold(&whole, |v, k| v.get(k));
            let expected_items = at(&items)
                .and_then(Value::as_array)
                .map(|items| items.iter().map(|o| kept(&set, o)).collect::<Vec<_>>());
            let got_items = read
                .items
                .map(|items| items.iter().map(|f| f.to_object()).collect::<Vec<_>>());
            assert_eq!(got_items, expected_items, "{text}");
            assert_eq!(read.total.as_ref(), total.as_deref().and_then(at), "{text}");
            assert_eq!(
                read.cursor.as_ref(),
                cursor.as_deref().and_then(at),
                "{text}"
            );
        }
    }
}
