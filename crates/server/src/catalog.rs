//! Discovery: which tables the server exposes, their columns, and for hypertables their time dimension
//! and every chunk. Results are cached (moka, TTL) so a busy server adds almost no catalog load.
//!
//! A database without TimescaleDB (or with `timescaledb_support` off) is served as plain PostgreSQL. If
//! the TimescaleDB part of discovery fails for a reason other than the connection, the server logs it
//! and falls back to plain tables rather than refusing to serve.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::db::Pool;
use moka::future::Cache;
use protocol::{Bound, TableFacts};

use crate::error::DbError;
use crate::metrics::Metrics;
use pgarrow::PgType;

/// A schema-qualified relation name, unquoted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QualifiedName {
    /// Schema.
    pub schema: String,
    /// Relation.
    pub name: String,
}

impl QualifiedName {
    /// A name from its parts.
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        QualifiedName {
            schema: schema.into(),
            name: name.into(),
        }
    }

    /// The name as a SQL identifier pair, each part quoted.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

impl fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

pub use pgarrow::quote_ident;

/// A column and its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// Type, domains resolved.
    pub pg_type: PgType,
}

/// The open (time) dimension a hypertable is partitioned on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeDimension {
    /// Partitioning column.
    pub column: String,
    /// Its type's oid.
    pub type_oid: u32,
}

/// TimescaleDB's open-ended slice bounds.
const SLICE_MIN: i64 = i64::MIN;
const SLICE_MAX: i64 = i64::MAX;

impl TimeDimension {
    /// Whether the dimension is an integer column (bounds are plain integers, not time).
    pub fn is_integer(&self) -> bool {
        matches!(self.type_oid, 20 | 21 | 23)
    }

    /// The column's SQL type, for the types TimescaleDB partitions on by time.
    pub fn sql_type(&self) -> Option<&'static str> {
        match self.type_oid {
            20 => Some("int8"),
            21 => Some("int2"),
            23 => Some("int4"),
            1082 => Some("date"),
            1114 => Some("timestamp"),
            1184 => Some("timestamptz"),
            _ => None,
        }
    }

    /// The smallest step between two values in internal units: `> v` is `>= v + step`.
    pub fn step(&self) -> i64 {
        if self.type_oid == 1082 {
            86_400_000_000
        } else {
            1
        }
    }

    /// A range bound in TimescaleDB's internal units (µs since the Unix epoch for time types) as the
    /// wire shows it: RFC 3339 for time, a number for integers, absent when open-ended.
    pub fn bound(&self, value: i64) -> Option<Bound> {
        if value == SLICE_MIN || value == SLICE_MAX {
            None
        } else if self.is_integer() {
            Some(Bound::Integer(value))
        } else {
            chrono::DateTime::from_timestamp_micros(value)
                .map(|t| Bound::Time(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)))
        }
    }
}

/// One chunk of a hypertable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Qualified chunk name (usually in `_timescaledb_internal`).
    pub name: QualifiedName,
    /// TimescaleDB's chunk id.
    pub id: i32,
    /// Current relfilenode; changes when the chunk is rewritten.
    pub relfilenode: u32,
    /// Time-dimension range in internal units, start inclusive.
    pub range_start: i64,
    /// Exclusive end.
    pub range_end: i64,
    /// Heap + TOAST size in bytes.
    pub size_bytes: i64,
    /// Row estimate: `reltuples`, or for a compressed chunk its row count at compression plus
    /// the heap's rows; -1 if unknown.
    pub estimated_rows: i64,
    /// The compressed part, when TimescaleDB compressed the chunk.
    pub compressed: Option<Compressed>,
}

/// The compressed part of a chunk: TimescaleDB's relation of compressed batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compressed {
    /// The relation holding the compressed batches.
    pub relation: QualifiedName,
    /// Its relfilenode; changes when it is rewritten (recompression).
    pub relfilenode: u32,
    /// Its size on disk.
    pub size_bytes: i64,
    /// Rows at compression time, -1 if unknown.
    pub rows: i64,
    /// Heap + TOAST bytes before compression, -1 if unknown.
    pub uncompressed_bytes: i64,
    /// Heap + TOAST bytes after compression, -1 if unknown.
    pub compressed_bytes: i64,
    /// Rows were inserted into the chunk's heap after compression.
    pub partial: bool,
}

