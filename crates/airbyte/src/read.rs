//! `read`: every configured stream in turn; within a stream, its endpoints (chunks) in parallel.
//!
//! Per stream: TRACE STARTED → GetSchema → GetFlightInfo (CMD with the selected columns and, for
//! an incremental hypertable, `start` = saved cursor) → the endpoints not completed by an earlier
//! attempt, the in-progress ones from their saved resume ticket, up to
//! `timescaledb_max_concurrent_chunks` DoGets at once. Each batch is filtered (incremental: cursor
//! strictly greater than the saved one) and encoded into RECORD lines on a blocking thread, then
//! sent to the one writer thread, which owns stdout and the stream's [`StreamState`]: it writes the
//! lines, notes the batch's resume ticket, and writes a STATE (then flushes) every
//! [`STATE_EVERY_BATCHES`] batches and whenever an endpoint is done. A STATE therefore covers exactly
//! the records before it. At the end: the final STATE and TRACE COMPLETE — or, on failure, a last
//! STATE, TRACE INCOMPLETE and TRACE ERROR, and the read goes on with the next stream.
//!
//! A saved resume ticket the service refuses (expired, signed with another key, or the chunk was
//! rewritten: INVALID_ARGUMENT / FAILED_PRECONDITION) makes that chunk be read again from its start,
//! with a LOG saying its earlier rows are delivered twice.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type, Schema};
use arrow_flight::decode::DecodedPayload;
use arrow_flight::{FlightClient, FlightDescriptor, Ticket};
use base64::Engine;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::config::SourceConfig;
use crate::database::{Database, TableKey};
use crate::discover::{warn_unknown_keys, TableFacts};
use crate::flight::FlightSource;
use crate::output::Output;
use crate::messages::{
    now_ms, ConfiguredCatalog, ConfiguredStream, FailureType, Level, Message, SourceStats,
    StateMessage, StreamDescriptor, StreamStateMessage, StreamStatus, SyncMode,
};
use crate::record::RecordEncoder;
use crate::state::{self, CursorKind, StreamState};
use crate::{read_json, Error};

/// A STATE after this many batches of a stream without one (besides one per finished endpoint).
pub const STATE_EVERY_BATCHES: u32 = 2;

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// Record buffers kept for reuse, and the largest kept.
const POOLED_BUFFERS: usize = 16;
const POOLED_BUFFER_BYTES: usize = 64 << 20;

/// RECORD buffers handed back by the writer: reusing them spares the allocator and the page
/// faults of fresh multi-megabyte buffers for every batch.
#[derive(Clone, Default)]
struct Buffers(Arc<Mutex<Vec<Vec<u8>>>>);

impl Buffers {
    fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .ok()
            .and_then(|mut v| v.pop())
            .unwrap_or_default()
    }

    fn give(&self, mut buffer: Vec<u8>) {
        if buffer.capacity() > POOLED_BUFFER_BYTES {
            return;
        }
        buffer.clear();
        if let Ok(mut v) = self.0.lock() {
            if v.len() < POOLED_BUFFERS {
                v.push(buffer);
            }
        }
    }
}

