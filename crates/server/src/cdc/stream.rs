//! A change stream: a replication session on a slot, its pgoutput messages mapped from chunks to
//! their hypertables, TimescaleDB's own data movement left out, and each committed transaction's
//! rows decoded into Arrow record batches by the same decoder binary COPY reads use.
//!
//! ```text
//! slot ──pgwire-replication──▶ Begin · Relation · Insert/Update/Delete · Message · Commit
//!                                 │ Relation: chunk → hypertable (the catalog; refreshed for a
//!                                 │           chunk made while streaming), columns by name
//!                                 │ Message ::timescaledb-(de)compression-start … -end: rows skipped
//!                                 ▼
//!              per table: binary COPY rows ──pgarrow::CopyDecoder──▶ ChangeBatch at Commit
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use pgarrow::{plan_column, BatchLimits, ColumnPlan, CopyDecoder};
use pgwire_replication::{Lsn, ReplicationClient, ReplicationEvent};

use super::pgoutput::{self, Message, Value};
use super::CdcError;
use crate::catalog::{Catalog, QualifiedName, Table, TableKind};
use crate::config::Config;

/// The change-kind column: `insert`, `update` or `delete`.
pub const CHANGE_COLUMN: &str = "_change";
/// The LSN just past the change's transaction: a stream started there continues after it.
pub const LSN_COLUMN: &str = "_lsn";
/// The transaction's commit time.
pub const COMMIT_TIME_COLUMN: &str = "_commit_time";

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Logical decoding message prefixes TimescaleDB writes around moving rows between a chunk and its
/// compressed form (`timescaledb.enable_compression_wal_markers`).
const MOVE_STARTS: [&str; 2] = [
    "::timescaledb-compression-start",
    "::timescaledb-decompression-start",
];
const MOVE_ENDS: [&str; 2] = [
    "::timescaledb-compression-end",
    "::timescaledb-decompression-end",
];

/// Where and what to stream.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// The slot (made by `hyperflight cdc setup`).
    pub slot: String,
    /// The publication it reads.
    pub publication: String,
    /// Tables to follow; empty: every exposed table the publication covers.
    pub tables: Vec<QualifiedName>,
    /// Start after this LSN (a batch's `_lsn`); `None`: where the slot was last acknowledged.
    pub start_lsn: Option<u64>,
    /// End the stream (`next` returns `None`) once the server has decoded up to this LSN: a
    /// bounded read of what was written before it.
    pub stop_lsn: Option<u64>,
}

/// A slot just made on a replication session that exported its snapshot. The snapshot lives as
/// long as this is held (the session runs nothing else): import it before dropping this.
pub struct ExportedSlot {
    _session: ReplicationClient,
    /// The slot's consistent point: the snapshot sees every transaction committed before it, and
    /// the slot streams those committed after it.
    pub consistent_point: u64,
    /// The snapshot's id, for `SET TRANSACTION SNAPSHOT`.
    pub snapshot: String,
}

impl ExportedSlot {
    /// Creates the logical slot `slot` (pgoutput) on a replication session, exporting its snapshot.
    pub async fn create(
        config: &Config,
        slot: &str,
        publication: &str,
    ) -> Result<ExportedSlot, CdcError> {
        let replication =
            super::connect::replication_config(config.database.target(), slot, publication)?;
        let mut session = ReplicationClient::connect_gated(replication).await?;
        let rows = session
            .simple_query(&format!(
                "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput EXPORT_SNAPSHOT",
                pgarrow::quote_ident(slot)
            ))
            .await?;
        // slot_name, consistent_point, snapshot_name, output_plugin.
        let text = |i: usize| {
            rows.first()
                .and_then(|r| r.get(i).cloned().flatten())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .ok_or_else(|| {
                    CdcError::Protocol(format!("CREATE_REPLICATION_SLOT: no column {i}"))
                })
        };
        let consistent_point = Lsn::parse(&text(1)?)
            .map_err(|e| CdcError::Protocol(format!("CREATE_REPLICATION_SLOT: {e}")))?
            .0;
        Ok(ExportedSlot {
            _session: session,
            consistent_point,
            snapshot: text(2)?,
        })
    }
}

/// The changes one transaction made to one table.
#[derive(Debug, Clone)]
pub struct ChangeBatch {
    /// The hypertable or table.
    pub table: QualifiedName,
    /// The LSN just past the transaction: acknowledge or resume from it.
    pub lsn: u64,
    /// `_change`, `_lsn`, `_commit_time`, then the table's columns.
    pub batch: RecordBatch,
}

