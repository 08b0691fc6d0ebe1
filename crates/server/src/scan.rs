//! One endpoint's read: `COPY (SELECT …) TO STDOUT (FORMAT binary)` of one relation, decoded into
//! record batches and sent down a bounded channel, so a slow client slows the scan instead of filling
//! memory.
//!
//! Rows come in physical (ctid) order: the session turns off synchronized seq scans, parallel
//! workers and index scans, so a scan starts at block 0 and walks the heap forward, and a resumed
//! scan is a TID range scan after the last delivered row. The relation is locked (ACCESS SHARE) before its relfilenode is checked, so it cannot
//! be rewritten between the check and the read.

use std::sync::Arc;
use std::time::Duration;

use crate::db::{Object, Pool};
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, Semaphore};

use arrow::array::RecordBatch;

use crate::catalog::{quote_ident, QualifiedName, TimeDimension};
use crate::compressed::{self, CompressedSource, Exploder};
use crate::error::{DbError, Error};
use crate::metrics::{MemoryBudget, Metrics, Reservation};
use pgarrow::{BatchLimits, ColumnPlan, CopyDecoder, DecodedBatch, Tid};

/// Decoded bytes after which a batch is cut even if it has fewer than `batch_rows` rows, so wide rows
/// cannot make one batch (and one gRPC message) arbitrarily large.
pub const MAX_BATCH_BYTES: usize = 16 << 20;

/// Batches buffered between the scan and the gRPC stream, per stream.
const CHANNEL_BATCHES: usize = 2;

/// Filter on the time dimension, in TimescaleDB's internal units; start inclusive, end exclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeFilter {
    /// The dimension filtered on.
    pub dimension: TimeDimension,
    /// Inclusive lower bound.
    pub start: Option<i64>,
    /// Exclusive upper bound.
    pub end: Option<i64>,
}

/// Everything needed to read one endpoint.
#[derive(Debug, Clone)]
pub struct ScanSpec {
    /// The relation read: a chunk or a plain table.
    pub relation: QualifiedName,
    /// `FROM ONLY`: a plain table's inheritance children are not part of it.
    pub only: bool,
    /// Read `relation`'s rows through this parent (`WHERE tableoid = relation`), so the parent's
    /// row-level security policies apply: a hypertable's chunks have none of their own.
    pub through: Option<QualifiedName>,
    /// Track ctids for resume tickets (false where ctids are meaningless, e.g. compressed chunks).
    pub with_tid: bool,
    /// Output columns.
    pub columns: Vec<ColumnPlan>,
    /// Row filter on the time dimension.
    pub filter: Option<TimeFilter>,
    /// SQL ANDed to the row filter: a Flight SQL scan's column predicates, rendered by this server
    /// from the parsed statement and carried in a signed ticket.
    pub predicate: Option<String>,
    /// A `query` endpoint: this statement (a Flight SQL SELECT, parameters inlined) is read whole
    /// instead of `relation`, which then only names the read in logs.
    pub query: Option<String>,
    /// Heap blocks `[start, end)` to read; `None` for all, an open end for all from `start`.
    pub blocks: Option<(u32, Option<u32>)>,
    /// Rows up to and including this position were already delivered.
    pub resume_after: Option<Tid>,
    /// relfilenode the ticket was issued for; the scan refuses to read another.
    pub relfilenode: u32,
    /// Exported snapshot to read (`SET TRANSACTION SNAPSHOT`), already validated as an id.
    pub snapshot: Option<String>,
    /// Rows per batch, at most.
    pub batch_rows: usize,
    /// Database-side limit on the COPY.
    pub statement_timeout: Duration,
    /// A client that takes no batch for this long loses its scan (and slot) and is told to resume.
    pub stall_timeout: Duration,
    /// A compressed chunk: its compressed batches are read first (unless `resume_after` says the
    /// heap part has begun), then its heap.
    pub compressed: Option<CompressedSource>,
}

/// Where the last row of a batch sits, for its resume ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// A heap row's ctid.
    Heap(Tid),
    /// Inside a compressed chunk's batches: the batch's ctid and how many of its rows are done.
    Batch {
        /// The compressed batch.
        tid: Tid,
        /// Rows of that batch delivered (or filtered out), in stored order.
        rows_done: u32,
    },
}

