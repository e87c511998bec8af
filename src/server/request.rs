//! Reading SCIM requests: JSON bodies, list parameters, the externally visible base URL,
//! and writing SCIM answers.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::scim::{ScimError, ScimType, MEDIA_TYPE};

/// A JSON request body; unreadable or oversized bodies become SCIM errors.
pub struct ScimJson(pub Value);

impl<S: Send + Sync> FromRequest<S> for ScimJson {
    type Rejection = ScimError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            let status = rejection.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ScimError::new(
                    status,
                    "the request body is larger than this gateway accepts",
                )
            } else {
                ScimError::bad_request(
                    ScimType::InvalidSyntax,
                    "the request body could not be read",
                )
            }
        })?;
        serde_json::from_slice(&bytes).map(ScimJson).map_err(|e| {
            ScimError::bad_request(
                ScimType::InvalidSyntax,
                format!(
                    "the request body is not valid JSON (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            )
        })
    }
}

/// The raw query string, parsed by name case-insensitively.
#[derive(Debug, Default)]
pub struct ListParams {
    pub filter: Option<String>,
    pub start_index: Option<String>,
    pub count: Option<String>,
    pub attributes: Option<String>,
    pub excluded_attributes: Option<String>,
    /// `sortBy` (RFC 7644 §3.4.2.3).
    pub sort_by: Option<String>,
    /// `sortOrder`: `ascending` or `descending`.
    pub sort_order: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for ListParams {
    type Rejection = ScimError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let mut params = ListParams::default();
        let Some(query) = parts.uri.query() else {
            return Ok(params);
        };
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            let slot = match k.to_ascii_lowercase().as_str() {
                "filter" => &mut params.filter,
                "startindex" => &mut params.start_index,
                "count" => &mut params.count,
                "attributes" => &mut params.attributes,
                "excludedattributes" => &mut params.excluded_attributes,
                "sortby" => &mut params.sort_by,
                "sortorder" => &mut params.sort_order,
                _ => continue,
            };
            *slot = Some(v.into_owned());
        }
        Ok(params)
    }
}

impl ListParams {
    /// The query of a `POST …/.search` body (RFC 7644 §3.4.3), as list parameters.
    pub fn from_search_request(body: &Value) -> Result<ListParams, ScimError> {
        let obj = body.as_object().ok_or_else(|| {
            ScimError::bad_request(
                ScimType::InvalidSyntax,
                "a SearchRequest must be a JSON object",
            )
        })?;
        let is_search = obj
            .get("schemas")
            .and_then(Value::as_array)
            .is_some_and(|s| {
                s.iter().any(|s| {
                    s.as_str()
                        .is_some_and(|s| s.eq_ignore_ascii_case(SEARCH_REQUEST_SCHEMA))
                })
            });
        if !is_search {
            return Err(ScimError::bad_request(
                ScimType::InvalidSyntax,
                format!("`schemas` must list {SEARCH_REQUEST_SCHEMA}"),
            ));
        }
        let text = |key: &str| -> Result<Option<String>, ScimError> {
            match crate::mapping::scim_doc::get_ci(obj, key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(Value::Number(n)) => Ok(Some(n.to_string())),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|i| i.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .map(|list| Some(list.join(",")))
                    .ok_or_else(|| {
                        ScimError::bad_request(
                            ScimType::InvalidValue,
                            format!("{key} must list strings"),
                        )
                    }),
                Some(_) => Err(ScimError::bad_request(
                    ScimType::InvalidValue,
                    format!("{key} has the wrong type"),
                )),
            }
        };
        Ok(ListParams {
            filter: text("filter")?,
            start_index: text("startIndex")?,
            count: text("count")?,
            attributes: text("attributes")?,
            excluded_attributes: text("excludedAttributes")?,
            sort_by: text("sortBy")?,
            sort_order: text("sortOrder")?,
        })
    }
}

/// Schema URN of `POST …/.search` bodies.
pub const SEARCH_REQUEST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";

/// The SCIM base URL as clients see it: `public_url` when configured, else from `Host`.
pub fn base_url(public_url: Option<&str>, base_path: &str, headers: &HeaderMap) -> String {
    // Concatenated rather than `format!`ed: this runs for every request.
    let (origin, host) = match public_url {
        Some(public) => (public.trim_end_matches('/'), ""),
        None => (
            "http://",
            headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| h.bytes().all(|b| b.is_ascii_graphic()))
                .unwrap_or("localhost"),
        ),
    };
    let mut url = String::with_capacity(origin.len() + host.len() + base_path.len());
    url.push_str(origin);
    url.push_str(host);
    url.push_str(base_path);
    url
}

/// A SCIM JSON answer.
pub fn scim_response<T: serde::Serialize + ?Sized>(status: StatusCode, body: &T) -> Response {
    scim_json_response(status, serde_json::to_vec(body).unwrap_or_default())
}

/// A SCIM answer whose JSON text is already written.
pub fn scim_json_response(status: StatusCode, bytes: Vec<u8>) -> Response {
    let mut response = (status, bytes).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE));
    response
}
