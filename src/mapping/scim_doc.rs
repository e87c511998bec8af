//! Reading and writing one attribute of a SCIM JSON document by its [`AttrRef`].
//! Attribute names match case-insensitively (RFC 7643 §2.1); a URN on the reference means
//! an extension object (callers strip the resource's own core URN at compile time).

use serde_json::{Map, Value};

use crate::scim::filter::{AttrRef, CompValue, CompareOp, Filter};

/// The value under `key` in `map`, matching the key case-insensitively.
pub fn get_ci<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn get_ci_mut<'a>(map: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Value> {
    let actual = map.keys().find(|k| k.eq_ignore_ascii_case(key)).cloned()?;
    map.get_mut(&actual)
}

/// The entry for `key`, created as `default` under the key's given spelling when absent.
fn entry_ci<'a>(map: &'a mut Map<String, Value>, key: &str, default: Value) -> &'a mut Value {
    // The exact spelling is the common case (documents built from the mapping): found
    // without a scan or a copy of the key.
    let actual = if map.contains_key(key) {
        None
    } else {
        map.keys().find(|k| k.eq_ignore_ascii_case(key)).cloned()
    };
    match actual {
        Some(actual) => map.entry(actual),
        None => map.entry(key),
    }
    .or_insert(default)
}

/// The object holding the reference's top-level attribute: the document, or its extension.
fn container<'a>(doc: &'a Value, r: &AttrRef) -> Option<&'a Map<String, Value>> {
    let obj = doc.as_object()?;
    match &r.attr.urn {
        None => Some(obj),
        Some(urn) => get_ci(obj, urn)?.as_object(),
    }
}

fn container_mut<'a>(doc: &'a mut Value, r: &AttrRef) -> Option<&'a mut Map<String, Value>> {
    let obj = doc.as_object_mut()?;
    match &r.attr.urn {
        None => Some(obj),
        Some(urn) => entry_ci(obj, urn, Value::Object(Map::new())).as_object_mut(),
    }
}

/// Is `filter` a selector: `eq` terms on plain attribute names, against non-null values,
/// joined by `and`? Only a selector can build the element it selects.
fn is_selector(filter: &Filter) -> bool {
    match filter {
        Filter::Compare {
            path,
            op: CompareOp::Eq,
            value,
        } => path.urn.is_none() && path.sub.is_none() && !matches!(value, CompValue::Null),
        Filter::And(a, b) => is_selector(a) && is_selector(b),
        _ => false,
    }
}

/// The `eq` terms of a selector filter such as `type eq "work" and primary eq true`
/// (`None` for any other filter: see [`is_selector`]).
pub fn selector_terms(filter: &Filter) -> Option<Vec<(String, Value)>> {
    fn collect(filter: &Filter, terms: &mut Vec<(String, Value)>) {
        match filter {
            Filter::Compare { path, value, .. } => {
                let v = match value {
                    CompValue::Bool(b) => Value::Bool(*b),
                    CompValue::Number(n) => Value::Number(n.clone()),
                    CompValue::String(s) => Value::String(s.clone()),
                    CompValue::Null => Value::Null,
                };
                terms.push((path.name.clone(), v));
            }
            Filter::And(a, b) => {
                collect(a, terms);
                collect(b, terms);
            }
            _ => {}
        }
    }
    is_selector(filter).then(|| {
        let mut terms = Vec::new();
        collect(filter, &mut terms);
        terms
    })
}

/// Only objects are elements a filter can select: a plain value has no sub-attributes to
/// read or write (`not (type eq "x")` would otherwise select `true`).
fn element_matches(element: &Value, filter: &Filter) -> bool {
    element.is_object() && filter.matches(element, &|_| false)
}

/// Does `items[i]` match a selector? RFC 7643 §2.4 makes `primary` optional: a lone value
/// without it is the primary one, so `primary eq true` selects it.
pub fn selects(items: &[Value], i: usize, filter: &Filter) -> bool {
    let element = &items[i];
    if element_matches(element, filter) {
        return true;
    }
    if items.len() != 1 {
        return false;
    }
    let Some(obj) = element.as_object() else {
        return false;
    };
    if get_ci(obj, "primary").is_some() {
        return false;
    }
    let mut with_primary = obj.clone();
    with_primary.insert("primary".into(), Value::Bool(true));
    element_matches(&Value::Object(with_primary), filter)
}

/// Reads the attribute; `None` when absent or null.
pub fn get(doc: &Value, r: &AttrRef) -> Option<Value> {
    let top = get_ci(container(doc, r)?, &r.attr.name)?;
    let value = match &r.filter {
        None => match &r.attr.sub {
            None => top.clone(),
            Some(sub) => get_ci(top.as_object()?, sub)?.clone(),
        },
        Some(filter) => {
            let element = match top {
                // Several elements may match a selector (a PATCH `add` appends): the
                // newest, last one is the value.
                Value::Array(items) => {
                    let i = (0..items.len())
                        .rev()
                        .find(|&i| selects(items, i, filter))?;
                    &items[i]
                }
                single if element_matches(single, filter) => single,
                _ => return None,
            };
            match &r.sub {
                None => element.clone(),
                Some(sub) => get_ci(element.as_object()?, sub)?.clone(),
            }
        }
    };
    (!value.is_null()).then_some(value)
}

