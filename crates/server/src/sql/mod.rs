//! Flight SQL (`arrow_flight::sql`) on the Flight port. [`FlightSql`] implements
//! `FlightSqlService`; the Flight service hands it every call whose command, ticket or action is
//! Flight SQL's, and keeps the rest (PATH and JSON CMD descriptors, signed tickets, its actions).
//!
//! A statement plans through the same path as a descriptor: a plain scan of one exposed table
//! becomes a [`TableRequest`] (chunk endpoints, resume tickets); anything else PostgreSQL runs whole
//! as one `query` endpoint, read by the same scanner with binary COPY in a read-only transaction.
//! Both kinds of endpoint carry ordinary signed tickets, so DoGet needs nothing new.

mod metadata;
mod prepared;
mod statement;

use std::sync::{Arc, Weak};

use crate::db::Pool;
use arrow::array::RecordBatch;
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::sql::server::FlightSqlService;
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandPreparedStatementQuery, CommandStatementQuery, ProstMessageExt,
};
use arrow_flight::sql::{Command, DoPutPreparedStatementResult};
use arrow_flight::{
    Action, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, IpcMessage, PutResult,
    SchemaAsIpc, Ticket,
};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use crate::error::{DbError, Error};
use crate::plan::TableRequest;
use crate::service::{now_ms, Service};
use crate::ticket::QueryColumn;
pub use prepared::Prepared;
use statement::{Scan, Statement};

/// The Flight SQL actions served: prepared statements (not transactions, savepoints or cancel).
pub const ACTIONS: [&str; 2] = ["CreatePreparedStatement", "ClosePreparedStatement"];

/// Flight SQL's protobuf messages travel as `Any` with type URLs under this prefix.
const TYPE_URL_PREFIX: &str = "type.googleapis.com/arrow.flight.protocol.sql.";

/// Whether a descriptor carries a Flight SQL command (rather than hyperflight's JSON command).
pub fn is_command(descriptor: &FlightDescriptor) -> bool {
    is_flight_sql(&descriptor.cmd)
}

/// Whether a ticket is a Flight SQL metadata command (rather than a signed hyperflight ticket).
pub fn is_ticket(ticket: &Ticket) -> bool {
    is_flight_sql(&ticket.ticket)
}

fn is_flight_sql(bytes: &[u8]) -> bool {
    Any::decode(bytes).is_ok_and(|any| any.type_url.starts_with(TYPE_URL_PREFIX))
}

/// The Flight SQL front of a [`Service`].
pub struct FlightSql {
    /// The service this front plans and reads through (it owns this front, hence weak).
    service: Weak<Service>,
    /// For describing statements and evaluating time bounds.
    pool: Pool,
    /// Open prepared statements.
    prepared: Prepared,
    /// GetSqlInfo's answers, fixed for the server's life.
    info: arrow_flight::sql::metadata::SqlInfoData,
}

impl FlightSql {
    /// The front of the service `service` will point to once built.
    pub fn new(service: Weak<Service>, pool: Pool) -> Self {
        FlightSql {
            service,
            pool,
            prepared: Prepared::default(),
            info: metadata::sql_info(),
        }
    }

    fn service(&self) -> Result<Arc<Service>, Error> {
        let service = self.service.upgrade().ok_or(Error::ShuttingDown)?;
        service.open()?;
        Ok(service)
    }