/// A batch of a scan and the position of its last row (none where the read has no positions).
pub struct ScanBatch {
    /// The rows.
    pub batch: RecordBatch,
    /// Resume after this.
    pub position: Option<Position>,
}

impl ScanSpec {
    /// The COPY statement. Every identifier is quoted and every value is a number or a literal this
    /// server formatted from a number: COPY takes no bind parameters.
    pub fn copy_sql(&self) -> String {
        if let Some(query) = &self.query {
            return query_copy_sql(query, &self.columns);
        }
        let mut select: Vec<String> = Vec::with_capacity(self.columns.len() + 1);
        if self.with_tid {
            select.push("ctid".into());
        }
        for c in &self.columns {
            let ident = quote_ident(c.field.name());
            select.push(if c.cast_to_text {
                format!("{ident}::text")
            } else {
                ident
            });
        }
        let mut conditions = Vec::new();
        let from = match &self.through {
            Some(parent) => {
                let literal = self.relation.quoted().replace('\'', "''");
                conditions.push(format!("tableoid = '{literal}'::regclass"));
                parent.quoted()
            }
            None => self.relation.quoted(),
        };
        if let Some((start, end)) = self.blocks {
            if start > 0 {
                conditions.push(format!("ctid >= '({start},0)'::tid"));
            }
            if let Some(end) = end {
                conditions.push(format!("ctid < '({end},0)'::tid"));
            }
        }
        if let Some(t) = self.resume_after {
            conditions.push(format!("ctid > '({},{})'::tid", t.block, t.offset));
        }
        if let Some(f) = &self.filter {
            let col = quote_ident(&f.dimension.column);
            if let Some(start) = f.start {
                conditions.push(format!("{col} >= {}", literal(&f.dimension, start)));
            }
            if let Some(end) = f.end {
                conditions.push(format!("{col} < {}", literal(&f.dimension, end)));
            }
        }
        if let Some(p) = &self.predicate {
            conditions.push(format!("({p})"));
        }
        let where_clause = if conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conditions.join(" AND "))
        };
        format!(
            "COPY (SELECT {} FROM {}{}{}) TO STDOUT (FORMAT binary)",
            select.join(", "),
            // Through a parent, its children are what is read.
            if self.only && self.through.is_none() {
                "ONLY "
            } else {
                ""
            },
            from,
            where_clause
        )
    }
}

/// The COPY of a `query` endpoint. Its columns are renamed by position (result names may repeat) so
/// that those without a binary decoder can be cast to text.
fn query_copy_sql(query: &str, columns: &[ColumnPlan]) -> String {
    let alias = |i: usize| format!("c{i}");
    let select: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if c.cast_to_text {
                format!("{}::text", alias(i))
            } else {
                alias(i)
            }
        })
        .collect();
    let names: Vec<String> = (0..columns.len()).map(alias).collect();
    format!(
        "COPY (SELECT {} FROM ({query}) AS q({})) TO STDOUT (FORMAT binary)",
        select.join(", "),
        names.join(", ")
    )
}

/// A SQL literal for an internal dimension value: the number for integer dimensions, otherwise a
/// timestamp built from microseconds since the Unix epoch and cast to the column's type.
fn literal(dim: &TimeDimension, value: i64) -> String {
    if dim.is_integer() {
        value.to_string()
    } else {
        let ty = dim.sql_type().unwrap_or("timestamptz");
        format!("(timestamptz 'epoch' + {value} * interval '1 microsecond')::{ty}")
    }
}

/// What arrives from a scan: a batch with the budget it holds, or the error that ended the scan.
pub type ScanItem = Result<(ScanBatch, Reservation), Error>;

/// A running scan's output: its batches, and an error that ended it while the channel was full (a
/// stalled client), delivered after the batches already queued.
pub struct ScanStream {
    /// Batches, or the error that ended the scan.
    pub rx: mpsc::Receiver<ScanItem>,
    /// The error that ended the scan when it could not be queued.
    pub late: Arc<std::sync::Mutex<Option<Error>>>,
}

