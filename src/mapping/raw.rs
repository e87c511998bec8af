//! The mapping files as written: serde types that mirror the TOML/JSON format one to one.
//! Nothing here is validated beyond its shape; `compile` turns it into a [`super::Mapping`].

use std::collections::BTreeMap;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

/// One mapping file. A directory's files are merged: each may carry any sections, but a
/// resource or the `auth`/`upstream` section may be defined only once.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    pub version: Option<u32>,
    pub auth: Option<RawAuth>,
    pub upstream: Option<RawUpstream>,
    #[serde(default)]
    pub resources: IndexMap<String, RawResource>,
}

/// How a SCIM bearer token is checked against the upstream.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub introspect: Option<RawIntrospect>,
    /// Tenant fields that statically configured keys must provide, when there is no
    /// introspection section.
    #[serde(default)]
    pub tenant_fields: Vec<String>,
}

/// RFC 7662-style token introspection.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawIntrospect {
    pub call: RawCall,
    /// JSONPath to a boolean: is the token active?
    pub active: String,
    /// JSONPath → required value; every entry must hold for the token to be accepted.
    #[serde(default)]
    pub accept: BTreeMap<String, Value>,
    /// Tenant field name → JSONPath into the introspection answer.
    #[serde(default)]
    pub tenant: BTreeMap<String, String>,
    /// JSONPath to the key's id, sent upstream on every call for the audit log.
    pub key_id: Option<String>,
}

/// Settings shared by every resource.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// Prefix of every resource path, e.g. `/api/v1/companies/{tenant.company_id}`.
    #[serde(default)]
    pub base_path: String,
    /// Header that carries the introspected key id (when there is one).
    pub key_id_header: Option<String>,
    /// Default JSONPath to the object in single-object answers (e.g. `$.data`).
    pub item: Option<String>,
    /// Error rules, tried in order after the resource's own.
    #[serde(default)]
    pub errors: Vec<RawErrorRule>,
}

/// One upstream call.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCall {
    pub method: String,
    pub path: String,
    /// A JSON body template whose string leaves may be `{placeholder}`s.
    pub body: Option<Value>,
    /// Static query parameters added to the call.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// For list calls: JSONPath to the array of items (or to each item).
    pub items: Option<String>,
    /// For list calls: JSONPath to the total count in the body.
    pub total: Option<String>,
    /// For list calls: response header that carries the total count.
    pub total_header: Option<String>,
    /// JSONPath to the object in the answer; defaults to `upstream.item`.
    pub item: Option<String>,
}

/// An upstream error status (or class such as `"4xx"`) and what SCIM answer it becomes.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawErrorRule {
    pub status: Value,
    /// JSONPath that must find a non-null value in the upstream body for the rule to apply.
    pub when: Option<String>,
    pub scim_status: u16,
    pub scim_type: Option<String>,
    /// Literal text, or a JSONPath (starting with `$`) into the upstream body.
    pub detail: Option<String>,
    /// The value `when` must find (otherwise any non-null value matches). Rules for 2xx
    /// statuses need `when`: they turn "200 with an error flag" answers into errors.
    pub equals: Option<Value>,
}

/// One SCIM resource type backed by an upstream collection.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawResource {
    /// `/Users`: the SCIM endpoint.
    pub endpoint: String,
    pub schema: String,
    #[serde(default)]
    pub extensions: Vec<String>,
    pub description: Option<String>,
    pub id: RawId,
    #[serde(default)]
    pub meta: RawMeta,
    /// Singular JSONPath under which request bodies wrap the object (e.g. `$.user`); bare if absent.
    pub request_envelope: Option<String>,
    pub operations: RawOperations,
    #[serde(default)]
    pub pagination: RawPagination,
    #[serde(default)]
    pub filter: RawFilterPolicy,
    /// How the upstream sorts lists, for SCIM `sortBy`/`sortOrder`; absent: results come in
    /// the upstream's order and `sortBy` is ignored.
    pub sort: Option<RawSort>,
    #[serde(default)]
    pub attributes: IndexMap<String, RawAttribute>,
    #[serde(default)]
    pub writes: RawWrites,
    #[serde(default)]
    pub actions: Vec<RawAction>,
    #[serde(default)]
    pub errors: Vec<RawErrorRule>,
    /// A multi-valued `members` attribute backed by its own upstream calls.
    pub members: Option<RawMembers>,
    /// PATCH answers `200` with the resource (`resource`, default) or `204` (`no_content`).
    pub patch_response: Option<String>,
    /// JSONPath → value: objects matching all are gone (soft-deleted): 404, never listed.
    #[serde(default)]
    pub gone_when: IndexMap<String, Value>,
    /// SCIM attribute → list query parameter: looked up before create (and before a change
    /// of the attribute); a hit answers 409 `uniqueness`. Best effort: two gateways can race.
    #[serde(default)]
    pub unique: IndexMap<String, String>,
}