impl Compressed {
    /// Uncompressed / compressed size, when both are known.
    pub fn ratio(&self) -> Option<f64> {
        (self.uncompressed_bytes > 0 && self.compressed_bytes > 0).then(|| {
            ((self.uncompressed_bytes as f64 / self.compressed_bytes as f64) * 100.0).round()
                / 100.0
        })
    }
}

/// A leaf partition of a natively partitioned table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Qualified name.
    pub name: QualifiedName,
    /// Current relfilenode.
    pub relfilenode: u32,
    /// Heap + TOAST size in bytes.
    pub size_bytes: i64,
    /// Planner estimate, -1 if never analyzed.
    pub estimated_rows: i64,
    /// Whether its heap can be addressed by ctid (false for foreign-table partitions).
    pub has_heap: bool,
    /// The role may select from the leaf itself; if not (granted on the parent only), the leaf
    /// is read through the parent.
    pub readable: bool,
}

/// What a table is, as far as planning is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableKind {
    /// A TimescaleDB hypertable, read chunk by chunk.
    Hypertable {
        /// Its time dimension.
        dimension: TimeDimension,
        /// Its chunks, in range order.
        chunks: Vec<Chunk>,
    },
    /// A natively partitioned table, read leaf partition by leaf partition.
    Partitioned {
        /// Its leaf partitions.
        partitions: Vec<Partition>,
    },
    /// An ordinary table, read by itself (`ONLY`: inheritance children are tables of their own).
    Plain {
        /// Main-fork size in blocks, for splitting the table into block ranges.
        blocks: i64,
    },
    /// A continuous aggregate: its view, read as the chunks of its materialization hypertable
    /// (below the watermark) plus, when real-time aggregation is on, the view above the watermark.
    ContinuousAggregate {
        /// The bucket column: the materialization hypertable's time dimension.
        dimension: TimeDimension,
        /// The materialization hypertable's chunks, in range order.
        chunks: Vec<Chunk>,
        /// TimescaleDB's id of the materialization hypertable (for its watermark).
        mat_hypertable_id: i32,
        /// `materialized_only = false`: rows above the watermark are aggregated on the fly.
        realtime: bool,
    },
    /// A view or populated materialized view, read in one pass.
    View,
    /// A hypertable served as one plain relation (chunk-aware serving off, or TimescaleDB's catalog
    /// unreadable): read through its root, children included, without ctid positions.
    HypertableRoot,
}

/// An exposed table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Its name.
    pub name: QualifiedName,
    /// Current relfilenode.
    pub relfilenode: u32,
    /// Hypertable or plain.
    pub kind: TableKind,
    /// Columns in order (dropped columns excluded).
    pub columns: Vec<Column>,
    /// Heap + TOAST size in bytes (all chunks for a hypertable).
    pub size_bytes: i64,
    /// Row estimate, -1 if unknown.
    pub estimated_rows: i64,
    /// Primary key columns in key order; empty when there is none.
    pub primary_key: Vec<String>,
    /// Row-level security applies to this role here: chunks carry no policies, so a hypertable's
    /// chunks are read through the hypertable.
    pub row_security: bool,
}

impl Table {
    /// The time dimension windows bound, for hypertables and continuous aggregates.
    pub fn time_dimension(&self) -> Option<&TimeDimension> {
        match &self.kind {
            TableKind::Hypertable { dimension, .. }
            | TableKind::ContinuousAggregate { dimension, .. } => Some(dimension),
            _ => None,
        }
    }

