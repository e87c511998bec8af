//! The mapping language: raw files ([`raw`]) are compiled ([`compile`]) into a [`Mapping`]
//! that the [`engine`] runs. Everything a request needs is prepared here, once per load.

pub mod cast;
pub mod compile;
pub mod discovery;
pub mod engine;
pub mod fields;
pub mod jsonpath;
pub mod raw;
pub mod render;
pub mod scim_doc;
pub mod sort;
pub mod template;

use std::sync::Arc;

use http::{HeaderName, Method, StatusCode};
use serde_json::Value;

use crate::scim::filter::{AttrPath, AttrRef};
use crate::scim::schema::AttrDef;
use crate::scim::ScimType;
use jsonpath::{ReadPath, WritePath};
use template::{BodyTemplate, Template};

pub use compile::{
    load_dir, load_sources, read_dir_sources, sources_hash, CompileError, CompileErrors, Source,
};

/// A compiled, ready-to-serve mapping set.
#[derive(Debug)]
pub struct Mapping {
    /// How bearer tokens are introspected, when the mapping says so.
    pub introspect: Option<Introspect>,
    /// Tenant fields that every tenant has (from introspection or static keys).
    pub tenant_fields: Vec<String>,
    /// Header that carries the introspected key id upstream.
    pub key_id_header: Option<HeaderName>,
    /// Resource types, in file order.
    pub resources: Vec<Arc<Resource>>,
    /// Error rules shared by all resources, tried after a resource's own.
    pub errors: Vec<ErrorRule>,
    /// SHA-256 over the mapping sources, to tell which set is serving.
    pub hash: String,
}

impl Mapping {
    /// The resource served at `/{endpoint}` (matched case-insensitively).
    pub fn resource(&self, endpoint: &str) -> Option<&Arc<Resource>> {
        self.resources
            .iter()
            .find(|r| r.endpoint.eq_ignore_ascii_case(endpoint))
    }
}

/// One compiled upstream call.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: Method,
    /// Full path template, base path included.
    pub path: Template,
    pub body: Option<BodyTemplate>,
    pub query: Vec<(String, String)>,
    /// Lists: where the items are.
    pub items: Option<ReadPath>,
    /// Lists: where the total is.
    pub total: Option<Total>,
    /// Single-object answers: where the object is (`None`: the whole body).
    pub item: Option<ReadPath>,
    /// `METHOD /path/template` as written, for logs and errors.
    pub route: String,
}

/// Where a list answer carries its total count.
#[derive(Debug, Clone)]
pub enum Total {
    Body(ReadPath),
    Header(HeaderName),
}

/// Token introspection.
#[derive(Debug)]
pub struct Introspect {
    pub call: Call,
    pub active: ReadPath,
    pub accept: Vec<(ReadPath, Value)>,
    pub tenant: Vec<(String, ReadPath)>,
    pub key_id: Option<ReadPath>,
}

/// An upstream status, or a class of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusMatch {
    Exact(u16),
    Class(u16),
}

impl ErrorRule {
    /// Does this rule apply to an upstream answer?
    pub fn matches(&self, status: StatusCode, body: &Value) -> bool {
        if !self.status.matches(status) {
            return false;
        }
        match (&self.when, &self.equals) {
            (None, _) => true,
            (Some(p), None) => p.read(body).is_some(),
            (Some(p), Some(want)) => p.read(body) == Some(want),
        }
    }
}

impl StatusMatch {
    /// Does `status` fall under this rule?
    pub fn matches(self, status: StatusCode) -> bool {
        match self {
            StatusMatch::Exact(s) => status.as_u16() == s,
            StatusMatch::Class(c) => status.as_u16() / 100 == c,
        }
    }
}

/// Where an error rule takes its `detail`.
#[derive(Debug, Clone)]
pub enum Detail {
    Literal(String),
    Path(ReadPath),
}

/// An upstream error and the SCIM answer it becomes.
#[derive(Debug, Clone)]
pub struct ErrorRule {
    pub status: StatusMatch,
    pub when: Option<ReadPath>,
    /// The value `when` must find; any non-null value when absent.
    pub equals: Option<Value>,
    pub scim_status: StatusCode,
    pub scim_type: Option<ScimType>,
    pub detail: Option<Detail>,
}

/// The shape of the resource's ids, checked before any upstream call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Integer,
    String,
    Uuid,
}

/// How lists are paged upstream.
#[derive(Debug, Clone)]
pub enum Pagination {
    /// The upstream returns everything at once.
    None,
    Page {
        page_param: String,
        size_param: String,
        first_page: u64,
        max_size: u64,
    },
    Offset {
        offset_param: String,
        size_param: String,
        max_size: u64,
    },
    /// Pages are followed from the first, by an opaque cursor.
    Cursor {
        cursor_param: String,
        size_param: String,
        max_size: u64,
        next: NextCursor,
    },
}