/// Queues `e` for the stream; when the channel is full (the client reads nothing), leaves it in
/// `late` rather than waiting, so the scan ends now and frees its slot.
fn deliver(tx: &mpsc::Sender<ScanItem>, late: &std::sync::Mutex<Option<Error>>, e: Error) {
    if let Err(mpsc::error::TrySendError::Full(Err(e))) = tx.try_send(Err(e)) {
        if let Ok(mut slot) = late.lock() {
            *slot = Some(e);
        }
    }
}

/// Runs scans: the pool they read from, the server-wide cap on running scans, and the memory budget
/// for batches waiting to be sent.
pub struct Scanner {
    /// Connections.
    pub pool: Pool,
    /// `max_concurrent_chunks` slots, handed out in request order.
    pub slots: Arc<Semaphore>,
    /// `max_memory_mb`.
    pub budget: Arc<MemoryBudget>,
    /// Where scans report.
    pub metrics: Arc<Metrics>,
}

impl Scanner {
    /// Starts reading `spec`; batches (or the error that ended the read) arrive on the returned
    /// channel. The scan first waits for a slot, calls `on_complete` once the relation was read to its
    /// end, and stops — cancelling the query on the database and discarding the connection — as soon
    /// as the receiver is dropped.
    pub fn start(&self, spec: ScanSpec, on_complete: impl FnOnce() + Send + 'static) -> ScanStream {
        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
        let late = Arc::new(std::sync::Mutex::new(None));
        let late_for_scan = late.clone();
        let (pool, slots, budget, metrics) = (
            self.pool.clone(),
            self.slots.clone(),
            self.budget.clone(),
            self.metrics.clone(),
        );
        tokio::spawn(async move {
            let late = late_for_scan;
            let slot = tokio::select! {
                slot = slots.acquire_owned() => slot,
                _ = tx.closed() => return,
            };
            let Ok(_slot) = slot else {
                deliver(&tx, &late, Error::ShuttingDown);
                return;
            };
            metrics.active_scans.inc();
            let _running = scopeguard(|| metrics.active_scans.dec());
            let started = std::time::Instant::now();
            let client = match pool.get().await {
                Ok(c) => c,
                Err(e) => {
                    deliver(&tx, &late, e.into());
                    return;
                }
            };
            let cancel = client.cancel_token();
            let mut client = client;
            let outcome = copy_into(&mut client, &spec, &budget, &tx).await;
            if let Ok(true) = outcome {
                metrics.chunks.inc();
                metrics
                    .chunk_seconds
                    .observe(started.elapsed().as_secs_f64());
                on_complete();
                return;
            }
            // The COPY may still be running: stop it, and never give this connection back.
            if let Err(e) = crate::db::connector(&pool).cancel(&cancel).await {
                tracing::debug!(error = %e, "cancel request failed");
            }
            drop(Object::take(client));
            if let Err(e) = outcome {
                let e = match e {
                    Error::Database(DbError::UndefinedTable) => {
                        Error::ChunkGone(spec.relation.to_string())
                    }
                    other => other,
                };
                deliver(&tx, &late, e);
            }
        });
        ScanStream { rx, late }
    }
}

/// Runs `f` when dropped, however the scope ends.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

/// Reserves budget for `batch` and sends it; false when the receiver went away meanwhile. A client
/// that takes nothing for `stall` ends the scan with [`Error::Stalled`]: waiting for budget is the
/// server's doing and does not count.
async fn hand_on(
    batch: ScanBatch,
    budget: &MemoryBudget,
    tx: &mpsc::Sender<ScanItem>,
    stall: Duration,
) -> Result<bool, Error> {
    let reserved = tokio::select! {
        r = budget.reserve(batch.batch.get_array_memory_size()) => r,
        _ = tx.closed() => return Ok(false),
    };
    let Some(r) = reserved else {
        return Ok(false);
    };
    match tokio::time::timeout(stall, tx.send(Ok((batch, r)))).await {
        Ok(sent) => Ok(sent.is_ok()),
        Err(_) => Err(Error::Stalled(stall)),
    }
}