    /// Plans `statement` with `literals` bound to its parameters.
    async fn statement_info(
        &self,
        statement: &Statement,
        literals: &[String],
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Error> {
        let service = self.service()?;
        let query = statement.bind(literals)?;
        let snapshot = service.catalog().snapshot().await?;
        if let Some(scan) = statement::scan(&query, &snapshot) {
            if let Some(request) = self.scan_request(scan).await? {
                return Ok(service.table_info(request, descriptor).await?.into_info());
            }
        }
        let sql = query.to_string();
        let (_, columns) = self.describe(&sql).await?;
        let expires_at_ms = service.planner().expiry(now_ms());
        let wal_lsn = service.planning_lsn().await?;
        let plan = service
            .planner()
            .query_plan(&sql, columns, expires_at_ms, wal_lsn);
        service.info(plan, descriptor, expires_at_ms)
    }

    /// The scan as a table request, its time bounds evaluated by PostgreSQL; `None` where the
    /// window is empty or cannot be expressed (the statement then runs whole).
    async fn scan_request(&self, scan: Scan) -> Result<Option<TableRequest>, Error> {
        let predicate = (!scan.predicates.is_empty()).then(|| {
            let parts: Vec<String> = scan.predicates.iter().map(|p| format!("({p})")).collect();
            parts.join(" AND ")
        });
        let mut request = TableRequest {
            table: scan.table.name.clone(),
            columns: scan.columns,
            start: None,
            end: None,
            consistent_snapshot: false,
            predicate,
        };
        if scan.bounds.is_empty() {
            return Ok(Some(request));
        }
        let Some(dimension) = scan.table.time_dimension() else {
            return Ok(None);
        };
        let Some(ty) = dimension.sql_type() else {
            return Ok(None);
        };
        let values: Vec<String> = scan
            .bounds
            .iter()
            .map(|b| {
                format!(
                    "_timescaledb_functions.time_to_internal(CAST(({}) AS {ty}))",
                    b.value
                )
            })
            .collect();
        let mut client = self.pool.get().await?;
        // Rolled back: a bound cannot leave settings (set_config) on a pooled session.
        let txn = client.build_transaction().read_only(true).start().await?;
        let row = txn
            .query_one(&format!("SELECT {}", values.join(", ")), &[])
            .await
            .map_err(statement_error)?;
        txn.rollback().await?;
        let (mut start, mut end) = (i64::MIN, i64::MAX);
        for (i, bound) in scan.bounds.iter().enumerate() {
            // A NULL bound matches no row: PostgreSQL says so itself.
            let Some(value) = row.get::<_, Option<i64>>(i) else {
                return Ok(None);
            };
            let edge = bound.edge(value, dimension);
            if bound.lower {
                start = start.max(edge);
            } else {
                end = end.min(edge);
            }
        }
        if start >= end || start == i64::MAX || end == i64::MIN {
            return Ok(None);
        }
        request.start = dimension.bound(start);
        request.end = dimension.bound(end);
        Ok(Some(request))
    }

    /// PostgreSQL's description of `sql`: its parameter types and result columns.
    async fn describe(
        &self,
        sql: &str,
    ) -> Result<(Vec<tokio_postgres::types::Type>, Vec<QueryColumn>), Error> {
        let client = self.pool.get().await?;
        let prepared = client.prepare(sql).await.map_err(statement_error)?;
        let columns = prepared
            .columns()
            .iter()
            .map(|c| QueryColumn::new(c.name(), &prepared::pg_type(c.type_(), c.type_modifier())))
            .collect();
        Ok((prepared.params().to_vec(), columns))
    }

    /// The one-endpoint FlightInfo of a metadata command, whose ticket is the command itself.
    fn metadata_info(
        &self,
        command: impl ProstMessageExt,
        schema: &arrow::datatypes::Schema,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        self.service()?;
        let ticket = Ticket::new(command.as_any().encode_to_vec());
        let info = FlightInfo::new()
            .try_with_schema(schema)
            .map_err(Error::from)?
            .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
            .with_descriptor(descriptor);
        Ok(Response::new(info))
    }
}

/// A statement PostgreSQL refused to prepare or evaluate because of what it says (syntax, unknown
/// column or function, bad value) is the client's fault: its message is PostgreSQL's.
fn statement_error(e: tokio_postgres::Error) -> Error {
    match e.as_db_error() {
        Some(db)
            if (db.code().code().starts_with("42") || db.code().code().starts_with("22"))
                && !matches!(db.code().code(), "42501" | "42P01") =>
        {
            Error::InvalidRequest(format!(
                "PostgreSQL refused the statement: {}",
                protocol::status::clip(db.message())
            ))
        }
        _ => Error::Database(DbError::from(e)),
    }
}

fn not_an_update() -> Error {
    Error::InvalidRequest("a query runs with GetFlightInfo and DoGet, not as an update".into())
}

fn put_error(e: impl std::fmt::Display) -> Error {
    Error::InvalidRequest(format!("cannot read the bound parameters: {e}"))
}

/// The IPC bytes of a schema, as Flight SQL's prepared statement results carry them.
fn ipc_schema(schema: &arrow::datatypes::Schema) -> Result<bytes::Bytes, Error> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default()).try_into()?;
    Ok(bytes)
}