/// Runs `read`.
pub async fn run(
    config: &Path,
    catalog: &Path,
    state: Option<&Path>,
    out: &mut Output,
) -> Result<(), Error> {
    let config = SourceConfig::load(config)?;
    config.ensure_supported()?;
    let catalog: ConfiguredCatalog = read_json("catalog", catalog)?;
    let saved = match state {
        Some(path) => state::load(path)?,
        None => HashMap::new(),
    };
    warn_unknown_keys(&config, out)?;
    // Connecting first turns bad credentials into a readable config error (through the Flight
    // service they would arrive as a bare "database error").
    let db = Database::connect(&config).await?;
    let facts = TableFacts {
        time_columns: if config.timescaledb.support
            && catalog
                .streams
                .iter()
                .any(|s| s.sync_mode == SyncMode::Incremental)
        {
            db.time_dimensions().await?
        } else {
            HashMap::new()
        },
        primary_keys: HashMap::new(),
    };
    drop(db);
    let source = FlightSource::start(&config).await?;

    // The writer thread owns stdout for the read and hands it back at the end.
    let owned = std::mem::replace(out, Output::new(Box::new(std::io::sink())));
    let (tx, rx) = mpsc::channel(config.timescaledb.max_concurrent_chunks.max(2));
    let buffers = Buffers::default();
    let returned = buffers.clone();
    let writer = std::thread::Builder::new()
        .name("airbyte-writer".into())
        .spawn(move || write_loop(rx, owned, returned))
        .map_err(|e| Error::Server(format!("cannot start the writer thread: {e}")))?;

    let reader = Reader {
        source: &source,
        facts: &facts,
        parallel: config.timescaledb.max_concurrent_chunks,
        tx,
        buffers,
    };
    let result = reader.read_all(&catalog, saved).await;
    drop(reader);
    let joined = tokio::task::spawn_blocking(move || writer.join()).await;
    source.shutdown().await;
    match joined {
        Ok(Ok((returned, written))) => {
            *out = returned;
            written?;
        }
        _ => return Err(Error::Server("the writer thread panicked".into())),
    }
    result
}

/// What the writer thread is told, in order.
enum Event {
    /// Write this message as is.
    Message(Message),
    /// A stream's endpoints are planned: its bookkeeping from now on.
    Begin(Box<Book>),
    /// Records of endpoint `index`, and the resume ticket after them.
    Records {
        index: usize,
        lines: Vec<u8>,
        rows: u64,
        resume: Bytes,
        cursor_max: Option<i64>,
    },
    /// Endpoint `index` was read to its end.
    EndpointDone { index: usize },
    /// The stream ended.
    End {
        descriptor: StreamDescriptor,
        result: Result<(), Error>,
    },
}

/// The writer's view of the stream being read.
struct Book {
    descriptor: StreamDescriptor,
    state: StreamState,
    /// Endpoint keys by index.
    keys: Vec<String>,
    cursor: Option<CursorKind>,
    /// The pass's lower bound (incremental).
    lower: Option<i64>,
    /// Highest cursor written by the pass.
    pass_max: Option<i64>,
    records_since_state: u64,
    batches_since_state: u32,
    running: bool,
}

impl Book {
    fn records(
        &mut self,
        out: &mut Output,
        index: usize,
        lines: &[u8],
        rows: u64,
        resume: &Bytes,
        cursor_max: Option<i64>,
    ) -> std::io::Result<()> {
        if !self.running && rows > 0 {
            out.message(&Message::status(&self.descriptor, StreamStatus::Running))?;
            self.running = true;
        }
        out.lines(lines)?;
        let ticket = (!resume.is_empty()).then(|| BASE64.encode(resume));
        self.state
            .in_progress
            .insert(self.keys[index].clone(), ticket);
        self.records_since_state += rows;
        if let Some(m) = cursor_max {
            self.pass_max = Some(self.pass_max.map_or(m, |p| p.max(m)));
        }
        self.batches_since_state += 1;
        if self.batches_since_state >= STATE_EVERY_BATCHES {
            self.checkpoint(out)?;
        }
        Ok(())
    }

    fn endpoint_done(&mut self, out: &mut Output, index: usize) -> std::io::Result<()> {
        let key = &self.keys[index];
        self.state.in_progress.remove(key);
        if !self.state.completed_chunks.contains(key) {
            self.state.completed_chunks.push(key.clone());
        }
        self.checkpoint(out)
    }

    /// The pass is complete: the cursor moves up, the pass fields empty out.
    fn finish(&mut self, out: &mut Output) -> std::io::Result<()> {
        if let Some(kind) = self.cursor {
            let top = match (self.lower, self.pass_max) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            self.state.cursor = top.map(|v| kind.to_json(v));
            self.lower = top;
        }
        self.pass_max = None;
        self.state.completed_chunks.clear();
        self.state.in_progress.clear();
        self.checkpoint(out)?;
        out.message(&Message::status(&self.descriptor, StreamStatus::Complete))
    }

