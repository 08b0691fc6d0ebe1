//! `check`: can this config read anything? Without `flight_url`: connects to PostgreSQL (a readable
//! reason on failure), notes whether TimescaleDB is there (its absence is not a failure: tables are
//! then read as plain PostgreSQL), checks the schemas exist. Then, in both modes, asks the Flight
//! service for `health` and its tables; with `flight_url` that is all (no PostgreSQL connection).
//!
//! Airbyte's convention: a config that does not work is `CONNECTION_STATUS FAILED` with exit 0, and
//! that includes a config file that cannot be read, is not JSON, or has a key of the wrong type or a
//! required key missing: the platform shows the message to the user. Only a failure to write stdout
//! is an error (`read` keeps TRACE ERROR for every failure).

use std::path::Path;

use crate::config::{DatabaseSettings, ReplicationMethod, Service, SourceConfig};
use crate::database::Database;
use crate::discover::{list_tables, warn_unknown_keys};
use crate::flight::FlightSource;
use crate::messages::{ConnectionStatus, Level, Message, Status};
use crate::output::Output;
use crate::Error;

/// Runs `check`: LOG lines on what was found, then the CONNECTION_STATUS message.
pub async fn run(config: &Path, out: &mut Output) -> Result<(), Error> {
    let checked = match SourceConfig::load(config) {
        Ok(config) => {
            warn_unknown_keys(&config, out)?;
            check(&config, out).await
        }
        Err(e) => Err(e),
    };
    let connection_status = match checked {
        Ok(()) => ConnectionStatus {
            status: Status::Succeeded,
            message: None,
        },
        Err(Error::Output(e)) => return Err(Error::Output(e)),
        Err(e) => {
            tracing::debug!(error = ?e, "check failed");
            ConnectionStatus {
                status: Status::Failed,
                message: Some(e.to_string()),
            }
        }
    };
    out.message(&Message::ConnectionStatus { connection_status })?;
    Ok(out.flush()?)
}

async fn check(config: &SourceConfig, out: &mut Output) -> Result<(), Error> {
    if let Service::InProcess(db) = &config.service {
        check_database(config, db, out).await?;
    }
    let source = FlightSource::start(config).await?;
    let checked = check_flight(&source, &config.schemas, out).await;
    source.shutdown().await;
    checked
}

/// The in-process mode's database: credentials, TimescaleDB, the schemas.
async fn check_database(
    config: &SourceConfig,
    settings: &DatabaseSettings,
    out: &mut Output,
) -> Result<(), Error> {
    let db = Database::connect(settings).await?;
    let note = match (db.timescaledb_version().await?, config.timescaledb.support) {
        (Some(v), true) => format!("TimescaleDB {v} found: hypertables are read chunk by chunk"),
        (Some(v), false) => format!(
            "TimescaleDB {v} found, but timescaledb_support is off: every table is read as plain PostgreSQL"
        ),
        (None, _) => format!(
            "TimescaleDB is not installed in database {:?}: tables are read as plain PostgreSQL \
             (no chunk-level parallelism or resume, no time-dimension cursor)",
            settings.database
        ),
    };
    out.message(&Message::log(Level::Info, note))?;
    if let ReplicationMethod::Cdc(cdc) = &config.replication {
        let status = db
            .cdc_status(&cdc.replication_slot, &cdc.publication)
            .await?;
        let slot = match status.slot {
            Some(_) => "exists",
            None => "does not exist yet: the first sync makes it",
        };
        out.message(&Message::log(
            Level::Info,
            format!(
                "CDC: publication {:?} found; slot {:?} {slot}",
                cdc.publication, cdc.replication_slot
            ),
        ))?;
    }
    let missing = db.missing_schemas(&config.schemas).await?;
    if !missing.is_empty() {
        return Err(Error::InvalidConfig {
            setting: "schemas",
            message: format!(
                "schema(s) {} do not exist in database {:?}",
                missing.join(", "),
                settings.database
            ),
        });
    }
    Ok(())
}

/// The Flight service's `health`, then its tables (ListFlights runs discovery with the role's
/// privileges). A remote server's health is all `check` learns of its database.
async fn check_flight(
    source: &FlightSource,
    schemas: &[String],
    out: &mut Output,
) -> Result<(), Error> {
    let health = source.health().await?;
    if let Some(reason) = &health.reason {
        out.message(&Message::log(
            Level::Warn,
            format!(
                "the Flight service at {} is degraded: {reason}",
                source.url()
            ),
        ))?;
    }
    if source.is_remote() {
        let timescaledb = match &health.timescaledb {
            Some(v) => format!("TimescaleDB {v}"),
            None => "no TimescaleDB (tables are read as plain PostgreSQL)".into(),
        };
        out.message(&Message::log(
            Level::Info,
            format!(
                "the Flight service at {} is up, with {timescaledb}",
                source.url()
            ),
        ))?;
    }
    let tables = list_tables(source, schemas).await?;
    let empty: Vec<&String> = schemas
        .iter()
        .filter(|s| !tables.iter().any(|t| &t.namespace == *s))
        .collect();
    if source.is_remote() && !empty.is_empty() {
        out.message(&Message::log(
            Level::Warn,
            format!(
                "the Flight service exposes no table in schema(s) {empty:?} (missing, empty, not \
                 readable by its role, or not in its own schemas setting)"
            ),
        ))?;
    }
    out.message(&Message::log(
        Level::Info,
        format!("the Flight service exposes {} table(s)", tables.len()),
    ))?;
    Ok(())
}
