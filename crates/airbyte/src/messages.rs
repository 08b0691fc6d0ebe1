//! The Airbyte protocol messages this source writes, and the configured catalog and state it reads.
//!
//! Every message is one line `{"type": "<TYPE>", "<payload key>": {...}}`. RECORD lines are not built
//! here: [`crate::record`] writes them straight from Arrow columns.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Error;

/// A message other than RECORD, serialized as `{"type": ..., "<key>": payload}`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type")]
pub enum Message {
    /// The connector specification.
    #[serde(rename = "SPEC")]
    Spec {
        /// Payload.
        spec: ConnectorSpecification,
    },
    /// The result of `check`.
    #[serde(rename = "CONNECTION_STATUS")]
    ConnectionStatus {
        /// Payload.
        #[serde(rename = "connectionStatus")]
        connection_status: ConnectionStatus,
    },
    /// The result of `discover`.
    #[serde(rename = "CATALOG")]
    Catalog {
        /// Payload.
        catalog: Catalog,
    },
    /// A log line for the platform.
    #[serde(rename = "LOG")]
    Log {
        /// Payload.
        log: Log,
    },
    /// Stream status or an error.
    #[serde(rename = "TRACE")]
    Trace {
        /// Payload.
        trace: Trace,
    },
    /// A checkpoint.
    #[serde(rename = "STATE")]
    State {
        /// Payload.
        state: StateMessage,
    },
    /// A checkpoint shared by every stream (CDC: one slot, one position).
    #[serde(rename = "STATE")]
    GlobalState {
        /// Payload.
        state: GlobalStateMessage,
    },
}

impl Message {
    /// A LOG message.
    pub fn log(level: Level, message: impl Into<String>) -> Message {
        Message::Log {
            log: Log {
                level,
                message: message.into(),
            },
        }
    }

    /// A TRACE STREAM_STATUS message.
    pub fn status(stream: &StreamDescriptor, status: StreamStatus) -> Message {
        Message::Trace {
            trace: Trace {
                kind: TraceType::StreamStatus,
                emitted_at: now_ms() as f64,
                error: None,
                stream_status: Some(StreamStatusTrace {
                    stream_descriptor: stream.clone(),
                    status,
                }),
                estimate: None,
            },
        }
    }

    /// A TRACE ESTIMATE of a stream's rows and bytes; `None` when the service knows neither.
    pub fn estimate(
        stream: &StreamDescriptor,
        rows: Option<u64>,
        bytes: Option<u64>,
    ) -> Option<Message> {
        if rows.is_none() && bytes.is_none() {
            return None;
        }
        Some(Message::Trace {
            trace: Trace {
                kind: TraceType::Estimate,
                emitted_at: now_ms() as f64,
                error: None,
                stream_status: None,
                estimate: Some(EstimateTrace {
                    name: stream.name.clone(),
                    namespace: stream.namespace.clone(),
                    kind: "STREAM",
                    row_estimate: rows,
                    byte_estimate: bytes,
                }),
            },
        })
    }

    /// A TRACE ERROR message for `e`: its message for people, its failure type for the platform.
    pub fn error(e: &Error, stream: Option<&StreamDescriptor>) -> Message {
        Message::Trace {
            trace: Trace {
                kind: TraceType::Error,
                emitted_at: now_ms() as f64,
                error: Some(ErrorTrace {
                    message: e.to_string(),
                    internal_message: Some(format!("{e:?}")),
                    failure_type: e.failure_type(),
                    stream_descriptor: stream.cloned(),
                }),
                stream_status: None,
                estimate: None,
            },
        }
    }
}

/// Now, in ms since the Unix epoch (`emitted_at`).
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The `spec` payload.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectorSpecification {
    /// JSON Schema of the config.
    #[serde(rename = "connectionSpecification")]
    pub connection_specification: Value,
    /// (Deprecated field, still read by older platforms.)
    #[serde(rename = "supportsIncremental")]
    pub supports_incremental: bool,
    /// Destination modes that make sense with this source's records.
    pub supported_destination_sync_modes: Vec<&'static str>,
}

/// `check` outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// The config works.
    Succeeded,
    /// It does not; the message says why.
    Failed,
}

/// The `connectionStatus` payload.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionStatus {
    /// Outcome.
    pub status: Status,
    /// For a person.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A stream's identity: table name and schema.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StreamDescriptor {
    /// Table.
    pub name: String,
    /// Schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl std::fmt::Display for StreamDescriptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Full refresh or incremental.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// Every row, every time.
    FullRefresh,
    /// Rows whose cursor is past the saved one.
    Incremental,
}

