//! Reading one endpoint: DoGet of its ticket (a saved resume ticket first, when there is one),
//! every batch filtered (incremental), encoded into RECORD lines on a blocking thread and sent to
//! the writer with the ticket that resumes after it. The in-process service hands its batches over
//! directly ([`server::server::LocalReader`]); a remote one is read over Flight, at the endpoint's
//! locations in turn when a fleet lists several (a transient failure continues at the next one
//! after the last batch delivered).
//!
//! What a refusal means follows [`protocol::classify`]: a transient code fails the stream (the
//! platform's next attempt resumes from the last STATE) once no other location is left; NOT_FOUND
//! before any batch means the chunk was dropped since planning, and it is skipped; a saved resume
//! ticket refused as stale (`Replan`) or invalid (INVALID_ARGUMENT: the ticket is DoGet's only
//! argument) is replaced by the planned ticket, so the endpoint is read again from its start.

use std::sync::Arc;

use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type};
use arrow_flight::decode::DecodedPayload;
use arrow_flight::Ticket;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use protocol::Retry;
use tokio::sync::mpsc;

use super::plan::Work;
use super::writer::{writer_gone, Buffers, Event};
use super::ClientPool;
use crate::flight::FlightSource;
use crate::messages::{now_ms, Level, Message, StreamDescriptor};
use crate::record::RecordEncoder;
use crate::Error;

/// Reads endpoints of one stream.
pub(super) struct ChunkReader {
    /// The stream, for messages.
    pub descriptor: StreamDescriptor,
    /// Writes the selected columns as RECORD lines.
    pub encoder: RecordEncoder,
    /// The cursor's column in the batches (incremental).
    pub cursor_index: Option<usize>,
    /// Rows with a cursor up to this one are not written (incremental).
    pub lower: Option<i64>,
    /// To the writer thread.
    pub tx: mpsc::Sender<Event>,
    /// Record buffers to reuse.
    pub buffers: Buffers,
    /// The CDC copy: its records get the `_ab_cdc_*` columns.
    pub copy: Option<crate::cdc::SnapshotRead>,
}

/// What a call refused before it delivered anything means for its endpoint.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// The relation is gone (dropped since planning): nothing to read.
    Gone,
    /// The ticket is stale or invalid: a planned ticket may still work.
    Ticket,
}

fn refusal(error: &Error) -> Option<Refusal> {
    let code = error.code()?;
    if code == tonic::Code::NotFound {
        return Some(Refusal::Gone);
    }
    match protocol::classify(code) {
        Retry::Replan => Some(Refusal::Ticket),
        Retry::Fatal if code == tonic::Code::InvalidArgument => Some(Refusal::Ticket),
        Retry::Resume | Retry::Fatal => None,
    }
}

/// An endpoint read's batches, each with the ticket that resumes after it (empty: none).
type Batches = BoxStream<'static, Result<(RecordBatch, Bytes), Error>>;

/// How far an endpoint's read got, across its attempts.
#[derive(Default)]
struct Progress {
    /// The ticket that resumes after the last batch delivered.
    resume: Option<Bytes>,
    /// Whether any batch reached the writer.
    delivered: bool,
}

impl ChunkReader {
    pub(super) async fn read(
        self: Arc<Self>,
        work: Work,
        clients: &ClientPool,
        source: &FlightSource,
    ) -> Result<(), Error> {
        let mut ticket = work.ticket.clone();
        let mut fallback = work.fallback.clone();
        let mut progress = Progress::default();
        // A fleet lists several locations: a transient failure moves on to the next one, which
        // continues after the last batch delivered (each location is tried at most once).
        let locations = work.locations.len().max(1);
        let (mut at, mut moves) = (0, 0);
        loop {
            let from = progress.resume.clone().unwrap_or_else(|| ticket.clone());
            let location = work.locations.get(at).map(String::as_str);
            let error = match self
                .stream(&work, from, location, &mut progress, clients, source)
                .await
            {
                Ok(()) => break,
                Err(e) => e,
            };
            let transient = error
                .code()
                .is_some_and(|c| protocol::classify(c) == Retry::Resume);
            if transient && moves + 1 < locations {
                moves += 1;
                at = (at + 1) % locations;
                self.log(format!(
                    "{}: reading {} failed at {} ({error}); continuing at {}",
                    self.descriptor,
                    work.key,
                    location.unwrap_or_default(),
                    work.locations[at]
                ))
                .await?;
                continue;
            }
            if progress.delivered {
                return Err(error);
            }
            match (refusal(&error), fallback.take()) {
                (Some(Refusal::Gone), _) => {
                    self.log(format!(
                        "{}: {} no longer exists (dropped since it was planned); skipped",
                        self.descriptor, work.key
                    ))
                    .await?;
                    break;
                }
                (Some(Refusal::Ticket), Some(planned)) => {
                    self.log(format!(
                        "{}: the saved resume ticket of {} was refused ({error}); reading it again from its start: its rows delivered before the interruption are delivered again",
                        self.descriptor, work.key
                    ))
                    .await?;
                    ticket = planned;
                }
                _ => return Err(error),
            }
        }
        self.tx
            .send(Event::EndpointDone { index: work.index })
            .await
            .map_err(|_| writer_gone())
    }

