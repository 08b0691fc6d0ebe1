//! One request over the protocol client: GetFlightInfo for a window, then every endpoint in
//! parallel through `protocol::client::read_endpoint`, which resumes broken streams from the last
//! resume ticket. Rows count only once the ticket after them has arrived (or the stream ended), so
//! batches that a retry reads again are never counted twice.

use std::future::Future;
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::TimestampMicrosecondType;
use arrow_flight::{FlightDescriptor, FlightEndpoint, FlightInfo};
use protocol::client::{read_endpoint, ClientConfig, Connection, ReadError, ReadEvent};
use protocol::{ActionName, Bound, Command, EndpointMetadata, Retry};
use tokio::time::Instant;

use crate::expect::{Rows, Window};
use crate::run::Shared;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to `url` that opens on first use: a server that is down now fails calls (which are
/// retried), not the client's set-up.
pub(crate) fn connection(url: &str) -> Result<Connection, String> {
    Connection::lazy(&ClientConfig {
        url: url.to_string(),
        connect_timeout: Some(CONNECT_TIMEOUT),
        ..ClientConfig::default()
    })
    .map_err(|e| e.to_string())
}

/// DoAction `action` at `url` once, within `limit`; the answer is not looked at.
pub(crate) async fn action(url: &str, action: ActionName, limit: Duration) -> Result<(), String> {
    let conn = connection(url)?;
    match tokio::time::timeout(limit, conn.action(action)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => {
            let e = ReadError::from(e);
            Err(format!("{}: {} {}", action.as_str(), e.code, e.message))
        }
        Err(_) => Err(format!("{}: no answer within {limit:?}", action.as_str())),
    }
}

/// One endpoint's read, across its retries.
#[derive(Debug, Default)]
pub(crate) struct EndpointRead {
    /// Rows up to the last resume point (plus the tail, once the stream ended cleanly).
    pub(crate) rows: Rows,
    /// Rows after the last resume ticket: a retry reads them again, so they count only once a
    /// ticket follows them or the stream ends.
    pub(crate) pending: Rows,
    /// IPC bytes of every batch received, re-reads included.
    pub(crate) bytes: u64,
    pub(crate) first_batch: Option<Instant>,
    /// Code of each retry, with the fault phase it happened in.
    pub(crate) retries: Vec<(&'static str, usize)>,
    /// Retries that went on from a resume ticket (the others started the endpoint over).
    pub(crate) resumed: u64,
    pub(crate) error: Option<ReadError>,
}

impl EndpointRead {
    /// Accounts one event of the read; `phase` is the fault phase it happened in.
    fn on_event(
        &mut self,
        event: ReadEvent,
        time_column: &str,
        phase: usize,
    ) -> Result<(), ReadError> {
        match event {
            ReadEvent::Batch {
                batch,
                resume,
                wire_bytes,
            } => {
                self.bytes += wire_bytes;
                self.first_batch.get_or_insert_with(Instant::now);
                let rows = Rows {
                    count: batch.num_rows() as u64,
                    time_sum: time_sum(&batch, time_column)?,
                };
                self.pending = self.pending + rows;
                // No resume ticket (e.g. a compressed chunk): a retry starts before this batch.
                if resume.is_some() {
                    self.rows = self.rows + self.pending;
                    self.pending = Rows::default();
                }
            }
            ReadEvent::Retry { error, resumed, .. } => {
                self.pending = Rows::default();
                // Without a ticket the endpoint starts over, so every row comes again.
                if !resumed {
                    self.rows = Rows::default();
                }
                self.retries.push((error.code, phase));
                self.resumed += u64::from(resumed);
            }
        }
        Ok(())
    }

    /// The stream ended cleanly: its last rows count too.
    fn finish(&mut self) {
        self.rows = self.rows + self.pending;
        self.pending = Rows::default();
    }
}

/// Reads one endpoint to its end or its final error.
async fn read(shared: &Shared, conn: &Connection, endpoint: &FlightEndpoint) -> EndpointRead {
    let mut read = EndpointRead::default();
    let ticket = endpoint
        .ticket
        .clone()
        .map(|t| t.ticket)
        .unwrap_or_default();
    let mut clients = match conn.endpoint_clients(endpoint) {
        Ok(c) => c,
        Err(e) => {
            read.error = Some(ReadError {
                code: "CONNECT",
                grpc: None,
                message: e.to_string(),
                retry: Retry::Fatal,
            });
            return read;
        }
    };
    let outcome = read_endpoint(&mut clients, ticket, &shared.policy, |event| {
        read.on_event(event, &shared.time_column, shared.phase())
    })
    .await;
    match outcome {
        Ok(()) => read.finish(),
        Err(e) => read.error = Some(e),
    }
    read
}

/// Sum of the time column in µs (the half of the checksum that tells which rows arrived).
fn time_sum(batch: &RecordBatch, column: &str) -> Result<i128, ReadError> {
    let values = batch
        .column_by_name(column)
        .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
        .ok_or_else(|| ReadError {
            code: "DECODE",
            grpc: None,
            message: format!("batch has no Timestamp(µs) column {column:?}"),
            retry: Retry::Fatal,
        })?;
    Ok(values.iter().flatten().map(i128::from).sum())
}

/// The outcome of one request (one window).
#[derive(Debug, Default)]
pub(crate) struct RequestResult {
    pub(crate) plan_retries: Vec<(&'static str, usize)>,
    pub(crate) plan_error: Option<ReadError>,
    /// Chunks that overlap the window but got no endpoint.
    pub(crate) gaps: Vec<usize>,
    /// Endpoints naming no chunk of the window.
    pub(crate) unexpected: Vec<String>,
    pub(crate) endpoints: Vec<(usize, EndpointRead)>,
    pub(crate) first_batch: Option<Duration>,
    pub(crate) elapsed: Duration,
}

/// Plans window `w` and reads every endpoint of the plan in parallel.
pub(crate) async fn request(shared: &Shared, conn: &Connection, w: &Window) -> RequestResult {
    let t0 = Instant::now();
    let mut result = RequestResult::default();
    let info = match plan(shared, conn, w, &mut result.plan_retries).await {
        Ok(info) => info,
        Err(e) => {
            result.plan_error = Some(e);
            result.elapsed = t0.elapsed();
            return result;
        }
    };
    let planned = result.match_endpoints(shared, w, &info);
    let reads = planned
        .into_iter()
        .map(|(i, e)| async move { (i, read(shared, conn, &e).await) });
    result.endpoints = futures::future::join_all(reads).await;
    result.first_batch = result
        .endpoints
        .iter()
        .filter_map(|(_, r)| r.first_batch)
        .min()
        .map(|t| t - t0);
    result.elapsed = t0.elapsed();
    result
}

/// GetFlightInfo for the window, retried like a stream: transient codes and stalls, with backoff.
async fn plan(
    shared: &Shared,
    conn: &Connection,
    w: &Window,
    retries: &mut Vec<(&'static str, usize)>,
) -> Result<FlightInfo, ReadError> {
    let cmd = Command {
        start: Some(Bound::Time(rfc3339(w.start))),
        end: Some(Bound::Time(rfc3339(w.end))),
        ..Command::table(shared.table.clone())
    };
    let descriptor = FlightDescriptor::new_cmd(cmd.to_json());
    let mut client = conn.client();
    let mut attempt = 0;
    loop {
        let call = client.get_flight_info(descriptor.clone());
        let outcome = match within(shared.policy.stall, call).await {
            Some(r) => r.map_err(ReadError::from),
            None => Err(ReadError::stalled(
                "GetFlightInfo",
                shared.policy.stall.unwrap_or_default(),
            )),
        };
        match outcome {
            Err(e) if e.retry == Retry::Resume && attempt < shared.policy.retries => {
                attempt += 1;
                retries.push((e.code, shared.phase()));
                tokio::time::sleep(shared.policy.delay(attempt)).await;
            }
            other => return other,
        }
    }
}

/// `f`'s output, or `None` when it takes longer than `limit`.
async fn within<T>(limit: Option<Duration>, f: impl Future<Output = T>) -> Option<T> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, f).await.ok(),
        None => Some(f.await),
    }
}

impl RequestResult {
    /// Pairs each endpoint with the chunk it reads; notes endpoints for no chunk of the window and
    /// chunks of the window without an endpoint.
    fn match_endpoints(
        &mut self,
        shared: &Shared,
        w: &Window,
        info: &FlightInfo,
    ) -> Vec<(usize, FlightEndpoint)> {
        let mut planned = Vec::new();
        for e in &info.endpoint {
            let chunk = EndpointMetadata::from_json(&e.app_metadata)
                .ok()
                .and_then(|m| m.chunk)
                .unwrap_or_default();
            match (shared.chunk_index.get(&chunk), &e.ticket) {
                (Some(&i), Some(_)) if w.chunks.iter().any(|&(c, _)| c == i) => {
                    planned.push((i, e.clone()))
                }
                _ => self.unexpected.push(chunk),
            }
        }
        self.gaps = w
            .chunks
            .iter()
            .map(|&(c, _)| c)
            .filter(|c| !planned.iter().any(|(p, _)| p == c))
            .collect();
        planned
    }
}

/// µs since the epoch as RFC 3339 (the CMD's time bounds).
pub(crate) fn rfc3339(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use arrow::array::TimestampMicrosecondArray;
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    use bytes::Bytes;

    use super::*;
    use crate::expect::tests::r;

    fn batch(times: &[i64]) -> RecordBatch {
        let schema = Schema::new(vec![Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        )]);
        let times = TimestampMicrosecondArray::from(times.to_vec()).with_timezone("UTC");
        RecordBatch::try_new(Arc::new(schema), vec![Arc::new(times)]).unwrap()
    }

    fn ev_batch(times: &[i64], ticket: bool) -> ReadEvent {
        ReadEvent::Batch {
            batch: batch(times),
            resume: ticket.then(|| Bytes::from_static(b"t")),
            wire_bytes: 100,
        }
    }

    fn ev_retry(resumed: bool) -> ReadEvent {
        ReadEvent::Retry {
            error: error("UNAVAILABLE"),
            resumed,
            attempt: 1,
            location: 0,
        }
    }

    pub(crate) fn error(code: &'static str) -> ReadError {
        ReadError {
            code,
            grpc: None,
            message: "m".into(),
            retry: Retry::Fatal,
        }
    }

    fn replay(events: Vec<ReadEvent>, ended: bool) -> EndpointRead {
        let mut read = EndpointRead::default();
        for e in events {
            read.on_event(e, "time", 0).unwrap();
        }
        if ended {
            read.finish();
        }
        read
    }

    #[test]
    fn rows_after_the_last_ticket_count_once() {
        // Ticketed batches count at once; the unticketed tail waits for the end of the stream.
        let read = replay(vec![ev_batch(&[1, 2], true), ev_batch(&[3], false)], false);
        assert_eq!(read.rows, r(2, 3));
        let read = replay(vec![ev_batch(&[1, 2], true), ev_batch(&[3], false)], true);
        assert_eq!(read.rows, r(3, 6));
        assert_eq!(read.bytes, 200);

        // A resumed retry reads the batches after the ticket again: the tail is not doubled.
        let read = replay(
            vec![
                ev_batch(&[1, 2], true),
                ev_batch(&[3], false),
                ev_retry(true),
                ev_batch(&[3], false),
                ev_batch(&[4], true),
            ],
            true,
        );
        assert_eq!(read.rows, r(4, 10));
        assert_eq!((read.resumed, read.retries.len()), (1, 1));

        // Without any ticket the endpoint starts over: every earlier row comes again.
        let read = replay(
            vec![
                ev_batch(&[1], false),
                ev_retry(false),
                ev_batch(&[1], false),
                ev_batch(&[2], false),
            ],
            true,
        );
        assert_eq!(read.rows, r(2, 3));
        assert_eq!((read.resumed, read.retries.len()), (0, 1));
    }

    #[test]
    fn a_batch_without_the_time_column_is_a_decode_error() {
        let mut read = EndpointRead::default();
        let e = read.on_event(ev_batch(&[1], true), "ts", 0).unwrap_err();
        assert_eq!((e.code, e.retry), ("DECODE", Retry::Fatal));
    }

    #[test]
    fn time_bounds_are_rfc3339_in_microseconds() {
        assert_eq!(rfc3339(1_000_001), "1970-01-01T00:00:01.000001Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
    }
}