/// What a relation's rows become.
struct Target {
    table: Arc<Table>,
    /// For each of the table's columns, its position in the relation's tuples.
    positions: Vec<Option<usize>>,
}

/// One table's rows in the open transaction, as a binary COPY stream.
struct Pending {
    table: Arc<Table>,
    copy: Vec<u8>,
    kinds: Vec<&'static str>,
}

/// The binary COPY header: signature, flags, header extension length.
const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// Reads one slot; see the module docs.
pub struct ChangeStream {
    client: ReplicationClient,
    catalog: Arc<Catalog>,
    follow: Vec<QualifiedName>,
    /// Relation oid → what its rows become; `None`: not followed (other tables, compressed chunks,
    /// materialization chunks).
    relations: HashMap<u32, Option<Target>>,
    /// Chunk or table name → followed table, from the last catalog discovery.
    names: HashMap<QualifiedName, Arc<Table>>,
    /// Decoding plans per followed table.
    plans: HashMap<QualifiedName, Vec<ColumnPlan>>,
    /// The open transaction's rows, per table.
    pending: BTreeMap<QualifiedName, Pending>,
    /// Inside TimescaleDB's markers of a compression or decompression.
    moving: bool,
    ready: VecDeque<ChangeBatch>,
    /// Row changes left out because TimescaleDB was moving rows, since the stream started.
    moved_rows: u64,
    /// The end of the last transaction seen (empty ones included).
    position: u64,
    /// The server ended the stream (its stop LSN was reached): nothing left to shut down.
    ended: bool,
    /// [`StreamOptions::stop_lsn`].
    stop_lsn: Option<u64>,
    /// Between a Begin and its Commit.
    in_transaction: bool,
    /// The server said it has decoded past the stop LSN outside a transaction (a keepalive): no
    /// transaction committed before it is still to come.
    caught_up: bool,
}

impl ChangeStream {
    /// Connects to the slot and starts streaming, discovering tables as the server's settings
    /// say (`schemas`, `tables_include`, `tables_exclude`).
    pub async fn start(config: &Config, options: StreamOptions) -> Result<ChangeStream, CdcError> {
        let catalog = Catalog::new(
            crate::db::pool(config),
            None,
            config.timescaledb_support,
            config.schemas.clone(),
            config.tables.clone(),
            Arc::new(crate::metrics::Metrics::new()),
        );
        Self::start_with(config.database.target(), Arc::new(catalog), options).await
    }

    /// Connects to the slot as `target` says, mapping relations with `catalog`.
    pub(crate) async fn start_with(
        target: &pgconn::Target,
        catalog: Arc<Catalog>,
        options: StreamOptions,
    ) -> Result<ChangeStream, CdcError> {
        let mut replication =
            super::connect::replication_config(target, &options.slot, &options.publication)?;
        if let Some(lsn) = options.start_lsn {
            replication = replication.with_start_lsn(Lsn(lsn));
        }
        if let Some(lsn) = options.stop_lsn {
            replication = replication.with_stop_lsn(Lsn(lsn));
        }
        let mut client = ReplicationClient::connect_gated(replication).await?;
        // A walsender runs no SQL, so TimescaleDB's loader never loads the extension in it, and
        // decoding a compressed chunk's row (its type's send function is TimescaleDB's) fails with
        // "not supported under the current license". One statement loads it.
        client.simple_query("SELECT 1").await?;
        client.start().await?;
        client.wait_started().await?;
        let mut stream = ChangeStream {
            client,
            catalog,
            follow: options.tables,
            relations: HashMap::new(),
            names: HashMap::new(),
            plans: HashMap::new(),
            pending: BTreeMap::new(),
            moving: false,
            ready: VecDeque::new(),
            moved_rows: 0,
            position: options.start_lsn.unwrap_or(0),
            ended: false,
            stop_lsn: options.stop_lsn,
            in_transaction: false,
            caught_up: false,
        };
        stream.discover(false).await?;
        Ok(stream)
    }

    /// The next table's changes of a committed transaction, waiting for one; `None` when the server
    /// ended the stream.
    pub async fn next(&mut self) -> Result<Option<ChangeBatch>, CdcError> {
        loop {
            if let Some(batch) = self.ready.pop_front() {
                return Ok(Some(batch));
            }
            if self.caught_up || self.ended {
                return Ok(None);
            }
            let Some(event) = self.client.recv().await? else {
                self.ended = true;
                return Ok(None);
            };
            self.handle(event).await?;
        }
    }

