//! SCIM `sortBy`/`sortOrder` (RFC 7644 §3.4.2.3) → the upstream's sort query parameters,
//! as a resource's `sort` table declares them. The gateway never sorts by itself: it asks
//! the upstream, on every list call a SCIM request makes (page-through scans included).

use super::{AttrPath, Resource, Sort};
use crate::scim::filter::parse_attr_path;
use crate::scim::{ScimError, ScimType};

/// Why a list request's sort cannot be honoured: each is a 400 `invalidValue`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SortError {
    #[error("sortBy {given:?} is not an attribute path: {why}")]
    Syntax { given: String, why: String },
    #[error("sortBy {given:?} cannot be sorted on here; sortable attributes: {sortable}")]
    NotSortable { given: String, sortable: String },
    #[error("sortOrder {0:?} must be \"ascending\" or \"descending\"")]
    BadOrder(String),
    #[error("the upstream sorts {0} in ascending order only; sortOrder \"descending\" cannot be honoured")]
    AscendingOnly(String),
}

impl From<SortError> for ScimError {
    fn from(e: SortError) -> ScimError {
        ScimError::bad_request(ScimType::InvalidValue, e.to_string())
    }
}

/// A requested sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Ascending,
    Descending,
}

/// `sortOrder`: absent means ascending (RFC 7644 §3.4.2.3); names compare case-insensitively.
fn direction(sort_order: Option<&str>) -> Result<Direction, SortError> {
    match sort_order.map(str::trim) {
        None | Some("") => Ok(Direction::Ascending),
        Some(o) if o.eq_ignore_ascii_case("ascending") => Ok(Direction::Ascending),
        Some(o) if o.eq_ignore_ascii_case("descending") => Ok(Direction::Descending),
        Some(o) => Err(SortError::BadOrder(o.chars().take(64).collect())),
    }
}

impl Sort {
    /// The upstream sort key of a SCIM attribute path (case-insensitive, URN-qualified
    /// names included; `core_schema` qualifies plain names).
    fn key(&self, path: &AttrPath, core_schema: &str) -> Option<&str> {
        let path = match &path.urn {
            Some(urn) if urn.eq_ignore_ascii_case(core_schema) => AttrPath {
                urn: None,
                ..path.clone()
            },
            _ => path.clone(),
        };
        self.keys
            .iter()
            .find(|(p, _)| p.eq_ignore_case(&path))
            .map(|(_, key)| key.as_str())
    }

