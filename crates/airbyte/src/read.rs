//! `read`: every configured stream in turn; within a stream, its endpoints (chunks) in parallel.
//!
//! Per stream: TRACE STARTED → GetSchema → GetFlightInfo (CMD with the selected columns and, for
//! an incremental hypertable, `start` = saved cursor) → TRACE ESTIMATE of its totals, when the
//! service knows them → the endpoints not completed by an earlier
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
//! rewritten) makes that chunk be read again from its start, with a LOG saying its earlier rows are
//! delivered twice (see [`chunk`]).
//!
//! Parts: [`plan`] (columns, cursor, state, CMD; endpoints to skip, resume or read), [`chunk`]
//! (one endpoint's DoGet), [`writer`] (the writer thread and its STATE bookkeeping).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use arrow::datatypes::Schema;
use arrow_flight::{FlightClient, FlightDescriptor, FlightInfo};
use futures::{StreamExt, TryStreamExt};
use protocol::TableRef;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::cdc::SnapshotRead;
use crate::config::{ReplicationMethod, SourceConfig};
use crate::discover::warn_unknown_keys;
use crate::flight::FlightSource;
use crate::messages::{
    ConfiguredCatalog, ConfiguredStream, FailureType, Message, StreamDescriptor, StreamStatus,
};
use crate::output::Output;
use crate::record::RecordEncoder;
use crate::state;
use crate::{read_json, Error};

mod chunk;
mod plan;
mod writer;

use chunk::ChunkReader;
use plan::{Notes, StreamPlan};
pub use writer::STATE_EVERY_BATCHES;
use writer::{writer_gone, Book, Buffers, Event};

/// Runs `read`.
pub async fn run(
    config: &Path,
    catalog: &Path,
    state: Option<&Path>,
    out: &mut Output,
) -> Result<(), Error> {
    let config = SourceConfig::load(config)?;
    let catalog: ConfiguredCatalog = read_json("catalog", catalog)?;
    warn_unknown_keys(&config, out)?;
    if let ReplicationMethod::Cdc(cdc) = &config.replication {
        return crate::cdc::read(&config, cdc, &catalog, state, out).await;
    }
    let saved = match state {
        Some(path) => state::load(path)?,
        None => HashMap::new(),
    };
    read_streams(&config, &catalog, saved, None, out).await
}

/// Reads every stream of `catalog`, continuing `saved`; with `copy`, the CDC copy: every endpoint
/// under the slot's snapshot, records with the `_ab_cdc_*` columns, no STATE (an interrupted copy
/// starts again: its snapshot is gone).
pub(crate) async fn read_streams(
    config: &SourceConfig,
    catalog: &ConfiguredCatalog,
    saved: HashMap<StreamDescriptor, Value>,
    copy: Option<SnapshotRead>,
    out: &mut Output,
) -> Result<(), Error> {
    let source = FlightSource::start(config).await?;

    // The writer thread owns stdout for the read and hands it back at the end.
    let owned = std::mem::replace(out, Output::new(Box::new(std::io::sink())));
    let (tx, rx) = mpsc::channel(config.timescaledb.max_concurrent_chunks.max(2));
    let buffers = Buffers::default();
    let returned = buffers.clone();
    let writer = std::thread::Builder::new()
        .name("airbyte-writer".into())
        .spawn(move || writer::write_loop(rx, owned, returned))
        .map_err(|e| Error::Server(format!("cannot start the writer thread: {e}")))?;

    let reader = Reader {
        source: &source,
        parallel: config.timescaledb.max_concurrent_chunks,
        tx,
        buffers,
        copy,
    };
    let result = reader.read_all(catalog, saved).await;
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

/// The read of all streams.
struct Reader<'a> {
    /// The Flight service.
    source: &'a FlightSource,
    /// Endpoints read at once.
    parallel: usize,
    /// To the writer thread.
    tx: mpsc::Sender<Event>,
    /// Record buffers the writer hands back.
    buffers: Buffers,
    /// The CDC copy being read, if this is one.
    copy: Option<SnapshotRead>,
}

