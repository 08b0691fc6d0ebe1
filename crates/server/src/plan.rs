//! Planning: a Flight descriptor becomes endpoints with signed tickets (one per chunk that overlaps the
//! requested range), and a verified ticket becomes a [`ScanSpec`] — but only for a relation that
//! discovery still exposes.

use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{Schema, SchemaRef};
use arrow_flight::{flight_descriptor::DescriptorType, FlightDescriptor};
use bytes::Bytes;
use protocol::{Bound, Command, EndpointKind, EndpointMetadata};

use crate::catalog::{Chunk, Compressed, QualifiedName, Snapshot, Table, TableKind, TimeDimension};
use crate::compressed::CompressedSource;
use crate::error::Error;
use crate::scan::{ScanSpec, TimeFilter};
use crate::ticket::{BlockRange, QueryColumn, TicketBody, TicketSigner, TimeBounds};
use pgarrow::{plan_column, ColumnPlan};

/// What a client asked for: a table, optionally some columns and a time window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRequest {
    /// The table.
    pub table: QualifiedName,
    /// Columns in the order wanted; `None` means all.
    pub columns: Option<Vec<String>>,
    /// Inclusive start of the window on the time dimension.
    pub start: Option<Bound>,
    /// Exclusive end.
    pub end: Option<Bound>,
    /// Every endpoint reads one exported snapshot.
    pub consistent_snapshot: bool,
    /// A Flight SQL scan's column predicates, SQL ANDed to every endpoint's row filter.
    pub predicate: Option<String>,
}

impl TableRequest {
    /// Parses a `PATH [schema, table]` or `CMD` (JSON) descriptor.
    pub fn from_descriptor(d: &FlightDescriptor) -> Result<TableRequest, Error> {
        match DescriptorType::try_from(d.r#type) {
            Ok(DescriptorType::Path) => match d.path.as_slice() {
                [schema, table] => Ok(TableRequest {
                    table: QualifiedName::new(schema, table),
                    columns: None,
                    start: None,
                    end: None,
                    consistent_snapshot: false,
                    predicate: None,
                }),
                _ => Err(Error::InvalidRequest(format!(
                    "a PATH descriptor is [schema, table]; got {} element(s)",
                    d.path.len()
                ))),
            },
            Ok(DescriptorType::Cmd) => Self::from_command(&d.cmd),
            _ => Err(Error::InvalidRequest(
                "descriptor type must be PATH or CMD".into(),
            )),
        }
    }

    fn from_command(cmd: &[u8]) -> Result<TableRequest, Error> {
        let c = Command::from_json(cmd).map_err(Error::InvalidRequest)?;
        let (schema, name) = c.table.parts().map_err(Error::InvalidRequest)?;
        Ok(TableRequest {
            table: QualifiedName::new(schema, name),
            columns: c.columns,
            start: c.start,
            end: c.end,
            consistent_snapshot: c.consistent_snapshot,
            predicate: None,
        })
    }
}

/// One planned endpoint.
#[derive(Debug, Clone)]
pub struct EndpointPlan {
    /// Signed ticket.
    pub ticket: Bytes,
    /// The endpoint's `app_metadata`.
    pub metadata: EndpointMetadata,
}

/// The result of planning one request.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Schema of every endpoint's batches.
    pub schema: SchemaRef,
    /// Endpoints in range order.
    pub endpoints: Vec<EndpointPlan>,
    /// Row estimate, -1 if unknown.
    pub total_records: i64,
    /// Byte estimate, -1 if unknown.
    pub total_bytes: i64,
    /// The relation each endpoint scans, in endpoint order.
    pub relations: Vec<QualifiedName>,
    /// Every endpoint reads a snapshot exported by this server, so only this server can read them.
    pub pinned: bool,
}