    /// Writes the STATE covering everything written so far, and makes it visible.
    fn checkpoint(&mut self, out: &mut Output) -> std::io::Result<()> {
        if let Some(kind) = self.cursor {
            self.state.pass_cursor = self.pass_max.map(|v| kind.to_json(v));
        }
        let message = Message::State {
            state: StateMessage {
                kind: "STREAM",
                stream: StreamStateMessage {
                    stream_descriptor: self.descriptor.clone(),
                    stream_state: serde_json::to_value(&self.state)?,
                },
                source_stats: SourceStats {
                    record_count: self.records_since_state as f64,
                },
            },
        };
        out.message(&message)?;
        out.flush()?;
        self.records_since_state = 0;
        self.batches_since_state = 0;
        Ok(())
    }
}

/// The writer thread: the only code that touches stdout during a read.
fn write_loop(
    mut rx: mpsc::Receiver<Event>,
    mut out: Output,
    buffers: Buffers,
) -> (Output, std::io::Result<()>) {
    let mut book: Option<Box<Book>> = None;
    let mut step = |event: Event, out: &mut Output| -> std::io::Result<()> {
        match event {
            Event::Message(m) => out.message(&m),
            Event::Begin(b) => {
                book = Some(b);
                Ok(())
            }
            Event::Records {
                index,
                lines,
                rows,
                resume,
                cursor_max,
            } => {
                let written = match book.as_mut() {
                    Some(b) => b.records(out, index, &lines, rows, &resume, cursor_max),
                    None => Ok(()),
                };
                buffers.give(lines);
                written
            }
            Event::EndpointDone { index } => match book.as_mut() {
                Some(b) => b.endpoint_done(out, index),
                None => Ok(()),
            },
            Event::End { descriptor, result } => {
                let mut b = book.take().filter(|b| b.descriptor == descriptor);
                match result {
                    Ok(()) => match b.as_mut() {
                        Some(b) => b.finish(out)?,
                        None => {
                            out.message(&Message::status(&descriptor, StreamStatus::Complete))?
                        }
                    },
                    Err(e) => {
                        if let Some(b) = b.as_mut() {
                            b.checkpoint(out)?;
                        }
                        out.message(&Message::status(&descriptor, StreamStatus::Incomplete))?;
                        out.message(&Message::error(&e, Some(&descriptor)))?;
                    }
                }
                out.flush()
            }
        }
    };
    while let Some(event) = rx.blocking_recv() {
        if let Err(e) = step(event, &mut out) {
            return (out, Err(e));
        }
    }
    let flushed = out.flush();
    (out, flushed)
}

/// The error when the writer thread has stopped (stdout failed).
fn writer_gone() -> Error {
    Error::Output(std::io::Error::new(
        std::io::ErrorKind::BrokenPipe,
        "the output writer stopped",
    ))
}

/// The read of all streams.
struct Reader<'a> {
    source: &'a FlightSource,
    facts: &'a TableFacts,
    parallel: usize,
    tx: mpsc::Sender<Event>,
    buffers: Buffers,
}

