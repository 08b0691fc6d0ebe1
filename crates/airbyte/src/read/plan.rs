//! Planning one stream, before and after GetFlightInfo: which columns, which cursor, which saved
//! state to continue, the CMD descriptor; then which endpoints to skip, resume or read. Pure
//! functions: what they have to tell the user is collected in [`Notes`] and sent by the caller.

use std::collections::HashSet;

use arrow::datatypes::Schema;
use arrow_flight::FlightEndpoint;
use base64::Engine;
use bytes::Bytes;
use protocol::{Command, EndpointMetadata, TableRef};
use serde_json::Value;

use super::writer::BASE64;
use crate::discover::time_column;
use crate::messages::{ConfiguredStream, Level, Message, StreamDescriptor, SyncMode};
use crate::state::{self, CursorKind, StreamState};
use crate::Error;

/// LOG messages a planning step has for the user.
pub(super) type Notes = Vec<Message>;

/// The incremental cursor of a stream.
pub(super) struct Cursor {
    /// The column.
    pub column: String,
    /// How its values compare and are written.
    pub kind: CursorKind,
    /// It is the hypertable's time dimension: the saved cursor prunes chunks (CMD `start`).
    pub pushdown: bool,
}

/// A stream ready to plan with the Flight service.
pub(super) struct StreamPlan {
    /// Columns written to records, in table order.
    pub emitted: Vec<String>,
    /// The incremental cursor, if any.
    pub cursor: Option<Cursor>,
    /// The state continued (or a fresh pass).
    pub state: StreamState,
    /// The pass's exclusive lower bound on the cursor.
    pub lower: Option<i64>,
    /// The highest cursor the pass has written so far.
    pub pass_max: Option<i64>,
    /// The CMD descriptor.
    pub command: Command,
}

/// Columns, cursor, the state to continue from and the command, for `table` of `schema` (its
/// GetSchema answer, with the table's facts).
pub(super) fn plan_stream(
    configured: &ConfiguredStream,
    descriptor: &StreamDescriptor,
    table: TableRef,
    schema: &Schema,
    blob: Option<Value>,
    notes: &mut Notes,
) -> Result<StreamPlan, Error> {
    let emitted = emitted_columns(configured, descriptor, schema, notes)?;
    let cursor = match configured.sync_mode {
        SyncMode::FullRefresh => None,
        SyncMode::Incremental => Some(cursor(configured, descriptor, schema)?),
    };
    let mut requested = emitted.clone();
    if let Some(c) = &cursor {
        if !requested.contains(&c.column) {
            requested.push(c.column.clone());
        }
    }
    let fresh = StreamState::new(
        configured.sync_mode,
        requested.clone(),
        cursor.as_ref().map(|c| c.column.clone()),
    );
    let state = continued_state(descriptor, blob, fresh, notes)?;
    let read_cursor = |v: &Option<Value>, what: &str| -> Result<Option<i64>, Error> {
        match (&cursor, v) {
            (Some(c), Some(v)) => c.kind.from_json(v).map(Some).ok_or_else(|| {
                Error::State(format!(
                    "{descriptor}: the saved {what} {v} is not a value of cursor column {:?}; reset the stream",
                    c.column
                ))
            }),
            _ => Ok(None),
        }
    };
    let lower = read_cursor(&state.cursor, "cursor")?;
    let pass_max = read_cursor(&state.pass_cursor, "pass cursor")?;
    let start = match (&cursor, lower) {
        (Some(c), Some(l)) if c.pushdown => c.kind.start_bound(l),
        _ => None,
    };
    let command = Command {
        columns: Some(requested),
        start,
        ..Command::table(table)
    };
    Ok(StreamPlan {
        emitted,
        cursor,
        state,
        lower,
        pass_max,
        command,
    })
}