impl Reader<'_> {
    async fn send(&self, event: Event) -> Result<(), Error> {
        self.tx.send(event).await.map_err(|_| writer_gone())
    }

    async fn send_notes(&self, notes: Notes) -> Result<(), Error> {
        for m in notes {
            self.send(Event::Message(m)).await?;
        }
        Ok(())
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

    /// One stream: GetSchema, plan, GetFlightInfo, then its endpoints in parallel.
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
        let mut control = clients.take(self.source).await?;
        let schema = get_schema(&mut control, &descriptor, &namespace).await?;
        let mut notes = Notes::new();
        let table = TableRef::new(namespace, descriptor.name.clone());
        let plan = plan::plan_stream(configured, &descriptor, table, &schema, blob, &mut notes)?;
        self.send_notes(std::mem::take(&mut notes)).await?;
        let flight_descriptor = FlightDescriptor::new_cmd(plan.command.to_json());
        let info = match (&self.copy, self.source.local()) {
            (Some(copy), Some(local)) => local
                .flight_info_at(flight_descriptor, &copy.id)
                .await
                .map_err(|status| Error::Flight {
                    context: format!("GetFlightInfo {descriptor} (CDC copy)"),
                    status,
                })?,
            _ => control
                .get_flight_info(flight_descriptor)
                .await
                .map_err(|e| Error::flight(format!("GetFlightInfo {descriptor}"), e))?,
        };
        clients.give_back(control);
        // FlightInfo says -1 for unknown.
        let known = |n: i64| u64::try_from(n).ok();
        if let Some(m) = Message::estimate(
            &descriptor,
            known(info.total_records),
            known(info.total_bytes),
        ) {
            self.send(Event::Message(m)).await?;
        }

        let chunk = Arc::new(self.chunk_reader(&descriptor, &info, &plan)?);
        let mut state = plan.state;
        let (keys, works) = plan::schedule(&descriptor, &info.endpoint, &mut state, &mut notes)?;
        self.send_notes(notes).await?;
        let book = Book::new(
            descriptor.clone(),
            state,
            keys,
            plan.cursor.as_ref().map(|c| c.kind),
            plan.lower,
            plan.pass_max,
            self.copy.is_none(),
        );
        self.send(Event::Begin(Box::new(book))).await?;
        futures::stream::iter(works)
            .map(|w| {
                let chunk = chunk.clone();
                async move { chunk.read(w, clients, self.source).await }
            })
            .buffer_unordered(self.parallel)
            .try_for_each(|()| async { Ok(()) })
            .await
    }

    /// The reader of a planned stream's endpoints: the emitted columns and the cursor, found in
    /// the planned schema.
    fn chunk_reader(
        &self,
        descriptor: &StreamDescriptor,
        info: &FlightInfo,
        plan: &StreamPlan,
    ) -> Result<ChunkReader, Error> {
        let protocol_error = |message: String| Error::Protocol {
            context: format!("GetFlightInfo {descriptor}"),
            message,
        };
        let mut batch_schema = info
            .clone()
            .try_decode_schema()
            .map_err(|e| protocol_error(format!("undecodable schema: {e}")))?;
        let mut emitted = plan.emitted.clone();
        if self.copy.is_some() {
            batch_schema = crate::cdc::with_cdc_fields(&batch_schema);
            emitted.extend(
                [
                    crate::cdc::LSN,
                    crate::cdc::UPDATED_AT,
                    crate::cdc::DELETED_AT,
                ]
                .map(String::from),
            );
        }
        let index_of = |name: &str| {
            batch_schema.index_of(name).map_err(|_| {
                protocol_error(format!("column {name:?} missing from the planned schema"))
            })
        };
        let emit = emitted
            .iter()
            .map(|n| index_of(n))
            .collect::<Result<Vec<_>, _>>()?;
        let cursor_index = plan
            .cursor
            .as_ref()
            .map(|c| index_of(&c.column))
            .transpose()?;
        Ok(ChunkReader {
            descriptor: descriptor.clone(),
            encoder: RecordEncoder::new(descriptor, &batch_schema, &emit),
            cursor_index,
            lower: plan.lower,
            tx: self.tx.clone(),
            buffers: self.buffers.clone(),
            copy: self.copy.clone(),
        })
    }
}

/// GetSchema of the stream's table: its columns, and its facts (time dimension) in the metadata.
async fn get_schema(
    client: &mut FlightClient,
    descriptor: &StreamDescriptor,
    namespace: &str,
) -> Result<Schema, Error> {
    client
        .get_schema(FlightDescriptor::new_path(vec![
            namespace.to_string(),
            descriptor.name.clone(),
        ]))
        .await
        .map_err(|e| match Error::flight(format!("GetSchema {descriptor}"), e) {
            e if e.code() == Some(tonic::Code::NotFound) => Error::Catalog(format!(
                "table {descriptor} is not exposed any more (dropped, renamed, or not readable by this role): refresh the source schema"
            )),
            e => e,
        })
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
