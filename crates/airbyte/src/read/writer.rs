//! The writer thread: the only code that touches stdout during a read. It owns the stream's
//! [`StreamState`] bookkeeping ([`Book`]), so a STATE covers exactly the records written before it.

use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::messages::{
    Message, SourceStats, StateMessage, StreamDescriptor, StreamStateMessage, StreamStatus,
};
use crate::output::Output;
use crate::state::{CursorKind, StreamState};
use crate::Error;

/// A STATE after this many batches of a stream without one (besides one per finished endpoint).
pub const STATE_EVERY_BATCHES: u32 = 2;

pub(super) const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// Record buffers kept for reuse, and the largest kept.
const POOLED_BUFFERS: usize = 16;
const POOLED_BUFFER_BYTES: usize = 64 << 20;

/// RECORD buffers handed back by the writer: reusing them spares the allocator and the page
/// faults of fresh multi-megabyte buffers for every batch.
#[derive(Clone, Default)]
pub(super) struct Buffers(Arc<Mutex<Vec<Vec<u8>>>>);

impl Buffers {
    pub(super) fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .ok()
            .and_then(|mut v| v.pop())
            .unwrap_or_default()
    }

    pub(super) fn give(&self, mut buffer: Vec<u8>) {
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

/// What the writer thread is told, in order.
pub(super) enum Event {
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
pub(super) struct Book {
    descriptor: StreamDescriptor,
    /// What the next STATE says.
    state: StreamState,
    /// Endpoint keys by index.
    keys: Vec<String>,
    /// How cursor values are written (incremental).
    cursor: Option<CursorKind>,
    /// The pass's lower bound (incremental).
    lower: Option<i64>,
    /// Highest cursor written by the pass.
    pass_max: Option<i64>,
    /// Records since the last STATE (its `sourceStats.recordCount`).
    records_since_state: u64,
    /// Batches since the last STATE.
    batches_since_state: u32,
    /// Whether TRACE RUNNING was written.
    running: bool,
    /// Whether STATEs and the final TRACE COMPLETE are written: not for the CDC copy, whose one
    /// STATE (then COMPLETE) is written once every stream is copied.
    states: bool,
}

impl Book {
    /// The bookkeeping of a stream whose endpoints are `keys`, continuing `state`.
    pub(super) fn new(
        descriptor: StreamDescriptor,
        state: StreamState,
        keys: Vec<String>,
        cursor: Option<CursorKind>,
        lower: Option<i64>,
        pass_max: Option<i64>,
        states: bool,
    ) -> Book {
        Book {
            descriptor,
            state,
            keys,
            cursor,
            lower,
            pass_max,
            records_since_state: 0,
            batches_since_state: 0,
            running: false,
            states,
        }
    }

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
        if !self.states {
            return Ok(());
        }
        self.checkpoint(out)?;
        out.message(&Message::status(&self.descriptor, StreamStatus::Complete))
    }

    /// Writes the STATE covering everything written so far, and makes it visible.
    fn checkpoint(&mut self, out: &mut Output) -> std::io::Result<()> {
        if !self.states {
            return Ok(());
        }
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
pub(super) fn write_loop(
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
pub(super) fn writer_gone() -> Error {
    Error::Output(std::io::Error::new(
        std::io::ErrorKind::BrokenPipe,
        "the output writer stopped",
    ))
}
