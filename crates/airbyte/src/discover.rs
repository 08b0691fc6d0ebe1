//! `discover`: one stream per table the Flight service exposes (ListFlights — hypertables and plain
//! tables, never chunks or internal schemas), typed from its Arrow schema, with the time dimension
//! as the source-defined cursor of a hypertable and the primary key from `pg_index`.

use std::collections::HashMap;
use std::path::Path;

use arrow::datatypes::Schema;
use futures::TryStreamExt;

use crate::config::SourceConfig;
use crate::database::{Database, TableKey};
use crate::flight::FlightSource;
use crate::output::Output;
use crate::messages::{Catalog, Message, Stream, SyncMode};
use crate::schema::stream_schema;
use crate::state::CursorKind;
use crate::Error;

/// Runs `discover`: writes the CATALOG message.
pub async fn run(config: &Path, out: &mut Output) -> Result<(), Error> {
    let config = SourceConfig::load(config)?;
    config.ensure_supported()?;
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

/// Facts about tables that Flight does not carry.
#[derive(Debug, Default)]
pub struct TableFacts {
    /// Time dimension of each hypertable (empty when TimescaleDB support is off).
    pub time_columns: HashMap<TableKey, String>,
    /// Primary key of each table that has one.
    pub primary_keys: HashMap<TableKey, Vec<String>>,
}

impl TableFacts {
    /// Queries the database for them.
    pub async fn load(db: &Database, config: &SourceConfig) -> Result<TableFacts, Error> {
        Ok(TableFacts {
            time_columns: if config.timescaledb.support {
                db.time_dimensions().await?
            } else {
                HashMap::new()
            },
            primary_keys: db.primary_keys().await?,
        })
    }

    /// The hypertable time column of `table`, if it is one and the column has a cursor type.
    pub fn time_column(&self, table: &TableKey, schema: &Schema) -> Option<String> {
        let column = self.time_columns.get(table)?;
        let field = schema.field_with_name(column).ok()?;
        CursorKind::of(field.data_type()).map(|_| column.clone())
    }
}

/// The catalog: the Flight service's tables, in its order.
pub async fn catalog(config: &SourceConfig) -> Result<Catalog, Error> {
    let db = Database::connect(config).await?;
    let facts = TableFacts::load(&db, config).await?;
    drop(db);
    let source = FlightSource::start(config).await?;
    let listed = list_tables(&source).await;
    source.shutdown().await;
    let streams = listed?
        .into_iter()
        .map(|(table, schema)| stream(&table, &schema, &facts))
        .collect();
    Ok(Catalog { streams })
}

/// Every exposed table and its Arrow schema (ListFlights).
pub async fn list_tables(source: &FlightSource) -> Result<Vec<(TableKey, Schema)>, Error> {
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
        let [schema_name, table] = <[String; 2]>::try_from(path).map_err(|p| Error::Protocol {
            context: context.into(),
            message: format!("expected a [schema, table] descriptor, got {p:?}"),
        })?;
        let schema = info.try_decode_schema().map_err(|e| Error::Protocol {
            context: context.into(),
            message: format!("schema of {schema_name}.{table}: {e}"),
        })?;
        tables.push(((schema_name, table), schema));
    }
    Ok(tables)
}

/// The stream of one table. Hypertables get their time dimension as source-defined cursor; plain
/// tables may be read incrementally on a cursor the user picks (any integer, date or timestamp
/// column), filtered by the source since there are no chunks to prune.
pub fn stream(table: &TableKey, schema: &Schema, facts: &TableFacts) -> Stream {
    let time_column = facts.time_column(table, schema);
    let has_cursor_column = schema
        .fields()
        .iter()
        .any(|f| CursorKind::of(f.data_type()).is_some());
    let supported_sync_modes = if time_column.is_some() || has_cursor_column {
        vec![SyncMode::FullRefresh, SyncMode::Incremental]
    } else {
        vec![SyncMode::FullRefresh]
    };
    Stream {
        name: table.1.clone(),
        namespace: table.0.clone(),
        json_schema: stream_schema(schema),
        supported_sync_modes,
        source_defined_cursor: time_column.is_some(),
        default_cursor_field: time_column.map(|c| vec![c]),
        source_defined_primary_key: facts
            .primary_keys
            .get(table)
            .map(|cols| cols.iter().map(|c| vec![c.clone()]).collect()),
        is_resumable: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, TimeUnit};

    #[test]
    fn hypertables_get_a_source_defined_cursor() {
        let schema = Schema::new(vec![
            Field::new(
                "time",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("v", DataType::Float64, true),
        ]);
        let key = ("public".to_string(), "m".to_string());
        let mut facts = TableFacts::default();
        facts.time_columns.insert(key.clone(), "time".into());
        facts
            .primary_keys
            .insert(key.clone(), vec!["time".into(), "v".into()]);
        let s = stream(&key, &schema, &facts);
        assert!(s.source_defined_cursor);
        assert_eq!(s.default_cursor_field, Some(vec!["time".to_string()]));
        assert_eq!(
            s.source_defined_primary_key,
            Some(vec![vec!["time".to_string()], vec!["v".to_string()]])
        );
        let plain = stream(
            &("public".into(), "p".into()),
            &schema,
            &TableFacts::default(),
        );
        assert!(!plain.source_defined_cursor);
        assert_eq!(plain.supported_sync_modes.len(), 2);
        let no_cursor = Schema::new(vec![Field::new("v", DataType::Utf8, true)]);
        let s = stream(&key, &no_cursor, &TableFacts::default());
        assert_eq!(s.supported_sync_modes, vec![SyncMode::FullRefresh]);
    }
}
