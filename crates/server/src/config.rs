//! Server settings: one struct, layered from the defaults, a TOML file, the `HYPERFLIGHT_*`
//! environment and command-line flags (figment does the layering), then validated into [`Config`].
//!
//! Priority, lowest to highest: the defaults in [`Settings::default`], the TOML file given with
//! `--config`, the environment (`HYPERFLIGHT_<NAME>`), flags (`--name-with-dashes`).
//! [`Settings::validate`] names the offending setting on error. Secrets are a [`Secret`], which never
//! prints; [`Config::to_toml`] prints the effective settings with secrets left out.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Deserializer, Serialize};

/// A setting that failed to load or validate. The binary exits with code 2 on it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file, environment or flags do not fit the settings (the message names the key).
    #[error("invalid settings: {0}")]
    Load(String),
    /// A value out of range or malformed.
    #[error("invalid setting {setting}: {message}")]
    Invalid {
        /// The setting's name as in the settings table.
        setting: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

/// A secret value: its `Debug` and `Display` print `***`. It serializes its value only so that the
/// settings layers can be merged; nothing prints a serialized [`Settings`].
#[derive(Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

// The environment layer reads `HYPERFLIGHT_AUTH_TOKEN=12345` as a number: a secret takes it as text.
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Str(String),
            Signed(i64),
            Unsigned(u64),
            Float(f64),
        }
        Ok(Secret(match Raw::deserialize(d)? {
            Raw::Str(s) => s,
            Raw::Signed(n) => n.to_string(),
            Raw::Unsigned(n) => n.to_string(),
            Raw::Float(n) => n.to_string(),
        }))
    }
}

