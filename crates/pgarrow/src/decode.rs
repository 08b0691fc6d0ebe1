//! Binary `COPY ... TO STDOUT (FORMAT binary)` → Arrow record batches.
//!
//! Values go straight from the wire into columnar builders: native `Vec`s plus a null bitmap,
//! offsets plus bytes for text (validated as UTF-8 once per finished array). A row is first
//! scanned (field count, every length within the bytes at hand), then decoded; so a row split
//! across `push` calls is kept whole in a pending buffer and decoded once its last byte arrives,
//! while the common case, one whole row per `push`, decodes from the caller's slice.

use std::collections::VecDeque;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, FixedSizeBinaryArray, ListArray, PrimitiveArray,
    StringArray,
};
use arrow::buffer::{Buffer, OffsetBuffer};
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Date32Type, Decimal128Type, Field, FieldRef, Float32Type,
    Float64Type, Int16Type, Int32Type, Int64Type, IntervalMonthDayNano, IntervalMonthDayNanoType,
    Schema, SchemaRef, Time64MicrosecondType, TimestampMicrosecondType,
};
use arrow::error::ArrowError;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};

use super::bits::{Bits, Validity};
use super::numeric::Numeric;
use super::types::{ColumnPlan, Kind, Scalar};
use super::Error;

/// `PGCOPY\n\377\r\n\0`
const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// Signature, flags, header-extension length.
const HEADER_LEN: usize = 19;
/// Header flag bit 16: every row carries an OID (never for `COPY (SELECT ...)`; not supported).
const FLAG_OIDS: i32 = 1 << 16;
/// Days from 1970-01-01 to PostgreSQL's epoch 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;
/// Microseconds from 1970-01-01 to PostgreSQL's epoch 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// `time` runs from 00:00:00 to 24:00:00 inclusive.
const MAX_TIME_MICROS: i64 = 86_400_000_000;
/// Upper bound on `BatchLimits::bytes`, so that the `i32` offsets of text, binary and list
/// arrays cannot overflow within one batch (PostgreSQL values are at most 1 GiB each).
const MAX_BATCH_BYTES: usize = 512 << 20;
/// Upper bound on the rows builders reserve room for up front.
const MAX_RESERVED_ROWS: usize = 1 << 16;

/// A PostgreSQL tuple id (`ctid`): heap block number and line pointer within the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tid {
    pub block: u32,
    pub offset: u16,
}

/// When a batch is emitted: as soon as it holds `rows` rows or about `bytes` bytes of values,
/// whichever comes first. `bytes` counts the binary size of the values (capped at 512 MiB).
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub rows: usize,
    pub bytes: usize,
}

/// One decoded batch and, when the stream carries a `ctid`, the tid of its last row.
#[derive(Debug)]
pub struct DecodedBatch {
    pub batch: RecordBatch,
    pub last_tid: Option<Tid>,
}

/// Decodes one binary COPY stream into record batches (see the [module docs](super)).
pub struct CopyDecoder {
    schema: SchemaRef,
    builders: Vec<Builder>,
    with_tid: bool,
    limits: BatchLimits,
    state: State,
    /// Unconsumed bytes: a header or row whose end has not arrived yet.
    pending: Vec<u8>,
    /// `pending` must reach this length before scanning it again can make progress.
    need: usize,
    /// Where each field of the current row lies; reused across rows.
    spans: Vec<Span>,
    rows: usize,
    bytes: usize,
    last_tid: Option<Tid>,
    ready: VecDeque<DecodedBatch>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    Rows,
    /// The trailer has been read; nothing may follow.
    Ended,
    /// An error was returned; the stream cannot be resumed.
    Failed,
}

/// A field of the current row: `len` bytes at `start`, or NULL when `len` is -1.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    len: i32,
}

/// Result of looking at the start of the unconsumed bytes.
enum Scan {
    /// At least this many bytes (from the same start) are needed to get further.
    Need(usize),
    /// A whole header or row of this many bytes.
    Complete(usize),
    /// The 2-byte trailer.
    Trailer,
}