/// One stream of the catalog.
#[derive(Debug, Clone, Serialize)]
pub struct Stream {
    /// Table.
    pub name: String,
    /// Schema.
    pub namespace: String,
    /// JSON Schema of a record's `data`.
    pub json_schema: Value,
    /// Modes offered.
    pub supported_sync_modes: Vec<SyncMode>,
    /// The source picks the cursor (the time dimension).
    pub source_defined_cursor: bool,
    /// The suggested cursor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_cursor_field: Option<Vec<String>>,
    /// The primary key's columns, each as a one-element path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_defined_primary_key: Option<Vec<Vec<String>>>,
    /// Interrupted reads resume (chunk by chunk, then by resume ticket).
    pub is_resumable: bool,
}

/// The `catalog` payload.
#[derive(Debug, Clone, Serialize)]
pub struct Catalog {
    /// One per exposed table.
    pub streams: Vec<Stream>,
}

/// LOG level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Level {
    /// Something failed.
    Error,
    /// Worth a look.
    Warn,
    /// Progress.
    Info,
}

/// The `log` payload.
#[derive(Debug, Clone, Serialize)]
pub struct Log {
    /// Level.
    pub level: Level,
    /// Text.
    pub message: String,
}

/// TRACE kinds this source writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TraceType {
    /// A failure.
    Error,
    /// A stream's status changed.
    StreamStatus,
    /// How much a stream will send.
    Estimate,
}

/// How the platform should treat a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureType {
    /// The user must change the config (or catalog).
    ConfigError,
    /// A bug or an unexpected failure.
    SystemError,
    /// Retrying may help.
    TransientError,
}

/// The `trace` payload.
#[derive(Debug, Clone, Serialize)]
pub struct Trace {
    /// Kind.
    #[serde(rename = "type")]
    pub kind: TraceType,
    /// ms since the Unix epoch.
    pub emitted_at: f64,
    /// For ERROR.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorTrace>,
    /// For STREAM_STATUS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_status: Option<StreamStatusTrace>,
    /// For ESTIMATE.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate: Option<EstimateTrace>,
}

/// A TRACE ESTIMATE: the platform shows progress against it.
#[derive(Debug, Clone, Serialize)]
pub struct EstimateTrace {
    /// The stream's name.
    pub name: String,
    /// Its namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Always STREAM (per-stream estimates).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Rows the read is expected to send (the service's estimate for the planned read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row_estimate: Option<u64>,
    /// Bytes, as the service counts them (Arrow data).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub byte_estimate: Option<u64>,
}

/// A TRACE ERROR.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorTrace {
    /// For a person.
    pub message: String,
    /// The error's structure, for whoever debugs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub internal_message: Option<String>,
    /// For the platform.
    pub failure_type: FailureType,
    /// The stream that failed, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_descriptor: Option<StreamDescriptor>,
}

/// A stream's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StreamStatus {
    /// About to read.
    Started,
    /// The first records are out.
    Running,
    /// Read to its end.
    Complete,
    /// Failed; the last STATE says how far it got.
    Incomplete,
}

/// A TRACE STREAM_STATUS.
#[derive(Debug, Clone, Serialize)]
pub struct StreamStatusTrace {
    /// The stream.
    pub stream_descriptor: StreamDescriptor,
    /// Its status.
    pub status: StreamStatus,
}

/// A STATE message of type STREAM.
#[derive(Debug, Clone, Serialize)]
pub struct StateMessage {
    /// Always STREAM.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The stream and its state.
    pub stream: StreamStateMessage,
    /// Records of this stream written since its previous STATE.
    #[serde(rename = "sourceStats")]
    pub source_stats: SourceStats,
}

/// `stream` of a STATE message.
#[derive(Debug, Clone, Serialize)]
pub struct StreamStateMessage {
    /// The stream.
    pub stream_descriptor: StreamDescriptor,
    /// This source's state blob ([`crate::state::StreamState`]).
    pub stream_state: Value,
}

/// A STATE message of type GLOBAL.
#[derive(Debug, Clone, Serialize)]
pub struct GlobalStateMessage {
    /// Always GLOBAL.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The shared state and every stream's.
    pub global: GlobalState,
    /// Records written since the previous STATE.
    #[serde(rename = "sourceStats")]
    pub source_stats: SourceStats,
}

/// `global` of a GLOBAL STATE message.
#[derive(Debug, Clone, Serialize)]
pub struct GlobalState {
    /// This source's shared blob ([`crate::cdc::CdcState`]).
    pub shared_state: Value,
    /// Every stream the state covers (with an empty blob of its own).
    pub stream_states: Vec<StreamStateMessage>,
}

/// `sourceStats` of a STATE message.
#[derive(Debug, Clone, Serialize)]
pub struct SourceStats {
    /// A float by protocol definition (serialized with a decimal point).
    #[serde(rename = "recordCount")]
    pub record_count: f64,
}

