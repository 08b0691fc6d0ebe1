//! `hyperflight-airbyte`: an Airbyte source over the Flight service.
//!
//! The Airbyte CLI contract — `spec`, `check --config F`, `discover --config F`,
//! `read --config F --catalog F [--state F]` — with one JSON message per line on stdout and nothing
//! else there (diagnostics go to stderr or become LOG messages).
//!
//! ```text
//!  config ──► Flight service (in-process on 127.0.0.1:0, or `flight_url`)
//!               │ ListFlights / GetSchema          ──► discover (time dimension, primary key:
//!               │                                       protocol::TableFacts in the schema)
//!               │ GetFlightInfo (CMD, start=cursor) ──► endpoints, minus completed chunks
//!               ▼ DoGet × timescaledb_max_concurrent_chunks (saved resume tickets first)
//!  batches ──► record (Arrow columns → RECORD lines, on blocking threads)
//!               ▼ one channel
//!  writer thread: stdout, per-stream STATE bookkeeping, flush at every STATE
//! ```
//!
//! # Layout
//! - [`messages`]: the Airbyte messages this source writes and the catalog/state it reads (serde).
//! - [`spec`]: the connector specification (JSON Schema of the config).
//! - [`config`]: the typed, validated config; the password never logs or serializes.
//! - [`database`]: direct SQL, in-process mode only — connecting with readable errors, TimescaleDB's
//!   version and the schemas for `check`.
//! - [`flight`]: the Flight service read from: started in-process, or remote (`protocol::client`).
//! - [`check`], [`discover`]: the `check` and `discover` commands.
//! - [`schema`]: Arrow field → Airbyte JSON Schema (the type table).
//! - [`record`]: Arrow batches → RECORD lines, column by column.
//! - [`state`]: the per-stream state (completed chunks, resume tickets, cursor).
//! - [`read`]: the `read` command: planning, parallel chunk reads, the single writer.
//! - [`cdc`]: the CDC replication method: the copy under the slot's snapshot, then its changes.
//! - [`output`]: the stdout writer.

pub mod cdc;
pub mod check;
pub mod config;
pub mod database;
pub mod discover;
pub mod flight;
pub mod messages;
pub mod output;
pub mod read;
pub mod record;
pub mod schema;
pub mod spec;
pub mod state;

use std::path::{Path, PathBuf};

use protocol::Retry;

use crate::messages::{FailureType, Message, StreamDescriptor};
use crate::output::Output;

