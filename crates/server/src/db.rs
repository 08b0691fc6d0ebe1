//! The connection pool: every session is read-only, named `hyperflight`, and time-limited.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

use crate::config::Config;

/// Statement limit for catalog queries; scans raise it per transaction to `statement_timeout`.
const CATALOG_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// A scan's transaction waiting on a slow client is not "idle in transaction"; this catches leaks.
const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a caller waits for a connection, and to connect, before the database counts as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections beyond the scan cap, for discovery and planning.
const CATALOG_CONNECTIONS: usize = 4;

/// Builds the pool for `config`. Connections are opened lazily, so a database that is down at start
/// makes calls fail with UNAVAILABLE instead of keeping the server from starting.
pub fn pool(config: &Config) -> Pool {
    let mut pg = config.database.clone();
    if pg.get_application_name().is_none() {
        pg.application_name("hyperflight");
    }
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(CONNECT_TIMEOUT);
    }
    // The text of types read via ::text (money, point, ranges, …) depends on these settings: pin them
    // so the output does not change with the database's defaults.
    let ours = format!(
        "-c default_transaction_read_only=on -c statement_timeout={} -c idle_in_transaction_session_timeout={} \
         -c DateStyle=ISO,MDY -c IntervalStyle=postgres -c TimeZone=UTC -c extra_float_digits=1",
        CATALOG_STATEMENT_TIMEOUT.as_millis(),
        IDLE_IN_TRANSACTION_TIMEOUT.as_millis()
    );
    let options = match pg.get_options() {
        Some(user) if !user.is_empty() => format!("{user} {ours}"),
        _ => ours,
    };
    pg.options(&options);
    let manager = Manager::from_config(
        pg,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(config.max_concurrent_chunks + CATALOG_CONNECTIONS)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(CONNECT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .expect("a runtime is configured, so building the pool cannot fail")
}