impl Reader<'_> {
    async fn send(&self, event: Event) -> Result<(), Error> {
        self.tx.send(event).await.map_err(|_| writer_gone())
    }

    async fn log(&self, level: Level, message: String) -> Result<(), Error> {
        self.send(Event::Message(Message::log(level, message)))
            .await
    }

    async fn read_all(
        &self,
        catalog: &ConfiguredCatalog,
        mut saved: HashMap<StreamDescriptor, Value>,
    ) -> Result<(), Error> {
        let mut failed: Vec<(String, FailureType)> = Vec::new();
        let clients = ClientPool::default();
        for configured in &catalog.streams {
            let descriptor = configured.stream.descriptor();
            self.send(Event::Message(Message::status(
                &descriptor,
                StreamStatus::Started,
            )))
            .await?;
            let blob = saved.remove(&descriptor);
            let result = self.read_stream(configured, blob, &clients).await;
            if let Err(Error::Output(e)) = result {
                return Err(Error::Output(e));
            }
            if let Err(e) = &result {
                failed.push((descriptor.to_string(), e.failure_type()));
            }
            self.send(Event::End { descriptor, result }).await?;
        }
        if failed.is_empty() {
            return Ok(());
        }
        let worst = [
            FailureType::SystemError,
            FailureType::TransientError,
            FailureType::ConfigError,
        ]
        .into_iter()
        .find(|t| failed.iter().any(|(_, f)| f == t))
        .unwrap_or(FailureType::SystemError);
        Err(Error::Incomplete {
            streams: failed.into_iter().map(|(s, _)| s).collect(),
            failure_type: worst,
        })
    }

    async fn read_stream(
        &self,
        configured: &ConfiguredStream,
        blob: Option<Value>,
        clients: &ClientPool,
    ) -> Result<(), Error> {
        let descriptor = configured.stream.descriptor();
        let Some(namespace) = descriptor.namespace.clone() else {
            return Err(Error::Catalog(format!(
                "stream {} has no namespace; hyperflight streams are named by schema (namespace) and table",
                descriptor.name
            )));
        };
        let table: TableKey = (namespace, descriptor.name.clone());
        let mut control = clients.take(self.source).await?;
        let schema = control
            .get_schema(FlightDescriptor::new_path(vec![
                table.0.clone(),
                table.1.clone(),
            ]))
            .await
            .map_err(|e| match Error::flight(format!("GetSchema {descriptor}"), e) {
                e if e.code() == Some(tonic::Code::NotFound) => Error::Catalog(format!(
                    "table {descriptor} is not exposed any more (dropped, renamed, or not readable by this role): refresh the source schema"
                )),
                e => e,
            })?;
        let plan = self
            .plan_stream(configured, &descriptor, &schema, blob)
            .await?;

        let descriptor_json = FlightDescriptor::new_cmd(plan.command.to_string());
        let info = control
            .get_flight_info(descriptor_json)
            .await
            .map_err(|e| Error::flight(format!("GetFlightInfo {descriptor}"), e))?;
        clients.give_back(control);
        let batch_schema = info
            .clone()
            .try_decode_schema()
            .map_err(|e| Error::Protocol {
                context: format!("GetFlightInfo {descriptor}"),
                message: format!("undecodable schema: {e}"),
            })?;
        let index_of = |name: &str| {
            batch_schema.index_of(name).map_err(|_| Error::Protocol {
                context: format!("GetFlightInfo {descriptor}"),
                message: format!("column {name:?} missing from the planned schema"),
            })
        };
        let emit = plan
            .emitted
            .iter()
            .map(|n| index_of(n))
            .collect::<Result<Vec<_>, _>>()?;
        let cursor_index = match &plan.cursor {
            Some(c) => Some(index_of(&c.column)?),
            None => None,
        };

        // Endpoints: skip completed ones, resume in-progress ones from their saved ticket.
        let mut state = plan.state;
        let table_name = format!("{}.{}", table.0, table.1);
        let mut keys: Vec<String> = Vec::with_capacity(info.endpoint.len());
        let mut works = Vec::new();
        let (mut skipped, mut resumed) = (0usize, 0usize);
        for (index, endpoint) in info.endpoint.iter().enumerate() {
            let mut key = endpoint_key(&table_name, &endpoint.app_metadata, index);
            if keys.contains(&key) {
                key = format!("{key}#{index}");
            }
            keys.push(key.clone());
            let planned = endpoint
                .ticket
                .as_ref()
                .map(|t| t.ticket.clone())
                .ok_or_else(|| Error::Protocol {
                    context: format!("GetFlightInfo {descriptor}"),
                    message: format!("endpoint {key} has no ticket"),
                })?;
            if state.completed_chunks.contains(&key) {
                skipped += 1;
                continue;
            }
            let saved = match state.in_progress.get(&key) {
                Some(Some(b64)) => match BASE64.decode(b64) {
                    Ok(t) => Some(Bytes::from(t)),
                    Err(_) => {
                        self.log(Level::Warn, format!("{descriptor}: the saved resume ticket of {key} is not base64; reading it again from its start (its rows already delivered are delivered again)")).await?;
                        None
                    }
                },
                Some(None) => {
                    self.log(Level::Warn, format!("{descriptor}: {key} was interrupted where no resume position exists (e.g. a compressed chunk); reading it again from its start (its rows already delivered are delivered again)")).await?;
                    None
                }
                None => None,
            };
            let work = match saved {
                Some(ticket) => {
                    resumed += 1;
                    Work {
                        index,
                        key,
                        ticket,
                        fallback: Some(planned),
                    }
                }
                None => Work {
                    index,
                    key,
                    ticket: planned,
                    fallback: None,
                },
            };
            works.push(work);
        }
        let stale: Vec<String> = state
            .in_progress
            .keys()
            .filter(|k| !keys.contains(k))
            .cloned()
            .collect();
        for k in stale {
            state.in_progress.remove(&k);
            self.log(Level::Warn, format!("{descriptor}: {k} was in progress but is no longer planned (dropped, or the table's layout changed); its remaining rows, if any, are read through the current plan")).await?;
        }
        if skipped > 0 || resumed > 0 {
            self.log(
                Level::Info,
                format!(
                    "{descriptor}: resuming: {skipped} of {} endpoint(s) already complete, {resumed} continued from a resume ticket",
                    keys.len()
                ),
            )
            .await?;
        }
        let book = Book {
            descriptor: descriptor.clone(),
            state,
            keys,
            cursor: plan.cursor.as_ref().map(|c| c.kind),
            lower: plan.lower,
            pass_max: plan.pass_max,
            records_since_state: 0,
            batches_since_state: 0,
            running: false,
        };
        self.send(Event::Begin(Box::new(book))).await?;

        let chunk = Arc::new(ChunkReader {
            descriptor: descriptor.clone(),
            encoder: RecordEncoder::new(&descriptor, &batch_schema, &emit),
            cursor_index,
            lower: plan.lower,
            tx: self.tx.clone(),
            buffers: self.buffers.clone(),
        });
        futures::stream::iter(works)
            .map(|w| {
                let chunk = chunk.clone();
                async move { chunk.read(w, clients, self.source).await }
            })
            .buffer_unordered(self.parallel)
            .try_for_each(|()| async { Ok(()) })
            .await
    }

    /// Columns, cursor and the state to continue from.
    async fn plan_stream(
        &self,
        configured: &ConfiguredStream,
        descriptor: &StreamDescriptor,
        schema: &Schema,
        blob: Option<Value>,
    ) -> Result<StreamPlan, Error> {
        let table: TableKey = (
            descriptor.namespace.clone().unwrap_or_default(),
            descriptor.name.clone(),
        );
        let selected: Option<HashSet<String>> = configured
            .stream
            .selected_columns()
            .map(|c| c.into_iter().collect());
        let emitted: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|n| selected.as_ref().is_none_or(|s| s.contains(n)))
            .collect();
        if let Some(selected) = &selected {
            let mut gone: Vec<&String> = selected.iter().filter(|c| !emitted.contains(c)).collect();
            if !gone.is_empty() {
                gone.sort();
                self.log(
                    Level::Warn,
                    format!("{descriptor}: selected column(s) no longer in the table are skipped: {gone:?}"),
                )
                .await?;
            }
        }
        if emitted.is_empty() {
            return Err(Error::Catalog(format!(
                "{descriptor}: none of the selected columns exists in the table; refresh the source schema"
            )));
        }
        let cursor = match configured.sync_mode {
            SyncMode::FullRefresh => None,
            SyncMode::Incremental => {
                let time_column = self.facts.time_column(&table, schema);
                let pushdown = time_column.is_some();
                let column = match (time_column, configured.cursor_field.as_deref()) {
                    (Some(t), _) => t,
                    (None, Some([c])) => c.clone(),
                    (None, Some(path)) if !path.is_empty() => {
                        return Err(Error::Catalog(format!(
                            "{descriptor}: cursor field {path:?} is a nested path; use a top-level column"
                        )))
                    }
                    (None, _) => {
                        return Err(Error::Catalog(format!(
                            "{descriptor}: incremental sync of a plain table needs a cursor field (an integer, date or timestamp column)"
                        )))
                    }
                };
                let field = schema.field_with_name(&column).map_err(|_| {
                    Error::Catalog(format!(
                        "{descriptor}: cursor field {column:?} is not a column of the table"
                    ))
                })?;
                let kind = CursorKind::of(field.data_type()).ok_or_else(|| {
                    Error::Catalog(format!(
                        "{descriptor}: column {column:?} ({}) cannot be a cursor; use an integer, date or timestamp column",
                        field.data_type()
                    ))
                })?;
                Some(Cursor {
                    column,
                    kind,
                    pushdown,
                })
            }
        };
        let mut requested = emitted.clone();
        if let Some(c) = &cursor {
            if !requested.contains(&c.column) {
                requested.push(c.column.clone());
            }
        }
        let fresh = StreamState::new(
            configured.sync_mode,
            requested.clone(),
            cursor.as_ref().map(|c| c.column.clone()),
        );
        let state = match blob
            .map(|b| state::parse(descriptor, b))
            .transpose()?
            .flatten()
        {
            None => fresh,
            Some(s)
                if s.sync_mode == fresh.sync_mode
                    && s.columns == fresh.columns
                    && s.cursor_field == fresh.cursor_field =>
            {
                s
            }
            Some(s) => {
                if s.in_pass() {
                    self.log(Level::Info, format!("{descriptor}: the saved state is for another sync mode, column selection or cursor; starting a new pass")).await?;
                }
                // The cursor survives a change of columns, as long as it is the same cursor.
                let keep_cursor = s.sync_mode == SyncMode::Incremental
                    && fresh.sync_mode == SyncMode::Incremental
                    && s.cursor_field == fresh.cursor_field;
                StreamState {
                    cursor: if keep_cursor { s.cursor } else { None },
                    ..fresh
                }
            }
        };
        let read_cursor = |v: &Option<Value>, what: &str| -> Result<Option<i64>, Error> {
            match (&cursor, v) {
                (Some(c), Some(v)) => c.kind.from_json(v).map(Some).ok_or_else(|| {
                    Error::State(format!(
                        "{descriptor}: the saved {what} {v} is not a value of cursor column {:?}; reset the stream",
                        c.column
                    ))
                }),
                _ => Ok(None),
            }
        };
        let lower = read_cursor(&state.cursor, "cursor")?;
        let pass_max = read_cursor(&state.pass_cursor, "pass cursor")?;
        let mut command = json!({
            "table": [table.0, table.1],
            "columns": requested,
        });
        if let (Some(c), Some(l)) = (&cursor, lower) {
            if c.pushdown {
                if let Some(start) = c.kind.start_bound(l) {
                    command["start"] = start;
                }
            }
        }
        Ok(StreamPlan {
            emitted,
            cursor,
            state,
            lower,
            pass_max,
            command,
        })
    }
}

