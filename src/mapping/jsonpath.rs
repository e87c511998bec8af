//! Upstream-side paths: RFC 9535 JSONPath for reads (compiled once, with serde_json_path),
//! and singular member paths (`$.a.b`, `$['a']`) for writes.

use serde_json::{Map, Value};
use serde_json_path::JsonPath;

/// A compiled JSONPath that reads one value.
#[derive(Debug, Clone)]
pub struct ReadPath {
    text: String,
    path: JsonPath,
    /// For singular paths (`$.a.b`), the member names: read by a direct walk, which is
    /// several times cheaper than a general query. A list read through such a path must
    /// find an array.
    singular: Option<Vec<String>>,
}

impl PartialEq for ReadPath {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

/// A JSONPath that could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("invalid JSONPath {0:?}: {1}")]
    Invalid(String, String),
    #[error("JSONPath {0:?} must be singular (`$.a.b` or `$['a']`) to be written")]
    NotSingular(String),
}

impl ReadPath {
    /// Compiles `text` (must start with `$`).
    pub fn parse(text: &str) -> Result<ReadPath, PathError> {
        let path = JsonPath::parse(text)
            .map_err(|e| PathError::Invalid(text.to_owned(), e.to_string()))?;
        Ok(ReadPath {
            text: text.to_owned(),
            path,
            singular: WritePath::parse(text).ok().map(|w| w.keys),
        })
    }

    /// The path as written in the mapping.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The member names from the root, when the path is singular (`$.a.b`: `a`, `b`).
    pub fn singular(&self) -> Option<&[String]> {
        self.singular.as_deref()
    }

    /// The member name when the path is one top-level member (`$.email`, `$['email']`).
    pub fn top_level_member(&self) -> Option<&str> {
        match self.singular.as_deref() {
            Some([key]) => Some(key),
            _ => None,
        }
    }

    /// The first node the path selects; `None` when nothing or only `null` is there.
    pub fn read<'a>(&self, value: &'a Value) -> Option<&'a Value> {
        if let Some(keys) = &self.singular {
            return keys
                .iter()
                .try_fold(value, |v, k| v.get(k))
                .filter(|v| !v.is_null());
        }
        self.path
            .query(value)
            .all()
            .into_iter()
            .next()
            .filter(|v| !v.is_null())
    }

    /// Like [`ReadPath::read`], but moves the node out of `value` (leaving `null`) where
    /// the path is singular, so an upstream object is not copied out of its envelope.
    pub fn take(&self, value: &mut Value) -> Option<Value> {
        if let Some(keys) = &self.singular {
            let node = keys.iter().try_fold(value, |v, k| v.get_mut(k))?;
            return Some(node.take()).filter(|v| !v.is_null());
        }
        self.read(value).cloned()
    }

    /// Like [`ReadPath::read_many`], but moves the items out of `value` where the path is
    /// singular (the common `$.data`), so a page of objects is not copied.
    pub fn take_many(&self, value: &mut Value) -> Option<Vec<Value>> {
        if let Some(keys) = &self.singular {
            let node = keys.iter().try_fold(value, |v, k| v.get_mut(k))?;
            return match node.take() {
                Value::Array(items) => Some(items),
                _ => None,
            };
        }
        self.read_many(value)
            .map(|items| items.into_iter().cloned().collect())
    }

    /// Every node selected, flattening a single selected array into its elements, so both
    /// `$.data` and `$.data[*]` name a list's items. A singular path that finds something
    /// other than an array finds no list.
    pub fn read_many<'a>(&self, value: &'a Value) -> Option<Vec<&'a Value>> {
        let nodes = self.path.query(value).all();
        match nodes.as_slice() {
            [Value::Array(items)] => Some(items.iter().collect()),
            _ if self.singular.is_some() => None,
            [] => Some(Vec::new()),
            _ => Some(nodes),
        }
    }
}

/// A singular path to a member, for writing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WritePath {
    text: String,
    keys: Vec<String>,
}

