//! The source config: parsed from the `--config` JSON, validated against [`crate::spec`]'s
//! bounds, and turned into PostgreSQL connection parameters and the in-process server's settings.
//!
//! Two modes ([`Service`]): without `flight_url` the source runs the Flight service in-process and
//! needs host, database and username; with `flight_url` it reads from that server and needs no
//! database settings at all (any given are ignored).
//!
//! The password lives in a [`Secret`]: it never appears in `Debug` output and never serializes.
//!
//! **Ticket secret.** Resume tickets are HMAC-signed by the Flight service. For a ticket saved in a
//! STATE to be accepted by the next attempt's in-process service, both must sign with the same key,
//! so the key is derived from the config: HMAC-SHA256 keyed with a fixed label over host, port,
//! database, username and password. Nothing secret is persisted in the state, and the key changes
//! when the credentials do (old tickets are then refused, and their chunks re-read from the start).
//! Without a password the key is guessable, which gives nothing away: a forged ticket can only make
//! the loopback service, during this read, read what this role may read anyway.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;

use crate::spec::{self, Bounds};
use crate::{read_json, Error};

/// How long the in-process service's tickets live: the longest the server accepts, so a STATE saved
/// by a failed attempt still resumes at the platform's next attempt days later.
const IN_PROCESS_TICKET_TTL: Duration = Duration::from_secs(7 * 86_400);
/// Connect timeout for PostgreSQL, for `check` and for the in-process service.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A string that never shows in logs or serialized output.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The value, for the one place that needs it (the connection).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// `ssl_mode` as written: a libpq mode name, or Airbyte Postgres' object (`{"mode": "verify-ca",
/// "ca_certificate": "..."}`) whose verifying modes carry PEM text.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawSslMode {
    Name(String),
    Object {
        mode: String,
        #[serde(default)]
        ca_certificate: Option<Secret>,
        #[serde(default)]
        client_certificate: Option<Secret>,
        #[serde(default)]
        client_key: Option<Secret>,
    },
}

/// `tunnel_method` as written (Airbyte's field names).
#[derive(Deserialize)]
struct RawTunnel {
    tunnel_method: String,
    #[serde(default)]
    tunnel_host: Option<String>,
    #[serde(default)]
    tunnel_port: Option<i64>,
    #[serde(default)]
    tunnel_user: Option<String>,
    #[serde(default)]
    ssh_key: Option<Secret>,
    #[serde(default)]
    tunnel_user_password: Option<Secret>,
}

/// `replication_method` as written (Airbyte source-postgres's field names).
#[derive(Deserialize)]
struct RawReplication {
    method: String,
    #[serde(default)]
    plugin: Option<String>,
    #[serde(default)]
    replication_slot: Option<String>,
    #[serde(default)]
    publication: Option<String>,
    #[serde(default)]
    initial_waiting_seconds: Option<i64>,
    #[serde(default)]
    lsn_commit_behaviour: Option<String>,
}

/// The config file as written; numbers as `i64` so an out-of-range value gets a message naming it.
#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    port: Option<i64>,
    #[serde(default)]
    database: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<Secret>,
    #[serde(default)]
    schemas: Option<Vec<String>>,
    #[serde(default)]
    ssl_mode: Option<RawSslMode>,
    #[serde(default)]
    tunnel_method: Option<RawTunnel>,
    #[serde(default)]
    flight_url: Option<String>,
    #[serde(default)]
    flight_token: Option<Secret>,
    #[serde(default)]
    flight_tls_root_certs: Option<String>,
    #[serde(default)]
    timescaledb_support: Option<bool>,
    #[serde(default)]
    timescaledb_chunk_discovery_interval_minutes: Option<i64>,
    #[serde(default)]
    timescaledb_max_concurrent_chunks: Option<i64>,
    #[serde(default)]
    timescaledb_enable_chunk_caching: Option<bool>,
    #[serde(default)]
    timescaledb_chunk_cache_ttl_minutes: Option<i64>,
    #[serde(default)]
    timescaledb_max_memory_mb: Option<i64>,
    #[serde(default)]
    replication_method: Option<RawReplication>,
    #[serde(flatten)]
    unknown: BTreeMap<String, Value>,
}

