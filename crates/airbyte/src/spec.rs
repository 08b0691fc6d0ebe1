//! The connector specification: the JSON Schema a UI renders and [`crate::config`]
//! enforces. Defaults and bounds here are the ones config validation uses ([`Bounds`]).

use serde_json::{json, Value};

use crate::messages::{ConnectorSpecification, Message};

/// Default and inclusive range of an integer setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Used when the config omits the setting.
    pub default: i64,
    /// Smallest accepted.
    pub min: i64,
    /// Largest accepted.
    pub max: i64,
}

/// `port`.
pub const PORT: Bounds = Bounds {
    default: 5432,
    min: 1,
    max: 65_535,
};
/// `timescaledb_chunk_discovery_interval_minutes` (the server's `chunk_discovery_interval_minutes`).
pub const DISCOVERY_INTERVAL_MINUTES: Bounds = Bounds {
    default: 5,
    min: 1,
    max: 1_440,
};
/// `timescaledb_max_concurrent_chunks` (the server's `max_concurrent_chunks`).
pub const MAX_CONCURRENT_CHUNKS: Bounds = Bounds {
    default: 4,
    min: 1,
    max: 256,
};
/// `timescaledb_chunk_cache_ttl_minutes` (the server's `chunk_cache_ttl_minutes`).
pub const CHUNK_CACHE_TTL_MINUTES: Bounds = Bounds {
    default: 10,
    min: 1,
    max: 1_440,
};
/// `timescaledb_max_memory_mb` (the server's `max_memory_mb`).
pub const MAX_MEMORY_MB: Bounds = Bounds {
    default: 512,
    min: 64,
    max: 65_536,
};

/// `replication_method` CDC's `initial_waiting_seconds`: how long a read waits with nothing
/// arriving from the slot before it ends.
pub const INITIAL_WAITING_SECONDS: Bounds = Bounds {
    default: 300,
    min: 1,
    max: 2_400,
};

/// `tunnel_method`'s `tunnel_port`.
pub const TUNNEL_PORT: Bounds = Bounds {
    default: 22,
    min: 1,
    max: 65_535,
};

/// `ssl_mode`: Airbyte's Postgres one-of, one object per libpq mode; the verifying modes carry the
/// CA and, optionally, a client certificate and key (PEM text).
fn ssl_mode() -> Value {
    let mode = |name: &str, description: &str, order: u32| {
        let mut properties = json!({"mode": {"type": "string", "const": name, "order": 0}});
        let mut required = json!(["mode"]);
        if name.starts_with("verify") {
            properties["ca_certificate"] = json!({
                "type": "string", "title": "CA certificate", "order": 1, "multiline": true,
                "airbyte_secret": true,
                "description": "PEM certificate(s) of the CA that signed the server's certificate.",
            });
            properties["client_certificate"] = json!({
                "type": "string", "title": "Client certificate", "order": 2, "multiline": true,
                "airbyte_secret": true,
                "description": "PEM client certificate, for `cert` authentication (optional).",
            });
            properties["client_key"] = json!({
                "type": "string", "title": "Client key", "order": 3, "multiline": true,
                "airbyte_secret": true,
                "description": "PEM private key of the client certificate (unencrypted).",
            });
            required = json!(["mode", "ca_certificate"]);
        }
        json!({
            "title": name, "description": description, "order": order,
            "type": "object", "required": required, "properties": properties,
            "additionalProperties": true,
        })
    };
    json!({
        "type": "object", "title": "SSL mode", "order": 6,
        "description": "TLS to PostgreSQL, as libpq's sslmode. Default: prefer.",
        "oneOf": [
            mode("disable", "No TLS.", 0),
            mode("allow", "Without TLS; with TLS (unverified) if the server refuses a plain connection.", 1),
            mode("prefer", "With TLS (unverified) if the server supports it, else without.", 2),
            mode("require", "Always TLS; the certificate is not verified.", 3),
            mode("verify-ca", "Always TLS; the certificate must be signed by the given CA.", 4),
            mode("verify-full", "Always TLS; the certificate must be signed by the given CA and name the host.", 5),
        ],
    })
}

