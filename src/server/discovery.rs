//! `/ServiceProviderConfig`, `/Schemas`, `/ResourceTypes`: generated from the mapping in use.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use super::request::{base_url, scim_response};
use super::{Authenticated, Gateway};
use crate::mapping::discovery::{self, Capabilities};
use crate::scim::{ScimError, LIST_SCHEMA};

fn base(gateway: &Gateway, headers: &HeaderMap) -> String {
    base_url(
        gateway.config.public_url.as_deref(),
        gateway.config.base_path_trimmed(),
        headers,
    )
}

fn list(resources: Vec<Value>) -> Response {
    scim_response(
        StatusCode::OK,
        &json!({
            "schemas": [LIST_SCHEMA],
            "totalResults": resources.len(),
            "startIndex": 1,
            "itemsPerPage": resources.len(),
            "Resources": resources,
        }),
    )
}

/// `GET /ServiceProviderConfig`.
pub async fn service_provider_config(
    State(gateway): State<Arc<Gateway>>,
    _: Authenticated,
    headers: HeaderMap,
) -> Response {
    let mapping = gateway.mapping.load();
    let caps = Capabilities {
        max_results: gateway.config.limits.max_results,
    };
    scim_response(
        StatusCode::OK,
        &discovery::service_provider_config(&mapping, caps, &base(&gateway, &headers)),
    )
}

/// `GET /ResourceTypes`.
pub async fn resource_types(
    State(gateway): State<Arc<Gateway>>,
    _: Authenticated,
    headers: HeaderMap,
) -> Response {
    let mapping = gateway.mapping.load();
    let base = base(&gateway, &headers);
    list(
        mapping
            .resources
            .iter()
            .map(|r| discovery::resource_type(r, &base))
            .collect(),
    )
}

/// `GET /ResourceTypes/{id}`.
pub async fn resource_type(
    State(gateway): State<Arc<Gateway>>,
    _: Authenticated,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    let mapping = gateway.mapping.load();
    let r = mapping
        .resources
        .iter()
        .find(|r| r.name.eq_ignore_ascii_case(&id))
        .ok_or_else(|| ScimError::not_found("no such resource type"))?;
    Ok(scim_response(
        StatusCode::OK,
        &discovery::resource_type(r, &base(&gateway, &headers)),
    ))
}

/// `GET /Schemas`.
pub async fn schemas(
    State(gateway): State<Arc<Gateway>>,
    _: Authenticated,
    headers: HeaderMap,
) -> Response {
    let mapping = gateway.mapping.load();
    let base = base(&gateway, &headers);
    list(
        discovery::schema_ids(&mapping)
            .iter()
            .filter_map(|id| discovery::schema(&mapping, id, &base))
            .collect(),
    )
}

/// `GET /Schemas/{id}`.
pub async fn schema(
    State(gateway): State<Arc<Gateway>>,
    _: Authenticated,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    let mapping = gateway.mapping.load();
    let doc = discovery::schema(&mapping, &id, &base(&gateway, &headers))
        .ok_or_else(|| ScimError::not_found("no such schema"))?;
    Ok(scim_response(StatusCode::OK, &doc))
}