/// Group membership behind a member sub-collection.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMembers {
    /// `collection` (default: members behind their own calls) or `embedded` (an id array
    /// inside the group object, changed by read-modify-write of the group).
    pub model: Option<String>,
    /// Collection: lists the members of `{id}` (paged like the resource).
    pub list: Option<RawCall>,
    /// Collection: JSONPath in each listed item to the member's id.
    pub value: Option<String>,
    /// Embedded: singular JSONPath to the id array in the group object.
    pub ids: Option<String>,
    /// Embedded: JSONPath to the object's version, sent back as `If-Match` on the update.
    pub version: Option<String>,
    /// Embedded: statuses that mean another writer came first (re-read and retry).
    #[serde(default)]
    pub conflict_status: Vec<u16>,
    /// Embedded: attempts after a conflict (default 5).
    pub max_retries: Option<u32>,
    /// Embedded without `version`: the mapping accepts that concurrent writers can lose
    /// each other's changes.
    #[serde(default)]
    pub accept_lost_updates: bool,
    /// JSONPath in each listed item to a display name.
    pub display: Option<String>,
    /// Adds `{member.value}` to `{id}`.
    pub add: Option<RawMemberCall>,
    /// Removes `{member.value}` from `{id}`.
    pub remove: Option<RawMemberCall>,
    /// Replaces the whole set with `{members.value}` in one call.
    pub replace: Option<RawCall>,
    /// The resource type members are (`User`): its endpoint gives `$ref`, its id type the
    /// accepted shape of member values.
    pub resource: Option<String>,
    /// How the upstream says a member value names nobody.
    pub unknown_member: Option<RawUnknownMember>,
    /// `skip` (apply the rest, then answer 400 naming the unknown ones) or `reject_batch`
    /// (look every new member up first; any unknown → 400 and no member call at all).
    pub unknown_members: Option<String>,
    /// Member calls in flight at once for one SCIM request (default 8).
    pub concurrency: Option<usize>,
    /// Total time for a request's member calls (default 50 000 ms, below Okta's 60 s).
    pub deadline_ms: Option<u64>,
    /// `report` (keep what succeeded) or `compensate` (undo it, then fail).
    pub on_partial_failure: Option<String>,
}

/// A member add/remove call and the statuses that mean "already so".
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMemberCall {
    pub method: String,
    pub path: String,
    pub body: Option<Value>,
    /// Statuses meaning the change was already in effect (success, nothing changed).
    #[serde(default)]
    pub already_done: Vec<u16>,
}

/// An upstream answer that means "no such member".
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawUnknownMember {
    pub status: u16,
    /// JSONPath into the body that must equal `equals` (when given).
    pub when: Option<String>,
    pub equals: Option<Value>,
}

/// Where the SCIM `id` comes from and what shape it has.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawId {
    pub upstream: String,
    /// `integer`, `string` or `uuid`: ids of another shape are 404 without an upstream call.
    #[serde(default = "default_id_type")]
    pub r#type: String,
}

fn default_id_type() -> String {
    "string".to_owned()
}

/// JSONPaths to the `meta` timestamps.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMeta {
    pub created: Option<String>,
    pub last_modified: Option<String>,
    pub version: Option<String>,
}

/// The upstream calls behind the SCIM operations; an absent one is not offered.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawOperations {
    pub list: Option<RawCall>,
    pub get: Option<RawCall>,
    pub create: Option<RawCall>,
    pub update: Option<RawCall>,
    pub delete: Option<RawCall>,
}

