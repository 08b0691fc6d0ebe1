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

/// The `ssl_mode` values, in libpq's order.
pub const SSL_MODES: [&str; 6] = [
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

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
            "ssl_mode": {
                "type": "string", "title": "SSL mode", "order": 6,
                "enum": SSL_MODES, "default": "disable",
                "description": "TLS to PostgreSQL. Not supported yet: the connection is never \
                                encrypted. `disable`, `allow` and `prefer` connect without TLS; \
                                `require`, `verify-ca` and `verify-full` are refused by check.",
            },
            "flight_url": {
                "type": "string", "title": "Flight server URL", "order": 7,
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
                "type": "string", "title": "Flight server token", "order": 8,
                "airbyte_secret": true,
                "description": "Bearer token for a flight_url server started with auth_token \
                                (sent as `authorization: Bearer <token>`). Empty: no token.",
            },
            "flight_tls_root_certs": {
                "type": "string", "title": "Flight server CA certificates (PEM)", "order": 9,
                "multiline": true,
                "description": "PEM certificates that verify a grpc+tls:// flight_url server \
                                (for a private CA). Empty: the usual public (web) roots.",
            },
            "timescaledb_support": {
                "type": "boolean", "title": "TimescaleDB support", "order": 10, "default": true,
                "description": "Read hypertables chunk by chunk when the TimescaleDB extension is \
                                present. Off, or without the extension, every table is read as plain \
                                PostgreSQL (no chunk-level resume, no time-dimension cursor).",
            },
            "timescaledb_chunk_discovery_interval_minutes": integer(
                "Chunk discovery interval (minutes)",
                "How often the in-process Flight service re-discovers chunks during a long read.",
                DISCOVERY_INTERVAL_MINUTES, 11),
            "timescaledb_max_concurrent_chunks": integer(
                "Max concurrent chunks",
                "Chunks read at once, in parallel: the number of concurrent DoGet calls and of \
                 chunk scans the in-process Flight service runs.",
                MAX_CONCURRENT_CHUNKS, 12),
            "timescaledb_enable_chunk_caching": {
                "type": "boolean", "title": "Enable chunk caching", "order": 13, "default": true,
                "description": "Cache chunk discovery results in the in-process Flight service.",
            },
            "timescaledb_chunk_cache_ttl_minutes": integer(
                "Chunk cache TTL (minutes)",
                "Lifetime of a cached discovery result (used when chunk caching is enabled).",
                CHUNK_CACHE_TTL_MINUTES, 14),
            "timescaledb_max_memory_mb": integer(
                "Max memory (MB)",
                "Bound on decoded batches buffered in the in-process Flight service, all chunk \
                 reads together; reads wait for budget rather than exceed it. (With flight_url, \
                 the remote server's own max_memory_mb applies.)",
                MAX_MEMORY_MB, 15),
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
