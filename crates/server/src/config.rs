//! Server settings: defaults, TOML file, `HYPERFLIGHT_*` environment, command-line flags, validation.
//!
//! Priority, lowest to highest: the defaults in [`Settings::default`], the TOML file given with
//! `--config`, the environment (`HYPERFLIGHT_<NAME>`), flags (`--name-with-dashes`). [`Settings::validate`]
//! turns the merged values into a [`Config`], naming the offending setting on error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// A setting that failed to load or validate. The binary exits with code 2 on it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The `--config` file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The `--config` file is not valid TOML for these settings.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML parser's message (names the key).
        message: String,
    },
    /// A value out of range or malformed.
    #[error("invalid setting {setting}: {message}")]
    Invalid {
        /// The setting's name as in the settings table.
        setting: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

/// Every setting, as merged from all sources before validation. Field names are the public names.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Source database.
    pub database_url: String,
    /// Flight (gRPC) address.
    pub listen: String,
    /// Prometheus `/metrics` address; empty disables it.
    pub metrics_listen: String,
    /// Use chunk-aware paths when the TimescaleDB extension is present.
    pub timescaledb_support: bool,
    /// Background re-discovery period.
    pub chunk_discovery_interval_minutes: u64,
    /// Cache discovery results.
    pub enable_chunk_caching: bool,
    /// Cache entry lifetime.
    pub chunk_cache_ttl_minutes: u64,
    /// Chunk scans running at once, server-wide.
    pub max_concurrent_chunks: usize,
    /// Bound on batches buffered in the server, all streams together.
    pub max_memory_mb: u64,
    /// Rows per Arrow record batch, at most.
    pub batch_rows: usize,
    /// Heap size per endpoint when a plain table is split into block ranges.
    pub plain_endpoint_mb: u64,
    /// Schemas exposed; empty means every user schema.
    pub schemas: Vec<String>,
    /// HMAC key for tickets; `None` draws a random one per process.
    pub ticket_secret: Option<String>,
    /// Lifetime of an issued ticket.
    pub ticket_ttl_minutes: u64,
    /// Per-statement limit on the database side for scans.
    pub statement_timeout_seconds: u64,
    /// After SIGTERM, how long running streams may take to finish.
    pub shutdown_grace_seconds: u64,
    /// When set, every call needs `authorization: Bearer <token>`.
    pub auth_token: Option<String>,
    /// PEM certificate chain; TLS is served when both this and `tls_key` are set.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    pub tls_key: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            database_url: "postgres://postgres@127.0.0.1:5432/postgres".into(),
            listen: "127.0.0.1:50051".into(),
            metrics_listen: "127.0.0.1:9469".into(),
            timescaledb_support: true,
            chunk_discovery_interval_minutes: 5,
            enable_chunk_caching: true,
            chunk_cache_ttl_minutes: 10,
            max_concurrent_chunks: 4,
            max_memory_mb: 512,
            batch_rows: 65_536,
            plain_endpoint_mb: 64,
            schemas: Vec::new(),
            ticket_secret: None,
            ticket_ttl_minutes: 60,
            statement_timeout_seconds: 3_600,
            shutdown_grace_seconds: 30,
            auth_token: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

// Secrets never reach logs: the URL's password, the ticket secret and the auth token are redacted.
impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("database_url", &redact_url(&self.database_url))
            .field("listen", &self.listen)
            .field("metrics_listen", &self.metrics_listen)
            .field("timescaledb_support", &self.timescaledb_support)
            .field(
                "chunk_discovery_interval_minutes",
                &self.chunk_discovery_interval_minutes,
            )
            .field("enable_chunk_caching", &self.enable_chunk_caching)
            .field("chunk_cache_ttl_minutes", &self.chunk_cache_ttl_minutes)
            .field("max_concurrent_chunks", &self.max_concurrent_chunks)
            .field("max_memory_mb", &self.max_memory_mb)
            .field("batch_rows", &self.batch_rows)
            .field("plain_endpoint_mb", &self.plain_endpoint_mb)
            .field("schemas", &self.schemas)
            .field("ticket_secret", &self.ticket_secret.as_ref().map(|_| "***"))
            .field("ticket_ttl_minutes", &self.ticket_ttl_minutes)
            .field("statement_timeout_seconds", &self.statement_timeout_seconds)
            .field("shutdown_grace_seconds", &self.shutdown_grace_seconds)
            .field("auth_token", &self.auth_token.as_ref().map(|_| "***"))
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .finish()
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.find(':') {
                Some(colon) => format!("{}:***{}", &url[..scheme + 3 + colon], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Settings given on the command line or in the environment; each overrides the file and defaults.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Overrides {
    /// TOML file with settings (names as in the settings table).
    #[arg(long, env = "HYPERFLIGHT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Source database URL.
    #[arg(long, env = "HYPERFLIGHT_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Flight (gRPC) listen address.
    #[arg(long, env = "HYPERFLIGHT_LISTEN")]
    pub listen: Option<String>,
    /// Prometheus /metrics listen address; empty disables it.
    #[arg(long, env = "HYPERFLIGHT_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Use chunk-aware paths when TimescaleDB is present.
    #[arg(long, env = "HYPERFLIGHT_TIMESCALEDB_SUPPORT")]
    pub timescaledb_support: Option<bool>,
    /// Background re-discovery period in minutes.
    #[arg(long, env = "HYPERFLIGHT_CHUNK_DISCOVERY_INTERVAL_MINUTES")]
    pub chunk_discovery_interval_minutes: Option<u64>,
    /// Cache discovery results.
    #[arg(long, env = "HYPERFLIGHT_ENABLE_CHUNK_CACHING")]
    pub enable_chunk_caching: Option<bool>,
    /// Discovery cache lifetime in minutes.
    #[arg(long, env = "HYPERFLIGHT_CHUNK_CACHE_TTL_MINUTES")]
    pub chunk_cache_ttl_minutes: Option<u64>,
    /// Chunk scans running at once, server-wide.
    #[arg(long, env = "HYPERFLIGHT_MAX_CONCURRENT_CHUNKS")]
    pub max_concurrent_chunks: Option<usize>,
    /// Bound in MiB on batches buffered in the server, all streams together.
    #[arg(long, env = "HYPERFLIGHT_MAX_MEMORY_MB")]
    pub max_memory_mb: Option<u64>,
    /// Rows per record batch, at most.
    #[arg(long, env = "HYPERFLIGHT_BATCH_ROWS")]
    pub batch_rows: Option<usize>,
    /// Heap MiB per endpoint when a plain table is split into block ranges.
    #[arg(long, env = "HYPERFLIGHT_PLAIN_ENDPOINT_MB")]
    pub plain_endpoint_mb: Option<u64>,
    /// Comma-separated schemas to expose (default: all user schemas).
    #[arg(long, env = "HYPERFLIGHT_SCHEMAS", value_delimiter = ',')]
    pub schemas: Option<Vec<String>>,
    /// HMAC key for tickets (at least 16 bytes); share it across a fleet.
    #[arg(long, env = "HYPERFLIGHT_TICKET_SECRET", hide_env_values = true)]
    pub ticket_secret: Option<String>,
    /// Lifetime of an issued ticket in minutes.
    #[arg(long, env = "HYPERFLIGHT_TICKET_TTL_MINUTES")]
    pub ticket_ttl_minutes: Option<u64>,
    /// Database-side limit on one scan statement, in seconds.
    #[arg(long, env = "HYPERFLIGHT_STATEMENT_TIMEOUT_SECONDS")]
    pub statement_timeout_seconds: Option<u64>,
    /// After SIGTERM, seconds running streams may take to finish.
    #[arg(long, env = "HYPERFLIGHT_SHUTDOWN_GRACE_SECONDS")]
    pub shutdown_grace_seconds: Option<u64>,
    /// Require `authorization: Bearer <token>` on every call.
    #[arg(long, env = "HYPERFLIGHT_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    /// PEM certificate chain for TLS.
    #[arg(long, env = "HYPERFLIGHT_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    #[arg(long, env = "HYPERFLIGHT_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
}

impl Settings {
    /// Defaults, then the `--config` file, then environment and flags.
    pub fn load(overrides: &Overrides) -> Result<Settings, ConfigError> {
        let mut s = match &overrides.config {
            Some(path) => Self::from_file(path)?,
            None => Settings::default(),
        };
        let o = overrides.clone();
        macro_rules! apply {
            ($($field:ident),*) => { $( if let Some(v) = o.$field { s.$field = v; } )* };
        }
        apply!(
            database_url,
            listen,
            metrics_listen,
            timescaledb_support,
            chunk_discovery_interval_minutes,
            enable_chunk_caching,
            chunk_cache_ttl_minutes,
            max_concurrent_chunks,
            max_memory_mb,
            batch_rows,
            plain_endpoint_mb,
            schemas,
            ticket_ttl_minutes,
            statement_timeout_seconds,
            shutdown_grace_seconds
        );
        macro_rules! apply_opt {
            ($($field:ident),*) => { $( if o.$field.is_some() { s.$field = o.$field; } )* };
        }
        apply_opt!(ticket_secret, auth_token, tls_cert, tls_key);
        Ok(s)
    }

    fn from_file(path: &std::path::Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        // The full message quotes the offending line, so it names the setting.
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Checks ranges and formats; the result is what the server runs with.
    pub fn validate(self) -> Result<Config, ConfigError> {
        fn invalid(setting: &'static str, message: impl Into<String>) -> ConfigError {
            ConfigError::Invalid {
                setting,
                message: message.into(),
            }
        }
        fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
            setting: &'static str,
            v: T,
            lo: T,
            hi: T,
        ) -> Result<T, ConfigError> {
            if v < lo || v > hi {
                return Err(invalid(setting, format!("{v} is out of range {lo}..={hi}")));
            }
            Ok(v)
        }
        let database: tokio_postgres::Config = self
            .database_url
            .parse()
            .map_err(|e| invalid("database_url", format!("not a PostgreSQL URL ({e})")))?;
        let listen: SocketAddr = self
            .listen
            .parse()
            .map_err(|_| invalid("listen", format!("{:?} is not host:port", self.listen)))?;
        let metrics_listen = match self.metrics_listen.trim() {
            "" => None,
            addr => Some(addr.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    "metrics_listen",
                    format!("{addr:?} is not host:port (empty disables metrics)"),
                )
            })?),
        };
        let minutes = |m: u64| Duration::from_secs(m * 60);
        let ticket_secret = match self.ticket_secret {
            Some(s) if s.len() < 16 => {
                return Err(invalid("ticket_secret", "must be at least 16 bytes"))
            }
            Some(s) => s.into_bytes(),
            None => {
                use rand::RngCore;
                let mut key = vec![0u8; 32];
                rand::thread_rng().fill_bytes(&mut key);
                key
            }
        };
        if self.schemas.iter().any(|s| s.is_empty()) {
            return Err(invalid("schemas", "empty schema name"));
        }
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "tls_cert",
                    "tls_cert and tls_key must be set together",
                ))
            }
        };
        if matches!(&self.auth_token, Some(t) if t.is_empty()) {
            return Err(invalid("auth_token", "must not be empty when set"));
        }
        Ok(Config {
            database,
            listen,
            metrics_listen,
            timescaledb_support: self.timescaledb_support,
            discovery_interval: minutes(in_range(
                "chunk_discovery_interval_minutes",
                self.chunk_discovery_interval_minutes,
                1,
                1_440,
            )?),
            // A disabled cache ignores its TTL, so a leftover value cannot block start-up.
            cache_ttl: if self.enable_chunk_caching {
                Some(minutes(in_range(
                    "chunk_cache_ttl_minutes",
                    self.chunk_cache_ttl_minutes,
                    1,
                    1_440,
                )?))
            } else {
                None
            },
            max_concurrent_chunks: in_range(
                "max_concurrent_chunks",
                self.max_concurrent_chunks,
                1,
                256,
            )?,
            max_memory_bytes: in_range("max_memory_mb", self.max_memory_mb, 16, 1 << 20)? << 20,
            batch_rows: in_range("batch_rows", self.batch_rows, 1, 1 << 20)?,
            plain_endpoint_bytes: in_range(
                "plain_endpoint_mb",
                self.plain_endpoint_mb,
                1,
                1 << 20,
            )? << 20,
            schemas: self.schemas,
            ticket_secret,
            ticket_ttl: minutes(in_range(
                "ticket_ttl_minutes",
                self.ticket_ttl_minutes,
                1,
                7 * 1_440,
            )?),
            statement_timeout: Duration::from_secs(in_range(
                "statement_timeout_seconds",
                self.statement_timeout_seconds,
                1,
                7 * 86_400,
            )?),
            shutdown_grace: Duration::from_secs(in_range(
                "shutdown_grace_seconds",
                self.shutdown_grace_seconds,
                0,
                3_600,
            )?),
            auth_token: self.auth_token,
            tls,
        })
    }
}