/// Turns requests into plans and tickets into scans.
#[derive(Debug, Clone)]
pub struct Planner {
    /// Signs and verifies tickets.
    pub signer: TicketSigner,
    /// Lifetime of issued tickets.
    pub ticket_ttl: Duration,
    /// Rows per batch, at most.
    pub batch_rows: usize,
    /// Heap blocks per endpoint of a plain table.
    pub endpoint_blocks: i64,
    /// Database-side limit on one scan.
    pub statement_timeout: Duration,
    /// How long a client may take no batch before its scan ends (`stalled_stream_seconds`).
    pub stall_timeout: Duration,
}

impl Planner {
    /// The exposed table named by the request.
    pub fn table<'a>(
        &self,
        snapshot: &'a Snapshot,
        name: &QualifiedName,
    ) -> Result<&'a Arc<Table>, Error> {
        snapshot.table(name).ok_or_else(|| {
            Error::UnknownTable(protocol::status::clip(&name.to_string()).into_owned())
        })
    }

    /// Output columns of a request, in order.
    pub fn columns(
        &self,
        table: &Table,
        wanted: Option<&[String]>,
    ) -> Result<Vec<ColumnPlan>, Error> {
        let plans = match wanted {
            None => table
                .columns
                .iter()
                .map(|c| plan_column(&c.name, &c.pg_type))
                .collect(),
            Some(names) => {
                let mut plans = Vec::with_capacity(names.len());
                for (i, name) in names.iter().enumerate() {
                    if names[..i].contains(name) {
                        return Err(Error::InvalidRequest(format!(
                            "column {:?} requested twice",
                            protocol::status::clip(name)
                        )));
                    }
                    let col = table
                        .columns
                        .iter()
                        .find(|c| &c.name == name)
                        .ok_or_else(|| {
                            Error::InvalidRequest(format!(
                                "unknown column {:?} in table {}",
                                protocol::status::clip(name),
                                table.name
                            ))
                        })?;
                    plans.push(plan_column(&col.name, &col.pg_type));
                }
                plans
            }
        };
        Ok(plans)
    }

    /// When tickets issued now expire, ms since the Unix epoch.
    pub fn expiry(&self, now_ms: i64) -> i64 {
        now_ms.saturating_add(self.ticket_ttl.as_millis() as i64)
    }

    /// Plans `req` against `snapshot`: schema, endpoints and estimates. Tickets expire at
    /// `expires_at_ms`, read the exported snapshot `db_snapshot`, if any, and carry the WAL position
    /// `wal_lsn` the plan was made at (see `fleet.rs`). `watermark` is a real-time continuous
    /// aggregate's materialization watermark, read for this plan.
    pub fn plan(
        &self,
        snapshot: &Snapshot,
        req: &TableRequest,
        expires_at_ms: i64,
        db_snapshot: Option<&str>,
        watermark: Option<i64>,
        wal_lsn: u64,
    ) -> Result<Plan, Error> {
        let table = self.table(snapshot, &req.table)?;
        let mut plan = Plan {
            schema: self.table_schema(table, req.columns.as_deref())?,
            endpoints: Vec::new(),
            total_records: 0,
            total_bytes: 0,
            relations: Vec::new(),
            pinned: db_snapshot.is_some(),
        };
        let body = TicketBody {
            table_schema: table.name.schema.clone(),
            table_name: table.name.name.clone(),
            columns: req.columns.clone().unwrap_or_default(),
            expires_at_ms,
            snapshot: db_snapshot.unwrap_or_default().to_string(),
            predicate: req.predicate.clone().unwrap_or_default(),
            wal_lsn,
            ..TicketBody::current()
        };
        match &table.kind {
            TableKind::Hypertable { dimension, chunks } => {
                let (start, end) = window(dimension, req)?;
                self.chunk_endpoints(
                    &mut plan,
                    &body,
                    dimension,
                    chunks,
                    (start, end),
                    EndpointKind::Chunk,
                );
            }
            TableKind::ContinuousAggregate {
                dimension,
                chunks,
                realtime,
                ..
            } => {
                let (start, end) = window(dimension, req)?;
                // Materialized rows lie below the watermark; the real-time part aggregates the rest.
                let wm = watermark.filter(|_| *realtime);
                let mat_end = match (end, wm) {
                    (Some(e), Some(w)) => Some(e.min(w)),
                    (e, w) => e.or(w),
                };
                self.chunk_endpoints(
                    &mut plan,
                    &body,
                    dimension,
                    chunks,
                    (start, mat_end),
                    EndpointKind::ContinuousAggregate,
                );
                if let Some(w) = wm {
                    let rt_start = start.map_or(w, |s| s.max(w));
                    if end.is_none_or(|e| rt_start < e) {
                        self.realtime_endpoint(&mut plan, &body, table, dimension, (rt_start, end));
                    }
                }
            }
            other => {
                if req.start.is_some() || req.end.is_some() {
                    return Err(Error::InvalidRequest(format!(
                        "{} has no time dimension: start/end need a hypertable or continuous aggregate",
                        table.name
                    )));
                }
                self.relation_endpoints(&mut plan, &body, table, other);
            }
        }
        Ok(plan)
    }

    /// One endpoint per chunk that overlaps `[start, end)`; chunks at the edges filter their rows.
    fn chunk_endpoints(
        &self,
        plan: &mut Plan,
        body: &TicketBody,
        dimension: &TimeDimension,
        chunks: &[Chunk],
        (start, end): (Option<i64>, Option<i64>),
        kind: EndpointKind,
    ) {
        for chunk in chunks
            .iter()
            .filter(|c| c.range_start < end.unwrap_or(i64::MAX))
            .filter(|c| c.range_end > start.unwrap_or(i64::MIN))
        {
            let inside = start.is_none_or(|s| chunk.range_start >= s)
                && end.is_none_or(|e| chunk.range_end <= e);
            let (compressed_schema, compressed_name) = match &chunk.compressed {
                Some(c) => (c.relation.schema.clone(), c.relation.name.clone()),
                None => Default::default(),
            };
            let body = TicketBody {
                scan_schema: chunk.name.schema.clone(),
                scan_name: chunk.name.name.clone(),
                relfilenode: chunk.relfilenode,
                compressed_schema,
                compressed_name,
                bounds: (!inside).then(|| TimeBounds {
                    column: dimension.column.clone(),
                    start,
                    end,
                }),
                ..body.clone()
            };
            let mut metadata = chunk_metadata(dimension, chunk);
            if kind != EndpointKind::Chunk {
                metadata.kind = kind;
            }
            self.push(plan, &chunk.name, &body, metadata);
        }
    }

    /// A real-time continuous aggregate's part above the watermark: the view itself, bounded.
    fn realtime_endpoint(
        &self,
        plan: &mut Plan,
        body: &TicketBody,
        table: &Table,
        dimension: &TimeDimension,
        (start, end): (i64, Option<i64>),
    ) {
        let body = TicketBody {
            scan_schema: table.name.schema.clone(),
            scan_name: table.name.name.clone(),
            relfilenode: table.relfilenode,
            bounds: Some(TimeBounds {
                column: dimension.column.clone(),
                start: Some(start),
                end,
            }),
            ..body.clone()
        };
        let metadata = EndpointMetadata {
            range_start: dimension.bound(start),
            range_end: end.and_then(|e| dimension.bound(e)),
            ..EndpointMetadata::new(EndpointKind::ContinuousAggregate, -1, -1)
        };
        self.push(plan, &table.name, &body, metadata);
    }

    /// Partitions, block ranges of a plain table, or the whole relation.
    fn relation_endpoints(
        &self,
        plan: &mut Plan,
        body: &TicketBody,
        table: &Table,
        kind: &TableKind,
    ) {
        // (relation, relfilenode, block range, size, estimated rows) per endpoint.
        let parts: Vec<(&QualifiedName, u32, Option<BlockRange>, i64, i64)> = match kind {
            TableKind::Partitioned { partitions } => partitions
                .iter()
                .map(|p| (&p.name, p.relfilenode, None, p.size_bytes, p.estimated_rows))
                .collect(),
            TableKind::Plain { blocks } => {
                let ranges = block_ranges(*blocks, self.endpoint_blocks);
                let n = ranges.len() as i64;
                let share = |v: i64| if v < 0 { v } else { v / n };
                ranges
                    .into_iter()
                    .map(|r| {
                        let r = (n > 1).then_some(r);
                        (
                            &table.name,
                            table.relfilenode,
                            r,
                            share(table.size_bytes),
                            share(table.estimated_rows),
                        )
                    })
                    .collect()
            }
            _ => vec![(
                &table.name,
                table.relfilenode,
                None,
                table.size_bytes,
                table.estimated_rows,
            )],
        };
        for (name, relfilenode, blocks, size_bytes, estimated_rows) in parts {
            let part_of_table = (name != &table.name).then(|| name.to_string());
            let kind = match (&part_of_table, blocks, kind) {
                (Some(_), _, _) => EndpointKind::Partition,
                (None, Some(_), _) => EndpointKind::BlockRange,
                (None, None, TableKind::View) => EndpointKind::View,
                (None, None, _) => EndpointKind::Table,
            };
            let metadata = EndpointMetadata {
                chunk: part_of_table,
                block_start: blocks.map(|b| b.start),
                block_end: blocks.and_then(|b| b.end),
                ..EndpointMetadata::new(kind, size_bytes, estimated_rows)
            };
            let body = TicketBody {
                scan_schema: name.schema.clone(),
                scan_name: name.name.clone(),
                relfilenode,
                blocks,
                ..body.clone()
            };
            self.push(plan, name, &body, metadata);
        }
    }

    fn push(
        &self,
        plan: &mut Plan,
        relation: &QualifiedName,
        body: &TicketBody,
        metadata: EndpointMetadata,
    ) {
        plan.relations.push(relation.clone());
        plan.total_records = add_estimate(plan.total_records, metadata.estimated_rows);
        plan.total_bytes = add_estimate(plan.total_bytes, metadata.size_bytes);
        plan.endpoints.push(EndpointPlan {
            ticket: self.signer.sign(body),
            metadata,
        });
    }

    /// A Flight SQL statement that PostgreSQL runs whole: one `query` endpoint, without resume
    /// tickets (a result row has no position to continue after).
    pub fn query_plan(
        &self,
        sql: &str,
        columns: Vec<QueryColumn>,
        expires_at_ms: i64,
        wal_lsn: u64,
    ) -> Plan {
        let mut plan = Plan {
            schema: query_schema(&columns),
            endpoints: Vec::new(),
            total_records: 0,
            total_bytes: 0,
            relations: Vec::new(),
            pinned: false,
        };
        let body = TicketBody {
            query: sql.to_string(),
            query_columns: columns,
            expires_at_ms,
            wal_lsn,
            ..TicketBody::current()
        };
        let metadata = EndpointMetadata::new(EndpointKind::Query, -1, -1);
        self.push(&mut plan, &query_relation(), &body, metadata);
        plan
    }

    /// The scan a verified ticket asks for, checked against what discovery exposes now, and the
    /// schema its stream shows (the same as GetFlightInfo's).
    pub fn resolve(
        &self,
        snapshot: &Snapshot,
        body: &TicketBody,
    ) -> Result<(ScanSpec, SchemaRef), Error> {
        if !body.query.is_empty() {
            return Ok(self.resolve_query(body));
        }
        let name = QualifiedName::new(&body.table_schema, &body.table_name);
        let table = self.table(snapshot, &name)?;
        let scanned = QualifiedName::new(&body.scan_schema, &body.scan_name);
        let not_part = || {
            Error::InvalidRequest(format!(
                "ticket names relation {scanned}, which is not part of {}",
                table.name
            ))
        };
        let wanted = (!body.columns.is_empty()).then_some(body.columns.as_slice());
        let mut compressed = None;
        let mut through = None;
        let mut chunk_range = None;
        let (only, mut with_tid, dimension) = match &table.kind {
            TableKind::Hypertable { dimension, chunks } => {
                let chunk = chunks
                    .iter()
                    .find(|c| c.name == scanned)
                    .ok_or_else(|| Error::ChunkGone(scanned.to_string()))?;
                compressed = self.compressed_source(table, chunk, dimension, wanted, body)?;
                if table.row_security {
                    // Through the hypertable, where the policies are; its chunk range lets
                    // TimescaleDB exclude the other chunks. A compressed chunk then has no ctids.
                    through = Some(table.name.clone());
                    chunk_range = Some((chunk.range_start, chunk.range_end));
                    let heap = compressed.take().is_none();
                    (false, heap, Some(dimension))
                } else {
                    (false, true, Some(dimension))
                }
            }
            // The real-time part: the view itself, an aggregate without positions.
            TableKind::ContinuousAggregate { dimension, .. } if scanned == table.name => {
                (false, false, Some(dimension))
            }
            TableKind::ContinuousAggregate {
                dimension, chunks, ..
            } => {
                let chunk = chunks
                    .iter()
                    .find(|c| c.name == scanned)
                    .ok_or_else(|| Error::ChunkGone(scanned.to_string()))?;
                compressed = self.compressed_source(table, chunk, dimension, wanted, body)?;
                (false, true, Some(dimension))
            }
            TableKind::View if scanned == table.name => (false, false, None),
            TableKind::Partitioned { partitions } => {
                let part = partitions
                    .iter()
                    .find(|p| p.name == scanned)
                    .ok_or_else(|| Error::ChunkGone(scanned.to_string()))?;
                if !part.readable {
                    // Granted on the parent only: read the leaf as the parent shows it.
                    through = Some(table.name.clone());
                }
                (true, part.has_heap, None)
            }
            TableKind::Plain { .. } if scanned == table.name => (true, true, None),
            // ctids of a root and its children collide: one pass, no positions.
            TableKind::HypertableRoot if scanned == table.name => (false, false, None),
            TableKind::Plain { .. } | TableKind::HypertableRoot | TableKind::View => {
                return Err(not_part())
            }
        };
        let predicate = (!body.predicate.is_empty()).then(|| body.predicate.clone());
        if predicate.is_some() && compressed.take().is_some() {
            // Column predicates cannot be applied to compressed batches as they are exploded: the
            // chunk is read through TimescaleDB in one pass, without positions (README, Flight SQL).
            tracing::info!(chunk = %scanned, "compressed chunk with column predicates read in one pass, without resume positions");
            with_tid = false;
        }
        let changed = |_| Error::Rewritten(format!("{} (its columns changed)", table.name));
        let columns = self.columns(table, wanted).map_err(changed)?;
        let schema = self.table_schema(table, wanted).map_err(changed)?;
        let db_snapshot = match body.snapshot.as_str() {
            "" => None,
            id if crate::snapshot::is_valid_id(id) => Some(id.to_string()),
            _ => {
                return Err(Error::InvalidRequest(
                    "malformed snapshot id in ticket".into(),
                ))
            }
        };
        let filter = match (&body.bounds, dimension) {
            (Some(b), Some(d)) if b.column == d.column => Some(TimeFilter {
                dimension: d.clone(),
                start: b.start,
                end: b.end,
            }),
            (None, _) => None,
            _ => {
                return Err(Error::Rewritten(format!(
                    "{} (its time dimension changed)",
                    table.name
                )))
            }
        };
        let filter = match (chunk_range, dimension) {
            (Some(range), Some(d)) => Some(within_chunk(filter, d, range)),
            _ => filter,
        };
        Ok((
            ScanSpec {
                relation: scanned,
                only,
                through,
                with_tid,
                columns,
                filter,
                resume_after: body.resume_after.as_ref().map(Into::into),
                relfilenode: body.relfilenode,
                blocks: body.blocks.map(|b| (b.start, b.end)),
                snapshot: db_snapshot,
                batch_rows: self.batch_rows,
                statement_timeout: self.statement_timeout,
                stall_timeout: self.stall_timeout,
                compressed,
                predicate,
                query: None,
            },
            schema,
        ))
    }

    /// The read of a `query` endpoint's ticket, with the columns it was planned with.
    fn resolve_query(&self, body: &TicketBody) -> (ScanSpec, SchemaRef) {
        let columns: Vec<ColumnPlan> = body.query_columns.iter().map(query_column_plan).collect();
        let schema = schema_of(&columns);
        let spec = ScanSpec {
            relation: query_relation(),
            only: false,
            through: None,
            with_tid: false,
            columns,
            filter: None,
            predicate: None,
            query: Some(body.query.clone()),
            blocks: None,
            resume_after: None,
            relfilenode: 0,
            snapshot: None,
            batch_rows: self.batch_rows,
            statement_timeout: self.statement_timeout,
            stall_timeout: self.stall_timeout,
            compressed: None,
        };
        (spec, schema)
    }

    /// For a compressed chunk, what its scan needs; the ticket must have been issued for the same
    /// compressed state (compressing, decompressing or converting a chunk voids its positions).
    fn compressed_source(
        &self,
        table: &Table,
        chunk: &Chunk,
        dimension: &TimeDimension,
        wanted: Option<&[String]>,
        body: &TicketBody,
    ) -> Result<Option<CompressedSource>, Error> {
        let issued_for = QualifiedName::new(&body.compressed_schema, &body.compressed_name);
        let rewritten =
            || Error::Rewritten(format!("{} (compressed or decompressed since)", chunk.name));
        let Some(c) = &chunk.compressed else {
            return if body.compressed_name.is_empty() {
                Ok(None)
            } else {
                Err(rewritten())
            };
        };
        if c.relation != issued_for {
            return Err(rewritten());
        }
        let typed = |name: &str| {
            table
                .columns
                .iter()
                .find(|col| col.name == name)
                .map(|col| (col.name.clone(), col.pg_type.clone()))
        };
        let columns = match wanted {
            None => table
                .columns
                .iter()
                .map(|c| (c.name.clone(), c.pg_type.clone()))
                .collect(),
            Some(names) => names.iter().filter_map(|n| typed(n)).collect(),
        };
        Ok(Some(CompressedSource {
            relation: c.relation.clone(),
            columns,
            time_column: typed(&dimension.column),
            resume: body
                .resume_batch
                .as_ref()
                .and_then(|p| p.batch.as_ref().map(|t| (t.into(), p.rows_done))),
        }))
    }
}