impl Secret {
    /// The value, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_string())
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Every setting, as merged from all sources before validation. Field names are the public names;
/// the defaults are in [`Settings::default`].
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Source database (may carry a password, hence a secret).
    pub database_url: Secret,
    /// File holding the database password (instead of one in the URL).
    pub database_password_file: Option<PathBuf>,
    /// libpq's TLS mode, when `database_url` gives none (then `PGSSLMODE`, then `prefer`).
    pub sslmode: Option<String>,
    /// CA certificates (PEM file) that verify the database's certificate, or `system`.
    pub sslrootcert: Option<String>,
    /// Client certificate (PEM file), for `cert` authentication.
    pub sslcert: Option<String>,
    /// The client certificate's private key (PEM file).
    pub sslkey: Option<String>,
    /// Password file in `.pgpass` format (libpq's `passfile`; then `PGPASSFILE`, then `~/.pgpass`).
    pub passfile: Option<String>,
    /// SSH tunnel to the database: `NO_TUNNEL`, `SSH_KEY_AUTH` or `SSH_PASSWORD_AUTH`.
    pub tunnel_method: String,
    /// SSH server host.
    pub tunnel_host: Option<String>,
    /// SSH server port.
    pub tunnel_port: u16,
    /// SSH user.
    pub tunnel_user: Option<String>,
    /// SSH private key text (SSH_KEY_AUTH).
    pub ssh_key: Option<Secret>,
    /// File holding the SSH private key.
    pub ssh_key_file: Option<PathBuf>,
    /// SSH password (SSH_PASSWORD_AUTH).
    pub tunnel_user_password: Option<Secret>,
    /// File holding the SSH password.
    pub tunnel_user_password_file: Option<PathBuf>,
    /// OpenSSH known-hosts file that must hold the SSH server's host key (default
    /// `~/.ssh/known_hosts`).
    pub tunnel_known_hosts_file: Option<PathBuf>,
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
    #[serde(deserialize_with = "list_or_csv")]
    pub schemas: Vec<String>,
    /// Glob patterns on `schema.table`: only matching relations are exposed; empty means all.
    #[serde(deserialize_with = "list_or_csv")]
    pub tables_include: Vec<String>,
    /// Glob patterns on `schema.table`: matching relations are never exposed.
    #[serde(deserialize_with = "list_or_csv")]
    pub tables_exclude: Vec<String>,
    /// HMAC key for tickets; `None` draws a random one per process.
    pub ticket_secret: Option<Secret>,
    /// File holding the ticket secret.
    pub ticket_secret_file: Option<PathBuf>,
    /// Lifetime of an issued ticket.
    pub ticket_ttl_minutes: u64,
    /// A consistent snapshot no scan used for this long is released.
    pub snapshot_idle_seconds: u64,
    /// The logical replication slot live tails read (`hyperflight cdc setup`).
    pub cdc_slot: String,
    /// The publication that slot reads.
    pub cdc_publication: String,
    /// A tail sends its pending changes after at most this long.
    pub tail_max_latency_ms: u64,
    /// Decoded changes kept for tails to resume from and to catch up.
    pub tail_buffer_mb: u64,
    /// A client that takes no batch for this long loses its scan slot.
    pub stalled_stream_seconds: u64,
    /// Per-statement limit on the database side for scans.
    pub statement_timeout_seconds: u64,
    /// After SIGTERM, how long running streams may take to finish.
    pub shutdown_grace_seconds: u64,
    /// When set, every call needs `authorization: Bearer <token>`.
    pub auth_token: Option<Secret>,
    /// File holding the auth token.
    pub auth_token_file: Option<PathBuf>,
    /// PEM certificate chain; TLS is served when both this and `tls_key` are set.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    pub tls_key: Option<PathBuf>,
    /// This server's Flight URL as clients reach it, listed among each endpoint's locations when
    /// the server has peers; empty: Flight's "the server you asked" URI.
    pub advertise_url: String,
    /// Flight URLs of the other servers of the fleet reading the same primary.
    #[serde(deserialize_with = "list_or_csv")]
    pub peers: Vec<String>,
    /// Flight URLs of the fleet's servers reading hot standbys of the primary.
    #[serde(deserialize_with = "list_or_csv")]
    pub replica_peers: Vec<String>,
    /// How long a server on a standby waits for replay to reach a ticket's WAL position.
    pub replay_wait_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            database_url: Secret(String::new()),
            database_password_file: None,
            sslmode: None,
            sslrootcert: None,
            sslcert: None,
            sslkey: None,
            passfile: None,
            tunnel_method: "NO_TUNNEL".into(),
            tunnel_host: None,
            tunnel_port: 22,
            tunnel_user: None,
            ssh_key: None,
            ssh_key_file: None,
            tunnel_user_password: None,
            tunnel_user_password_file: None,
            tunnel_known_hosts_file: None,
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
            tables_include: Vec::new(),
            tables_exclude: Vec::new(),
            ticket_secret: None,
            ticket_secret_file: None,
            ticket_ttl_minutes: 60,
            snapshot_idle_seconds: 60,
            cdc_slot: "hyperflight".into(),
            cdc_publication: "hyperflight".into(),
            tail_max_latency_ms: 500,
            tail_buffer_mb: 64,
            stalled_stream_seconds: 30,
            statement_timeout_seconds: 3_600,
            shutdown_grace_seconds: 30,
            auth_token: None,
            auth_token_file: None,
            tls_cert: None,
            tls_key: None,
            advertise_url: String::new(),
            peers: Vec::new(),
            replica_peers: Vec::new(),
            replay_wait_ms: 5_000,
        }
    }
}

/// `schemas` from a TOML list, or from comma-separated text (environment, flags).
fn list_or_csv<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        List(Vec<String>),
        Text(String),
    }
    Ok(match Either::deserialize(d)? {
        Either::List(l) => l,
        Either::Text(t) if t.trim().is_empty() => Vec::new(),
        Either::Text(t) => t.split(',').map(|s| s.trim().to_string()).collect(),
    })
}

