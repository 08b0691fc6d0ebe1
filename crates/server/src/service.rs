//! `impl FlightService`: ListFlights, GetFlightInfo, GetSchema, DoGet, DoAction. Each call delegates to
//! the catalog, the planner, the scan and the stream encoder; errors map to gRPC status in one place
//! (`From<Error> for Status`).

use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use arrow::datatypes::SchemaRef;
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaAsIpc, SchemaResult, Ticket,
};
use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt};
use prost::Message;
use protocol::action::{Health, HealthStatus};
use protocol::ActionName;
use serde_json::json;
use tonic::{Request, Response, Status, Streaming};

use crate::catalog::{Catalog, TableKind};
use crate::error::{DbError, Error};
use crate::fleet::Fleet;
use crate::info_route::Framed;
use crate::metrics::Metrics;
use crate::plan::{Plan, Planner, TableRequest};
use crate::scan::{Position, Scanner};
use crate::snapshot::Snapshots;
use crate::sql::FlightSql;
use crate::stream::{count_error, flight_data, resumable_batches, ResumableBatch};
use crate::ticket::BatchPosition;

/// The Flight service.
pub struct Service {
    catalog: Arc<Catalog>,
    planner: Planner,
    scanner: Scanner,
    snapshots: Arc<Snapshots>,
    metrics: Arc<Metrics>,
    max_scans: usize,
    auth_token: Option<String>,
    /// Flight SQL, served on the same port.
    sql: FlightSql,
    /// The peers listed as endpoint locations, and the standby replay check.
    fleet: Fleet,
    /// Live tails (`"follow": true`).
    tail: Arc<crate::cdc::TailHub>,
    /// Recent FlightInfos by descriptor (see [`PLAN_REUSE`]).
    plans: moka::future::Cache<Vec<u8>, Arc<CachedPlan>>,
}

/// How long an identical GetFlightInfo is answered with the plan already made, while discovery has
/// not changed (and never in a fleet, nor for real-time continuous aggregates): planning signs a
/// ticket per endpoint, which for thousands of chunks costs more than the call's round trip. The
/// reused tickets expire at most this much sooner than fresh ones would.
pub const PLAN_REUSE: std::time::Duration = std::time::Duration::from_secs(5);
/// Encoded bytes of the FlightInfos kept for reuse: a 10,000-chunk plan is 3.5 MB, and a count
/// bound (64 such plans) would hold hundreds of MB outside `max_memory_mb`.
const PLANS_KEPT_BYTES: u64 = 16 << 20;

/// A FlightInfo's gRPC frame, the discovery it was planned against and when its tickets expire.
struct CachedPlan {
    catalog: Arc<crate::catalog::Snapshot>,
    framed: Framed,
    expires_at_ms: i64,
}

/// A GetFlightInfo answer: a FlightInfo just made, or the gRPC frame of one (a plan kept for
/// reuse), which the server sends as it is.
pub(crate) enum Info {
    Made(FlightInfo),
    Framed(Framed),
}

impl Info {
    pub(crate) fn into_info(self) -> FlightInfo {
        match self {
            Info::Made(info) => info,
            // A frame this process encoded from a FlightInfo (byte fields decode as slices of it).
            Info::Framed(framed) => FlightInfo::decode(framed.message())
                .expect("a FlightInfo this server encoded decodes"),
        }
    }

    fn into_framed(self) -> Framed {
        match self {
            Info::Made(info) => Framed::encode(&info),
            Info::Framed(framed) => framed,
        }
    }
}