/// The selected columns that the table still has, in table order.
fn emitted_columns(
    configured: &ConfiguredStream,
    descriptor: &StreamDescriptor,
    schema: &Schema,
    notes: &mut Notes,
) -> Result<Vec<String>, Error> {
    let selected: Option<HashSet<String>> = configured
        .stream
        .selected_columns()
        .map(|c| c.into_iter().collect());
    let emitted: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| selected.as_ref().is_none_or(|s| s.contains(n)))
        .collect();
    if let Some(selected) = &selected {
        let mut gone: Vec<&String> = selected.iter().filter(|c| !emitted.contains(c)).collect();
        if !gone.is_empty() {
            gone.sort();
            notes.push(Message::log(
                Level::Warn,
                format!(
                    "{descriptor}: selected column(s) no longer in the table are skipped: {gone:?}"
                ),
            ));
        }
    }
    if emitted.is_empty() {
        return Err(Error::Catalog(format!(
            "{descriptor}: none of the selected columns exists in the table; refresh the source schema"
        )));
    }
    Ok(emitted)
}

/// The cursor of an incremental stream: a hypertable's time dimension, else the user's column.
fn cursor(
    configured: &ConfiguredStream,
    descriptor: &StreamDescriptor,
    schema: &Schema,
) -> Result<Cursor, Error> {
    let time_column = time_column(schema);
    let pushdown = time_column.is_some();
    let column = match (time_column, configured.cursor_field.as_deref()) {
        (Some(t), _) => t,
        (None, Some([c])) => c.clone(),
        (None, Some(path)) if !path.is_empty() => {
            return Err(Error::Catalog(format!(
                "{descriptor}: cursor field {path:?} is a nested path; use a top-level column"
            )))
        }
        (None, _) => {
            return Err(Error::Catalog(format!(
                "{descriptor}: incremental sync of a plain table needs a cursor field (an integer, date or timestamp column)"
            )))
        }
    };
    let field = schema.field_with_name(&column).map_err(|_| {
        Error::Catalog(format!(
            "{descriptor}: cursor field {column:?} is not a column of the table"
        ))
    })?;
    let kind = CursorKind::of(field.data_type()).ok_or_else(|| {
        Error::Catalog(format!(
            "{descriptor}: column {column:?} ({}) cannot be a cursor; use an integer, date or timestamp column",
            field.data_type()
        ))
    })?;
    Ok(Cursor {
        column,
        kind,
        pushdown,
    })
}

/// The saved state when it is for the same pass (mode, columns, cursor), else `fresh`, keeping the
/// saved cursor when it is the same cursor.
fn continued_state(
    descriptor: &StreamDescriptor,
    blob: Option<Value>,
    fresh: StreamState,
    notes: &mut Notes,
) -> Result<StreamState, Error> {
    let Some(saved) = blob
        .map(|b| state::parse(descriptor, b))
        .transpose()?
        .flatten()
    else {
        return Ok(fresh);
    };
    if saved.sync_mode == fresh.sync_mode
        && saved.columns == fresh.columns
        && saved.cursor_field == fresh.cursor_field
    {
        return Ok(saved);
    }
    if saved.in_pass() {
        notes.push(Message::log(Level::Info, format!("{descriptor}: the saved state is for another sync mode, column selection or cursor; starting a new pass")));
    }
    // The cursor survives a change of columns, as long as it is the same cursor.
    let keep_cursor = saved.sync_mode == SyncMode::Incremental
        && fresh.sync_mode == SyncMode::Incremental
        && saved.cursor_field == fresh.cursor_field;
    Ok(StreamState {
        cursor: if keep_cursor { saved.cursor } else { None },
        ..fresh
    })
}

/// One endpoint to read.
#[derive(Debug)]
pub(super) struct Work {
    /// Its position in the plan.
    pub index: usize,
    /// Its key in the state.
    pub key: String,
    /// The ticket read first.
    pub ticket: Bytes,
    /// The planned ticket, when `ticket` is a saved resume ticket that may be refused.
    pub fallback: Option<Bytes>,
    /// The endpoint's locations (a fleet lists several; empty: the service read from).
    pub locations: Vec<String>,
}