/// Settings given as flags; each overrides the environment, the file and the defaults. The
/// environment is read by the layering (`HYPERFLIGHT_<NAME>`), not by clap, so the order is explicit.
#[derive(Debug, Default, Clone, clap::Args, Serialize)]
pub struct Overrides {
    /// TOML file with settings (names as in the settings table); also `HYPERFLIGHT_CONFIG`.
    #[arg(long, env = "HYPERFLIGHT_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Source database URL (`postgres://…` or `key=value` form; empty: PG* variables, libpq defaults).
    #[arg(long)]
    pub database_url: Option<Secret>,
    /// File holding the database password.
    #[arg(long)]
    pub database_password_file: Option<PathBuf>,
    /// TLS mode to the database: disable, allow, prefer, require, verify-ca, verify-full.
    #[arg(long)]
    pub sslmode: Option<String>,
    /// CA certificates (PEM file) that verify the database, or `system`.
    #[arg(long)]
    pub sslrootcert: Option<String>,
    /// Client certificate (PEM file) for `cert` authentication.
    #[arg(long)]
    pub sslcert: Option<String>,
    /// The client certificate's key (PEM file).
    #[arg(long)]
    pub sslkey: Option<String>,
    /// Password file in .pgpass format.
    #[arg(long)]
    pub passfile: Option<String>,
    /// SSH tunnel: NO_TUNNEL, SSH_KEY_AUTH or SSH_PASSWORD_AUTH.
    #[arg(long)]
    pub tunnel_method: Option<String>,
    /// SSH server host.
    #[arg(long)]
    pub tunnel_host: Option<String>,
    /// SSH server port.
    #[arg(long)]
    pub tunnel_port: Option<u16>,
    /// SSH user.
    #[arg(long)]
    pub tunnel_user: Option<String>,
    /// SSH private key text. Prefer the file form.
    #[arg(long)]
    pub ssh_key: Option<Secret>,
    /// File holding the SSH private key.
    #[arg(long)]
    pub ssh_key_file: Option<PathBuf>,
    /// SSH password. Prefer the file form.
    #[arg(long)]
    pub tunnel_user_password: Option<Secret>,
    /// File holding the SSH password.
    #[arg(long)]
    pub tunnel_user_password_file: Option<PathBuf>,
    /// Known-hosts file holding the SSH server's host key (default ~/.ssh/known_hosts).
    #[arg(long)]
    pub tunnel_known_hosts_file: Option<PathBuf>,
    /// Flight (gRPC) listen address.
    #[arg(long)]
    pub listen: Option<String>,
    /// Prometheus /metrics listen address; empty disables it.
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// Use chunk-aware paths when TimescaleDB is present.
    #[arg(long)]
    pub timescaledb_support: Option<bool>,
    /// Background re-discovery period in minutes.
    #[arg(long)]
    pub chunk_discovery_interval_minutes: Option<u64>,
    /// Cache discovery results.
    #[arg(long)]
    pub enable_chunk_caching: Option<bool>,
    /// Discovery cache lifetime in minutes.
    #[arg(long)]
    pub chunk_cache_ttl_minutes: Option<u64>,
    /// Chunk scans running at once, server-wide.
    #[arg(long)]
    pub max_concurrent_chunks: Option<usize>,
    /// Bound in MiB on batches buffered in the server, all streams together.
    #[arg(long)]
    pub max_memory_mb: Option<u64>,
    /// Rows per record batch, at most.
    #[arg(long)]
    pub batch_rows: Option<usize>,
    /// Heap MiB per endpoint when a plain table is split into block ranges.
    #[arg(long)]
    pub plain_endpoint_mb: Option<u64>,
    /// Comma-separated schemas to expose (default: all user schemas).
    #[arg(long)]
    pub schemas: Option<String>,
    /// Comma-separated glob patterns on schema.table to expose (default: all).
    #[arg(long)]
    pub tables_include: Option<String>,
    /// Comma-separated glob patterns on schema.table never to expose.
    #[arg(long)]
    pub tables_exclude: Option<String>,
    /// HMAC key for tickets (at least 16 bytes); share it across a fleet. Prefer the file form.
    #[arg(long)]
    pub ticket_secret: Option<Secret>,
    /// File holding the ticket secret.
    #[arg(long)]
    pub ticket_secret_file: Option<PathBuf>,
    /// Lifetime of an issued ticket in minutes.
    #[arg(long)]
    pub ticket_ttl_minutes: Option<u64>,
    /// Seconds after which a consistent snapshot no scan uses is released.
    #[arg(long)]
    pub snapshot_idle_seconds: Option<u64>,
    /// Logical replication slot live tails read.
    #[arg(long)]
    pub cdc_slot: Option<String>,
    /// Publication that slot reads.
    #[arg(long)]
    pub cdc_publication: Option<String>,
    /// Milliseconds a tail's pending changes may wait before they are sent.
    #[arg(long)]
    pub tail_max_latency_ms: Option<u64>,
    /// Megabytes of decoded changes kept for tails.
    #[arg(long)]
    pub tail_buffer_mb: Option<u64>,
    /// Seconds a client may take no batch before its stream gives up its scan slot.
    #[arg(long)]
    pub stalled_stream_seconds: Option<u64>,
    /// Database-side limit on one scan statement, in seconds.
    #[arg(long)]
    pub statement_timeout_seconds: Option<u64>,
    /// After SIGTERM, seconds running streams may take to finish.
    #[arg(long)]
    pub shutdown_grace_seconds: Option<u64>,
    /// Require `authorization: Bearer <token>` on every call. Prefer the file form.
    #[arg(long)]
    pub auth_token: Option<Secret>,
    /// File holding the auth token.
    #[arg(long)]
    pub auth_token_file: Option<PathBuf>,
    /// PEM certificate chain for TLS.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// This server's Flight URL as clients reach it (listed in endpoint locations with peers).
    #[arg(long)]
    pub advertise_url: Option<String>,
    /// Comma-separated Flight URLs of the fleet's other servers on the same primary.
    #[arg(long)]
    pub peers: Option<String>,
    /// Comma-separated Flight URLs of the fleet's servers on hot standbys.
    #[arg(long)]
    pub replica_peers: Option<String>,
    /// Milliseconds a server on a standby waits for replay to reach a ticket's WAL position.
    #[arg(long)]
    pub replay_wait_ms: Option<u64>,
}

