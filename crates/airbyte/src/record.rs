//! Arrow record batches → RECORD lines, written straight from the columns: no `serde_json::Value`
//! per row. This is the hot path of `read`.
//!
//! A [`RecordEncoder`] is built once per stream (escaped names, the envelope); per batch each column
//! becomes a `Cell` over its typed buffers, and each row is the envelope, then `"name":value` per
//! column. Value formats follow the table in [`crate::schema`].

use arrow::array::{
    Array, ArrayAccessor, ArrowPrimitiveType, AsArray, BooleanArray, FixedSizeBinaryArray,
    RecordBatch,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Field, Float32Type, Float64Type, Int16Type, Int32Type,
    Int64Type, IntervalMonthDayNanoType, IntervalUnit, Schema, Time64MicrosecondType, TimeUnit,
    TimestampMicrosecondType,
};
use base64::Engine;

use crate::messages::StreamDescriptor;
use crate::schema::extension;
use crate::Error;

/// Bytes reserved per cell before encoding a batch (a guess; the buffer grows as needed).
const RESERVE_PER_CELL: usize = 20;

/// Writes RECORD lines for one stream.
#[derive(Debug)]
pub struct RecordEncoder {
    /// `{"type":"RECORD","record":{"namespace":..,"stream":..,"emitted_at":`
    head: Vec<u8>,
    columns: Vec<Emitted>,
    /// Bytes per line of the last batch: the next batch's buffer is reserved once, not regrown.
    line_hint: std::sync::atomic::AtomicUsize,
}

#[derive(Debug, Clone)]
struct Emitted {
    /// Column index in the batch.
    index: usize,
    /// `"name":`, with a leading comma for all but the first column.
    key: Vec<u8>,
    /// `key` zero-padded to [`SHORT`] bytes, when it fits (see [`put_short`]).
    short_key: Option<[u8; SHORT]>,
    /// `"name"` (for `meta.changes`).
    name: Vec<u8>,
}

/// The longest piece [`put_short`] copies.
const SHORT: usize = 32;

/// Appends `text[..len]`, where `text` is zero-padded to [`SHORT`] bytes: a copy of a constant
/// size (inlined; a variable-length `extend_from_slice` is a `memcpy` call, the most frequent
/// call of the hot loop), then the padding is cut off again.
#[inline(always)]
fn put_short(text: &[u8; SHORT], len: usize, out: &mut Vec<u8>) {
    let end = out.len() + len;
    out.extend_from_slice(text);
    out.truncate(end);
}