/// Certificate and key files for TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Validated settings, in the types the server uses.
#[derive(Clone)]
pub struct Config {
    /// Connection parameters of the source database.
    pub database: tokio_postgres::Config,
    /// Flight listen address.
    pub listen: SocketAddr,
    /// Prometheus endpoint address, if enabled.
    pub metrics_listen: Option<SocketAddr>,
    /// Serve hypertables chunk by chunk when TimescaleDB is present.
    pub timescaledb_support: bool,
    /// Background re-discovery period.
    pub discovery_interval: Duration,
    /// Discovery cache lifetime; `None` disables the cache.
    pub cache_ttl: Option<Duration>,
    /// Server-wide cap on running chunk scans.
    pub max_concurrent_chunks: usize,
    /// Server-wide bound on buffered batch bytes.
    pub max_memory_bytes: u64,
    /// Rows per record batch, at most.
    pub batch_rows: usize,
    /// Heap bytes per endpoint of a plain table.
    pub plain_endpoint_bytes: u64,
    /// Exposed schemas; empty means all user schemas.
    pub schemas: Vec<String>,
    /// HMAC key for tickets.
    pub ticket_secret: Vec<u8>,
    /// Lifetime of an issued ticket.
    pub ticket_ttl: Duration,
    /// Database-side limit on one scan statement.
    pub statement_timeout: Duration,
    /// Bound on the wait for running streams at shutdown.
    pub shutdown_grace: Duration,
    /// Bearer token every call must carry, if set.
    pub auth_token: Option<String>,
    /// TLS files, if TLS is on.
    pub tls: Option<TlsFiles>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("timescaledb_support", &self.timescaledb_support)
            .field("max_concurrent_chunks", &self.max_concurrent_chunks)
            .field("batch_rows", &self.batch_rows)
            .field("schemas", &self.schemas)
            .field("auth", &self.auth_token.is_some())
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Validated defaults with `database_url` replaced and no metrics endpoint: what tests and
    /// embedders start from.
    pub fn for_database(database_url: &str) -> Result<Config, ConfigError> {
        Settings {
            database_url: database_url.to_string(),
            metrics_listen: String::new(),
            ..Settings::default()
        }
        .validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let c = Settings::default().validate().unwrap();
        assert_eq!(c.listen, "127.0.0.1:50051".parse().unwrap());
        assert_eq!(c.batch_rows, 65_536);
        assert_eq!(c.cache_ttl, Some(Duration::from_secs(600)));
        assert_eq!(c.ticket_secret.len(), 32);
    }

