//! Facts about a table that the server publishes in the Arrow schema's metadata (of ListFlights,
//! GetFlightInfo and GetSchema), so clients never query the database for them.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Schema metadata key: the table kind (`TableKind` in snake_case).
pub const KIND_KEY: &str = "hyperflight.kind";
/// Schema metadata key: the time dimension column, for hypertables.
pub const TIME_COLUMN_KEY: &str = "hyperflight.time_column";
/// Schema metadata key: primary key columns as a JSON array, in key order.
pub const PRIMARY_KEY_KEY: &str = "hyperflight.primary_key";

/// What kind of relation a flight is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableKind {
    /// A TimescaleDB hypertable.
    Hypertable,
    /// A natively partitioned table.
    Partitioned,
    /// An ordinary table.
    Table,
    /// A continuous aggregate.
    ContinuousAggregate,
    /// A view or materialized view.
    View,
}

/// The facts in a schema's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableFacts {
    /// The relation's kind.
    pub kind: TableKind,
    /// The time dimension column (windows and incremental cursors use it).
    pub time_column: Option<String>,
    /// Primary key columns in key order; empty when there is none.
    pub primary_key: Vec<String>,
}

impl TableFacts {
    /// As schema metadata entries.
    pub fn to_metadata(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        m.insert(KIND_KEY.into(), json_str(&self.kind));
        if let Some(t) = &self.time_column {
            m.insert(TIME_COLUMN_KEY.into(), t.clone());
        }
        m.insert(
            PRIMARY_KEY_KEY.into(),
            serde_json::to_string(&self.primary_key).expect("strings serialize"),
        );
        m
    }

    /// Reads the facts back from schema metadata; `None` when the schema carries none.
    pub fn from_metadata(m: &HashMap<String, String>) -> Option<TableFacts> {
        Self::from_lookup(|key| m.get(key).cloned())
    }

    /// The same from any metadata map (Arrow's schema metadata is a type of its own), through its
    /// lookup.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Option<TableFacts> {
        let kind = serde_json::from_value(serde_json::Value::String(get(KIND_KEY)?)).ok()?;
        let primary_key = match get(PRIMARY_KEY_KEY) {
            Some(text) => serde_json::from_str(&text).ok()?,
            None => Vec::new(),
        };
        Some(TableFacts {
            kind,
            time_column: get(TIME_COLUMN_KEY),
            primary_key,
        })
    }
}

fn json_str<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => unreachable!("unit enum variants serialize as strings"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_round_trip() {
        let f = TableFacts {
            kind: TableKind::Hypertable,
            time_column: Some("time".into()),
            primary_key: vec!["device_id".into(), "time".into()],
        };
        let m = f.to_metadata();
        assert_eq!(m[KIND_KEY], "hypertable");
        assert_eq!(m[PRIMARY_KEY_KEY], r#"["device_id","time"]"#);
        assert_eq!(TableFacts::from_metadata(&m), Some(f));
        assert_eq!(TableFacts::from_metadata(&HashMap::new()), None);
    }
}
