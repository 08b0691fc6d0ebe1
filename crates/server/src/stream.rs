//! A scan's batches with their resume tickets ([`resumable_batches`]), and the DoGet response made
//! of them ([`flight_data`]): the schema message, then every batch as an Arrow IPC message whose
//! `app_metadata` is a signed resume ticket for the rows after it.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::ipc::writer::{DictionaryTracker, IpcDataGenerator, IpcWriteOptions};
use arrow_flight::{FlightData, SchemaAsIpc};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::error::Error;
use crate::metrics::Metrics;
use crate::scan::{Position, ScanStream};

/// One DoGet stream's life: counted as active while it exists, logged once when it ends.
struct Active {
    metrics: Arc<Metrics>,
    relation: String,
    started: std::time::Instant,
    rows: u64,
    /// Arrow bytes of the batches handed on (what went on the wire is counted by the
    /// `bytes` metric, as IPC).
    bytes: u64,
    outcome: Outcome,
}

/// How a DoGet stream ended, for its log event.
#[derive(Clone, Copy)]
enum Outcome {
    /// Dropped before its end: the client went away, or shutdown cut it.
    Cancelled,
    /// Ended with an error status.
    Error,
    /// Every batch was sent.
    Ended,
}

impl Drop for Active {
    fn drop(&mut self) {
        self.metrics.active_streams.dec();
        tracing::info!(
            relation = %self.relation,
            rows = self.rows,
            bytes = self.bytes,
            duration_ms = self.started.elapsed().as_millis() as u64,
            outcome = match self.outcome {
                Outcome::Cancelled => "cancelled",
                Outcome::Error => "error",
                Outcome::Ended => "ended",
            },
            "DoGet stream closed"
        );
    }
}

/// Counts a DoGet that failed, before or during its stream.
pub fn count_error(metrics: &Metrics, status: &Status) {
    metrics
        .errors
        .with_label_values(&[protocol::code_name(status.code())])
        .inc();
}

/// One scanned batch and the signed ticket that resumes after its last row (`None` where rows
/// have no position to resume after).
pub struct ResumableBatch {
    pub batch: RecordBatch,
    pub resume: Option<Bytes>,
}

/// The batches arriving from `scan`, each with its resume ticket: `resume_ticket` mints the ticket
/// for the rows after a batch whose last row sits at the given position. An error from the scan
/// ends the stream with that error's status, never with a clean end of a truncated stream. A
/// batch's memory reservation is returned when it is handed on.
pub fn resumable_batches(
    relation: String,
    scan: ScanStream,
    resume_ticket: impl Fn(Position) -> Bytes + Send + 'static,
    metrics: Arc<Metrics>,
) -> impl Stream<Item = Result<ResumableBatch, Status>> + Send + 'static {
    metrics.active_streams.inc();
    let mut active = Active {
        metrics,
        relation,
        started: std::time::Instant::now(),
        rows: 0,
        bytes: 0,
        outcome: Outcome::Cancelled,
    };
    // A `None` after the last item marks a stream that reached its end.
    let ScanStream { rx, late } = scan;
    let items = ReceiverStream::new(rx)
        .map(Some)
        .chain(futures::stream::once(async { None }));
    items.filter_map(move |item| {
        // After the queued batches, an error that could not be queued (a stalled client).
        let item = match item {
            Some(item) => item,
            None => match late.lock().ok().and_then(|mut l| l.take()) {
                Some(e) => Err(e),
                None => {
                    if !matches!(active.outcome, Outcome::Error) {
                        active.outcome = Outcome::Ended;
                    }
                    return futures::future::ready(None);
                }
            },
        };
        let result = item.map(|(decoded, _reservation)| {
            let rows = decoded.batch.num_rows() as u64;
            active.metrics.rows.inc_by(rows);
            active.rows += rows;
            active.bytes += decoded.batch.get_array_memory_size() as u64;
            ResumableBatch {
                resume: decoded.position.map(&resume_ticket),
                batch: decoded.batch,
            }
        });
        futures::future::ready(Some(result.map_err(|e| {
            let status = Status::from(e);
            count_error(&active.metrics, &status);
            active.outcome = Outcome::Error;
            status
        })))
    })
}

/// The DoGet response of `batches`: the schema message, then each batch as an Arrow IPC message
/// with its resume ticket as `app_metadata`.
pub fn flight_data(
    schema: SchemaRef,
    batches: impl Stream<Item = Result<ResumableBatch, Status>> + Send + 'static,
    metrics: Arc<Metrics>,
) -> impl Stream<Item = Result<FlightData, Status>> + Send + 'static {
    let options = IpcWriteOptions::default();
    let head: FlightData = SchemaAsIpc::new(&schema, &options).into();
    let generator = IpcDataGenerator::default();
    // Our schemas have no dictionary columns; the tracker is required by the API all the same.
    let mut dictionaries = DictionaryTracker::new(false);
    let mut context = Default::default();
    let body = batches.map(move |item| {
        let b = item?;
        let (_, encoded) = generator
            .encode(&b.batch, &mut dictionaries, &options, &mut context)
            .map_err(|e| {
                let status = Status::from(Error::from(e));
                count_error(&metrics, &status);
                status
            })?;
        let data = FlightData::from(encoded);
        metrics
            .bytes
            .inc_by((data.data_header.len() + data.data_body.len()) as u64);
        Ok(match b.resume {
            Some(ticket) => data.with_app_metadata(ticket),
            None => data,
        })
    });
    futures::stream::once(async move { Ok(head) }).chain(body)
}
