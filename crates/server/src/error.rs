//! The service's error type, PostgreSQL error classification, and the one mapping to `tonic::Status`.
//!
//! Client faults (bad tickets, bad commands, unknown tables) keep their message; server faults are
//! logged in full and reach the client as a short cause, never as raw database text.

use tonic::{Code, Status};

use crate::db::PoolError;
use crate::ticket::TicketError;

/// Everything a Flight call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The ticket failed verification.
    #[error(transparent)]
    Ticket(#[from] TicketError),
    /// A descriptor, command or action the server cannot accept; the message names the problem.
    #[error("{0}")]
    InvalidRequest(String),
    /// An RPC, action or command this server does not implement; the message names it.
    #[error("{0}")]
    Unimplemented(String),
    /// A table this server does not expose (absent, in a hidden schema, or not readable).
    #[error("table {0} not found")]
    UnknownTable(String),
    /// A chunk that was planned but is gone (e.g. `drop_chunks` ran since).
    #[error("chunk {0} no longer exists; call GetFlightInfo again")]
    ChunkGone(String),
    /// The relation was rewritten since the ticket was issued: block positions mean nothing now.
    #[error("relation {0} was rewritten since the ticket was issued; re-plan this chunk with GetFlightInfo")]
    Rewritten(String),
    /// A consistent-snapshot ticket whose snapshot the server no longer holds.
    #[error("snapshot {0} is not held by this server (all endpoints were read, it expired, or another server of the fleet planned it: consistent_snapshot endpoints are read from the server that planned them); call GetFlightInfo again")]
    SnapshotGone(String),
    /// The client took no batch for this long: its scan gave up the slot; resume from the last
    /// ticket.
    #[error("the client read nothing for {}s, so this stream gave up its scan slot; resume from the last batch's ticket", .0.as_secs())]
    Stalled(std::time::Duration),
    /// The server is shutting down and starts no new scans.
    #[error("server is shutting down")]
    ShuttingDown,
    /// This server's database is a hot standby that has not yet replayed the WAL a ticket's plan
    /// was made at: its rows could be older than the plan.
    #[error("this server's database is a standby that has replayed WAL to {replayed}, short of the plan's {needed} after waiting {waited:?}; read this endpoint from another location")]
    ReplicaBehind {
        /// The standby's replay position.
        replayed: String,
        /// The ticket's position.
        needed: String,
        /// How long the server waited (`replay_wait_ms`).
        waited: std::time::Duration,
    },
    /// A server-wide limit is reached; retry later.
    #[error("{0}")]
    Busy(String),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] DbError),
    /// COPY data the server could not turn into Arrow.
    #[error(transparent)]
    Decode(#[from] pgarrow::Error),
    /// A live tail failed; its own mapping (`From<CdcError> for Status`) gives the status.
    #[error(transparent)]
    Tail(#[from] crate::cdc::CdcError),
    /// Arrow failed to build or encode a batch.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

/// A database failure, classified once by SQLSTATE class.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DbError {
    /// Cannot reach the database, or it went away (class 08, admin shutdown, pool timeout, I/O).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A new connection failed; the error says what to fix (and holds no secret).
    #[error("cannot connect to the database: {0}")]
    Connect(pgconn::ConnectError),
    /// `statement_timeout` or a cancel ended the statement (57014).
    #[error("database statement timed out or was cancelled")]
    Cancelled,
    /// A hot standby cancelled the read because replaying the primary's WAL needed what it held
    /// (40001 "conflict with recovery", or 40P01 for a buffer-pin deadlock): the read is resumed.
    #[error("cancelled by a recovery conflict on the standby: {0}")]
    RecoveryConflict(String),
    /// The relation named in the statement does not exist (42P01).
    #[error("relation does not exist")]
    UndefinedTable,
    /// Out of connections, memory or disk on the database side (class 53).
    #[error("database out of resources: {0}")]
    Resources(String),
    /// The database refused for lack of privilege (42501).
    #[error("permission denied by the database")]
    PermissionDenied,
    /// Anything else; the detail is logged, not sent.
    #[error("database error: {0}")]
    Other(String),
}

impl DbError {
    /// A short cause safe to show a client (no database text).
    pub fn category(&self) -> &'static str {
        match self {
            DbError::Unavailable(_) => "database unavailable",
            DbError::Connect(_) => "cannot connect to the database",
            DbError::Cancelled => "statement timed out or was cancelled",
            DbError::RecoveryConflict(_) => "cancelled by a recovery conflict on a standby",
            DbError::UndefinedTable => "relation does not exist",
            DbError::Resources(_) => "database out of resources",
            DbError::PermissionDenied => "permission denied",
            DbError::Other(_) => "database error",
        }
    }
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        let detail = e.to_string();
        match e.code().map(|c| c.code()) {
            Some(code) if code.starts_with("08") => DbError::Unavailable(detail),
            Some("57P01" | "57P02" | "57P03") => DbError::Unavailable(detail),
            Some("57014") => DbError::Cancelled,
            // Reads run READ ONLY, where serialization failures cannot happen: on a standby these
            // are recovery conflicts.
            Some("40001" | "40P01") => DbError::RecoveryConflict(detail),
            Some("42P01") => DbError::UndefinedTable,
            Some("42501") => DbError::PermissionDenied,
            Some(code) if code.starts_with("53") => DbError::Resources(detail),
            Some(_) => DbError::Other(format!("{e:?}")),
            // No SQLSTATE: the connection itself failed (closed, I/O, TLS, authentication setup).
            None => DbError::Unavailable(detail),
        }
    }
}