/// The incremental cursor of a stream.
struct Cursor {
    column: String,
    kind: CursorKind,
    /// It is the hypertable's time dimension: the saved cursor prunes chunks (CMD `start`).
    pushdown: bool,
}

/// A stream ready to plan with the Flight service.
struct StreamPlan {
    /// Columns written to records, in table order.
    emitted: Vec<String>,
    cursor: Option<Cursor>,
    state: StreamState,
    lower: Option<i64>,
    pass_max: Option<i64>,
    /// The CMD descriptor's JSON.
    command: Value,
}

/// One endpoint to read.
struct Work {
    index: usize,
    key: String,
    ticket: Bytes,
    /// The planned ticket, when `ticket` is a saved resume ticket that may be refused.
    fallback: Option<Bytes>,
}

/// The endpoint key of the state: the chunk (or partition) name, else the table with its block
/// range, else the table.
fn endpoint_key(table: &str, metadata: &[u8], index: usize) -> String {
    let m: Value = serde_json::from_slice(metadata).unwrap_or(Value::Null);
    if let Some(chunk) = m.get("chunk").and_then(Value::as_str) {
        return chunk.to_string();
    }
    match m.get("block_start").and_then(Value::as_u64) {
        Some(start) => {
            let end = m
                .get("block_end")
                .and_then(Value::as_u64)
                .map(|e| e.to_string())
                .unwrap_or_default();
            format!("{table}[blocks {start}..{end}]")
        }
        None if index == 0 => table.to_string(),
        None => format!("{table}#{index}"),
    }
}

