//! scimgate: a stateless SCIM 2.0 gateway that serves SCIM by calling an existing REST API,
//! as declared in mapping files.
//!
//! - [`scim`]: the protocol (errors, filter and path grammar, PATCH).
//! - [`mapping`]: the mapping language, its compiler and engine.
//! - [`upstream`]: the HTTP client for the mapped API.
//! - [`server`]: HTTP routing, authentication, the SCIM operations.
//! - [`config`]: `config.toml` and `SCIMGATE_*` settings.
//! - [`demo`]: an in-memory implementation of the Blacksmith API for `scimgate demo` and tests.
//! - [`fixture`]: the gateway run in-process against a made-up or scripted upstream, for
//!   `scimgate explain` and `scimgate test`.
//! - [`cli`]: the command line.

pub mod cli;
pub mod config;
pub mod demo;
pub mod fixture;
pub mod mapping;
pub mod scim;
pub mod server;
pub mod upstream;