/// Where a cursor-paged answer says how to get the next page.
#[derive(Debug, Clone)]
pub enum NextCursor {
    /// The cursor itself, in the body.
    Token(ReadPath),
    /// The next page's URL, in the body; its cursor parameter is used.
    Url(ReadPath),
    /// The next page's URL, in an RFC 8288 `Link: <…>; rel="next"` header.
    LinkHeader,
}

/// What an update call's body carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateBody {
    /// Only the fields written.
    Partial,
    /// The whole upstream object, as read, with the written fields overlaid.
    Full,
}

/// What to do with filter terms the upstream cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsupported {
    /// Page through at most this many upstream items and filter here.
    Scan(u64),
    Reject,
}

/// Filter push-down.
#[derive(Debug, Clone)]
pub struct FilterPolicy {
    /// SCIM attribute → upstream query parameter, for `eq`.
    pub push_down: Vec<(AttrPath, String)>,
    pub unsupported: Unsupported,
}

/// How the upstream sorts lists (SCIM `sortBy`/`sortOrder`).
#[derive(Debug, Clone)]
pub struct Sort {
    /// The query parameter naming the sort key.
    pub by_param: String,
    /// The direction parameter; `None`: the upstream sorts ascending only.
    pub order: Option<SortOrderParam>,
    /// Sortable SCIM attributes (core URN stripped) → the upstream's sort key.
    pub keys: Vec<(AttrPath, String)>,
}

/// The query parameter that carries the sort direction, and its two values.
#[derive(Debug, Clone)]
pub struct SortOrderParam {
    pub param: String,
    pub ascending: String,
    pub descending: String,
}

/// SCIM mutability (RFC 7643 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutability {
    ReadWrite,
    ReadOnly,
    Immutable,
    WriteOnly,
}

impl Mutability {
    /// The name used in `/Schemas`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mutability::ReadWrite => "readWrite",
            Mutability::ReadOnly => "readOnly",
            Mutability::Immutable => "immutable",
            Mutability::WriteOnly => "writeOnly",
        }
    }
}

/// How an attribute reaches the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteVia {
    /// In the create/update body.
    Body,
    /// Only through the resource's actions.
    Actions,
}

/// Typed value pairs `(scim, upstream)`, checked two-way at load.
#[derive(Debug, Clone)]
pub struct EnumMap {
    pub pairs: Vec<(Value, Value)>,
}

/// One mapped SCIM attribute.
#[derive(Debug, Clone)]
pub struct Attribute {
    /// The mapping key as written, for messages.
    pub key: String,
    pub scim: AttrRef,
    pub def: AttrDef,
    /// Where the value is read; `None` for a constant.
    pub read: Option<ReadPath>,
    /// A fixed value, for attributes with no upstream field.
    pub constant: Option<Value>,
    /// Where writes go; `None` for read-only attributes.
    pub write: Option<WritePath>,
    pub via: WriteVia,
    pub mutability: Mutability,
    pub required: bool,
    pub enum_map: Option<EnumMap>,
    pub default_on_create: Option<Value>,
    pub template: Option<Template>,
    pub extra: Vec<(String, Value)>,
    pub case_exact: bool,
    /// Another attribute writes the same field and wins when both are present.
    pub yields_to: Option<usize>,
    /// The upstream field's JSON type, when writes must convert the SCIM value.
    pub upstream_type: Option<UpstreamType>,
    /// The resource type whose id this `value` sub-attribute holds.
    pub reference: Option<Reference>,
}

/// An upstream field's JSON type that differs from the SCIM value's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamType {
    /// A SCIM string of decimal digits, written as a JSON integer.
    Integer,
}

/// A `value` sub-attribute that holds the id of a resource of another (or the same) type,
/// like the enterprise `manager.value`.
#[derive(Debug, Clone)]
pub struct Reference {
    /// The resource type's name (`User`), for `referenceTypes`.
    pub resource: String,
    /// Its endpoint (`Users`), for `$ref`; set once every resource is compiled.
    pub endpoint: String,
    /// Its id shape, checked on writes.
    pub id_kind: IdKind,
    /// The sibling `$ref` sub-attribute (`manager.$ref`).
    pub path: AttrRef,
}

/// PUT semantics for attributes the request omits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOmitted {
    Keep,
    Clear,
}

/// When an action runs relative to the body write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionOrder {
    BeforeWrite,
    AfterWrite,
}

/// A call made when an attribute changes to a value.
#[derive(Debug, Clone)]
pub struct Action {
    /// Index into [`Resource::attributes`].
    pub attribute: usize,
    pub becomes: Value,
    pub call: Call,
    pub order: ActionOrder,
}

/// The upstream calls behind the SCIM operations.
#[derive(Debug, Clone, Default)]
pub struct Operations {
    pub list: Option<Call>,
    pub get: Option<Call>,
    pub create: Option<Call>,
    pub update: Option<Call>,
    pub delete: Option<Call>,
}

