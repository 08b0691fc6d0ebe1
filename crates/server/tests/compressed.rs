//! Compressed (columnstore) chunks on TimescaleDB's full edition: exact rows, a resume ticket on
//! every batch, resumes in the middle of a compressed chunk and of its heap part, partial chunks,
//! deletes, windows, projection and estimates. Each test compresses a hypertable of its own.

use arrow::array::{Array, RecordBatch};
use arrow_flight::{FlightDescriptor, FlightInfo, Ticket};
use protocol::{EndpointKind, EndpointMetadata};
use testkit::*;

/// A metrics-shaped hypertable `<schema>.m` of 3 days, segmented by two columns, ordered by time
/// descending, with NaN and NULL temperatures, every chunk compressed.
async fn compressed_hypertable(db: &tokio_postgres::Client, prefix: &str) -> String {
    let s = scratch_schema(db, prefix).await;
    private_hypertable(db, &s, 3).await;
    db.batch_execute(&format!(
        "UPDATE {s}.m SET temperature = 'NaN' WHERE reading % 101 = 0;
         ALTER TABLE {s}.m SET (timescaledb.compress, timescaledb.compress_segmentby = 'device_id, status',
                                timescaledb.compress_orderby = 'time DESC');
         SELECT compress_chunk(c) FROM show_chunks('{s}.m') c;
         ANALYZE {s}.m;"
    ))
    .await
    .unwrap();
    s
}

fn metadata(info: &FlightInfo) -> Vec<EndpointMetadata> {
    info.endpoint
        .iter()
        .map(|e| EndpointMetadata::from_json(&e.app_metadata).unwrap())
        .collect()
}

async fn plan(server: &TestServer, cmd: serde_json::Value) -> FlightInfo {
    server
        .client()
        .await
        .get_flight_info(FlightDescriptor::new_cmd(cmd.to_string()))
        .await
        .unwrap()
}

async fn sql_rows(db: &tokio_postgres::Client, relation: &str, filter: &str) -> Vec<String> {
    metrics_rows_sql(db, &format!("{} {filter}", metrics_canonical_sql(relation))).await
}