impl Planner {
    /// The schema a client is shown for `table` (ListFlights, GetFlightInfo, GetSchema): the
    /// columns wanted, with the table's facts in the metadata.
    pub fn table_schema(
        &self,
        table: &Table,
        wanted: Option<&[String]>,
    ) -> Result<SchemaRef, Error> {
        let columns = self.columns(table, wanted)?;
        let fields: Vec<_> = columns.iter().map(|c| c.field.clone()).collect();
        Ok(Arc::new(Schema::new_with_metadata(
            fields,
            table.facts().to_metadata(),
        )))
    }
}

/// `filter` narrowed to a chunk's range (open slice ends stay open): every row of the chunk lies in
/// its range, so this changes no result and lets TimescaleDB exclude other chunks.
fn within_chunk(
    filter: Option<TimeFilter>,
    dimension: &TimeDimension,
    (lo, hi): (i64, i64),
) -> TimeFilter {
    let bound = |v: i64| (v != i64::MIN && v != i64::MAX).then_some(v);
    let (lo, hi) = (bound(lo), bound(hi));
    let f = filter.unwrap_or(TimeFilter {
        dimension: dimension.clone(),
        start: None,
        end: None,
    });
    TimeFilter {
        start: f.start.max(lo),
        end: match (f.end, hi) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        },
        ..f
    }
}

