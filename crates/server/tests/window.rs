//! Time windows and projection through CMD descriptors: chunks outside the window get no endpoint,
//! boundary chunks are filtered in SQL, only the requested columns are read, and bad commands are
//! INVALID_ARGUMENT naming the problem.

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int64Type, TimeUnit, TimestampMicrosecondType};
use arrow_flight::FlightDescriptor;
use serde_json::json;
use testkit::*;

fn cmd(v: serde_json::Value) -> FlightDescriptor {
    FlightDescriptor::new_cmd(v.to_string())
}

async fn overlapping_chunks(db: &tokio_postgres::Client, start: &str, end: &str) -> i64 {
    db.query_one(
        "SELECT count(*) FROM timescaledb_information.chunks
         WHERE hypertable_schema = 'public' AND hypertable_name = 'metrics'
           AND range_end > $1::text::timestamptz AND range_start < $2::text::timestamptz",
        &[&start, &end],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_prunes_chunks_and_filters_rows() {
    let db = pg(fixture_url()).await;
    let server = TestServer::start(config(fixture_url())).await;
    let mut client = server.client().await;

    for (start, end, expected_endpoints) in [
        ("2026-10-02T06:00:00Z", "2026-10-05T06:00:00Z", 4), // unaligned: 2 boundary chunks
        ("2026-10-03T00:00:00Z", "2026-10-06T00:00:00Z", 3), // aligned: exactly 3 days
    ] {
        let info = client
            .get_flight_info(cmd(json!({
                "table": "public.metrics",
                "columns": ["reading", "time"],
                "start": start,
                "end": end,
            })))
            .await
            .unwrap();
        assert_eq!(
            info.endpoint.len() as i64,
            overlapping_chunks(&db, start, end).await
        );
        assert_eq!(info.endpoint.len(), expected_endpoints);

        let batches = read_all(&server, &info).await;
        let schema = info.try_decode_schema().unwrap();
        let fields: Vec<(&str, &DataType)> = schema
            .fields()
            .iter()
            .map(|f| (f.name().as_str(), f.data_type()))
            .collect();
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        assert_eq!(fields, vec![("reading", &DataType::Int64), ("time", &ts)]);

        let mut got: Vec<(Option<i64>, i64)> = batches
            .iter()
            .flat_map(|b| {
                let r = b.column(0).as_primitive::<Int64Type>();
                let t = b.column(1).as_primitive::<TimestampMicrosecondType>();
                (0..b.num_rows())
                    .map(|i| (r.is_valid(i).then(|| r.value(i)), t.value(i)))
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut want: Vec<(Option<i64>, i64)> = db
            .query(
                "SELECT reading, (extract(epoch from time) * 1000000)::int8 FROM public.metrics
                 WHERE time >= $1::text::timestamptz AND time < $2::text::timestamptz",
                &[&start, &end],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        got.sort_unstable();
        want.sort_unstable();
        assert!(!want.is_empty());
        assert_eq!(got.len(), want.len(), "window {start}..{end}");
        assert!(got == want, "rows of window {start}..{end} differ from SQL");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_outside_the_data_has_no_endpoints() {
    let server = TestServer::start(config(fixture_url())).await;
    let mut client = server.client().await;
    let info = client
        .get_flight_info(cmd(
            json!({"table": ["public", "metrics"], "start": "2030-01-01T00:00:00Z"}),
        ))
        .await
        .unwrap();
    assert!(info.endpoint.is_empty());
    assert_eq!(info.total_records, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_commands_name_the_problem() {
    let server = TestServer::start(config(fixture_url())).await;
    let mut client = server.client().await;
    for (command, needle) in [
        (
            json!({"table": "public.metrics", "colums": ["time"]}),
            "colums",
        ),
        (
            json!({"table": "public.metrics", "columns": ["nope"]}),
            "nope",
        ),
        (
            json!({"table": "public.metrics", "start": "last tuesday"}),
            "RFC 3339",
        ),
        (json!({"table": "public.metrics", "start": 5}), "RFC 3339"),
        (
            json!({"table": "public.metrics", "start": "2026-10-05T00:00:00Z", "end": "2026-10-04T00:00:00Z"}),
            "before",
        ),
        (
            json!({"table": "public.devices", "start": "2026-10-05T00:00:00Z"}),
            "has no time dimension",
        ),
        (json!({"table": "metrics"}), "schema.table"),
        (json!({"columns": ["time"]}), "table"),
    ] {
        let s = status(
            client
                .get_flight_info(cmd(command.clone()))
                .await
                .unwrap_err(),
        );
        assert_eq!(s.code(), tonic::Code::InvalidArgument, "{command}");
        assert!(s.message().contains(needle), "{command}: {}", s.message());
    }
    let e = client
        .get_flight_info(FlightDescriptor::new_cmd(vec![0xc3, 0x28]))
        .await
        .unwrap_err();
    assert_eq!(code(e), tonic::Code::InvalidArgument);
    let e = client
        .get_flight_info(cmd(json!({"table": "public.nope"})))
        .await
        .unwrap_err();
    assert_eq!(code(e), tonic::Code::NotFound);
}