/// `tunnel_method`: Airbyte's SSH tunnel one-of, with its field names.
fn tunnel_method() -> Value {
    let common = |method: &str, title: &str, secret: (&str, &str), order: u32| {
        let (secret_name, secret_title) = secret;
        json!({
            "title": title, "order": order, "type": "object",
            "required": ["tunnel_method", "tunnel_host", "tunnel_port", "tunnel_user", secret_name],
            "properties": {
                "tunnel_method": {"type": "string", "const": method, "order": 0},
                "tunnel_host": {"type": "string", "title": "SSH tunnel jump server host", "order": 1,
                                "description": "Host name or IP of the SSH server that reaches the database."},
                "tunnel_port": integer("SSH connection port", "Port of the SSH server.", TUNNEL_PORT, 2),
                "tunnel_user": {"type": "string", "title": "SSH login username", "order": 3,
                                "description": "User on the SSH server."},
                secret_name: {"type": "string", "title": secret_title, "order": 4,
                              "airbyte_secret": true, "multiline": secret_name == "ssh_key"},
            },
        })
    };
    json!({
        "type": "object", "title": "SSH tunnel method", "order": 7,
        "description": "Reach the database through an SSH server (the host and port above are then                         as seen from it). The SSH server's host key is not checked, as in                         Airbyte's own sources: its fingerprint is logged.",
        "oneOf": [
            {
                "title": "No tunnel", "order": 0, "type": "object", "required": ["tunnel_method"],
                "properties": {"tunnel_method": {"type": "string", "const": "NO_TUNNEL", "order": 0,
                               "description": "Connect directly."}},
            },
            common("SSH_KEY_AUTH", "SSH key authentication", ("ssh_key", "SSH private key"), 1),
            common("SSH_PASSWORD_AUTH", "Password authentication", ("tunnel_user_password", "Password"), 2),
        ],
    })
}

/// `replication_method`: Airbyte source-postgres's one-of and field names. Standard is the
/// cursor-based read; CDC reads the changes of a logical replication slot (pgoutput).
fn replication_method() -> Value {
    json!({
        "type": "object", "title": "Update method", "order": 17,
        "description": "How incremental streams find new and changed rows. Default: Standard.",
        "oneOf": [
            {
                "title": "Standard (cursor)", "order": 0, "type": "object", "required": ["method"],
                "description": "Rows whose cursor (a hypertable's time dimension, or the chosen \
                                column) is past the saved one. Updates and deletes are not seen.",
                "properties": {"method": {"type": "string", "const": "Standard", "order": 0}},
            },
            {
                "title": "Logical replication (CDC)", "order": 1, "type": "object",
                "required": ["method", "replication_slot", "publication"],
                "description": "Inserts, updates and deletes from a logical replication slot \
                                (pgoutput), after a first copy read under the slot's own snapshot. \
                                Needs wal_level = logical and `hyperflight cdc setup`.",
                "properties": {
                    "method": {"type": "string", "const": "CDC", "order": 0},
                    "plugin": {"type": "string", "const": "pgoutput", "default": "pgoutput",
                               "title": "Plugin", "order": 1,
                               "description": "The logical decoding output plugin."},
                    "replication_slot": {"type": "string", "title": "Replication slot", "order": 2,
                                         "description": "The logical slot (pgoutput) this source \
                                                         alone reads. The first sync (no state) \
                                                         makes it again, to read the copy under its \
                                                         snapshot."},
                    "publication": {"type": "string", "title": "Publication", "order": 3,
                                    "description": "The publication covering the tables (for a \
                                                    hypertable, its chunk schema)."},
                    "initial_waiting_seconds": integer(
                        "Initial waiting time (seconds)",
                        "How long a sync waits for changes with nothing arriving before it ends \
                         (it ends sooner once it has read the WAL written before it started).",
                        INITIAL_WAITING_SECONDS, 4),
                    "lsn_commit_behaviour": {
                        "type": "string", "title": "LSN commit behaviour", "order": 5,
                        "enum": [LSN_WHILE_READING, LSN_AFTER_LOADING],
                        "default": LSN_AFTER_LOADING,
                        "description": "When the slot is told it may free WAL: as each STATE is \
                                        emitted, or only for the state a sync starts from (what \
                                        the destination has loaded).",
                    },
                },
            },
        ],
    })
}

/// `lsn_commit_behaviour` values (Airbyte's).
pub const LSN_WHILE_READING: &str = "While reading Data";
/// See [`LSN_WHILE_READING`].
pub const LSN_AFTER_LOADING: &str = "After loading Data in the destination";

fn integer(title: &str, description: &str, b: Bounds, order: u32) -> Value {
    json!({
        "type": "integer", "title": title, "description": description,
        "default": b.default, "minimum": b.min, "maximum": b.max, "order": order,
    })
}

