//! `discover`: one stream per table the Flight service exposes (ListFlights — hypertables and plain
//! tables, never chunks or internal schemas), typed from its Arrow schema. The time dimension (a
//! hypertable's source-defined cursor) and the primary key are the [`TableFacts`] the server
//! publishes in that schema's metadata: the source never asks PostgreSQL for them.

use std::path::Path;

use arrow::datatypes::Schema;
use futures::TryStreamExt;
use protocol::TableFacts;

use crate::config::{ReplicationMethod, SourceConfig};
use crate::flight::FlightSource;
use crate::messages::{Catalog, Message, Stream, SyncMode};
use crate::output::Output;
use crate::schema::stream_schema;
use crate::state::CursorKind;
use crate::Error;

/// Runs `discover`: writes the CATALOG message.
pub async fn run(config: &Path, out: &mut Output) -> Result<(), Error> {
    let config = SourceConfig::load(config)?;
    warn_unknown_keys(&config, out)?;
    let catalog = catalog(&config).await?;
    out.message(&Message::Catalog { catalog })?;
    Ok(out.flush()?)
}

/// Writes a LOG warning naming config keys the spec does not know.
pub(crate) fn warn_unknown_keys(config: &SourceConfig, out: &mut Output) -> Result<(), Error> {
    if !config.unknown_keys.is_empty() {
        out.message(&Message::log(
            crate::messages::Level::Warn,
            format!(
                "ignoring config keys this source does not know: {}",
                config.unknown_keys.join(", ")
            ),
        ))?;
    }
    Ok(())
}

/// A table the Flight service exposes.
#[derive(Debug)]
pub struct Table {
    /// Its schema (namespace).
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its columns, with the [`TableFacts`] in the metadata.
    pub schema: Schema,
}

/// The catalog: the Flight service's tables in the configured schemas, in its order.
pub async fn catalog(config: &SourceConfig) -> Result<Catalog, Error> {
    let source = FlightSource::start(config).await?;
    let listed = list_tables(&source, &config.schemas).await;
    source.shutdown().await;
    let cdc = matches!(config.replication, ReplicationMethod::Cdc(_));
    let streams = listed?
        .iter()
        .map(|t| if cdc { cdc_stream(t) } else { stream(t) })
        .collect();
    Ok(Catalog { streams })
}

/// Every exposed table in `schemas` (all when empty) and its Arrow schema (ListFlights). The
/// in-process service already exposes only those; a remote server exposes what its own settings
/// say, so the filter matters there.
pub async fn list_tables(source: &FlightSource, schemas: &[String]) -> Result<Vec<Table>, Error> {
    let mut client = source.client().await?;
    let context = "ListFlights";
    let infos: Vec<_> = client
        .list_flights(bytes::Bytes::new())
        .await
        .map_err(|e| Error::flight(context, e))?
        .try_collect()
        .await
        .map_err(|e| Error::flight(context, e))?;
    let mut tables = Vec::with_capacity(infos.len());
    for info in infos {
        let path = info
            .flight_descriptor
            .as_ref()
            .map(|d| d.path.clone())
            .unwrap_or_default();
        let [namespace, name] = <[String; 2]>::try_from(path).map_err(|p| Error::Protocol {
            context: context.into(),
            message: format!("expected a [schema, table] descriptor, got {p:?}"),
        })?;
        if !schemas.is_empty() && !schemas.contains(&namespace) {
            continue;
        }
        let schema = info.try_decode_schema().map_err(|e| Error::Protocol {
            context: context.into(),
            message: format!("schema of {namespace}.{name}: {e}"),
        })?;
        tables.push(Table {
            namespace,
            name,
            schema,
        });
    }
    Ok(tables)
}

/// The [`TableFacts`] the server put in `schema`'s metadata; `None` from a server that sends none.
pub(crate) fn facts(schema: &Schema) -> Option<TableFacts> {
    TableFacts::from_lookup(|key| schema.metadata().get(key).cloned())
}

/// The time dimension of a hypertable's `schema` (from its [`TableFacts`]), if it has one and the
/// column is there with a type a cursor can have.
pub(crate) fn time_column(schema: &Schema) -> Option<String> {
    let column = facts(schema)?.time_column?;
    let field = schema.field_with_name(&column).ok()?;
    CursorKind::of(field.data_type()).map(|_| column)
}