    /// What clients learn about the table from its schema's metadata.
    pub fn facts(&self) -> TableFacts {
        let (kind, time_column) = match &self.kind {
            TableKind::Hypertable { dimension, .. } => (
                protocol::TableKind::Hypertable,
                Some(dimension.column.clone()),
            ),
            TableKind::HypertableRoot => (protocol::TableKind::Hypertable, None),
            TableKind::ContinuousAggregate { dimension, .. } => (
                protocol::TableKind::ContinuousAggregate,
                Some(dimension.column.clone()),
            ),
            TableKind::View => (protocol::TableKind::View, None),
            TableKind::Partitioned { .. } => (protocol::TableKind::Partitioned, None),
            TableKind::Plain { .. } => (protocol::TableKind::Table, None),
        };
        TableFacts {
            kind,
            time_column,
            primary_key: self.primary_key.clone(),
        }
    }
}

/// The result of one discovery.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Installed TimescaleDB version, if the extension is present.
    pub timescaledb_version: Option<String>,
    /// Why discovery fell back to serving hypertables as plain tables, if it did.
    pub degraded: Option<String>,
    tables: BTreeMap<QualifiedName, Arc<Table>>,
}

impl Snapshot {
    /// The exposed table of that name.
    pub fn table(&self, name: &QualifiedName) -> Option<&Arc<Table>> {
        self.tables.get(name)
    }

    /// All exposed tables, ordered by name.
    pub fn tables(&self) -> impl Iterator<Item = &Arc<Table>> {
        self.tables.values()
    }
}

/// Discovery with a cache in front of it.
pub struct Catalog {
    pool: Pool,
    cache: Option<Cache<(), Arc<Snapshot>>>,
    timescaledb_support: bool,
    schemas: Vec<String>,
    tables: crate::config::TableFilter,
    metrics: Arc<Metrics>,
}

impl Catalog {
    /// A catalog over `pool`; `cache_ttl` `None` disables caching.
    pub fn new(
        pool: Pool,
        cache_ttl: Option<Duration>,
        timescaledb_support: bool,
        schemas: Vec<String>,
        tables: crate::config::TableFilter,
        metrics: Arc<Metrics>,
    ) -> Self {
        let cache = cache_ttl.map(|ttl| Cache::builder().max_capacity(1).time_to_live(ttl).build());
        Catalog {
            pool,
            cache,
            timescaledb_support,
            schemas,
            tables,
            metrics,
        }
    }

    /// The current discovery result, from the cache when fresh. Concurrent misses share one
    /// discovery.
    pub async fn snapshot(&self) -> Result<Arc<Snapshot>, DbError> {
        let Some(cache) = &self.cache else {
            self.metrics.cache_misses.inc();
            return Ok(Arc::new(self.discover().await?));
        };
        if let Some(s) = cache.get(&()).await {
            self.metrics.cache_hits.inc();
            return Ok(s);
        }
        self.metrics.cache_misses.inc();
        cache
            .try_get_with((), async { self.discover().await.map(Arc::new) })
            .await
            .map_err(|e| (*e).clone())
    }

    /// A continuous aggregate's watermark now: materialized rows lie below it (internal units).
    /// Read in the exported snapshot `db_snapshot` when given.
    pub async fn watermark(
        &self,
        mat_hypertable_id: i32,
        db_snapshot: Option<&str>,
    ) -> Result<i64, DbError> {
        let mut client = self.pool.get().await?;
        let txn = client
            .build_transaction()
            .read_only(true)
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .start()
            .await?;
        if let Some(id) = db_snapshot {
            // An id the server made itself (pg_export_snapshot), validated by the snapshot store.
            txn.batch_execute(&format!("SET TRANSACTION SNAPSHOT '{id}'"))
                .await?;
        }
        let row = txn
            .query_one(
                "SELECT _timescaledb_functions.cagg_watermark($1)",
                &[&mat_hypertable_id],
            )
            .await?;
        txn.commit().await?;
        Ok(row.get::<_, Option<i64>>(0).unwrap_or(i64::MIN))
    }

    /// Discovers again now and replaces the cached result (background re-discovery).
    pub async fn refresh(&self) -> Result<Arc<Snapshot>, DbError> {
        let snapshot = Arc::new(self.discover().await?);
        if let Some(cache) = &self.cache {
            cache.insert((), snapshot.clone()).await;
        }
        Ok(snapshot)
    }

