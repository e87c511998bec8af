//! The SCIM operations on any mapped resource type: list, get, create, replace, patch,
//! delete. Each handler reads the mapping once, so a request finishes on the mapping it
//! started with even if a reload swaps it meanwhile.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::auth::Tenant;
use super::request::{base_url, scim_json_response, scim_response, ListParams, ScimJson};
use super::{Authenticated, Gateway};
use crate::mapping::engine::{id_is_plausible, FilterPlan, WriteMode};
use crate::mapping::fields::{read_object, read_page, FieldSet, Fields, PagePaths, UpstreamObj};
use crate::mapping::jsonpath::ReadPath;
use crate::mapping::template::{scalar_text, Vars};
use crate::mapping::{
    Action, ActionOrder, Call, Detail, ErrorRule, Mapping, NextCursor, Pagination, PatchResponse,
    Resource, Total, Unsupported, UpdateBody,
};
use crate::scim::filter::{parse_attr_path, parse_filter, AttrPath, Filter};
use crate::scim::membership::{member_values, split_member_ops, MemberEdit};
use crate::scim::patch::{apply, parse_patch};
use crate::scim::{ScimError, ScimType, LIST_SCHEMA};
use crate::upstream::{self, UpstreamError};

/// One request's view of the gateway.
pub(super) struct Ctx {
    pub(super) gateway: Arc<Gateway>,
    pub(super) mapping: Arc<Mapping>,
    pub(super) resource: Arc<Resource>,
    pub(super) tenant: Arc<Tenant>,
    pub(super) base_url: String,
}

fn ctx(
    gateway: Arc<Gateway>,
    endpoint: &str,
    tenant: Arc<Tenant>,
    headers: &HeaderMap,
) -> Result<Ctx, ScimError> {
    let mapping = gateway.mapping.load_full();
    let resource = mapping
        .resource(endpoint)
        .cloned()
        .ok_or_else(|| ScimError::not_found("no such endpoint"))?;
    let base_url = base_url(
        gateway.config.public_url.as_deref(),
        gateway.config.base_path_trimmed(),
        headers,
    );
    Ok(Ctx {
        gateway,
        mapping,
        resource,
        tenant,
        base_url,
    })
}

/// Most items read to count a list whose upstream gives no total, when the mapping sets no
/// scan limit.
const DEFAULT_COUNT_LIMIT: u64 = 10_000;

/// One upstream page.
struct Page<I> {
    items: Vec<I>,
    total: Option<u64>,
    /// No page follows.
    last: bool,
}

/// What a list reads from one upstream page's answer.
pub(super) struct PageRead<I> {
    /// The items, less those the mapping calls gone.
    items: Vec<I>,
    /// How many items the page had.
    got: usize,
    total: Option<u64>,
    /// The next page's cursor (cursor pagination).
    next_cursor: Option<String>,
}

/// An item of an upstream list, as the list reads it.
pub(super) trait ListItem: Sized {
    fn read_page(
        ctx: &Ctx,
        call: &Call,
        id: Option<&str>,
        answer: upstream::RawResponse,
    ) -> Result<PageRead<Self>, ScimError>;
}

/// Whole objects: what every list but the plainest reads.
impl ListItem for Value {
    fn read_page(
        ctx: &Ctx,
        call: &Call,
        id: Option<&str>,
        answer: upstream::RawResponse,
    ) -> Result<PageRead<Value>, ScimError> {
        let mut response = ctx.check_ok(call, id, answer.parse())?;
        let (items, total) = ctx.list_items(call, &mut response)?;
        let got = items.len();
        let items = items
            .into_iter()
            .filter(|o| !ctx.resource.is_gone(UpstreamObj::Whole(o)))
            .collect();
        let next_cursor = ctx.next_cursor(|p| p.read(&response.body), &response.headers)?;
        Ok(PageRead {
            items,
            got,
            total,
            next_cursor,
        })
    }
}

/// An upstream object of a plain read or list (see [`list_plain`]): read as [`Fields`]
/// where the mapping and the answer allow it (`mapping::fields`), whole otherwise.
enum ListedObj {
    Whole(Value),
    Fields(Fields),
}

impl ListItem for ListedObj {
    fn read_page(
        ctx: &Ctx,
        call: &Call,
        id: Option<&str>,
        answer: upstream::RawResponse,
    ) -> Result<PageRead<ListedObj>, ScimError> {
        if let Some(read) = ctx.read_page_fields(call, &answer)? {
            return Ok(read);
        }
        let read = Value::read_page(ctx, call, id, answer)?;
        Ok(PageRead {
            items: read.items.into_iter().map(ListedObj::Whole).collect(),
            got: read.got,
            total: read.total,
            next_cursor: read.next_cursor,
        })
    }
}

/// A list total carried in a response header.
fn header_total(headers: &HeaderMap, name: &header::HeaderName) -> Option<u64> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Where the next upstream page starts.
enum PagePosition {
    Single,
    Page { index: usize, size: usize },
    Offset { offset: usize, size: usize },
    Cursor { cursor: Option<String>, size: usize },
}

impl PagePosition {
    /// The first page to fetch for items `start..start+count`, how many items precede it,
    /// and how many of its items to skip.
    fn start(pagination: &Pagination, start: usize, count: usize) -> (PagePosition, usize, usize) {
        match pagination {
            Pagination::None => (PagePosition::Single, 0, start),
            Pagination::Page { max_size, .. } => {
                let max = *max_size as usize;
                // A page size that divides the window means no item is fetched in vain.
                let size = if count == 0 {
                    1
                } else if count <= max && start % count == 0 {
                    count
                } else {
                    max
                };
                let index = start / size;
                (
                    PagePosition::Page { index, size },
                    index * size,
                    start % size,
                )
            }
            Pagination::Offset { max_size, .. } => {
                let size = count.clamp(1, *max_size as usize);
                (
                    PagePosition::Offset {
                        offset: start,
                        size,
                    },
                    start,
                    0,
                )
            }
            // Cursors can only be followed from the beginning.
            Pagination::Cursor { max_size, .. } => (
                PagePosition::Cursor {
                    cursor: None,
                    size: *max_size as usize,
                },
                0,
                start,
            ),
        }
    }
}

/// Ids in messages are shortened and stripped of control characters.
fn shown(id: &str) -> String {
    let clean: String = id.chars().filter(|c| !c.is_control()).take(64).collect();
    if clean.len() < id.len() {
        format!("{clean}…")
    } else {
        clean
    }
}

fn not_supported(what: &str) -> ScimError {
    ScimError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("this resource type does not support {what}"),
    )
}

impl Ctx {
    fn vars<'a>(&'a self, id: Option<&'a str>) -> Vars<'a> {
        Vars {
            id,
            tenant: Some(&self.tenant),
            ..Vars::default()
        }
    }

    pub(super) fn not_found(&self, id: &str) -> ScimError {
        ScimError::not_found(format!("{} {} not found", self.resource.name, shown(id)))
    }

    /// Sends a call; transport failures become 502/503/504.
    pub(super) async fn send(
        &self,
        call: &Call,
        id: Option<&str>,
        query: &[(String, String)],
        body: Option<&Value>,
    ) -> Result<upstream::Response, ScimError> {
        self.send_with(call, &self.vars(id), id, query, body, None)
            .await
    }

    /// The headers every upstream call carries besides the service credential.
    pub(super) fn audit_header(&self) -> Option<(&http::HeaderName, &str)> {
        match (&self.mapping.key_id_header, &self.tenant.key_id) {
            (Some(h), Some(k)) => Some((h, k.as_str())),
            _ => None,
        }
    }