/// The configured catalog given to `read`. Unknown keys are ignored (the platform adds its own).
#[derive(Debug, Clone, Deserialize)]
pub struct ConfiguredCatalog {
    /// Streams to read, in order.
    pub streams: Vec<ConfiguredStream>,
}

/// One configured stream.
#[derive(Debug, Clone, Deserialize)]
pub struct ConfiguredStream {
    /// The stream as discovered (possibly with fewer properties: column selection).
    pub stream: ConfiguredStreamInfo,
    /// Mode chosen.
    pub sync_mode: SyncMode,
    /// Cursor chosen (ignored when the source defines it).
    #[serde(default)]
    pub cursor_field: Option<Vec<String>>,
}

/// The `stream` of a configured stream: the parts this source uses.
#[derive(Debug, Clone, Deserialize)]
pub struct ConfiguredStreamInfo {
    /// Table.
    pub name: String,
    /// Schema.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Its `properties` are the selected columns.
    #[serde(default)]
    pub json_schema: Value,
}

impl ConfiguredStreamInfo {
    /// The stream's descriptor.
    pub fn descriptor(&self) -> StreamDescriptor {
        StreamDescriptor {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
        }
    }

    /// Selected columns, if the schema lists properties.
    pub fn selected_columns(&self) -> Option<Vec<String>> {
        self.json_schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
    }
}

/// A STATE message as given back to `read` (`--state` holds a list of them).
#[derive(Debug, Clone, Deserialize)]
pub struct InputStateMessage {
    /// STREAM, GLOBAL or LEGACY.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// For STREAM states.
    #[serde(default)]
    pub stream: Option<InputStreamState>,
    /// For GLOBAL states.
    #[serde(default)]
    pub global: Option<InputGlobalState>,
}

/// `global` of an input STATE message.
#[derive(Debug, Clone, Deserialize)]
pub struct InputGlobalState {
    /// The blob this source wrote.
    #[serde(default)]
    pub shared_state: Option<Value>,
    /// The streams it covers.
    #[serde(default)]
    pub stream_states: Vec<InputStreamState>,
}

/// `stream` of an input STATE message.
#[derive(Debug, Clone, Deserialize)]
pub struct InputStreamState {
    /// The stream.
    pub stream_descriptor: StreamDescriptor,
    /// The blob this source wrote.
    #[serde(default)]
    pub stream_state: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_their_type_and_payload_key() {
        let m = Message::log(Level::Info, "hi");
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            serde_json::json!({"type": "LOG", "log": {"level": "INFO", "message": "hi"}})
        );
        let d = StreamDescriptor {
            name: "metrics".into(),
            namespace: Some("public".into()),
        };
        let v = serde_json::to_value(Message::status(&d, StreamStatus::Started)).unwrap();
        assert_eq!(v["type"], "TRACE");
        assert_eq!(v["trace"]["type"], "STREAM_STATUS");
        assert_eq!(v["trace"]["stream_status"]["status"], "STARTED");
        assert_eq!(
            v["trace"]["stream_status"]["stream_descriptor"]["namespace"],
            "public"
        );
        let v = serde_json::to_value(Message::estimate(&d, Some(10), None).unwrap()).unwrap();
        assert_eq!(
            v["trace"]["estimate"],
            serde_json::json!({"name": "metrics", "namespace": "public", "type": "STREAM",
                               "row_estimate": 10})
        );
        assert!(Message::estimate(&d, None, None).is_none());
        let e = Error::Catalog("nope".into());
        let v = serde_json::to_value(Message::error(&e, Some(&d))).unwrap();
        assert_eq!(v["trace"]["error"]["failure_type"], "config_error");
        assert_eq!(v["trace"]["error"]["message"], "nope");
    }

    #[test]
    fn record_count_keeps_its_decimal_point() {
        let s = SourceStats { record_count: 42.0 };
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"recordCount":42.0}"#
        );
    }

    #[test]
    fn configured_catalog_ignores_platform_keys() {
        let c: ConfiguredCatalog = serde_json::from_str(
            r#"{"streams": [{"stream": {"name": "m", "namespace": "public",
                "json_schema": {"type": "object", "properties": {"a": {}, "b": {}}},
                "supported_sync_modes": ["full_refresh"]},
              "sync_mode": "incremental", "cursor_field": ["a"],
              "destination_sync_mode": "append", "generation_id": 3}]}"#,
        )
        .unwrap();
        let s = &c.streams[0];
        assert_eq!(s.sync_mode, SyncMode::Incremental);
        assert_eq!(
            s.stream.selected_columns(),
            Some(vec!["a".to_string(), "b".to_string()])
        );
    }
}