/// Reads the relation into `tx`. Ok(true): read to its end; Ok(false): the receiver went away.
async fn copy_into(
    client: &mut Object,
    spec: &ScanSpec,
    budget: &MemoryBudget,
    tx: &mpsc::Sender<ScanItem>,
) -> Result<bool, Error> {
    begin(client, spec).await?;
    let read_all = match &spec.compressed {
        None => copy_heap(client, spec, budget, tx).await?,
        Some(source) => copy_compressed_chunk(client, spec, source, budget, tx).await?,
    };
    // Any other outcome discards the connection, transaction and all (see the caller).
    if read_all {
        // A statement's transaction is rolled back: it cannot leave settings (set_config) on a
        // pooled session.
        let end = if spec.query.is_some() {
            "ROLLBACK"
        } else {
            "COMMIT"
        };
        client.batch_execute(end).await?;
    }
    Ok(read_all)
}

/// The transaction, its settings, the lock, and the check that the relation is the one the ticket
/// was issued for, in one round trip: on a small chunk the round trips before COPY are most of the
/// time to the first batch.
async fn begin(client: &tokio_postgres::Client, spec: &ScanSpec) -> Result<(), Error> {
    if spec.query.is_some() {
        // PostgreSQL plans a statement as it likes: no storage to pin, no scan order to force.
        client
            .batch_execute(&format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL statement_timeout = {}",
                spec.statement_timeout.as_millis()
            ))
            .await?;
        return Ok(());
    }
    // SET TRANSACTION SNAPSHOT must come before any query of the transaction.
    let attach = match &spec.snapshot {
        Some(id) => format!("SET TRANSACTION SNAPSHOT '{id}'; "),
        None => String::new(),
    };
    // Positions need the storage to stay put between the relfilenode check and the read. A read
    // without positions (a view, a materialized view, which cannot be locked) needs no lock.
    let mut lock = String::new();
    if spec.with_tid {
        // Through a parent, the parent is what the role may lock (locking it locks its children).
        lock = match &spec.through {
            Some(parent) => format!("LOCK TABLE {}", parent.quoted()),
            None => format!(
                "LOCK TABLE {}{}",
                if spec.only { "ONLY " } else { "" },
                spec.relation.quoted()
            ),
        };
        if let Some(c) = &spec.compressed {
            lock.push_str(&format!(", {}", c.relation.quoted()));
        }
        lock.push_str(" IN ACCESS SHARE MODE; ");
    }
    // Resume positions need rows in ctid order: no synchronized seq scans (they start mid-table), no
    // parallel workers, and no index scans (a time window would come back in index order). Bitmap
    // heap scans visit blocks in order and stay allowed.
    // Tickets are bound to the relation's storage: after a rewrite their block positions are void.
    // (The session pins standard_conforming_strings, so doubling quotes makes the literal.)
    let relation = spec.relation.quoted().replace('\'', "''");
    let answers = client
        .simple_query(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; \
             {attach}SET LOCAL statement_timeout = {}; SET LOCAL synchronize_seqscans = off; \
             SET LOCAL max_parallel_workers_per_gather = 0; SET LOCAL enable_indexscan = off; \
             SET LOCAL enable_indexonlyscan = off; {lock}\
             SELECT relfilenode FROM pg_catalog.pg_class WHERE oid = '{relation}'::regclass",
            spec.statement_timeout.as_millis(),
        ))
        .await?;
    let relfilenode = answers.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => {
            row.get(0).and_then(|v| v.parse::<u32>().ok())
        }
        _ => None,
    });
    if relfilenode != Some(spec.relfilenode) {
        return Err(Error::Rewritten(spec.relation.to_string()));
    }
    Ok(())
}

