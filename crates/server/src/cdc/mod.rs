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
//! - `tail`: [`TailHub`]: the live tail over Flight; one session on the slot shared by every tail,
//!   a bounded replay buffer, per-client batching by size or latency, LSN resume tickets.
//!
//! The replication protocol itself (framing, authentication, TLS, keepalives, feedback) is the
//! `pgwire-replication` crate's.

mod connect;
mod pgoutput;
mod setup;
mod stream;
mod tail;

pub use setup::{setup, teardown, Publish, SetupReport, SetupRequest, Unsafe};
pub use stream::{
    change_schema, ChangeBatch, ChangeStream, ExportedSlot, StreamOptions, CHANGE_COLUMN,
    COMMIT_TIME_COLUMN, LSN_COLUMN,
};

pub use tail::{parse_lsn, tail_flight_data, tail_request, TailHub, TailItem, TailSettings};

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
    /// A SQL statement or discovery failed (classified once, as for reads).
    #[error("{0}")]
    Database(#[from] crate::error::DbError),
    /// The replication session failed.
    #[error("replication: {0}")]
    Replication(#[from] pgwire_replication::PgWireError),
    /// The server sent something this client does not read.
    #[error("replication protocol: {0}")]
    Protocol(String),
    /// A value could not be decoded.
    #[error("decoding a change: {0}")]
    Decode(#[from] pgarrow::Error),
    /// The changes asked for are no longer held, or the slot is missing: start again.
    #[error("{0}")]
    Gone(String),
    /// A tail read slower than changes arrived and was cut; it resumes from its last ticket.
    #[error("{0}")]
    Behind(String),
    /// The shared replication session ended.
    #[error("{0}")]
    Unavailable(String),
}

impl From<tokio_postgres::Error> for CdcError {
    fn from(e: tokio_postgres::Error) -> Self {
        CdcError::Database(e.into())
    }
}

impl From<&CdcError> for tonic::Status {
    fn from(e: &CdcError) -> Self {
        let text = e.to_string();
        match e {
            CdcError::Refused(_) => tonic::Status::invalid_argument(text),
            CdcError::Unsupported(_) => tonic::Status::unimplemented(text),
            CdcError::NotFound(_) => tonic::Status::not_found(text),
            CdcError::Gone(_) => tonic::Status::failed_precondition(text),
            CdcError::Behind(_) => tonic::Status::aborted(text),
            CdcError::Unavailable(_) => tonic::Status::unavailable(text),
            CdcError::Replication(_) => {
                tracing::warn!("live tail: {text}");
                tonic::Status::unavailable(
                    "the live tail's replication session failed (the server log says why)",
                )
            }
            CdcError::Database(db) => crate::error::Error::Database(db.clone()).into(),
            CdcError::Protocol(_) | CdcError::Decode(_) => {
                tracing::error!("live tail: {text}");
                tonic::Status::internal(
                    "the change stream could not be decoded (the server log says why)",
                )
            }
        }
    }
}

impl From<CdcError> for tonic::Status {
    fn from(e: CdcError) -> Self {
        (&e).into()
    }
}