/// The stream of one table. Hypertables get their time dimension as source-defined cursor; plain
/// tables may be read incrementally on a cursor the user picks (any integer, date or timestamp
/// column), filtered by the source since there are no chunks to prune.
pub fn stream(table: &Table) -> Stream {
    let schema = &table.schema;
    let time_column = time_column(schema);
    let has_cursor_column = schema
        .fields()
        .iter()
        .any(|f| CursorKind::of(f.data_type()).is_some());
    let supported_sync_modes = if time_column.is_some() || has_cursor_column {
        vec![SyncMode::FullRefresh, SyncMode::Incremental]
    } else {
        vec![SyncMode::FullRefresh]
    };
    let primary_key = facts(schema)
        .map(|f| f.primary_key)
        .filter(|key| !key.is_empty());
    Stream {
        name: table.name.clone(),
        namespace: table.namespace.clone(),
        json_schema: stream_schema(schema),
        supported_sync_modes,
        source_defined_cursor: time_column.is_some(),
        default_cursor_field: time_column.map(|c| vec![c]),
        source_defined_primary_key: primary_key
            .map(|cols| cols.into_iter().map(|c| vec![c]).collect()),
        is_resumable: true,
    }
}

/// The stream of one table read by CDC: incremental only, with the `_ab_cdc_*` columns and
/// `_ab_cdc_lsn` as source-defined cursor (Airbyte's convention for CDC sources).
pub fn cdc_stream(table: &Table) -> Stream {
    let schema = crate::cdc::with_cdc_fields(&table.schema);
    Stream {
        json_schema: stream_schema(&schema),
        supported_sync_modes: vec![SyncMode::Incremental],
        source_defined_cursor: true,
        default_cursor_field: Some(vec![crate::cdc::LSN.to_string()]),
        ..stream(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, TimeUnit};
    use protocol::TableKind;

    fn table(facts: Option<TableFacts>, fields: Vec<Field>) -> Table {
        let metadata = facts.map(|f| f.to_metadata()).unwrap_or_default();
        Table {
            namespace: "public".into(),
            name: "m".into(),
            schema: Schema::new_with_metadata(fields, metadata),
        }
    }

    fn fields() -> Vec<Field> {
        vec![
            Field::new(
                "time",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("v", DataType::Float64, true),
        ]
    }

    #[test]
    fn hypertables_get_a_source_defined_cursor_from_the_facts() {
        let facts = TableFacts {
            kind: TableKind::Hypertable,
            time_column: Some("time".into()),
            primary_key: vec!["time".into(), "v".into()],
        };
        let s = stream(&table(Some(facts), fields()));
        assert!(s.source_defined_cursor);
        assert_eq!(s.default_cursor_field, Some(vec!["time".to_string()]));
        assert_eq!(
            s.source_defined_primary_key,
            Some(vec![vec!["time".to_string()], vec!["v".to_string()]])
        );
    }

    #[test]
    fn plain_tables_and_tables_without_facts_have_no_source_cursor() {
        let plain = TableFacts {
            kind: TableKind::Table,
            time_column: None,
            primary_key: Vec::new(),
        };
        for t in [table(Some(plain), fields()), table(None, fields())] {
            let s = stream(&t);
            assert!(!s.source_defined_cursor);
            assert_eq!(s.source_defined_primary_key, None);
            assert_eq!(s.supported_sync_modes.len(), 2);
        }
        let no_cursor = table(None, vec![Field::new("v", DataType::Utf8, true)]);
        assert_eq!(
            stream(&no_cursor).supported_sync_modes,
            vec![SyncMode::FullRefresh]
        );
    }

    #[test]
    fn cdc_streams_add_the_cdc_columns_and_their_cursor() {
        let s = cdc_stream(&table(None, fields()));
        assert_eq!(s.supported_sync_modes, vec![SyncMode::Incremental]);
        assert!(s.source_defined_cursor);
        assert_eq!(
            s.default_cursor_field,
            Some(vec!["_ab_cdc_lsn".to_string()])
        );
        let props = &s.json_schema["properties"];
        assert!(props["_ab_cdc_lsn"]["type"].to_string().contains("integer"));
        assert_eq!(props["_ab_cdc_deleted_at"]["format"], "date-time");
        assert!(props["time"].is_object());
    }

    #[test]
    fn a_time_column_of_another_type_is_no_cursor() {
        let facts = TableFacts {
            kind: TableKind::Hypertable,
            time_column: Some("v".into()),
            primary_key: Vec::new(),
        };
        assert_eq!(time_column(&table(Some(facts), fields()).schema), None);
    }
}