/// Reads one endpoint to its end, in pieces of `cut` batches, each piece a new DoGet from the last
/// piece's last resume ticket (every batch must carry one).
async fn read_in_pieces(
    server: &TestServer,
    ticket: Ticket,
    cut: usize,
) -> (Vec<RecordBatch>, usize) {
    let mut client = server.client().await;
    let mut ticket = ticket;
    let mut batches = Vec::new();
    let mut resumes = 0;
    loop {
        let read = read_batches(&mut client, ticket, cut).await.unwrap();
        assert!(
            read.resume.iter().all(|r| !r.is_empty()),
            "a batch of a compressed chunk came without a resume ticket"
        );
        let done = read.batches.len() < cut;
        batches.extend(read.batches);
        match read.resume.last() {
            Some(last) if !done => {
                ticket = Ticket::new(last.clone());
                resumes += 1;
            }
            _ => return (batches, resumes),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_chunks_read_exactly_with_tickets_and_estimates() {
    let db = pg(fixture_url()).await;
    let s = compressed_hypertable(&db, "t_compressed").await;
    let server = TestServer::start(config(fixture_url())).await;
    let info = plan(&server, serde_json::json!({"table": [s, "m"]})).await;
    let meta = metadata(&info);
    assert_eq!(meta.len(), 3);
    for m in &meta {
        assert_eq!(m.kind, EndpointKind::CompressedChunk);
        assert!(m.is_compressed);
        assert!(m.compression_ratio.is_some_and(|r| r > 1.0), "{m:?}");
        let chunk = m.chunk.as_deref().unwrap();
        let n: i64 = db
            .query_one(&format!("SELECT count(*) FROM {chunk}"), &[])
            .await
            .unwrap()
            .get(0);
        let off = (m.estimated_rows - n).abs() as f64 / n as f64;
        assert!(
            off <= 0.1,
            "{chunk}: estimate {} for {n} rows",
            m.estimated_rows
        );
    }
    let total: i64 = meta.iter().map(|m| m.estimated_rows).sum();
    assert_eq!(info.total_records, total);

    // Every endpoint, each read in pieces of 3 batches: every piece resumes mid-chunk.
    let mut all = Vec::new();
    let mut resumes = 0;
    for e in &info.endpoint {
        let (batches, r) = read_in_pieces(&server, e.ticket.clone().unwrap(), 3).await;
        assert!(batches.iter().all(|b| b.num_rows() <= TEST_BATCH_ROWS));
        resumes += r;
        all.extend(batches);
    }
    assert!(
        resumes >= 3,
        "the chunks were read in several pieces ({resumes} resumes)"
    );
    assert_same_rows(
        &metrics_rows(&all),
        &sql_rows(&db, &format!("{s}.m"), "").await,
    );
    drop_schema(&db, &s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_chunks_and_deletes_read_exactly_and_resume_in_both_parts() {
    let db = pg(fixture_url()).await;
    let s = compressed_hypertable(&db, "t_partial").await;
    // Rows inserted into a compressed chunk (the first day), and rows deleted from another.
    db.batch_execute(&format!(
        "INSERT INTO {s}.m SELECT time + interval '1 millisecond', device_id, 'late', temperature,
                humidity, status, reading, ok
         FROM {s}.m WHERE time < timestamptz '2026-10-01 00:00:00+00' + interval '1 hour';
         DELETE FROM {s}.m WHERE time >= timestamptz '2026-10-02 00:00:00+00'
                             AND time < timestamptz '2026-10-03 00:00:00+00' AND reading % 3 = 0;"
    ))
    .await
    .unwrap();
    let server = TestServer::start(config(fixture_url())).await;
    let info = plan(&server, serde_json::json!({"table": [s, "m"]})).await;
    let kinds: Vec<EndpointKind> = metadata(&info).iter().map(|m| m.kind).collect();
    assert!(kinds.contains(&EndpointKind::PartialChunk), "{kinds:?}");

    // Cut after every single batch: resumes land in the compressed part and in the heap part.
    let mut all = Vec::new();
    for e in &info.endpoint {
        all.extend(
            read_in_pieces(&server, e.ticket.clone().unwrap(), 1)
                .await
                .0,
        );
    }
    assert_same_rows(
        &metrics_rows(&all),
        &sql_rows(&db, &format!("{s}.m"), "").await,
    );
    drop_schema(&db, &s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_and_projection_on_compressed_chunks() {
    let db = pg(fixture_url()).await;
    let s = compressed_hypertable(&db, "t_cwindow").await;
    let server = TestServer::start(config(fixture_url())).await;
    let (start, end) = ("2026-10-01T10:00:00Z", "2026-10-02T13:30:00Z");
    let info = plan(
        &server,
        serde_json::json!({"table": [s, "m"], "start": start, "end": end}),
    )
    .await;
    assert_eq!(info.endpoint.len(), 2, "the third day is pruned");
    let mut all = Vec::new();
    for e in &info.endpoint {
        all.extend(
            read_in_pieces(&server, e.ticket.clone().unwrap(), 2)
                .await
                .0,
        );
    }
    let filter = format!("WHERE time >= '{start}' AND time < '{end}'");
    assert_same_rows(
        &metrics_rows(&all),
        &sql_rows(&db, &format!("{s}.m"), &filter).await,
    );

    let info = info_cols(&server, &s).await;
    let batches = read_all(&server, &info).await;
    assert!(batches.iter().all(|b| b.num_columns() == 2));
    let mut got: Vec<String> = batches
        .iter()
        .flat_map(|b| {
            let t = b
                .column(0)
                .as_any()
                .downcast_ref::<arrow::array::Float64Array>()
                .unwrap();
            let time = b
                .column(1)
                .as_any()
                .downcast_ref::<arrow::array::TimestampMicrosecondArray>()
                .unwrap();
            (0..b.num_rows())
                .map(|i| {
                    format!(
                        "{:?}|{}",
                        t.is_valid(i).then(|| t.value(i).to_bits()),
                        time.value(i)
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    got.sort_unstable();
    let mut want: Vec<String> = db
        .query(
            &format!("SELECT temperature, (extract(epoch from time) * 1000000)::int8 FROM {s}.m"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{:?}|{}",
                r.get::<_, Option<f64>>(0).map(f64::to_bits),
                r.get::<_, i64>(1)
            )
        })
        .collect();
    want.sort_unstable();
    assert_same_rows(&got, &want);
    drop_schema(&db, &s).await;
}

async fn info_cols(server: &TestServer, s: &str) -> FlightInfo {
    plan(
        server,
        serde_json::json!({"table": [s, "m"], "columns": ["temperature", "time"]}),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_jsonb_and_arrays_read_exactly() {
    let db = pg(fixture_url()).await;
    let s = scratch_schema(&db, "t_cjson").await;
    db.batch_execute(&format!(
        "CREATE TABLE {s}.e (time timestamptz NOT NULL, dev int, v float8, j jsonb, note text);
         SELECT create_hypertable('{s}.e', 'time', chunk_time_interval => interval '1 day');
         INSERT INTO {s}.e SELECT timestamptz '2026-10-01' + g * interval '7 seconds', g % 4,
                CASE WHEN g % 13 = 0 THEN 'NaN' WHEN g % 17 = 0 THEN NULL ELSE g / 8.0 END,
                CASE WHEN g % 5 = 0 THEN NULL ELSE jsonb_build_object('g', g, 'tags', jsonb_build_array('a', g % 3)) END,
                CASE WHEN g % 2 = 0 THEN NULL ELSE 'n' || g END
         FROM generate_series(1, 20000) g;
         CREATE TABLE {s}.a (time timestamptz NOT NULL, dev int, arr float8[]);
         SELECT create_hypertable('{s}.a', 'time', chunk_time_interval => interval '1 day');
         INSERT INTO {s}.a SELECT timestamptz '2026-10-01' + g * interval '60 seconds', g % 3,
                CASE WHEN g % 9 = 0 THEN NULL ELSE ARRAY[g, g / 2.0, 'NaN'::float8] END
         FROM generate_series(1, 3000) g;
         ALTER TABLE {s}.e SET (timescaledb.compress, timescaledb.compress_segmentby = 'dev');
         ALTER TABLE {s}.a SET (timescaledb.compress, timescaledb.compress_segmentby = 'dev');
         SELECT compress_chunk(c) FROM show_chunks('{s}.e') c;
         SELECT compress_chunk(c) FROM show_chunks('{s}.a') c;"
    ))
    .await
    .unwrap();
    let server = TestServer::start(config(fixture_url())).await;

    // jsonb, text, NaN and NULL in compressed columns: exact, with tickets.
    let info = plan(&server, serde_json::json!({"table": [s, "e"]})).await;
    let mut rows = Vec::new();
    for e in &info.endpoint {
        let (batches, _) = read_in_pieces(&server, e.ticket.clone().unwrap(), 2).await;
        for b in &batches {
            let time = b
                .column(0)
                .as_any()
                .downcast_ref::<arrow::array::TimestampMicrosecondArray>()
                .unwrap();
            let dev = b
                .column(1)
                .as_any()
                .downcast_ref::<arrow::array::Int32Array>()
                .unwrap();
            let v = b
                .column(2)
                .as_any()
                .downcast_ref::<arrow::array::Float64Array>()
                .unwrap();
            let j = b
                .column(3)
                .as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .unwrap();
            let n = b
                .column(4)
                .as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .unwrap();
            for i in 0..b.num_rows() {
                rows.push(format!(
                    "{}|{:?}|{:?}|{:?}|{:?}",
                    time.value(i),
                    dev.is_valid(i).then(|| dev.value(i)),
                    v.is_valid(i).then(|| v.value(i).to_bits()),
                    j.is_valid(i).then(|| j.value(i).to_string()),
                    n.is_valid(i).then(|| n.value(i).to_string()),
                ));
            }
        }
    }
    rows.sort_unstable();
    let mut want: Vec<String> = db
        .query(
            &format!("SELECT (extract(epoch from time) * 1000000)::int8, dev, v, j::text, note FROM {s}.e"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}|{:?}|{:?}|{:?}|{:?}",
                r.get::<_, i64>(0),
                r.get::<_, Option<i32>>(1),
                r.get::<_, Option<f64>>(2).map(f64::to_bits),
                r.get::<_, Option<String>>(3),
                r.get::<_, Option<String>>(4),
            )
        })
        .collect();
    want.sort_unstable();
    assert_eq!(want.len(), 20_000);
    assert_same_rows(&rows, &want);

    // Array columns cannot be decompressed batch-wise on 2.28: one pass, exact, no tickets.
    let info = plan(&server, serde_json::json!({"table": [s, "a"]})).await;
    let mut client = server.client().await;
    let mut count = 0;
    let mut nan_elements = 0;
    for e in &info.endpoint {
        let read = read_batches(&mut client, e.ticket.clone().unwrap(), usize::MAX)
            .await
            .unwrap();
        assert!(
            read.resume.iter().all(|r| r.is_empty()),
            "no positions for array columns"
        );
        for b in &read.batches {
            count += b.num_rows();
            let arr = b
                .column(2)
                .as_any()
                .downcast_ref::<arrow::array::ListArray>()
                .unwrap();
            for i in 0..b.num_rows() {
                if arr.is_valid(i) {
                    let v = arr.value(i);
                    let f = v
                        .as_any()
                        .downcast_ref::<arrow::array::Float64Array>()
                        .unwrap();
                    nan_elements += f.iter().filter(|x| x.is_some_and(f64::is_nan)).count();
                }
            }
        }
    }
    let (n, nans): (i64, i64) = {
        let r = db
            .query_one(&format!("SELECT count(*), count(arr) FROM {s}.a"), &[])
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(count as i64, n);
    assert_eq!(
        nan_elements as i64, nans,
        "one NaN element in every non-NULL array"
    );
    drop_schema(&db, &s).await;
}
