//! Why a binary COPY stream could not be turned into Arrow batches.
//!
//! Every variant is a fault of the data the database sent (or of a bug here), never of the
//! Flight client; messages name the column where there is one.

use arrow::error::ArrowError;

/// A binary COPY stream that cannot be decoded. After an error the [`CopyDecoder`] is unusable.
///
/// [`CopyDecoder`]: super::CopyDecoder
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The stream's framing is wrong: signature, header, field count, truncation, trailer.
    #[error("malformed binary COPY stream: {detail}")]
    Stream { detail: String },
    /// A value's bytes are not a valid binary encoding of the column's type.
    #[error("column {column:?}: malformed binary value: {detail}")]
    Malformed { column: String, detail: String },
    /// Text bytes in a finished batch are not UTF-8.
    #[error("column {column:?}: text is not valid UTF-8")]
    InvalidUtf8 { column: String },
    /// A valid PostgreSQL value that the column's Arrow type cannot hold exactly.
    #[error("column {column:?}: value not representable in Arrow: {detail}")]
    Unrepresentable { column: String, detail: String },
    /// Arrays of more than one dimension have no Arrow mapping here.
    #[error("column {column:?}: multi-dimensional arrays ({ndim} dimensions) are not supported")]
    MultiDimensionalArray { column: String, ndim: i32 },
    /// `push`/`finish` after an earlier error.
    #[error("binary COPY decoder used after an earlier error")]
    Poisoned,
    /// Assembling the Arrow arrays failed: a bug in this module, not bad data.
    #[error("building an Arrow array failed: {0}")]
    Arrow(#[source] ArrowError),
}

impl Error {
    pub(crate) fn stream(detail: impl Into<String>) -> Self {
        Error::Stream {
            detail: detail.into(),
        }
    }
}