impl CopyDecoder {
    /// `with_tid`: the first COPY field of every row is a `ctid` (PostgreSQL `tid`, binary = u32 block,
    /// u16 offset, big-endian), not part of the schema; it is tracked so each batch reports the tid of
    /// its last row.
    pub fn new(plans: &[ColumnPlan], with_tid: bool, limits: BatchLimits) -> Self {
        let limits = BatchLimits {
            rows: limits.rows.max(1),
            bytes: limits.bytes.min(MAX_BATCH_BYTES),
        };
        let reserve = limits.rows.min(MAX_RESERVED_ROWS);
        let schema = Arc::new(Schema::new(
            plans.iter().map(|p| p.field.clone()).collect::<Vec<_>>(),
        ));
        let builders = plans
            .iter()
            .map(|p| Builder::new(p.kind, &p.field, reserve))
            .collect();
        CopyDecoder {
            schema,
            builders,
            with_tid,
            limits,
            state: State::Header,
            pending: Vec::new(),
            need: 0,
            spans: Vec::with_capacity(plans.len() + 1),
            rows: 0,
            bytes: 0,
            last_tid: None,
            ready: VecDeque::new(),
        }
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Feed the next bytes of the COPY stream (any split: the header, a row, several rows, or part of
    /// a row). Whole rows are decoded into builders; a partial row is kept until its rest arrives.
    pub fn push(&mut self, data: &[u8]) -> Result<(), Error> {
        if self.state == State::Failed {
            return Err(Error::Poisoned);
        }
        let result = if self.pending.is_empty() {
            // Fast path: decode straight from the caller's bytes, keep only an unfinished tail.
            self.consume(data).map(|used| {
                self.pending
                    .extend_from_slice(data.get(used..).unwrap_or_default());
            })
        } else {
            self.pending.extend_from_slice(data);
            if self.pending.len() < self.need {
                return Ok(());
            }
            let pending = std::mem::take(&mut self.pending);
            let result = self.consume(&pending);
            self.pending = pending;
            result.map(|used| {
                let used = used.min(self.pending.len());
                self.pending.drain(..used);
            })
        };
        if result.is_err() {
            self.fail();
        }
        result
    }

    /// A finished batch, if one is ready (call after each push until None).
    pub fn next_batch(&mut self) -> Option<DecodedBatch> {
        self.ready.pop_front()
    }

    /// End of the COPY stream: checks the trailer (-1 field count) was seen and no partial row is
    /// left, returns the last partial batch (None if no rows are pending). Batches from earlier
    /// pushes not yet taken with [`next_batch`](Self::next_batch) come first: keep calling
    /// `next_batch` after `finish` until it returns None if they may not have been taken.
    pub fn finish(&mut self) -> Result<Option<DecodedBatch>, Error> {
        match self.state {
            State::Failed => Err(Error::Poisoned),
            State::Header | State::Rows => {
                let detail = if self.pending.is_empty() {
                    "stream ended before its trailer".to_owned()
                } else {
                    format!(
                        "stream ended inside a row or header ({} bytes left over)",
                        self.pending.len()
                    )
                };
                self.fail();
                Err(Error::stream(detail))
            }
            State::Ended => {
                if self.rows > 0 {
                    if let Err(e) = self.flush() {
                        self.fail();
                        return Err(e);
                    }
                }
                Ok(self.ready.pop_front())
            }
        }
    }

    fn fail(&mut self) {
        self.state = State::Failed;
        self.pending = Vec::new();
    }

    /// Decodes every whole header/row/trailer at the start of `buf`; returns the bytes used.
    fn consume(&mut self, buf: &[u8]) -> Result<usize, Error> {
        let mut pos = 0;
        self.need = 0;
        loop {
            let rest = buf.get(pos..).unwrap_or_default();
            let scan = match self.state {
                State::Header => scan_header(rest)?,
                State::Rows => self.scan_row(rest)?,
                State::Ended if rest.is_empty() => return Ok(pos),
                State::Ended => return Err(Error::stream("data after the trailer")),
                State::Failed => return Err(Error::Poisoned),
            };
            match scan {
                Scan::Need(n) => {
                    self.need = n;
                    return Ok(pos);
                }
                Scan::Trailer => {
                    pos += 2;
                    self.state = State::Ended;
                }
                Scan::Complete(len) if self.state == State::Header => {
                    pos += len;
                    self.state = State::Rows;
                }
                Scan::Complete(len) => {
                    self.decode_row(rest)?;
                    pos += len;
                    if self.rows >= self.limits.rows || self.bytes >= self.limits.bytes {
                        self.flush()?;
                    }
                }
            }
        }
    }

    /// Checks that `rest` starts with a whole row (or the trailer) and records its fields' spans.
    fn scan_row(&mut self, rest: &[u8]) -> Result<Scan, Error> {
        let Some(count) = rest.first_chunk::<2>().map(|b| i16::from_be_bytes(*b)) else {
            return Ok(Scan::Need(2));
        };
        if count == -1 {
            return Ok(Scan::Trailer);
        }
        let expected = self.builders.len() + usize::from(self.with_tid);
        if usize::try_from(count).ok() != Some(expected) {
            return Err(Error::stream(format!(
                "row has {count} fields, expected {expected}"
            )));
        }
        self.spans.clear();
        let mut pos = 2;
        for _ in 0..expected {
            let Some(len) = read_i32(rest, pos) else {
                return Ok(Scan::Need(pos + 4));
            };
            pos += 4;
            if len == -1 {
                self.spans.push(Span {
                    start: pos,
                    len: -1,
                });
                continue;
            }
            let Some(end) = usize::try_from(len).ok().and_then(|l| pos.checked_add(l)) else {
                return Err(Error::stream(format!("field length {len}")));
            };
            if rest.len() < end {
                return Ok(Scan::Need(end));
            }
            self.spans.push(Span { start: pos, len });
            pos = end;
        }
        Ok(Scan::Complete(pos))
    }

    /// Appends the row just scanned (`spans`) to the builders.
    fn decode_row(&mut self, rest: &[u8]) -> Result<(), Error> {
        let mut spans = self.spans.iter();
        if self.with_tid {
            let tid = spans
                .next()
                .and_then(|s| field(rest, *s))
                .and_then(|v| <[u8; 6]>::try_from(v).ok())
                .ok_or_else(|| Error::stream("ctid field is not a 6-byte tid"))?;
            self.last_tid = Some(Tid {
                block: u32::from_be_bytes([tid[0], tid[1], tid[2], tid[3]]),
                offset: u16::from_be_bytes([tid[4], tid[5]]),
            });
        }
        let mut bytes = 0;
        for (i, (builder, span)) in self.builders.iter_mut().zip(spans).enumerate() {
            let value = if span.len < 0 {
                None
            } else {
                bytes += span.len as usize;
                Some(field(rest, *span).ok_or_else(|| Error::stream("field out of bounds"))?)
            };
            if let Err(e) = builder.append(value) {
                return Err(e.into_error(self.schema.field(i).name()));
            }
        }
        self.rows += 1;
        self.bytes += bytes;
        Ok(())
    }

    /// Turns the builders' contents into a batch on the ready queue.
    fn flush(&mut self) -> Result<(), Error> {
        let mut columns = Vec::with_capacity(self.builders.len());
        for (i, builder) in self.builders.iter_mut().enumerate() {
            match builder.finish() {
                Ok(array) => columns.push(array),
                Err(e) => return Err(e.into_error(self.schema.field(i).name())),
            }
        }
        let options = RecordBatchOptions::new().with_row_count(Some(self.rows));
        let batch = RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)
            .map_err(Error::Arrow)?;
        self.ready.push_back(DecodedBatch {
            batch,
            last_tid: self.last_tid.take(),
        });
        self.rows = 0;
        self.bytes = 0;
        Ok(())
    }
}

fn scan_header(rest: &[u8]) -> Result<Scan, Error> {
    let n = rest.len().min(SIGNATURE.len());
    if rest.get(..n) != SIGNATURE.get(..n) {
        return Err(Error::stream("bad signature (not a binary COPY stream)"));
    }
    let (Some(flags), Some(ext)) = (read_i32(rest, 11), read_i32(rest, 15)) else {
        return Ok(Scan::Need(HEADER_LEN));
    };
    // Bits 0-15 flag incompatible format changes; bit 16 means rows carry OIDs.
    if flags & 0xFFFF != 0 || flags & FLAG_OIDS != 0 {
        return Err(Error::stream(format!(
            "unsupported header flags {flags:#x}"
        )));
    }
    let Some(total) = usize::try_from(ext)
        .ok()
        .and_then(|e| e.checked_add(HEADER_LEN))
    else {
        return Err(Error::stream(format!("header extension length {ext}")));
    };
    Ok(if rest.len() < total {
        Scan::Need(total)
    } else {
        Scan::Complete(total)
    })
}

fn read_i32(buf: &[u8], at: usize) -> Option<i32> {
    let b = buf.get(at..at.checked_add(4)?)?;
    Some(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn field(rest: &[u8], span: Span) -> Option<&[u8]> {
    let len = usize::try_from(span.len).ok()?;
    rest.get(span.start..span.start.checked_add(len)?)
}

/// Why one value could not be appended, before the column's name is attached.
#[derive(Debug)]
pub(crate) enum ValueError {
    Malformed(String),
    Unrepresentable(String),
    MultiDimensional(i32),
    InvalidUtf8,
    Arrow(ArrowError),
}

impl ValueError {
    pub(crate) fn malformed(detail: impl Into<String>) -> Self {
        ValueError::Malformed(detail.into())
    }

    fn into_error(self, column: &str) -> Error {
        let column = column.to_owned();
        match self {
            ValueError::Malformed(detail) => Error::Malformed { column, detail },
            ValueError::Unrepresentable(detail) => Error::Unrepresentable { column, detail },
            ValueError::MultiDimensional(ndim) => Error::MultiDimensionalArray { column, ndim },
            ValueError::InvalidUtf8 => Error::InvalidUtf8 { column },
            ValueError::Arrow(e) => Error::Arrow(e),
        }
    }
}

impl From<ArrowError> for ValueError {
    fn from(e: ArrowError) -> Self {
        ValueError::Arrow(e)
    }
}

/// A fixed-width value's bytes, or a length error.
#[inline]
fn fixed<const N: usize>(v: &[u8]) -> Result<[u8; N], ValueError> {
    <[u8; N]>::try_from(v)
        .map_err(|_| ValueError::malformed(format!("expected {N} bytes, got {}", v.len())))
}

/// Takes a builder's vector, leaving one as large as this batch's for the next.
fn take_vec<T>(v: &mut Vec<T>) -> Vec<T> {
    let capacity = v.len();
    std::mem::replace(v, Vec::with_capacity(capacity))
}

/// Native values and validity of a primitive column.
struct Prim<T: ArrowPrimitiveType> {
    values: Vec<T::Native>,
    nulls: Validity,
}

impl<T: ArrowPrimitiveType> Prim<T> {
    fn new(reserve: usize) -> Self {
        Prim {
            values: Vec::with_capacity(reserve),
            nulls: Validity::new(reserve),
        }
    }

    #[inline]
    fn push(&mut self, v: T::Native) {
        self.values.push(v);
        self.nulls.append_non_null();
    }

    fn push_null(&mut self) {
        self.values.push(T::Native::default());
        self.nulls.append_null();
    }

    fn finish(&mut self) -> Result<PrimitiveArray<T>, ArrowError> {
        PrimitiveArray::try_new(take_vec(&mut self.values).into(), self.nulls.finish())
    }
}

/// Offsets and validity of a variable-length column: text, binary, or a list.
struct Ends {
    offsets: Vec<i32>,
    nulls: Validity,
}

impl Ends {
    fn new(reserve: usize) -> Self {
        let mut offsets = Vec::with_capacity(reserve + 1);
        offsets.push(0);
        Ends {
            offsets,
            nulls: Validity::new(reserve),
        }
    }

    /// Ends a non-null value at `end` (bytes or items so far); `what` names the unit for the error.
    #[inline]
    fn push(&mut self, end: usize, what: &str) -> Result<(), ValueError> {
        let end = i32::try_from(end).map_err(|_| {
            ValueError::Unrepresentable(format!("more than 2^31 {what} in one batch"))
        })?;
        self.offsets.push(end);
        self.nulls.append_non_null();
        Ok(())
    }

    fn push_null(&mut self) {
        let end = self.offsets.last().copied().unwrap_or(0);
        self.offsets.push(end);
        self.nulls.append_null();
    }

    fn finish(&mut self) -> (OffsetBuffer<i32>, Option<arrow::buffer::NullBuffer>) {
        let mut next = Vec::with_capacity(self.offsets.len());
        next.push(0);
        let offsets = std::mem::replace(&mut self.offsets, next);
        (OffsetBuffer::new(offsets.into()), self.nulls.finish())
    }
}

/// Offsets, bytes and validity of a text or binary column.
struct Var {
    ends: Ends,
    data: Vec<u8>,
}

impl Var {
    fn new(reserve: usize) -> Self {
        Var {
            ends: Ends::new(reserve),
            data: Vec::new(),
        }
    }

    #[inline]
    fn push(&mut self, v: &[u8]) -> Result<(), ValueError> {
        self.data.extend_from_slice(v);
        self.commit()
    }

    /// Ends a value whose bytes were written to `data`.
    #[inline]
    fn commit(&mut self) -> Result<(), ValueError> {
        self.ends.push(self.data.len(), "bytes of values")
    }

    fn push_null(&mut self) {
        self.ends.push_null();
    }

    fn finish(&mut self) -> (OffsetBuffer<i32>, Buffer, Option<arrow::buffer::NullBuffer>) {
        let (offsets, nulls) = self.ends.finish();
        (offsets, Buffer::from_vec(take_vec(&mut self.data)), nulls)
    }

    fn finish_utf8(&mut self) -> Result<ArrayRef, ValueError> {
        let (offsets, data, nulls) = self.finish();
        // The one UTF-8 validation of the batch's text (whole buffer, then offset boundaries).
        StringArray::try_new(offsets, data, nulls)
            .map(|a| Arc::new(a) as ArrayRef)
            .map_err(|_| ValueError::InvalidUtf8)
    }
}

/// A one-dimensional array column: list offsets and validity around an element builder.
struct ListCol {
    ends: Ends,
    items: usize,
    item: Builder,
    field: FieldRef,
}

impl ListCol {
    /// `array_send`: i32 ndim, i32 flags, u32 element oid, per dimension (i32 size, i32 lower
    /// bound), then the elements as (i32 length or -1, bytes).
    fn append(&mut self, v: &[u8]) -> Result<(), ValueError> {
        let mut r = Reader(v);
        let ndim = r.i32()?;
        let _flags = r.i32()?;
        let _elem_oid = r.i32()?;
        match ndim {
            0 => {}
            1 => {
                let n = r.i32()?;
                let _lower_bound = r.i32()?;
                if n < 0 {
                    return Err(ValueError::malformed(format!("array of {n} elements")));
                }
                for _ in 0..n {
                    match r.i32()? {
                        -1 => self.item.append(None)?,
                        len => self.item.append(Some(r.take(len)?))?,
                    }
                    self.items += 1;
                }
            }
            n if n > 1 => return Err(ValueError::MultiDimensional(n)),
            n => return Err(ValueError::malformed(format!("array of {n} dimensions"))),
        }
        if !r.0.is_empty() {
            return Err(ValueError::malformed(
                "bytes after the array's last element",
            ));
        }
        self.ends.push(self.items, "array elements")
    }

    fn push_null(&mut self) {
        self.ends.push_null();
    }

    fn finish(&mut self) -> Result<ArrayRef, ValueError> {
        let (offsets, nulls) = self.ends.finish();
        self.items = 0;
        let values = self.item.finish()?;
        let list = ListArray::try_new(self.field.clone(), offsets, values, nulls)?;
        Ok(Arc::new(list))
    }
}

/// Reads an array value's parts.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn i32(&mut self) -> Result<i32, ValueError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn take(&mut self, len: i32) -> Result<&'a [u8], ValueError> {
        let len = usize::try_from(len)
            .map_err(|_| ValueError::malformed(format!("array element length {len}")))?;
        if self.0.len() < len {
            return Err(ValueError::malformed("array value is truncated"));
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head)
    }
}

/// One column's builder; the variant is the decoding rule (see the type table in `types.rs`).
enum Builder {
    Bool {
        values: Bits,
        nulls: Validity,
    },
    Int16(Prim<Int16Type>),
    Int32(Prim<Int32Type>),
    Int64(Prim<Int64Type>),
    Float32(Prim<Float32Type>),
    Float64(Prim<Float64Type>),
    Decimal {
        values: Prim<Decimal128Type>,
        precision: u8,
        scale: i8,
    },
    NumericText(Var),
    Text(Var),
    Json(Var),
    Jsonb(Var),
    Bytea(Var),
    Date(Prim<Date32Type>),
    Time(Prim<Time64MicrosecondType>),
    Timestamp(Prim<TimestampMicrosecondType>),
    TimestampTz(Prim<TimestampMicrosecondType>),
    Interval(Prim<IntervalMonthDayNanoType>),
    Uuid {
        values: Vec<u8>,
        nulls: Validity,
    },
    List(Box<ListCol>),
}

impl Builder {
    fn new(kind: Kind, field: &Field, reserve: usize) -> Self {
        match kind {
            Kind::Scalar(s) => Builder::scalar(s, reserve),
            Kind::List(s) => {
                // The list's item field as the plan spells it, so the array matches the schema.
                let item = match field.data_type() {
                    DataType::List(item) => item.clone(),
                    _ => Arc::new(s.field("item")),
                };
                Builder::List(Box::new(ListCol {
                    ends: Ends::new(reserve),
                    items: 0,
                    item: Builder::scalar(s, reserve),
                    field: item,
                }))
            }
        }
    }

