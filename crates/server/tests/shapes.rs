//! Every shape of table: integer and space dimensions, quoted names, dropped columns, native
//! partitions, large plain tables split by block ranges, and the plain-PostgreSQL fallbacks. Each test
//! builds its own schema or database; rows are compared with SQL as sorted text of every column.

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use arrow_flight::{FlightDescriptor, FlightInfo};
use serde_json::{json, Value};
use testkit::*;

/// Every row of `batches` as `col|col|…` text (Arrow's display form), sorted.
fn rows_text(batches: &[RecordBatch]) -> Vec<String> {
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in batches {
        let fmts: Vec<_> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
            .collect();
        for i in 0..b.num_rows() {
            out.push(
                fmts.iter()
                    .map(|f| f.value(i).to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            );
        }
    }
    out.sort_unstable();
    out
}

/// The same rows from SQL; `select` renders each column as Arrow displays it.
async fn sql_text(db: &tokio_postgres::Client, select: &str) -> Vec<String> {
    let mut out: Vec<String> = db
        .query(select, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (0..r.len())
                .map(|i| {
                    r.get::<_, Option<String>>(i)
                        .unwrap_or_else(|| "NULL".into())
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect();
    out.sort_unstable();
    out
}

fn meta(info: &FlightInfo) -> Vec<Value> {
    info.endpoint
        .iter()
        .map(|e| serde_json::from_slice(&e.app_metadata).unwrap())
        .collect()
}

async fn count_chunks(db: &tokio_postgres::Client, table: &str) -> usize {
    let n: i64 = db
        .query_one(&format!("SELECT count(*) FROM show_chunks('{table}')"), &[])
        .await
        .unwrap()
        .get(0);
    n as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integer_dimension_hypertable() {
    let db = pg(fixture_url()).await;
    let s = scratch_schema(&db, "t_int").await;
    db.batch_execute(&format!(
        "CREATE TABLE {s}.i (t bigint NOT NULL, v int, label text);
         SELECT create_hypertable('{s}.i', 't', chunk_time_interval => 1000);
         CREATE FUNCTION {s}.now_i() RETURNS bigint LANGUAGE sql STABLE AS 'SELECT 5000::bigint';
         SELECT set_integer_now_func('{s}.i', '{s}.now_i');
         INSERT INTO {s}.i SELECT g % 5000, g, CASE WHEN g % 7 = 0 THEN NULL ELSE 'r' || g END
           FROM generate_series(1, 20000) g;"
    ))
    .await
    .unwrap();
    let server = TestServer::start(config(fixture_url())).await;
    let mut client = server.client().await;

    let info = client.get_flight_info(path(&s, "i")).await.unwrap();
    assert_eq!(
        info.endpoint.len(),
        count_chunks(&db, &format!("{s}.i")).await
    );
    assert_eq!(info.endpoint.len(), 5);
    let m = meta(&info);
    assert_eq!(
        (m[0]["range_start"].clone(), m[0]["range_end"].clone()),
        (json!(0), json!(1000))
    );
    let want = sql_text(&db, &format!("SELECT t::text, v::text, label FROM {s}.i")).await;
    assert_same_rows(&rows_text(&read_all(&server, &info).await), &want);

    // Integer windows prune and filter like time windows.
    let info = client
        .get_flight_info(FlightDescriptor::new_cmd(
            json!({"table": [&s, "i"], "start": 1500, "end": 3500}).to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(info.endpoint.len(), 3);
    let want = sql_text(
        &db,
        &format!("SELECT t::text, v::text, label FROM {s}.i WHERE t >= 1500 AND t < 3500"),
    )
    .await;
    assert_same_rows(&rows_text(&read_all(&server, &info).await), &want);
    drop_schema(&db, &s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn space_partitioned_hypertable_has_an_endpoint_per_chunk() {
    let db = pg(fixture_url()).await;
    let s = scratch_schema(&db, "t_space").await;
    db.batch_execute(&format!(
        "CREATE TABLE {s}.sp (time timestamptz NOT NULL, device int NOT NULL, v float8);
         SELECT create_hypertable('{s}.sp', 'time', 'device', 3, chunk_time_interval => interval '1 day');
         INSERT INTO {s}.sp SELECT timestamptz '2026-10-01 00:00:00+00' + g * interval '1 minute',
                                   g % 30, g + 0.5
           FROM generate_series(0, 2 * 1440 - 1) g;"
    ))
    .await
    .unwrap();
    let server = TestServer::start(config(fixture_url())).await;
    let mut client = server.client().await;
    let info = client.get_flight_info(path(&s, "sp")).await.unwrap();
    let chunks = count_chunks(&db, &format!("{s}.sp")).await;
    assert!(chunks > 2, "several chunks per time slice ({chunks})");
    assert_eq!(info.endpoint.len(), chunks);
    let starts: Vec<String> = meta(&info)
        .iter()
        .map(|m| m["range_start"].to_string())
        .collect();
    assert!(
        starts.windows(2).all(|w| w[0] <= w[1]),
        "range order: {starts:?}"
    );
    let want = sql_text(
        &db,
        &format!(
            "SELECT to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), device::text, v::text
             FROM {s}.sp"
        ),
    )
    .await;
    assert_same_rows(&rows_text(&read_all(&server, &info).await), &want);
    drop_schema(&db, &s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quoted_names_and_dropped_columns() {
    let db = pg(fixture_url()).await;
    let s = format!("Weird Schema {}", std::process::id());
    let qs = format!("\"{s}\"");
    let table = "Sensor \"Data\"";
    db.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS {qs} CASCADE; CREATE SCHEMA {qs};
         CREATE TABLE {qs}.\"Sensor \"\"Data\"\"\" (\"Time\" timestamptz NOT NULL, gone int,
                                                 \"Temp °C\" float8, \"a\"\"b\" text);
         SELECT create_hypertable('{qs}.\"Sensor \"\"Data\"\"\"', 'Time', chunk_time_interval => interval '1 day');
         ALTER TABLE {qs}.\"Sensor \"\"Data\"\"\" DROP COLUMN gone;
         INSERT INTO {qs}.\"Sensor \"\"Data\"\"\"
           SELECT timestamptz '2026-10-01 00:00:00+00' + g * interval '1 hour', g * 0.5 + 0.25, 'q\"' || g
           FROM generate_series(0, 71) g;
         CREATE TABLE {qs}.\"Plain Mixed\" (\"ID\" int, dropme text, \"Name\" text);
         INSERT INTO {qs}.\"Plain Mixed\" VALUES (1, 'x', 'one'), (2, 'y', NULL);
         ALTER TABLE {qs}.\"Plain Mixed\" DROP COLUMN dropme;"
    ))
    .await
    .unwrap();
    let server = TestServer::start(config(fixture_url())).await;
    let mut client = server.client().await;

    let listed: Vec<Vec<String>> = {
        use futures::TryStreamExt;
        client
            .list_flights(vec![])
            .await
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.flight_descriptor.unwrap().path)
            .collect()
    };
    assert!(
        listed.contains(&vec![s.clone(), table.to_string()]),
        "{listed:?}"
    );

    let want = sql_text(
        &db,
        &format!(
            "SELECT to_char(\"Time\" AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \"Temp °C\"::text, \"a\"\"b\"
             FROM {qs}.\"Sensor \"\"Data\"\"\""
        ),
    )
    .await;
    let by_path = client.get_flight_info(path(&s, table)).await.unwrap();
    assert_eq!(by_path.endpoint.len(), 3);
    let schema = by_path.clone().try_decode_schema().unwrap();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        vec!["Time", "Temp °C", "a\"b"],
        "the dropped column is gone"
    );
    assert_same_rows(&rows_text(&read_all(&server, &by_path).await), &want);
    let by_cmd = client
        .get_flight_info(FlightDescriptor::new_cmd(
            json!({"table": [&s, table], "columns": ["a\"b", "Time"]}).to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(rows_text(&read_all(&server, &by_cmd).await).len(), 72);

    let plain = client
        .get_flight_info(path(&s, "Plain Mixed"))
        .await
        .unwrap();
    let want = sql_text(
        &db,
        &format!("SELECT \"ID\"::text, \"Name\" FROM {qs}.\"Plain Mixed\""),
    )
    .await;
    assert_eq!(rows_text(&read_all(&server, &plain).await), want);
    db.batch_execute(&format!("DROP SCHEMA {qs} CASCADE"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_partitions_are_endpoints_and_not_tables() {
    let db = pg(fixture_url()).await;
    let s = scratch_schema(&db, "t_part").await;
    db.batch_execute(&format!(
        "CREATE TABLE {s}.p (k int NOT NULL, v text) PARTITION BY RANGE (k);
         CREATE TABLE {s}.p_low PARTITION OF {s}.p FOR VALUES FROM (0) TO (100);
         CREATE TABLE {s}.p_mid PARTITION OF {s}.p FOR VALUES FROM (100) TO (200) PARTITION BY LIST (v);
         CREATE TABLE {s}.p_mid_a PARTITION OF {s}.p_mid FOR VALUES IN ('a');
         CREATE TABLE {s}.p_mid_rest PARTITION OF {s}.p_mid DEFAULT;
         CREATE TABLE {s}.p_default PARTITION OF {s}.p DEFAULT;
         INSERT INTO {s}.p SELECT g, CASE WHEN g % 3 = 0 THEN 'a' ELSE 'b' || g END FROM generate_series(0, 499) g;"
    ))
    .await
    .unwrap();
    let server = TestServer::start(config(fixture_url())).await;
    let mut client = server.client().await;
    let info = client.get_flight_info(path(&s, "p")).await.unwrap();
    assert_eq!(info.endpoint.len(), 4, "one endpoint per leaf partition");
    let parts: Vec<String> = meta(&info)
        .iter()
        .map(|m| m["chunk"].as_str().unwrap().to_string())
        .collect();
    assert!(parts.contains(&format!("{s}.p_mid_a")), "{parts:?}");
    let e = client.get_flight_info(path(&s, "p_low")).await.unwrap_err();
    assert_eq!(
        code(e),
        tonic::Code::NotFound,
        "a partition is not a table of its own"
    );
    let want = sql_text(&db, &format!("SELECT k::text, v FROM {s}.p")).await;
    assert_same_rows(&rows_text(&read_all(&server, &info).await), &want);
    drop_schema(&db, &s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_plain_table_is_split_into_block_ranges() {
    let db = pg(fixture_url()).await;
    let s = scratch_schema(&db, "t_blocks").await;
    db.batch_execute(&format!(
        "CREATE TABLE {s}.big (id int, pad text);
         INSERT INTO {s}.big SELECT g, repeat('x', 100 + g % 50) FROM generate_series(1, 40000) g;
         CREATE TABLE {s}.child (extra int) INHERITS ({s}.big);
         INSERT INTO {s}.child SELECT -g, 'child', g FROM generate_series(1, 10) g;
         ANALYZE {s}.big;"
    ))
    .await
    .unwrap();
    let mut c = config(fixture_url());
    c.plain_endpoint_bytes = 1 << 20;
    let server = TestServer::start(c).await;
    let mut client = server.client().await;
    let info = client.get_flight_info(path(&s, "big")).await.unwrap();
    let blocks: i64 = db
        .query_one(&format!("SELECT pg_relation_size('{s}.big') / 8192"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        info.endpoint.len() as i64,
        (blocks + 127) / 128,
        "{blocks} blocks, 128 per endpoint"
    );
    assert!(info.endpoint.len() > 3);
    let m = meta(&info);
    assert_eq!(m[0]["block_start"], json!(0));
    assert_eq!(
        m.last().unwrap()["block_end"],
        Value::Null,
        "the last range stays open"
    );
    // ONLY: the inheritance child is a table of its own, not part of big.
    let want = sql_text(&db, &format!("SELECT id::text, pad FROM ONLY {s}.big")).await;
    assert_eq!(want.len(), 40_000);
    assert_same_rows(&rows_text(&read_all(&server, &info).await), &want);
    drop_schema(&db, &s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_without_timescaledb_serves_its_tables() {
    let url = scratch_database("hf_plain").await;
    let db = pg(&url).await;
    let t = "readings";
    db.batch_execute(&format!(
        "CREATE TABLE public.{t} (id int, at timestamptz, note text);
         INSERT INTO public.{t} SELECT g, timestamptz '2026-01-01 00:00:00+00' + g * interval '1 s', 'n' || g
           FROM generate_series(1, 5000) g;"
    ))
    .await
    .unwrap();
    let server = TestServer::start(config(&url)).await;
    let mut client = server.client().await;
    let health = action_json(&mut client, "health").await;
    assert_eq!(health["timescaledb"], Value::Null);
    let info = client.get_flight_info(path("public", t)).await.unwrap();
    let want = sql_text(
        &db,
        &format!(
            "SELECT id::text, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), note FROM public.{t}"
        ),
    )
    .await;
    assert_same_rows(&rows_text(&read_all(&server, &info).await), &want);
    drop((db, client, server));
    drop_database(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timescaledb_support_off_reads_the_same_rows() {
    let db = pg(fixture_url()).await;
    let mut off = config(fixture_url());
    off.timescaledb_support = false;
    let server = TestServer::start(off).await;
    let mut client = server.client().await;
    let info = client
        .get_flight_info(path("public", "metrics"))
        .await
        .unwrap();
    assert_eq!(info.endpoint.len(), 1, "served as one plain relation");
    let off_rows = metrics_rows(&read_all(&server, &info).await);

    let on = TestServer::start(config(fixture_url())).await;
    let info = on
        .client()
        .await
        .get_flight_info(path("public", "metrics"))
        .await
        .unwrap();
    assert_eq!(info.endpoint.len() as i64, FIXTURE_DAYS);
    let on_rows = metrics_rows(&read_all(&on, &info).await);
    assert_same_rows(&off_rows, &on_rows);
    assert_same_rows(
        &off_rows,
        &metrics_rows_sql(&db, &metrics_canonical_sql("public.metrics")).await,
    );
}