/// What a `query` endpoint's read is called in logs and metrics.
fn query_relation() -> QualifiedName {
    QualifiedName::new("", "query")
}

/// How a `query` endpoint's column is decoded.
fn query_column_plan(c: &QueryColumn) -> ColumnPlan {
    plan_column(&c.name, &c.pg_type())
}

/// The Arrow schema of a `query` endpoint's batches.
pub fn query_schema(columns: &[QueryColumn]) -> SchemaRef {
    schema_of(&columns.iter().map(query_column_plan).collect::<Vec<_>>())
}

/// The Arrow schema of a list of column plans (the batches of DoGet).
pub fn schema_of(columns: &[ColumnPlan]) -> SchemaRef {
    Arc::new(Schema::new(
        columns.iter().map(|c| c.field.clone()).collect::<Vec<_>>(),
    ))
}

/// Endpoints per plain table, at most.
pub const MAX_BLOCK_RANGES: i64 = 64;

/// Splits `blocks` into contiguous ranges of about `per_endpoint` blocks (at most
/// [`MAX_BLOCK_RANGES`]); the last range is open so rows appended after planning are still read.
fn block_ranges(blocks: i64, per_endpoint: i64) -> Vec<BlockRange> {
    let per_endpoint = per_endpoint.max(1);
    let n = (blocks.max(0) + per_endpoint - 1) / per_endpoint;
    let n = n.clamp(1, MAX_BLOCK_RANGES);
    let per = ((blocks.max(0) + n - 1) / n).max(1);
    (0..n)
        .map(|i| BlockRange {
            start: (i * per).min(u32::MAX as i64) as u32,
            end: (i + 1 < n).then(|| ((i + 1) * per).min(u32::MAX as i64) as u32),
        })
        .collect()
}