    fn scalar(s: Scalar, reserve: usize) -> Self {
        match s {
            Scalar::Bool => Builder::Bool {
                values: Bits::new(reserve),
                nulls: Validity::new(reserve),
            },
            Scalar::Int16 => Builder::Int16(Prim::new(reserve)),
            Scalar::Int32 => Builder::Int32(Prim::new(reserve)),
            Scalar::Int64 => Builder::Int64(Prim::new(reserve)),
            Scalar::Float32 => Builder::Float32(Prim::new(reserve)),
            Scalar::Float64 => Builder::Float64(Prim::new(reserve)),
            Scalar::Decimal { precision, scale } => Builder::Decimal {
                values: Prim::new(reserve),
                precision,
                scale,
            },
            Scalar::NumericText => Builder::NumericText(Var::new(reserve)),
            Scalar::Text => Builder::Text(Var::new(reserve)),
            Scalar::Json => Builder::Json(Var::new(reserve)),
            Scalar::Jsonb => Builder::Jsonb(Var::new(reserve)),
            Scalar::Bytea => Builder::Bytea(Var::new(reserve)),
            Scalar::Date => Builder::Date(Prim::new(reserve)),
            Scalar::Time => Builder::Time(Prim::new(reserve)),
            Scalar::Timestamp => Builder::Timestamp(Prim::new(reserve)),
            Scalar::TimestampTz => Builder::TimestampTz(Prim::new(reserve)),
            Scalar::Interval => Builder::Interval(Prim::new(reserve)),
            Scalar::Uuid => Builder::Uuid {
                values: Vec::with_capacity(reserve * 16),
                nulls: Validity::new(reserve),
            },
        }
    }