/// Flight clients, one connection each, reused across endpoints and streams.
#[derive(Default)]
struct ClientPool(Mutex<Vec<FlightClient>>);

impl ClientPool {
    async fn take(&self, source: &FlightSource) -> Result<FlightClient, Error> {
        let pooled = self.0.lock().map(|mut v| v.pop()).unwrap_or(None);
        match pooled {
            Some(c) => Ok(c),
            None => source.client().await,
        }
    }

    fn give_back(&self, client: FlightClient) {
        if let Ok(mut v) = self.0.lock() {
            v.push(client);
        }
    }
}

/// Reads endpoints of one stream.
struct ChunkReader {
    descriptor: StreamDescriptor,
    encoder: RecordEncoder,
    cursor_index: Option<usize>,
    lower: Option<i64>,
    tx: mpsc::Sender<Event>,
    buffers: Buffers,
}

/// A failed endpoint read, and whether any of its batches reached the writer.
struct Failure {
    error: Error,
    delivered: bool,
}

impl ChunkReader {
    async fn read(
        self: Arc<Self>,
        work: Work,
        clients: &ClientPool,
        source: &FlightSource,
    ) -> Result<(), Error> {
        let mut client = clients.take(source).await?;
        let mut ticket = work.ticket.clone();
        let mut fallback = work.fallback.clone();
        loop {
            match self.stream(&mut client, &work, ticket).await {
                Ok(()) => break,
                Err(Failure {
                    error,
                    delivered: false,
                }) if fallback.is_some()
                    && matches!(
                        error.code(),
                        Some(tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition)
                    ) =>
                {
                    self.log(Level::Warn, format!(
                        "{}: the saved resume ticket of {} was refused ({error}); reading it again from its start: its rows delivered before the interruption are delivered again",
                        self.descriptor, work.key
                    ))
                    .await?;
                    ticket = fallback.take().unwrap_or_default();
                }
                Err(Failure {
                    error,
                    delivered: false,
                }) if error.code() == Some(tonic::Code::NotFound) => {
                    self.log(
                        Level::Warn,
                        format!(
                            "{}: {} no longer exists (dropped since it was planned); skipped",
                            self.descriptor, work.key
                        ),
                    )
                    .await?;
                    break;
                }
                Err(f) => return Err(f.error),
            }
        }
        clients.give_back(client);
        self.tx
            .send(Event::EndpointDone { index: work.index })
            .await
            .map_err(|_| writer_gone())
    }