fn add_estimate(total: i64, part: i64) -> i64 {
    if total < 0 || part < 0 {
        -1
    } else {
        total.saturating_add(part)
    }
}

fn chunk_metadata(dimension: &TimeDimension, chunk: &Chunk) -> EndpointMetadata {
    let kind = match &chunk.compressed {
        None => EndpointKind::Chunk,
        Some(c) if c.partial => EndpointKind::PartialChunk,
        Some(_) => EndpointKind::CompressedChunk,
    };
    EndpointMetadata {
        chunk: Some(chunk.name.to_string()),
        chunk_id: Some(chunk.id),
        range_start: dimension.bound(chunk.range_start),
        range_end: dimension.bound(chunk.range_end),
        is_compressed: chunk.compressed.is_some(),
        compression_ratio: chunk.compressed.as_ref().and_then(Compressed::ratio),
        ..EndpointMetadata::new(kind, chunk.size_bytes, chunk.estimated_rows)
    }
}

/// The request's window in the dimension's internal units.
fn window(dim: &TimeDimension, req: &TableRequest) -> Result<(Option<i64>, Option<i64>), Error> {
    let convert = |key: &str, b: &Option<Bound>| -> Result<Option<i64>, Error> {
        match (b, dim.is_integer()) {
            (None, _) => Ok(None),
            (Some(Bound::Integer(v)), true) => Ok(Some(*v)),
            (Some(Bound::Time(s)), false) => chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| Some(t.timestamp_micros()))
                .map_err(|e| {
                    Error::InvalidRequest(format!(
                        "{key}: {s:?} is not an RFC 3339 timestamp ({e})"
                    ))
                }),
            (Some(_), true) => Err(Error::InvalidRequest(format!(
                "{key}: time dimension {:?} is an integer column; give an integer",
                dim.column
            ))),
            (Some(_), false) => Err(Error::InvalidRequest(format!(
                "{key}: time dimension {:?} takes an RFC 3339 timestamp string",
                dim.column
            ))),
        }
    };
    let (start, end) = (convert("start", &req.start)?, convert("end", &req.end)?);
    if let (Some(s), Some(e)) = (start, end) {
        if s >= e {
            return Err(Error::InvalidRequest("start must be before end".into()));
        }
    }
    Ok((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2_000, .. ProptestConfig::default() })]
        #[test]
        fn arbitrary_commands_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = TableRequest::from_descriptor(&FlightDescriptor::new_cmd(bytes));
        }

        #[test]
        fn json_shaped_commands_never_panic(
            table in prop_oneof![Just("\"public.m\"".to_string()), "\"[^\"]{0,8}\"", Just("[\"a\",\"b\"]".to_string()), Just("7".to_string())],
            start in prop_oneof![Just("null".to_string()), "\"[0-9T:Z-]{0,24}\"", any::<i64>().prop_map(|v| v.to_string())],
            extra in prop_oneof![Just(String::new()), Just(", \"x\": 1".to_string()), Just(", \"columns\": []".to_string())],
        ) {
            let text = format!("{{\"table\": {table}, \"start\": {start}{extra}}}");
            let _ = TableRequest::from_descriptor(&FlightDescriptor::new_cmd(text.into_bytes()));
        }
    }

    fn cmd(json: &str) -> Result<TableRequest, Error> {
        TableRequest::from_descriptor(&FlightDescriptor::new_cmd(json.as_bytes().to_vec()))
    }

    #[test]
    fn path_and_cmd_descriptors() {
        let r = TableRequest::from_descriptor(&FlightDescriptor::new_path(vec![
            "public".into(),
            "metrics".into(),
        ]))
        .unwrap();
        assert_eq!(r.table, QualifiedName::new("public", "metrics"));
        let r = cmd(r#"{"table": ["My Schema", "My \"Table\""], "columns": ["time"], "start": "2026-10-03T00:00:00Z"}"#)
            .unwrap();
        assert_eq!(r.table, QualifiedName::new("My Schema", "My \"Table\""));
        assert_eq!(r.columns, Some(vec!["time".to_string()]));
        assert_eq!(r.start, Some(Bound::Time("2026-10-03T00:00:00Z".into())));
        assert_eq!(
            cmd(r#"{"table": "public.m", "end": 10}"#).unwrap().end,
            Some(Bound::Integer(10))
        );
    }

    #[test]
    fn bad_descriptors_are_invalid_requests() {
        for bad in [
            r#"{"table": "public.m", "colums": []}"#,
            r#"{"table": "nodot"}"#,
            r#"{"table": "public.m", "columns": []}"#,
            r#"{"table": ["a"]}"#,
            r#"not json"#,
            r#"{"table": "public.m", "consistent_snapshot": 1}"#,
        ] {
            assert!(matches!(cmd(bad), Err(Error::InvalidRequest(_))), "{bad}");
        }
        let d = FlightDescriptor::new_path(vec!["only-one".into()]);
        assert!(matches!(
            TableRequest::from_descriptor(&d),
            Err(Error::InvalidRequest(_))
        ));
    }

    #[test]
    fn block_ranges_cover_the_heap_and_stay_open_at_the_end() {
        let r = block_ranges(0, 100);
        assert_eq!(
            r,
            vec![BlockRange {
                start: 0,
                end: None
            }]
        );
        let r = block_ranges(100 * 3 - 5, 100);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].start, 0);
        assert_eq!(r[0].end, Some(r[1].start));
        assert_eq!(r[1].end, Some(r[2].start));
        assert_eq!(r[2].end, None);
        assert_eq!(
            block_ranges(i64::from(u32::MAX), 100).len() as i64,
            MAX_BLOCK_RANGES
        );
    }

    #[test]
    fn windows_follow_the_dimension_type() {
        let time = TimeDimension {
            column: "time".into(),
            type_oid: 1184,
        };
        let int = TimeDimension {
            column: "t".into(),
            type_oid: 20,
        };
        let req = |s: Option<Bound>, e: Option<Bound>| TableRequest {
            table: QualifiedName::new("a", "b"),
            columns: None,
            start: s,
            end: e,
            consistent_snapshot: false,
            predicate: None,
        };
        let t = |s: &str| Some(Bound::Time(s.into()));
        assert_eq!(
            window(&time, &req(t("1970-01-01T00:00:01Z"), None)).unwrap(),
            (Some(1_000_000), None)
        );
        assert!(window(&time, &req(t("yesterday"), None)).is_err());
        assert!(window(&time, &req(Some(Bound::Integer(1)), None)).is_err());
        assert!(window(&int, &req(t("1970-01-01T00:00:01Z"), None)).is_err());
        assert_eq!(
            window(&int, &req(Some(Bound::Integer(5)), Some(Bound::Integer(9)))).unwrap(),
            (Some(5), Some(9))
        );
        assert!(window(&int, &req(Some(Bound::Integer(9)), Some(Bound::Integer(9)))).is_err());
    }
}