impl RecordEncoder {
    /// An encoder for `stream`, writing the columns of `schema` at `emit` (in that order).
    pub fn new(stream: &StreamDescriptor, schema: &Schema, emit: &[usize]) -> RecordEncoder {
        let mut head = b"{\"type\":\"RECORD\",\"record\":{".to_vec();
        if let Some(ns) = &stream.namespace {
            head.extend_from_slice(b"\"namespace\":");
            write_str(ns.as_bytes(), &mut head);
            head.push(b',');
        }
        head.extend_from_slice(b"\"stream\":");
        write_str(stream.name.as_bytes(), &mut head);
        head.extend_from_slice(b",\"emitted_at\":");
        let columns = emit
            .iter()
            .enumerate()
            .map(|(i, &index)| {
                let mut name = Vec::new();
                write_str(schema.field(index).name().as_bytes(), &mut name);
                let mut key = Vec::with_capacity(name.len() + 2);
                if i > 0 {
                    key.push(b',');
                }
                key.extend_from_slice(&name);
                key.push(b':');
                let short_key = (key.len() <= SHORT).then(|| {
                    let mut padded = [0; SHORT];
                    padded[..key.len()].copy_from_slice(&key);
                    padded
                });
                Emitted {
                    index,
                    key,
                    short_key,
                    name,
                }
            })
            .collect();
        RecordEncoder {
            head,
            columns,
            line_hint: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Appends one RECORD line per row of `batch` to `out`.
    pub fn encode(
        &self,
        batch: &RecordBatch,
        emitted_at_ms: i64,
        out: &mut Vec<u8>,
    ) -> Result<(), Error> {
        let schema = batch.schema();
        let cells = self
            .columns
            .iter()
            .map(|c| cell(schema.field(c.index), batch.column(c.index).as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut head = self.head.clone();
        head.extend_from_slice(itoa::Buffer::new().format(emitted_at_ms).as_bytes());
        head.extend_from_slice(b",\"data\":{");
        let rows = batch.num_rows();
        let hint = match self.line_hint.load(std::sync::atomic::Ordering::Relaxed) {
            0 => head.len() + 4 + cells.len() * RESERVE_PER_CELL,
            known => known + known / 8,
        };
        out.reserve(rows * hint);
        let start = out.len();
        let mut nulled: Vec<usize> = Vec::new();
        for row in 0..rows {
            out.extend_from_slice(&head);
            for (i, (column, cell)) in self.columns.iter().zip(&cells).enumerate() {
                match &column.short_key {
                    Some(padded) => put_short(padded, column.key.len(), out),
                    None => out.extend_from_slice(&column.key),
                }
                if !cell.write(row, out) {
                    nulled.push(i);
                }
            }
            out.push(b'}');
            if !nulled.is_empty() {
                out.extend_from_slice(b",\"meta\":{\"changes\":[");
                for (k, &i) in nulled.iter().enumerate() {
                    if k > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(b"{\"field\":");
                    out.extend_from_slice(&self.columns[i].name);
                    out.extend_from_slice(
                        b",\"change\":\"NULLED\",\"reason\":\"SOURCE_SERIALIZATION_ERROR\"}",
                    );
                }
                out.extend_from_slice(b"]}");
                nulled.clear();
            }
            out.extend_from_slice(b"}}\n");
        }
        if let Some(per_line) = (out.len() - start).checked_div(rows) {
            self.line_hint
                .store(per_line, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }
}

/// One column of one batch, able to write the JSON value of any row.
trait Cell {
    /// Writes row `row`'s value. Returns false when the value has no JSON form and `null` was
    /// written instead (the record then reports the field in `meta.changes`).
    fn write(&self, row: usize, out: &mut Vec<u8>) -> bool;
}

fn is_null(nulls: Option<&NullBuffer>, row: usize) -> bool {
    nulls.is_some_and(|n| n.is_null(row))
}

/// Writes `null` if the row is null and says so.
macro_rules! null_check {
    ($nulls:expr, $row:expr, $out:expr) => {
        if is_null($nulls, $row) {
            $out.extend_from_slice(b"null");
            return true;
        }
    };
}

/// The cell for `array` (whose field is `field`): exactly the types the server emits
/// (`pgarrow::types::plan_column`); anything else is refused rather than written some other way.
fn cell<'a>(field: &'a Field, array: &'a dyn Array) -> Result<Box<dyn Cell + 'a>, Error> {
    let nulls = array.nulls();
    Ok(match array.data_type() {
        DataType::Boolean => Box::new(BoolCell(array.as_boolean())),
        DataType::Int16 => ints::<Int16Type>(array),
        DataType::Int32 => ints::<Int32Type>(array),
        DataType::Int64 => ints::<Int64Type>(array),
        DataType::Float32 => Box::new(FloatCell {
            values: array.as_primitive::<Float32Type>().values(),
            nulls,
        }),
        DataType::Float64 => Box::new(FloatCell {
            values: array.as_primitive::<Float64Type>().values(),
            nulls,
        }),
        DataType::Decimal128(_, scale) => Box::new(DecimalCell {
            values: array.as_primitive::<Decimal128Type>().values(),
            scale: *scale,
            nulls,
        }),
        DataType::Utf8 => Box::new(StrCell(array.as_string::<i32>())),
        DataType::Binary => Box::new(BinCell(array.as_binary::<i32>())),
        DataType::FixedSizeBinary(16) if extension(field) == Some("arrow.uuid") => {
            Box::new(UuidCell(array.as_fixed_size_binary()))
        }
        DataType::Date32 => Box::new(DateCell {
            values: array.as_primitive::<Date32Type>().values(),
            nulls,
        }),
        DataType::Time64(TimeUnit::Microsecond) => Box::new(TimeCell {
            values: array.as_primitive::<Time64MicrosecondType>().values(),
            nulls,
        }),
        DataType::Timestamp(TimeUnit::Microsecond, tz) => Box::new(TimestampCell {
            values: array.as_primitive::<TimestampMicrosecondType>().values(),
            zulu: tz.is_some(),
            nulls,
            day: std::cell::Cell::new((i64::MIN, [0; 10])),
        }),
        DataType::Interval(IntervalUnit::MonthDayNano) => Box::new(IntervalCell {
            values: array.as_primitive::<IntervalMonthDayNanoType>().values(),
            nulls,
        }),
        DataType::List(item) => {
            let a = array.as_list::<i32>();
            Box::new(ListCell {
                offsets: a.value_offsets(),
                nulls: a.nulls(),
                items: cell(item, a.values().as_ref())?,
            })
        }
        other => {
            return Err(Error::Encode(format!(
                "column {}: Arrow type {other} is not one the server emits",
                field.name()
            )))
        }
    })
}

fn ints<'a, T>(array: &'a dyn Array) -> Box<dyn Cell + 'a>
where
    T: ArrowPrimitiveType,
    T::Native: itoa::Integer,
{
    let a = array.as_primitive::<T>();
    Box::new(IntCell {
        values: a.values(),
        nulls: a.nulls(),
    })
}

struct BoolCell<'a>(&'a BooleanArray);
impl Cell for BoolCell<'_> {
    fn write(&self, row: usize, out: &mut Vec<u8>) -> bool {
        null_check!(self.0.nulls(), row, out);
        out.extend_from_slice(if self.0.value(row) { b"true" } else { b"false" });
        true
    }
}

struct IntCell<'a, N> {
    values: &'a [N],
    nulls: Option<&'a NullBuffer>,
}
impl<N: itoa::Integer + Copy> Cell for IntCell<'_, N> {
    fn write(&self, row: usize, out: &mut Vec<u8>) -> bool {
        null_check!(self.nulls, row, out);
        out.extend_from_slice(itoa::Buffer::new().format(self.values[row]).as_bytes());
        true
    }
}

/// Floats that JSON can hold as numbers when finite.
trait JsonFloat: zmij::Float + Copy {
    fn finite(self) -> bool;
}
macro_rules! json_float {
    ($($t:ty),*) => {$(
        impl JsonFloat for $t {
            fn finite(self) -> bool {
                self.is_finite()
            }
        }
    )*};
}
json_float!(f32, f64);

struct FloatCell<'a, F> {
    values: &'a [F],
    nulls: Option<&'a NullBuffer>,
}
impl<F: JsonFloat> Cell for FloatCell<'_, F> {
    fn write(&self, row: usize, out: &mut Vec<u8>) -> bool {
        null_check!(self.nulls, row, out);
        write_float(self.values[row], out)
    }
}