/// The `connectionSpecification` JSON Schema.
pub fn connection_specification() -> Value {
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "hyperflight (TimescaleDB) Source Spec",
        "type": "object",
        "required": [],
        // Database settings, or a running server to read from (which needs none).
        "anyOf": [
            {"required": ["host", "database", "username"]},
            {"required": ["flight_url"]},
        ],
        "additionalProperties": true,
        "properties": {
            "host": {
                "type": "string", "title": "Host", "order": 0,
                "description": "Hostname or IP address of the PostgreSQL / TimescaleDB server. \
                                Required unless flight_url is set.",
                "examples": ["db.example.com", "127.0.0.1"],
            },
            "port": integer("Port", "PostgreSQL port.", PORT, 1),
            "database": {
                "type": "string", "title": "Database", "order": 2,
                "description": "Name of the database to read. Required unless flight_url is set.",
            },
            "username": {
                "type": "string", "title": "Username", "order": 3,
                "description": "PostgreSQL role to connect as. Only tables it may SELECT are listed. \
                                Required unless flight_url is set.",
            },
            "password": {
                "type": "string", "title": "Password", "order": 4, "airbyte_secret": true,
                "description": "Password of the role; leave empty for trust authentication.",
            },
            "schemas": {
                "type": "array", "title": "Schemas", "order": 5,
                "items": {"type": "string", "minLength": 1}, "uniqueItems": true, "default": [],
                "description": "Schemas whose tables become streams. Empty: every user schema. \
                                TimescaleDB's internal schemas are never listed.",
            },
            "ssl_mode": ssl_mode(),
            "tunnel_method": tunnel_method(),
            "flight_url": {
                "type": "string", "title": "Flight server URL", "order": 8,
                "pattern": "^grpc(\\+tcp|\\+tls)?://[^/]+$",
                "examples": ["grpc://flight.internal:50051", "grpc+tls://flight.example.com:443"],
                "description": "Read from a running hyperflight server (grpc://host:port, or \
                                grpc+tls://host:port for TLS). \
                                The source then makes no PostgreSQL connection: the database \
                                settings above are not needed (and not used). Empty: the source \
                                runs the Flight service itself, in-process on a loopback port, with \
                                the database settings above. A remote server's ticket_secret must \
                                be stable for reads to resume across attempts.",
            },
            "flight_token": {
                "type": "string", "title": "Flight server token", "order": 9,
                "airbyte_secret": true,
                "description": "Bearer token for a flight_url server started with auth_token \
                                (sent as `authorization: Bearer <token>`). Empty: no token.",
            },
            "flight_tls_root_certs": {
                "type": "string", "title": "Flight server CA certificates (PEM)", "order": 10,
                "multiline": true,
                "description": "PEM certificates that verify a grpc+tls:// flight_url server \
                                (for a private CA). Empty: the usual public (web) roots.",
            },
            "timescaledb_support": {
                "type": "boolean", "title": "TimescaleDB support", "order": 11, "default": true,
                "description": "Read hypertables chunk by chunk when the TimescaleDB extension is \
                                present. Off, or without the extension, every table is read as plain \
                                PostgreSQL (no chunk-level resume, no time-dimension cursor).",
            },
            "timescaledb_chunk_discovery_interval_minutes": integer(
                "Chunk discovery interval (minutes)",
                "How often the in-process Flight service re-discovers chunks during a long read.",
                DISCOVERY_INTERVAL_MINUTES, 12),
            "timescaledb_max_concurrent_chunks": integer(
                "Max concurrent chunks",
                "Chunks read at once, in parallel: the number of concurrent DoGet calls and of \
                 chunk scans the in-process Flight service runs.",
                MAX_CONCURRENT_CHUNKS, 13),
            "timescaledb_enable_chunk_caching": {
                "type": "boolean", "title": "Enable chunk caching", "order": 14, "default": true,
                "description": "Cache chunk discovery results in the in-process Flight service.",
            },
            "timescaledb_chunk_cache_ttl_minutes": integer(
                "Chunk cache TTL (minutes)",
                "Lifetime of a cached discovery result (used when chunk caching is enabled).",
                CHUNK_CACHE_TTL_MINUTES, 15),
            "timescaledb_max_memory_mb": integer(
                "Max memory (MB)",
                "Bound on decoded batches buffered in the in-process Flight service, all chunk \
                 reads together; reads wait for budget rather than exceed it. (With flight_url, \
                 the remote server's own max_memory_mb applies.)",
                MAX_MEMORY_MB, 16),
            "replication_method": replication_method(),
        },
    })
}

/// The SPEC message.
pub fn message() -> Message {
    Message::Spec {
        spec: ConnectorSpecification {
            connection_specification: connection_specification(),
            supports_incremental: true,
            supported_destination_sync_modes: vec!["overwrite", "append", "append_dedup"],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_property_has_title_description_and_order() {
        let spec = connection_specification();
        let props = spec["properties"].as_object().unwrap();
        let mut orders: Vec<i64> = Vec::new();
        for (name, p) in props {
            assert!(p["title"].is_string(), "{name} has a title");
            assert!(p["description"].is_string(), "{name} has a description");
            orders.push(p["order"].as_i64().unwrap());
        }
        orders.sort_unstable();
        orders.dedup();
        assert_eq!(orders.len(), props.len(), "orders are distinct");
        assert_eq!(spec["properties"]["password"]["airbyte_secret"], true);
        assert_eq!(spec["properties"]["flight_token"]["airbyte_secret"], true);
        assert_eq!(spec["required"], json!([]));
        assert_eq!(spec["anyOf"][1]["required"], json!(["flight_url"]));
        for name in [
            "timescaledb_support",
            "timescaledb_chunk_discovery_interval_minutes",
            "timescaledb_max_concurrent_chunks",
            "timescaledb_enable_chunk_caching",
            "timescaledb_chunk_cache_ttl_minutes",
            "timescaledb_max_memory_mb",
        ] {
            assert!(props.contains_key(name), "{name}");
            assert!(props[name].get("default").is_some(), "{name} has a default");
        }
    }
}