    /// Tells the server everything up to `lsn` is safely consumed: the slot may free that WAL.
    pub fn acknowledge(&self, lsn: u64) {
        self.client.update_applied_lsn(Lsn(lsn));
    }

    /// The end of the last transaction received, empty ones and unfollowed ones included.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Row changes left out because they were TimescaleDB moving rows (compression,
    /// decompression), not users changing them.
    pub fn moved_rows(&self) -> u64 {
        self.moved_rows
    }

    /// Ends the session (the slot stays, at its acknowledged position).
    pub async fn stop(mut self) -> Result<(), CdcError> {
        if !self.ended {
            self.client.shutdown().await?;
        }
        Ok(())
    }

    async fn handle(&mut self, event: ReplicationEvent) -> Result<(), CdcError> {
        match event {
            ReplicationEvent::Begin { .. } => {
                self.pending.clear();
                self.moving = false;
                self.in_transaction = true;
            }
            ReplicationEvent::Message { prefix, .. } => {
                if MOVE_STARTS.contains(&prefix.as_str()) {
                    self.moving = true;
                } else if MOVE_ENDS.contains(&prefix.as_str()) {
                    self.moving = false;
                }
            }
            ReplicationEvent::XLogData { data, .. } => self.change(&data).await?,
            ReplicationEvent::Commit {
                end_lsn,
                commit_time_micros,
                ..
            } => {
                self.position = end_lsn.0;
                self.in_transaction = false;
                self.commit(end_lsn.0, commit_time_micros + PG_EPOCH_MICROS)?;
            }
            // The stop LSN ends the stream at a transaction's boundary; a keepalive ends it when
            // no transaction comes after it (the server sends one once it has caught up).
            ReplicationEvent::KeepAlive { wal_end, .. } => {
                self.caught_up |=
                    !self.in_transaction && self.stop_lsn.is_some_and(|stop| wal_end.0 >= stop);
            }
            ReplicationEvent::StoppedAt { .. } => {}
        }
        Ok(())
    }

    async fn change(&mut self, data: &[u8]) -> Result<(), CdcError> {
        let (relation, kind, values) = match pgoutput::parse(data)? {
            Message::Relation(rel) => return self.relation(rel).await,
            Message::Insert { relation, new } => (relation, "insert", new),
            Message::Update { relation, new } => (relation, "update", new),
            Message::Delete { relation, old } => (relation, "delete", old),
            Message::Other => return Ok(()),
        };
        let Some(Some(target)) = self.relations.get(&relation) else {
            return Ok(());
        };
        if self.moving {
            self.moved_rows += 1;
            return Ok(());
        }
        let pending = self
            .pending
            .entry(target.table.name.clone())
            .or_insert_with(|| Pending {
                table: target.table.clone(),
                copy: COPY_HEADER.to_vec(),
                kinds: Vec::new(),
            });
        // A binary COPY row: the field count, then each field's length and bytes (-1 for NULL).
        let columns = i16::try_from(target.positions.len())
            .map_err(|_| CdcError::Unsupported("a table of more than 32767 columns".into()))?;
        pending.copy.extend(columns.to_be_bytes());
        for position in &target.positions {
            match position.and_then(|p| values.get(p)) {
                Some(Value::Binary(bytes)) => {
                    let len = i32::try_from(bytes.len())
                        .map_err(|_| CdcError::Protocol("a value over 2 GiB".into()))?;
                    pending.copy.extend(len.to_be_bytes());
                    pending.copy.extend_from_slice(bytes);
                }
                Some(Value::Text(_)) => {
                    return Err(CdcError::Protocol(
                        "the server sent a text value on a binary session".into(),
                    ))
                }
                // NULL; an unchanged TOASTed value, which PostgreSQL does not send; a column a
                // delete's key does not carry.
                Some(Value::Null | Value::Unchanged) | None => {
                    pending.copy.extend((-1i32).to_be_bytes())
                }
            }
        }
        pending.kinds.push(kind);
        Ok(())
    }

    /// Maps a relation to the followed table it belongs to, if any; a chunk not yet in the catalog
    /// (created while streaming) makes the catalog discover again once.
    async fn relation(&mut self, rel: pgoutput::Relation) -> Result<(), CdcError> {
        let name = QualifiedName::new(rel.schema.clone(), rel.name.clone());
        if !self.names.contains_key(&name) {
            self.discover(true).await?;
        }
        let target = match self.names.get(&name) {
            None => None,
            Some(table) => {
                let positions = table
                    .columns
                    .iter()
                    .map(|c| rel.columns.iter().position(|r| r.name == c.name))
                    .collect();
                Some(Target {
                    table: table.clone(),
                    positions,
                })
            }
        };
        self.relations.insert(rel.oid, target);
        Ok(())
    }