/// Writes the attribute, creating parents; for a selector reference the element matching
/// the selector is updated or appended, and `extra` properties are added to it. A filter
/// that is not a selector (`co`, `or`, …) cannot build an element: it updates every element
/// it selects and creates none.
pub fn set(doc: &mut Value, r: &AttrRef, value: Value, extra: &[(String, Value)]) {
    let Some(map) = container_mut(doc, r) else {
        return;
    };
    match (&r.filter, &r.attr.sub) {
        (None, None) => {
            *entry_ci(map, &r.attr.name, Value::Null) = value;
        }
        (None, Some(sub)) => {
            let parent = entry_ci(map, &r.attr.name, Value::Object(Map::new()));
            if !parent.is_object() {
                *parent = Value::Object(Map::new());
            }
            if let Some(obj) = parent.as_object_mut() {
                *entry_ci(obj, sub, Value::Null) = value;
            }
        }
        (Some(filter), _) => {
            if !is_selector(filter) {
                match get_ci_mut(map, &r.attr.name) {
                    Some(Value::Array(items)) => {
                        let hits: Vec<usize> = (0..items.len())
                            .filter(|&i| selects(items, i, filter))
                            .collect();
                        for i in hits {
                            update_element(&mut items[i], r, value.clone(), extra);
                        }
                    }
                    Some(single) if element_matches(single, filter) => {
                        update_element(single, r, value, extra);
                    }
                    _ => {}
                }
                return;
            }
            let list = entry_ci(map, &r.attr.name, Value::Array(Vec::new()));
            if !list.is_array() {
                *list = Value::Array(Vec::new());
            }
            let Some(items) = list.as_array_mut() else {
                return;
            };
            let index = match (0..items.len()).rev().find(|&i| selects(items, i, filter)) {
                Some(i) => i,
                None => {
                    let element: Map<String, Value> = selector_terms(filter)
                        .unwrap_or_default()
                        .into_iter()
                        .collect();
                    items.push(Value::Object(element));
                    items.len() - 1
                }
            };
            update_element(&mut items[index], r, value, extra);
        }
    }
}

/// Writes `value` into one selected element: its `r.sub`, or (an object value) its fields.
fn update_element(element: &mut Value, r: &AttrRef, value: Value, extra: &[(String, Value)]) {
    let Some(element) = element.as_object_mut() else {
        return;
    };
    match &r.sub {
        Some(sub) => {
            *entry_ci(element, sub, Value::Null) = value;
        }
        None => {
            if let Value::Object(fields) = value {
                element.extend(fields);
            }
        }
    }
    for (k, v) in extra {
        if get_ci(element, k).is_none() {
            element.insert(k.clone(), v.clone());
        }
    }
}

/// Removes the attribute (for a selector reference: the sub-attribute of matching elements,
/// or the elements themselves when no sub-attribute is named). Elements are selected as
/// [`get`] selects them, so whatever `get` finds, `remove` removes.
pub fn remove(doc: &mut Value, r: &AttrRef) {
    let Some(map) = container_mut(doc, r) else {
        return;
    };
    let key = r.attr.name.as_str();
    let remove_ci = |obj: &mut Map<String, Value>, name: &str| {
        if let Some(actual) = obj.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned() {
            obj.remove(&actual);
        }
    };
    match (&r.filter, &r.attr.sub) {
        (None, None) => remove_ci(map, key),
        (None, Some(sub)) => {
            if let Some(Value::Object(obj)) = get_ci_mut(map, key) {
                remove_ci(obj, sub);
            }
        }
        (Some(filter), _) => match get_ci_mut(map, key) {
            Some(Value::Array(items)) => {
                let hits: Vec<bool> = (0..items.len())
                    .map(|i| selects(items, i, filter))
                    .collect();
                match &r.sub {
                    None => {
                        let mut hit = hits.iter();
                        items.retain(|_| !hit.next().copied().unwrap_or(false));
                    }
                    Some(sub) => {
                        for (element, _) in items.iter_mut().zip(&hits).filter(|(_, h)| **h) {
                            if let Some(obj) = element.as_object_mut() {
                                remove_ci(obj, sub);
                            }
                        }
                    }
                }
            }
            // A single value where a multi-valued attribute was expected: `get` reads it
            // as the only element.
            Some(single) if element_matches(single, filter) => match &r.sub {
                None => remove_ci(map, key),
                Some(sub) => {
                    if let Some(obj) = single.as_object_mut() {
                        remove_ci(obj, sub);
                    }
                }
            },
            _ => {}
        },
    }
}