    /// [`Ctx::send`] with explicit template values and an optional `If-Match`.
    pub(super) async fn send_with(
        &self,
        call: &Call,
        vars: &Vars<'_>,
        id: Option<&str>,
        query: &[(String, String)],
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<upstream::Response, ScimError> {
        self.send_raw_with(call, vars, id, query, body, if_match)
            .await
            .map(upstream::RawResponse::parse)
    }

    /// [`Ctx::send_with`], the answer's body left unparsed.
    async fn send_raw_with(
        &self,
        call: &Call,
        vars: &Vars<'_>,
        id: Option<&str>,
        query: &[(String, String)],
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<upstream::RawResponse, ScimError> {
        let mut headers: Vec<(&http::HeaderName, &str)> = self.audit_header().into_iter().collect();
        if let Some(v) = if_match {
            headers.push((&http::header::IF_MATCH, v));
        }
        self.gateway
            .upstream
            .send_raw(call, vars, query, body, &headers)
            .await
            .map_err(|e| match e {
                UpstreamError::Timeout => ScimError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("the upstream did not answer {} in time", call.route),
                ),
                UpstreamError::Unreachable(why) => {
                    let mut err = ScimError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("the upstream is unreachable: {why}"),
                    );
                    err.retry_after = Some(5);
                    err
                }
                UpstreamError::Unavailable { why, retry_after } => {
                    let mut err = ScimError::new(StatusCode::SERVICE_UNAVAILABLE, why);
                    err.retry_after = Some(retry_after);
                    err
                }
                UpstreamError::BadBody(why) => ScimError::bad_gateway(format!(
                    "the upstream answer to {} could not be read: {why}",
                    call.route
                )),
                // Only ids pass through templates, and they are checked first: an id that still
                // cannot be placed in a URL names nothing.
                UpstreamError::Render(_) => match id {
                    Some(id) => self.not_found(id),
                    None => {
                        ScimError::bad_gateway(format!("cannot build the URL for {}", call.route))
                    }
                },
            })
    }

    /// Sends a call and insists on a 2xx with a readable body.
    async fn send_ok(
        &self,
        call: &Call,
        id: Option<&str>,
        query: &[(String, String)],
        body: Option<&Value>,
    ) -> Result<upstream::Response, ScimError> {
        let response = self.send(call, id, query, body).await?;
        self.check_ok(call, id, response)
    }

    /// The answer when it is a 2xx with a readable body; the SCIM error it means if not.
    fn check_ok(
        &self,
        call: &Call,
        id: Option<&str>,
        response: upstream::Response,
    ) -> Result<upstream::Response, ScimError> {
        if self.is_error(&response) {
            return Err(self.upstream_error(&response, id));
        }
        if response.unparsable {
            return Err(ScimError::bad_gateway(format!(
                "the upstream answer to {} is not JSON",
                call.route
            )));
        }
        Ok(response)
    }

    /// Is this answer an error: a non-2xx status, or a 2xx the mapping's rules call one
    /// ("200 with an error flag")?
    pub(super) fn is_error(&self, response: &upstream::Response) -> bool {
        !response.status.is_success()
            || self
                .error_rules()
                .any(|r| response.status.is_success() && r.matches(response.status, &response.body))
    }

    /// The resource's error rules, then the mapping's.
    fn error_rules(&self) -> impl Iterator<Item = &ErrorRule> {
        self.resource
            .errors
            .iter()
            .chain(self.mapping.errors.iter())
    }

    /// The resource's field set, when `answer` may be read as [`Fields`]: a 2xx that no
    /// error rule could call an error (those need the whole body to decide).
    fn fields_for(&self, answer: &upstream::RawResponse) -> Option<&Arc<FieldSet>> {
        let set = self.resource.layout.as_ref()?.fields()?;
        let status = answer.status;
        let ruled = self.error_rules().any(|r| r.status.matches(status));
        (status.is_success() && !ruled).then_some(set)
    }

    /// An upstream error status as the SCIM answer the mapping's rules choose.
    pub(super) fn upstream_error(
        &self,
        response: &upstream::Response,
        id: Option<&str>,
    ) -> ScimError {
        for rule in self.error_rules() {
            if !rule.matches(response.status, &response.body) {
                continue;
            }
            let detail = match &rule.detail {
                Some(Detail::Literal(text)) => text.clone(),
                Some(Detail::Path(path)) => path
                    .read(&response.body)
                    .map(|v| match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .map(|s| s.chars().take(300).collect())
                    .unwrap_or_else(|| {
                        format!("the upstream answered {}", response.status.as_u16())
                    }),
                None => match (rule.scim_status, id) {
                    (StatusCode::NOT_FOUND, Some(id)) => {
                        format!("{} {} not found", self.resource.name, shown(id))
                    }
                    _ => format!("the upstream answered {}", response.status.as_u16()),
                },
            };
            let mut err = ScimError::new(rule.scim_status, detail);
            err.scim_type = rule.scim_type;
            // A 429 or 503 always tells the client when to come back.
            if rule.scim_status == StatusCode::TOO_MANY_REQUESTS {
                err.retry_after = retry_after(&response.headers).or(Some(1));
            } else if rule.scim_status == StatusCode::SERVICE_UNAVAILABLE {
                err.retry_after = retry_after(&response.headers).or(Some(5));
            }
            return err;
        }
        let status = response.status;
        match status.as_u16() {
            401 | 403 => {
                ScimError::bad_gateway("the upstream refused the gateway's service credential")
            }
            404 => match id {
                Some(id) => self.not_found(id),
                None => ScimError::bad_gateway(
                    "the upstream answered 404 for a collection the mapping names",
                ),
            },
            429 => {
                let mut err = ScimError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "the upstream is rate limiting; retry later",
                );
                err.retry_after = retry_after(&response.headers).or(Some(1));
                err
            }
            500..=599 => {
                ScimError::bad_gateway(format!("the upstream failed with {}", status.as_u16()))
            }
            s => ScimError::bad_request(
                ScimType::InvalidValue,
                format!("the upstream rejected the request ({s})"),
            ),
        }
    }

