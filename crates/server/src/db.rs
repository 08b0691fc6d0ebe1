//! The connection pool: every session is read-only, named `hyperflight`, and time-limited.
//! Connections are made by [`pgconn::Connector`] (TLS, tunnel, credentials), so a pool error is a
//! [`pgconn::ConnectError`] that says what to fix.

use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use deadpool::Runtime;
use pgconn::{ConnectError, Connector};

use crate::config::Config;

/// Statement limit for catalog queries; scans raise it per transaction to `statement_timeout`.
const CATALOG_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// A scan's transaction waiting on a slow client is not "idle in transaction"; this catches leaks.
const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a caller waits for a connection, and to connect, before the database counts as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections beyond the scan cap, for discovery and planning.
const CATALOG_CONNECTIONS: usize = 4;

/// The pool's connections.
pub struct Manager(Connector);

impl managed::Manager for Manager {
    type Type = tokio_postgres::Client;
    type Error = ConnectError;

    async fn create(&self) -> Result<tokio_postgres::Client, ConnectError> {
        self.0.connect().await
    }

    async fn recycle(
        &self,
        client: &mut tokio_postgres::Client,
        _: &Metrics,
    ) -> RecycleResult<ConnectError> {
        if client.is_closed() {
            return Err(RecycleError::message("connection closed"));
        }
        Ok(())
    }
}

/// The server's pool.
pub type Pool = managed::Pool<Manager>;
/// A pooled connection.
pub type Object = managed::Object<Manager>;
/// Why no connection could be had.
pub type PoolError = managed::PoolError<ConnectError>;

/// The connector for the pool's sessions: `config.database` with the session settings every read
/// relies on.
pub fn session_connector(config: &Config) -> Connector {
    config.database.with_session(|pg| {
        if pg.get_application_name().is_none() {
            pg.application_name("hyperflight");
        }
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(CONNECT_TIMEOUT);
        }
        // The text of types read via ::text (money, point, ranges, …) depends on these settings:
        // pin them so the output does not change with the database's defaults. Flight SQL
        // parameters are inlined as literals that rely on standard_conforming_strings.
        let ours = format!(
            "-c default_transaction_read_only=on -c statement_timeout={} -c idle_in_transaction_session_timeout={} \
             -c DateStyle=ISO,MDY -c IntervalStyle=postgres -c TimeZone=UTC -c extra_float_digits=1 \
             -c standard_conforming_strings=on",
            CATALOG_STATEMENT_TIMEOUT.as_millis(),
            IDLE_IN_TRANSACTION_TIMEOUT.as_millis()
        );
        let options = match pg.get_options() {
            Some(user) if !user.is_empty() => format!("{user} {ours}"),
            _ => ours,
        };
        pg.options(&options);
    })
}

/// Builds the pool for `config`. Connections are opened lazily, so a database that is down at start
/// makes calls fail with UNAVAILABLE instead of keeping the server from starting.
pub fn pool(config: &Config) -> Pool {
    Pool::builder(Manager(session_connector(config)))
        .max_size(config.max_concurrent_chunks + CATALOG_CONNECTIONS)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(CONNECT_TIMEOUT))
        // Longer than the connector's own timeout, which says where the connection hung.
        .create_timeout(Some(CONNECT_TIMEOUT * 2))
        .build()
        .expect("a runtime is configured, so building the pool cannot fail")
}

/// The pool's connector (scans use it to cancel statements the way the session was reached).
pub fn connector(pool: &Pool) -> &Connector {
    &pool.manager().0
}
