//! The live tail: `{"table": …, "follow": true}` streams a table's changes as they commit.
//!
//! ```text
//!            one ChangeStream on the configured slot (started by the first tail, stopped by the last)
//!                         │ ChangeBatch per (transaction, table)
//!                         ▼
//!   hub: a replay buffer of the latest batches (≤ tail_buffer_mb) ──► the slot is acknowledged up
//!        to what leaves the buffer          │                          to what leaves the buffer
//!                                           ▼
//!   each DoGet: its table's batches after its LSN, flushed by batch_rows or tail_max_latency_ms,
//!               each with a ticket that resumes after it
//! ```
//!
//! Every tail shares one replication session, so N clients cost one walsender and one decoder. A
//! client whose unread changes pass half the buffer is cut with ABORTED; its last ticket still lies
//! in the buffer for a while, so it resumes if it comes back soon, and otherwise gets
//! FAILED_PRECONDITION (start again from "now"). A client never holds WAL: the slot follows the
//! buffer, not the clients.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use pgwire_replication::Lsn;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::stream::{change_schema, plans, ChangeBatch, ChangeStream, StreamOptions};
use super::CdcError;
use crate::catalog::{Catalog, QualifiedName, Table};
use crate::db::Pool;

/// What the hub needs to run.
#[derive(Debug, Clone)]
pub struct TailSettings {
    /// The slot (`hyperflight cdc setup`).
    pub slot: String,
    /// Its publication.
    pub publication: String,
    /// A batch is sent once it holds this many rows…
    pub batch_rows: usize,
    /// …or its first change waited this long.
    pub max_latency: Duration,
    /// Bytes of decoded changes the hub keeps for resumes and slow clients.
    pub buffer_bytes: u64,
}

/// One buffered batch.
struct Entry {
    seq: u64,
    batch: Arc<ChangeBatch>,
    /// Bytes of all entries up to and including this one, since the hub started.
    end_bytes: u64,
}

/// The hub's shared state.
#[derive(Default)]
struct State {
    subscribers: usize,
    task: Option<JoinHandle<()>>,
    ring: VecDeque<Entry>,
    ring_bytes: u64,
    total_bytes: u64,
    next_seq: u64,
    /// Followed changes at or before this LSN can no longer be replayed: they left the buffer (and
    /// the slot was acknowledged past them), or came before this process first read the slot.
    /// Kept across sessions; `None` before the first.
    gone_upto: Option<u64>,
    /// The last position this process acknowledged on the slot.
    acked: u64,
    /// Why the replication session ended, if it did: every tail ends with it.
    failed: Option<String>,
}

/// The server's one tail hub.
pub struct TailHub {
    settings: TailSettings,
    target: pgconn::Target,
    catalog: Arc<Catalog>,
    pool: Pool,
    state: Arc<Mutex<State>>,
    /// The sequence number of the newest entry (or a failure), for waiting tails.
    wake: watch::Sender<u64>,
}

/// One batch for a tail client and the LSN it resumes after.
pub type TailItem = Result<(RecordBatch, u64), CdcError>;

impl TailHub {
    /// A hub that starts its replication session when the first tail arrives.
    pub fn new(
        settings: TailSettings,
        target: pgconn::Target,
        catalog: Arc<Catalog>,
        pool: Pool,
    ) -> Self {
        TailHub {
            settings,
            target,
            catalog,
            pool,
            state: Arc::new(Mutex::new(State::default())),
            wake: watch::channel(0).0,
        }
    }

    /// The schema of a table's tail: the change columns, then the table's.
    pub fn schema(table: &Table) -> Result<SchemaRef, CdcError> {
        let fields: Vec<_> = plans(table)?.into_iter().map(|p| p.field).collect();
        Ok(Arc::new(change_schema(&Schema::new(fields))))
    }

    /// The current end of the WAL: a tail from "now" starts after it.
    pub async fn now(&self) -> Result<u64, CdcError> {
        let client = self.pool.get().await.map_err(crate::error::DbError::from)?;
        let row = client
            .query_one("SELECT pg_catalog.pg_current_wal_lsn()::text", &[])
            .await?;
        parse_lsn(row.get(0))
    }