    /// The object in a single-object answer, when it is one of this resource's objects.
    fn object<'a>(&self, call: &Call, body: &'a Value) -> Option<&'a Value> {
        let obj = match &call.item {
            Some(p) => p.read(body)?,
            None => body,
        };
        self.resource.upstream_id(obj).ok().map(|_| obj)
    }

    fn to_scim(&self, obj: &Value) -> Result<Value, ScimError> {
        self.resource
            .to_scim(obj, &self.base_url)
            .map_err(|e| self.unreadable(e))
    }

    /// Appends `obj`'s SCIM document to `out` as JSON text (see `mapping::render`).
    fn write_scim(&self, obj: &Value, out: &mut Vec<u8>) -> Result<(), ScimError> {
        self.resource
            .write_scim(obj, &self.base_url, out)
            .map_err(|e| self.unreadable(e))
    }

    /// [`Ctx::write_scim`] for an object read whole or as fields.
    fn write_listed(&self, obj: &ListedObj, out: &mut Vec<u8>) -> Result<(), ScimError> {
        match obj {
            ListedObj::Whole(obj) => self.write_scim(obj, out),
            ListedObj::Fields(fields) => self
                .resource
                .write_scim_fields(fields, &self.base_url, out)
                .map_err(|e| self.unreadable(e)),
        }
    }

    fn unreadable(&self, e: crate::mapping::engine::ReadError) -> ScimError {
        ScimError::bad_gateway(format!(
            "the upstream {} cannot be read through the mapping: {e}",
            self.resource.name
        ))
    }

    /// A read answered with whole documents exactly as the mapping gives them: no
    /// projection, no members to fetch, no `ETag` to derive, and a resource whose
    /// documents can be written without being built.
    fn is_plain_read(&self, params: &ListParams) -> bool {
        self.resource.layout.is_some()
            && self.resource.members.is_none()
            && self.resource.version.is_none()
            && params.attributes.is_none()
            && params.excluded_attributes.is_none()
    }

    /// The mapping's call that reads one object.
    fn read_call(&self) -> Result<&Call, ScimError> {
        self.resource
            .ops
            .get
            .as_ref()
            .ok_or_else(|| not_supported("reads"))
    }

    /// GETs one object; `Ok(None)` for 404.
    pub(super) async fn fetch(&self, id: &str) -> Result<Option<Value>, ScimError> {
        let call = self.read_call()?;
        let response = self.send(call, Some(id), &[], None).await?;
        self.object_in(call, id, response)
    }

    /// A plain read's object: as [`Fields`] where the mapping and the answer allow it (as
    /// for a plain list's pages), whole otherwise.
    async fn fetch_plain(&self, id: &str) -> Result<Option<ListedObj>, ScimError> {
        let call = self.read_call()?;
        let answer = self
            .send_raw_with(call, &self.vars(Some(id)), Some(id), &[], None, None)
            .await?;
        if let Some(fields) = self.object_fields(call, &answer) {
            let obj = UpstreamObj::Fields(&fields);
            // An object without an id is reported by the whole-object path below.
            if self.resource.read_id(obj).is_ok() {
                let gone = self.resource.is_gone(obj);
                return Ok((!gone).then_some(ListedObj::Fields(fields)));
            }
        }
        Ok(self
            .object_in(call, id, answer.parse())?
            .map(ListedObj::Whole))
    }

    /// A single-object answer read as fields; `None` where the whole-object path applies
    /// (see [`Ctx::read_page_fields`]).
    fn object_fields(&self, call: &Call, answer: &upstream::RawResponse) -> Option<Fields> {
        let set = self.fields_for(answer)?;
        let path = match &call.item {
            Some(p) => p.singular()?,
            None => &[],
        };
        let text: Arc<str> = Arc::from(std::str::from_utf8(&answer.body).ok()?);
        read_object(&text, set, path)
    }

    /// The object in the answer to a read of `id`: `None` for 404 or a gone object.
    fn object_in(
        &self,
        call: &Call,
        id: &str,
        mut response: upstream::Response,
    ) -> Result<Option<Value>, ScimError> {
        if response.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if self.is_error(&response) {
            return Err(self.upstream_error(&response, Some(id)));
        }
        let obj = match &call.item {
            Some(p) => p.take(&mut response.body),
            None => Some(std::mem::take(&mut response.body)),
        };
        match obj.filter(|o| self.resource.upstream_id(o).is_ok()) {
            Some(obj) if self.resource.is_gone(UpstreamObj::Whole(&obj)) => Ok(None),
            Some(obj) => Ok(Some(obj)),
            None => Err(ScimError::bad_gateway(format!(
                "the upstream answer to {} holds no {}",
                call.route, self.resource.name
            ))),
        }
    }

    /// Uniqueness the upstream does not enforce: for each declared attribute the request
    /// sets (to a value other than `current`'s), a lookup; a hit other than `current` itself
    /// answers 409. Best effort: a concurrent create can still slip between.
    async fn check_unique(
        &self,
        request: &Value,
        current: Option<(&str, &Value)>,
    ) -> Result<(), ScimError> {
        let Some(list) = &self.resource.ops.list else {
            return Ok(());
        };
        for (attr, param) in &self.resource.unique {
            let Some(value) =
                crate::mapping::scim_doc::get(request, attr).and_then(|v| scalar_text(&v))
            else {
                continue;
            };
            if let Some((_, doc)) = current {
                let before = crate::mapping::scim_doc::get(doc, attr).and_then(|v| scalar_text(&v));
                if before.is_some_and(|b| b.eq_ignore_ascii_case(&value)) {
                    continue;
                }
            }
            let (items, _) = self
                .fetch_window(list, None, &[(param.clone(), value.clone())], 0, 10)
                .await?;
            for obj in &items {
                let doc = self.to_scim(obj)?;
                let same_value = crate::mapping::scim_doc::get(&doc, attr)
                    .and_then(|v| scalar_text(&v))
                    .is_some_and(|v| v.eq_ignore_ascii_case(&value));
                let itself = current.is_some_and(|(id, _)| doc["id"].as_str() == Some(id));
                if same_value && !itself {
                    return Err(ScimError::bad_request(
                        ScimType::Uniqueness,
                        format!("another {} already has this {attr}", self.resource.name),
                    )
                    .with_status(StatusCode::CONFLICT));
                }
            }
        }
        Ok(())
    }

    async fn fetch_doc(&self, id: &str) -> Result<Value, ScimError> {
        match self.fetch(id).await? {
            Some(obj) => self.to_scim(&obj),
            None => Err(self.not_found(id)),
        }
    }

    fn check_id(&self, id: &str) -> Result<(), ScimError> {
        if id_is_plausible(self.resource.id_kind, id) {
            Ok(())
        } else {
            Err(self.not_found(id))
        }
    }

    /// Items `start..start+count` (0-based) of an upstream list, and the total. Where the
    /// upstream gives no total, the rest of the list is counted (bounded by the scan limit).
    pub(super) async fn fetch_window<I: ListItem>(
        &self,
        call: &Call,
        id: Option<&str>,
        filter_params: &[(String, String)],
        start: usize,
        count: usize,
    ) -> Result<(Vec<I>, u64), ScimError> {
        let (mut position, base, mut skip) =
            PagePosition::start(&self.resource.pagination, start, count);
        let mut out = Vec::new();
        let mut seen = 0usize;
        let limit = self.count_limit();
        loop {
            let page = self.page(call, id, filter_params, &mut position).await?;
            let got = page.items.len();
            let wanted = count.saturating_sub(out.len());
            out.extend(page.items.into_iter().skip(skip).take(wanted));
            skip = skip.saturating_sub(got);
            seen += got;
            let known_total = page.total;
            if page.last {
                return Ok((out, known_total.unwrap_or((base + seen) as u64)));
            }
            if out.len() >= count {
                if let Some(total) = known_total {
                    return Ok((out, total));
                }
                // No total from the upstream: count on, within the scan limit.
                if (base + seen) as u64 > limit {
                    return Err(self.too_many(limit));
                }
            }
        }
    }

    /// Fetches the page at `position` and advances it.
    async fn page<I: ListItem>(
        &self,
        call: &Call,
        id: Option<&str>,
        filter_params: &[(String, String)],
        position: &mut PagePosition,
    ) -> Result<Page<I>, ScimError> {
        let mut query = filter_params.to_vec();
        let size = match (&self.resource.pagination, &*position) {
            (Pagination::None, _) => None,
            (
                Pagination::Page {
                    page_param,
                    size_param,
                    first_page,
                    ..
                },
                PagePosition::Page { index, size },
            ) => {
                query.push((
                    page_param.clone(),
                    (*first_page + *index as u64).to_string(),
                ));
                query.push((size_param.clone(), size.to_string()));
                Some(*size)
            }
            (
                Pagination::Offset {
                    offset_param,
                    size_param,
                    ..
                },
                PagePosition::Offset { offset, size },
            ) => {
                query.push((offset_param.clone(), offset.to_string()));
                query.push((size_param.clone(), size.to_string()));
                Some(*size)
            }
            (
                Pagination::Cursor {
                    cursor_param,
                    size_param,
                    ..
                },
                PagePosition::Cursor { cursor, size },
            ) => {
                if let Some(c) = cursor {
                    query.push((cursor_param.clone(), c.clone()));
                }
                query.push((size_param.clone(), size.to_string()));
                Some(*size)
            }
            _ => return Err(ScimError::bad_gateway("inconsistent pagination state")),
        };
        let answer = self
            .send_raw_with(call, &self.vars(id), id, &query, None, None)
            .await?;
        let PageRead {
            items,
            got,
            total,
            next_cursor,
        } = I::read_page(self, call, id, answer)?;
        let last = match (&mut *position, size) {
            (_, None) | (PagePosition::Single, _) => true,
            (PagePosition::Page { index, size }, _) => {
                *index += 1;
                got < *size || total.is_some_and(|t| (*index * *size) as u64 >= t)
            }
            (PagePosition::Offset { offset, size }, _) => {
                *offset += got;
                got < *size || total.is_some_and(|t| *offset as u64 >= t)
            }
            (PagePosition::Cursor { cursor, .. }, _) => {
                let last = next_cursor.is_none() || got == 0;
                *cursor = next_cursor;
                last
            }
        };
        Ok(Page { items, total, last })
    }

    /// Items and total of a list answer.
    fn list_items(
        &self,
        call: &Call,
        response: &mut upstream::Response,
    ) -> Result<(Vec<Value>, Option<u64>), ScimError> {
        // The total is read before the items are moved out of the body.
        let total = match &call.total {
            Some(Total::Body(p)) => p.read(&response.body).and_then(Value::as_u64),
            Some(Total::Header(h)) => header_total(&response.headers, h),
            None => None,
        };
        let items = call
            .items
            .as_ref()
            .and_then(|p| p.take_many(&mut response.body))
            .ok_or_else(|| {
                ScimError::bad_gateway(format!(
                    "the upstream answer to {} holds no item list",
                    call.route
                ))
            })?;
        Ok((items, total))
    }

    /// A plain list's page read as [`Fields`] (`mapping::fields`); `None` where that reader
    /// does not apply: an error or an answer an error rule might call one, a mapping path
    /// that is not singular, or a page the reader does not take.
    fn read_page_fields(
        &self,
        call: &Call,
        answer: &upstream::RawResponse,
    ) -> Result<Option<PageRead<ListedObj>>, ScimError> {
        let Some(set) = self.fields_for(answer) else {
            return Ok(None);
        };
        let Some(items) = call.items.as_ref().and_then(ReadPath::singular) else {
            return Ok(None);
        };
        let total = match &call.total {
            Some(Total::Body(p)) => match p.singular() {
                Some(keys) => Some(keys),
                None => return Ok(None),
            },
            _ => None,
        };
        let cursor = match &self.resource.pagination {
            Pagination::Cursor {
                next: NextCursor::Token(p) | NextCursor::Url(p),
                ..
            } => match p.singular() {
                Some(keys) => Some(keys),
                None => return Ok(None),
            },
            _ => None,
        };
        let Ok(text) = std::str::from_utf8(&answer.body) else {
            return Ok(None);
        };
        // Shared by the page's items, whose plain strings stay in it.
        let text: Arc<str> = Arc::from(text);
        let paths = PagePaths {
            items,
            total,
            cursor,
        };
        let Some(page) = read_page(&text, set, paths) else {
            return Ok(None);
        };
        let Some(items) = page.items else {
            return Ok(None);
        };
        let total = match &call.total {
            Some(Total::Body(_)) => page.total.as_ref().and_then(Value::as_u64),
            Some(Total::Header(h)) => header_total(&answer.headers, h),
            None => None,
        };
        let cursor = page.cursor.as_ref().filter(|v| !v.is_null());
        let next_cursor = self.next_cursor(|_| cursor, &answer.headers)?;
        let got = items.len();
        let items = items
            .into_iter()
            .filter(|f| !self.resource.is_gone(UpstreamObj::Fields(f)))
            .map(ListedObj::Fields)
            .collect();
        Ok(Some(PageRead {
            items,
            got,
            total,
            next_cursor,
        }))
    }

    /// The next page's cursor. A `next` URL is reduced to its cursor parameter, and must be
    /// on the upstream's origin: the gateway only ever calls URLs the mapping names.
    fn next_cursor<'v>(
        &self,
        read_body: impl Fn(&ReadPath) -> Option<&'v Value>,
        headers: &HeaderMap,
    ) -> Result<Option<String>, ScimError> {
        let Pagination::Cursor {
            cursor_param, next, ..
        } = &self.resource.pagination
        else {
            return Ok(None);
        };
        let url_text = match next {
            NextCursor::Token(p) => {
                return Ok(read_body(p).and_then(scalar_text).filter(|c| !c.is_empty()))
            }
            NextCursor::Url(p) => read_body(p).and_then(scalar_text),
            NextCursor::LinkHeader => headers
                .get_all(header::LINK)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .find(|part| {
                    part.split(';').skip(1).any(|p| {
                        p.trim().trim_matches('"').eq_ignore_ascii_case("rel=next")
                            || p.trim() == "rel=\"next\""
                    })
                })
                .and_then(|part| part.split(';').next())
                .map(|u| {
                    u.trim()
                        .trim_start_matches('<')
                        .trim_end_matches('>')
                        .to_owned()
                }),
        };
        let Some(text) = url_text else {
            return Ok(None);
        };
        let next_url = self
            .gateway
            .upstream
            .resolve_same_origin(&text)
            .ok_or_else(|| {
                ScimError::bad_gateway("the upstream's next-page URL is not on its own origin")
            })?;
        Ok(next_url
            .query_pairs()
            .find(|(k, _)| k == cursor_param.as_str())
            .map(|(_, v)| v.into_owned()))
    }

    /// Most items the gateway reads to answer one request (scans and counts).
    fn count_limit(&self) -> u64 {
        match self.resource.filter.unsupported {
            Unsupported::Scan(limit) => limit,
            Unsupported::Reject => DEFAULT_COUNT_LIMIT,
        }
    }

    fn too_many(&self, limit: u64) -> ScimError {
        ScimError::bad_request(
            ScimType::TooMany,
            format!(
                "answering needs more than {limit} {} to be read upstream; narrow the request with a filter the upstream answers",
                self.resource.name
            ),
        )
    }

    /// Every upstream item matching the pushed-down parameters, bounded by the scan limit.
    async fn scan(
        &self,
        call: &Call,
        filter_params: &[(String, String)],
        limit: u64,
    ) -> Result<Vec<Value>, ScimError> {
        let (items, total) = self
            .fetch_window(call, None, filter_params, 0, limit as usize + 1)
            .await?;
        if total > limit || items.len() as u64 > limit {
            return Err(self.too_many(limit));
        }
        Ok(items)
    }

    /// Sends the update call. A partial body is sent as it is. A full body (PUT-only APIs)
    /// is laid over the object as read now; where the object has a version (embedded
    /// members declare one), the write is conditional on it and a conflict starts over from
    /// a fresh read, so a rename cannot erase members another request just added.
    async fn update(
        &self,
        call: &Call,
        id: &str,
        fields: Value,
    ) -> Result<upstream::Response, ScimError> {
        if self.resource.update_body == UpdateBody::Partial {
            return self
                .send_ok(call, Some(id), &[], Some(&self.resource.wrap(fields)))
                .await;
        }
        let embedded = self
            .resource
            .members
            .as_ref()
            .and_then(|m| m.embedded.as_ref());
        let version_path = embedded.and_then(|e| e.version.as_ref());
        let attempts = embedded.map_or(1, |e| e.max_retries + 1);
        for attempt in 0..attempts {
            let mut whole = self.fetch(id).await?.ok_or_else(|| self.not_found(id))?;
            let version = version_path
                .and_then(|p| p.read(&whole))
                .and_then(scalar_text);
            overlay(&mut whole, fields.clone());
            let body = self.resource.wrap(whole);
            let response = self
                .send_with(
                    call,
                    &self.vars(Some(id)),
                    Some(id),
                    &[],
                    Some(&body),
                    version.as_deref(),
                )
                .await?;
            if embedded.is_some_and(|e| e.conflict_status.contains(&response.status)) {
                conflict_pause(attempt).await;
                continue;
            }
            if self.is_error(&response) {
                return Err(self.upstream_error(&response, Some(id)));
            }
            return Ok(response);
        }
        Err(ScimError::new(
            StatusCode::CONFLICT,
            format!(
                "{} {id} changed under each of {attempts} attempts to update it; retry",
                self.resource.name
            ),
        ))
    }

    /// Runs actions in order, recording what landed.
    async fn run_actions(
        &self,
        actions: &[&Action],
        id: &str,
        landed: &mut Vec<String>,
    ) -> Result<Option<Value>, ScimError> {
        let mut last = None;
        for action in actions {
            let body = match &action.call.body {
                Some(b) => Some(
                    b.render(&self.vars(Some(id)))
                        .map_err(|e| ScimError::bad_gateway(e.to_string()))?,
                ),
                None => None,
            };
            let response = self
                .send_ok(&action.call, Some(id), &[], body.as_ref())
                .await?;
            landed.push(action.call.route.clone());
            if let Some(obj) = self.object(&action.call, &response.body) {
                last = Some(obj.clone());
            }
        }
        Ok(last)
    }

    /// Writes a body and actions in the order the mapping gives: before-actions, the body,
    /// after-actions. A failure after something landed is a 502 that says what landed.
    async fn write(
        &self,
        id: &str,
        body: Option<Value>,
        actions: Vec<&Action>,
    ) -> Result<Value, ScimError> {
        let (before, after): (Vec<&Action>, Vec<&Action>) = actions
            .into_iter()
            .partition(|a| a.order == ActionOrder::BeforeWrite);
        let mut landed = Vec::new();
        let mut last = None;
        let partial = |landed: &[String], err: ScimError| -> ScimError {
            if landed.is_empty() {
                err
            } else {
                ScimError::bad_gateway(format!(
                    "partly applied: {} succeeded, then the next call failed ({} {})",
                    landed.join(", "),
                    err.status.as_u16(),
                    err.detail
                ))
            }
        };
        match self.run_actions(&before, id, &mut landed).await {
            Ok(obj) => last = obj.or(last),
            Err(e) => return Err(partial(&landed, e)),
        }
        if let Some(body) = body {
            let call = self
                .resource
                .ops
                .update
                .as_ref()
                .ok_or_else(|| not_supported("updates"))?;
            match self.update(call, id, body).await {
                Ok(response) => {
                    landed.push(format!("the {} update", self.resource.name));
                    if let Some(obj) = self.object(call, &response.body) {
                        last = Some(obj.clone());
                    }
                }
                Err(e) => return Err(partial(&landed, e)),
            }
        }
        match self.run_actions(&after, id, &mut landed).await {
            Ok(obj) => last = obj.or(last),
            Err(e) => return Err(partial(&landed, e)),
        }
        match last {
            Some(obj) => self.to_scim(&obj),
            None => self.fetch_doc(id).await,
        }
    }
}

