//! Flight SQL metadata: the server's SqlInfo, table types, primary keys, and the one-batch streams
//! that carry them. Catalogs, schemas and tables come from `arrow_flight::sql`'s builders, fed with
//! exactly what ListFlights lists.

use std::sync::Arc;

use arrow::array::{Int32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::{SqlInfo, SqlSupportedCaseSensitivity};
use futures::{stream, StreamExt, TryStreamExt};

use crate::catalog::Table;
use protocol::TableKind;

/// GetTableTypes: what `table_type` tells apart.
pub const TABLE_TYPES: [&str; 5] = [
    "HYPERTABLE",
    "TABLE",
    "PARTITIONED TABLE",
    "VIEW",
    "CONTINUOUS AGGREGATE",
];

/// Custom SqlInfo id (10 000 and up are the server's own): the SQL dialect statements are in.
pub const SQL_DIALECT_INFO: u32 = 10_000;

/// The `table_type` of a table of this kind.
pub fn table_type(kind: TableKind) -> &'static str {
    match kind {
        TableKind::Hypertable => TABLE_TYPES[0],
        TableKind::Table => TABLE_TYPES[1],
        TableKind::Partitioned => TABLE_TYPES[2],
        TableKind::View => TABLE_TYPES[3],
        TableKind::ContinuousAggregate => TABLE_TYPES[4],
    }
}

/// GetSqlInfo's answers.
pub fn sql_info() -> SqlInfoData {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "hyperflight");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "60");
    b.append(SqlInfo::FlightSqlServerReadOnly, true);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(SqlInfo::FlightSqlServerTransaction, 0i32);
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, false);
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(
        SqlInfo::SqlIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
    );
    b.append(
        SqlInfo::SqlQuotedIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityCaseInsensitive as i32,
    );
    b.append(SQL_DIALECT_INFO, "PostgreSQL");
    b.build().expect("fixed SqlInfo values build")
}

/// GetPrimaryKeys' schema, as the Flight SQL specification gives it.
pub fn primary_keys_schema() -> Schema {
    Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ])
}

/// The primary key columns of `table` (none when there is no such table or key).
pub fn primary_keys(database: &str, table: Option<&Table>) -> Result<RecordBatch, FlightError> {
    let key = table.map(|t| t.primary_key.as_slice()).unwrap_or_default();
    let n = key.len();
    let repeat = |v: Option<&str>| Arc::new(StringArray::from(vec![v; n]));
    let (schema, name) = table
        .map(|t| (t.name.schema.as_str(), t.name.name.as_str()))
        .unwrap_or_default();
    RecordBatch::try_new(
        Arc::new(primary_keys_schema()),
        vec![
            repeat(Some(database)),
            repeat(Some(schema)),
            repeat(Some(name)),
            Arc::new(StringArray::from_iter_values(key)),
            repeat(None),
            Arc::new(Int32Array::from_iter_values(1..=n as i32)),
        ],
    )
    .map_err(FlightError::from)
}

type Stream = super::Stream;

/// One metadata batch as a DoGet stream.
pub fn stream(batch: Result<RecordBatch, FlightError>) -> Stream {
    let schema: Option<SchemaRef> = batch.as_ref().ok().map(|b| b.schema());
    let batches = stream::iter([batch]);
    let mut encoder = FlightDataEncoderBuilder::new();
    if let Some(schema) = schema {
        encoder = encoder.with_schema(schema);
    }
    encoder.build(batches).map_err(tonic::Status::from).boxed()
}