/// The TimescaleDB options of the spec, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimescaleOptions {
    /// Chunk-aware reading when the extension is present.
    pub support: bool,
    /// Background re-discovery period.
    pub discovery_interval_minutes: u64,
    /// Parallel chunk reads (and server-side scans).
    pub max_concurrent_chunks: usize,
    /// Cache discovery results.
    pub enable_chunk_caching: bool,
    /// Cache lifetime.
    pub chunk_cache_ttl_minutes: u64,
    /// Bound on the in-process service's buffered batches.
    pub max_memory_mb: u64,
}

/// How incremental streams find new rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationMethod {
    /// By cursor (`Standard`).
    Standard,
    /// From a logical replication slot.
    Cdc(CdcSettings),
}

/// `replication_method` CDC, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdcSettings {
    /// The slot this source reads (and makes, on a first sync).
    pub replication_slot: String,
    /// The publication it reads.
    pub publication: String,
    /// How long a read waits with nothing arriving.
    pub initial_waiting: Duration,
    /// Acknowledge each STATE as it is emitted (`While reading Data`), or only the state a sync
    /// starts from (`After loading Data in the destination`).
    pub ack_while_reading: bool,
}

/// How to reach PostgreSQL: needed only when the source runs the Flight service itself.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// PostgreSQL host.
    pub host: String,
    /// PostgreSQL port.
    pub port: u16,
    /// Database name.
    pub database: String,
    /// Role.
    pub username: String,
    /// The role's password; `None` for trust authentication.
    password: Option<Secret>,
    /// TLS to PostgreSQL.
    pub tls: pgconn::TlsOptions,
    /// The SSH tunnel, if any.
    pub tunnel: Option<pgconn::TunnelSettings>,
}

/// The Flight service rows come from.
#[derive(Debug, Clone)]
pub enum Service {
    /// Started in this process, connecting to PostgreSQL with these settings.
    InProcess(Box<DatabaseSettings>),
    /// A running hyperflight server; the source itself never connects to PostgreSQL.
    Remote {
        /// `grpc://host:port` or `grpc+tls://host:port`, as the user wrote it (messages name it
        /// this way).
        url: String,
        /// Sent as `authorization: Bearer …` on every call (the server's `auth_token`).
        token: Option<Secret>,
        /// PEM roots that verify the server's certificate (`grpc+tls://` only); the system's web
        /// roots when absent.
        tls_root_certs: Option<String>,
    },
}

/// The validated config.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// Where rows come from (and whether the source needs database credentials at all).
    pub service: Service,
    /// Exposed schemas; empty means all user schemas.
    pub schemas: Vec<String>,
    /// TimescaleDB options.
    pub timescaledb: TimescaleOptions,
    /// Cursor or CDC.
    pub replication: ReplicationMethod,
    /// Keys the spec does not know (reported as a warning, then ignored).
    pub unknown_keys: Vec<String>,
}

fn invalid(setting: &'static str, message: impl Into<String>) -> Error {
    Error::InvalidConfig {
        setting,
        message: message.into(),
    }
}

fn bounded(setting: &'static str, value: Option<i64>, b: Bounds) -> Result<i64, Error> {
    let v = value.unwrap_or(b.default);
    if v < b.min || v > b.max {
        return Err(invalid(
            setting,
            format!("{v} is out of range {}..={}", b.min, b.max),
        ));
    }
    Ok(v)
}

/// A required text setting of the in-process mode, trimmed.
fn required(setting: &'static str, value: Option<String>) -> Result<String, Error> {
    match value {
        None => Err(invalid(setting, "is required unless flight_url is set")),
        Some(v) if v.trim().is_empty() => Err(invalid(setting, "must not be empty")),
        Some(v) => Ok(v),
    }
}

impl SourceConfig {
    /// Reads and validates the config file. A file that is not JSON of the right shape is
    /// [`Error::Malformed`]; a well-formed value out of range, or missing, is
    /// [`Error::InvalidConfig`].
    pub fn load(path: &Path) -> Result<SourceConfig, Error> {
        let raw: RawConfig = read_json("config", path)?;
        Self::validate(raw)
    }