    async fn discover(&self) -> Result<Snapshot, DbError> {
        let started = std::time::Instant::now();
        let client = self.pool.get().await?;
        let version: Option<String> = client
            .query_opt(
                "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'timescaledb'",
                &[],
            )
            .await?
            .map(|r| r.get(0));

        let mut degraded = None;
        let hyper = match (&version, self.timescaledb_support) {
            (Some(_), true) => match discover_hypertables(&client).await {
                Ok(h) => h,
                Err(e) => {
                    let e = DbError::from(e);
                    if matches!(e, DbError::Unavailable(_)) {
                        return Err(e);
                    }
                    // Never silent: logged, counted, and reported by `health`.
                    tracing::warn!(error = %e, "TimescaleDB discovery failed; serving hypertables as plain tables, one endpoint each");
                    self.metrics.discovery_fallbacks.inc();
                    degraded = Some(format!(
                        "TimescaleDB's catalog could not be read ({}); hypertables are served through their root, one endpoint each, without chunk pruning or resume tickets",
                        e.category()
                    ));
                    Hypertables::default()
                }
            },
            _ => Hypertables::default(),
        };

        let hidden = hidden_schemas();
        // is_root: a table with inheritance children in TimescaleDB's schemas is a hypertable root,
        // known from pg_inherits alone, so it is read correctly even when TimescaleDB's own catalog
        // is off limits.
        let rows = client
            .query(
                "SELECT c.oid, n.nspname::text, c.relname::text, c.relfilenode, c.reltuples::float8,
                        pg_catalog.pg_table_size(c.oid),
                        c.relhassubclass AND EXISTS (
                            SELECT 1 FROM pg_catalog.pg_inherits i
                            JOIN pg_catalog.pg_class k ON k.oid = i.inhrelid
                            JOIN pg_catalog.pg_namespace kn ON kn.oid = k.relnamespace
                            WHERE i.inhparent = c.oid AND kn.nspname LIKE '\\_timescaledb%'),
                        c.relkind = 'p',
                        pg_catalog.pg_relation_size(c.oid) / current_setting('block_size')::int8,
                        c.relkind IN ('v', 'm'), pg_catalog.row_security_active(c.oid)
                 FROM pg_catalog.pg_class c
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relkind IN ('r', 'p', 'v', 'm') AND NOT c.relispartition
                   AND (c.relkind <> 'm' OR c.relispopulated)
                   AND n.nspname <> ALL ($1::text[]) AND n.nspname NOT LIKE 'pg\\_%'
                   AND n.nspname NOT LIKE '\\_timescaledb%'
                   AND (cardinality($2::text[]) = 0 OR n.nspname = ANY ($2::text[]))
                   AND pg_catalog.has_table_privilege(c.oid, 'SELECT')",
                &[&hidden, &self.schemas],
            )
            .await?;
        let mut partitioned = Vec::new();
        let tables: Vec<(u32, Table)> = rows
            .iter()
            .filter_map(|row| classify(row, &hyper, &mut partitioned))
            .filter(|(_, t)| self.tables.allows(&t.name.to_string()))
            .collect();

        let oids: Vec<u32> = tables.iter().map(|(oid, _)| *oid).collect();
        let mut columns = discover_columns(&client, &oids).await?;
        let mut leaves = discover_partitions(&client, &partitioned).await?;
        let mut keys = discover_primary_keys(&client, &oids).await?;
        let tables = tables
            .into_iter()
            .map(|(oid, mut t)| {
                t.columns = columns.remove(&oid).unwrap_or_default();
                t.primary_key = keys.remove(&oid).unwrap_or_default();
                if let TableKind::Partitioned { partitions } = &mut t.kind {
                    *partitions = leaves.remove(&oid).unwrap_or_default();
                    t.size_bytes = partitions.iter().map(|p| p.size_bytes).sum();
                    t.estimated_rows = sum_estimates(partitions.iter().map(|p| p.estimated_rows));
                }
                (t.name.clone(), Arc::new(t))
            })
            .collect::<BTreeMap<_, _>>();
        tracing::debug!(
            tables = tables.len(),
            timescaledb = version.as_deref().unwrap_or("absent"),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "discovery"
        );
        Ok(Snapshot {
            timescaledb_version: version,
            degraded,
            tables,
        })
    }
}