    /// Appends one value (`None` = SQL NULL) in its binary form.
    #[inline]
    fn append(&mut self, value: Option<&[u8]>) -> Result<(), ValueError> {
        let Some(v) = value else {
            self.append_null();
            return Ok(());
        };
        match self {
            Builder::Bool { values, nulls } => {
                match fixed::<1>(v)? {
                    [0] => values.push(false),
                    [1] => values.push(true),
                    [b] => return Err(ValueError::malformed(format!("bool byte {b}"))),
                }
                nulls.append_non_null();
            }
            Builder::Int16(b) => b.push(i16::from_be_bytes(fixed(v)?)),
            Builder::Int32(b) => b.push(i32::from_be_bytes(fixed(v)?)),
            Builder::Int64(b) => b.push(i64::from_be_bytes(fixed(v)?)),
            Builder::Float32(b) => b.push(f32::from_be_bytes(fixed(v)?)),
            Builder::Float64(b) => b.push(f64::from_be_bytes(fixed(v)?)),
            Builder::Decimal {
                values,
                precision,
                scale,
            } => values.push(Numeric::parse(v)?.to_decimal(*precision, *scale)?),
            Builder::NumericText(b) => {
                Numeric::parse(v)?.write_text(&mut b.data);
                b.commit()?;
            }
            Builder::Text(b) | Builder::Json(b) | Builder::Bytea(b) => b.push(v)?,
            Builder::Jsonb(b) => match v.split_first() {
                Some((1, text)) => b.push(text)?,
                Some((version, _)) => {
                    return Err(ValueError::malformed(format!("jsonb version {version}")))
                }
                None => return Err(ValueError::malformed("empty jsonb value")),
            },
            Builder::Date(b) => {
                let days = i32::from_be_bytes(fixed(v)?);
                b.push(match days {
                    i32::MAX | i32::MIN => days, // infinity, -infinity
                    // A finite date must not land on the infinity sentinels.
                    _ => days
                        .checked_add(PG_EPOCH_DAYS)
                        .filter(|d| *d != i32::MAX)
                        .ok_or_else(|| {
                            ValueError::Unrepresentable(format!(
                                "date {days} days after 2000-01-01"
                            ))
                        })?,
                });
            }
            Builder::Time(b) => {
                let micros = i64::from_be_bytes(fixed(v)?);
                if !(0..=MAX_TIME_MICROS).contains(&micros) {
                    return Err(ValueError::malformed(format!("time of {micros} µs")));
                }
                b.push(micros);
            }
            Builder::Timestamp(b) | Builder::TimestampTz(b) => {
                b.push(timestamp(i64::from_be_bytes(fixed(v)?))?)
            }
            Builder::Interval(b) => b.push(interval(fixed(v)?)?),
            Builder::Uuid { values, nulls } => {
                values.extend_from_slice(&fixed::<16>(v)?);
                nulls.append_non_null();
            }
            Builder::List(l) => l.append(v)?,
        }
        Ok(())
    }