impl Settings {
    /// Defaults, then the `--config` file, then the environment, then flags.
    pub fn load(overrides: &Overrides) -> Result<Settings, ConfigError> {
        Self::load_with_env(overrides, Env::prefixed("HYPERFLIGHT_"))
    }

    fn load_with_env(overrides: &Overrides, env: Env) -> Result<Settings, ConfigError> {
        // Only names of settings: other HYPERFLIGHT_* variables (HYPERFLIGHT_LOG, a script's own)
        // are not settings. The flag ids are exactly the setting names.
        let names: Vec<String> =
            <Overrides as clap::Args>::augment_args(clap::Command::new("settings"))
                .get_arguments()
                .map(|a| a.get_id().to_string())
                .filter(|id| id != "config")
                .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        // Flags: the given ones only (a None would hide a lower layer's value).
        let mut flags =
            serde_json::to_value(overrides).map_err(|e| ConfigError::Load(e.to_string()))?;
        if let Some(map) = flags.as_object_mut() {
            map.retain(|_, v| !v.is_null());
        }
        let mut figment = Figment::new();
        if let Some(path) = &overrides.config {
            if !path.is_file() {
                return Err(ConfigError::Load(format!(
                    "cannot read config file {}",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file(path));
        }
        figment
            .merge(env.only(&names))
            .merge(Serialized::globals(flags))
            .extract()
            .map_err(|e| ConfigError::Load(e.to_string()))
    }

    /// Checks ranges and formats; the result is what the server runs with.
    pub fn validate(self) -> Result<Config, ConfigError> {
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
        let password = secret_from(
            None,
            "database_password_file",
            self.database_password_file.as_ref(),
        )?;
        let params = pgconn::Params {
            sslmode: self.sslmode.clone(),
            sslrootcert: self.sslrootcert.clone(),
            sslcert: self.sslcert.clone(),
            sslkey: self.sslkey.clone(),
            passfile: self.passfile.clone(),
        };
        let bad_database = |e: pgconn::ConnectError| invalid("database_url", e.to_string());
        let mut target = pgconn::Target::resolve(
            self.database_url.expose(),
            &params,
            password.as_ref().map(Secret::expose),
            &pgconn::ProcessEnv,
        )
        .map_err(bad_database)?;
        target.tunnel = self.tunnel()?;
        let database = pgconn::Connector::new(target).map_err(bad_database)?;
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
        let ticket_secret = secret_from(
            self.ticket_secret,
            "ticket_secret_file",
            self.ticket_secret_file.as_ref(),
        )?;
        let auth_token = secret_from(
            self.auth_token,
            "auth_token_file",
            self.auth_token_file.as_ref(),
        )?;
        let ticket_secret = match ticket_secret {
            Some(s) if s.expose().len() < 16 => {
                return Err(invalid("ticket_secret", "must be at least 16 bytes"))
            }
            Some(s) => s.expose().as_bytes().to_vec(),
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
        let tables = TableFilter {
            include: globs("tables_include", &self.tables_include)?,
            exclude: globs("tables_exclude", &self.tables_exclude)?,
        };
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
        if matches!(&auth_token, Some(t) if t.expose().is_empty()) {
            return Err(invalid("auth_token", "must not be empty when set"));
        }
        let fleet = FleetSettings {
            advertise_url: match self.advertise_url.trim() {
                "" => None,
                url => Some(flight_url("advertise_url", url)?),
            },
            peers: flight_urls("peers", &self.peers)?,
            replica_peers: flight_urls("replica_peers", &self.replica_peers)?,
            replay_wait: Duration::from_millis(in_range(
                "replay_wait_ms",
                self.replay_wait_ms,
                0,
                600_000,
            )?),
        };
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
            tables,
            ticket_secret,
            ticket_ttl: minutes(in_range(
                "ticket_ttl_minutes",
                self.ticket_ttl_minutes,
                1,
                7 * 1_440,
            )?),
            stall_timeout: Duration::from_secs(in_range(
                "stalled_stream_seconds",
                self.stalled_stream_seconds,
                1,
                86_400,
            )?),
            snapshot_idle: Duration::from_secs(in_range(
                "snapshot_idle_seconds",
                self.snapshot_idle_seconds,
                1,
                86_400,
            )?),
            tail: crate::cdc::TailSettings {
                slot: non_empty("cdc_slot", self.cdc_slot)?,
                publication: non_empty("cdc_publication", self.cdc_publication)?,
                batch_rows: self.batch_rows,
                max_latency: Duration::from_millis(in_range(
                    "tail_max_latency_ms",
                    self.tail_max_latency_ms,
                    1,
                    60_000,
                )?),
                buffer_bytes: in_range("tail_buffer_mb", self.tail_buffer_mb, 1, 1 << 20)? << 20,
            },
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
            auth_token: auth_token.map(|t| t.expose().to_string()),
            tls,
            fleet,
        })
    }
}

impl Settings {
    /// The effective settings as TOML that `--config` accepts. Secrets are left out (a comment says
    /// which are set), and the database URL is rebuilt from its resolved form without the password,
    /// whatever form it was given in.
    pub fn to_toml(&self, database: &pgconn::Target) -> String {
        let mut table = toml::Table::try_from(self).expect("settings serialize as a TOML table");
        let mut out = String::from("# hyperflight: effective settings; secrets are left out.\n");
        for key in [
            "ticket_secret",
            "auth_token",
            "ssh_key",
            "tunnel_user_password",
        ] {
            if table.remove(key).is_some() {
                out.push_str(&format!("# {key} is set (not shown)\n"));
            }
        }
        if database.pg.get_password().is_some() {
            out.push_str("# the database password is set (not shown)\n");
        }
        table.insert("database_url".into(), database.redacted().into());
        out + &toml::to_string(&table).expect("a TOML table serializes")
    }

    /// The SSH tunnel settings (Airbyte's `tunnel_method` names), checked.
    fn tunnel(&self) -> Result<Option<pgconn::TunnelSettings>, ConfigError> {
        let auth = match self.tunnel_method.as_str() {
            "NO_TUNNEL" => return Ok(None),
            "SSH_KEY_AUTH" => secret_from(
                self.ssh_key.clone(),
                "ssh_key_file",
                self.ssh_key_file.as_ref(),
            )?
            .map(|k| pgconn::TunnelAuth::Key(k.expose().to_string()))
            .ok_or_else(|| invalid("ssh_key", "SSH_KEY_AUTH needs ssh_key or ssh_key_file"))?,
            "SSH_PASSWORD_AUTH" => secret_from(
                self.tunnel_user_password.clone(),
                "tunnel_user_password_file",
                self.tunnel_user_password_file.as_ref(),
            )?
            .map(|p| pgconn::TunnelAuth::Password(p.expose().to_string()))
            .ok_or_else(|| {
                invalid(
                    "tunnel_user_password",
                    "SSH_PASSWORD_AUTH needs tunnel_user_password or tunnel_user_password_file",
                )
            })?,
            other => {
                return Err(invalid(
                    "tunnel_method",
                    format!("{other:?} is not one of NO_TUNNEL, SSH_KEY_AUTH, SSH_PASSWORD_AUTH"),
                ))
            }
        };
        let required = |setting: &'static str, v: &Option<String>| match v.as_deref().map(str::trim)
        {
            Some(v) if !v.is_empty() => Ok(v.to_string()),
            _ => Err(invalid(setting, format!("{} needs it", self.tunnel_method))),
        };
        let known_hosts = match &self.tunnel_known_hosts_file {
            Some(f) => f.clone(),
            None => std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".ssh/known_hosts"))
                .ok_or_else(|| {
                    invalid("tunnel_known_hosts_file", "not set, and there is no HOME")
                })?,
        };
        Ok(Some(pgconn::TunnelSettings {
            host: required("tunnel_host", &self.tunnel_host)?,
            port: self.tunnel_port,
            user: required("tunnel_user", &self.tunnel_user)?,
            auth,
            host_keys: pgconn::HostKeys::File(known_hosts),
        }))
    }
}