/// The endpoints of a plan: every endpoint's state key, and the work left (completed endpoints
/// skipped, in-progress ones from their saved resume ticket). Drops in-progress entries of
/// endpoints no longer planned from `state`.
pub(super) fn schedule(
    descriptor: &StreamDescriptor,
    endpoints: &[FlightEndpoint],
    state: &mut StreamState,
    notes: &mut Notes,
) -> Result<(Vec<String>, Vec<Work>), Error> {
    let table = format!(
        "{}.{}",
        descriptor.namespace.as_deref().unwrap_or_default(),
        descriptor.name
    );
    let protocol_error = |message: String| Error::Protocol {
        context: format!("GetFlightInfo {descriptor}"),
        message,
    };
    let mut keys: Vec<String> = Vec::with_capacity(endpoints.len());
    let mut works = Vec::new();
    let (mut skipped, mut resumed) = (0usize, 0usize);
    for (index, endpoint) in endpoints.iter().enumerate() {
        let metadata = EndpointMetadata::from_json(&endpoint.app_metadata)
            .map_err(|e| protocol_error(format!("endpoint {index}: {e}")))?;
        let mut key = endpoint_key(&table, &metadata, index);
        if keys.contains(&key) {
            key = format!("{key}#{index}");
        }
        keys.push(key.clone());
        let planned = endpoint
            .ticket
            .as_ref()
            .map(|t| t.ticket.clone())
            .ok_or_else(|| protocol_error(format!("endpoint {key} has no ticket")))?;
        if state.completed_chunks.contains(&key) {
            skipped += 1;
            continue;
        }
        let locations = endpoint.location.iter().map(|l| l.uri.clone()).collect();
        let work = match saved_ticket(descriptor, state, &key, notes) {
            Some(ticket) => {
                resumed += 1;
                Work {
                    index,
                    key,
                    ticket,
                    fallback: Some(planned),
                    locations,
                }
            }
            None => Work {
                index,
                key,
                ticket: planned,
                fallback: None,
                locations,
            },
        };
        works.push(work);
    }
    forget_unplanned(descriptor, state, &keys, notes);
    if skipped > 0 || resumed > 0 {
        notes.push(Message::log(
            Level::Info,
            format!(
                "{descriptor}: resuming: {skipped} of {} endpoint(s) already complete, {resumed} continued from a resume ticket",
                keys.len()
            ),
        ));
    }
    Ok((keys, works))
}

/// The saved resume ticket of endpoint `key`, if it has a usable one.
fn saved_ticket(
    descriptor: &StreamDescriptor,
    state: &StreamState,
    key: &str,
    notes: &mut Notes,
) -> Option<Bytes> {
    match state.in_progress.get(key)? {
        Some(b64) => match BASE64.decode(b64) {
            Ok(t) => Some(Bytes::from(t)),
            Err(_) => {
                notes.push(Message::log(Level::Warn, format!("{descriptor}: the saved resume ticket of {key} is not base64; reading it again from its start (its rows already delivered are delivered again)")));
                None
            }
        },
        None => {
            notes.push(Message::log(Level::Warn, format!("{descriptor}: {key} was interrupted where no resume position exists (e.g. a compressed chunk); reading it again from its start (its rows already delivered are delivered again)")));
            None
        }
    }
}

/// Drops in-progress entries of endpoints the plan no longer has.
fn forget_unplanned(
    descriptor: &StreamDescriptor,
    state: &mut StreamState,
    keys: &[String],
    notes: &mut Notes,
) {
    let stale: Vec<String> = state
        .in_progress
        .keys()
        .filter(|k| !keys.contains(k))
        .cloned()
        .collect();
    for k in stale {
        state.in_progress.remove(&k);
        notes.push(Message::log(Level::Warn, format!("{descriptor}: {k} was in progress but is no longer planned (dropped, or the table's layout changed); its remaining rows, if any, are read through the current plan")));
    }
}