/// A compiled SCIM resource type.
#[derive(Debug)]
pub struct Resource {
    /// `User`.
    pub name: String,
    /// `Users` (without the slash).
    pub endpoint: String,
    pub schema: String,
    pub extensions: Vec<String>,
    pub description: String,
    pub id: ReadPath,
    pub id_kind: IdKind,
    pub created: Option<ReadPath>,
    pub last_modified: Option<ReadPath>,
    pub version: Option<ReadPath>,
    pub request_envelope: Option<WritePath>,
    pub ops: Operations,
    pub pagination: Pagination,
    pub filter: FilterPolicy,
    /// Upstream sorting, when the mapping declares it.
    pub sort: Option<Sort>,
    pub attributes: Vec<Attribute>,
    pub ignore: Vec<AttrRef>,
    pub put_omitted: PutOmitted,
    pub actions: Vec<Action>,
    pub errors: Vec<ErrorRule>,
    /// Membership behind its own upstream calls, when the resource has members.
    pub members: Option<Members>,
    /// Whether a successful PATCH answers with the resource (200) or without (204).
    pub patch_response: PatchResponse,
    /// Objects matching all of these are gone (soft-deleted).
    pub gone_when: Vec<(ReadPath, Value)>,
    /// Attributes looked up before create (and before a change) for uniqueness.
    pub unique: Vec<(AttrRef, String)>,
    pub update_body: UpdateBody,
    /// Where attributes land in the SCIM document, for writing it without building it;
    /// `None` when the attributes land in ways [`render::Layout`] does not model.
    pub layout: Option<render::Layout>,
}

impl Resource {
    /// Is this upstream object soft-deleted?
    pub fn is_gone(&self, obj: fields::UpstreamObj<'_>) -> bool {
        !self.gone_when.is_empty()
            && self
                .gone_when
                .iter()
                .all(|(p, v)| obj.read(p).is_some_and(|found| *found.to_value() == *v))
    }

    /// Wraps a body in the request envelope.
    pub fn wrap(&self, body: Value) -> Value {
        match &self.request_envelope {
            Some(env) => env.wrap(body),
            None => body,
        }
    }
}

/// What a successful PATCH answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchResponse {
    /// 204, unless the request asks for attributes.
    NoContent,
    /// 200 with the resource as re-read after the writes.
    Resource,
}

/// What to do when some member calls fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartialFailure {
    /// Keep what succeeded and report every member's state (retries are safe: member calls
    /// are idempotent).
    Report,
    /// Undo the calls that changed state, then fail.
    Compensate,
}

/// What to do with member values the upstream does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownMembers {
    /// Apply the others, then answer 400 naming the unknown ones.
    Skip,
    /// Look up every new member first; any unknown → 400, no member call made.
    RejectBatch,
}

/// Members as an id array inside the group object, written by read-modify-write.
#[derive(Debug, Clone)]
pub struct Embedded {
    pub ids: WritePath,
    /// The object's version, sent back as `If-Match` so a concurrent write is a conflict.
    pub version: Option<ReadPath>,
    /// Statuses that mean another writer came first.
    pub conflict_status: Vec<StatusCode>,
    pub max_retries: u32,
}

/// A member add or remove call.
#[derive(Debug, Clone)]
pub struct MemberCall {
    pub call: Call,
    /// Statuses that mean "already so": success, nothing changed.
    pub already_done: Vec<StatusCode>,
}

/// The upstream's way of saying a member value names nobody.
#[derive(Debug, Clone)]
pub struct UnknownMemberRule {
    pub status: StatusCode,
    pub when: Option<ReadPath>,
    pub equals: Option<Value>,
}

impl UnknownMemberRule {
    /// Does this answer mean the member is unknown?
    pub fn matches(&self, status: StatusCode, body: &Value) -> bool {
        if status != self.status {
            return false;
        }
        match (&self.when, &self.equals) {
            (None, _) => true,
            (Some(p), None) => p.read(body).is_some(),
            (Some(p), Some(want)) => p.read(body) == Some(want),
        }
    }
}

/// Membership behind a member sub-collection.
#[derive(Debug, Clone)]
pub struct Members {
    /// Collection model: the member list call (`None` for embedded members).
    pub list: Option<Call>,
    /// Collection model: each listed item's member id.
    pub value: Option<ReadPath>,
    /// Embedded model: ids inside the group object.
    pub embedded: Option<Embedded>,
    pub display: Option<ReadPath>,
    pub add: Option<MemberCall>,
    pub remove: Option<MemberCall>,
    pub replace: Option<Call>,
    /// Endpoint of the member resource type (`Users`), for `$ref`.
    pub member_endpoint: String,
    /// SCIM name of the member resource type (`User`), for `type`.
    pub member_type: String,
    /// Shape of member values, checked before any call.
    pub member_id: IdKind,
    pub unknown_member: Option<UnknownMemberRule>,
    pub unknown_members: UnknownMembers,
    pub concurrency: usize,
    pub deadline: std::time::Duration,
    pub on_partial_failure: PartialFailure,
}