/// Shortest round-trip digits. NaN and ±Infinity have no JSON number: `null`, and false so the
/// record lists the field in `meta.changes` (a string would break the stream's `number` schema).
fn write_float<F: JsonFloat>(v: F, out: &mut Vec<u8>) -> bool {
    if v.finite() {
        out.extend_from_slice(zmij::Buffer::new().format_finite(v).as_bytes());
        true
    } else {
        out.extend_from_slice(b"null");
        false
    }
}

struct DecimalCell<'a> {
    values: &'a [i128],
    scale: i8,
    nulls: Option<&'a NullBuffer>,
}
impl Cell for DecimalCell<'_> {
    fn write(&self, row: usize, out: &mut Vec<u8>) -> bool {
        null_check!(self.nulls, row, out);
        write_decimal(self.values[row], self.scale, out);
        true
    }
}

/// The exact decimal text of `unscaled × 10^-scale`.
fn write_decimal(unscaled: i128, scale: i8, out: &mut Vec<u8>) {
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(unscaled.unsigned_abs()).as_bytes();
    if unscaled < 0 {
        out.push(b'-');
    }
    if scale <= 0 {
        out.extend_from_slice(digits);
        if unscaled != 0 {
            out.resize(out.len() + scale.unsigned_abs() as usize, b'0');
        }
        return;
    }
    let scale = scale as usize;
    if digits.len() > scale {
        let (int, frac) = digits.split_at(digits.len() - scale);
        out.extend_from_slice(int);
        out.push(b'.');
        out.extend_from_slice(frac);
    } else {
        out.extend_from_slice(b"0.");
        out.resize(out.len() + scale - digits.len(), b'0');
        out.extend_from_slice(digits);
    }
}

struct StrCell<A>(A);
impl<'a, A: ArrayAccessor<Item = &'a str>> Cell for StrCell<A> {
    fn write(&self, row: usize, out: &mut Vec<u8>) -> bool {
        null_check!(self.0.nulls(), row, out);
        write_str(self.0.value(row).as_bytes(), out);
        true
    }
}

struct BinCell<A>(A);
impl<'a, A: ArrayAccessor<Item = &'a [u8]>> Cell for BinCell<A> {
    fn write(&self, row: usize, out: &mut Vec<u8>) -> bool {
        null_check!(self.0.nulls(), row, out);
        write_base64(self.0.value(row), out);
        true
    }
}

fn write_base64(bytes: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    let start = out.len();
    let len = base64::encoded_len(bytes.len(), true).unwrap_or(0);
    out.resize(start + len, 0);
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(bytes, &mut out[start..])
        .unwrap_or(0);
    out.truncate(start + written);
    out.push(b'"');
}