    async fn log(&self, message: String) -> Result<(), Error> {
        self.tx
            .send(Event::Message(Message::log(Level::Warn, message)))
            .await
            .map_err(|_| writer_gone())
    }

    /// DoGet of `ticket` at `location` (the in-process service reads it without Flight): every
    /// batch filtered, encoded and sent to the writer.
    async fn stream(
        self: &Arc<Self>,
        work: &Work,
        ticket: Bytes,
        location: Option<&str>,
        progress: &mut Progress,
        clients: &ClientPool,
        source: &FlightSource,
    ) -> Result<(), Error> {
        let context = format!("DoGet {} ({})", self.descriptor, work.key);
        let mut pooled = None;
        let mut batches: Batches = match source.local() {
            Some(local) => {
                let at = context.clone();
                local
                    .do_get(&ticket)
                    .await
                    .map_err(|status| Error::Flight {
                        context: context.clone(),
                        status,
                    })?
                    .map(move |item| match item {
                        Ok(b) => Ok((b.batch, b.resume.unwrap_or_default())),
                        Err(status) => Err(Error::Flight {
                            context: at.clone(),
                            status,
                        }),
                    })
                    .boxed()
            }
            None => {
                let mut client = match location.filter(|url| !source.is_self(url)) {
                    Some(url) => source.client_of(url).await?,
                    None => clients.take(source).await?,
                };
                let at = context.clone();
                let data = client
                    .do_get(Ticket::new(ticket))
                    .await
                    .map_err(|e| Error::flight(context.clone(), e))?
                    .into_inner();
                if location.is_none_or(|url| source.is_self(url)) {
                    pooled = Some(client);
                }
                data.map_err(move |e| Error::flight(at.clone(), e))
                    .try_filter_map(|item| async move {
                        Ok(match item.payload {
                            DecodedPayload::RecordBatch(batch) => {
                                Some((batch, item.inner.app_metadata))
                            }
                            _ => None,
                        })
                    })
                    .boxed()
            }
        };
        while let Some((batch, resume)) = batches.try_next().await? {
            let this = self.clone();
            // JSON encoding is CPU-bound: off the async workers, which also run the in-process
            // Flight service.
            let (lines, rows, cursor_max) = tokio::task::spawn_blocking(move || this.encode(batch))
                .await
                .map_err(|e| Error::Encode(e.to_string()))??;
            if !resume.is_empty() {
                progress.resume = Some(resume.clone());
            }
            self.tx
                .send(Event::Records {
                    index: work.index,
                    lines,
                    rows,
                    resume,
                    cursor_max,
                })
                .await
                .map_err(|_| writer_gone())?;
            progress.delivered = true;
        }
        if let Some(client) = pooled {
            clients.give_back(client);
        }
        Ok(())
    }

    /// Filters (incremental) and encodes one batch: RECORD lines, their count, the highest cursor.
    fn encode(&self, batch: RecordBatch) -> Result<(Vec<u8>, u64, Option<i64>), Error> {
        let (batch, cursor_max) = match self.cursor_index {
            Some(i) => filter_after(batch, i, self.lower)?,
            None => (batch, None),
        };
        let batch = match &self.copy {
            Some(copy) => crate::cdc::copied(&batch, copy)?,
            None => batch,
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
    use arrow::datatypes::{Field, Schema};

    #[test]
    fn refusals_follow_the_classification() {
        let of = |code: tonic::Code| {
            refusal(&Error::Flight {
                context: "DoGet".into(),
                status: tonic::Status::new(code, "x"),
            })
        };
        assert_eq!(of(tonic::Code::NotFound), Some(Refusal::Gone));
        assert_eq!(of(tonic::Code::FailedPrecondition), Some(Refusal::Ticket));
        assert_eq!(of(tonic::Code::InvalidArgument), Some(Refusal::Ticket));
        assert_eq!(of(tonic::Code::Unavailable), None);
        assert_eq!(of(tonic::Code::PermissionDenied), None);
        assert_eq!(refusal(&Error::Encode("x".into())), None);
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
