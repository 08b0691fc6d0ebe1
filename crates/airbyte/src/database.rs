//! Direct SQL, in the in-process mode only (with `flight_url` the source never connects to
//! PostgreSQL): connecting with a message a person understands, and what `check` reports
//! (TimescaleDB's version, missing schemas). Catalog facts (time dimension, primary key) come from
//! the Flight service, never from here.

use tokio_postgres::error::SqlState;

use crate::config::DatabaseSettings;
use crate::Error;

/// A connected session; the connection task ends when this is dropped.
pub struct Database {
    client: tokio_postgres::Client,
}

impl Database {
    /// Connects with the config's credentials; failures become [`Error::Database`] with a readable
    /// message (wrong password, unknown role or database, host unreachable).
    pub async fn connect(config: &DatabaseSettings) -> Result<Database, Error> {
        let (client, connection) = config
            .postgres()
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| connect_error(config, &e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "adapter's PostgreSQL connection ended");
            }
        });
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

/// What a failed connection attempt means, in words: `config` when the user must fix something.
fn connect_error(config: &DatabaseSettings, e: &tokio_postgres::Error) -> Error {
    let (user, db, target) = (&config.username, &config.database, config.target());
    let server_says = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    let (message, is_config) = match e.code() {
        Some(c) if *c == SqlState::INVALID_PASSWORD => (
            format!("password authentication failed for user {user:?} on {target}: check the username and password"),
            true,
        ),
        Some(c) if *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION => (
            format!("the server at {target} refused user {user:?}: {server_says} (check the role name and the server's pg_hba.conf)"),
            true,
        ),
        Some(c) if *c == SqlState::INVALID_CATALOG_NAME => (
            format!("database {db:?} does not exist on {}:{}", config.host, config.port),
            true,
        ),
        Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE => (
            format!("user {user:?} may not connect to database {db:?}: {server_says}"),
            true,
        ),
        Some(c) if *c == SqlState::TOO_MANY_CONNECTIONS => (
            format!("{target} has no free connection slots: {server_says}"),
            false,
        ),
        Some(c) if *c == SqlState::CANNOT_CONNECT_NOW => (
            format!("{target} is starting up or shutting down: {server_says}"),
            false,
        ),
        Some(_) => (format!("cannot connect to {target}: {server_says}"), false),
        None => {
            let cause = root_cause(e);
            let hint = match cause.as_ref().map(std::io::Error::kind) {
                Some(std::io::ErrorKind::ConnectionRefused) => {
                    " (connection refused: is PostgreSQL running and listening on that host and port?)"
                }
                Some(std::io::ErrorKind::TimedOut) => " (timed out: is the host reachable?)",
                _ if e.to_string().contains("timeout") => " (timed out: is the host reachable?)",
                _ => "",
            };
            let detail = cause.map(|c| c.to_string()).unwrap_or_else(|| e.to_string());
            // Unreachable hosts are a config problem at check time, but may be a blip during a read:
            // treat them as transient so the platform retries.
            (
                format!("cannot reach PostgreSQL at {}:{}: {detail}{hint}", config.host, config.port),
                false,
            )
        }
    };
    Error::Database {
        message,
        config: is_config,
    }
}

/// The innermost I/O error of a connection failure, if any.
fn root_cause(e: &tokio_postgres::Error) -> Option<std::io::Error> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Some(std::io::Error::new(io.kind(), io.to_string()));
        }
        source = s.source();
    }
    None
}