/// The endpoint key of the state: the chunk (or partition) name, else the table with its block
/// range, else the table (`#index` after the first such endpoint).
pub(super) fn endpoint_key(table: &str, m: &EndpointMetadata, index: usize) -> String {
    if let Some(chunk) = &m.chunk {
        return chunk.clone();
    }
    match m.block_start {
        Some(start) => {
            let end = m.block_end.map(|e| e.to_string()).unwrap_or_default();
            format!("{table}[blocks {start}..{end}]")
        }
        None if index == 0 => table.to_string(),
        None => format!("{table}#{index}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::EndpointKind;

    fn metadata(
        kind: EndpointKind,
        chunk: Option<&str>,
        blocks: Option<(u32, Option<u32>)>,
    ) -> EndpointMetadata {
        EndpointMetadata {
            kind,
            chunk: chunk.map(str::to_string),
            chunk_id: None,
            range_start: None,
            range_end: None,
            size_bytes: -1,
            estimated_rows: -1,
            is_compressed: false,
            compression_ratio: None,
            block_start: blocks.map(|b| b.0),
            block_end: blocks.and_then(|b| b.1),
        }
    }

    #[test]
    fn endpoint_keys_name_chunks_ranges_and_tables() {
        let chunk = metadata(
            EndpointKind::Chunk,
            Some("_timescaledb_internal._hyper_1_2_chunk"),
            None,
        );
        assert_eq!(
            endpoint_key("public.m", &chunk, 3),
            "_timescaledb_internal._hyper_1_2_chunk"
        );
        let first = metadata(EndpointKind::BlockRange, None, Some((0, Some(128))));
        assert_eq!(
            endpoint_key("public.d", &first, 0),
            "public.d[blocks 0..128]"
        );
        let last = metadata(EndpointKind::BlockRange, None, Some((128, None)));
        assert_eq!(endpoint_key("public.d", &last, 1), "public.d[blocks 128..]");
        let table = metadata(EndpointKind::Table, None, None);
        assert_eq!(endpoint_key("public.d", &table, 0), "public.d");
        assert_eq!(endpoint_key("public.d", &table, 2), "public.d#2");
    }

    #[test]
    fn endpoints_without_typed_metadata_are_a_protocol_error() {
        let d = StreamDescriptor {
            name: "m".into(),
            namespace: Some("public".into()),
        };
        let endpoint = FlightEndpoint::new()
            .with_ticket(arrow_flight::Ticket::new("t"))
            .with_app_metadata(r#"{"chunk": null}"#);
        let mut state = StreamState::new(SyncMode::FullRefresh, vec!["time".into()], None);
        let e = schedule(&d, &[endpoint], &mut state, &mut Vec::new()).unwrap_err();
        assert!(matches!(e, Error::Protocol { .. }), "{e}");
    }

    #[test]
    fn completed_endpoints_are_skipped_and_saved_tickets_resume() {
        let d = StreamDescriptor {
            name: "m".into(),
            namespace: Some("public".into()),
        };
        let endpoint = |chunk: &str, ticket: &str| {
            FlightEndpoint::new()
                .with_ticket(arrow_flight::Ticket::new(ticket.to_string()))
                .with_app_metadata(metadata(EndpointKind::Chunk, Some(chunk), None).to_json())
        };
        let endpoints = [
            endpoint("c0", "t0"),
            endpoint("c1", "t1"),
            endpoint("c2", "t2"),
        ];
        let mut state = StreamState::new(SyncMode::FullRefresh, vec!["time".into()], None);
        state.completed_chunks.push("c0".into());
        state
            .in_progress
            .insert("c1".into(), Some(BASE64.encode("saved")));
        state.in_progress.insert("gone".into(), None);
        let mut notes = Vec::new();
        let (keys, works) = schedule(&d, &endpoints, &mut state, &mut notes).unwrap();
        assert_eq!(keys, ["c0", "c1", "c2"]);
        assert_eq!(works.len(), 2);
        assert_eq!(
            (works[0].key.as_str(), &works[0].ticket[..]),
            ("c1", &b"saved"[..])
        );
        assert_eq!(works[0].fallback.as_deref(), Some(&b"t1"[..]));
        assert_eq!(
            (works[1].key.as_str(), &works[1].ticket[..]),
            ("c2", &b"t2"[..])
        );
        assert!(works[1].fallback.is_none());
        assert!(!state.in_progress.contains_key("gone"));
        assert_eq!(notes.len(), 2, "the dropped entry and the resume summary");
    }
}
