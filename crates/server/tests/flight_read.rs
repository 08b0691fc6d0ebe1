//! The vertical slice against the real cluster: discovery, one endpoint per chunk, parallel reads equal
//! to SQL, exact Arrow types, and clear errors that leave the server up.

use arrow::array::AsArray;
use arrow::datatypes::{DataType, Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType};
use arrow_flight::{Action, Ticket};
use futures::TryStreamExt;
use serde_json::Value;
use testkit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_tables_but_never_chunks() {
    let server = TestServer::start(config(fixture_url())).await;
    let mut client = server.client().await;
    let infos: Vec<_> = client
        .list_flights(vec![])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let names: Vec<String> = infos
        .iter()
        .map(|i| i.flight_descriptor.as_ref().unwrap().path.join("."))
        .collect();
    assert!(names.contains(&"public.metrics".to_string()), "{names:?}");
    assert!(names.contains(&"public.devices".to_string()), "{names:?}");
    for n in &names {
        assert!(
            !n.contains("_hyper_") && !n.starts_with("_timescaledb"),
            "{n} listed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_endpoint_per_chunk_in_range_order() {
    let db = pg(fixture_url()).await;
    let server = TestServer::start(config(fixture_url())).await;
    let mut client = server.client().await;
    let info = client
        .get_flight_info(path("public", "metrics"))
        .await
        .unwrap();

    let chunks: Vec<String> = db
        .query("SELECT c::text FROM show_chunks('public.metrics') c", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(info.endpoint.len(), chunks.len());
    assert_eq!(chunks.len() as i64, FIXTURE_DAYS);

    let meta: Vec<Value> = info
        .endpoint
        .iter()
        .map(|e| serde_json::from_slice(&e.app_metadata).unwrap())
        .collect();
    let mut planned: Vec<String> = meta
        .iter()
        .map(|m| m["chunk"].as_str().unwrap().to_string())
        .collect();
    let starts: Vec<&str> = meta
        .iter()
        .map(|m| m["range_start"].as_str().unwrap())
        .collect();
    assert!(
        starts.windows(2).all(|w| w[0] < w[1]),
        "range order: {starts:?}"
    );
    assert_eq!(starts[0], "2026-10-01T00:00:00Z");
    assert_eq!(meta[0]["range_end"], "2026-10-02T00:00:00Z");
    for m in &meta {
        assert!(m["chunk_id"].as_i64().unwrap() > 0);
        assert!(m["size_bytes"].as_i64().unwrap() > 0);
        assert!(m["estimated_rows"].as_i64().is_some());
        assert_eq!(m["is_compressed"], Value::Bool(false));
    }
    planned.sort();
    let mut chunks = chunks;
    chunks.sort();
    assert_eq!(planned, chunks);
    assert_eq!(
        info.total_records, FIXTURE_ROWS,
        "estimates come from ANALYZE"
    );
    for e in &info.endpoint {
        assert!(e.expiration_time.is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_read_equals_sql() {
    let db = pg(fixture_url()).await;
    let server = TestServer::start(config(fixture_url())).await;
    let mut client = server.client().await;
    let info = client
        .get_flight_info(path("public", "metrics"))
        .await
        .unwrap();
    let schema = info.clone().try_decode_schema().unwrap();
    let batches = read_all(&server, &info).await;

    let types: Vec<(&str, DataType)> = schema
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.data_type().clone()))
        .collect();
    assert_eq!(
        types,
        vec![
            (
                "time",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            ),
            ("device_id", DataType::Int32),
            ("sensor", DataType::Utf8),
            ("temperature", DataType::Float64),
            ("humidity", DataType::Float32),
            ("status", DataType::Int16),
            ("reading", DataType::Int64),
            ("ok", DataType::Boolean),
        ]
    );
    for b in &batches {
        assert_eq!(b.schema().fields(), schema.fields());
        assert!(b.num_rows() <= TEST_BATCH_ROWS);
    }

    let figures = db
        .query_one(
            "SELECT count(*), sum(reading)::text, count(DISTINCT device_id),
                    (extract(epoch from min(time)) * 1000000)::int8,
                    (extract(epoch from max(time)) * 1000000)::int8
             FROM public.metrics",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row_count(&batches) as i64, figures.get::<_, i64>(0));
    let sum: i128 = batches
        .iter()
        .flat_map(|b| b.column(6).as_primitive::<Int64Type>().iter().flatten())
        .map(i128::from)
        .sum();
    assert_eq!(sum.to_string(), figures.get::<_, String>(1));
    let devices: std::collections::HashSet<i32> = batches
        .iter()
        .flat_map(|b| b.column(1).as_primitive::<Int32Type>().iter().flatten())
        .collect();
    assert_eq!(devices.len() as i64, figures.get::<_, i64>(2));
    let times = batches.iter().flat_map(|b| {
        b.column(0)
            .as_primitive::<TimestampMicrosecondType>()
            .values()
            .to_vec()
    });
    let (min, max) = times.fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(t), hi.max(t)));
    assert_eq!(min, figures.get::<_, i64>(3));
    assert_eq!(max, figures.get::<_, i64>(4));

    assert_same_rows(
        &metrics_rows(&batches),
        &metrics_rows_sql(&db, &metrics_canonical_sql("public.metrics")).await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_table_reads_exactly() {
    let db = pg(fixture_url()).await;
    let server = TestServer::start(config(fixture_url())).await;
    let mut client = server.client().await;
    let info = client
        .get_flight_info(path("public", "devices"))
        .await
        .unwrap();
    assert_eq!(info.endpoint.len(), 1);
    let batches = read_all(&server, &info).await;
    let got: Vec<String> = batches
        .iter()
        .flat_map(|b| {
            let id = b.column(0).as_primitive::<Int32Type>().clone();
            let name = b.column(1).as_string::<i32>().clone();
            (0..b.num_rows()).map(move |i| format!("{}|{}", id.value(i), name.value(i)))
        })
        .collect();
    let want: Vec<String> = db
        .query("SELECT device_id, name FROM ONLY public.devices", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| format!("{}|{}", r.get::<_, i32>(0), r.get::<_, String>(1)))
        .collect();
    let (mut got, mut want) = (got, want);
    got.sort();
    want.sort();
    assert_eq!(got.len(), 100);
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_the_server_stays_up() {
    let server = TestServer::start(config(fixture_url())).await;
    let mut client = server.client().await;

    let e = read_ticket(&mut client, Ticket::new("garbage"))
        .await
        .err()
        .unwrap();
    assert_eq!(code(e), tonic::Code::InvalidArgument);
    let e = read_ticket(&mut client, Ticket::new(vec![0xff; 64]))
        .await
        .err()
        .unwrap();
    assert_eq!(code(e), tonic::Code::InvalidArgument);

    let e = client
        .get_flight_info(path("public", "no_such_table"))
        .await
        .unwrap_err();
    assert_eq!(code(e), tonic::Code::NotFound);
    let e = client
        .get_schema(path("public", "no_such_table"))
        .await
        .unwrap_err();
    assert_eq!(code(e), tonic::Code::NotFound);
    // A chunk is not a table, even by its real name: the name the plan gives, of a chunk that
    // exists (a made-up name would be NOT_FOUND whatever the server did).
    let info = client
        .get_flight_info(path("public", "metrics"))
        .await
        .unwrap();
    let meta: Value = serde_json::from_slice(&info.endpoint[0].app_metadata).unwrap();
    let chunk = meta["chunk"].as_str().unwrap();
    let (chunk_schema, chunk_name) = chunk.split_once('.').unwrap();
    let db = pg(fixture_url()).await;
    let exists: bool = db
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&chunk])
        .await
        .unwrap()
        .get(0);
    assert!(exists, "{chunk} exists");
    let e = client
        .get_flight_info(path(chunk_schema, chunk_name))
        .await
        .unwrap_err();
    assert_eq!(code(e), tonic::Code::NotFound, "{chunk}");
    let e = client
        .get_schema(path(chunk_schema, chunk_name))
        .await
        .unwrap_err();
    assert_eq!(code(e), tonic::Code::NotFound, "{chunk}");
    let e = client
        .get_flight_info(arrow_flight::FlightDescriptor::new_path(vec![
            "public".into()
        ]))
        .await
        .unwrap_err();
    assert_eq!(code(e), tonic::Code::InvalidArgument);
    let e = client
        .do_action(Action::new("nonsense", ""))
        .await
        .err()
        .unwrap();
    assert_eq!(code(e), tonic::Code::Unimplemented);

    // Still serving.
    let info = client
        .get_flight_info(path("public", "devices"))
        .await
        .unwrap();
    assert_eq!(row_count(&read_all(&server, &info).await), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_schema_matches_flight_info() {
    let server = TestServer::start(config(fixture_url())).await;
    let mut client = server.client().await;
    let schema = client.get_schema(path("public", "metrics")).await.unwrap();
    let info = client
        .get_flight_info(path("public", "metrics"))
        .await
        .unwrap();
    assert_eq!(schema, info.try_decode_schema().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_refresh_actions() {
    let url = fixture_url();
    let db = pg(url).await;
    let server = TestServer::start(config(url)).await;
    let mut client = server.client().await;

    let health = action_json(&mut client, "health").await;
    assert_eq!(health["status"], "ok");
    assert!(health["timescaledb"].as_str().unwrap().starts_with("2."));

    // A table created after discovery appears only once the cache is refreshed.
    let table = format!("refresh_probe_{}", std::process::id());
    db.batch_execute(&format!(
        "CREATE TABLE public.{table} (x int); INSERT INTO public.{table} VALUES (1), (2)"
    ))
    .await
    .unwrap();
    let e = client
        .get_flight_info(path("public", &table))
        .await
        .unwrap_err();
    assert_eq!(
        code(e),
        tonic::Code::NotFound,
        "cached discovery does not see it yet"
    );
    action_json(&mut client, "refresh").await;
    let info = client
        .get_flight_info(path("public", &table))
        .await
        .unwrap();
    assert_eq!(row_count(&read_all(&server, &info).await), 2);
    db.batch_execute(&format!("DROP TABLE public.{table}"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identical_request_reuses_its_plan_until_discovery_changes() {
    let server = TestServer::start(config(fixture_url())).await;
    let mut client = server.client().await;
    let tickets = |info: &arrow_flight::FlightInfo| -> Vec<bytes::Bytes> {
        info.endpoint
            .iter()
            .map(|e| e.ticket.clone().unwrap().ticket)
            .collect()
    };
    let first = client
        .get_flight_info(path("public", "metrics"))
        .await
        .unwrap();
    // Tickets carry their expiry in ms: a fresh plan a few ms later signs other bytes.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let again = client
        .get_flight_info(path("public", "metrics"))
        .await
        .unwrap();
    assert_eq!(tickets(&again), tickets(&first), "the same plan, reused");
    // Sent as the bytes it was encoded to when planned: the very same FlightInfo.
    assert_eq!(again, first);
    assert_eq!(again.endpoint.len() as i64, FIXTURE_DAYS);

    // Another request (a projection) is planned anew; so is any request after re-discovery.
    let projected = client
        .get_flight_info(arrow_flight::FlightDescriptor::new_cmd(
            r#"{"table": "public.metrics", "columns": ["time"]}"#,
        ))
        .await
        .unwrap();
    assert_ne!(tickets(&projected), tickets(&first));
    action_json(&mut client, "refresh").await;
    let replanned = client
        .get_flight_info(path("public", "metrics"))
        .await
        .unwrap();
    assert_eq!(replanned.endpoint.len(), first.endpoint.len());
    assert_ne!(
        tickets(&replanned),
        tickets(&first),
        "planned against the new discovery"
    );
    // Both plans read the same rows.
    assert_eq!(
        row_count(&read_all(&server, &replanned).await),
        row_count(&read_all(&server, &first).await)
    );
}