    /// Parses and validates config JSON text (tests, embedders).
    pub fn from_json(text: &str) -> Result<SourceConfig, Error> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| Error::Malformed {
            what: "config",
            path: "<inline>".into(),
            message: e.to_string(),
        })?;
        Self::validate(raw)
    }

    fn validate(mut raw: RawConfig) -> Result<SourceConfig, Error> {
        let replication = replication(raw.replication_method.take())?;
        let service = match raw.flight_url.take().as_deref().map(str::trim) {
            None | Some("") => Service::InProcess(Box::new(DatabaseSettings::validate(&mut raw)?)),
            Some(url) => remote(
                url,
                raw.flight_token.take(),
                raw.flight_tls_root_certs.take(),
            )?,
        };
        let schemas = raw.schemas.unwrap_or_default();
        if schemas.iter().any(|s| s.is_empty()) {
            return Err(invalid("schemas", "empty schema name"));
        }
        let ts = TimescaleOptions {
            support: raw.timescaledb_support.unwrap_or(true),
            discovery_interval_minutes: bounded(
                "timescaledb_chunk_discovery_interval_minutes",
                raw.timescaledb_chunk_discovery_interval_minutes,
                spec::DISCOVERY_INTERVAL_MINUTES,
            )? as u64,
            max_concurrent_chunks: bounded(
                "timescaledb_max_concurrent_chunks",
                raw.timescaledb_max_concurrent_chunks,
                spec::MAX_CONCURRENT_CHUNKS,
            )? as usize,
            enable_chunk_caching: raw.timescaledb_enable_chunk_caching.unwrap_or(true),
            chunk_cache_ttl_minutes: bounded(
                "timescaledb_chunk_cache_ttl_minutes",
                raw.timescaledb_chunk_cache_ttl_minutes,
                spec::CHUNK_CACHE_TTL_MINUTES,
            )? as u64,
            max_memory_mb: bounded(
                "timescaledb_max_memory_mb",
                raw.timescaledb_max_memory_mb,
                spec::MAX_MEMORY_MB,
            )? as u64,
        };
        if matches!(replication, ReplicationMethod::Cdc(_))
            && matches!(service, Service::Remote { .. })
        {
            return Err(invalid(
                "replication_method",
                "CDC reads the database's replication slot itself: it needs the database \
                 settings, not flight_url",
            ));
        }
        Ok(SourceConfig {
            service,
            schemas,
            timescaledb: ts,
            replication,
            unknown_keys: raw.unknown.into_keys().collect(),
        })
    }

    /// Settings for the in-process Flight service.
    pub fn server_config(&self, db: &DatabaseSettings) -> Result<server::config::Config, Error> {
        // Start from validated defaults so settings added to the server later keep their defaults.
        let mut c = server::config::Config::for_database("postgres://127.0.0.1/postgres")
            .map_err(|e| Error::Server(e.to_string()))?;
        let ts = &self.timescaledb;
        let minutes = |m: u64| Duration::from_secs(m * 60);
        c.database = db.connector()?;
        c.timescaledb_support = ts.support;
        c.discovery_interval = minutes(ts.discovery_interval_minutes);
        c.cache_ttl = ts
            .enable_chunk_caching
            .then(|| minutes(ts.chunk_cache_ttl_minutes));
        c.max_concurrent_chunks = ts.max_concurrent_chunks;
        c.schemas = self.schemas.clone();
        c.ticket_secret = db.ticket_secret();
        c.ticket_ttl = IN_PROCESS_TICKET_TTL;
        c.max_memory_bytes = ts.max_memory_mb << 20;
        Ok(c)
    }
}