/// A name that must not be empty.
fn non_empty(setting: &'static str, value: String) -> Result<String, ConfigError> {
    if value.is_empty() {
        return Err(invalid(setting, "must not be empty"));
    }
    Ok(value)
}

fn invalid(setting: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        message: message.into(),
    }
}

/// A secret given inline or in the file setting `file_setting` (not both); the file's trailing
/// newline is not part of it.
fn secret_from(
    inline: Option<Secret>,
    file_setting: &'static str,
    file: Option<&PathBuf>,
) -> Result<Option<Secret>, ConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(invalid(
            file_setting,
            "give the value or the file, not both",
        )),
        (Some(s), None) => Ok(Some(s)),
        (None, None) => Ok(None),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                invalid(file_setting, format!("cannot read {}: {e}", path.display()))
            })?;
            Ok(Some(Secret(
                text.trim_end_matches(['\r', '\n']).to_string(),
            )))
        }
    }
}

/// `tables_include` / `tables_exclude`: glob patterns matched against `schema.table`.
#[derive(Debug, Clone, Default)]
pub struct TableFilter {
    include: Option<globset::GlobSet>,
    exclude: Option<globset::GlobSet>,
}

impl TableFilter {
    /// Whether the relation `schema.table` is exposed.
    pub fn allows(&self, qualified: &str) -> bool {
        self.include.as_ref().is_none_or(|g| g.is_match(qualified))
            && !self.exclude.as_ref().is_some_and(|g| g.is_match(qualified))
    }
}