struct UuidCell<'a>(&'a FixedSizeBinaryArray);
impl Cell for UuidCell<'_> {
    fn write(&self, row: usize, out: &mut Vec<u8>) -> bool {
        null_check!(self.0.nulls(), row, out);
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out.push(b'"');
        for (i, b) in self.0.value(row).iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                out.push(b'-');
            }
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 15)]);
        }
        out.push(b'"');
        true
    }
}

struct DateCell<'a> {
    /// Days since 1970-01-01; `i32::MAX` / `i32::MIN` for ±infinity.
    values: &'a [i32],
    nulls: Option<&'a NullBuffer>,
}
impl Cell for DateCell<'_> {
    fn write(&self, row: usize, out: &mut Vec<u8>) -> bool {
        null_check!(self.nulls, row, out);
        let days = self.values[row];
        if days == i32::MAX || days == i32::MIN {
            out.extend_from_slice(b"null");
            return false;
        }
        out.push(b'"');
        if write_date(i64::from(days), out) {
            out.extend_from_slice(b" BC");
        }
        out.push(b'"');
        true
    }
}

struct TimeCell<'a> {
    /// µs since midnight.
    values: &'a [i64],
    nulls: Option<&'a NullBuffer>,
}
impl Cell for TimeCell<'_> {
    fn write(&self, row: usize, out: &mut Vec<u8>) -> bool {
        null_check!(self.nulls, row, out);
        out.push(b'"');
        write_clock(self.values[row], out);
        out.push(b'"');
        true
    }
}

struct TimestampCell<'a> {
    /// µs since the epoch; `i64::MAX` / `i64::MIN` for ±infinity.
    values: &'a [i64],
    zulu: bool,
    nulls: Option<&'a NullBuffer>,
    /// The last day written as `YYYY-MM-DD` (years 1..=9999): rows of a chunk share a few days.
    day: std::cell::Cell<(i64, [u8; 10])>,
}
impl Cell for TimestampCell<'_> {
    fn write(&self, row: usize, out: &mut Vec<u8>) -> bool {
        null_check!(self.nulls, row, out);
        let v = self.values[row];
        // The server maps ±infinity to the extremes; JSON has no date-time for them.
        if v == i64::MAX || v == i64::MIN {
            out.extend_from_slice(b"null");
            return false;
        }
        let days = v.div_euclid(MICROS_PER_DAY);
        let (cached_day, text) = self.day.get();
        if days == cached_day {
            // `"YYYY-MM-DDTHH:MM:SS.ffffff[Z]"` built in place, appended in one fixed-size copy.
            let mut value = [0u8; SHORT];
            value[0] = b'"';
            value[1..11].copy_from_slice(&text);
            value[11] = b'T';
            value[12..27].copy_from_slice(&clock(v.rem_euclid(MICROS_PER_DAY)));
            let len = if self.zulu {
                value[27] = b'Z';
                value[28] = b'"';
                29
            } else {
                value[27] = b'"';
                28
            };
            put_short(&value, len, out);
            return true;
        }
        out.push(b'"');
        let start = out.len();
        write_timestamp(v, self.zulu, out);
        let date = &out[start..];
        if date.len() > 10 && date[10] == b'T' && !date.ends_with(b" BC") {
            let mut text = [0u8; 10];
            text.copy_from_slice(&date[..10]);
            self.day.set((days, text));
        }
        out.push(b'"');
        true
    }
}

/// µs in a day.
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// `YYYY-MM-DDTHH:MM:SS.ffffff[Z][ BC]` for `v` µs since the epoch.
pub(crate) fn write_timestamp(v: i64, zulu: bool, out: &mut Vec<u8>) {
    let bc = write_date(v.div_euclid(MICROS_PER_DAY), out);
    out.push(b'T');
    write_clock(v.rem_euclid(MICROS_PER_DAY), out);
    if zulu {
        out.push(b'Z');
    }
    if bc {
        out.extend_from_slice(b" BC");
    }
}

struct IntervalCell<'a> {
    values: &'a [arrow::datatypes::IntervalMonthDayNano],
    nulls: Option<&'a NullBuffer>,
}
impl Cell for IntervalCell<'_> {
    fn write(&self, row: usize, out: &mut Vec<u8>) -> bool {
        null_check!(self.nulls, row, out);
        let v = self.values[row];
        let infinite = |m: i32, d: i32, n: i64| m == v.months && d == v.days && n == v.nanoseconds;
        if infinite(i32::MAX, i32::MAX, i64::MAX) || infinite(i32::MIN, i32::MIN, i64::MIN) {
            out.extend_from_slice(b"null");
            return false;
        }
        out.push(b'"');
        write_interval(v.months, v.days, v.nanoseconds, out);
        out.push(b'"');
        true
    }
}