impl DatabaseSettings {
    /// Takes the connection settings out of `raw`: host, database and username are required.
    fn validate(raw: &mut RawConfig) -> Result<DatabaseSettings, Error> {
        Ok(DatabaseSettings {
            host: required("host", raw.host.take())?.trim().to_string(),
            port: bounded("port", raw.port, spec::PORT)? as u16,
            database: required("database", raw.database.take())?,
            username: required("username", raw.username.take())?,
            password: raw.password.take().filter(|p| !p.0.is_empty()),
            tls: tls(raw.ssl_mode.take())?,
            tunnel: tunnel(raw.tunnel_method.take())?,
        })
    }

    /// `host:port/database` for messages (no credentials).
    pub fn target(&self) -> String {
        format!("{}:{}/{}", self.host, self.port, self.database)
    }

    /// How to connect: TLS, tunnel and credentials (no URL, so no escaping of the password).
    pub fn connector(&self) -> Result<pgconn::Connector, Error> {
        let mut pg = tokio_postgres::Config::new();
        pg.host(&self.host)
            .port(self.port)
            .dbname(&self.database)
            .user(&self.username)
            .application_name("hyperflight-airbyte")
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(p) = &self.password {
            pg.password(p.expose());
        }
        pgconn::Connector::new(pgconn::Target {
            pg,
            tls: self.tls.clone(),
            tunnel: self.tunnel.clone(),
        })
        .map_err(|e| invalid("ssl_mode", e.to_string()))
    }

    /// The key the in-process service signs tickets with; stable for given settings (see the
    /// module documentation).
    pub fn ticket_secret(&self) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"hyperflight-airbyte ticket secret v1")
            .expect("HMAC takes keys of any length");
        let port = self.port.to_string();
        let password = self.password.as_ref().map(Secret::expose).unwrap_or("");
        for part in [
            self.host.as_str(),
            &port,
            &self.database,
            &self.username,
            password,
        ] {
            // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac.finalize().into_bytes().to_vec()
    }
}

/// `replication_method`: absent or `Standard` is the cursor read; `CDC` needs the slot and the
/// publication.
fn replication(raw: Option<RawReplication>) -> Result<ReplicationMethod, Error> {
    let Some(raw) = raw else {
        return Ok(ReplicationMethod::Standard);
    };
    match raw.method.as_str() {
        "Standard" => return Ok(ReplicationMethod::Standard),
        "CDC" => {}
        other => {
            return Err(invalid(
                "replication_method",
                format!("method {other:?} is not one of Standard, CDC"),
            ))
        }
    }
    if let Some(plugin) = raw.plugin.filter(|p| p != "pgoutput") {
        return Err(invalid(
            "plugin",
            format!("{plugin:?}: only pgoutput is supported"),
        ));
    }
    let name = |setting: &'static str, v: Option<String>| match v {
        Some(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
        _ => Err(invalid(
            setting,
            "is required for the CDC replication method",
        )),
    };
    let ack_while_reading = match raw.lsn_commit_behaviour.as_deref() {
        None | Some(spec::LSN_AFTER_LOADING) => false,
        Some(spec::LSN_WHILE_READING) => true,
        Some(other) => {
            return Err(invalid(
                "lsn_commit_behaviour",
                format!(
                    "{other:?} is not {:?} or {:?}",
                    spec::LSN_WHILE_READING,
                    spec::LSN_AFTER_LOADING
                ),
            ))
        }
    };
    Ok(ReplicationMethod::Cdc(CdcSettings {
        replication_slot: name("replication_slot", raw.replication_slot)?,
        publication: name("publication", raw.publication)?,
        initial_waiting: Duration::from_secs(bounded(
            "initial_waiting_seconds",
            raw.initial_waiting_seconds,
            spec::INITIAL_WAITING_SECONDS,
        )? as u64),
        ack_while_reading,
    }))
}