fn globs(
    setting: &'static str,
    patterns: &[String],
) -> Result<Option<globset::GlobSet>, ConfigError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut set = globset::GlobSetBuilder::new();
    for p in patterns {
        // `*` stays within a name: `public.*` is every table of public, not of public_x.
        let glob = globset::GlobBuilder::new(p)
            .literal_separator(false)
            .build()
            .map_err(|e| invalid(setting, format!("{p:?}: {e}")))?;
        set.add(glob);
    }
    set.build()
        .map(Some)
        .map_err(|e| invalid(setting, e.to_string()))
}

/// A peer's Flight URL: `grpc://`, `grpc+tls://` or `grpc+tcp://` and a host:port.
fn flight_url(setting: &'static str, url: &str) -> Result<String, ConfigError> {
    let url = url.trim();
    let rest = ["grpc://", "grpc+tls://", "grpc+tcp://"]
        .iter()
        .find_map(|p| url.strip_prefix(p))
        .ok_or_else(|| {
            invalid(
                setting,
                format!("{url:?} is not grpc://host:port or grpc+tls://host:port"),
            )
        })?;
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(url.to_string())
        }
        _ => Err(invalid(setting, format!("{url:?} has no host:port"))),
    }
}

fn flight_urls(setting: &'static str, urls: &[String]) -> Result<Vec<String>, ConfigError> {
    urls.iter().map(|u| flight_url(setting, u)).collect()
}