/// A row of the relation query as an exposed table (columns and keys come later); `None` for a
/// chunk outside the internal schema, or a relation dropped while the query ran.
fn classify(
    row: &tokio_postgres::Row,
    hyper: &Hypertables,
    partitioned: &mut Vec<u32>,
) -> Option<(u32, Table)> {
    let oid: u32 = row.get(0);
    if hyper.chunk_oids.contains(&oid) {
        return None;
    }
    // NULL sizes: the table was dropped while this query ran.
    let (Some(table_size), Some(blocks)) =
        (row.get::<_, Option<i64>>(5), row.get::<_, Option<i64>>(8))
    else {
        return None;
    };
    let name = QualifiedName::new(row.get::<_, String>(1), row.get::<_, String>(2));
    let parts = |chunks: &[Chunk]| {
        (
            chunks.iter().map(|c| c.size_bytes).sum(),
            sum_estimates(chunks.iter().map(|c| c.estimated_rows)),
        )
    };
    let (kind, size_bytes, estimated_rows) =
        if let Some((dimension, chunks)) = hyper.by_name.get(&name) {
            let (size, rows) = parts(chunks);
            let kind = TableKind::Hypertable {
                dimension: dimension.clone(),
                chunks: chunks.clone(),
            };
            (kind, size, rows)
        } else if let Some((mat, mat_hypertable_id, realtime)) = hyper.caggs.get(&name) {
            let (dimension, chunks) = hyper.by_name.get(mat)?;
            let (size, rows) = parts(chunks);
            let kind = TableKind::ContinuousAggregate {
                dimension: dimension.clone(),
                chunks: chunks.clone(),
                mat_hypertable_id: *mat_hypertable_id,
                realtime: *realtime,
            };
            (kind, size, rows)
        } else {
            let kind = if row.get::<_, bool>(9) {
                TableKind::View
            } else if row.get::<_, bool>(6) {
                TableKind::HypertableRoot
            } else if row.get::<_, bool>(7) {
                partitioned.push(oid);
                TableKind::Partitioned {
                    partitions: Vec::new(),
                }
            } else {
                TableKind::Plain { blocks }
            };
            (kind, table_size, estimate(row.get(4)))
        };
    let table = Table {
        name,
        relfilenode: row.get(3),
        kind,
        columns: Vec::new(),
        size_bytes,
        estimated_rows,
        primary_key: Vec::new(),
        row_security: row.get(10),
    };
    Some((oid, table))
}

/// Schemas never exposed, besides `pg_*` and `_timescaledb*`.
fn hidden_schemas() -> Vec<String> {
    [
        "information_schema",
        "timescaledb_information",
        "timescaledb_experimental",
        "toolkit_experimental",
    ]
    .map(String::from)
    .to_vec()
}

fn estimate(reltuples: f64) -> i64 {
    if reltuples < 0.0 {
        -1
    } else {
        reltuples.round() as i64
    }
}

/// Sum of estimates, -1 if any part is unknown.
fn sum_estimates(parts: impl Iterator<Item = i64>) -> i64 {
    parts
        .map(|e| (e >= 0).then_some(e))
        .sum::<Option<i64>>()
        .unwrap_or(-1)
}

#[derive(Default)]
struct Hypertables {
    by_name: BTreeMap<QualifiedName, (TimeDimension, Vec<Chunk>)>,
    chunk_oids: HashSet<u32>,
    /// Continuous aggregates by view: (materialization hypertable, its id, real-time).
    caggs: BTreeMap<QualifiedName, (QualifiedName, i32, bool)>,
}