/// `ssl_mode`, as libpq's modes: absent means `prefer` (libpq's default); the verifying modes need
/// `ca_certificate`; a client certificate needs its key.
fn tls(raw: Option<RawSslMode>) -> Result<pgconn::TlsOptions, Error> {
    let text = |s: Option<Secret>| s.map(|s| s.0).filter(|t| !t.trim().is_empty());
    let (mode, ca, cert, key) = match raw {
        None => ("prefer".to_string(), None, None, None),
        Some(RawSslMode::Name(m)) => (m, None, None, None),
        Some(RawSslMode::Object {
            mode,
            ca_certificate,
            client_certificate,
            client_key,
        }) => (
            mode,
            text(ca_certificate),
            text(client_certificate),
            text(client_key),
        ),
    };
    let mode = pgconn::SslMode::parse(&mode).map_err(|e| invalid("ssl_mode", e.to_string()))?;
    let verifies = matches!(
        mode,
        pgconn::SslMode::VerifyCa | pgconn::SslMode::VerifyFull
    );
    let root_cert = match (verifies, ca) {
        (true, None) => {
            return Err(invalid(
                "ssl_mode",
                format!(
                "{} needs ca_certificate (PEM text of the CA that signed the server's certificate)",
                mode.name()
            ),
            ))
        }
        (true, Some(pem)) => Some(pgconn::RootCert::Pem(pgconn::Pem::Inline(pem))),
        (false, _) => None,
    };
    let client = match (cert, key) {
        (Some(c), Some(k)) => Some((pgconn::Pem::Inline(c), pgconn::Pem::Inline(k))),
        (None, None) => None,
        _ => {
            return Err(invalid(
                "ssl_mode",
                "client_certificate and client_key go together",
            ))
        }
    };
    Ok(pgconn::TlsOptions {
        mode,
        root_cert,
        client,
    })
}

/// `tunnel_method`: NO_TUNNEL, SSH_KEY_AUTH or SSH_PASSWORD_AUTH with Airbyte's fields. The host
/// key is accepted and its fingerprint logged, as Airbyte's own sources do.
fn tunnel(raw: Option<RawTunnel>) -> Result<Option<pgconn::TunnelSettings>, Error> {
    let Some(raw) = raw else { return Ok(None) };
    let needs = |setting: &'static str, v: Option<String>| match v {
        Some(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
        _ => Err(invalid(
            setting,
            format!("is required for {}", raw.tunnel_method),
        )),
    };
    let auth = match raw.tunnel_method.as_str() {
        "NO_TUNNEL" => return Ok(None),
        "SSH_KEY_AUTH" => {
            pgconn::TunnelAuth::Key(needs("ssh_key", raw.ssh_key.clone().map(|s| s.0))?)
        }
        "SSH_PASSWORD_AUTH" => pgconn::TunnelAuth::Password(
            raw.tunnel_user_password
                .clone()
                .map(|s| s.0)
                .filter(|p| !p.is_empty())
                .ok_or_else(|| {
                    invalid("tunnel_user_password", "is required for SSH_PASSWORD_AUTH")
                })?,
        ),
        other => {
            return Err(invalid(
                "tunnel_method",
                format!("{other:?} is not one of NO_TUNNEL, SSH_KEY_AUTH, SSH_PASSWORD_AUTH"),
            ))
        }
    };
    Ok(Some(pgconn::TunnelSettings {
        host: needs("tunnel_host", raw.tunnel_host.clone())?,
        port: bounded("tunnel_port", raw.tunnel_port, spec::TUNNEL_PORT)? as u16,
        user: needs("tunnel_user", raw.tunnel_user.clone())?,
        auth,
        host_keys: pgconn::HostKeys::AcceptAny,
    }))
}

/// The remote mode: `url` checked, the token and PEM roots kept (empty ones dropped).
fn remote(
    url: &str,
    token: Option<Secret>,
    tls_root_certs: Option<String>,
) -> Result<Service, Error> {
    let (url, tls) = flight_url(url)?;
    let tls_root_certs = tls_root_certs.filter(|p| !p.trim().is_empty());
    if let Some(pem) = &tls_root_certs {
        if !tls {
            return Err(invalid(
                "flight_tls_root_certs",
                "is for a TLS server: use a grpc+tls:// flight_url",
            ));
        }
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(invalid(
                "flight_tls_root_certs",
                "is not PEM text (-----BEGIN CERTIFICATE----- ...)",
            ));
        }
    }
    Ok(Service::Remote {
        url,
        token: token.filter(|t| !t.0.is_empty()),
        tls_root_certs,
    })
}