fn retry_after(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `startIndex` (1-based; below 1 means 1) and `count` (clamped to `0..=max`, default
/// `max`) of a list request (RFC 7644 §3.4.2.4).
fn list_window(params: &ListParams, max: usize) -> Result<(usize, usize), ScimError> {
    let start_index = parse_index(params.start_index.as_deref(), "startIndex")?
        .unwrap_or(1)
        .max(1) as usize;
    let count = parse_index(params.count.as_deref(), "count")?
        .map_or(max, |c| c.clamp(0, max as i64) as usize);
    Ok((start_index, count))
}

fn parse_index(value: Option<&str>, name: &str) -> Result<Option<i64>, ScimError> {
    match value {
        None => Ok(None),
        Some(v) => v.trim().parse::<i64>().map(Some).map_err(|_| {
            ScimError::bad_request(ScimType::InvalidValue, format!("{name} must be an integer"))
        }),
    }
}

/// `attributes` / `excludedAttributes` on a resource (top-level and sub-attribute names).
fn project(
    doc: Value,
    attributes: Option<&[crate::scim::filter::AttrPath]>,
    excluded: &[crate::scim::filter::AttrPath],
) -> Value {
    use crate::mapping::scim_doc::get_ci;
    let Value::Object(mut map) = doc else {
        return doc;
    };
    if let Some(keep) = attributes {
        let mut out = serde_json::Map::new();
        for (k, v) in &map {
            if ["schemas", "id"].contains(&k.as_str()) {
                out.insert(k.clone(), v.clone());
                continue;
            }
            let wanted: Vec<_> = keep
                .iter()
                .filter(|p| match &p.urn {
                    Some(urn) if urn.eq_ignore_ascii_case(k) => true,
                    _ => p.name.eq_ignore_ascii_case(k),
                })
                .collect();
            if wanted.is_empty() {
                continue;
            }
            if wanted.iter().any(|p| {
                p.sub.is_none() && p.urn.as_deref().is_none_or(|u| !u.eq_ignore_ascii_case(k))
            }) {
                out.insert(k.clone(), v.clone());
            } else if let Value::Object(inner) = v {
                let mut sub = serde_json::Map::new();
                for p in wanted {
                    let key = if p.urn.as_deref().is_some_and(|u| u.eq_ignore_ascii_case(k)) {
                        Some(p.name.as_str())
                    } else {
                        p.sub.as_deref()
                    };
                    if let Some(key) = key {
                        if let Some(val) = get_ci(inner, key) {
                            sub.insert(key.to_owned(), val.clone());
                        }
                    }
                }
                out.insert(k.clone(), Value::Object(sub));
            } else {
                out.insert(k.clone(), v.clone());
            }
        }
        map = out;
    }
    for p in excluded {
        if p.urn.is_none()
            && (p.name.eq_ignore_ascii_case("id") || p.name.eq_ignore_ascii_case("schemas"))
        {
            continue;
        }
        let key = map
            .keys()
            .find(|k| k.eq_ignore_ascii_case(&p.name))
            .cloned();
        if let Some(key) = key {
            match &p.sub {
                None => {
                    map.remove(&key);
                }
                Some(sub) => {
                    if let Some(Value::Object(inner)) = map.get_mut(&key) {
                        if let Some(s) = inner.keys().find(|k| k.eq_ignore_ascii_case(sub)).cloned()
                        {
                            inner.remove(&s);
                        }
                    }
                }
            }
        }
    }
    // `schemas` lists the extensions the projected resource still carries.
    let present: Vec<String> = map.keys().cloned().collect();
    if let Some(Value::Array(schemas)) = map.get_mut("schemas") {
        let mut first = true;
        schemas.retain(|s| {
            let keep = first || s.as_str().is_some_and(|s| present.iter().any(|k| k == s));
            first = false;
            keep
        });
    }
    Value::Object(map)
}

fn parse_attr_list(
    value: Option<&str>,
) -> Result<Option<Vec<crate::scim::filter::AttrPath>>, ScimError> {
    let Some(text) = value else { return Ok(None) };
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            parse_attr_path(s).map_err(|e| {
                ScimError::bad_request(ScimType::InvalidValue, format!("attribute {s:?}: {e}"))
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// `GET /{endpoint}`: a ListResponse.
pub async fn list(
    State(gateway): State<Arc<Gateway>>,
    Authenticated(tenant): Authenticated,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
    params: ListParams,
) -> Result<Response, ScimError> {
    let ctx = ctx(gateway, &endpoint, tenant, &headers)?;
    search(&ctx, params).await
}

/// `POST /{endpoint}/.search` (RFC 7644 §3.4.3): the list query in a SearchRequest body.
pub async fn search_post(
    State(gateway): State<Arc<Gateway>>,
    Authenticated(tenant): Authenticated,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
    ScimJson(request): ScimJson,
) -> Result<Response, ScimError> {
    let ctx = ctx(gateway, &endpoint, tenant, &headers)?;
    search(&ctx, ListParams::from_search_request(&request)?).await
}

/// A ListResponse for one resource type.
async fn search(ctx: &Ctx, params: ListParams) -> Result<Response, ScimError> {
    if ctx.is_plain_read(&params) && params.filter.as_deref().is_none_or(|f| f.trim().is_empty()) {
        return list_plain(ctx, &params).await;
    }
    let (resources, total, start_index) = search_docs(ctx, &params, None).await?;
    Ok(list_response(resources, total, start_index))
}

/// The most common list (a page, no filter, projection or members): the ListResponse is
/// written straight from the upstream page, without SCIM documents in between. Its text
/// is what [`search_docs`] and [`list_response`] would give.
async fn list_plain(ctx: &Ctx, params: &ListParams) -> Result<Response, ScimError> {
    let call = ctx
        .resource
        .ops
        .list
        .as_ref()
        .ok_or_else(|| not_supported("listing"))?;
    let (start_index, count) = list_window(params, ctx.gateway.config.limits.max_results)?;
    let sort = ctx
        .resource
        .sort_query(params.sort_by.as_deref(), params.sort_order.as_deref())?;
    let (items, total) = ctx
        .fetch_window::<ListedObj>(call, None, &sort, start_index - 1, count)
        .await?;
    let body = write_list_response(&items, total, start_index, 1024, |obj, out| {
        ctx.write_listed(obj, out)
    })?;
    Ok(scim_json_response(StatusCode::OK, body))
}

/// A ListResponse's JSON text: the envelope, then each item written by `write` (a
/// resource, or an upstream object written as one). `per_item` sizes the buffer.
fn write_list_response<T, E>(
    items: &[T],
    total: u64,
    start_index: usize,
    per_item: usize,
    mut write: impl FnMut(&T, &mut Vec<u8>) -> Result<(), E>,
) -> Result<Vec<u8>, E> {
    let mut body = Vec::with_capacity(128 + items.len() * per_item);
    body.extend_from_slice(b"{\"schemas\":[\"");
    body.extend_from_slice(LIST_SCHEMA.as_bytes());
    body.extend_from_slice(
        format!(
            "\"],\"totalResults\":{total},\"startIndex\":{start_index},\"itemsPerPage\":{},\"Resources\":[",
            items.len()
        )
        .as_bytes(),
    );
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        write(item, &mut body)?;
    }
    body.extend_from_slice(b"]}");
    Ok(body)
}

fn list_response(resources: Vec<Value>, total: u64, start_index: usize) -> Response {
    let Ok(body) = write_list_response(&resources, total, start_index, 512, |doc, out| {
        // Writing a `Value` into a `Vec` cannot fail.
        let _ = serde_json::to_writer(&mut *out, doc);
        Ok::<(), std::convert::Infallible>(())
    });
    scim_json_response(StatusCode::OK, body)
}

/// `POST /.search` (RFC 7644 §3.4.3): one search over every resource type that lists,
/// results in resource-type order. A type whose attributes the filter does not name
/// contributes nothing.
pub async fn search_all(
    State(gateway): State<Arc<Gateway>>,
    Authenticated(tenant): Authenticated,
    headers: HeaderMap,
    ScimJson(request): ScimJson,
) -> Result<Response, ScimError> {
    let params = ListParams::from_search_request(&request)?;
    let (start_index, count) = list_window(&params, gateway.config.limits.max_results)?;
    let mapping = gateway.mapping.load_full();
    let mut all = Vec::new();
    let mut total = 0;
    for resource in mapping.resources.iter().filter(|r| r.ops.list.is_some()) {
        let ctx = ctx(
            gateway.clone(),
            &resource.endpoint,
            tenant.clone(),
            &headers,
        )?;
        // Each type's first `start_index - 1 + count` results are enough to cut the window.
        let window = start_index - 1 + count;
        match search_docs(&ctx, &params, Some((1, window))).await {
            Ok((docs, t, _)) => {
                total += t;
                all.extend(docs);
            }
            Err(e)
                if e.scim_type == Some(ScimType::InvalidFilter)
                    && params
                        .filter
                        .as_deref()
                        .is_some_and(|f| parse_filter(f).is_ok()) => {}
            Err(e) => return Err(e),
        }
    }
    let resources = all.into_iter().skip(start_index - 1).take(count).collect();
    Ok(list_response(resources, total, start_index))
}

/// Runs a list query: the projected resources, the total, and the start index answered.
/// `window` overrides the request's startIndex and count.
async fn search_docs(
    ctx: &Ctx,
    params: &ListParams,
    window: Option<(usize, usize)>,
) -> Result<(Vec<Value>, u64, usize), ScimError> {
    let call = ctx
        .resource
        .ops
        .list
        .as_ref()
        .ok_or_else(|| not_supported("listing"))?;
    let (start_index, count) = match window {
        Some(w) => w,
        None => list_window(params, ctx.gateway.config.limits.max_results)?,
    };
    let attributes = parse_attr_list(params.attributes.as_deref())?;
    let excluded = parse_attr_list(params.excluded_attributes.as_deref())?.unwrap_or_default();
    let filter: Option<Filter> = match params.filter.as_deref() {
        None => None,
        Some(text) if text.trim().is_empty() => None,
        Some(text) => Some(parse_filter(text).map_err(|e| {
            ScimError::bad_request(ScimType::InvalidFilter, format!("invalid filter: {e}"))
        })?),
    };
    let start = start_index - 1;
    // Every upstream list call this request makes carries the sort, scans included.
    let sort = ctx
        .resource
        .sort_query(params.sort_by.as_deref(), params.sort_order.as_deref())?;
    let (docs, total) = match &filter {
        None => {
            let (items, total) = ctx.fetch_window(call, None, &sort, start, count).await?;
            let docs = items
                .iter()
                .map(|o| ctx.to_scim(o))
                .collect::<Result<Vec<_>, _>>()?;
            (docs, total)
        }
        Some(filter) => match ctx.resource.plan_filter(filter)? {
            FilterPlan::ById(id) => {
                let found = if id_is_plausible(ctx.resource.id_kind, &id) {
                    ctx.fetch(&id).await?
                } else {
                    None
                };
                let mut docs = Vec::new();
                if let Some(obj) = found {
                    let doc = ctx.to_scim(&obj)?;
                    if ctx.resource.matches(&doc, filter) {
                        docs.push(doc);
                    }
                }
                let total = docs.len() as u64;
                (docs.into_iter().skip(start).take(count).collect(), total)
            }
            FilterPlan::Query {
                params,
                scan: false,
            } => {
                let query = [params.as_slice(), &sort].concat();
                let (items, total) = ctx.fetch_window(call, None, &query, start, count).await?;
                let mut docs = Vec::with_capacity(items.len());
                for obj in &items {
                    let doc = ctx.to_scim(obj)?;
                    // A mistyped parameter name is silently ignored by many APIs, which would
                    // return everyone: never pass such an answer on.
                    if !ctx.resource.matches(&doc, filter) {
                        return Err(ScimError::bad_gateway(format!(
                            "the upstream returned a {} that does not match the filter pushed down as {}; check filter.push_down in the mapping",
                            ctx.resource.name,
                            params.iter().map(|(k, _)| format!("`{k}`")).collect::<Vec<_>>().join(", ")
                        )));
                    }
                    docs.push(doc);
                }
                (docs, total)
            }
            FilterPlan::Query { params, scan: true } => {
                let limit = match ctx.resource.filter.unsupported {
                    Unsupported::Scan(limit) => limit,
                    Unsupported::Reject => 0,
                };
                let items = ctx
                    .scan(call, &[params.as_slice(), &sort].concat(), limit)
                    .await?;
                let mut matched = Vec::new();
                for obj in &items {
                    let doc = ctx.to_scim(obj)?;
                    if ctx.resource.matches(&doc, filter) {
                        matched.push(doc);
                    }
                }
                let total = matched.len() as u64;
                (matched.into_iter().skip(start).take(count).collect(), total)
            }
        },
    };
    let docs = ctx
        .with_members_all(docs, attributes.as_deref(), &excluded)
        .await?;
    let resources: Vec<Value> = docs
        .into_iter()
        .map(|d| project(d, attributes.as_deref(), &excluded))
        .collect();
    Ok((resources, total, start_index))
}

/// `GET /{endpoint}/{id}`.
pub async fn get_one(
    State(gateway): State<Arc<Gateway>>,
    Authenticated(tenant): Authenticated,
    Path((endpoint, id)): Path<(String, String)>,
    headers: HeaderMap,
    params: ListParams,
) -> Result<Response, ScimError> {
    let ctx = ctx(gateway, &endpoint, tenant, &headers)?;
    ctx.check_id(&id)?;
    if ctx.is_plain_read(&params) {
        let obj = ctx
            .fetch_plain(&id)
            .await?
            .ok_or_else(|| ctx.not_found(&id))?;
        let mut body = Vec::with_capacity(1024);
        ctx.write_listed(&obj, &mut body)?;
        return Ok(scim_json_response(StatusCode::OK, body));
    }
    let attributes = parse_attr_list(params.attributes.as_deref())?;
    let excluded = parse_attr_list(params.excluded_attributes.as_deref())?.unwrap_or_default();
    let doc = ctx.fetch_doc(&id).await?;
    if let Some(tag) = etag(&doc) {
        if precondition_matches(&headers, header::IF_NONE_MATCH, tag) {
            let mut response = StatusCode::NOT_MODIFIED.into_response();
            set_etag(&mut response, etag_header(&doc));
            return Ok(response);
        }
    }
    let doc = ctx
        .with_members(doc, &id, attributes.as_deref(), &excluded)
        .await?;
    let tag = etag_header(&doc);
    let mut response = scim_response(
        StatusCode::OK,
        &project(doc, attributes.as_deref(), &excluded),
    );
    set_etag(&mut response, tag);
    Ok(response)
}

/// `POST /{endpoint}`: 201 with `Location`.
pub async fn create(
    State(gateway): State<Arc<Gateway>>,
    Authenticated(tenant): Authenticated,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
    ScimJson(request): ScimJson,
) -> Result<Response, ScimError> {
    let ctx = ctx(gateway, &endpoint, tenant, &headers)?;
    let call = ctx
        .resource
        .ops
        .create
        .as_ref()
        .ok_or_else(|| not_supported("creation"))?;
    ctx.resource.validate_request(&request)?;
    let member_edit = ctx.requested_members(&request)?;
    // A value no action can produce (`"active": "perhaps"`) must be refused before the
    // object is created, not after: a 400 that left a user behind would make the client's
    // retry a 409. The real actions are chosen once the created object is known.
    ctx.resource.actions_for(&Value::Null, &request)?;
    let body = ctx
        .resource
        .body_for(&request, WriteMode::Create)?
        .unwrap_or_else(|| json!({}));
    ctx.check_unique(&request, None).await?;
    let body = ctx.resource.wrap(body);
    let response = ctx.send_ok(call, None, &[], Some(&body)).await?;
    let created = ctx
        .object(call, &response.body)
        .ok_or_else(|| {
            ScimError::bad_gateway(format!(
                "the upstream answer to {} holds no {}",
                call.route, ctx.resource.name
            ))
        })?
        .clone();
    let id = ctx
        .resource
        .upstream_id(&created)
        .map_err(|e| ScimError::bad_gateway(e.to_string()))?;
    let mut doc = ctx.to_scim(&created)?;
    let actions = ctx.resource.actions_for(&doc, &request)?;
    if !actions.is_empty() {
        // The object exists now; what remains is the actions (all of them run after creation).
        let mut landed = vec![format!("{} {} was created", ctx.resource.name, id)];
        let last = ctx
            .run_actions(&actions, &id, &mut landed)
            .await
            .map_err(|e| {
                ScimError::bad_gateway(format!(
                    "partly applied: {}, then a follow-up call failed ({} {})",
                    landed.join(", "),
                    e.status.as_u16(),
                    e.detail
                ))
            })?;
        doc = match last {
            Some(obj) => ctx.to_scim(&obj)?,
            None => ctx.fetch_doc(&id).await?,
        };
    }
    if let Some(edit) = member_edit {
        ctx.apply_member_edit(&id, edit).await.map_err(|e| {
            let mut e = e;
            e.detail = format!(
                "{} {id} was created, but its members were not all set: {}",
                ctx.resource.name, e.detail
            );
            e
        })?;
        doc = ctx.with_members(doc, &id, None, &[]).await?;
    }
    let location = doc["meta"]["location"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut response = scim_response(StatusCode::CREATED, &doc);
    set_etag(&mut response, etag_header(&doc));
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// `PUT /{endpoint}/{id}`: writes every attribute present; omitted ones per the mapping.
pub async fn replace(
    State(gateway): State<Arc<Gateway>>,
    Authenticated(tenant): Authenticated,
    Path((endpoint, id)): Path<(String, String)>,
    headers: HeaderMap,
    ScimJson(request): ScimJson,
) -> Result<Response, ScimError> {
    let ctx = ctx(gateway, &endpoint, tenant, &headers)?;
    ctx.check_id(&id)?;
    ctx.resource.validate_request(&request)?;
    let member_edit = ctx.requested_members(&request)?;
    let current = ctx.fetch_doc(&id).await?;
    check_if_match(&headers, &current)?;
    ctx.check_unique(&request, Some((&id, &current))).await?;
    let actions = ctx.resource.actions_for(&current, &request)?;
    let body = ctx.resource.body_for(&request, WriteMode::Replace)?;
    let mut doc = if body.is_some() || !actions.is_empty() {
        ctx.write(&id, body, actions).await?
    } else {
        current
    };
    if let Some(edit) = member_edit {
        ctx.apply_member_edit(&id, edit).await?;
    }
    if ctx.resource.members.is_some() {
        doc = ctx.with_members(doc, &id, None, &[]).await?;
    }
    let mut response = scim_response(StatusCode::OK, &doc);
    set_etag(&mut response, etag_header(&doc));
    Ok(response)
}

/// `PATCH /{endpoint}/{id}`: operations applied to the current SCIM document, then only the
/// changed attributes written.
pub async fn patch(
    State(gateway): State<Arc<Gateway>>,
    Authenticated(tenant): Authenticated,
    Path((endpoint, id)): Path<(String, String)>,
    headers: HeaderMap,
    params: ListParams,
    ScimJson(request): ScimJson,
) -> Result<Response, ScimError> {
    let ctx = ctx(gateway, &endpoint, tenant, &headers)?;
    ctx.check_id(&id)?;
    let attributes = parse_attr_list(params.attributes.as_deref())?;
    let excluded = parse_attr_list(params.excluded_attributes.as_deref())?.unwrap_or_default();
    let ops = parse_patch(&request)?;
    super::limits::check_patch_operations(&ctx.gateway.config.limits, ops.len())?;
    let (ops, member_edit) = if ctx.resource.members.is_some() {
        split_member_ops(ops)?
    } else {
        (ops, MemberEdit::default())
    };
    if member_edit.touched {
        ctx.check_member_values(&member_edit)?;
    }
    let current = ctx.fetch_doc(&id).await?;
    check_if_match(&headers, &current)?;
    let mut updated = current.clone();
    apply(&mut updated, &ops, ctx.resource.as_ref())?;
    ctx.resource.validate_values(&updated)?;
    ctx.resource.check_removals(&current, &updated)?;
    for a in ctx.resource.attributes.iter().filter(|a| a.required) {
        if crate::mapping::scim_doc::get(&updated, &a.scim).is_none() {
            return Err(ScimError::bad_request(
                ScimType::InvalidValue,
                format!("{} is required and cannot be removed", a.key),
            ));
        }
    }
    let changed = ctx.resource.changed_attributes(&current, &updated);
    ctx.check_unique(&updated, Some((&id, &current))).await?;
    let actions = ctx.resource.actions_for(&current, &updated)?;
    let body = ctx
        .resource
        .body_for(&updated, WriteMode::Changed(&changed))?;
    let wrote = body.is_some() || !actions.is_empty();
    let mut doc = if wrote {
        ctx.write(&id, body, actions).await?
    } else {
        current
    };
    if member_edit.touched {
        ctx.apply_member_edit(&id, member_edit)
            .await
            .map_err(|mut e| {
                if wrote {
                    e.detail = format!("the other attributes were written; {}", e.detail);
                }
                e
            })?;
    }
    // RFC 7644 §3.5.2: 204 without a body, or 200 carrying the resource.
    let asked = attributes.is_some() || !excluded.is_empty();
    if ctx.resource.patch_response == PatchResponse::NoContent && !asked {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    if ctx.resource.members.is_some() {
        doc = ctx.fetch_doc(&id).await?;
        doc = ctx
            .with_members(doc, &id, attributes.as_deref(), &excluded)
            .await?;
    }
    let tag = etag_header(&doc);
    let mut response = scim_response(
        StatusCode::OK,
        &project(doc, attributes.as_deref(), &excluded),
    );
    set_etag(&mut response, tag);
    Ok(response)
}

/// `DELETE /{endpoint}/{id}`: 204.
pub async fn delete(
    State(gateway): State<Arc<Gateway>>,
    Authenticated(tenant): Authenticated,
    Path((endpoint, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    let ctx = ctx(gateway, &endpoint, tenant, &headers)?;
    ctx.check_id(&id)?;
    let call = ctx
        .resource
        .ops
        .delete
        .as_ref()
        .ok_or_else(|| not_supported("deletion"))?;
    if headers.contains_key(header::IF_MATCH) {
        check_if_match(&headers, &ctx.fetch_doc(&id).await?)?;
    }
    ctx.send_ok_allow_empty(call, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

impl Ctx {
    async fn send_ok_allow_empty(&self, call: &Call, id: &str) -> Result<(), ScimError> {
        // Soft deletes are writes with a body (`{"deleted": true}`).
        let body = match &call.body {
            Some(b) => Some(
                b.render(&self.vars(Some(id)))
                    .map_err(|e| ScimError::bad_gateway(e.to_string()))?,
            ),
            None => None,
        };
        let response = self.send(call, Some(id), &[], body.as_ref()).await?;
        if self.is_error(&response) {
            return Err(self.upstream_error(&response, Some(id)));
        }
        Ok(())
    }
}

/// Does a read want `members` (skipping their calls when it does not)?
fn wants_members(attributes: Option<&[AttrPath]>, excluded: &[AttrPath]) -> bool {
    let is_members = |p: &AttrPath| p.urn.is_none() && p.name.eq_ignore_ascii_case("members");
    if excluded.iter().any(|p| is_members(p) && p.sub.is_none()) {
        return false;
    }
    attributes.is_none_or(|list| list.iter().any(is_members))
}

impl Ctx {
    /// Adds `members` to a resource document when the resource has them and they are wanted.
    async fn with_members(
        &self,
        mut doc: Value,
        id: &str,
        attributes: Option<&[AttrPath]>,
        excluded: &[AttrPath],
    ) -> Result<Value, ScimError> {
        if self.resource.members.is_none() || !wants_members(attributes, excluded) {
            return Ok(doc);
        }
        let members = self.read_members(id).await?;
        if let Value::Object(map) = &mut doc {
            map.insert("members".into(), self.members_json(&members));
        }
        Ok(doc)
    }

    /// [`Ctx::with_members`] for a page of resources, a few groups at a time.
    async fn with_members_all(
        &self,
        docs: Vec<Value>,
        attributes: Option<&[AttrPath]>,
        excluded: &[AttrPath],
    ) -> Result<Vec<Value>, ScimError> {
        use futures::stream::{self, StreamExt, TryStreamExt};
        if self.resource.members.is_none() || !wants_members(attributes, excluded) {
            return Ok(docs);
        }
        stream::iter(docs)
            .map(|doc| async move {
                let id = doc["id"].as_str().unwrap_or_default().to_owned();
                self.with_members(doc, &id, attributes, excluded).await
            })
            .buffered(4)
            .try_collect()
            .await
    }

    /// The `members` of a POST/PUT body as a whole-set edit (`None` when absent).
    fn requested_members(&self, request: &Value) -> Result<Option<MemberEdit>, ScimError> {
        if self.resource.members.is_none() {
            return Ok(None);
        }
        let Some(value) = request
            .as_object()
            .and_then(|o| crate::mapping::scim_doc::get_ci(o, "members"))
        else {
            return Ok(None);
        };
        let edit = MemberEdit {
            target: Some(member_values(value)?.into_iter().collect()),
            changes: Default::default(),
            touched: true,
        };
        self.check_member_values(&edit)?;
        Ok(Some(edit))
    }
}

/// Lays `fields` over `target`: objects merge key by key, anything else replaces.
fn overlay(target: &mut Value, fields: Value) {
    match (target, fields) {
        (Value::Object(into), Value::Object(from)) => {
            for (k, v) in from {
                match into.get_mut(&k) {
                    Some(existing) if existing.is_object() && v.is_object() => overlay(existing, v),
                    _ => {
                        into.insert(k, v);
                    }
                }
            }
        }
        (target, other) => *target = other,
    }
}

/// A short randomised pause before retrying after a write conflict, growing with the
/// attempt, so that writers that collided do not collide again in lockstep.
pub(super) async fn conflict_pause(attempt: u32) {
    use rand::Rng;
    let ceiling_ms = 5u64 << attempt.min(5);
    let pause = rand::rng().random_range(1..=ceiling_ms);
    tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
}

/// The resource's version (`meta.version`), when the mapping declares one.
fn etag(doc: &Value) -> Option<&str> {
    doc["meta"]["version"].as_str()
}

/// The `ETag` header for a document's `meta.version`, taken before the document is
/// projected (which may drop `meta`).
fn etag_header(doc: &Value) -> Option<HeaderValue> {
    etag(doc).and_then(|t| HeaderValue::from_str(t).ok())
}

fn set_etag(response: &mut Response, tag: Option<HeaderValue>) {
    if let Some(v) = tag {
        response.headers_mut().insert(header::ETAG, v);
    }
}

/// Does an `If-Match`/`If-None-Match` header name this entity tag? `*` names any; tags
/// compare weakly (RFC 9110 §8.8.3.2), since SCIM versions are weak.
fn precondition_matches(headers: &HeaderMap, name: header::HeaderName, tag: &str) -> bool {
    let strip = |t: &str| {
        t.trim()
            .trim_start_matches("W/")
            .trim_matches('"')
            .to_owned()
    };
    let want = strip(tag);
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == "*" || strip(t) == want)
}

/// RFC 7644 §3.14: a write with `If-Match` proceeds only on the current version.
fn check_if_match(headers: &HeaderMap, current: &Value) -> Result<(), ScimError> {
    if !headers.contains_key(header::IF_MATCH) {
        return Ok(());
    }
    match etag(current) {
        Some(tag) if precondition_matches(headers, header::IF_MATCH, tag) => Ok(()),
        Some(_) => Err(ScimError::new(
            StatusCode::PRECONDITION_FAILED,
            "the resource has changed since that version was read",
        )),
        // Without versions there is nothing to compare; only `*` can hold.
        None if precondition_matches(headers, header::IF_MATCH, "") => Ok(()),
        None => Err(ScimError::new(
            StatusCode::PRECONDITION_FAILED,
            "this resource type has no versions to match",
        )),
    }
}