type Stream = <FlightSql as arrow_flight::flight_service_server::FlightService>::DoGetStream;

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let statement = Statement::parse(&query.query)?;
        if statement.parameters() > 0 {
            return Err(Error::InvalidRequest(
                "a statement with parameters runs as a prepared statement".into(),
            )
            .into());
        }
        let info = self
            .statement_info(&statement, &[], request.into_inner())
            .await?;
        Ok(Response::new(info))
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let (statement, literals) = self.prepared.bound(&query.prepared_statement_handle)?;
        let info = self
            .statement_info(&statement, &literals, request.into_inner())
            .await?;
        Ok(Response::new(info))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.metadata_info(query, &schema, request.into_inner())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.metadata_info(query, &schema, request.into_inner())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.metadata_info(query, &schema, request.into_inner())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.metadata_info(query, &schema, request.into_inner())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&self.info).schema();
        self.metadata_info(query, &schema, request.into_inner())
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_info(
            query,
            &metadata::primary_keys_schema(),
            request.into_inner(),
        )
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<Stream>, Status> {
        let mut builder = query.into_builder();
        builder.append(self.database().await?);
        Ok(Response::new(metadata::stream(builder.build())))
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<Stream>, Status> {
        let (database, snapshot) = (self.database().await?, self.snapshot().await?);
        let mut builder = query.into_builder();
        let mut schemas: Vec<&str> = snapshot.tables().map(|t| t.name.schema.as_str()).collect();
        schemas.dedup();
        for schema in schemas {
            builder.append(&database, schema);
        }
        Ok(Response::new(metadata::stream(builder.build())))
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> Result<Response<Stream>, Status> {
        let service = self.service()?;
        let (database, snapshot) = (self.database().await?, self.snapshot().await?);
        let mut builder = query.into_builder();
        for table in snapshot.tables() {
            let schema = service.planner().table_schema(table, None)?;
            let kind = metadata::table_type(table.facts().kind);
            builder
                .append(
                    &database,
                    &table.name.schema,
                    &table.name.name,
                    kind,
                    &schema,
                )
                .map_err(Status::from)?;
        }
        Ok(Response::new(metadata::stream(builder.build())))
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<Stream>, Status> {
        let mut builder = query.into_builder();
        for kind in metadata::TABLE_TYPES {
            builder.append(kind);
        }
        Ok(Response::new(metadata::stream(builder.build())))
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<Stream>, Status> {
        let batch = query.into_builder(&self.info).build();
        Ok(Response::new(metadata::stream(batch)))
    }

    async fn do_get_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<Stream>, Status> {
        let (database, snapshot) = (self.database().await?, self.snapshot().await?);
        let wanted =
            |given: &Option<String>, actual: &str| given.as_deref().is_none_or(|g| g == actual);
        let table = snapshot.tables().find(|t| {
            wanted(&query.catalog, &database)
                && wanted(&query.db_schema, &t.name.schema)
                && t.name.name == query.table
        });
        let batch = metadata::primary_keys(&database, table.map(|t| t.as_ref()));
        Ok(Response::new(metadata::stream(batch)))
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let service = self.service()?;
        let statement = Statement::parse(&query.query)?;
        let (parameter_types, columns) = self.describe(&statement.text()).await?;
        // A scan's batches have the table's schema (with its facts); anything else PostgreSQL's.
        let snapshot = service.catalog().snapshot().await.map_err(Error::from)?;
        let dataset = match statement::scan(statement.query(), &snapshot) {
            Some(scan) => service
                .planner()
                .table_schema(&scan.table, scan.columns.as_deref())?,
            None => crate::plan::query_schema(&columns),
        };
        let parameters = prepared::parameter_schema(&parameter_types);
        let handle = self
            .prepared
            .create(request.remote_addr(), statement, parameter_types)?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle,
            dataset_schema: ipc_schema(&dataset)?,
            parameter_schema: ipc_schema(&parameters)?,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<(), Status> {
        self.prepared.close(&query.prepared_statement_handle);
        Ok(())
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<
        Response<<Self as arrow_flight::flight_service_server::FlightService>::DoActionStream>,
        Status,
    > {
        Err(Error::Unimplemented(format!(
            "unknown action {:?}; known: {}",
            protocol::status::clip(&request.get_ref().r#type),
            crate::service::known_actions().join(", ")
        ))
        .into())
    }
}

impl FlightSql {
    /// The database's name: the one catalog.
    async fn database(&self) -> Result<String, Error> {
        self.service()?;
        let client = self.pool.get().await?;
        let row = client
            .query_one("SELECT current_database()::text", &[])
            .await?;
        Ok(row.get(0))
    }

    async fn snapshot(&self) -> Result<Arc<crate::catalog::Snapshot>, Error> {
        Ok(self.service()?.catalog().snapshot().await?)
    }

    /// DoPut: binds a prepared statement's parameters. Updates and ingestion are refused (the
    /// message names the statement kind), anything else is not implemented.
    pub async fn do_put(&self, mut stream: Streaming<FlightData>) -> Result<PutResult, Error> {
        self.service()?;
        let Some(first) = stream.message().await.map_err(put_error)? else {
            return Err(Error::InvalidRequest("DoPut sent no message".into()));
        };
        let cmd = first.flight_descriptor.as_ref().map(|d| d.cmd.clone());
        let command = cmd
            .and_then(|cmd| Any::decode(cmd).ok())
            .filter(|any| any.type_url.starts_with(TYPE_URL_PREFIX))
            .and_then(|any| Command::try_from(any).ok());
        match command {
            Some(Command::CommandPreparedStatementQuery(q)) => {
                let data = futures::stream::once(async { Ok(first) })
                    .chain(stream.map_err(|s| FlightError::Tonic(Box::new(s))));
                let batches: Vec<RecordBatch> = FlightRecordBatchStream::new_from_flight_data(data)
                    .try_collect()
                    .await
                    .map_err(put_error)?;
                self.prepared.bind(&q.prepared_statement_handle, &batches)?;
                let result = DoPutPreparedStatementResult {
                    prepared_statement_handle: Some(q.prepared_statement_handle),
                };
                Ok(PutResult {
                    app_metadata: result.encode_to_vec().into(),
                })
            }
            Some(Command::CommandStatementUpdate(u)) => {
                // A write is refused by its kind; a query is in the wrong place.
                Statement::parse(&u.query)?;
                Err(not_an_update())
            }
            Some(Command::CommandPreparedStatementUpdate(_)) => Err(not_an_update()),
            Some(Command::CommandStatementIngest(_)) => Err(Error::InvalidRequest(
                "bulk ingestion is refused: hyperflight is read-only".into(),
            )),
            _ => Err(Error::Unimplemented("hyperflight is read-only".into())),
        }
    }
}
