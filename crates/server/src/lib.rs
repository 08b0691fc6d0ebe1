//! # hyperflight-server
//!
//! An Apache Arrow Flight server that serves TimescaleDB hypertables chunk by chunk (and plain
//! PostgreSQL tables), so clients read chunks in parallel as Arrow streams.
//!
//! ```text
//!  PostgreSQL/TimescaleDB
//!    │ catalog queries (cached)        COPY (SELECT …) TO STDOUT (FORMAT binary), one per endpoint
//!    ▼                                  ▼
//!  catalog ──► plan (pruning, tickets) ──► scan ──► pgarrow (binary COPY → Arrow arrays)
//!                      │                                     │
//!                      ▼                                     ▼
//!              service (Flight: ListFlights · GetFlightInfo · GetSchema · DoGet · DoAction)
//!                                                            │
//!                                  stream (Arrow IPC + resume ticket per batch) ──► client
//! ```
//!
//! # Layout
//! - [`cdc`]: change data capture: set-up, the pgoutput change stream (chunks → hypertables).
//! - [`cli`]: what the binaries share: logging to stderr, the shutdown signal.
//! - [`config`]: settings: defaults, TOML file, environment, flags, validation, secrets.
//! - `error`: the service error, SQLSTATE classification, the one mapping to `tonic::Status`.
//! - [`db`]: the connection pool (read-only sessions, timeouts, `application_name`) over a
//!   `pgconn::Connector` (TLS, SSH tunnel, credentials, readable connection errors).
//! - `fleet`: scale-out: peers as endpoint locations, the WAL position in tickets, the standby
//!   replay wait.
//! - `catalog`: discovery of tables, hypertables, dimensions and chunks; the cache.
//! - `plan`: descriptors → endpoints with tickets (chunk pruning); tickets → scans.
//! - `scan`: the SQL of one endpoint and the COPY loop feeding a bounded channel.
//! - `compressed`: compressed chunks read batch by batch, exploded into rows with positions.
//! - `stream`: batches → Flight data with a resume ticket on each.
//! - `metrics`: Prometheus names, the `/metrics` endpoint, the server-wide memory budget.
//! - `service`: `impl FlightService`.
//! - `snapshot`: exported snapshots held for `consistent_snapshot` reads.
//! - `sql`: Flight SQL on the same port: metadata, statements parsed and planned into the same
//!   endpoints (or one `query` endpoint), prepared statements.
//! - [`server`]: `run(listener, config, shutdown)`: tonic, auth, TLS, limits, re-discovery.
//!
//! The type table and COPY decoder live in the `pgarrow` crate, the wire contract in `protocol`,
//! connecting to PostgreSQL (libpq's settings, TLS, tunnels) in `pgconn`, the versioned,
//! HMAC-signed tickets (decoding never panics) in `ticket`.

mod catalog;
pub mod cdc;
pub mod cli;
mod compressed;
pub mod config;
pub mod db;
mod error;
mod fleet;
mod info_route;
mod metrics;
mod plan;
mod scan;
pub mod server;
mod service;
mod snapshot;
mod sql;
mod stream;
pub use ticket;

pub use server::run;
