//! # hyperflight
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
//! - [`cli`]: what the binaries share — logging to stderr, the shutdown signal.
//! - [`config`]: settings — defaults, TOML file, environment, flags, validation.
//! - [`error`]: the service error, SQLSTATE classification, the one mapping to `tonic::Status`.
//! - [`db`]: the connection pool (read-only sessions, timeouts, `application_name`).
//! - [`catalog`]: discovery of tables, hypertables, dimensions and chunks; the cache.
//! - [`ticket`]: versioned, HMAC-signed tickets; decoding never panics.
//! - [`plan`]: descriptors → endpoints with tickets (chunk pruning); tickets → scans.
//! - [`pgarrow`]: PostgreSQL → Arrow type table; binary COPY → record batches.
//! - [`scan`]: the SQL of one endpoint and the COPY loop feeding a bounded channel.
//! - [`stream`]: batches → Flight data with a resume ticket on each.
//! - [`metrics`]: Prometheus names, the `/metrics` endpoint, the server-wide memory budget.
//! - [`service`]: `impl FlightService`.
//! - [`snapshot`]: exported snapshots held for `consistent_snapshot` reads.
//! - [`server`]: `run(listener, config, shutdown)` — tonic, auth, TLS, limits, re-discovery.
//! - [`airbyte`]: the `hyperflight-airbyte` source — protocol, spec, check, discover, read over Flight.
//! - [`loadtest`]: the load generator of `hyperflight-loadtest` — concurrent verified reads, faults.

pub mod airbyte;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod loadtest;
pub mod metrics;
pub mod pgarrow;
pub mod plan;
pub mod scan;
pub mod server;
pub mod service;
pub mod snapshot;
pub mod stream;
pub mod ticket;
