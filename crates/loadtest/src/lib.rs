//! The load generator behind `hyperflight-loadtest`: N concurrent Flight clients read random time
//! windows of a hypertable and check every read's row count against SQL, optionally while one fault
//! is injected (database restart, chunk drop, server restart).
//!
//! ```text
//!  setup (untimed)                        timed run (--duration / --requests)
//!  ───────────────                        ─────────────────────────────────────────────────────
//!  SQL: time dimension, chunks, range     client ×N: pick window ─► GetFlightInfo(CMD start/end)
//!  seeded windows                                    ─► DoGet every endpoint in parallel
//!  SQL: one width_bucket scan ─► rows per            ─► on UNAVAILABLE etc.: resume from the last
//!       (window ∩ chunk), cached                        batch's resume ticket (bounded retries)
//!                                                    ─► rows per endpoint == expectation?
//!                                         fault task: restart-db | drop-chunk | restart-server
//! ```
//!
//! Expectations are exact and cost one scan: every window bound and chunk bound becomes a threshold
//! of `width_bucket`, so the rows of any (window ∩ chunk) are a difference of two prefix sums. Reads
//! are checked per endpoint (= per chunk), so a discrepancy names its chunk. Retries are counted apart
//! from errors: a fault that the resume tickets absorb costs retries, not rows. The only *explained*
//! error is `NOT_FOUND` for the chunk that `--fault drop-chunk` dropped; its rows are reported as
//! dropped, not lost.
//!
//! # Layout
//! - `options`: the command line ([`Options`], [`Fault`]), durations, and checks clap cannot make.
//! - `expect`: the table under load as SQL describes it, seeded windows and their expected rows per
//!   chunk (one `width_bucket` scan).
//! - `reads`: one request: GetFlightInfo with a `protocol::Command`, then every endpoint through
//!   `protocol::client::read_endpoint`, counting rows up to the last resume ticket.
//! - `tally`: the accounting of requests against expectations ([`Tally`]): verified, lost, explained.
//! - `fault`: the fault task, the private copy for `drop-chunk`, the server process for
//!   `restart-server`.
//! - `report`: [`Report`]: the figures of a run, whether it passed, and its printed form.
//! - `run`: [`run`]: setup, the clients and the fault task, cleanup.

mod expect;
mod fault;
mod options;
mod reads;
mod report;
mod run;
mod tally;

pub use fault::FaultReport;
pub use options::{Fault, Options};
pub use report::Report;
pub use run::run;
pub use tally::Tally;

/// Why a run could not be set up or carried out (failed reads are not this: they are in the report).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The options contradict each other or name something malformed.
    #[error("invalid options: {0}")]
    Options(String),
    /// A setup or bookkeeping query failed.
    #[error("{context}: {source}")]
    Database {
        /// What the load test was doing.
        context: String,
        /// The driver's error.
        source: tokio_postgres::Error,
    },
    /// Anything else that prevents the run: server would not start, table unsuitable, …
    #[error("{0}")]
    Setup(String),
}

fn db_err(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> LoadError {
    let context = context.into();
    move |source| LoadError::Database { context, source }
}
