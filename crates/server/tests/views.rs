//! Continuous aggregates (TimescaleDB full edition), views and materialized views as flights: rows
//! exactly as `SELECT * FROM the_view` returns them, caggs as materialized chunks plus a real-time
//! part above the watermark, windows that prune, and the role's privileges.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int32Type, Int64Type, TimestampMicrosecondType};
use arrow_flight::FlightDescriptor;
use protocol::{EndpointKind, EndpointMetadata, TableFacts};
use testkit::*;

/// An average to 12 significant digits. The real-time part aggregates at read time, and the order in
/// which PostgreSQL sums floats depends on the plan: two reads of the view itself can differ in the
/// last bits.
fn approx(v: f64) -> String {
    format!("{v:.11e}")
}

/// `bucket | device_id | avg | n` rows of a cagg, canonical and sorted.
fn cagg_rows(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        let bucket = b.column(0).as_primitive::<TimestampMicrosecondType>();
        let device = b.column(1).as_primitive::<Int32Type>();
        let avg = b.column(2).as_primitive::<Float64Type>();
        let n = b.column(3).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            out.push(format!(
                "{}|{:?}|{:?}|{}",
                bucket.value(i),
                device.is_valid(i).then(|| device.value(i)),
                avg.is_valid(i).then(|| approx(avg.value(i))),
                n.value(i)
            ));
        }
    }
    out.sort_unstable();
    out
}

async fn cagg_rows_sql(db: &tokio_postgres::Client, view: &str, filter: &str) -> Vec<String> {
    let mut out: Vec<String> = db
        .query(
            &format!(
                "SELECT (extract(epoch from bucket) * 1000000)::int8, device_id, avg_temp, n FROM {view} {filter}"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}|{:?}|{:?}|{}",
                r.get::<_, i64>(0),
                r.get::<_, Option<i32>>(1),
                r.get::<_, Option<f64>>(2).map(approx),
                r.get::<_, i64>(3)
            )
        })
        .collect();
    out.sort_unstable();
    out
}

