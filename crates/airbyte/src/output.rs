//! The one writer of stdout: buffered, one JSON message per line, flushed when a message must be
//! visible (every STATE, the end of a command).

use std::io::{BufWriter, Write};

use crate::messages::Message;

/// Buffer in front of stdout; RECORD blocks larger than this bypass it.
const BUFFER: usize = 1 << 20;

/// Buffered line output of Airbyte messages.
pub struct Output {
    inner: BufWriter<Box<dyn Write + Send>>,
}

impl Output {
    /// Output to this process's stdout.
    pub fn stdout() -> Output {
        Output::new(Box::new(std::io::stdout()))
    }

    /// Output to any writer (tests).
    pub fn new(w: Box<dyn Write + Send>) -> Output {
        Output {
            inner: BufWriter::with_capacity(BUFFER, w),
        }
    }

    /// Writes one message line.
    pub fn message(&mut self, m: &Message) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.inner, m)?;
        self.inner.write_all(b"\n")
    }

    /// Writes lines already encoded (RECORD blocks, each line ending in `\n`).
    pub fn lines(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.inner.write_all(bytes)
    }

    /// Makes everything written so far visible to the reader.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
