//! Flight SQL on the Flight port, through `arrow_flight`'s Flight SQL client: a recognised scan plans
//! exactly the endpoints of the equivalent CMD descriptor (with resume tickets), other statements
//! run whole as one `query` endpoint under the statement timeout, primary keys, prepared statements
//! and their bound, refused updates.

use arrow::array::AsArray;
use arrow::datatypes::{DataType, TimeUnit};
use arrow::util::display::array_value_to_string;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetPrimaryKeys, SqlInfo};
use arrow_flight::{FlightDescriptor, FlightInfo};
use protocol::{EndpointKind, EndpointMetadata};
use testkit::*;
use tonic::transport::Channel;

async fn sql_client(server: &TestServer) -> FlightSqlServiceClient<Channel> {
    let channel = tonic::transport::Endpoint::new(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    FlightSqlServiceClient::new(channel)
}

fn kinds(info: &FlightInfo) -> Vec<EndpointKind> {
    info.endpoint
        .iter()
        .map(|e| EndpointMetadata::from_json(&e.app_metadata).unwrap().kind)
        .collect()
}

fn metadata(info: &FlightInfo) -> Vec<EndpointMetadata> {
    info.endpoint
        .iter()
        .map(|e| EndpointMetadata::from_json(&e.app_metadata).unwrap())
        .collect()
}

#[tokio::test]
async fn a_scan_plans_the_descriptors_endpoints_and_passes_predicates_down() {
    let db = pg(fixture_url()).await;
    let server = TestServer::start(config(fixture_url())).await;
    let mut sql = sql_client(&server).await;
    let info = sql
        .execute(
            "SELECT time, reading FROM public.metrics \
             WHERE time >= '2026-10-02T00:00:00Z' AND time < '2026-10-04T12:00:00Z'"
                .into(),
            None,
        )
        .await
        .unwrap();
    let cmd = r#"{"table": "public.metrics", "columns": ["time", "reading"],
                  "start": "2026-10-02T00:00:00Z", "end": "2026-10-04T12:00:00Z"}"#;
    let by_descriptor = server
        .client()
        .await
        .get_flight_info(FlightDescriptor::new_cmd(cmd.as_bytes().to_vec()))
        .await
        .unwrap();
    assert_eq!(metadata(&info), metadata(&by_descriptor));
    assert_eq!(kinds(&info), vec![EndpointKind::Chunk; 3]);
    let mut client = server.client().await;
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let read = read_ticket(&mut client, ticket).await.unwrap();
    assert!(read.batches.len() > 1 && read.resume.iter().all(|t| !t.is_empty()));
    assert_eq!(row_count(&read_all(&server, &info).await), {
        let r = db
            .query_one(
                "SELECT count(*) FROM public.metrics \
                 WHERE time >= '2026-10-02T00:00:00Z' AND time < '2026-10-04T12:00:00Z'",
                &[],
            )
            .await
            .unwrap();
        r.get::<_, i64>(0) as usize
    });

    // Column predicates go to every chunk's scan; `BETWEEN` and `>` bound the window.
    let filtered = "SELECT * FROM public.metrics WHERE time BETWEEN '2026-10-03' AND '2026-10-05' \
                    AND device_id = 7 AND ok IS NOT NULL AND time > '2026-10-03'";
    let info = sql.execute(filtered.into(), None).await.unwrap();
    assert_eq!(kinds(&info), vec![EndpointKind::Chunk; 3]);
    let want: i64 = db
        .query_one(&filtered.replace('*', "count(*)"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(row_count(&read_all(&server, &info).await), want as usize);
}

#[tokio::test]
async fn other_statements_run_whole_as_one_query_endpoint() {
    let server = TestServer::start(config(fixture_url())).await;
    let mut sql = sql_client(&server).await;
    let info = sql
        .execute(
            "SELECT device_id, reading FROM public.metrics ORDER BY reading DESC, time LIMIT 5"
                .into(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(kinds(&info), vec![EndpointKind::Query]);
    let mut client = server.client().await;
    let read = read_ticket(&mut client, info.endpoint[0].ticket.clone().unwrap())
        .await
        .unwrap();
    assert!(
        read.resume.iter().all(|t| t.is_empty()),
        "no resume tickets"
    );
    let readings = read.batches[0]
        .column(1)
        .as_primitive::<arrow::datatypes::Int64Type>();
    assert_eq!(readings.len(), 5);
    assert!(readings.values().windows(2).all(|w| w[0] >= w[1]));

    // An empty window is PostgreSQL's to answer: no rows, not an error.
    let info = sql
        .execute(
            "SELECT * FROM public.metrics WHERE time >= '2026-10-05' AND time < '2026-10-05'"
                .into(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(kinds(&info), vec![EndpointKind::Query]);
    assert_eq!(row_count(&read_all(&server, &info).await), 0);
}

#[tokio::test]
async fn a_query_endpoint_obeys_the_statement_timeout() {
    let mut c = config(fixture_url());
    c.statement_timeout = std::time::Duration::from_millis(300);
    let server = TestServer::start(c).await;
    let mut sql = sql_client(&server).await;
    let info = sql
        .execute("SELECT pg_sleep(5)::text".into(), None)
        .await
        .unwrap();
    let mut client = server.client().await;
    let e = read_ticket(&mut client, info.endpoint[0].ticket.clone().unwrap())
        .await
        .err()
        .expect("timed out");
    assert_eq!(code(e), tonic::Code::DeadlineExceeded);
}

#[tokio::test]
async fn sql_info_names_the_server_read_only_and_postgresql() {
    let server = TestServer::start(config(fixture_url())).await;
    let mut sql = sql_client(&server).await;
    let info = sql
        .get_sql_info(vec![
            SqlInfo::FlightSqlServerName,
            SqlInfo::FlightSqlServerReadOnly,
        ])
        .await
        .unwrap();
    let mut all = sql
        .do_get(info.endpoint[0].ticket.clone().unwrap())
        .await
        .unwrap();
    let batch = futures::TryStreamExt::try_next(&mut all)
        .await
        .unwrap()
        .unwrap();
    let values = batch.column(1).as_union();
    let shown: Vec<(u32, String)> = (0..batch.num_rows())
        .map(|i| {
            let name = batch
                .column(0)
                .as_primitive::<arrow::datatypes::UInt32Type>()
                .value(i);
            (name, array_value_to_string(&values.value(i), 0).unwrap())
        })
        .collect();
    assert_eq!(shown, vec![(0, "hyperflight".into()), (3, "true".into())]);
    // The dialect, under the server's own id (the specification has none for it).
    let info = sql.get_sql_info(vec![]).await.unwrap();
    let all = sql
        .do_get(info.endpoint[0].ticket.clone().unwrap())
        .await
        .unwrap();
    let batches: Vec<_> = futures::TryStreamExt::try_collect(all).await.unwrap();
    let dialect = batches.iter().find_map(|b| {
        let names = b.column(0).as_primitive::<arrow::datatypes::UInt32Type>();
        let i = names.values().iter().position(|n| *n == 10_000)?;
        array_value_to_string(&b.column(1).as_union().value(i), 0).ok()
    });
    assert_eq!(dialect.as_deref(), Some("PostgreSQL"));
}

#[tokio::test]
async fn primary_keys_prepared_statements_and_refusals() {
    let server = TestServer::start(config(fixture_url())).await;
    let mut sql = sql_client(&server).await;
    let info = sql
        .get_primary_keys(CommandGetPrimaryKeys {
            catalog: None,
            db_schema: Some("public".into()),
            table: "devices".into(),
        })
        .await
        .unwrap();
    let keys = sql
        .do_get(info.endpoint[0].ticket.clone().unwrap())
        .await
        .unwrap();
    let batches: Vec<_> = futures::TryStreamExt::try_collect(keys).await.unwrap();
    assert_eq!(batches[0].num_rows(), 1);
    assert_eq!(
        batches[0].column(3).as_string::<i32>().value(0),
        "device_id"
    );

    let prepared = sql
        .prepare(
            "SELECT name FROM public.devices d JOIN public.metrics m USING (device_id) \
             WHERE m.time >= $1 AND d.device_id = $2"
                .into(),
            None,
        )
        .await
        .unwrap();
    let params = prepared.parameter_schema().unwrap();
    assert_eq!(
        params.field(0).data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
    assert_eq!(params.field(1).data_type(), &DataType::Int32);
    assert_eq!(
        prepared.dataset_schema().unwrap().field(0).data_type(),
        &DataType::Utf8
    );

    // A bound of 64 open statements per connection; closing one frees its place.
    let mut open = vec![prepared];
    while open.len() < 64 {
        open.push(sql.prepare("SELECT 1".into(), None).await.unwrap());
    }
    let e = sql.prepare("SELECT 1".into(), None).await.err().unwrap();
    assert_eq!(code(e), tonic::Code::ResourceExhausted);
    open.pop().unwrap().close().await.unwrap();
    sql.prepare("SELECT 1".into(), None).await.unwrap();

    let e = sql
        .execute_update("DELETE FROM public.devices".into(), None)
        .await
        .unwrap_err();
    let s = status(e);
    assert_eq!(s.code(), tonic::Code::InvalidArgument);
    assert!(
        s.message().starts_with("DELETE statements are refused"),
        "{}",
        s.message()
    );
}