    fn invalid_setting(s: Settings) -> &'static str {
        match s.validate() {
            Err(ConfigError::Invalid { setting, .. }) => setting,
            other => panic!("expected an invalid setting, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn out_of_range_values_name_their_setting() {
        let d = Settings::default;
        assert_eq!(
            invalid_setting(Settings {
                batch_rows: 0,
                ..d()
            }),
            "batch_rows"
        );
        assert_eq!(
            invalid_setting(Settings {
                max_concurrent_chunks: 0,
                ..d()
            }),
            "max_concurrent_chunks"
        );
        assert_eq!(
            invalid_setting(Settings {
                listen: "nowhere".into(),
                ..d()
            }),
            "listen"
        );
        assert_eq!(
            invalid_setting(Settings {
                database_url: "mysql://x".into(),
                ..d()
            }),
            "database_url"
        );
        assert_eq!(
            invalid_setting(Settings {
                ticket_secret: Some("short".into()),
                ..d()
            }),
            "ticket_secret"
        );
        assert_eq!(
            invalid_setting(Settings {
                tls_cert: Some("c.pem".into()),
                ..d()
            }),
            "tls_cert"
        );
        assert_eq!(
            invalid_setting(Settings {
                chunk_cache_ttl_minutes: 0,
                ..d()
            }),
            "chunk_cache_ttl_minutes"
        );
        assert_eq!(
            invalid_setting(Settings {
                max_memory_mb: 1,
                ..d()
            }),
            "max_memory_mb"
        );
        assert_eq!(
            invalid_setting(Settings {
                metrics_listen: "9469".into(),
                ..d()
            }),
            "metrics_listen"
        );
    }

    #[test]
    fn disabled_cache_skips_ttl_check() {
        let c = Settings {
            enable_chunk_caching: false,
            chunk_cache_ttl_minutes: 0,
            ..Settings::default()
        };
        assert_eq!(c.validate().unwrap().cache_ttl, None);
    }

    #[test]
    fn file_then_overrides() {
        let dir = std::env::temp_dir().join(format!("hf-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "batch_rows = 100\nlisten = \"127.0.0.1:1\"\n").unwrap();
        let o = Overrides {
            config: Some(file.clone()),
            listen: Some("127.0.0.1:2".into()),
            ..Overrides::default()
        };
        let s = Settings::load(&o).unwrap();
        assert_eq!(s.batch_rows, 100);
        assert_eq!(s.listen, "127.0.0.1:2");
        std::fs::write(&file, "batch_rowz = 1\n").unwrap();
        assert!(matches!(
            Settings::load(&o),
            Err(ConfigError::Parse { message, .. }) if message.contains("batch_rowz")
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn url_password_is_redacted() {
        assert_eq!(
            redact_url("postgres://u:pw@h:5/db"),
            "postgres://u:***@h:5/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        let s = Settings {
            database_url: "postgres://u:hunter2@h/db".into(),
            auth_token: Some("tok".into()),
            ..Settings::default()
        };
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("tok\""));
    }
}