/// Checks `url` is `grpc://host:port` (or `grpc+tcp://`, `http://`; with TLS `grpc+tls://`,
/// `https://`) and returns it as written, and whether it is TLS: [`protocol::client`] connects to
/// it, and messages name it the way the user wrote it.
fn flight_url(url: &str) -> Result<(String, bool), Error> {
    let plain = ["grpc://", "grpc+tcp://", "http://"]
        .iter()
        .find_map(|p| url.strip_prefix(p));
    let tls = ["grpc+tls://", "https://"]
        .iter()
        .find_map(|p| url.strip_prefix(p));
    match (plain, tls) {
        (Some(a), _) if !a.is_empty() && !a.contains('/') => Ok((url.to_string(), false)),
        (_, Some(a)) if !a.is_empty() && !a.contains('/') => Ok((url.to_string(), true)),
        _ => Err(invalid(
            "flight_url",
            format!("{url:?} is not grpc://host:port or grpc+tls://host:port"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{"host": "db", "port": 5433, "database": "tsdb", "username": "u", "password": "hunter2"}"#;

    fn with(extra: &str) -> Result<SourceConfig, Error> {
        SourceConfig::from_json(&format!(
            r#"{{"host": "db", "database": "tsdb", "username": "u", {extra}}}"#
        ))
    }

    fn setting(r: Result<SourceConfig, Error>) -> &'static str {
        match r {
            Err(Error::InvalidConfig { setting, .. }) => setting,
            other => panic!("expected an invalid setting, got {other:?}"),
        }
    }

    fn database(c: &SourceConfig) -> &DatabaseSettings {
        match &c.service {
            Service::InProcess(db) => db,
            Service::Remote { url, .. } => panic!("expected the in-process mode, got {url}"),
        }
    }

    #[test]
    fn server_config_carries_the_timescaledb_options() {
        let c = with(
            r#""timescaledb_max_memory_mb": 96, "timescaledb_max_concurrent_chunks": 3,
                "timescaledb_enable_chunk_caching": false"#,
        )
        .unwrap();
        let server = c.server_config(database(&c)).unwrap();
        assert_eq!(server.max_memory_bytes, 96 << 20);
        assert_eq!(server.max_concurrent_chunks, 3);
        assert_eq!(server.cache_ttl, None);
    }

    #[test]
    fn defaults_follow_the_spec() {
        let c = SourceConfig::from_json(MINIMAL).unwrap();
        assert_eq!(database(&c).port, 5433);
        assert_eq!(database(&c).tls.mode, pgconn::SslMode::Prefer);
        assert!(database(&c).tunnel.is_none());
        assert_eq!(
            c.timescaledb,
            TimescaleOptions {
                support: true,
                discovery_interval_minutes: 5,
                max_concurrent_chunks: 4,
                enable_chunk_caching: true,
                chunk_cache_ttl_minutes: 10,
                max_memory_mb: 512,
            }
        );
        assert_eq!(database(&with(r#""password": "x""#).unwrap()).port, 5432);
    }

    #[test]
    fn replication_method_cdc_is_validated() {
        assert_eq!(
            SourceConfig::from_json(MINIMAL).unwrap().replication,
            ReplicationMethod::Standard
        );
        let cdc = |fields: &str| {
            with(&format!(
                r#""replication_method": {{"method": "CDC"{fields}}}"#
            ))
        };
        let c = cdc(r#", "replication_slot": "s", "publication": "p", "lsn_commit_behaviour": "While reading Data""#)
            .unwrap();
        assert_eq!(
            c.replication,
            ReplicationMethod::Cdc(CdcSettings {
                replication_slot: "s".into(),
                publication: "p".into(),
                initial_waiting: Duration::from_secs(300),
                ack_while_reading: true,
            })
        );
        assert_eq!(setting(cdc(r#", "publication": "p""#)), "replication_slot");
        assert_eq!(setting(cdc(r#", "replication_slot": "s""#)), "publication");
        assert_eq!(
            setting(cdc(
                r#", "replication_slot": "s", "publication": "p", "initial_waiting_seconds": 0"#
            )),
            "initial_waiting_seconds"
        );
        assert_eq!(
            setting(cdc(
                r#", "replication_slot": "s", "publication": "p", "lsn_commit_behaviour": "never""#
            )),
            "lsn_commit_behaviour"
        );
        assert_eq!(
            setting(SourceConfig::from_json(
                r#"{"flight_url": "grpc://h:1", "replication_method": {"method": "CDC",
                    "replication_slot": "s", "publication": "p"}}"#
            )),
            "replication_method"
        );
    }

    #[test]
    fn out_of_range_values_name_their_setting() {
        assert_eq!(setting(with(r#""port": 0"#)), "port");
        assert_eq!(setting(with(r#""port": 70000"#)), "port");
        assert_eq!(
            setting(with(r#""timescaledb_max_concurrent_chunks": 0"#)),
            "timescaledb_max_concurrent_chunks"
        );
        assert_eq!(
            setting(with(r#""timescaledb_chunk_cache_ttl_minutes": 1441"#)),
            "timescaledb_chunk_cache_ttl_minutes"
        );
        assert_eq!(
            setting(with(r#""timescaledb_max_memory_mb": 1"#)),
            "timescaledb_max_memory_mb"
        );
        assert_eq!(setting(with(r#""ssl_mode": "sometimes""#)), "ssl_mode");
        assert_eq!(
            setting(with(r#""ssl_mode": {"mode": "verify-ca"}"#)),
            "ssl_mode"
        );
        assert_eq!(
            setting(with(
                r#""ssl_mode": {"mode": "require", "client_certificate": "x"}"#
            )),
            "ssl_mode"
        );
        assert_eq!(
            setting(with(
                r#""tunnel_method": {"tunnel_method": "SSH_KEY_AUTH", "tunnel_host": "h", "tunnel_user": "u"}"#
            )),
            "ssh_key"
        );
        assert_eq!(
            setting(with(
                r#""tunnel_method": {"tunnel_method": "SSH_PASSWORD_AUTH", "tunnel_host": "h", "tunnel_user": "u", "tunnel_port": 0, "tunnel_user_password": "p"}"#
            )),
            "tunnel_port"
        );
        assert_eq!(
            setting(with(r#""tunnel_method": {"tunnel_method": "VPN"}"#)),
            "tunnel_method"
        );
        assert_eq!(setting(with(r#""flight_url": "ftp://x""#)), "flight_url");
        assert_eq!(setting(with(r#""schemas": [""]"#)), "schemas");
    }

    #[test]
    fn database_settings_are_required_without_flight_url_only() {
        assert_eq!(
            setting(SourceConfig::from_json(r#"{"host": "db"}"#)),
            "database"
        );
        assert_eq!(
            setting(SourceConfig::from_json(
                r#"{"database": "d", "username": "u"}"#
            )),
            "host"
        );
        assert_eq!(
            setting(SourceConfig::from_json(
                r#"{"host": "db", "database": "d", "username": " "}"#
            )),
            "username"
        );
        let remote = SourceConfig::from_json(r#"{"flight_url": " grpc://flight:50051 "}"#).unwrap();
        assert!(
            matches!(&remote.service, Service::Remote { url, .. } if url == "grpc://flight:50051")
        );
        // TLS to PostgreSQL does not matter when the source never connects to it.
        let remote =
            SourceConfig::from_json(r#"{"flight_url": "grpc://f:1", "ssl_mode": "verify-full"}"#)
                .unwrap();
        assert!(matches!(remote.service, Service::Remote { .. }));
    }

    #[test]
    fn malformed_json_is_not_a_setting_error() {
        assert!(matches!(
            SourceConfig::from_json(r#"{"host": 5}"#),
            Err(Error::Malformed { message, .. }) if message.contains("string")
        ));
        assert!(matches!(
            with(r#""port": "five""#),
            Err(Error::Malformed { .. })
        ));
    }

    #[test]
    fn tls_modes_take_airbyte_objects_and_plain_names() {
        let c = with(r#""ssl_mode": {"mode": "verify-full", "ca_certificate": "-----BEGIN CERTIFICATE-----", "client_key_password": ""}"#).unwrap();
        let tls = &database(&c).tls;
        assert_eq!(tls.mode, pgconn::SslMode::VerifyFull);
        assert!(
            matches!(&tls.root_cert, Some(pgconn::RootCert::Pem(pgconn::Pem::Inline(t))) if t.starts_with("-----BEGIN"))
        );
        let c = with(r#""ssl_mode": "require""#).unwrap();
        assert_eq!(database(&c).tls.mode, pgconn::SslMode::Require);
        assert_eq!(database(&c).tls.root_cert, None);
        let c = with(r#""tunnel_method": {"tunnel_method": "SSH_KEY_AUTH", "tunnel_host": "bastion", "tunnel_user": "u", "ssh_key": "KEY"}"#).unwrap();
        let t = database(&c).tunnel.as_ref().unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.user.as_str()),
            ("bastion", 22, "u")
        );
        assert!(!format!("{c:?}").contains("KEY"), "the key never shows");
    }

    #[test]
    fn password_never_shows() {
        let c = SourceConfig::from_json(MINIMAL).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{:?}", database(&c).connector().unwrap()).contains("hunter2"));
    }

    #[test]
    fn ticket_secret_is_stable_and_credential_bound() {
        let secret = |json: &str| database(&SourceConfig::from_json(json).unwrap()).ticket_secret();
        assert_eq!(secret(MINIMAL), secret(MINIMAL));
        assert_eq!(secret(MINIMAL).len(), 32);
        assert_ne!(
            secret(MINIMAL),
            secret(&MINIMAL.replace("hunter2", "hunter3"))
        );
    }

    #[test]
    fn flight_urls_are_kept_as_written() {
        assert_eq!(
            flight_url("grpc://h:1").unwrap(),
            ("grpc://h:1".into(), false)
        );
        assert_eq!(
            flight_url("grpc+tcp://h:1").unwrap(),
            ("grpc+tcp://h:1".into(), false)
        );
        assert_eq!(
            flight_url("grpc+tls://h:1").unwrap(),
            ("grpc+tls://h:1".into(), true)
        );
        assert!(flight_url("grpc://").is_err());
        assert!(flight_url("grpc+tls://").is_err());
        assert!(flight_url("grpc://h:1/path").is_err());
    }

    #[test]
    fn flight_token_and_tls_roots() {
        const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let c = SourceConfig::from_json(
            &serde_json::json!({"flight_url": "grpc+tls://f:1", "flight_token": "s3cret",
                                "flight_tls_root_certs": PEM})
            .to_string(),
        )
        .unwrap();
        match &c.service {
            Service::Remote {
                url,
                token,
                tls_root_certs,
            } => {
                assert_eq!(url, "grpc+tls://f:1");
                assert_eq!(token.as_ref().map(Secret::expose), Some("s3cret"));
                assert_eq!(tls_root_certs.as_deref(), Some(PEM));
            }
            other => panic!("{other:?}"),
        }
        assert!(!format!("{c:?}").contains("s3cret"));
        let roots_without_tls = serde_json::json!({"flight_url": "grpc://f:1",
                                                   "flight_tls_root_certs": PEM});
        assert_eq!(
            setting(SourceConfig::from_json(&roots_without_tls.to_string())),
            "flight_tls_root_certs"
        );
        assert_eq!(
            setting(SourceConfig::from_json(
                r#"{"flight_url": "grpc+tls://f:1", "flight_tls_root_certs": "not a cert"}"#
            )),
            "flight_tls_root_certs"
        );
        // An empty token is no token (a UI leaves the field empty).
        let c =
            SourceConfig::from_json(r#"{"flight_url": "grpc://f:1", "flight_token": ""}"#).unwrap();
        assert!(matches!(c.service, Service::Remote { token: None, .. }));
    }

    #[test]
    fn unknown_keys_are_kept_for_a_warning() {
        let c = with(r#""colour": "blue""#).unwrap();
        assert_eq!(c.unknown_keys, vec!["colour".to_string()]);
    }
}