    /// Streams `table`'s changes committed after `after`, until the receiver is dropped.
    pub async fn follow(
        self: &Arc<Self>,
        table: Arc<Table>,
        after: u64,
    ) -> Result<mpsc::Receiver<TailItem>, CdcError> {
        let schema = Self::schema(&table)?;
        let confirmed = self.slot_position().await?;
        let (start_seq, start_bytes) = {
            let mut state = self.state.lock().expect("tail state");
            if state.task.is_none() {
                // A new session replays from the slot's acknowledged position. Every followed change
                // before it left the buffer earlier (gone_upto) unless someone else advanced the
                // slot since this process last acknowledged it.
                let gone = match state.gone_upto {
                    Some(gone) if confirmed <= state.acked => gone,
                    _ => confirmed,
                };
                *state = State {
                    gone_upto: Some(gone),
                    acked: confirmed,
                    ..State::default()
                };
                state.task = Some(self.spawn_session());
            }
            let gone = state.gone_upto.unwrap_or_default();
            if after < gone {
                return Err(CdcError::Gone(format!(
                    "changes after {} are no longer held (the tail holds those after {}): start again from \"now\"",
                    Lsn(after),
                    Lsn(gone)
                )));
            }
            state.subscribers += 1;
            let start_bytes = state.ring.front().map_or(state.total_bytes, |e| {
                e.end_bytes - e.batch.batch.get_array_memory_size() as u64
            });
            (
                state.ring.front().map_or(state.next_seq, |e| e.seq),
                start_bytes,
            )
        };
        let (tx, rx) = mpsc::channel(2);
        let tail = Tail {
            hub: self.clone(),
            table: table.name.clone(),
            schema,
            cursor: start_seq,
            after,
            taken_bytes: start_bytes,
            sent_bytes: start_bytes,
        };
        tokio::spawn(tail.run(tx));
        Ok(rx)
    }

    /// The slot's acknowledged position; a missing slot says how to make it.
    async fn slot_position(&self) -> Result<u64, CdcError> {
        let client = self.pool.get().await.map_err(crate::error::DbError::from)?;
        let row = client
            .query_opt(
                "SELECT confirmed_flush_lsn::text FROM pg_catalog.pg_replication_slots
                 WHERE slot_name = $1 AND database = current_database()",
                &[&self.settings.slot],
            )
            .await?;
        match row.and_then(|r| r.get::<_, Option<String>>(0)) {
            Some(lsn) => parse_lsn(&lsn),
            None => Err(CdcError::Gone(format!(
                "no logical replication slot {:?} in this database: run `hyperflight cdc setup`",
                self.settings.slot
            ))),
        }
    }

    fn spawn_session(&self) -> JoinHandle<()> {
        let (target, catalog, state, wake) = (
            self.target.clone(),
            self.catalog.clone(),
            self.state.clone(),
            self.wake.clone(),
        );
        let options = StreamOptions {
            slot: self.settings.slot.clone(),
            publication: self.settings.publication.clone(),
            tables: Vec::new(),
            start_lsn: None,
            stop_lsn: None,
        };
        let cap = self.settings.buffer_bytes;
        tokio::spawn(async move {
            let failure = match ChangeStream::start_with(&target, catalog, options).await {
                Ok(mut stream) => loop {
                    match stream.next().await {
                        Ok(Some(batch)) => {
                            let ack = push(&state, batch, cap, stream.position());
                            stream.acknowledge(ack);
                            let seq = state.lock().expect("tail state").next_seq;
                            wake.send_replace(seq);
                        }
                        Ok(None) => break "the database ended the replication stream".to_string(),
                        Err(e) => break e.to_string(),
                    }
                },
                Err(e) => e.to_string(),
            };
            tracing::warn!("live tail session ended: {failure}");
            let mut s = state.lock().expect("tail state");
            s.failed = Some(failure);
            s.task = None;
            drop(s);
            wake.send_modify(|v| *v += 1);
        })
    }

    fn unsubscribe(&self) {
        let mut state = self.state.lock().expect("tail state");
        state.subscribers -= 1;
        if state.subscribers == 0 {
            // The last tail left: end the replication session, which frees the slot.
            if let Some(task) = state.task.take() {
                task.abort();
            }
            *state = State {
                gone_upto: state.gone_upto,
                acked: state.acked,
                ..State::default()
            };
        }
    }
}

