//! Per-stream state: what a read has done, so the next attempt neither repeats nor skips rows.
//!
//! ```json
//! {"state_version": 1, "sync_mode": "incremental", "columns": ["time", "device_id"],
//!  "cursor_field": "time", "cursor": "2026-10-07T23:59:59.567890Z",
//!  "pass_cursor": "2026-10-08T11:00:00.000000Z",
//!  "completed_chunks": ["_timescaledb_internal._hyper_1_8_chunk"],
//!  "in_progress": {"_timescaledb_internal._hyper_1_9_chunk": "<base64 resume ticket>"}}
//! ```
//!
//! A *pass* reads every endpoint of one GetFlightInfo plan. `completed_chunks` are endpoints of the
//! current pass read to their end (skipped on resume); `in_progress` maps an endpoint to the resume
//! ticket of the last batch written (`null`: no position, e.g. a compressed chunk — read it again).
//! Endpoint keys are chunk names (`schema.table`), a plain table's name, or its block range.
//! Incremental only: `cursor` is the exclusive lower bound of the pass (the highest cursor of the
//! last finished pass) and `pass_cursor` the highest cursor written by this pass so far. When a pass
//! finishes, `cursor` becomes the higher of the two and the pass fields empty out; a finished full
//! refresh leaves an empty pass, so the next sync reads everything again.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use arrow::datatypes::{DataType, TimeUnit};
use chrono::format::{Parsed, StrftimeItems};
use chrono::{Datelike, NaiveDate};
use protocol::Bound;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::messages::{InputStateMessage, StreamDescriptor, SyncMode};
use crate::record::{write_date, write_timestamp};
use crate::{read_json, Error};

/// The format written in `state_version`.
pub const STATE_VERSION: u32 = 1;

/// This source's `stream_state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamState {
    /// Format version.
    pub state_version: u32,
    /// The mode of the pass.
    pub sync_mode: SyncMode,
    /// Columns requested by the pass (a different selection starts a new pass).
    pub columns: Vec<String>,
    /// Incremental: the cursor column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor_field: Option<String>,
    /// Incremental: every row with a cursor up to this one was written by a finished pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<Value>,
    /// Incremental: the highest cursor written by the current pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_cursor: Option<Value>,
    /// Endpoints of the current pass read to their end.
    #[serde(default)]
    pub completed_chunks: Vec<String>,
    /// Endpoints of the current pass started but not finished, with their latest resume ticket.
    #[serde(default)]
    pub in_progress: BTreeMap<String, Option<String>>,
}

impl StreamState {
    /// A pass that has not started.
    pub fn new(sync_mode: SyncMode, columns: Vec<String>, cursor_field: Option<String>) -> Self {
        StreamState {
            state_version: STATE_VERSION,
            sync_mode,
            columns,
            cursor_field,
            cursor: None,
            pass_cursor: None,
            completed_chunks: Vec::new(),
            in_progress: BTreeMap::new(),
        }
    }

    /// Whether a pass is under way (something to skip or resume).
    pub fn in_pass(&self) -> bool {
        !self.completed_chunks.is_empty() || !self.in_progress.is_empty()
    }
}