/// A compressed chunk: its batches with positions, then the rows inserted into its heap since it was
/// compressed. Where the batches cannot be read with positions, the chunk is read in one pass.
async fn copy_compressed_chunk(
    txn: &tokio_postgres::Client,
    spec: &ScanSpec,
    source: &CompressedSource,
    budget: &MemoryBudget,
    tx: &mpsc::Sender<ScanItem>,
) -> Result<bool, Error> {
    if spec.resume_after.is_none() {
        match compressed::layout(txn, &spec.relation, source, spec.filter.as_ref()).await? {
            Some(layout) => {
                if !copy_batches(txn, spec, source, layout, budget, tx).await? {
                    return Ok(false);
                }
            }
            None => {
                tracing::info!(chunk = %spec.relation, "compressed chunk read in one pass, without resume positions (array columns, or columns added after compression)");
                let whole = ScanSpec {
                    with_tid: false,
                    compressed: None,
                    ..spec.clone()
                };
                return copy_heap(txn, &whole, budget, tx).await;
            }
        }
    }
    // With TimescaleDB's columnar scan off, the chunk is its heap alone: rows inserted since
    // compression, which have ctids.
    txn.batch_execute("SET LOCAL timescaledb.enable_columnarscan = off")
        .await?;
    copy_heap(txn, spec, budget, tx).await
}

/// The compressed part: one COPY row per batch, exploded into rows with positions.
async fn copy_batches(
    txn: &tokio_postgres::Client,
    spec: &ScanSpec,
    source: &CompressedSource,
    layout: compressed::Layout,
    budget: &MemoryBudget,
    tx: &mpsc::Sender<ScanItem>,
) -> Result<bool, Error> {
    // One decoded row per compressed batch, so each comes with its own ctid.
    let limits = BatchLimits {
        rows: 1,
        bytes: MAX_BATCH_BYTES,
    };
    let decoder = CopyDecoder::new(layout.plans(), true, limits);
    let sql = layout.sql().to_string();
    let schema = crate::plan::schema_of(&spec.columns);
    let mut exploder = Exploder::new(layout, schema, source, spec.filter.clone(), spec.batch_rows);
    let explode = |decoded, ready: &mut Vec<ScanBatch>| exploder.push(decoded, ready);
    if !copy_out(txn, &sql, decoder, budget, tx, explode, spec.stall_timeout).await? {
        return Ok(false);
    }
    match exploder.finish()? {
        Some(batch) => hand_on(batch, budget, tx, spec.stall_timeout).await,
        None => Ok(true),
    }
}

/// A heap read: rows in ctid order, each batch with the ctid of its last row when `with_tid`.
async fn copy_heap(
    txn: &tokio_postgres::Client,
    spec: &ScanSpec,
    budget: &MemoryBudget,
    tx: &mpsc::Sender<ScanItem>,
) -> Result<bool, Error> {
    let limits = BatchLimits {
        rows: spec.batch_rows,
        bytes: MAX_BATCH_BYTES,
    };
    let decoder = CopyDecoder::new(&spec.columns, spec.with_tid, limits);
    let heap = |d: DecodedBatch, ready: &mut Vec<ScanBatch>| {
        ready.push(ScanBatch {
            batch: d.batch,
            position: d.last_tid.map(Position::Heap),
        });
        Ok(())
    };
    copy_out(
        txn,
        &spec.copy_sql(),
        decoder,
        budget,
        tx,
        heap,
        spec.stall_timeout,
    )
    .await
}