    async fn log(&self, level: Level, message: String) -> Result<(), Error> {
        self.tx
            .send(Event::Message(Message::log(level, message)))
            .await
            .map_err(|_| writer_gone())
    }

    /// DoGet of `ticket`: every batch filtered, encoded and sent to the writer.
    async fn stream(
        self: &Arc<Self>,
        client: &mut FlightClient,
        work: &Work,
        ticket: Bytes,
    ) -> Result<(), Failure> {
        let context = || format!("DoGet {} ({})", self.descriptor, work.key);
        let mut delivered = false;
        let fail = |error: Error, delivered: bool| Failure { error, delivered };
        let mut data = client
            .do_get(Ticket::new(ticket))
            .await
            .map_err(|e| fail(Error::flight(context(), e), false))?
            .into_inner();
        while let Some(item) = data
            .try_next()
            .await
            .map_err(|e| fail(Error::flight(context(), e), delivered))?
        {
            let DecodedPayload::RecordBatch(batch) = item.payload else {
                continue;
            };
            let resume = item.inner.app_metadata;
            let this = self.clone();
            // JSON encoding is CPU-bound: off the async workers, which also run the in-process
            // Flight service.
            let (lines, rows, cursor_max) = tokio::task::spawn_blocking(move || this.encode(batch))
                .await
                .map_err(|e| fail(Error::Encode(e.to_string()), delivered))?
                .map_err(|e| fail(e, delivered))?;
            self.tx
                .send(Event::Records {
                    index: work.index,
                    lines,
                    rows,
                    resume,
                    cursor_max,
                })
                .await
                .map_err(|_| fail(writer_gone(), delivered))?;
            delivered = true;
        }
        Ok(())
    }