/// Reads `--state` as given: a JSON list of STATE messages (or one message).
pub fn load_messages(path: &Path) -> Result<Vec<InputStateMessage>, Error> {
    let value: Value = read_json("state", path)?;
    let messages: Vec<InputStateMessage> = match value {
        Value::Array(_) => serde_json::from_value(value),
        Value::Object(ref o) if o.is_empty() => Ok(Vec::new()),
        Value::Object(_) => serde_json::from_value(value).map(|m| vec![m]),
        _ => Ok(Vec::new()),
    }
    .map_err(|e| Error::Malformed {
        what: "state",
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    Ok(messages)
}

/// Reads `--state` of a Standard read. Only STREAM states are used; a state without a blob means
/// "start over".
pub fn load(path: &Path) -> Result<HashMap<StreamDescriptor, Value>, Error> {
    let mut out = HashMap::new();
    for m in load_messages(path)? {
        match (m.kind.as_deref(), m.stream) {
            (Some("STREAM") | None, Some(s)) => {
                if let Some(blob) = s.stream_state {
                    out.insert(s.stream_descriptor, blob);
                }
            }
            (kind, _) => {
                let kind = kind.unwrap_or("LEGACY");
                return Err(Error::State(format!(
                    "state of type {kind} is not supported: the Standard replication method writes \
                     STREAM states (a GLOBAL state is CDC's: reset the connection after changing \
                     the method)"
                )));
            }
        }
    }
    Ok(out)
}

/// Parses a stream's saved blob; `Ok(None)` for an empty blob (`{}`).
pub fn parse(stream: &StreamDescriptor, blob: Value) -> Result<Option<StreamState>, Error> {
    if blob.as_object().is_some_and(|o| o.is_empty()) {
        return Ok(None);
    }
    let state: StreamState = serde_json::from_value(blob).map_err(|e| {
        Error::State(format!(
            "the saved state of stream {stream} is not one this source wrote ({e}); reset the stream"
        ))
    })?;
    if state.state_version != STATE_VERSION {
        return Err(Error::State(format!(
            "the saved state of stream {stream} has version {}, this source reads {STATE_VERSION}; reset the stream",
            state.state_version
        )));
    }
    Ok(Some(state))
}

/// A column type usable as an incremental cursor, compared as an `i64` in the column's own unit.
/// Only the types the server emits (`pgarrow::types::plan_column`) are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorKind {
    /// int2, int4, int8.
    Integer,
    /// date: days since 1970-01-01.
    Date,
    /// timestamp / timestamptz: µs since the epoch.
    Timestamp {
        /// With time zone (written with `Z`).
        zulu: bool,
    },
}

const MICROS_PER_DAY: i64 = 86_400_000_000;

impl CursorKind {
    /// The cursor kind of a column type, if it can be one.
    pub fn of(dt: &DataType) -> Option<CursorKind> {
        Some(match dt {
            DataType::Int16 | DataType::Int32 | DataType::Int64 => CursorKind::Integer,
            DataType::Date32 => CursorKind::Date,
            DataType::Timestamp(TimeUnit::Microsecond, tz) => {
                CursorKind::Timestamp { zulu: tz.is_some() }
            }
            _ => return None,
        })
    }

    /// The value as written in records (and in the state): a number, a date or a date-time.
    pub fn to_json(self, v: i64) -> Value {
        let mut out = Vec::new();
        match self {
            CursorKind::Integer => return Value::from(v),
            CursorKind::Date => {
                if write_date(v, &mut out) {
                    out.extend_from_slice(b" BC");
                }
            }
            CursorKind::Timestamp { zulu } => write_timestamp(v, zulu, &mut out),
        }
        Value::from(String::from_utf8_lossy(&out).into_owned())
    }

    /// Reads back what [`CursorKind::to_json`] wrote; `None` for anything else, including dates
    /// that do not exist (`2024-02-31`).
    pub fn from_json(self, v: &Value) -> Option<i64> {
        match self {
            CursorKind::Integer => v.as_i64(),
            CursorKind::Date => {
                let date = parse_calendar(v.as_str()?, "-%m-%d")?
                    .to_naive_date()
                    .ok()?;
                Some((date - NaiveDate::from_ymd_opt(1970, 1, 1)?).num_days())
            }
            CursorKind::Timestamp { zulu } => {
                let s = v.as_str()?;
                // `Z` comes before a ` BC`, and only on timestamptz.
                let (s, bc) = match s.strip_suffix(" BC") {
                    Some(s) => (s, " BC"),
                    None => (s, ""),
                };
                let s = if zulu { s.strip_suffix('Z')? } else { s };
                let parsed = parse_calendar(&format!("{s}{bc}"), "-%m-%dT%H:%M:%S%.f")?;
                // Sub-µs digits are cut off (floor): the bound stays below every later µs value.
                let t = parsed.to_naive_datetime_with_offset(0).ok()?;
                Some(t.and_utc().timestamp_micros())
            }
        }
    }

    /// The CMD `start` that prunes chunks wholly below `v` on a time dimension of this kind, or
    /// `None` when no safe bound can be written. Rows at the bound are filtered out by the reader
    /// (`start` is inclusive). For `timestamp` and `date` the server's conversion depends on the
    /// session time zone, so the bound is moved a day earlier: pruning stays safe, filtering exact.
    pub fn start_bound(self, v: i64) -> Option<Bound> {
        let micros = match self {
            CursorKind::Integer => return Some(Bound::Integer(v)),
            CursorKind::Date => v.checked_mul(MICROS_PER_DAY)?.checked_sub(MICROS_PER_DAY)?,
            CursorKind::Timestamp { zulu: true } => v,
            CursorKind::Timestamp { zulu: false } => v.checked_sub(MICROS_PER_DAY)?,
        };
        let t = chrono::DateTime::from_timestamp_micros(micros)?;
        // RFC 3339 only knows years 1..=9999 (no " BC", no five-digit years).
        (1..=9999)
            .contains(&t.year())
            .then(|| Bound::Time(t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()))
    }
}

/// Parses `YYYY…` followed by `rest_format` (chrono's syntax) as written by [`write_date`]: four or
/// more year digits, ` BC` at the very end for years before 1 (1 BC is year 0). The year is split
/// off by hand because chrono reads five-digit years only with a sign, and a BC year must be turned
/// into an astronomical one before chrono checks the day (29 February of 1 BC exists).
fn parse_calendar(s: &str, rest_format: &str) -> Option<Parsed> {
    let (s, bc) = match s.strip_suffix(" BC") {
        Some(s) => (s, true),
        None => (s, false),
    };
    let year_len = s.bytes().take_while(u8::is_ascii_digit).count();
    if year_len < 4 {
        return None;
    }
    let year: i64 = s[..year_len].parse().ok()?;
    let mut parsed = Parsed::new();
    chrono::format::parse(&mut parsed, &s[year_len..], StrftimeItems::new(rest_format)).ok()?;
    parsed.set_year(if bc { 1 - year } else { year }).ok()?;
    Some(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TSTZ: CursorKind = CursorKind::Timestamp { zulu: true };
    const TS: CursorKind = CursorKind::Timestamp { zulu: false };

    #[test]
    fn cursors_round_trip_through_json() {
        // Includes 1 BC (year 0, a leap year) and a five-digit year.
        let leap_day_1_bc = -719_528 + 59;
        for v in [
            0i64,
            1,
            -1,
            1_790_812_800_000_001,
            -62_135_596_800_000_001,
            leap_day_1_bc * MICROS_PER_DAY,
            253_402_300_800_000_000,
        ] {
            for kind in [TSTZ, TS] {
                let j = kind.to_json(v);
                assert_eq!(kind.from_json(&j), Some(v), "{j}");
            }
        }
        for d in [0i64, 20_727, -800_000, leap_day_1_bc, 2_932_897] {
            let j = CursorKind::Date.to_json(d);
            assert_eq!(CursorKind::Date.from_json(&j), Some(d), "{j}");
        }
        assert_eq!(
            CursorKind::Date.to_json(leap_day_1_bc),
            Value::from("0001-02-29 BC")
        );
        assert_eq!(
            CursorKind::Integer.from_json(&CursorKind::Integer.to_json(-5)),
            Some(-5)
        );
        assert_eq!(
            TSTZ.from_json(&Value::from("2026-10-01T00:00:00Z")),
            Some(1_790_812_800_000_000)
        );
        // Digits beyond µs are cut off, never rounded up.
        assert_eq!(
            TSTZ.from_json(&Value::from("1970-01-01T00:00:00.0000019Z")),
            Some(1)
        );
    }

    #[test]
    fn impossible_dates_and_strangers_are_refused() {
        for bad in [
            "",
            "2026-10-01",
            "2026-13-01T00:00:00Z",
            "2024-02-31T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2026-10-01T24:00:00Z",
            "2026-10-01T00:00:00+01:00",
            "2026-10-01T00:00:00",
            "26-10-01T00:00:00Z",
            "2026-10-01T00:00:00Z trailing",
        ] {
            assert_eq!(TSTZ.from_json(&Value::from(bad)), None, "{bad}");
        }
        assert_eq!(TS.from_json(&Value::from("2026-10-01T00:00:00Z")), None);
        for bad in [
            "2024-02-31",
            "2023-02-29",
            "2024-00-10",
            "2024-01-01T00:00:00Z",
            "2024-01-01x",
        ] {
            assert_eq!(CursorKind::Date.from_json(&Value::from(bad)), None, "{bad}");
        }
        assert_eq!(
            CursorKind::Date.from_json(&Value::from("2024-02-29")),
            Some(19_782)
        );
    }

    #[test]
    fn start_bounds_are_safe() {
        let time = |s: &str| Some(Bound::Time(s.into()));
        assert_eq!(
            TSTZ.start_bound(1_790_812_800_000_001),
            time("2026-10-01T00:00:00.000001Z")
        );
        assert_eq!(
            TS.start_bound(1_790_812_800_000_000),
            time("2026-09-30T00:00:00.000000Z")
        );
        assert_eq!(
            CursorKind::Date.start_bound(20_727),
            time("2026-09-30T00:00:00.000000Z")
        );
        assert_eq!(CursorKind::Integer.start_bound(7), Some(Bound::Integer(7)));
        assert_eq!(TSTZ.start_bound(i64::MAX), None);
        assert_eq!(TSTZ.start_bound(-62_135_596_800_000_001), None);
    }

    #[test]
    fn states_round_trip_and_reject_strangers() {
        let d = StreamDescriptor {
            name: "m".into(),
            namespace: Some("public".into()),
        };
        let mut s = StreamState::new(
            SyncMode::Incremental,
            vec!["time".into()],
            Some("time".into()),
        );
        s.in_progress.insert("c1".into(), Some("dGlja2V0".into()));
        s.completed_chunks.push("c0".into());
        let blob = serde_json::to_value(&s).unwrap();
        assert_eq!(parse(&d, blob).unwrap(), Some(s));
        assert_eq!(parse(&d, serde_json::json!({})).unwrap(), None);
        assert!(matches!(
            parse(&d, serde_json::json!({"cursor": 1})),
            Err(Error::State(_))
        ));
    }
}