    /// The sortable attributes, for messages.
    fn sortable(&self) -> String {
        self.keys
            .iter()
            .map(|(p, _)| p.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Resource {
    /// The query parameters a list request's `sortBy`/`sortOrder` add to every upstream list
    /// call. None when the request has no `sortBy` (a lone `sortOrder` is ignored) or when
    /// the mapping declares no sort: RFC 7644 §3.4.2 says service providers SHOULD ignore
    /// query parameters they do not recognise, and `/ServiceProviderConfig` then says
    /// `sort.supported: false`.
    pub fn sort_query(
        &self,
        sort_by: Option<&str>,
        sort_order: Option<&str>,
    ) -> Result<Vec<(String, String)>, SortError> {
        let (Some(sort), Some(given)) = (&self.sort, sort_by.map(str::trim)) else {
            return Ok(Vec::new());
        };
        if given.is_empty() {
            return Ok(Vec::new());
        }
        let shown: String = given.chars().take(128).collect();
        let path = parse_attr_path(given).map_err(|e| SortError::Syntax {
            given: shown.clone(),
            why: e.to_string(),
        })?;
        let key = sort
            .key(&path, &self.schema)
            .ok_or_else(|| SortError::NotSortable {
                given: shown,
                sortable: sort.sortable(),
            })?;
        let mut query = vec![(sort.by_param.clone(), key.to_owned())];
        match (direction(sort_order)?, &sort.order) {
            (Direction::Ascending, None) => {}
            (Direction::Descending, None) => {
                return Err(SortError::AscendingOnly(self.name.clone()));
            }
            (Direction::Ascending, Some(o)) => query.push((o.param.clone(), o.ascending.clone())),
            (Direction::Descending, Some(o)) => query.push((o.param.clone(), o.descending.clone())),
        }
        Ok(query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::{load_sources, Source};

    fn users(sort: &str) -> std::sync::Arc<Resource> {
        let text = format!(
            r#"
[resources.User]
endpoint = "/Users"
schema = "urn:ietf:params:scim:schemas:core:2.0:User"
extensions = ["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]
id = {{ upstream = "$.id" }}
meta = {{ created = "$.created" }}
[resources.User.operations]
list = {{ method = "GET", path = "/people", items = "$" }}
get = {{ method = "GET", path = "/people/{{id}}" }}
[resources.User.attributes]
userName = {{ upstream = "$.login" }}
'emails[type eq "work"].value' = {{ upstream = "$.mail" }}
"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department" = {{ upstream = "$.dept" }}
{sort}
"#
        );
        let mapping = load_sources(&[Source {
            name: "m.toml".into(),
            text,
        }])
        .unwrap_or_else(|e| panic!("compiles: {e}"));
        mapping.resource("Users").expect("Users").clone()
    }

    const SORT: &str = r#"[resources.User.sort]
by_param = "sort"
order_param = "dir"
ascending = "up"
attributes = { userName = "login", "meta.created" = "created", "emails.value" = "mail", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department" = "dept" }"#;

    #[test]
    fn sort_requests_become_query_parameters() {
        let r = users(SORT);
        let q = |by: &str, order: Option<&str>| r.sort_query(Some(by), order);
        let pairs = |p: &[(&str, &str)]| -> Vec<(String, String)> {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            q("USERNAME", None),
            Ok(pairs(&[("sort", "login"), ("dir", "up")]))
        );
        assert_eq!(
            q(
                "urn:ietf:params:scim:schemas:core:2.0:User:userName",
                Some("Descending")
            ),
            Ok(pairs(&[("sort", "login"), ("dir", "desc")]))
        );
        assert_eq!(
            q("meta.created", Some("ascending")),
            Ok(pairs(&[("sort", "created"), ("dir", "up")]))
        );
        assert_eq!(
            q("emails.value", None),
            Ok(pairs(&[("sort", "mail"), ("dir", "up")]))
        );
        assert_eq!(
            q(
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:user:Department",
                None
            ),
            Ok(pairs(&[("sort", "dept"), ("dir", "up")]))
        );
        assert!(matches!(
            q("name.givenName", None),
            Err(SortError::NotSortable { .. })
        ));
        assert!(matches!(q("a b", None), Err(SortError::Syntax { .. })));
        assert_eq!(
            q("userName", Some("sideways")),
            Err(SortError::BadOrder("sideways".into()))
        );
        // No sortBy: nothing to do, even with a sortOrder.
        assert_eq!(r.sort_query(None, Some("descending")), Ok(vec![]));
        assert_eq!(r.sort_query(Some(" "), None), Ok(vec![]));
    }

    #[test]
    fn ascending_only_upstreams_and_unsorted_resources() {
        let r = users(
            "[resources.User.sort]\nby_param = \"order_by\"\nattributes = { userName = \"login\" }",
        );
        assert_eq!(
            r.sort_query(Some("userName"), None),
            Ok(vec![("order_by".to_owned(), "login".to_owned())])
        );
        assert_eq!(
            r.sort_query(Some("userName"), Some("descending")),
            Err(SortError::AscendingOnly("User".into()))
        );
        // Without a sort table, sortBy is ignored (RFC 7644 §3.4.2).
        assert_eq!(
            users("").sort_query(Some("nonsense attribute"), Some("??")),
            Ok(vec![])
        );
    }

    #[test]
    fn sort_tables_are_checked_at_load() {
        let cases = [
            ("by_param = \"\"\nattributes = { userName = \"login\" }", "must not be empty"),
            ("by_param = \"s\"\nattributes = { title = \"t\" }", "not a mapped attribute"),
            ("by_param = \"s\"\nattributes = { \"meta.lastModified\" = \"t\" }", "not a mapped attribute"),
            ("by_param = \"s\"\nattributes = {}", "at least one"),
            ("by_param = \"s\"\nascending = \"a\"\nattributes = { userName = \"l\" }", "need sort.order_param"),
            ("by_param = \"s\"\norder_param = \"s\"\nattributes = { userName = \"l\" }", "must differ"),
            ("by_param = \"s\"\norder_param = \"o\"\nascending = \"x\"\ndescending = \"x\"\nattributes = { userName = \"l\" }", "two different"),
            ("by_param = \"s\"\nattributes = { userName = \"\" }", "must not be empty"),
        ];
        for (table, want) in cases {
            let text = format!(
                r#"
[resources.User]
endpoint = "/Users"
schema = "urn:ietf:params:scim:schemas:core:2.0:User"
id = {{ upstream = "$.id" }}
[resources.User.operations]
list = {{ method = "GET", path = "/people", items = "$" }}
get = {{ method = "GET", path = "/people/{{id}}" }}
[resources.User.attributes]
userName = {{ upstream = "$.login" }}
[resources.User.sort]
{table}
"#
            );
            let errors = load_sources(&[Source {
                name: "m.toml".into(),
                text,
            }])
            .expect_err(table);
            let shown = errors.to_string();
            assert!(shown.contains(want), "{table}: {shown}");
            assert!(
                errors.0.iter().all(|e| e.line.is_some_and(|l| l >= 11)),
                "{table}: errors point into the sort table: {shown}"
            );
        }
    }
}
