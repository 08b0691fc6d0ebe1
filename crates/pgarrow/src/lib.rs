//! PostgreSQL → Arrow: the type table and the binary COPY decoder.
//!
//! ```text
//! catalog (PgType) ──plan_column──▶ ColumnPlan { field, cast_to_text }
//!                                        │ SQL: COPY (SELECT ctid, "a", "b"::text …) TO STDOUT (FORMAT binary)
//!                                        ▼
//! CopyData bytes ──CopyDecoder::push──▶ columnar builders ──next_batch/finish──▶ RecordBatch + last ctid
//! ```
//!
//! - `types`: [`plan_column`], the one reviewable table of what each PostgreSQL type becomes in
//!   Arrow, including the rules for special values (infinities, NaN, overflow).
//! - `decode`: [`CopyDecoder`] reads the binary COPY format (header, tuples, trailer) in whatever
//!   pieces it arrives, straight into Arrow builders: no text parsing, no per-value allocation.
//! - `numeric`: PostgreSQL's base-10000 `numeric` to exact text or `Decimal128`.
//!
//! Decoding never panics on bad input: every malformed, truncated or unrepresentable value is an
//! [`Error`] that names the column.
//!
//! ```
//! use pgarrow::{plan_column, BatchLimits, CopyDecoder, PgType};
//!
//! let int4 = PgType { oid: 23, typmod: -1, elem_oid: None, is_enum: false };
//! let plans = [plan_column("n", &int4)];
//! let mut decoder = CopyDecoder::new(&plans, false, BatchLimits { rows: 1024, bytes: 1 << 20 });
//! decoder.push(b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0")?; // header
//! decoder.push(&[0, 1, 0, 0, 0, 4, 0, 0, 0, 42])?; // one row: n = 42
//! decoder.push(&[0xff, 0xff])?; // trailer
//! let batch = decoder.finish()?.expect("one row pending").batch;
//! assert_eq!(batch.num_rows(), 1);
//! # Ok::<(), pgarrow::Error>(())
//! ```

mod bits;
mod decode;
mod error;
mod numeric;
mod types;

#[cfg(test)]
mod tests;

/// Quotes a SQL identifier: always double-quoted, embedded quotes doubled.
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

pub use decode::{BatchLimits, CopyDecoder, DecodedBatch, Tid};
pub use error::Error;
pub use types::{plan_column, ColumnPlan, PgType};
