//! The SCIM 2.0 protocol side: errors, filters and attribute paths, PATCH, list answers.
//! Nothing here knows about any upstream API.

pub mod error;
pub mod filter;
pub mod membership;
pub mod patch;
pub mod schema;

pub use error::{ScimError, ScimType};

/// `Content-Type` of every SCIM answer.
pub const MEDIA_TYPE: &str = "application/scim+json";
/// Schema URN of error bodies.
pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
/// Schema URN of list answers.
pub const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
/// Schema URN of PATCH requests.
pub const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
