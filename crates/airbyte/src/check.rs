//! `check`: can this config read anything? Connects to PostgreSQL (a readable reason on failure),
//! notes whether TimescaleDB is there (its absence is not a failure: tables are then read as plain
//! PostgreSQL), checks the schemas exist, and asks the Flight service for `health`.
//!
//! Airbyte's convention: a config that does not work is `CONNECTION_STATUS FAILED` with exit 0; only
//! a config file that cannot be parsed at all is a TRACE ERROR with a non-zero exit.

use std::path::Path;

use crate::config::SourceConfig;
use crate::database::Database;
use crate::discover::warn_unknown_keys;
use crate::flight::FlightSource;
use crate::output::Output;
use crate::messages::{ConnectionStatus, Level, Message, Status};
use crate::Error;

/// Runs `check`: LOG lines on what was found, then the CONNECTION_STATUS message.
pub async fn run(config: &Path, out: &mut Output) -> Result<(), Error> {
    let config = SourceConfig::load(config)?;
    warn_unknown_keys(&config, out)?;
    let connection_status = match check(&config, out).await {
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
    config.ensure_supported()?;
    let db = Database::connect(config).await?;
    let note = match (db.timescaledb_version().await?, config.timescaledb.support) {
        (Some(v), true) => format!("TimescaleDB {v} found: hypertables are read chunk by chunk"),
        (Some(v), false) => format!(
            "TimescaleDB {v} found, but timescaledb_support is off: every table is read as plain PostgreSQL"
        ),
        (None, _) => format!(
            "TimescaleDB is not installed in database {:?}: tables are read as plain PostgreSQL \
             (no chunk-level parallelism or resume, no time-dimension cursor)",
            config.database
        ),
    };
    out.message(&Message::log(Level::Info, note))?;
    let missing = db.missing_schemas(&config.schemas).await?;
    if !missing.is_empty() {
        return Err(Error::InvalidConfig {
            setting: "schemas",
            message: format!(
                "schema(s) {} do not exist in database {:?}",
                missing.join(", "),
                config.database
            ),
        });
    }
    drop(db);
    let source = FlightSource::start(config).await?;
    let checked = flight_check(&source).await;
    source.shutdown().await;
    let tables = checked?;
    out.message(&Message::log(
        Level::Info,
        format!("the Flight service exposes {tables} table(s)"),
    ))?;
    Ok(())
}

/// Health, then the table count (ListFlights runs discovery with the role's privileges).
async fn flight_check(source: &FlightSource) -> Result<usize, Error> {
    source.health().await?;
    Ok(crate::discover::list_tables(source).await?.len())
}