/// How the upstream pages lists.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPagination {
    #[serde(default = "default_style")]
    pub style: String,
    pub page_param: Option<String>,
    pub size_param: Option<String>,
    pub offset_param: Option<String>,
    pub first_page: Option<u64>,
    pub max_size: Option<u64>,
    /// Cursor style: the query parameter that carries the cursor.
    pub cursor_param: Option<String>,
    /// Cursor style: JSONPath to the next cursor in the body (null or absent: last page).
    pub next_cursor: Option<String>,
    /// Cursor style: JSONPath to the next page's full URL (same origin).
    pub next_url: Option<String>,
    /// Cursor style: the next page's URL is in an RFC 8288 `Link: <…>; rel="next"` header.
    #[serde(default)]
    pub next_link_header: bool,
}

fn default_style() -> String {
    "none".to_owned()
}

impl Default for RawPagination {
    fn default() -> Self {
        RawPagination {
            style: default_style(),
            page_param: None,
            size_param: None,
            offset_param: None,
            first_page: None,
            max_size: None,
            cursor_param: None,
            next_cursor: None,
            next_url: None,
            next_link_header: false,
        }
    }
}

/// Which filters the upstream answers, and what to do with the rest.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFilterPolicy {
    /// SCIM attribute → upstream query parameter, for `eq` (and `and` of such terms).
    #[serde(default)]
    pub push_down: BTreeMap<String, String>,
    /// `scan` (page through and filter here, bounded) or `reject` (400 invalidFilter).
    pub unsupported: Option<String>,
    pub scan_limit: Option<u64>,
}

/// How the upstream sorts a list: query parameters added to every list call of a SCIM
/// request that carries `sortBy` (RFC 7644 §3.4.2.3).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSort {
    /// The query parameter that names the sort key (e.g. `sort`).
    pub by_param: String,
    /// The query parameter that names the direction; absent: the upstream sorts ascending
    /// only, and `sortOrder=descending` is refused.
    pub order_param: Option<String>,
    /// The `order_param` value for ascending (default `asc`).
    pub ascending: Option<String>,
    /// The `order_param` value for descending (default `desc`).
    pub descending: Option<String>,
    /// SCIM attribute (`userName`, `meta.created`, …) → the upstream's sort key.
    pub attributes: IndexMap<String, String>,
}

/// One SCIM attribute and the upstream field behind it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAttribute {
    /// JSONPath of the upstream field (read, and written when singular).
    pub upstream: Option<String>,
    /// A fixed SCIM value instead of an upstream field (read-only).
    pub constant: Option<Value>,
    #[serde(default)]
    pub required: bool,
    /// `readWrite` (default), `readOnly`, `immutable` (written on create only), `writeOnly`.
    pub mutability: Option<String>,
    /// `body` (default): written in the create/update body; `actions`: only through actions.
    pub write: Option<String>,
    /// Two-way value pairs `[scim, upstream]`.
    pub r#enum: Option<Vec<(Value, Value)>>,
    /// Value written on create when the request has none.
    pub default_on_create: Option<Value>,
    /// SCIM-side template (`"{name.givenName} {name.familyName}"`) used on create when absent.
    pub template: Option<String>,
    /// Properties added to the multi-valued element on read (e.g. `primary = true`).
    #[serde(default)]
    pub extra: BTreeMap<String, Value>,
    pub case_exact: Option<bool>,
    pub r#type: Option<String>,
    /// The upstream field's JSON type, when it is not the SCIM value's: `integer` writes
    /// the SCIM string `"1043"` as the number `1043` (anything else is a 400).
    pub upstream_type: Option<String>,
    /// For a `value` sub-attribute: the resource type (`User`) whose id it holds. Reads
    /// render the sibling `$ref`, writes accept `$ref` and need an id of that type's shape.
    pub reference: Option<String>,
}

/// Rules for writes that involve more than one attribute.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawWrites {
    /// Upstream write path → the SCIM attribute that wins when several write it.
    #[serde(default)]
    pub writer: BTreeMap<String, String>,
    /// SCIM attributes accepted on write and dropped (never stored or advertised).
    #[serde(default)]
    pub ignore: Vec<String>,
    /// PUT: `keep` attributes the request omits, or `clear` them.
    pub put_omitted: Option<String>,
    /// `partial` (default): the update body carries the written fields only; `full`: the
    /// upstream object is read and sent whole with the fields overlaid (PUT-only APIs).
    pub update_body: Option<String>,
}

/// A call made when an attribute changes to a value.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAction {
    pub when: RawWhen,
    pub call: RawCall,
    /// `before_write` or `after_write` (default).
    pub run: Option<String>,
}

/// The attribute change that triggers an action.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawWhen {
    pub attribute: String,
    pub becomes: Value,
}