impl Service {
    /// A service over `catalog`, reading through `scanner`. `auth_token` is what a successful
    /// Handshake hands back (the interceptor has already checked the caller). `this` is the `Arc`
    /// the service is being built into (`Arc::new_cyclic`), for its Flight SQL front.
    // Each argument is one of the service's parts, made once in `server::run`; a builder would only
    // restate them.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        this: Weak<Service>,
        catalog: Arc<Catalog>,
        planner: Planner,
        scanner: Scanner,
        snapshots: Arc<Snapshots>,
        tail: Arc<crate::cdc::TailHub>,
        auth_token: Option<String>,
        fleet: Fleet,
    ) -> Self {
        Service {
            tail,
            sql: FlightSql::new(this, scanner.pool.clone()),
            catalog,
            planner,
            max_scans: scanner.slots.available_permits(),
            metrics: scanner.metrics.clone(),
            scanner,
            snapshots,
            auth_token,
            fleet,
            plans: moka::future::Cache::builder()
                .weigher(|_, plan: &Arc<CachedPlan>| {
                    u32::try_from(plan.framed.len()).unwrap_or(u32::MAX)
                })
                .max_capacity(PLANS_KEPT_BYTES)
                .time_to_live(PLAN_REUSE)
                .build(),
        }
    }

    /// The WAL position a plan made now carries in its tickets (see `fleet.rs`).
    pub(crate) async fn planning_lsn(&self) -> Result<u64, Error> {
        self.fleet.planning_lsn(&self.scanner.pool).await
    }

    /// Stops new scans from starting (shutdown): waiting DoGets end with UNAVAILABLE.
    pub fn close(&self) {
        self.scanner.slots.close();
    }

    /// After shutdown began, every call is refused, on new and existing connections alike.
    pub(crate) fn open(&self) -> Result<(), Error> {
        if self.scanner.slots.is_closed() {
            return Err(Error::ShuttingDown);
        }
        Ok(())
    }

    pub(crate) fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub(crate) fn planner(&self) -> &Planner {
        &self.planner
    }

    /// GetFlightInfo as sent: see `info_route`.
    pub(crate) async fn framed_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Framed, Status> {
        Ok(self.any_info(request).await?.into_framed())
    }

    /// GetFlightInfo of a Flight SQL command or of any other descriptor.
    async fn any_info(&self, request: Request<FlightDescriptor>) -> Result<Info, Status> {
        if crate::sql::is_command(request.get_ref()) {
            let info = FlightService::get_flight_info(&self.sql, request).await?;
            return Ok(Info::Made(info.into_inner()));
        }
        Ok(self.flight_info(request.into_inner()).await?)
    }

    async fn flight_info(&self, descriptor: FlightDescriptor) -> Result<Info, Error> {
        self.open()?;
        if let Some(from) = crate::cdc::tail_request(&descriptor) {
            return self.tail_info(descriptor, from).await.map(Info::Made);
        }
        let request = TableRequest::from_descriptor(&descriptor)?;
        self.table_info(request, descriptor).await
    }

    /// Plans `request` (from a descriptor or a Flight SQL scan) into the FlightInfo of `descriptor`.
    pub(crate) async fn table_info(
        &self,
        request: TableRequest,
        descriptor: FlightDescriptor,
    ) -> Result<Info, Error> {
        self.plan_info(request, descriptor, None).await
    }

    /// [`Service::table_info`]; with `base`, a consistent-snapshot plan under that exported
    /// snapshot rather than a new one.
    pub(crate) async fn plan_info(
        &self,
        request: TableRequest,
        descriptor: FlightDescriptor,
        base: Option<&str>,
    ) -> Result<Info, Error> {
        let expires_at_ms = self.planner.expiry(now_ms());
        // Taken before discovery and the snapshot: a standby that has replayed this far has every
        // row and chunk the plan can see.
        let wal_lsn = self.planning_lsn().await?;
        let plan = if request.consistent_snapshot || base.is_some() {
            let id = self.snapshots.export(expires_at_ms, base).await?;
            // Discover after exporting, so every chunk the snapshot can see is planned.
            let planned = async {
                let catalog = self.catalog.refresh().await?;
                let watermark = self.watermark(&catalog, &request, Some(&id)).await?;
                self.planner.plan(
                    &catalog,
                    &request,
                    expires_at_ms,
                    Some(&id),
                    watermark,
                    wal_lsn,
                )
            }
            .await;
            // On failure, no relation is expected and the snapshot is released at once.
            let relations = planned
                .as_ref()
                .map(|p| p.relations.clone())
                .unwrap_or_default();
            self.snapshots.expect(&id, relations);
            planned?
        } else {
            let catalog = self.catalog.snapshot().await?;
            let key = descriptor.encode_to_vec();
            if let Some(hit) = self.plans.get(&key).await {
                // Reused only while its tickets have at least half their life left (a short
                // ticket_ttl shortens the reuse).
                let ttl_ms = self.planner.ticket_ttl.as_millis() as i64;
                if Arc::ptr_eq(&hit.catalog, &catalog) && hit.expires_at_ms - now_ms() >= ttl_ms / 2
                {
                    return Ok(Info::Framed(hit.framed.clone()));
                }
            }
            // A real-time continuous aggregate's plan depends on its watermark: never reused.
            let watermark = self.watermark(&catalog, &request, None).await?;
            let plan =
                self.planner
                    .plan(&catalog, &request, expires_at_ms, None, watermark, wal_lsn)?;
            let info = self.info(plan, descriptor, expires_at_ms)?;
            // In a fleet a plan carries the WAL position it was made at: never reused either.
            if watermark.is_none() && wal_lsn == 0 {
                let framed = Framed::encode(&info);
                let cached = CachedPlan {
                    catalog,
                    framed: framed.clone(),
                    expires_at_ms,
                };
                self.plans.insert(key, Arc::new(cached)).await;
                return Ok(Info::Framed(framed));
            }
            return Ok(Info::Made(info));
        };
        self.info(plan, descriptor, expires_at_ms).map(Info::Made)
    }

    /// The FlightInfo of a plan whose tickets expire at `expires_at_ms`.
    pub(crate) fn info(
        &self,
        plan: Plan,
        descriptor: FlightDescriptor,
        expires_at_ms: i64,
    ) -> Result<FlightInfo, Error> {
        let expiry = prost_types::Timestamp {
            seconds: expires_at_ms.div_euclid(1000),
            nanos: (expires_at_ms.rem_euclid(1000) * 1_000_000) as i32,
        };
        let pinned = plan.pinned;
        let endpoints = plan.endpoints.into_iter().enumerate().map(|(i, e)| {
            let endpoint = FlightEndpoint::new()
                .with_ticket(Ticket::new(e.ticket))
                .with_expiration_time(expiry)
                .with_app_metadata(e.metadata.to_json());
            self.fleet
                .locations(i, pinned)
                .into_iter()
                .fold(endpoint, |e, l| e.with_location(l.uri))
        });
        Ok(FlightInfo::new()
            .try_with_schema(&plan.schema)?
            .with_descriptor(descriptor)
            .with_endpoints(endpoints.collect())
            .with_total_records(plan.total_records)
            .with_total_bytes(plan.total_bytes))
    }

    /// A real-time continuous aggregate's watermark for this plan (read in the exported snapshot of
    /// a consistent read, so its parts meet exactly); `None` for anything else.
    async fn watermark(
        &self,
        catalog: &crate::catalog::Snapshot,
        request: &TableRequest,
        db_snapshot: Option<&str>,
    ) -> Result<Option<i64>, Error> {
        match catalog.table(&request.table).map(|t| &t.kind) {
            Some(TableKind::ContinuousAggregate {
                mat_hypertable_id,
                realtime: true,
                ..
            }) => Ok(Some(
                self.catalog
                    .watermark(*mat_hypertable_id, db_snapshot)
                    .await?,
            )),
            _ => Ok(None),
        }
    }

    async fn list(&self) -> Result<Vec<FlightInfo>, Error> {
        self.open()?;
        let snapshot = self.catalog.snapshot().await?;
        snapshot
            .tables()
            .map(|t| {
                let schema = self.planner.table_schema(t, None)?;
                let descriptor =
                    FlightDescriptor::new_path(vec![t.name.schema.clone(), t.name.name.clone()]);
                Ok(FlightInfo::new()
                    .try_with_schema(&schema)?
                    .with_descriptor(descriptor)
                    .with_total_records(t.estimated_rows)
                    .with_total_bytes(t.size_bytes))
            })
            .collect()
    }

    /// A tail's FlightInfo: one `tail` endpoint whose ticket starts after `from` (an LSN, or the
    /// current end of the WAL for "now").
    async fn tail_info(
        &self,
        descriptor: FlightDescriptor,
        from: Option<String>,
    ) -> Result<FlightInfo, Error> {
        let request = TableRequest::from_descriptor(&descriptor)?;
        let snapshot = self.catalog.snapshot().await?;
        let table = self.planner.table(&snapshot, &request.table)?;
        if !matches!(
            table.kind,
            TableKind::Hypertable { .. } | TableKind::Plain { .. }
        ) {
            return Err(Error::InvalidRequest(format!(
                "{} is not a hypertable or a plain table: only those can be followed",
                table.name
            )));
        }
        let schema = crate::cdc::TailHub::schema(table)?;
        let after = match from.as_deref() {
            None | Some("now") => self.tail.now().await?,
            Some(lsn) => crate::cdc::parse_lsn(lsn)?,
        };
        let expires_at_ms = self.planner.expiry(now_ms());
        let ticket = self.planner.signer.sign(&crate::ticket::TicketBody {
            table_schema: table.name.schema.clone(),
            table_name: table.name.name.clone(),
            tail_after_lsn: Some(after),
            expires_at_ms,
            ..crate::ticket::TicketBody::current()
        });
        let metadata = protocol::EndpointMetadata::new(protocol::EndpointKind::Tail, -1, -1);
        let endpoint = FlightEndpoint::new()
            .with_ticket(Ticket::new(ticket))
            .with_app_metadata(metadata.to_json());
        Ok(FlightInfo::new()
            .try_with_schema(&schema)?
            .with_descriptor(descriptor)
            .with_endpoint(endpoint)
            .with_total_records(-1)
            .with_total_bytes(-1))
    }

    /// A tail's DoGet: the table's changes after the ticket's LSN, each batch with a ticket that
    /// resumes after it.
    async fn tail_stream(
        &self,
        body: crate::ticket::TicketBody,
        after: u64,
    ) -> Result<Boxed<FlightData>, Error> {
        let snapshot = self.catalog.snapshot().await?;
        let name = crate::catalog::QualifiedName::new(&body.table_schema, &body.table_name);
        let table = self.planner.table(&snapshot, &name)?.clone();
        let schema = crate::cdc::TailHub::schema(&table)?;
        let changes = self.tail.follow(table, after).await?;
        let signer = self.planner.signer.clone();
        let ttl_ms = self.planner.ticket_ttl.as_millis() as i64;
        let resume = move |lsn: u64| {
            signer.sign(&crate::ticket::TicketBody {
                tail_after_lsn: Some(lsn),
                expires_at_ms: now_ms().saturating_add(ttl_ms),
                ..body.clone()
            })
        };
        Ok(Box::pin(crate::cdc::tail_flight_data(
            schema,
            name.to_string(),
            changes,
            resume,
            self.metrics.clone(),
        )))
    }

    /// A DoGet ticket's body, once the service is open and the signature, version and expiry hold.
    fn verify(&self, ticket: &[u8]) -> Result<crate::ticket::TicketBody, Error> {
        self.open()?;
        Ok(self.planner.signer.verify(ticket, now_ms())?)
    }

    /// Verifies a ticket and starts its stream: a live tail's changes, or an endpoint's scan.
    async fn start_stream(&self, ticket: &[u8]) -> Result<Boxed<FlightData>, Error> {
        let body = self.verify(ticket)?;
        if let Some(after) = body.tail_after_lsn {
            return self.tail_stream(body, after).await;
        }
        let (schema, batches) = self.start_scan(body).await?;
        Ok(Box::pin(flight_data(schema, batches, self.metrics.clone())))
    }

    /// Resolves a verified scan ticket against current discovery and starts its scan: the batches
    /// with their resume tickets, and their schema.
    async fn start_scan(
        &self,
        body: crate::ticket::TicketBody,
    ) -> Result<(SchemaRef, Boxed<ResumableBatch>), Error> {
        // On a standby, only once it has replayed what the plan saw (else UNAVAILABLE: the client
        // reads this endpoint from another location).
        self.fleet
            .wait_replayed(&self.scanner.pool, body.wal_lsn)
            .await?;
        let snapshot = self.catalog.snapshot().await?;
        let (spec, schema) = self.planner.resolve(&snapshot, &body)?;
        let on_complete = match &spec.snapshot {
            Some(id) => {
                let attached = self
                    .snapshots
                    .attach(id)
                    .ok_or_else(|| Error::SnapshotGone(id.clone()))?;
                let (snapshots, id, relation) =
                    (self.snapshots.clone(), id.clone(), spec.relation.clone());
                Box::new(move || {
                    drop(attached);
                    snapshots.completed(&id, &relation)
                }) as Box<dyn FnOnce() + Send>
            }
            None => Box::new(|| {}),
        };
        let relation = spec.relation.to_string();
        tracing::debug!(table = %body.table_name, relation, resume = spec.resume_after.is_some(), "DoGet");
        let batches = self.scanner.start(spec, on_complete);
        let signer = self.planner.signer.clone();
        let ttl_ms = self.planner.ticket_ttl.as_millis() as i64;
        let resume = move |position: Position| {
            let (resume_after, resume_batch) = match position {
                Position::Heap(tid) => (Some(tid.into()), None),
                Position::Batch { tid, rows_done } => (
                    None,
                    Some(BatchPosition {
                        batch: Some(tid.into()),
                        rows_done,
                    }),
                ),
            };
            signer.sign(&crate::ticket::TicketBody {
                resume_after,
                resume_batch,
                expires_at_ms: now_ms().saturating_add(ttl_ms),
                ..body.clone()
            })
        };
        let batches = resumable_batches(relation, batches, resume, self.metrics.clone());
        Ok((schema, Box::pin(batches)))
    }

    /// DoGet of a ticket for a caller in this process: the batches themselves, without the IPC
    /// encoding and gRPC framing of a Flight stream, each with its resume ticket (as the Flight
    /// stream's `app_metadata`). Errors are the statuses DoGet would answer.
    pub async fn read_local(&self, ticket: &[u8]) -> Result<Boxed<ResumableBatch>, Status> {
        let scan = async {
            let body = self.verify(ticket)?;
            if body.tail_after_lsn.is_some() {
                return Err(Error::InvalidRequest(
                    "a tail ticket is read with DoGet, not in-process".into(),
                ));
            }
            self.start_scan(body).await
        };
        scan.await.map(|(_, batches)| batches).map_err(|e| {
            let status = Status::from(e);
            count_error(&self.metrics, &status);
            status
        })
    }

    async fn action(&self, name: ActionName) -> Result<serde_json::Value, Error> {
        self.open()?;
        match name {
            ActionName::Refresh => {
                let snapshot = self.catalog.refresh().await?;
                Ok(json!({ "tables": snapshot.tables().count() }))
            }
            ActionName::Health => {
                let client = self.scanner.pool.get().await.map_err(DbError::from)?;
                client
                    .simple_query("SELECT 1")
                    .await
                    .map_err(DbError::from)?;
                let snapshot = self.catalog.snapshot().await?;
                let health = Health {
                    status: if snapshot.degraded.is_some() {
                        HealthStatus::Degraded
                    } else {
                        HealthStatus::Ok
                    },
                    timescaledb: snapshot.timescaledb_version.clone(),
                    reason: snapshot.degraded.clone(),
                };
                Ok(serde_json::to_value(health).expect("health serializes"))
            }
            ActionName::Stats => {
                let mut stats = self.metrics.json();
                stats["held_snapshots"] = json!(self.snapshots.count());
                stats["max_concurrent_chunks"] = json!(self.max_scans);
                Ok(stats)
            }
        }
    }
}