/// Buffers a batch, dropping the oldest beyond `cap` bytes; returns the LSN the slot may be
/// acknowledged to.
fn push(state: &Mutex<State>, batch: ChangeBatch, cap: u64, position: u64) -> u64 {
    let mut s = state.lock().expect("tail state");
    let bytes = batch.batch.get_array_memory_size() as u64;
    s.total_bytes += bytes;
    s.ring_bytes += bytes;
    let seq = s.next_seq;
    s.next_seq += 1;
    let end_bytes = s.total_bytes;
    s.ring.push_back(Entry {
        seq,
        batch: Arc::new(batch),
        end_bytes,
    });
    while s.ring_bytes > cap && s.ring.len() > 1 {
        let old = s.ring.pop_front().expect("not empty");
        s.ring_bytes -= old.batch.batch.get_array_memory_size() as u64;
        s.gone_upto = Some(s.gone_upto.unwrap_or_default().max(old.batch.lsn));
    }
    // The slot may forget what left the buffer; with nothing buffered, everything up to here.
    // (PostgreSQL replays the transactions that commit after the acknowledged position.)
    let ack = match s.ring.front() {
        Some(_) => s.gone_upto.unwrap_or_default(),
        None => position,
    };
    s.acked = s.acked.max(ack);
    s.acked
}

/// One client's tail.
struct Tail {
    hub: Arc<TailHub>,
    table: QualifiedName,
    schema: SchemaRef,
    /// The next entry to look at.
    cursor: u64,
    /// Changes at or before this LSN were delivered.
    after: u64,
    /// The hub's byte count up to the last entry looked at…
    taken_bytes: u64,
    /// …and up to the last entry delivered: the client's lag is measured from here.
    sent_bytes: u64,
}

impl Tail {
    async fn run(mut self, tx: mpsc::Sender<TailItem>) {
        let mut wake = self.hub.wake.subscribe();
        let mut pending: Vec<Arc<ChangeBatch>> = Vec::new();
        let mut rows = 0;
        let mut oldest: Option<Instant> = None;
        let settings = self.hub.settings.clone();
        let outcome = loop {
            match self.take(&mut pending) {
                Err(e) => break Err(e),
                Ok(added) => {
                    rows += added;
                    if added > 0 && oldest.is_none() {
                        oldest = Some(Instant::now());
                    }
                }
            }
            let due = oldest.is_some_and(|t| t.elapsed() >= settings.max_latency);
            if rows > 0 && (rows >= settings.batch_rows || due) {
                let item = self.flush(&mut pending);
                let taken_bytes = self.taken_bytes;
                rows = 0;
                oldest = None;
                // While the client does not read, changes go on arriving: cut it once it is too
                // far behind, rather than wait for it.
                let permit = loop {
                    tokio::select! {
                        permit = tx.reserve() => break permit.map_err(|_| None),
                        changed = wake.changed() => {
                            if changed.is_err() {
                                break Err(None);
                            }
                            let state = self.hub.state.lock().expect("tail state");
                            if let Err(e) = self.check_lag(&state, true) {
                                break Err(Some(e));
                            }
                        }
                    }
                };
                match permit {
                    Ok(permit) => {
                        let sent = item.as_ref().ok().map(|(_, lsn)| *lsn);
                        permit.send(item);
                        match sent {
                            Some(lsn) => {
                                self.after = lsn;
                                self.sent_bytes = taken_bytes;
                            }
                            None => break Ok(()),
                        }
                    }
                    Err(Some(cut)) => break Err(cut),
                    Err(None) => break Ok(()),
                }
                continue;
            }
            let wait = oldest.map_or(Duration::from_secs(3600), |t| {
                settings.max_latency.saturating_sub(t.elapsed())
            });
            tokio::select! {
                _ = tx.closed() => break Ok(()),
                changed = tokio::time::timeout(wait, wake.changed()) => {
                    if let Ok(Err(_)) = changed {
                        break Ok(());
                    }
                }
            }
        };
        // Leave first: a client that never reads again must not keep the session going.
        self.hub.unsubscribe();
        if let Err(e) = outcome {
            // The batches already taken are delivered first, so the ticket to resume is exact;
            // not so for a cut client, which is behind already.
            if !pending.is_empty() && !matches!(e, CdcError::Behind(_)) {
                let item = self.flush(&mut pending);
                let _ = tx.send(item).await;
            }
            let _ = tx.send(Err(e)).await;
        }
    }

    /// A client is cut once changes it still needs left the buffer, or (`waiting`: while it reads
    /// nothing) once what it has not received passes half the buffer, so that its resume point is
    /// still held when it is cut.
    fn check_lag(&self, state: &State, waiting: bool) -> Result<(), CdcError> {
        let lagging =
            waiting && state.total_bytes - self.sent_bytes > self.hub.settings.buffer_bytes / 2;
        if lagging || state.gone_upto.is_some_and(|gone| gone > self.after) {
            return Err(CdcError::Behind(format!(
                "this tail reads slower than changes arrive; resume from the last batch's ticket \
                 (changes after {})",
                Lsn(self.after)
            )));
        }
        Ok(())
    }