fn kinds(info: &arrow_flight::FlightInfo) -> Vec<EndpointKind> {
    info.endpoint
        .iter()
        .map(|e| EndpointMetadata::from_json(&e.app_metadata).unwrap().kind)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuous_aggregates_are_flights_equal_to_their_view() {
    let db = pg(fixture_url()).await;
    let s = scratch_schema(&db, "t_cagg").await;
    private_hypertable(&db, &s, 3).await;
    // Continuous aggregates cannot be created inside a transaction block: one statement each.
    for sql in [
        format!(
            "CREATE MATERIALIZED VIEW {s}.hourly WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
             SELECT time_bucket('1 hour', time) AS bucket, device_id, avg(temperature) AS avg_temp, count(*) AS n
             FROM {s}.m GROUP BY 1, 2 WITH NO DATA"
        ),
        format!(
            "CREATE MATERIALIZED VIEW {s}.hourly_mat WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS
             SELECT time_bucket('1 hour', time) AS bucket, device_id, avg(temperature) AS avg_temp, count(*) AS n
             FROM {s}.m GROUP BY 1, 2 WITH NO DATA"
        ),
        format!("CALL refresh_continuous_aggregate('{s}.hourly', NULL, '2026-10-02 12:00:00+00')"),
        format!("CALL refresh_continuous_aggregate('{s}.hourly_mat', NULL, NULL)"),
    ] {
        db.simple_query(&sql).await.unwrap();
    }
    let server = TestServer::start(config(fixture_url())).await;
    let mut client = server.client().await;

    // Listed under the view's name, with the bucket as time dimension.
    let info = client.get_flight_info(path(&s, "hourly")).await.unwrap();
    let schema = info.clone().try_decode_schema().unwrap();
    let facts = TableFacts::from_lookup(|k| schema.metadata().get(k).cloned()).unwrap();
    assert_eq!(facts.kind, protocol::TableKind::ContinuousAggregate);
    assert_eq!(facts.time_column.as_deref(), Some("bucket"));
    let k = kinds(&info);
    assert!(
        k.len() >= 2,
        "materialized chunks plus the real-time part: {k:?}"
    );
    assert!(k.iter().all(|k| *k == EndpointKind::ContinuousAggregate));
    let view = format!("{s}.hourly");
    assert_same_rows(
        &cagg_rows(&read_all(&server, &info).await),
        &cagg_rows_sql(&db, &view, "").await,
    );

    // New raw rows above the watermark, no refresh: the real-time part has them.
    db.batch_execute(&format!(
        "INSERT INTO {s}.m (time, device_id, temperature) VALUES
           ('2026-10-02 20:00:00+00', 7, 1.5), ('2026-10-02 20:30:00+00', 7, 2.5)"
    ))
    .await
    .unwrap();
    let info = client.get_flight_info(path(&s, "hourly")).await.unwrap();
    let got = cagg_rows(&read_all(&server, &info).await);
    assert_same_rows(&got, &cagg_rows_sql(&db, &view, "").await);

    // A window prunes materialized chunks and splits at the watermark.
    let cmd = serde_json::json!({"table": [s, "hourly"],
        "start": "2026-10-02T06:00:00Z", "end": "2026-10-02T18:00:00Z"});
    let info = client
        .get_flight_info(FlightDescriptor::new_cmd(cmd.to_string()))
        .await
        .unwrap();
    let filter = "WHERE bucket >= '2026-10-02T06:00:00Z' AND bucket < '2026-10-02T18:00:00Z'";
    let want = cagg_rows_sql(&db, &view, filter).await;
    assert_eq!(want.len() % 12, 0, "12 buckets per device");
    assert_same_rows(&cagg_rows(&read_all(&server, &info).await), &want);

    // materialized_only: the materialization chunks alone, each with resume tickets.
    let info = client
        .get_flight_info(path(&s, "hourly_mat"))
        .await
        .unwrap();
    let first = read_batches(&mut client, info.endpoint[0].ticket.clone().unwrap(), 1)
        .await
        .unwrap();
    assert!(
        !first.resume[0].is_empty(),
        "materialized chunks resume like chunks"
    );
    assert_same_rows(
        &cagg_rows(&read_all(&server, &info).await),
        &cagg_rows_sql(&db, &format!("{s}.hourly_mat"), "").await,
    );
    drop_schema(&db, &s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_and_materialized_views_read_under_the_roles_privileges() {
    let db = pg(fixture_url()).await;
    let s = scratch_schema(&db, "t_views").await;
    let role = format!("hf_view_reader_{}", std::process::id());
    db.batch_execute(&format!(
        "CREATE TABLE {s}.secret (id int, v text);
         INSERT INTO {s}.secret SELECT g, 'v' || g FROM generate_series(1, 500) g;
         CREATE VIEW {s}.odd AS SELECT id, v FROM {s}.secret WHERE id % 2 = 1;
         CREATE MATERIALIZED VIEW {s}.tens AS SELECT id / 10 AS tens, count(*) AS n FROM {s}.secret GROUP BY 1;
         CREATE MATERIALIZED VIEW {s}.empty AS SELECT 1 AS one WITH NO DATA;
         DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN;
         GRANT USAGE ON SCHEMA {s} TO {role}; GRANT SELECT ON {s}.odd TO {role};"
    ))
    .await
    .unwrap();
    let server = TestServer::start(config(fixture_url())).await;
    let mut client = server.client().await;
    let info = client.get_flight_info(path(&s, "odd")).await.unwrap();
    assert_eq!(kinds(&info), [EndpointKind::View]);
    let batches = read_all(&server, &info).await;
    assert_eq!(row_count(&batches), 250);
    let ids: i64 = batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int32Type>().values().to_vec())
        .map(i64::from)
        .sum();
    assert_eq!(ids, (1..=500).filter(|i| i % 2 == 1).sum::<i64>());
    let info = client.get_flight_info(path(&s, "tens")).await.unwrap();
    assert_eq!(kinds(&info), [EndpointKind::View]);
    assert_eq!(row_count(&read_all(&server, &info).await), 51);
    // An unpopulated materialized view cannot be read: it is not listed.
    let e = client.get_flight_info(path(&s, "empty")).await.unwrap_err();
    assert_eq!(code(e), tonic::Code::NotFound);

    // As a role granted the view only: the view reads, the table behind it is not exposed.
    let url = format!("{}?user={role}", fixture_url());
    let as_role = TestServer::start(config(&url)).await;
    let mut rc = as_role.client().await;
    let info = rc.get_flight_info(path(&s, "odd")).await.unwrap();
    assert_eq!(row_count(&read_all(&as_role, &info).await), 250);
    let e = rc.get_flight_info(path(&s, "secret")).await.unwrap_err();
    assert_eq!(code(e), tonic::Code::NotFound);
    drop(as_role);
    drop_schema(&db, &s).await;
    db.batch_execute(&format!("DROP ROLE {role}"))
        .await
        .unwrap();
}