    fn append_null(&mut self) {
        match self {
            Builder::Bool { values, nulls } => {
                values.push(false);
                nulls.append_null();
            }
            Builder::Int16(b) => b.push_null(),
            Builder::Int32(b) => b.push_null(),
            Builder::Int64(b) => b.push_null(),
            Builder::Float32(b) => b.push_null(),
            Builder::Float64(b) => b.push_null(),
            Builder::Decimal { values, .. } => values.push_null(),
            Builder::NumericText(b)
            | Builder::Text(b)
            | Builder::Json(b)
            | Builder::Jsonb(b)
            | Builder::Bytea(b) => b.push_null(),
            Builder::Date(b) => b.push_null(),
            Builder::Time(b) => b.push_null(),
            Builder::Timestamp(b) | Builder::TimestampTz(b) => b.push_null(),
            Builder::Interval(b) => b.push_null(),
            Builder::Uuid { values, nulls } => {
                values.extend_from_slice(&[0; 16]);
                nulls.append_null();
            }
            Builder::List(l) => l.push_null(),
        }
    }

    /// The array of everything appended since the last call; the builder starts over empty.
    fn finish(&mut self) -> Result<ArrayRef, ValueError> {
        Ok(match self {
            Builder::Bool { values, nulls } => {
                Arc::new(BooleanArray::new(values.finish(), nulls.finish()))
            }
            Builder::Int16(b) => Arc::new(b.finish()?),
            Builder::Int32(b) => Arc::new(b.finish()?),
            Builder::Int64(b) => Arc::new(b.finish()?),
            Builder::Float32(b) => Arc::new(b.finish()?),
            Builder::Float64(b) => Arc::new(b.finish()?),
            Builder::Decimal {
                values,
                precision,
                scale,
            } => Arc::new(
                values
                    .finish()?
                    .with_precision_and_scale(*precision, *scale)?,
            ),
            Builder::NumericText(b) | Builder::Text(b) | Builder::Json(b) | Builder::Jsonb(b) => {
                b.finish_utf8()?
            }
            Builder::Bytea(b) => {
                let (offsets, data, nulls) = b.finish();
                Arc::new(BinaryArray::try_new(offsets, data, nulls)?)
            }
            Builder::Date(b) => Arc::new(b.finish()?),
            Builder::Time(b) => Arc::new(b.finish()?),
            Builder::Timestamp(b) => Arc::new(b.finish()?),
            Builder::TimestampTz(b) => Arc::new(b.finish()?.with_timezone("UTC")),
            Builder::Interval(b) => Arc::new(b.finish()?),
            Builder::Uuid { values, nulls } => Arc::new(FixedSizeBinaryArray::try_new(
                16,
                Buffer::from_vec(take_vec(values)),
                nulls.finish(),
            )?),
            Builder::List(l) => l.finish()?,
        })
    }
}

/// PostgreSQL µs since 2000 → µs since 1970, keeping ±infinity as `i64::MAX` / `i64::MIN`.
/// A finite value that would land on `i64::MAX` (294247-01-10 04:00:54.775807) is an error, not
/// +infinity.
#[inline]
fn timestamp(micros: i64) -> Result<i64, ValueError> {
    match micros {
        i64::MAX | i64::MIN => Ok(micros),
        _ => micros
            .checked_add(PG_EPOCH_MICROS)
            .filter(|m| *m != i64::MAX)
            .ok_or_else(|| {
                ValueError::Unrepresentable(format!(
                    "timestamp {micros} µs after 2000-01-01 is later than \
                     294247-01-10 04:00:54.775806, the last µs since 1970 can hold \
                     (i64::MAX stands for infinity)"
                ))
            }),
    }
}

/// `interval_send`: i64 µs, i32 days, i32 months. PostgreSQL 17's ±infinity (every field at
/// its maximum / minimum) keeps every field at its maximum / minimum.
fn interval(raw: [u8; 16]) -> Result<IntervalMonthDayNano, ValueError> {
    let micros = i64::from_be_bytes(raw[0..8].try_into().unwrap_or_default());
    let days = i32::from_be_bytes(raw[8..12].try_into().unwrap_or_default());
    let months = i32::from_be_bytes(raw[12..16].try_into().unwrap_or_default());
    let nanos = match (micros, days, months) {
        (i64::MAX, i32::MAX, i32::MAX) => i64::MAX,
        (i64::MIN, i32::MIN, i32::MIN) => i64::MIN,
        _ => micros.checked_mul(1000).ok_or_else(|| {
            ValueError::Unrepresentable(format!(
                "interval of {micros} µs overflows 64-bit nanoseconds"
            ))
        })?,
    };
    Ok(IntervalMonthDayNano::new(months, days, nanos))
}