/// Runs `sql` (a COPY … TO STDOUT), decodes it, turns each decoded batch into scan batches with
/// `convert` and hands them on. Ok(true): read to its end; Ok(false): the receiver went away.
async fn copy_out(
    txn: &tokio_postgres::Client,
    sql: &str,
    mut decoder: CopyDecoder,
    budget: &MemoryBudget,
    tx: &mpsc::Sender<ScanItem>,
    mut convert: impl FnMut(DecodedBatch, &mut Vec<ScanBatch>) -> Result<(), Error>,
    stall: Duration,
) -> Result<bool, Error> {
    let copy = txn.copy_out(sql).await?;
    let mut ready = Vec::new();
    futures::pin_mut!(copy);
    loop {
        // COPY sends one message per row: rows already received are taken without a wait (a
        // `select!` per row costs a waiter registration on the channel each time). Only when the
        // database is slow to send is the wait also on the client, so one that goes away is
        // noticed then too (otherwise the next batch handed on notices it).
        let next = match copy.next().now_or_never() {
            Some(next) => next,
            None => tokio::select! {
                biased;
                _ = tx.closed() => return Ok(false),
                next = copy.next() => next,
            },
        };
        let data: bytes::Bytes = match next {
            Some(data) => data?,
            None => break,
        };
        decoder.push(&data)?;
        while let Some(decoded) = decoder.next_batch() {
            convert(decoded, &mut ready)?;
        }
        for batch in ready.drain(..) {
            if !hand_on(batch, budget, tx, stall).await? {
                return Ok(false);
            }
        }
    }
    // finish() hands back the oldest pending batch; any others follow in order.
    let first = decoder.finish()?;
    for decoded in first
        .into_iter()
        .chain(std::iter::from_fn(|| decoder.next_batch()))
    {
        convert(decoded, &mut ready)?;
    }
    for batch in ready {
        if !hand_on(batch, budget, tx, stall).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgarrow::{plan_column, PgType};

    fn spec() -> ScanSpec {
        let int8 = PgType {
            oid: 20,
            typmod: -1,
            elem_oid: None,
            is_enum: false,
        };
        let inet = PgType {
            oid: 869,
            ..int8.clone()
        };
        ScanSpec {
            relation: QualifiedName::new("_timescaledb_internal", "_hyper_1_2_chunk"),
            only: false,
            through: None,
            with_tid: true,
            columns: vec![plan_column("read\"ing", &int8), plan_column("addr", &inet)],
            filter: Some(TimeFilter {
                dimension: TimeDimension {
                    column: "time".into(),
                    type_oid: 1184,
                },
                start: Some(1_000_000),
                end: None,
            }),
            blocks: None,
            resume_after: Some(Tid {
                block: 3,
                offset: 17,
            }),
            relfilenode: 1,
            snapshot: None,
            batch_rows: 10,
            statement_timeout: Duration::from_secs(1),
            stall_timeout: Duration::from_secs(1),
            compressed: None,
            predicate: None,
            query: None,
        }
    }

    #[test]
    fn copy_sql_quotes_casts_and_bounds() {
        assert_eq!(
            spec().copy_sql(),
            "COPY (SELECT ctid, \"read\"\"ing\", \"addr\"::text FROM \
             \"_timescaledb_internal\".\"_hyper_1_2_chunk\" WHERE ctid > '(3,17)'::tid AND \
             \"time\" >= (timestamptz 'epoch' + 1000000 * interval '1 microsecond')::timestamptz) \
             TO STDOUT (FORMAT binary)"
        );
    }

    #[test]
    fn block_ranges_bound_the_tid_scan() {
        let s = ScanSpec {
            blocks: Some((8, Some(16))),
            filter: None,
            ..spec()
        };
        assert!(s.copy_sql().contains(
            "WHERE ctid >= '(8,0)'::tid AND ctid < '(16,0)'::tid AND ctid > '(3,17)'::tid)"
        ));
        let open = ScanSpec {
            blocks: Some((0, None)),
            filter: None,
            resume_after: None,
            ..spec()
        };
        assert!(!open.copy_sql().contains("WHERE"));
    }

    #[test]
    fn predicates_and_queries() {
        let s = ScanSpec {
            predicate: Some("\"ok\" = true".into()),
            resume_after: None,
            ..spec()
        };
        assert!(s
            .copy_sql()
            .contains("microsecond')::timestamptz AND (\"ok\" = true))"));
        let q = ScanSpec {
            query: Some("SELECT 1, 'a'".into()),
            ..spec()
        };
        assert_eq!(
            q.copy_sql(),
            "COPY (SELECT c0, c1::text FROM (SELECT 1, 'a') AS q(c0, c1)) TO STDOUT (FORMAT binary)"
        );
    }

    #[test]
    fn plain_table_reads_only_itself() {
        let s = ScanSpec {
            only: true,
            with_tid: false,
            filter: None,
            resume_after: None,
            ..spec()
        };
        assert!(s.copy_sql().contains("FROM ONLY \"_timescaledb_internal\""));
        assert!(!s.copy_sql().contains("ctid"));
    }
}
