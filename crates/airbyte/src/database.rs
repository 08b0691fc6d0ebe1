//! Direct SQL, in the in-process mode only (with `flight_url` the source never connects to
//! PostgreSQL): connecting with a message a person understands, and what `check` reports
//! (TimescaleDB's version, missing schemas). Catalog facts (time dimension, primary key) come from
//! the Flight service, never from here.

use crate::config::DatabaseSettings;
use crate::Error;

/// A connected session; the connection task ends when this is dropped.
pub struct Database {
    client: tokio_postgres::Client,
}

impl Database {
    /// Connects as configured (TLS, tunnel, credentials); failures become [`Error::Database`] with
    /// what to fix (wrong password, unknown role or database, TLS trust, host unreachable).
    pub async fn connect(config: &DatabaseSettings) -> Result<Database, Error> {
        let client = config
            .connector()?
            .connect()
            .await
            .map_err(|e| Error::Database {
                message: format!("cannot connect to PostgreSQL at {}: {e}", config.target()),
                // Unreachable hosts are a config problem at check time, but may be a blip during
                // a read: transient ones are retried by the platform.
                config: !e.is_transient(),
            })?;
        Ok(Database { client })
    }

    /// The installed TimescaleDB version, if the extension is present.
    pub async fn timescaledb_version(&self) -> Result<Option<String>, Error> {
        let row = self
            .client
            .query_opt(
                "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'timescaledb'",
                &[],
            )
            .await
            .map_err(query_error)?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Which of `schemas` do not exist.
    pub async fn missing_schemas(&self, schemas: &[String]) -> Result<Vec<String>, Error> {
        let rows = self
            .client
            .query(
                "SELECT s FROM unnest($1::text[]) AS s
                 WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n WHERE n.nspname = s)",
                &[&schemas],
            )
            .await
            .map_err(query_error)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}

/// A failed catalog query. Connection-class failures are transient; anything else is reported as
/// is (these queries read only the catalog, so the message is about the database, not the data).
fn query_error(e: tokio_postgres::Error) -> Error {
    let transient = e.is_closed()
        || e.code().is_none_or(|c| {
            c.code().starts_with("08") || c.code().starts_with("57") || c.code().starts_with("53")
        });
    Error::Database {
        message: format!(
            "catalog query failed: {}",
            e.as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_else(|| e.to_string())
        ),
        config: !transient,
    }
}