/// ISO 8601 duration, each part signed on its own as PostgreSQL's `iso_8601` style writes it.
fn write_interval(months: i32, days: i32, nanos: i64, out: &mut Vec<u8>) {
    let mut itoa = itoa::Buffer::new();
    let start = out.len();
    out.push(b'P');
    let mut part = |v: i64, unit: u8, out: &mut Vec<u8>| {
        if v != 0 {
            out.extend_from_slice(itoa.format(v).as_bytes());
            out.push(unit);
        }
    };
    part(i64::from(months / 12), b'Y', out);
    part(i64::from(months % 12), b'M', out);
    part(i64::from(days), b'D', out);
    let secs = nanos / 1_000_000_000;
    let frac = nanos % 1_000_000_000;
    if secs != 0 || frac != 0 {
        out.push(b'T');
        part(secs / 3_600, b'H', out);
        part(secs % 3_600 / 60, b'M', out);
        let (s, f) = (secs % 60, frac);
        if s != 0 || f != 0 {
            if s < 0 || f < 0 {
                out.push(b'-');
            }
            out.extend_from_slice(itoa::Buffer::new().format(s.unsigned_abs()).as_bytes());
            write_fraction(f.unsigned_abs() as u32, 9, true, out);
            out.push(b'S');
        }
    }
    if out.len() == start + 1 {
        out.extend_from_slice(b"T0S");
    }
}

struct ListCell<'a> {
    offsets: &'a [i32],
    nulls: Option<&'a NullBuffer>,
    items: Box<dyn Cell + 'a>,
}
impl Cell for ListCell<'_> {
    fn write(&self, row: usize, out: &mut Vec<u8>) -> bool {
        null_check!(self.nulls, row, out);
        let (start, end) = (self.offsets[row] as usize, self.offsets[row + 1] as usize);
        write_items(self.items.as_ref(), start..end, out)
    }
}

fn write_items(items: &dyn Cell, range: std::ops::Range<usize>, out: &mut Vec<u8>) -> bool {
    out.push(b'[');
    let mut complete = true;
    for (k, i) in range.enumerate() {
        if k > 0 {
            out.push(b',');
        }
        complete &= items.write(i, out);
    }
    out.push(b']');
    complete
}

/// For each byte: 0 = copy as is; otherwise the character after the backslash (`u` = `\u00XX`).
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// A JSON string literal of UTF-8 `s`.
pub(crate) fn write_str(s: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in s.iter().enumerate() {
        let e = ESCAPE[usize::from(b)];
        if e == 0 {
            continue;
        }
        out.extend_from_slice(&s[start..i]);
        out.push(b'\\');
        out.push(e);
        if e == b'u' {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]);
        }
        start = i + 1;
    }
    out.extend_from_slice(&s[start..]);
    out.push(b'"');
}

/// Year, month, day of `days` since 1970-01-01 (proleptic Gregorian, astronomical years). By hand
/// rather than with chrono, whose dates end at year 262 143: PostgreSQL's run to 5 874 897, and a
/// record must be written for every one of them. Checked against chrono where both exist.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Howard Hinnant's days_from_civil inverse.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn two(v: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(&[b'0' + (v / 10 % 10) as u8, b'0' + (v % 10) as u8]);
}

/// `YYYY-MM-DD`; returns whether the year is BC (year ≤ 0 is 1-year BC), for the caller to append
/// ` BC` after the rest of the value.
pub(crate) fn write_date(days: i64, out: &mut Vec<u8>) -> bool {
    let (year, month, day) = civil_from_days(days);
    let bc = year <= 0;
    let shown = if bc { 1 - year } else { year } as u64;
    if shown < 10_000 {
        let y = shown as u32;
        two(y / 100, out);
        two(y % 100, out);
    } else {
        out.extend_from_slice(itoa::Buffer::new().format(shown).as_bytes());
    }
    out.push(b'-');
    two(month, out);
    out.push(b'-');
    two(day, out);
    bc
}

/// `HH:MM:SS.ffffff` of `micros` since midnight (`24:00:00.000000` is a valid `time`).
fn write_clock(micros: i64, out: &mut Vec<u8>) {
    out.extend_from_slice(&clock(micros));
}

/// "00" to "99".
const PAIRS: [[u8; 2]; 100] = {
    let mut t = [[0; 2]; 100];
    let mut i = 0;
    while i < 100 {
        t[i] = [b'0' + (i / 10) as u8, b'0' + (i % 10) as u8];
        i += 1;
    }
    t
};