/// Every action name this server knows: its own, then Flight SQL's.
pub fn known_actions() -> Vec<&'static str> {
    let ours = ActionName::ALL.iter().map(|a| a.as_str());
    ours.chain(crate::sql::ACTIONS).collect()
}

/// Now, in ms since the Unix epoch (the unit of ticket expiry).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn once<T: Send + 'static>(item: T) -> Boxed<T> {
    Box::pin(stream::once(async move { Ok(item) }))
}

#[tonic::async_trait]
impl FlightService for Service {
    type HandshakeStream = Boxed<HandshakeResponse>;
    type ListFlightsStream = Boxed<FlightInfo>;
    type DoGetStream = Boxed<FlightData>;
    type DoPutStream = Boxed<PutResult>;
    type DoExchangeStream = Boxed<FlightData>;
    type DoActionStream = Boxed<arrow_flight::Result>;
    type ListActionsStream = Boxed<ActionType>;

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        // The interceptor already checked the caller (bearer token, or basic auth whose password is
        // the token); hand back the bearer token, in the payload and in the header clients read.
        let token = self.auth_token.clone().unwrap_or_default();
        let mut response = Response::new(once(HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into(),
        }));
        if !token.is_empty() {
            if let Ok(v) = format!("Bearer {token}").parse() {
                response.metadata_mut().insert("authorization", v);
            }
        }
        Ok(response)
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let infos = self.list().await?;
        let s: BoxStream<'static, Result<FlightInfo, Status>> =
            stream::iter(infos.into_iter().map(Ok)).boxed();
        Ok(Response::new(s))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        // The server answers with the frame (`info_route`); in-process callers get the FlightInfo
        // (decoded only when it was a kept frame).
        Ok(Response::new(self.any_info(request).await?.into_info()))
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented("PollFlightInfo: use GetFlightInfo"))
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        self.open()?;
        if crate::sql::is_command(request.get_ref()) {
            // A statement's schema is known once it is planned.
            let info = FlightService::get_flight_info(&self.sql, request).await?;
            return Ok(Response::new(SchemaResult {
                schema: info.into_inner().schema,
            }));
        }
        let req = TableRequest::from_descriptor(request.get_ref())?;
        let snapshot = self.catalog.snapshot().await.map_err(Error::from)?;
        let table = self.planner.table(&snapshot, &req.table)?;
        let schema = self.planner.table_schema(table, req.columns.as_deref())?;
        let result = SchemaResult::try_from(SchemaAsIpc::new(&schema, &IpcWriteOptions::default()))
            .map_err(Error::from)?;
        Ok(Response::new(result))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        if crate::sql::is_ticket(request.get_ref()) {
            return FlightService::do_get(&self.sql, request).await;
        }
        self.start_stream(&request.get_ref().ticket)
            .await
            .map(Response::new)
            .map_err(|e| {
                let status = Status::from(e);
                count_error(&self.metrics, &status);
                status
            })
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        // Only Flight SQL's parameter binding is a DoPut here. It is served by hand, not through
        // FlightSqlService: a stream that was read to find its command cannot be handed on.
        let result = self.sql.do_put(request.into_inner()).await?;
        Ok(Response::new(once(result)))
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("hyperflight is read-only"))
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let Some(name) = ActionName::parse(&request.get_ref().r#type) else {
            return FlightService::do_action(&self.sql, request).await;
        };
        let value = self.action(name).await?;
        Ok(Response::new(once(arrow_flight::Result::new(
            value.to_string(),
        ))))
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let ours = ActionName::ALL.map(|a| {
            Ok(ActionType {
                r#type: a.as_str().into(),
                description: a.description().into(),
            })
        });
        // Flight SQL's, less those it leaves unimplemented here (transactions, savepoints, …).
        let sql = FlightService::list_actions(&self.sql, request)
            .await?
            .into_inner()
            .filter(|a| {
                let known = a
                    .as_ref()
                    .is_ok_and(|a| crate::sql::ACTIONS.contains(&a.r#type.as_str()));
                futures::future::ready(known)
            });
        Ok(Response::new(Box::pin(stream::iter(ours).chain(sql))))
    }
}
