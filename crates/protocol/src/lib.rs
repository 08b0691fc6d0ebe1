//! # hyperflight-protocol
//!
//! The wire contract between a hyperflight server and its clients, as types that the server and every
//! Rust client (the Airbyte source, the load test) share. The Python client mirrors these types and
//! is tested against the same JSON fixtures (`fixtures/`), so neither side can drift alone.
//!
//! # Layout
//! - [`command`]: the `CMD` descriptor's JSON ([`Command`]): table, columns, time window, snapshot.
//! - [`endpoint`]: each endpoint's `app_metadata` JSON ([`EndpointMetadata`], [`EndpointKind`]).
//! - [`table`]: facts the server publishes in a schema's metadata ([`TableFacts`]): kind, time
//!   dimension, primary key, so no client needs to query the database for them.
//! - [`action`]: DoAction names ([`ActionName`]) and the `health` answer ([`Health`]).
//! - [`status`]: gRPC code names and the one retry classification ([`classify`]).
//! - `client` (feature `client`): connect with URL, TLS, token and message limits; a DoGet loop
//!   that resumes from the last batch's ticket.

pub mod action;
pub mod command;
pub mod endpoint;
pub mod status;
pub mod table;

#[cfg(feature = "client")]
pub mod client;

pub use action::{ActionName, Health};
pub use command::{Bound, Command, TableRef};
pub use endpoint::{EndpointKind, EndpointMetadata};
pub use status::{classify, code_name, Retry};
pub use table::{TableFacts, TableKind};