/// Hypertables with their first open dimension, and their chunks with that dimension's slice.
async fn discover_hypertables(
    client: &tokio_postgres::Client,
) -> Result<Hypertables, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT h.id, h.schema_name::text, h.table_name::text, d.column_name::text, d.column_type::oid
             FROM _timescaledb_catalog.hypertable h
             JOIN LATERAL (SELECT column_name, column_type FROM _timescaledb_catalog.dimension d
                           WHERE d.hypertable_id = h.id AND d.interval_length IS NOT NULL
                           ORDER BY d.id LIMIT 1) d ON true
             WHERE h.compression_state IS DISTINCT FROM 2",
            &[],
        )
        .await?;
    let mut by_id = BTreeMap::new();
    for row in rows {
        let id: i32 = row.get(0);
        let name = QualifiedName::new(row.get::<_, String>(1), row.get::<_, String>(2));
        let dim = TimeDimension {
            column: row.get(3),
            type_oid: row.get(4),
        };
        by_id.insert(id, (name, dim, Vec::new()));
    }
    let rows = client
        .query(
            // `dropped` exists up to 2.25 (dropped chunks kept as catalog rows) and is gone from 2.26
            // on (the rows are deleted): read through to_jsonb so one text runs on both.
            "SELECT ch.hypertable_id, ch.id, ch.schema_name::text, ch.table_name::text, cl.oid,
                    cl.relfilenode, ds.range_start, ds.range_end, pg_catalog.pg_table_size(cl.oid),
                    cl.reltuples::float8, ch.compressed_chunk_id IS NOT NULL, (ch.status & 8) <> 0,
                    cch.schema_name::text, cch.table_name::text, ccl.relfilenode,
                    pg_catalog.pg_table_size(ccl.oid), sz.numrows_pre_compression,
                    sz.uncompressed_heap_size + sz.uncompressed_toast_size,
                    sz.compressed_heap_size + sz.compressed_toast_size
             FROM _timescaledb_catalog.chunk ch
             JOIN _timescaledb_catalog.chunk_constraint cc ON cc.chunk_id = ch.id
             JOIN _timescaledb_catalog.dimension_slice ds ON ds.id = cc.dimension_slice_id
             JOIN (SELECT DISTINCT ON (hypertable_id) id FROM _timescaledb_catalog.dimension
                   WHERE interval_length IS NOT NULL ORDER BY hypertable_id, id) d
               ON d.id = ds.dimension_id
             JOIN pg_catalog.pg_namespace n ON n.nspname = ch.schema_name
             JOIN pg_catalog.pg_class cl ON cl.relnamespace = n.oid AND cl.relname = ch.table_name
             LEFT JOIN _timescaledb_catalog.chunk cch ON cch.id = ch.compressed_chunk_id
             LEFT JOIN pg_catalog.pg_namespace cn ON cn.nspname = cch.schema_name
             LEFT JOIN pg_catalog.pg_class ccl ON ccl.relnamespace = cn.oid AND ccl.relname = cch.table_name
             LEFT JOIN _timescaledb_catalog.compression_chunk_size sz ON sz.chunk_id = ch.id
             WHERE NOT coalesce((to_jsonb(ch) ->> 'dropped')::boolean, false) AND NOT ch.osm_chunk
             ORDER BY ch.hypertable_id, ds.range_start, ch.id",
            &[],
        )
        .await?;
    let mut chunk_oids = HashSet::with_capacity(rows.len());
    for row in rows {
        chunk_oids.insert(row.get::<_, u32>(4));
        let Some((_, _, chunks)) = by_id.get_mut(&row.get::<_, i32>(0)) else {
            continue; // chunk of an internal (compressed-data) hypertable
        };
        // NULL size: the chunk was dropped while this query ran.
        let Some(size_bytes) = row.get::<_, Option<i64>>(8) else {
            continue;
        };
        let heap_rows = estimate(row.get(9));
        let compressed = match (
            row.get::<_, Option<String>>(12),
            row.get::<_, Option<String>>(13),
        ) {
            (Some(schema), Some(name)) if row.get::<_, bool>(10) => Some(Compressed {
                relation: QualifiedName::new(schema, name),
                relfilenode: row.get::<_, Option<u32>>(14).unwrap_or_default(),
                size_bytes: row.get::<_, Option<i64>>(15).unwrap_or_default(),
                rows: row.get::<_, Option<i64>>(16).unwrap_or(-1),
                uncompressed_bytes: row.get::<_, Option<i64>>(17).unwrap_or(-1),
                compressed_bytes: row.get::<_, Option<i64>>(18).unwrap_or(-1),
                partial: row.get(11),
            }),
            _ => None,
        };
        // A compressed chunk's heap holds only rows inserted after compression: count both parts.
        let (size_bytes, estimated_rows) = match &compressed {
            Some(c) => (
                size_bytes + c.size_bytes,
                sum_estimates([c.rows, heap_rows.max(0)].into_iter()),
            ),
            None => (size_bytes, heap_rows),
        };
        chunks.push(Chunk {
            name: QualifiedName::new(row.get::<_, String>(2), row.get::<_, String>(3)),
            id: row.get(1),
            relfilenode: row.get(5),
            range_start: row.get(6),
            range_end: row.get(7),
            size_bytes,
            estimated_rows,
            compressed,
        });
    }
    // Continuous aggregates (none on the Apache edition, where the catalog table is empty).
    let caggs = client
        .query(
            "SELECT user_view_schema::text, user_view_name::text, mat_hypertable_id, NOT materialized_only
             FROM _timescaledb_catalog.continuous_agg",
            &[],
        )
        .await?
        .iter()
        .filter_map(|r| {
            let (mat, _, _) = by_id.get(&r.get::<_, i32>(2))?;
            let view = QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1));
            Some((view, (mat.clone(), r.get(2), r.get(3))))
        })
        .collect();
    Ok(Hypertables {
        by_name: by_id
            .into_values()
            .map(|(name, dim, chunks)| (name, (dim, chunks)))
            .collect(),
        chunk_oids,
        caggs,
    })
}

