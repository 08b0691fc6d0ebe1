//! The CDC replication method: changes from a logical replication slot, after a first copy read
//! under the slot's own snapshot, so nothing falls between the copy and the changes.
//!
//! ```text
//! no state:  drop the idle slot ─► CREATE_REPLICATION_SLOT … EXPORT_SNAPSHOT (replication session,
//!            kept idle) ─► every stream read chunk by chunk under that snapshot (the in-process
//!            service imports it) ─► GLOBAL STATE {lsn: consistent point}
//! state L:   server::cdc::ChangeStream from L to the WAL end at start ─► RECORDs per committed
//!            transaction ─► GLOBAL STATE {lsn} at transaction boundaries ─► acknowledge
//! ```
//!
//! Records carry `_ab_cdc_lsn` (the LSN just past the change's transaction: a read from a state at
//! or past it does not see it again), `_ab_cdc_updated_at` (its commit time) and
//! `_ab_cdc_deleted_at` (the commit time of a delete, whose record carries the old key, or the old
//! row with REPLICA IDENTITY FULL). Copied rows carry the consistent point and the copy's time.
//!
//! **Acknowledgement** tells the slot its WAL up to an LSN may be freed, so it never goes past a
//! STATE this source emitted: with `After loading Data in the destination`, only the state the
//! sync started from (the platform passes a state back once the destination has it); with
//! `While reading Data`, each STATE as it is flushed to stdout.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit, TimestampMicrosecondType, UInt64Type};
use serde::{Deserialize, Serialize};
use server::cdc::{ChangeBatch, ChangeStream, ExportedSlot, QualifiedName, StreamOptions};

use crate::config::{CdcSettings, Service, SourceConfig};
use crate::database::Database;
use crate::messages::{
    now_ms, ConfiguredCatalog, ConfiguredStream, GlobalState, GlobalStateMessage, Level, Message,
    SourceStats, StreamDescriptor, StreamStateMessage, StreamStatus, SyncMode,
};
use crate::output::Output;
use crate::record::RecordEncoder;
use crate::{state, Error};

/// The LSN just past the change's transaction.
pub const LSN: &str = "_ab_cdc_lsn";
/// The transaction's commit time (a copied row: when the copy was made).
pub const UPDATED_AT: &str = "_ab_cdc_updated_at";
/// A delete's commit time; null otherwise.
pub const DELETED_AT: &str = "_ab_cdc_deleted_at";
/// The format written in `state_version`.
pub const CDC_STATE_VERSION: u32 = 1;
/// A STATE at the first transaction boundary after this many records.
pub const STATE_EVERY_RECORDS: u64 = 1_000;

/// The shared state of a CDC read: the slot position every change before which was emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CdcState {
    /// Format version.
    pub state_version: u32,
    /// The LSN (as a number, as Airbyte's Postgres source writes it).
    pub lsn: u64,
}