    /// Filters (incremental) and encodes one batch: RECORD lines, their count, the highest cursor.
    fn encode(&self, batch: RecordBatch) -> Result<(Vec<u8>, u64, Option<i64>), Error> {
        let (batch, cursor_max) = match self.cursor_index {
            Some(i) => filter_after(batch, i, self.lower)?,
            None => (batch, None),
        };
        let mut lines = self.buffers.take();
        self.encoder.encode(&batch, now_ms(), &mut lines)?;
        Ok((lines, batch.num_rows() as u64, cursor_max))
    }
}

/// Keeps the rows whose cursor (column `index`) is greater than `lower` (all rows without a
/// bound; rows with a NULL cursor only then); returns them and their highest cursor.
fn filter_after(
    batch: RecordBatch,
    index: usize,
    lower: Option<i64>,
) -> Result<(RecordBatch, Option<i64>), Error> {
    let encode = |e: arrow::error::ArrowError| Error::Encode(e.to_string());
    let cursor = arrow::compute::cast(batch.column(index), &DataType::Int64).map_err(encode)?;
    let cursor = cursor.as_primitive::<Int64Type>();
    let batch = match lower {
        None => batch,
        Some(lower) => {
            let keep: BooleanArray = cursor
                .iter()
                .map(|v| Some(v.is_some_and(|v| v > lower)))
                .collect();
            if keep.true_count() == batch.num_rows() {
                batch
            } else {
                arrow::compute::filter_record_batch(&batch, &keep).map_err(encode)?
            }
        }
    };
    let max = arrow::compute::max(cursor).filter(|m| lower.is_none_or(|l| *m > l));
    Ok((batch, max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::Field;

    #[test]
    fn endpoint_keys_name_chunks_ranges_and_tables() {
        assert_eq!(
            endpoint_key(
                "public.m",
                br#"{"chunk": "_timescaledb_internal._hyper_1_2_chunk"}"#,
                3
            ),
            "_timescaledb_internal._hyper_1_2_chunk"
        );
        assert_eq!(
            endpoint_key(
                "public.d",
                br#"{"chunk": null, "block_start": 0, "block_end": 128}"#,
                0
            ),
            "public.d[blocks 0..128]"
        );
        assert_eq!(
            endpoint_key(
                "public.d",
                br#"{"chunk": null, "block_start": 128, "block_end": null}"#,
                1
            ),
            "public.d[blocks 128..]"
        );
        assert_eq!(
            endpoint_key("public.d", br#"{"chunk": null}"#, 0),
            "public.d"
        );
        assert_eq!(endpoint_key("public.d", b"", 2), "public.d#2");
    }

    #[test]
    fn filtering_keeps_rows_strictly_after_the_cursor() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("t", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![Some(5), Some(7), None, Some(6)])),
                Arc::new(StringArray::from(vec!["a", "b", "c", "d"])),
            ],
        )
        .unwrap();
        let (kept, max) = filter_after(batch.clone(), 0, Some(5)).unwrap();
        assert_eq!(kept.num_rows(), 2);
        assert_eq!(max, Some(7));
        let (kept, max) = filter_after(batch.clone(), 0, None).unwrap();
        assert_eq!(kept.num_rows(), 4);
        assert_eq!(max, Some(7));
        let (kept, max) = filter_after(batch, 0, Some(7)).unwrap();
        assert_eq!(kept.num_rows(), 0);
        assert_eq!(max, None);
    }
}
