//! Change data capture from logical decoding (`pgoutput`), with chunks mapped to their hypertable.
//!
//! # Layout
//! - `setup`: `hyperflight cdc setup` / `teardown`: the publication (the chunk schema, so chunks
//!   made later are covered) and the slot; refuses what would make a user's UPDATE or DELETE fail.
//! - `connect`: the replication session's settings from the same `pgconn` target as every other
//!   connection (what the replication client cannot do is refused, not worked around).
//! - `pgoutput`: the Relation, Insert, Update and Delete messages; never panics.
//! - `stream`: [`ChangeStream`]: chunks → hypertables, TimescaleDB's compression moves left out,
//!   each transaction's rows decoded by `pgarrow` (binary values, the same type table as reads).
//!
//! The replication protocol itself (framing, authentication, TLS, keepalives, feedback) is the
//! `pgwire-replication` crate's.

mod connect;
mod pgoutput;
mod setup;
mod stream;

pub use setup::{setup, teardown, Publish, SetupReport, SetupRequest, Unsafe};
pub use stream::{
    change_schema, ChangeBatch, ChangeStream, StreamOptions, CHANGE_COLUMN, COMMIT_TIME_COLUMN,
    LSN_COLUMN,
};

pub use crate::catalog::QualifiedName;

/// Why setting up or streaming changes failed.
#[derive(Debug, thiserror::Error)]
pub enum CdcError {
    /// The set-up would be unsafe or cannot be done as asked; the message says why and what to do.
    #[error("{0}")]
    Refused(String),
    /// Something change streams cannot do yet; the message names it.
    #[error("{0}")]
    Unsupported(String),
    /// A followed table is not exposed (or does not exist).
    #[error("no exposed table {0}")]
    NotFound(String),
    /// A SQL statement failed.
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
    /// Discovery failed.
    #[error("{0}")]
    Catalog(#[from] crate::error::DbError),
    /// The replication session failed.
    #[error("replication: {0}")]
    Replication(#[from] pgwire_replication::PgWireError),
    /// The server sent something this client does not read.
    #[error("replication protocol: {0}")]
    Protocol(String),
    /// A value could not be decoded.
    #[error("decoding a change: {0}")]
    Decode(#[from] pgarrow::Error),
}
