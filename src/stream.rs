//! The DoGet response: the schema message, then every batch as an Arrow IPC message whose
//! `app_metadata` is a signed resume ticket for the rows after it.

use arrow::datatypes::SchemaRef;
use arrow::ipc::writer::{DictionaryTracker, IpcDataGenerator, IpcWriteOptions};
use arrow_flight::{FlightData, SchemaAsIpc};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::error::Error;
use crate::pgarrow::{DecodedBatch, Tid};

/// Encodes the batches arriving on `batches` as FlightData. `resume_ticket` mints the ticket for the
/// rows after a batch whose last row sits at the given position; batches without a position (no ctid
/// tracking) carry no resume ticket. An error from the scan ends the stream with that error's status,
/// never with a clean end of a truncated stream.
pub fn flight_data(
    schema: SchemaRef,
    batches: mpsc::Receiver<Result<DecodedBatch, Error>>,
    resume_ticket: impl Fn(Tid) -> Bytes + Send + 'static,
) -> impl Stream<Item = Result<FlightData, Status>> + Send + 'static {
    let options = IpcWriteOptions::default();
    let head: FlightData = SchemaAsIpc::new(&schema, &options).into();
    let generator = IpcDataGenerator::default();
    // Our schemas have no dictionary columns; the tracker is required by the API all the same.
    let mut dictionaries = DictionaryTracker::new(false);
    let mut context = Default::default();
    let body = ReceiverStream::new(batches).map(move |item| {
        let decoded = item?;
        let (_, encoded) = generator
            .encode(&decoded.batch, &mut dictionaries, &options, &mut context)
            .map_err(Error::from)?;
        let data = FlightData::from(encoded);
        Ok(match decoded.last_tid {
            Some(tid) => data.with_app_metadata(resume_ticket(tid)),
            None => data,
        })
    });
    futures::stream::once(async move { Ok(head) }).chain(body)
}