/// `HH:MM:SS.ffffff` of `micros` (0 to 24 h) since midnight.
#[inline(always)]
fn clock(micros: i64) -> [u8; 15] {
    let secs = micros.div_euclid(1_000_000) as u32;
    let frac = micros.rem_euclid(1_000_000) as u32;
    let pair = |v: u32| PAIRS[(v % 100) as usize];
    let [h, m, s] = [secs / 3_600, secs / 60 % 60, secs % 60].map(pair);
    let [f1, f2, f3] = [frac / 10_000, frac / 100, frac].map(pair);
    [
        h[0], h[1], b':', m[0], m[1], b':', s[0], s[1], b'.', f1[0], f1[1], f2[0], f2[1], f3[0],
        f3[1],
    ]
}

/// `.` and the first `digits` digits of `nanos` (nine-digit fraction); nothing for 0 digits. With
/// `trim`, trailing zeros go, and an all-zero fraction is omitted.
fn write_fraction(nanos: u32, digits: u32, trim: bool, out: &mut Vec<u8>) {
    if digits == 0 {
        return;
    }
    let mut v = nanos / 10u32.pow(9 - digits);
    let mut n = digits;
    if trim {
        if v == 0 {
            return;
        }
        while v.is_multiple_of(10) {
            v /= 10;
            n -= 1;
        }
    }
    out.push(b'.');
    let start = out.len();
    out.resize(start + n as usize, b'0');
    for i in (0..n as usize).rev() {
        out[start + i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        ArrayRef, BinaryArray, Date32Array, Decimal128Array, FixedSizeBinaryArray, Float32Array,
        Float64Array, Int16Array, Int64Array, IntervalMonthDayNanoArray, ListArray, StringArray,
        Time64MicrosecondArray, TimestampMicrosecondArray,
    };
    use arrow::datatypes::IntervalMonthDayNano;
    use chrono::Datelike;
    use serde_json::Value;
    use std::collections::HashMap;
    use std::sync::Arc;

    fn encode_one(field: Field, array: ArrayRef) -> Vec<Value> {
        let schema = Arc::new(Schema::new(vec![field]));
        let batch = RecordBatch::try_new(schema.clone(), vec![array]).unwrap();
        let d = StreamDescriptor {
            name: "t\"x".into(),
            namespace: Some("public".into()),
        };
        let enc = RecordEncoder::new(&d, &schema, &[0]);
        let mut out = Vec::new();
        enc.encode(&batch, 1_700_000_000_123, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        text.lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                assert_eq!(v["type"], "RECORD");
                assert_eq!(v["record"]["stream"], "t\"x");
                assert_eq!(v["record"]["namespace"], "public");
                assert_eq!(v["record"]["emitted_at"], 1_700_000_000_123i64);
                v["record"].clone()
            })
            .collect()
    }

    fn values(field: Field, array: ArrayRef) -> Vec<Value> {
        encode_one(field, array)
            .into_iter()
            .map(|r| r["data"]["c"].clone())
            .collect()
    }

    fn f(dt: DataType) -> Field {
        Field::new("c", dt, true)
    }

    #[test]
    fn integers_floats_and_nulls() {
        let a = Arc::new(Int64Array::from(vec![Some(i64::MIN), None, Some(7)]));
        assert_eq!(
            values(f(DataType::Int64), a),
            vec![Value::from(i64::MIN), Value::Null, Value::from(7)]
        );
        let a = Arc::new(Int16Array::from(vec![-32768i16]));
        assert_eq!(values(f(DataType::Int16), a), vec![Value::from(-32768)]);
        let a = Arc::new(Float64Array::from(vec![
            0.1,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e300,
        ]));
        assert_eq!(
            values(f(DataType::Float64), a),
            vec![
                Value::from(0.1),
                Value::Null,
                Value::Null,
                Value::Null,
                Value::from(1e300)
            ]
        );
        let a = Arc::new(Float64Array::from(vec![Some(f64::NAN), None, Some(1.0)]));
        let records = encode_one(f(DataType::Float64), a);
        assert_eq!(
            records[0]["meta"]["changes"],
            serde_json::json!([{"field": "c", "change": "NULLED",
                                "reason": "SOURCE_SERIALIZATION_ERROR"}])
        );
        assert!(records[1].get("meta").is_none(), "a SQL NULL is no change");
        assert!(records[2].get("meta").is_none());
        let a = Arc::new(Float32Array::from(vec![90.123f32]));
        let v = values(f(DataType::Float32), a);
        assert_eq!(v[0].to_string().parse::<f32>().unwrap(), 90.123f32);
    }

    #[test]
    fn decimals_are_exact() {
        let check = |v: i128, p: u8, s: i8, want: &str| {
            let mut out = Vec::new();
            write_decimal(v, s, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), want, "{v} ({p},{s})");
        };
        check(12345, 10, 2, "123.45");
        check(-5, 10, 2, "-0.05");
        check(0, 10, 2, "0.00");
        check(7, 10, 0, "7");
        check(7, 10, -3, "7000");
        check(0, 10, -3, "0");
        check(
            i128::MAX,
            38,
            10,
            "17014118346046923173168730371.5884105727",
        );
        let a = Decimal128Array::from(vec![Some(150), None])
            .with_precision_and_scale(5, 2)
            .unwrap();
        let schema = Arc::new(Schema::new(vec![f(DataType::Decimal128(5, 2))]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(a)]).unwrap();
        let mut out = Vec::new();
        RecordEncoder::new(
            &StreamDescriptor {
                name: "t".into(),
                namespace: None,
            },
            &schema,
            &[0],
        )
        .encode(&batch, 0, &mut out)
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(r#""data":{"c":1.50}"#), "{text}");
        assert!(!text.contains("namespace"));
    }

    #[test]
    fn strings_are_escaped() {
        let a = Arc::new(StringArray::from(vec!["a\"b\\c\n\u{1}é✓"]));
        assert_eq!(
            values(f(DataType::Utf8), a),
            vec![Value::from("a\"b\\c\n\u{1}é✓")]
        );
        let mut out = Vec::new();
        write_str(b"\x1f\t", &mut out);
        assert_eq!(out, br#""\u001f\t""#);
    }

    #[test]
    fn dates_and_times_follow_airbyte_formats() {
        let ts = |us: i64, tz: bool| {
            let mut out = Vec::new();
            write_timestamp(us, tz, &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(ts(0, true), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            ts(1_790_812_800_000_001, true),
            "2026-10-01T00:00:00.000001Z"
        );
        assert_eq!(ts(-1, false), "1969-12-31T23:59:59.999999");
        // 0001-01-01 and the day before it (1 BC).
        let y1 = -719_162 * MICROS_PER_DAY;
        assert_eq!(ts(y1, true), "0001-01-01T00:00:00.000000Z");
        assert_eq!(ts(y1 - 1, true), "0001-12-31T23:59:59.999999Z BC");
        let a = Arc::new(
            TimestampMicrosecondArray::from(vec![Some(1_000_000), Some(i64::MAX), None])
                .with_timezone("UTC"),
        );
        let records = encode_one(
            f(DataType::Timestamp(
                TimeUnit::Microsecond,
                Some("UTC".into()),
            )),
            a,
        );
        assert_eq!(records[0]["data"]["c"], "1970-01-01T00:00:01.000000Z");
        assert_eq!(records[1]["data"]["c"], Value::Null);
        assert_eq!(records[1]["meta"]["changes"][0]["field"], "c");
        assert_eq!(records[1]["meta"]["changes"][0]["change"], "NULLED");
        assert!(records[2].get("meta").is_none());
        let a = Arc::new(Date32Array::from(vec![20_727, i32::MIN]));
        let records = encode_one(f(DataType::Date32), a);
        assert_eq!(records[0]["data"]["c"], "2026-10-01");
        assert_eq!(records[1]["data"]["c"], Value::Null);
        let a = Arc::new(Time64MicrosecondArray::from(vec![
            86_399_999_999,
            86_400_000_000,
        ]));
        assert_eq!(
            values(f(DataType::Time64(TimeUnit::Microsecond)), a),
            vec![
                Value::from("23:59:59.999999"),
                Value::from("24:00:00.000000")
            ]
        );
    }

    #[test]
    fn timestamps_of_one_day_are_written_like_any_other() {
        // The second and later rows of a day take the cached-day path.
        let day = 1_790_812_800_000_000i64;
        let micros = [0, 1, 999_999, 3_723_000_042, 86_399_999_999, 43_200_500_000];
        for tz in [Some("UTC".into()), None] {
            let zulu = tz.is_some();
            let us: Vec<i64> = micros.iter().map(|m| day + m).collect();
            let a = TimestampMicrosecondArray::from(us.clone());
            let a = Arc::new(match &tz {
                Some(tz) => a.with_timezone(Arc::clone(tz)),
                None => a,
            });
            let got = values(f(DataType::Timestamp(TimeUnit::Microsecond, tz)), a);
            let want: Vec<Value> = us
                .iter()
                .map(|&v| {
                    let mut out = Vec::new();
                    write_timestamp(v, zulu, &mut out);
                    Value::from(String::from_utf8(out).unwrap())
                })
                .collect();
            assert_eq!(got, want);
        }
        assert_eq!(
            values(
                f(DataType::Timestamp(TimeUnit::Microsecond, None)),
                Arc::new(TimestampMicrosecondArray::from(vec![day + 1, day + 2]))
            ),
            vec![
                Value::from("2026-10-01T00:00:00.000001"),
                Value::from("2026-10-01T00:00:00.000002")
            ]
        );
    }

    #[test]
    fn civil_dates_agree_with_chrono() {
        let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
        let days = (-800_000i64..-700_000)
            .step_by(7)
            .chain(-1_000..1_000)
            .chain(2_900_000..3_000_000)
            .chain([-719_528, 20_727, 2_932_896]);
        for d in days {
            let c = epoch + chrono::TimeDelta::days(d);
            assert_eq!(
                civil_from_days(d),
                (i64::from(c.year()), c.month(), c.day()),
                "{d}"
            );
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-719_528), (0, 1, 1));
        // PostgreSQL's last date, beyond chrono's range.
        assert_eq!(civil_from_days(2_145_042_905), (5_874_897, 12, 31));
    }

    #[test]
    fn types_the_server_never_emits_are_refused() {
        let schema = Arc::new(Schema::new(vec![f(DataType::UInt8)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(arrow::array::UInt8Array::from(vec![1u8]))],
        )
        .unwrap();
        let d = StreamDescriptor {
            name: "t".into(),
            namespace: None,
        };
        let e = RecordEncoder::new(&d, &schema, &[0])
            .encode(&batch, 0, &mut Vec::new())
            .unwrap_err();
        assert!(e.to_string().contains("not one the server emits"), "{e}");
    }

    #[test]
    fn intervals_are_iso_8601() {
        let iv = |m: i32, d: i32, n: i64| {
            let mut out = Vec::new();
            write_interval(m, d, n, &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(iv(0, 0, 0), "PT0S");
        assert_eq!(iv(14, 3, 3_723_500_000_000), "P1Y2M3DT1H2M3.5S");
        assert_eq!(iv(-1, 0, -500_000_000), "P-1MT-0.5S");
        let a = Arc::new(IntervalMonthDayNanoArray::from(vec![
            IntervalMonthDayNano::new(0, 1, 0),
            IntervalMonthDayNano::new(i32::MAX, i32::MAX, i64::MAX),
        ]));
        let r = encode_one(f(DataType::Interval(IntervalUnit::MonthDayNano)), a);
        assert_eq!(r[0]["data"]["c"], "P1D");
        assert_eq!(r[1]["data"]["c"], Value::Null);
    }

    #[test]
    fn binary_uuid_and_lists() {
        let a = Arc::new(BinaryArray::from(vec![&b"\x00\xffhi"[..], b""]));
        assert_eq!(
            values(f(DataType::Binary), a),
            vec![Value::from("AP9oaQ=="), Value::from("")]
        );
        let uuid = f(DataType::FixedSizeBinary(16)).with_metadata(HashMap::from([(
            "ARROW:extension:name".into(),
            "arrow.uuid".into(),
        )]));
        let a = Arc::new(
            FixedSizeBinaryArray::try_from_iter(vec![(0u8..16).collect::<Vec<_>>()].into_iter())
                .unwrap(),
        );
        assert_eq!(
            values(uuid, a),
            vec![Value::from("00010203-0405-0607-0809-0a0b0c0d0e0f")]
        );
        let a = Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1), None, Some(3)]),
            None,
            Some(vec![]),
        ]));
        let item = Arc::new(Field::new("item", DataType::Int32, true));
        assert_eq!(
            values(f(DataType::List(item)), a),
            vec![
                serde_json::json!([1, null, 3]),
                Value::Null,
                serde_json::json!([])
            ]
        );
    }

    #[test]
    fn selected_columns_only_in_order() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
            Field::new("c", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![1])),
                Arc::new(StringArray::from(vec!["x"])),
                Arc::new(Int64Array::from(vec![3])),
            ],
        )
        .unwrap();
        let d = StreamDescriptor {
            name: "t".into(),
            namespace: None,
        };
        let mut out = Vec::new();
        RecordEncoder::new(&d, &schema, &[2, 0])
            .encode(&batch, 5, &mut out)
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"type\":\"RECORD\",\"record\":{\"stream\":\"t\",\"emitted_at\":5,\"data\":{\"c\":3,\"a\":1}}}\n"
        );
    }
}