fn utc() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// `schema` with the `_ab_cdc_*` columns after the table's.
pub fn with_cdc_fields(schema: &Schema) -> Schema {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend([
        Field::new(LSN, DataType::Int64, false),
        Field::new(UPDATED_AT, utc(), false),
        Field::new(DELETED_AT, utc(), true),
    ]);
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

/// Whether `column` is one this source adds (so not looked for in the table).
pub fn is_cdc_column(column: &str) -> bool {
    [LSN, UPDATED_AT, DELETED_AT].contains(&column)
}

fn appended(
    values: &RecordBatch,
    lsn: ArrayRef,
    updated: ArrayRef,
    deleted: ArrayRef,
) -> Result<RecordBatch, Error> {
    let mut columns = values.columns().to_vec();
    columns.extend([lsn, updated, deleted]);
    RecordBatch::try_new(Arc::new(with_cdc_fields(&values.schema())), columns)
        .map_err(|e| Error::Encode(e.to_string()))
}

/// A copied batch with the `_ab_cdc_*` columns: the consistent point, the copy's time, no delete.
pub(crate) fn copied(batch: &RecordBatch, copy: &SnapshotRead) -> Result<RecordBatch, Error> {
    let rows = batch.num_rows();
    let time = |v: Option<i64>| -> ArrayRef {
        Arc::new(TimestampMicrosecondArray::from(vec![v; rows]).with_timezone("UTC"))
    };
    appended(
        batch,
        Arc::new(Int64Array::from(vec![copy.lsn as i64; rows])),
        time(Some(copy.at_micros)),
        time(None),
    )
}

/// The first sync's copy: the slot's exported snapshot, its consistent point, and when.
#[derive(Debug, Clone)]
pub struct SnapshotRead {
    /// The exported snapshot every endpoint reads.
    pub id: String,
    /// The slot's consistent point.
    pub lsn: u64,
    /// µs since the Unix epoch.
    pub at_micros: i64,
}

fn cdc_error(e: server::cdc::CdcError) -> Error {
    use server::cdc::CdcError;
    let config = matches!(
        e,
        CdcError::Refused(_) | CdcError::Unsupported(_) | CdcError::NotFound(_) | CdcError::Gone(_)
    );
    Error::Database {
        message: format!("change capture: {e}"),
        config,
    }
}

/// The saved LSN: from a GLOBAL state covering every configured stream; `None` without a state.
fn saved_lsn(path: Option<&Path>, catalog: &ConfiguredCatalog) -> Result<Option<u64>, Error> {
    let Some(path) = path else { return Ok(None) };
    let mut lsn = None;
    for m in state::load_messages(path)? {
        let global = match (m.kind.as_deref(), m.global) {
            (Some("GLOBAL"), Some(g)) => g,
            (Some("GLOBAL"), None) => {
                return Err(Error::State(
                    "a GLOBAL state without its \"global\" object".into(),
                ))
            }
            (kind, _) => {
                return Err(Error::State(format!(
                    "a {} state is not the CDC replication method's (GLOBAL): reset the connection \
                     after changing the replication method",
                    kind.unwrap_or("LEGACY")
                )))
            }
        };
        let Some(shared) = global.shared_state else {
            continue;
        };
        let saved: CdcState = serde_json::from_value(shared).map_err(|e| {
            Error::State(format!(
                "the saved CDC state is not one this source wrote ({e}); reset the connection"
            ))
        })?;
        if saved.state_version != CDC_STATE_VERSION {
            return Err(Error::State(format!(
                "the saved CDC state has version {}, this source reads {CDC_STATE_VERSION}; reset the connection",
                saved.state_version
            )));
        }
        for configured in &catalog.streams {
            let d = configured.stream.descriptor();
            if !global
                .stream_states
                .iter()
                .any(|s| s.stream_descriptor == d)
            {
                return Err(Error::State(format!(
                    "stream {d} was not part of the CDC copy its state continues (added since): \
                     reset the connection, so every stream is copied under one snapshot again"
                )));
            }
        }
        lsn = Some(saved.lsn);
    }
    Ok(lsn)
}

/// Runs `read` with the CDC replication method.
pub async fn read(
    config: &SourceConfig,
    cdc: &CdcSettings,
    catalog: &ConfiguredCatalog,
    state: Option<&Path>,
    out: &mut Output,
) -> Result<(), Error> {
    let Service::InProcess(settings) = &config.service else {
        return Err(Error::InvalidConfig {
            setting: "replication_method",
            message: "CDC needs the database settings, not flight_url".into(),
        });
    };
    let descriptors: Vec<StreamDescriptor> = catalog
        .streams
        .iter()
        .map(|s| s.stream.descriptor())
        .collect();
    for (configured, d) in catalog.streams.iter().zip(&descriptors) {
        if configured.sync_mode != SyncMode::Incremental || d.namespace.is_none() {
            return Err(Error::Catalog(format!(
                "stream {d}: with the CDC replication method every stream is read incrementally \
                 (sync mode incremental, a schema as namespace)"
            )));
        }
    }
    let saved = saved_lsn(state, catalog)?;
    let db = Database::connect(settings).await?;
    let status = db
        .cdc_status(&cdc.replication_slot, &cdc.publication)
        .await?;
    let tables: Vec<(String, String)> = descriptors
        .iter()
        .map(|d| (d.namespace.clone().unwrap_or_default(), d.name.clone()))
        .collect();
    let unpublished = db.unpublished(&cdc.publication, &tables).await?;
    if !unpublished.is_empty() {
        // Copied once and then never changed would be silently stale.
        return Err(Error::InvalidConfig {
            setting: "publication",
            message: format!(
                "publication {:?} does not cover {}: their changes would never be read (publish \
                 them: `hyperflight cdc setup --tables …` with a new publication, or ALTER \
                 PUBLICATION … ADD TABLE)",
                cdc.publication,
                unpublished.join(", ")
            ),
        });
    }
    let server_config = config.server_config(settings)?;
    let Some(from) = saved else {
        if let Some(slot) = &status.slot {
            if let Some(pid) = slot.active_pid {
                // Transient: the session of a killed attempt ends a moment after it; another
                // reader of the slot is a config error the message names.
                return Err(Error::Database {
                    message: format!(
                        "slot {:?} is in use by process {pid}: this source needs a slot of its own \
                         (an interrupted sync's session ends shortly: retry)",
                        cdc.replication_slot
                    ),
                    config: false,
                });
            }
            // No state: nothing was emitted from this slot, and only a slot made now exports the
            // snapshot its changes start from.
            db.drop_slot(&cdc.replication_slot).await?;
            out.message(&Message::log(
                Level::Info,
                format!(
                    "no CDC state: slot {:?} is made again, to copy every stream under its snapshot",
                    cdc.replication_slot
                ),
            ))?;
        }
        let slot = ExportedSlot::create(&server_config, &cdc.replication_slot, &cdc.publication)
            .await
            .map_err(cdc_error)?;
        let copy = SnapshotRead {
            id: slot.snapshot.clone(),
            lsn: slot.consistent_point,
            at_micros: now_ms() * 1000,
        };
        crate::read::read_streams(
            config,
            &copy_catalog(catalog),
            Default::default(),
            Some(copy.clone()),
            out,
        )
        .await?;
        // The copy is read: the replication session (and its snapshot) may go.
        drop(slot);
        checkpoint(out, &descriptors, copy.lsn, 0)?;
        return complete(out, &descriptors);
    };
    let Some(slot) = &status.slot else {
        return Err(Error::State(format!(
            "slot {:?} does not exist any more: reset the connection (its first sync copies every \
             stream again and makes the slot)",
            cdc.replication_slot
        )));
    };
    if let Some(flushed) = slot.confirmed_flush.filter(|&f| f > from) {
        return Err(Error::State(format!(
            "slot {:?} was acknowledged to {} past the saved state {}: the changes between are \
             gone; reset the connection",
            cdc.replication_slot,
            lsn_text(flushed),
            lsn_text(from)
        )));
    }
    for d in &descriptors {
        out.message(&Message::status(d, StreamStatus::Started))?;
    }
    let mut last = from;
    if status.wal_lsn > from {
        let options = StreamOptions {
            slot: cdc.replication_slot.clone(),
            publication: cdc.publication.clone(),
            tables: descriptors
                .iter()
                .map(|d| {
                    QualifiedName::new(d.namespace.clone().unwrap_or_default(), d.name.clone())
                })
                .collect(),
            start_lsn: Some(from),
            stop_lsn: Some(status.wal_lsn),
        };
        let mut stream = ChangeStream::start(&server_config, options)
            .await
            .map_err(cdc_error)?;
        // What the sync starts from is what the platform has: the slot may free WAL before it.
        stream.acknowledge(from);
        let streamed = Changes::new(catalog, &descriptors)
            .read(&mut stream, cdc, out, &mut last)
            .await;
        let records = match streamed {
            Ok(records) => records,
            Err(e) => {
                // The last STATE stands; what was written after it comes again next time.
                let _ = stream.stop().await;
                return Err(e);
            }
        };
        checkpoint(out, &descriptors, last, records)?;
        if cdc.ack_while_reading {
            stream.acknowledge(last);
        }
        stream.stop().await.map_err(cdc_error)?;
    } else {
        checkpoint(out, &descriptors, last, 0)?;
    }
    complete(out, &descriptors)
}

fn complete(out: &mut Output, streams: &[StreamDescriptor]) -> Result<(), Error> {
    for d in streams {
        out.message(&Message::status(d, StreamStatus::Complete))?;
    }
    Ok(out.flush()?)
}

/// `0/16B3748`, as PostgreSQL writes an LSN.
fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// The catalog of the first sync's copy: every stream read whole, without the `_ab_cdc_*`
/// columns (the copy adds them).
fn copy_catalog(catalog: &ConfiguredCatalog) -> ConfiguredCatalog {
    let mut copy = catalog.clone();
    for s in &mut copy.streams {
        s.sync_mode = SyncMode::FullRefresh;
        s.cursor_field = None;
        if let Some(props) = s
            .stream
            .json_schema
            .get_mut("properties")
            .and_then(|p| p.as_object_mut())
        {
            props.retain(|k, _| !is_cdc_column(k));
        }
    }
    copy
}

/// Writes the GLOBAL STATE at `lsn` for every stream and makes it visible.
fn checkpoint(
    out: &mut Output,
    streams: &[StreamDescriptor],
    lsn: u64,
    records: u64,
) -> std::io::Result<()> {
    let shared = CdcState {
        state_version: CDC_STATE_VERSION,
        lsn,
    };
    out.message(&Message::GlobalState {
        state: GlobalStateMessage {
            kind: "GLOBAL",
            global: GlobalState {
                shared_state: serde_json::to_value(shared)?,
                stream_states: streams
                    .iter()
                    .map(|d| StreamStateMessage {
                        stream_descriptor: d.clone(),
                        stream_state: serde_json::json!({}),
                    })
                    .collect(),
            },
            source_stats: SourceStats {
                record_count: records as f64,
            },
        },
    })?;
    out.flush()
}

/// How one stream's changes become records.
struct Emit {
    descriptor: StreamDescriptor,
    /// Selected table columns (`None`: all).
    selected: Option<Vec<String>>,
    /// Built from the first batch (the table's columns as the change stream decodes them).
    encoder: Option<(RecordEncoder, Vec<String>)>,
}

/// The streaming part of a sync.
struct Changes {
    streams: Vec<(QualifiedName, Emit)>,
    descriptors: Vec<StreamDescriptor>,
}

impl Changes {
    fn new(catalog: &ConfiguredCatalog, descriptors: &[StreamDescriptor]) -> Changes {
        let streams = catalog
            .streams
            .iter()
            .zip(descriptors)
            .map(|(c, d)| {
                let name =
                    QualifiedName::new(d.namespace.clone().unwrap_or_default(), d.name.clone());
                (name, emit(c, d))
            })
            .collect();
        Changes {
            streams,
            descriptors: descriptors.to_vec(),
        }
    }

    /// Reads until the stream ends (the WAL end at start was reached) or nothing arrives for
    /// `initial_waiting`, writing a STATE between transactions every [`STATE_EVERY_RECORDS`];
    /// `last` ends as the position every change before which was written. Returns the records
    /// written after the last STATE.
    async fn read(
        &mut self,
        stream: &mut ChangeStream,
        cdc: &CdcSettings,
        out: &mut Output,
        last: &mut u64,
    ) -> Result<u64, Error> {
        let mut records = 0u64;
        // The transaction whose batches are being written: a STATE goes only between two.
        let mut open = None;
        loop {
            let next = match tokio::time::timeout(cdc.initial_waiting, stream.next()).await {
                Err(_) => {
                    out.message(&Message::log(
                        Level::Info,
                        format!(
                            "no change for {} s (initial_waiting_seconds): ending the sync",
                            cdc.initial_waiting.as_secs()
                        ),
                    ))?;
                    break;
                }
                Ok(next) => next.map_err(cdc_error)?,
            };
            let Some(batch) = next else { break };
            if open.is_some_and(|lsn| lsn != batch.lsn) && records >= STATE_EVERY_RECORDS {
                *last = open.unwrap_or(*last);
                checkpoint(out, &self.descriptors, *last, records)?;
                records = 0;
                if cdc.ack_while_reading {
                    stream.acknowledge(*last);
                }
            }
            open = Some(batch.lsn);
            records += self.write(&batch, out)?;
        }
        // Every transaction up to the stream's position was written whole.
        *last = (*last).max(stream.position());
        Ok(records)
    }

    /// Writes one table's changes of one transaction; returns how many.
    fn write(&mut self, change: &ChangeBatch, out: &mut Output) -> Result<u64, Error> {
        let Some((_, emit)) = self.streams.iter_mut().find(|(n, _)| *n == change.table) else {
            return Ok(0);
        };
        let batch = records_of(change, emit)?;
        let (encoder, _) = emit.encoder.as_ref().expect("built by records_of");
        let mut lines = Vec::new();
        encoder.encode(&batch, now_ms(), &mut lines)?;
        out.lines(&lines)?;
        Ok(batch.num_rows() as u64)
    }
}

fn emit(configured: &ConfiguredStream, descriptor: &StreamDescriptor) -> Emit {
    Emit {
        descriptor: descriptor.clone(),
        selected: configured
            .stream
            .selected_columns()
            .map(|c| c.into_iter().filter(|c| !is_cdc_column(c)).collect()),
        encoder: None,
    }
}

/// The selected table columns of a change batch, then the `_ab_cdc_*` columns.
fn records_of(change: &ChangeBatch, emit: &mut Emit) -> Result<RecordBatch, Error> {
    let batch = &change.batch;
    let encode = |e: arrow::error::ArrowError| Error::Encode(e.to_string());
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .cloned()
            .ok_or_else(|| Error::Encode(format!("change batch without {name}")))
    };
    let kinds = column(server::cdc::CHANGE_COLUMN)?;
    let kinds = kinds
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| Error::Encode("change kinds are not text".into()))?;
    let lsns = column(server::cdc::LSN_COLUMN)?;
    let lsn: ArrayRef = Arc::new(Int64Array::from_iter(
        lsns.as_primitive::<UInt64Type>()
            .iter()
            .map(|v| v.map(|v| v as i64)),
    ));
    let updated = column(server::cdc::COMMIT_TIME_COLUMN)?;
    let deleted: ArrayRef = Arc::new(
        updated
            .as_primitive::<TimestampMicrosecondType>()
            .iter()
            .zip(kinds.iter())
            .map(|(t, k)| if k == Some("delete") { t } else { None })
            .collect::<TimestampMicrosecondArray>()
            .with_timezone("UTC"),
    );
    let schema = batch.schema();
    let names: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| {
            ![
                server::cdc::CHANGE_COLUMN,
                server::cdc::LSN_COLUMN,
                server::cdc::COMMIT_TIME_COLUMN,
            ]
            .contains(&n.as_str())
                && emit.selected.as_ref().is_none_or(|s| s.contains(n))
        })
        .collect();
    let indices: Vec<usize> = names
        .iter()
        .map(|n| schema.index_of(n).map_err(encode))
        .collect::<Result<_, _>>()?;
    let values = batch.project(&indices).map_err(encode)?;
    let records = appended(&values, lsn, updated, deleted)?;
    // A table whose columns changed since the first batch gets an encoder of its new layout.
    if emit.encoder.as_ref().is_none_or(|(_, n)| *n != names) {
        let all: Vec<usize> = (0..records.num_columns()).collect();
        emit.encoder = Some((
            RecordEncoder::new(&emit.descriptor, &records.schema(), &all),
            names,
        ));
    }
    Ok(records)
}