/// Everything the adapter can fail with. [`Error::failure_type`] decides how Airbyte treats it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input file (config, catalog, state) could not be read.
    #[error("cannot read {what} file {path}: {source}")]
    File {
        /// "config", "catalog" or "state".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An input file is not JSON of the expected shape; the message names the key.
    #[error("invalid {what} file {path}: {message}")]
    Malformed {
        /// "config", "catalog" or "state".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A config value out of range or not supported.
    #[error("invalid config {setting}: {message}")]
    InvalidConfig {
        /// The spec property.
        setting: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The configured catalog asks for something this source cannot do.
    #[error("{0}")]
    Catalog(String),
    /// A saved state this source cannot use.
    #[error("{0}")]
    State(String),
    /// PostgreSQL refused or could not be reached; the message is meant for a person.
    #[error("{message}")]
    Database {
        /// Readable cause.
        message: String,
        /// Credentials or names are wrong (config) rather than the database being away (transient).
        config: bool,
    },
    /// A Flight call failed; `context` says which.
    #[error("{context}: {} ({:?})", .status.message(), .status.code())]
    Flight {
        /// What was being done.
        context: String,
        /// The gRPC status (its message names the cause).
        status: tonic::Status,
    },
    /// The Flight service could not be reached (transport set-up); names the URL as given.
    #[error("Flight service: {0}")]
    Connect(protocol::client::ConnectError),
    /// The Flight service answered something this source cannot use (undecodable data, a
    /// descriptor or endpoint of an unexpected shape).
    #[error("{context}: {message}")]
    Protocol {
        /// What was being done.
        context: String,
        /// What was wrong.
        message: String,
    },
    /// The in-process Flight service failed.
    #[error("in-process Flight service: {0}")]
    Server(String),
    /// A batch could not be turned into records.
    #[error("cannot encode records: {0}")]
    Encode(String),
    /// Some streams of a read failed; each was reported with its own TRACE ERROR before this one.
    #[error("{} stream(s) did not finish: {} (see the errors above; the last STATE of each stream resumes it)", .streams.len(), .streams.join(", "))]
    Incomplete {
        /// The streams, `schema.table`.
        streams: Vec<String>,
        /// The most serious failure type among them.
        failure_type: FailureType,
    },
    /// Writing stdout failed (the reader went away).
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

impl Error {
    /// How Airbyte should treat the failure: fix the config, retry, or report a bug.
    pub fn failure_type(&self) -> FailureType {
        match self {
            Error::File { .. }
            | Error::Malformed { .. }
            | Error::InvalidConfig { .. }
            | Error::Catalog(_)
            | Error::State(_) => FailureType::ConfigError,
            Error::Database { config: true, .. } => FailureType::ConfigError,
            Error::Database { config: false, .. } => FailureType::TransientError,
            Error::Flight { status, .. } => flight_failure_type(status.code()),
            Error::Connect(_) => FailureType::TransientError,
            Error::Protocol { .. } => FailureType::SystemError,
            Error::Incomplete { failure_type, .. } => *failure_type,
            Error::Server(_) | Error::Encode(_) | Error::Output(_) => FailureType::SystemError,
        }
    }

    /// A Flight error from `context`, keeping the gRPC status when there is one.
    pub fn flight(context: impl Into<String>, e: arrow_flight::error::FlightError) -> Error {
        let context = context.into();
        match e {
            arrow_flight::error::FlightError::Tonic(status) => Error::Flight {
                context,
                status: *status,
            },
            other => Error::Protocol {
                context,
                message: other.to_string(),
            },
        }
    }

    /// The gRPC code, when the error is a Flight status.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Error::Flight { status, .. } => Some(status.code()),
            _ => None,
        }
    }
}

/// How Airbyte treats a failed Flight call: whatever [`protocol::classify`] would retry (from a
/// resume ticket or after planning again) is transient, since the platform's next attempt resumes
/// from the last STATE; of the rest, a refusal of the credentials or of a table is the user's to fix.
fn flight_failure_type(code: tonic::Code) -> FailureType {
    match protocol::classify(code) {
        Retry::Resume | Retry::Replan => FailureType::TransientError,
        Retry::Fatal => match code {
            tonic::Code::Unauthenticated
            | tonic::Code::PermissionDenied
            | tonic::Code::NotFound => FailureType::ConfigError,
            _ => FailureType::SystemError,
        },
    }
}

/// One adapter command, as parsed by the binary.
#[derive(Debug, Clone)]
pub enum Command {
    /// Print the connector specification.
    Spec,
    /// Check the config: database, TimescaleDB, the Flight service.
    Check {
        /// Config file.
        config: PathBuf,
    },
    /// Print the catalog of streams.
    Discover {
        /// Config file.
        config: PathBuf,
    },
    /// Read the configured streams.
    Read {
        /// Config file.
        config: PathBuf,
        /// Configured catalog file.
        catalog: PathBuf,
        /// State file from an earlier read.
        state: Option<PathBuf>,
    },
}

/// Runs `command`, writing messages to `out`; returns the process exit code (0 on success; on
/// failure a TRACE ERROR was written and the code is 1).
pub async fn run(command: Command, out: &mut Output) -> u8 {
    let result = match command {
        Command::Spec => out.message(&spec::message()).map_err(Error::from),
        Command::Check { config } => check::run(&config, out).await,
        Command::Discover { config } => discover::run(&config, out).await,
        Command::Read {
            config,
            catalog,
            state,
        } => read::run(&config, &catalog, state.as_deref(), out).await,
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            report(out, &e, None);
            1
        }
    }
}

/// Writes `e` as a TRACE ERROR (with the stream, if any) and flushes; if stdout itself failed, says
/// so on stderr instead.
pub fn report(out: &mut Output, e: &Error, stream: Option<&StreamDescriptor>) {
    tracing::debug!(error = ?e, "failed");
    if let Error::Output(_) = e {
        // stdout is gone: stderr is the only place left to say so.
        eprintln!("hyperflight-airbyte: {e}");
        return;
    }
    let message = Message::error(e, stream);
    if let Err(write) = out.message(&message).and_then(|()| out.flush()) {
        eprintln!("hyperflight-airbyte: {e} (and stdout failed: {write})");
    }
}

/// Reads a JSON input file into `T`, naming the file and the key on failure.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(
    what: &'static str,
    path: &Path,
) -> Result<T, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::File {
        what,
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| Error::Malformed {
        what,
        path: path.to_owned(),
        message: e.to_string(),
    })
}