/// Scale-out: where else this server's endpoints can be read (see `fleet.rs`).
#[derive(Debug, Clone, Default)]
pub struct FleetSettings {
    /// This server's own location; `None` lists Flight's "the server you asked" URI.
    pub advertise_url: Option<String>,
    /// Servers on the same primary.
    pub peers: Vec<String>,
    /// Servers on hot standbys.
    pub replica_peers: Vec<String>,
    /// Bound on a standby server's wait for replay to reach a ticket's WAL position.
    pub replay_wait: Duration,
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
    /// How to reach the source database (TLS, tunnel, credentials resolved).
    pub database: pgconn::Connector,
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
    /// Which relations of those schemas are exposed.
    pub tables: TableFilter,
    /// HMAC key for tickets.
    pub ticket_secret: Vec<u8>,
    /// Lifetime of an issued ticket.
    pub ticket_ttl: Duration,
    /// A consistent snapshot unused this long is released.
    pub snapshot_idle: Duration,
    /// The live tail: slot, publication, batching, buffer.
    pub tail: crate::cdc::TailSettings,
    /// A client that takes no batch this long loses its scan.
    pub stall_timeout: Duration,
    /// Database-side limit on one scan statement.
    pub statement_timeout: Duration,
    /// Bound on the wait for running streams at shutdown.
    pub shutdown_grace: Duration,
    /// Bearer token every call must carry, if set.
    pub auth_token: Option<String>,
    /// TLS files, if TLS is on.
    pub tls: Option<TlsFiles>,
    /// Peers and the standby replay wait.
    pub fleet: FleetSettings,
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
            database_url: Secret(database_url.to_string()),
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
    fn fleet_settings_validate_their_urls() {
        let c = Settings {
            peers: vec!["grpc://b:50051".into()],
            replica_peers: vec!["grpc+tls://c.example:443".into()],
            advertise_url: "grpc://a:50051".into(),
            ..Settings::default()
        }
        .validate()
        .unwrap();
        assert_eq!(c.fleet.peers, ["grpc://b:50051"]);
        assert_eq!(c.fleet.advertise_url.as_deref(), Some("grpc://a:50051"));
        assert_eq!(c.fleet.replay_wait, Duration::from_secs(5));
        for (bad, setting) in [
            (vec!["http://b:1".to_string()], "peers"),
            (vec!["grpc://b".to_string()], "peers"),
        ] {
            let s = Settings {
                peers: bad,
                ..Settings::default()
            };
            assert_eq!(invalid_setting(s), setting);
        }
        let s = Settings {
            replay_wait_ms: 600_001,
            ..Settings::default()
        };
        assert_eq!(invalid_setting(s), "replay_wait_ms");
    }

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

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hf-config-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn file_then_env_then_flags() {
        let dir = scratch_dir("layers");
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "batch_rows = 100\nlisten = \"127.0.0.1:1\"\nmax_memory_mb = 64\n",
        )
        .unwrap();
        // A prefix of this test's own, so parallel tests see none of it.
        std::env::set_var("HFTEST_LAYERS_LISTEN", "127.0.0.1:3");
        std::env::set_var("HFTEST_LAYERS_MAX_MEMORY_MB", "32");
        std::env::set_var("HFTEST_LAYERS_SCHEMAS", "a, b");
        std::env::set_var("HFTEST_LAYERS_NOT_A_SETTING", "ignored");
        std::env::set_var("HFTEST_LAYERS_AUTH_TOKEN", "12345");
        let o = Overrides {
            config: Some(file.clone()),
            listen: Some("127.0.0.1:2".into()),
            ..Overrides::default()
        };
        let s = Settings::load_with_env(&o, Env::prefixed("HFTEST_LAYERS_")).unwrap();
        assert_eq!(s.batch_rows, 100, "file beats default");
        assert_eq!(s.max_memory_mb, 32, "env beats file");
        assert_eq!(s.listen, "127.0.0.1:2", "flag beats env");
        assert_eq!(s.schemas, ["a", "b"]);
        assert_eq!(s.auth_token, Some(Secret::from("12345")));
        std::fs::write(&file, "batch_rowz = 1\n").unwrap();
        let e = Settings::load(&o).unwrap_err().to_string();
        assert!(e.contains("batch_rowz"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn secrets_never_print_and_check_config_toml_loads_back() {
        let dir = scratch_dir("toml");
        let secret_file = dir.join("secret");
        std::fs::write(&secret_file, "from-a-file-0123456789\n").unwrap();
        for url in [
            "postgres://u:hunter2@h:5/db",
            "host=h port=5 user=u password=hunter2 dbname=db",
            "postgres://u@h:5/db?password=hunter2&application_name=x",
        ] {
            let s = Settings {
                database_url: url.into(),
                auth_token: Some("tok-hunter2".into()),
                ticket_secret_file: Some(secret_file.clone()),
                ..Settings::default()
            };
            assert!(!format!("{s:?}").contains("hunter2"));
            let c = s.clone().validate().unwrap();
            assert_eq!(c.ticket_secret, b"from-a-file-0123456789");
            let text = s.to_toml(c.database.target());
            assert!(
                !text.contains("hunter2") && !text.contains("from-a-file"),
                "{text}"
            );
            let file = dir.join("back.toml");
            std::fs::write(&file, &text).unwrap();
            let o = Overrides {
                config: Some(file),
                ..Overrides::default()
            };
            let back = Settings::load_with_env(&o, Env::prefixed("HFTEST_NONE_")).unwrap();
            let back = back.validate().unwrap();
            let (back, c) = (&back.database.target().pg, &c.database.target().pg);
            assert_eq!(back.get_hosts(), c.get_hosts());
            assert_eq!(back.get_user(), Some("u"));
            assert_eq!(back.get_dbname(), Some("db"));
            assert_eq!(back.get_password(), None);
        }
        let both = Settings {
            ticket_secret: Some("0123456789abcdefgh".into()),
            ticket_secret_file: Some(secret_file),
            ..Settings::default()
        };
        assert_eq!(invalid_setting(both), "ticket_secret_file");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