    /// Takes this table's new entries after `after`; returns the rows taken.
    fn take(&mut self, pending: &mut Vec<Arc<ChangeBatch>>) -> Result<usize, CdcError> {
        let state = self.hub.state.lock().expect("tail state");
        if state.failed.is_some() {
            // The reason (which may quote the database) is in the server log.
            return Err(CdcError::Unavailable(
                "the live tail's replication session ended (the server log says why); resume from the last ticket".into(),
            ));
        }
        self.check_lag(&state, false)?;
        let Some(first) = state.ring.front() else {
            return Ok(0);
        };
        // Entries that left the buffer unseen held nothing for this tail (else check_lag cut it).
        let index = self.cursor.saturating_sub(first.seq) as usize;
        let mut rows = 0;
        for entry in state.ring.iter().skip(index) {
            self.cursor = entry.seq + 1;
            self.taken_bytes = entry.end_bytes;
            if entry.batch.table == self.table && entry.batch.lsn > self.after {
                rows += entry.batch.batch.num_rows();
                pending.push(entry.batch.clone());
            }
        }
        if pending.is_empty() {
            // Nothing undelivered: other tables' changes are no lag.
            self.sent_bytes = self.taken_bytes;
        }
        Ok(rows)
    }

    /// One record batch of the pending changes; the ticket resumes after the last transaction.
    fn flush(&self, pending: &mut Vec<Arc<ChangeBatch>>) -> TailItem {
        let batches: Vec<RecordBatch> = pending.iter().map(|b| b.batch.clone()).collect();
        let lsn = pending.last().map_or(self.after, |b| b.lsn);
        pending.clear();
        let batch = arrow::compute::concat_batches(&self.schema, &batches)
            .map_err(|e| CdcError::Protocol(format!("cannot join change batches: {e}")))?;
        Ok((batch, lsn))
    }
}

/// An LSN as PostgreSQL prints it (`16/B374D848`).
pub fn parse_lsn(text: &str) -> Result<u64, CdcError> {
    Lsn::parse(text)
        .map(|l| l.0)
        .map_err(|_| CdcError::Refused(format!("{text:?} is not an LSN (like 16/B374D848)")))
}

/// Whether a descriptor asks for a tail (`"follow": true`), and from where. Malformed commands are
/// left to the ordinary descriptor parsing, which says what is wrong.
pub fn tail_request(descriptor: &arrow_flight::FlightDescriptor) -> Option<Option<String>> {
    use arrow_flight::flight_descriptor::DescriptorType;
    if DescriptorType::try_from(descriptor.r#type) != Ok(DescriptorType::Cmd) {
        return None;
    }
    let command = protocol::Command::from_json(&descriptor.cmd).ok()?;
    command.follow.then_some(command.from)
}

/// A tail's DoGet response: the schema, then each batch with the ticket `resume` makes for its LSN;
/// an error ends the stream after the batches before it.
pub fn tail_flight_data(
    schema: SchemaRef,
    relation: String,
    changes: mpsc::Receiver<TailItem>,
    resume: impl Fn(u64) -> bytes::Bytes + Send + 'static,
    metrics: Arc<crate::metrics::Metrics>,
) -> impl futures::Stream<Item = Result<arrow_flight::FlightData, tonic::Status>> + Send + 'static {
    use arrow::ipc::writer::{DictionaryTracker, IpcDataGenerator, IpcWriteOptions};
    use futures::StreamExt;
    let options = IpcWriteOptions::default();
    let head: arrow_flight::FlightData = arrow_flight::SchemaAsIpc::new(&schema, &options).into();
    let generator = IpcDataGenerator::default();
    let mut dictionaries = DictionaryTracker::new(false);
    let mut context = Default::default();
    tracing::info!(relation, "live tail started");
    let body = tokio_stream::wrappers::ReceiverStream::new(changes).map(move |item| {
        let (batch, lsn) = item.map_err(tonic::Status::from)?;
        let (_, encoded) = generator
            .encode(&batch, &mut dictionaries, &options, &mut context)
            .map_err(|e| tonic::Status::internal(format!("cannot encode a change batch: {e}")))?;
        let data = arrow_flight::FlightData::from(encoded).with_app_metadata(resume(lsn));
        metrics.rows.inc_by(batch.num_rows() as u64);
        metrics
            .bytes
            .inc_by((data.data_header.len() + data.data_body.len()) as u64);
        Ok(data)
    });
    futures::stream::once(async move { Ok(head) }).chain(body)
}