impl WritePath {
    /// Parses `$.a.b`, `$['a']["b"]` or `$` (the root).
    pub fn parse(text: &str) -> Result<WritePath, PathError> {
        let not_singular = || PathError::NotSingular(text.to_owned());
        JsonPath::parse(text).map_err(|e| PathError::Invalid(text.to_owned(), e.to_string()))?;
        let mut rest = text.strip_prefix('$').ok_or_else(not_singular)?;
        let mut keys = Vec::new();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('.') {
                let end = after.find(['.', '[']).unwrap_or(after.len());
                let key = &after[..end];
                if key.is_empty() || key == "*" {
                    return Err(not_singular());
                }
                keys.push(key.to_owned());
                rest = &after[end..];
            } else if let Some(after) = rest.strip_prefix('[') {
                let quote = after.chars().next().ok_or_else(not_singular)?;
                if quote != '\'' && quote != '"' {
                    return Err(not_singular());
                }
                let body = &after[1..];
                let close = body.find(quote).ok_or_else(not_singular)?;
                keys.push(body[..close].to_owned());
                rest = body[close + 1..]
                    .strip_prefix(']')
                    .ok_or_else(not_singular)?;
            } else {
                return Err(not_singular());
            }
        }
        Ok(WritePath {
            text: text.to_owned(),
            keys,
        })
    }

    /// The path as written in the mapping.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value at the path, if any.
    pub fn get<'a>(&self, target: &'a Value) -> Option<&'a Value> {
        self.keys.iter().try_fold(target, |v, k| v.get(k))
    }

    /// Sets `value` at the path inside `target`, creating objects on the way.
    pub fn set(&self, target: &mut Value, value: Value) {
        let Some((last, parents)) = self.keys.split_last() else {
            *target = value;
            return;
        };
        let mut cursor = target;
        for key in parents {
            if !cursor.is_object() {
                *cursor = Value::Object(Map::new());
            }
            let Value::Object(map) = cursor else { return };
            cursor = map
                .entry(key.clone())
                .or_insert_with(|| Value::Object(Map::new()));
        }
        if !cursor.is_object() {
            *cursor = Value::Object(Map::new());
        }
        if let Value::Object(map) = cursor {
            map.insert(last.clone(), value);
        }
    }

    /// Wraps `value` so that it sits at this path in a new document.
    pub fn wrap(&self, value: Value) -> Value {
        let mut out = Value::Null;
        self.set(&mut out, value);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn write_paths() {
        let cases: [(&str, Option<Vec<&str>>); 7] = [
            ("$.email", Some(vec!["email"])),
            ("$.a.b", Some(vec!["a", "b"])),
            ("$['a b'][\"c\"]", Some(vec!["a b", "c"])),
            ("$", Some(vec![])),
            ("$.a[*]", None),
            ("$..a", None),
            ("$.a[0]", None),
        ];
        for (text, want) in cases {
            let got = WritePath::parse(text).ok().map(|p| p.keys);
            let want = want.map(|w| w.into_iter().map(str::to_owned).collect::<Vec<_>>());
            assert_eq!(got, want, "{text}");
        }
    }

    #[test]
    fn set_creates_parents_and_wrap_nests() {
        let p = WritePath::parse("$.user.profile.first").unwrap();
        assert_eq!(
            p.wrap(json!("Ada")),
            json!({"user": {"profile": {"first": "Ada"}}})
        );
    }

    #[test]
    fn reads_first_non_null_and_lists() {
        let doc = json!({"data": [{"id": 1}, {"id": 2}], "x": null});
        let p = ReadPath::parse("$.data").unwrap();
        assert_eq!(p.read_many(&doc).unwrap().len(), 2);
        let p = ReadPath::parse("$.data[*]").unwrap();
        assert_eq!(p.read_many(&doc).unwrap().len(), 2);
        let single = json!({"data": {"id": 1}});
        assert_eq!(ReadPath::parse("$.data").unwrap().read_many(&single), None);
        assert_eq!(
            ReadPath::parse("$.data[*]")
                .unwrap()
                .read_many(&single)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(ReadPath::parse("$.x").unwrap().read(&doc), None);
        assert!(ReadPath::parse("$.[").is_err());
    }
}