impl From<PoolError> for DbError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Backend(e) => DbError::Connect(e),
            other => DbError::Unavailable(other.to_string()),
        }
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        Error::Database(e.into())
    }
}

impl From<PoolError> for Error {
    fn from(e: PoolError) -> Self {
        Error::Database(e.into())
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        let (code, message) = match &e {
            Error::Tail(tail) => return tail.into(),
            Error::Ticket(_) | Error::InvalidRequest(_) => (Code::InvalidArgument, e.to_string()),
            Error::UnknownTable(_) | Error::ChunkGone(_) => (Code::NotFound, e.to_string()),
            Error::Rewritten(_) | Error::SnapshotGone(_) => {
                (Code::FailedPrecondition, e.to_string())
            }
            Error::Unimplemented(_) => (Code::Unimplemented, e.to_string()),
            Error::Busy(_) => (Code::ResourceExhausted, e.to_string()),
            Error::ShuttingDown | Error::ReplicaBehind { .. } => {
                (Code::Unavailable, e.to_string())
            }
            Error::Stalled(_) => (Code::Aborted, e.to_string()),
            Error::Database(db) => match db {
                DbError::Unavailable(_) => (Code::Unavailable, "database unavailable".into()),
                DbError::RecoveryConflict(_) => (
                    Code::Unavailable,
                    "the read was cancelled by a recovery conflict on the database standby; resume from the last batch's ticket (here or at another location)".into(),
                ),
                // Says what to fix; a wrong setting is not worth retrying, a database down is.
                DbError::Connect(c) if c.is_transient() => (Code::Unavailable, db.to_string()),
                DbError::Connect(_) => (Code::FailedPrecondition, db.to_string()),
                DbError::Cancelled => (
                    Code::DeadlineExceeded,
                    "database statement timed out or was cancelled".into(),
                ),
                DbError::UndefinedTable => (Code::NotFound, "relation does not exist".into()),
                DbError::Resources(_) => {
                    (Code::ResourceExhausted, "database out of resources".into())
                }
                DbError::PermissionDenied => (
                    Code::PermissionDenied,
                    "permission denied by the database".into(),
                ),
                DbError::Other(_) => (Code::Internal, "database error".into()),
            },
            // A valid value outside what the Arrow type holds is not a server fault.
            Error::Decode(d @ pgarrow::Error::Unrepresentable { .. }) => {
                (Code::OutOfRange, format!("cannot convert data: {d}"))
            }
            Error::Decode(d @ pgarrow::Error::MultiDimensionalArray { .. }) => {
                (Code::Unimplemented, format!("cannot convert data: {d}"))
            }
            Error::Decode(d) => (Code::Internal, format!("cannot convert data: {d}")),
            Error::Arrow(_) => (Code::Internal, "cannot encode Arrow data".into()),
        };
        if matches!(
            code,
            Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition | Code::Unimplemented
        ) {
            tracing::info!(error = %e, "request refused");
        } else {
            tracing::warn!(error = ?e, "request failed");
        }
        Status::new(code, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_faults_keep_their_message() {
        let s: Status = Error::UnknownTable("public.nope".into()).into();
        assert_eq!(s.code(), Code::NotFound);
        assert!(s.message().contains("public.nope"));
        let s: Status = Error::Ticket(TicketError::Expired).into();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains("expired"));
        let s: Status = Error::Rewritten("_timescaledb_internal._hyper_1_1_chunk".into()).into();
        assert_eq!(s.code(), Code::FailedPrecondition);
    }

    #[test]
    fn standby_refusals_are_resumable() {
        for e in [
            Error::Database(DbError::RecoveryConflict("conflict with recovery".into())),
            Error::ReplicaBehind {
                replayed: "0/10".into(),
                needed: "0/20".into(),
                waited: std::time::Duration::from_millis(5),
            },
        ] {
            let s: Status = e.into();
            assert_eq!(s.code(), Code::Unavailable);
            assert_eq!(protocol::classify(s.code()), protocol::Retry::Resume);
            assert!(
                !s.message().contains("conflict with recovery"),
                "no database text"
            );
        }
    }

    #[test]
    fn database_detail_is_not_sent() {
        let s: Status = Error::Database(DbError::Other("secret detail".into())).into();
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("secret"));
        let s: Status =
            Error::Database(DbError::Unavailable("conn refused 10.0.0.1".into())).into();
        assert_eq!(s.code(), Code::Unavailable);
        assert!(!s.message().contains("10.0.0.1"));
    }
}