/// Leaf partitions of the given partitioned tables, in partition-tree order.
async fn discover_partitions(
    client: &tokio_postgres::Client,
    oids: &[u32],
) -> Result<BTreeMap<u32, Vec<Partition>>, DbError> {
    let mut out: BTreeMap<u32, Vec<Partition>> = BTreeMap::new();
    if oids.is_empty() {
        return Ok(out);
    }
    let rows = client
        .query(
            "SELECT p.oid, n.nspname::text, c.relname::text, c.relfilenode,
                    pg_catalog.pg_table_size(c.oid), c.reltuples::float8, c.relkind = 'r',
                    pg_catalog.has_table_privilege(c.oid, 'SELECT')
             FROM unnest($1::oid[]) AS p(oid)
             CROSS JOIN LATERAL pg_catalog.pg_partition_tree(p.oid) t
             JOIN pg_catalog.pg_class c ON c.oid = t.relid
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE t.isleaf
             ORDER BY p.oid, t.level, n.nspname, c.relname",
            &[&oids],
        )
        .await?;
    for row in rows {
        let Some(size_bytes) = row.get::<_, Option<i64>>(4) else {
            continue; // dropped while this query ran
        };
        out.entry(row.get(0)).or_default().push(Partition {
            name: QualifiedName::new(row.get::<_, String>(1), row.get::<_, String>(2)),
            relfilenode: row.get(3),
            size_bytes,
            estimated_rows: estimate(row.get(5)),
            has_heap: row.get(6),
            readable: row.get(7),
        });
    }
    Ok(out)
}

/// Primary key columns of the given relations, in key order.
async fn discover_primary_keys(
    client: &tokio_postgres::Client,
    oids: &[u32],
) -> Result<BTreeMap<u32, Vec<String>>, DbError> {
    let rows = client
        .query(
            "SELECT i.indrelid, a.attname::text
             FROM pg_catalog.pg_index i
             CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
             WHERE i.indisprimary AND i.indrelid = ANY ($1::oid[])
             ORDER BY i.indrelid, k.ord",
            &[&oids],
        )
        .await?;
    let mut out: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for row in rows {
        out.entry(row.get(0)).or_default().push(row.get(1));
    }
    Ok(out)
}

