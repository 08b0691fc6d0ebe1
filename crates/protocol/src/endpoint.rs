//! Each endpoint's `app_metadata`: what it reads and how big it is, as JSON.

use serde::{Deserialize, Serialize};

use crate::command::Bound;

/// What an endpoint reads, and so how its resume tickets behave (see the README's endpoint kinds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointKind {
    /// A hypertable chunk's heap.
    Chunk,
    /// A compressed chunk.
    CompressedChunk,
    /// A compressed chunk plus rows inserted after compression.
    PartialChunk,
    /// A leaf partition of a partitioned table.
    Partition,
    /// A heap block range of a plain table.
    BlockRange,
    /// A whole relation in one pass: an unsplit plain table, or a hypertable read through its root.
    Table,
    /// A part of a continuous aggregate.
    ContinuousAggregate,
    /// A view or materialized view.
    View,
    /// A Flight SQL statement that PostgreSQL runs whole (joins, aggregates, ORDER BY, LIMIT, …).
    Query,
    /// A live tail: the table's changes as they commit.
    Tail,
}

/// The JSON in an endpoint's `app_metadata`. Range bounds use the time dimension's form: RFC 3339
/// for time, integers for integer dimensions, absent when open-ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointMetadata {
    /// What the endpoint reads.
    pub kind: EndpointKind,
    /// The chunk or partition read, `schema.name`; null for the table itself.
    pub chunk: Option<String>,
    /// TimescaleDB's chunk id.
    pub chunk_id: Option<i32>,
    /// Inclusive start of the chunk's range on the time dimension.
    pub range_start: Option<Bound>,
    /// Exclusive end.
    pub range_end: Option<Bound>,
    /// Bytes on disk (compressed size for compressed chunks), -1 when unknown.
    pub size_bytes: i64,
    /// Row estimate, -1 when unknown.
    pub estimated_rows: i64,
    /// Whether the chunk is compressed (wholly or partly).
    pub is_compressed: bool,
    /// Uncompressed / compressed size, for compressed chunks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression_ratio: Option<f64>,
    /// First heap block of a block range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_start: Option<u32>,
    /// End block (exclusive) of a block range; absent for the last range, which stays open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_end: Option<u32>,
}

impl EndpointMetadata {
    /// Metadata of `kind` with its estimates and nothing else set (fill the rest with struct
    /// update syntax).
    pub fn new(kind: EndpointKind, size_bytes: i64, estimated_rows: i64) -> Self {
        EndpointMetadata {
            kind,
            chunk: None,
            chunk_id: None,
            range_start: None,
            range_end: None,
            size_bytes,
            estimated_rows,
            is_compressed: false,
            compression_ratio: None,
            block_start: None,
            block_end: None,
        }
    }

    /// Parses an endpoint's `app_metadata`.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("invalid endpoint metadata: {e}"))
    }

    /// The `app_metadata` bytes.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("endpoint metadata always serializes")
    }
}
