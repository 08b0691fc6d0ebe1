//! The `CMD` descriptor: UTF-8 JSON naming a table, optionally columns and a window on the time
//! dimension. Unknown keys are an error, so a client's typo is never silently ignored.

use serde::{Deserialize, Serialize};

/// A table, as `"schema.table"` (split at the first dot) or `["schema", "table"]` (any name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TableRef {
    /// `"schema.table"`.
    Dotted(String),
    /// `["schema", "table"]`, exact names.
    Parts([String; 2]),
}

impl TableRef {
    /// The array form, which names any table exactly.
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        TableRef::Parts([schema.into(), name.into()])
    }

    /// `(schema, table)`, or why the dotted form is malformed.
    pub fn parts(&self) -> Result<(&str, &str), String> {
        match self {
            TableRef::Parts([schema, name]) => Ok((schema, name)),
            TableRef::Dotted(s) => match s.split_once('.') {
                Some((schema, name)) if !schema.is_empty() && !name.is_empty() => {
                    Ok((schema, name))
                }
                _ => Err(format!(
                    "table {:?} must be \"schema.table\" or [\"schema\", \"table\"]",
                    crate::status::clip(s)
                )),
            },
        }
    }
}

/// A window bound: RFC 3339 text for time dimensions, an integer for integer dimensions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Bound {
    /// For integer dimensions.
    Integer(i64),
    /// RFC 3339, for time dimensions.
    Time(String),
}

/// The JSON of a `CMD` descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    /// The table read.
    pub table: TableRef,
    /// Columns in the order wanted; absent means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    /// Inclusive start of the window on the time dimension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Bound>,
    /// Exclusive end of the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<Bound>,
    /// Every endpoint reads one exported snapshot.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub consistent_snapshot: bool,
    /// A live tail: one `tail` endpoint streaming the table's changes as they commit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub follow: bool,
    /// Where a tail starts: `"now"` (the default) or after an LSN such as `"16/B374D848"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

impl Command {
    /// A whole-table read.
    pub fn table(table: TableRef) -> Self {
        Command {
            table,
            columns: None,
            start: None,
            end: None,
            consistent_snapshot: false,
            follow: false,
            from: None,
        }
    }

    /// Parses and checks a descriptor's bytes; the error names the key or value at fault.
    pub fn from_json(bytes: &[u8]) -> Result<Command, String> {
        let c: Command = serde_json::from_slice(bytes).map_err(|e| {
            format!(
                "invalid CMD descriptor: {}",
                crate::status::clip(&e.to_string())
            )
        })?;
        c.table.parts()?;
        if matches!(&c.columns, Some(cols) if cols.is_empty()) {
            return Err("columns must not be empty".into());
        }
        if c.follow
            && (c.columns.is_some()
                || c.start.is_some()
                || c.end.is_some()
                || c.consistent_snapshot)
        {
            return Err(
                "follow takes only table and from (a tail streams whole rows as they change)"
                    .into(),
            );
        }
        if c.from.is_some() && !c.follow {
            return Err("from applies to a tail: set follow to true".into());
        }
        Ok(c)
    }

    /// The descriptor's bytes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a Command always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_and_array_names() {
        let c = Command::from_json(br#"{"table": "public.m", "end": 10}"#).unwrap();
        assert_eq!(c.table.parts().unwrap(), ("public", "m"));
        assert_eq!(c.end, Some(Bound::Integer(10)));
        let c = Command::from_json(br#"{"table": ["My Schema", "a.b"]}"#).unwrap();
        assert_eq!(c.table.parts().unwrap(), ("My Schema", "a.b"));
    }

    #[test]
    fn bad_commands_name_the_fault() {
        for (bad, says) in [
            (r#"{"table": "public.m", "colums": []}"#, "colums"),
            (r#"{"table": "nodot"}"#, "schema.table"),
            (r#"{"table": "public.m", "columns": []}"#, "columns"),
            (r#"{"table": ["a"]}"#, "invalid CMD"),
            ("not json", "invalid CMD"),
            (
                r#"{"table": "public.m", "consistent_snapshot": 1}"#,
                "invalid CMD",
            ),
            (
                r#"{"table": "public.m", "follow": true, "columns": ["a"]}"#,
                "follow takes only",
            ),
            (r#"{"table": "public.m", "from": "now"}"#, "set follow"),
        ] {
            let e = Command::from_json(bad.as_bytes()).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn round_trips_without_defaults() {
        let c = Command {
            columns: Some(vec!["time".into()]),
            start: Some(Bound::Time("2026-10-03T00:00:00Z".into())),
            ..Command::table(TableRef::new("public", "metrics"))
        };
        let text = String::from_utf8(c.to_json()).unwrap();
        assert_eq!(
            text,
            r#"{"table":["public","metrics"],"columns":["time"],"start":"2026-10-03T00:00:00Z"}"#
        );
        assert_eq!(Command::from_json(text.as_bytes()).unwrap(), c);
    }
}