    /// Discovers the followed tables and their chunks (`fresh`: bypassing the cache, for a chunk
    /// made since), and plans their columns.
    async fn discover(&mut self, fresh: bool) -> Result<(), CdcError> {
        let snapshot = if fresh {
            self.catalog.refresh().await?
        } else {
            self.catalog.snapshot().await?
        };
        for name in &self.follow {
            if snapshot.table(name).is_none() {
                return Err(CdcError::NotFound(name.to_string()));
            }
        }
        self.names.clear();
        for table in snapshot.tables() {
            if !self.follow.is_empty() && !self.follow.contains(&table.name) {
                continue;
            }
            let parts: Vec<QualifiedName> = match &table.kind {
                TableKind::Hypertable { chunks, .. } => {
                    chunks.iter().map(|c| c.name.clone()).collect()
                }
                TableKind::Plain { .. } => vec![table.name.clone()],
                _ => continue,
            };
            if !self.plans.contains_key(&table.name) {
                self.plans.insert(table.name.clone(), plans(table)?);
            }
            for part in parts {
                self.names.insert(part, table.clone());
            }
        }
        Ok(())
    }

    /// Decodes the transaction's rows, table by table.
    fn commit(&mut self, lsn: u64, commit_micros: i64) -> Result<(), CdcError> {
        for (name, mut pending) in std::mem::take(&mut self.pending) {
            pending.copy.extend((-1i16).to_be_bytes());
            let plans = &self.plans[&name];
            let mut decoder = CopyDecoder::new(
                plans,
                false,
                BatchLimits {
                    rows: pending.kinds.len(),
                    bytes: usize::MAX,
                },
            );
            decoder.push(&pending.copy)?;
            let mut batches = Vec::new();
            while let Some(b) = decoder.next_batch() {
                batches.push(b.batch);
            }
            if let Some(b) = decoder.finish()? {
                batches.push(b.batch);
            }
            let mut offset = 0;
            for values in batches {
                let rows = values.num_rows();
                let kinds = &pending.kinds[offset..offset + rows];
                offset += rows;
                let batch = with_change_columns(&values, kinds, lsn, commit_micros)?;
                self.ready.push_back(ChangeBatch {
                    table: pending.table.name.clone(),
                    lsn,
                    batch,
                });
            }
        }
        Ok(())
    }
}

/// The table's columns as the type table plans them. A type scans read as text (cast in SQL) has
/// no binary decoder, and a change carries its binary form: refused, naming the column.
pub(crate) fn plans(table: &Table) -> Result<Vec<ColumnPlan>, CdcError> {
    table
        .columns
        .iter()
        .map(|c| {
            let plan = plan_column(&c.name, &c.pg_type);
            if plan.cast_to_text {
                Err(CdcError::Unsupported(format!(
                    "column {:?} of {} has a type (oid {}) that reads are given as text; change \
                     streams carry values in binary form and cannot decode it",
                    c.name, table.name, c.pg_type.oid
                )))
            } else {
                Ok(plan)
            }
        })
        .collect()
}

/// The change schema: the change columns, then the table's.
pub fn change_schema(values: &Schema) -> Schema {
    let mut fields = vec![
        Field::new(CHANGE_COLUMN, DataType::Utf8, false),
        Field::new(LSN_COLUMN, DataType::UInt64, false),
        Field::new(
            COMMIT_TIME_COLUMN,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ];
    fields.extend(values.fields().iter().map(|f| f.as_ref().clone()));
    Schema::new_with_metadata(fields, values.metadata().clone())
}

fn with_change_columns(
    values: &RecordBatch,
    kinds: &[&'static str],
    lsn: u64,
    commit_micros: i64,
) -> Result<RecordBatch, CdcError> {
    let rows = values.num_rows();
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(kinds.to_vec())),
        Arc::new(UInt64Array::from(vec![lsn; rows])),
        Arc::new(TimestampMicrosecondArray::from(vec![commit_micros; rows]).with_timezone("UTC")),
    ];
    columns.extend(values.columns().iter().cloned());
    RecordBatch::try_new(Arc::new(change_schema(&values.schema())), columns)
        .map_err(|e| CdcError::Protocol(format!("cannot build a change batch: {e}")))
}