/// Columns of the given relations, domains resolved to their base type (recursively).
async fn discover_columns(
    client: &tokio_postgres::Client,
    oids: &[u32],
) -> Result<BTreeMap<u32, Vec<Column>>, DbError> {
    let rows = client
        .query(
            // Domains are resolved recursively, for columns and for array elements alike, taking
            // the domain's typmod where the column has none. For arrays, pgarrow reads is_enum as
            // "the element is an enum".
            "WITH RECURSIVE base(attrelid, attnum, name, typ, typmod) AS (
                 SELECT a.attrelid, a.attnum, a.attname::text, a.atttypid, a.atttypmod
                 FROM pg_catalog.pg_attribute a
                 WHERE a.attrelid = ANY ($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
               UNION ALL
                 SELECT b.attrelid, b.attnum, b.name, t.typbasetype,
                        CASE WHEN b.typmod = -1 THEN t.typtypmod ELSE b.typmod END
                 FROM base b JOIN pg_catalog.pg_type t ON t.oid = b.typ
                 WHERE t.typtype = 'd'),
             col AS (
                 SELECT b.* FROM base b JOIN pg_catalog.pg_type t ON t.oid = b.typ
                 WHERE t.typtype <> 'd'),
             elem(attrelid, attnum, typ, typmod) AS (
                 SELECT c.attrelid, c.attnum, t.typelem, c.typmod
                 FROM col c JOIN pg_catalog.pg_type t ON t.oid = c.typ
                 WHERE t.typcategory = 'A' AND t.typelem <> 0 AND t.typlen = -1
               UNION ALL
                 SELECT e.attrelid, e.attnum, t.typbasetype,
                        CASE WHEN e.typmod = -1 THEN t.typtypmod ELSE e.typmod END
                 FROM elem e JOIN pg_catalog.pg_type t ON t.oid = e.typ
                 WHERE t.typtype = 'd')
             SELECT c.attrelid, c.name, c.typ, coalesce(e.typmod, c.typmod),
                    coalesce(et.typtype, t.typtype) = 'e', e.typ
             FROM col c
             JOIN pg_catalog.pg_type t ON t.oid = c.typ
             LEFT JOIN (elem e JOIN pg_catalog.pg_type et ON et.oid = e.typ AND et.typtype <> 'd')
                    ON e.attrelid = c.attrelid AND e.attnum = c.attnum
             ORDER BY c.attrelid, c.attnum",
            &[&oids],
        )
        .await?;
    let mut out: BTreeMap<u32, Vec<Column>> = BTreeMap::new();
    for row in rows {
        out.entry(row.get(0)).or_default().push(Column {
            name: row.get(1),
            pg_type: PgType {
                oid: row.get(2),
                typmod: row.get(3),
                is_enum: row.get(4),
                elem_oid: row.get(5),
            },
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_doubles_quotes() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(
            QualifiedName::new("My Schema", "t").quoted(),
            "\"My Schema\".\"t\""
        );
    }

    #[test]
    fn bounds_render_per_dimension_type() {
        let time = TimeDimension {
            column: "time".into(),
            type_oid: 1184,
        };
        assert_eq!(
            time.bound(1_790_812_800_000_000),
            Some(Bound::Time("2026-10-01T00:00:00Z".into()))
        );
        assert_eq!(time.bound(i64::MAX), None);
        let int = TimeDimension {
            column: "t".into(),
            type_oid: 20,
        };
        assert_eq!(int.bound(42), Some(Bound::Integer(42)));
    }

    #[test]
    fn estimates_sum_or_unknown() {
        assert_eq!(sum_estimates([1, 2].into_iter()), 3);
        assert_eq!(sum_estimates([1, -1].into_iter()), -1);
    }
}
