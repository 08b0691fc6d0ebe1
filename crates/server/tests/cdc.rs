//! Change data capture against the real cluster (`wal_level = logical`): an unsafe set-up refused
//! by `hyperflight cdc setup`, and a change stream of a hypertable that sees users' inserts,
//! updates and deletes on chunks (one made while streaming, one compressed) and none of
//! TimescaleDB's own compression, decompression or chunk drops. Each test has a database of its
//! own, since publications and slots are database-wide.

use std::process::Command;
use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int32Type, TimestampMicrosecondType, UInt64Type};
use server::cdc::{self, ChangeStream, Publish, QualifiedName, SetupRequest, StreamOptions};
use testkit::*;

fn hyperflight_cdc(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hyperflight"))
        .arg("cdc")
        .args(args)
        .arg("--database-url")
        .arg(url)
        .env_remove("HYPERFLIGHT_CONFIG")
        .output()
        .expect("run hyperflight")
}

#[tokio::test]
async fn unsafe_setup_is_refused_with_the_statement_to_run() {
    let url = cdc_database("hf_cdc_refuse").await;
    let db = pg(&url).await;
    // Slot names are cluster-wide.
    let slot = format!("hf_refuse_{}", std::process::id());
    db.batch_execute(
        "CREATE TABLE public.nokey (time timestamptz NOT NULL, v int);
         SELECT create_hypertable('public.nokey', 'time', chunk_time_interval => interval '1 day');
         INSERT INTO public.nokey VALUES ('2026-01-01', 1), ('2026-01-02', 2);
         CREATE TABLE public.keyed (time timestamptz NOT NULL, id int, PRIMARY KEY (time, id));
         SELECT create_hypertable('public.keyed', 'time');",
    )
    .await
    .unwrap();

    // Both hypertables' chunks share _timescaledb_internal: capturing the keyed one with updates
    // and deletes published would break UPDATEs on the other.
    let out = hyperflight_cdc(
        &url,
        &["setup", "--tables", "public.keyed", "--slot", &slot],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("public.nokey: no primary key and REPLICA IDENTITY DEFAULT"),
        "{stderr}"
    );
    assert!(
        stderr.contains("ALTER TABLE public.nokey REPLICA IDENTITY FULL;"),
        "{stderr}"
    );
    assert!(stderr.contains("--publish inserts"), "{stderr}");
    assert!(!stderr.contains("public.keyed"), "{stderr}");
    let made: i64 = db
        .query_one(
            "SELECT (SELECT count(*) FROM pg_publication) + (SELECT count(*) FROM pg_replication_slots
              WHERE database = current_database())",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(made, 0, "a refused set-up creates nothing");

    // Inserts only is safe: it is made, and users' UPDATEs and DELETEs still work.
    let out = hyperflight_cdc(
        &url,
        &[
            "setup",
            "--tables",
            "public.keyed",
            "--publish",
            "inserts",
            "--slot",
            &slot,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("FOR TABLES IN SCHEMA \"_timescaledb_internal\" WITH (publish = 'insert')"),
        "{stdout}"
    );
    assert_eq!(
        db.execute("UPDATE public.nokey SET v = v + 1", &[])
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        db.execute("DELETE FROM public.nokey WHERE v = 3", &[])
            .await
            .unwrap(),
        1
    );

    // A second set-up under the same names is refused; teardown drops both.
    let out = hyperflight_cdc(
        &url,
        &[
            "setup",
            "--tables",
            "public.keyed",
            "--publish",
            "inserts",
            "--slot",
            &slot,
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists already"));
    let out = hyperflight_cdc(&url, &["teardown", "--slot", &slot]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("dropped replication slot {slot:?}"))
            && stdout.contains("dropped publication \"hyperflight\""),
        "{stdout}"
    );

    // After the fix the full set-up goes through.
    db.batch_execute("ALTER TABLE public.nokey REPLICA IDENTITY FULL")
        .await
        .unwrap();
    let report = cdc::setup(
        &db,
        &SetupRequest {
            tables: vec!["public.keyed".into()],
            publication: "hyperflight".into(),
            slot: slot.clone(),
            publish: Publish::All,
        },
    )
    .await
    .unwrap();
    assert!(report.statements[0].ends_with("WITH (publish = 'insert, update, delete')"));
    assert_eq!(
        db.execute("UPDATE public.nokey SET v = v + 1", &[])
            .await
            .unwrap(),
        1
    );
    cdc_cleanup(&url, &db, "hyperflight", &slot).await;
}

/// One decoded change: kind, time (µs), device, value.
type Row = (String, i64, i32, Option<f64>);

/// Reads changes until a row with device `until` arrives; every wait is bounded.
async fn read_until(stream: &mut ChangeStream, until: i32, rows: &mut Vec<Row>) {
    loop {
        let batch = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .expect("a change within 60 s")
            .unwrap()
            .expect("the stream goes on");
        assert_eq!(batch.table, QualifiedName::new("public", "m"));
        let b = &batch.batch;
        let lsn = b.column(1).as_primitive::<UInt64Type>();
        assert!(lsn.iter().all(|l| l == Some(batch.lsn)));
        let kind = b.column(0).as_string::<i32>();
        let time = b.column(3).as_primitive::<TimestampMicrosecondType>();
        let dev = b.column(4).as_primitive::<Int32Type>();
        let v = b.column(5).as_primitive::<Float64Type>();
        let mut done = false;
        for i in 0..b.num_rows() {
            let value = (!v.is_null(i)).then(|| v.value(i));
            rows.push((
                kind.value(i).to_string(),
                time.value(i),
                dev.value(i),
                value,
            ));
            done |= dev.value(i) == until;
        }
        if done {
            return;
        }
    }
}

/// µs since the Unix epoch of 2026-01-DD hh:00 UTC.
fn at(day: i64, hour: i64) -> i64 {
    1_767_225_600_000_000 + ((day - 1) * 24 + hour) * 3_600_000_000
}

#[tokio::test]
async fn stream_maps_chunks_and_leaves_out_compression() {
    let url = cdc_database("hf_cdc_stream").await;
    let db = pg(&url).await;
    db.batch_execute(
        "CREATE TABLE public.m (time timestamptz NOT NULL, dev int NOT NULL, v float8,
                                PRIMARY KEY (time, dev));
         SELECT create_hypertable('public.m', 'time', chunk_time_interval => interval '1 day');
         ALTER TABLE public.m SET (timescaledb.compress, timescaledb.compress_segmentby = 'dev');
         INSERT INTO public.m SELECT t, 1, 0 FROM generate_series(
             timestamptz '2026-01-01 00:00+00', '2026-01-02 23:00+00', interval '1 hour') t;",
    )
    .await
    .unwrap();
    cdc::setup(
        &db,
        &SetupRequest {
            tables: vec!["public.m".into()],
            publication: "hf_pub".into(),
            slot: "hf_slot".into(),
            publish: Publish::All,
        },
    )
    .await
    .unwrap();
    let mut stream = ChangeStream::start(
        &config(&url),
        StreamOptions {
            slot: "hf_slot".into(),
            publication: "hf_pub".into(),
            tables: vec![QualifiedName::new("public", "m")],
            start_lsn: None,
            stop_lsn: None,
        },
    )
    .await
    .unwrap();

    // Users' changes on existing chunks, then a chunk made while streaming (day 5).
    db.batch_execute(
        "INSERT INTO public.m VALUES ('2026-01-01 00:30+00', 2, 1.5), ('2026-01-02 00:30+00', 2, 2.5);
         UPDATE public.m SET v = 7 WHERE time = '2026-01-01 01:00+00' AND dev = 1;
         DELETE FROM public.m WHERE time = '2026-01-02 02:00+00' AND dev = 1;
         INSERT INTO public.m VALUES ('2026-01-05 00:00+00', 3, 3.5);",
    )
    .await
    .unwrap();
    let mut rows = Vec::new();
    read_until(&mut stream, 3, &mut rows).await;
    let s = |k: &str| k.to_string();
    assert_eq!(
        rows,
        vec![
            (s("insert"), at(1, 0) + 1_800_000_000, 2, Some(1.5)),
            (s("insert"), at(2, 0) + 1_800_000_000, 2, Some(2.5)),
            (s("update"), at(1, 1), 1, Some(7.0)),
            // A delete carries the replica identity key (the primary key); the rest is NULL.
            (s("delete"), at(2, 2), 1, None),
            (s("insert"), at(5, 0), 3, Some(3.5)),
        ]
    );

    // TimescaleDB's own moves: compressing and decompressing a chunk, compressing it again, then
    // dropping it. None of it is a user change; a sentinel insert marks the end.
    db.batch_execute(
        "SELECT decompress_chunk(compress_chunk(c)) FROM show_chunks('public.m') c
          WHERE c::text LIKE '%_1_chunk';
         SELECT compress_chunk(c) FROM show_chunks('public.m') c;
         INSERT INTO public.m VALUES ('2026-01-05 01:00+00', 4, 4.5);",
    )
    .await
    .unwrap();
    rows.clear();
    read_until(&mut stream, 4, &mut rows).await;
    assert_eq!(rows, vec![(s("insert"), at(5, 1), 4, Some(4.5))]);
    assert!(
        stream.moved_rows() >= 25,
        "decompressing the first chunk moves its 25 rows back into it: {} left out",
        stream.moved_rows()
    );

    // A user's UPDATE on a compressed chunk: TimescaleDB decompresses the batch (left out), then
    // the update is one change. Then drop_chunks: nothing.
    db.batch_execute(
        "UPDATE public.m SET v = 8 WHERE time = '2026-01-02 05:00+00' AND dev = 1;
         SELECT drop_chunks('public.m', older_than => timestamptz '2026-01-02 00:00+00');
         INSERT INTO public.m VALUES ('2026-01-05 02:00+00', 5, 5.5);",
    )
    .await
    .unwrap();
    rows.clear();
    read_until(&mut stream, 5, &mut rows).await;
    assert_eq!(
        rows,
        vec![
            (s("update"), at(2, 5), 1, Some(8.0)),
            (s("insert"), at(5, 2), 5, Some(5.5)),
        ]
    );

    // The final table is what the changes say: day 2 and day 5 remain.
    let remaining: i64 = db
        .query_one("SELECT count(*) FROM public.m", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(remaining, 24 + 1 - 1 + 3);

    stream.stop().await.unwrap();
    cdc_cleanup(&url, &db, "hf_pub", "hf_slot").await;
}

/// Reads a tail until `rows` rows arrived (bounded in time); returns each batch's ids and ticket.
async fn tail_rows(
    server: &TestServer,
    ticket: arrow_flight::Ticket,
    rows: usize,
) -> Vec<(Vec<i64>, bytes::Bytes)> {
    use futures::TryStreamExt;
    let mut client = server.client().await;
    let mut stream = client.do_get(ticket).await.unwrap().into_inner();
    let mut out = Vec::new();
    let mut seen = 0;
    while seen < rows {
        let data = tokio::time::timeout(Duration::from_secs(60), stream.try_next())
            .await
            .expect("a tail batch within 60 s")
            .unwrap()
            .expect("the tail goes on");
        if let arrow_flight::decode::DecodedPayload::RecordBatch(b) = data.payload {
            assert_eq!(b.schema().field(0).name(), cdc::CHANGE_COLUMN);
            assert!(b
                .column(0)
                .as_string::<i32>()
                .iter()
                .all(|k| k == Some("insert")));
            let ids = b.column(4).as_primitive::<arrow::datatypes::Int64Type>();
            seen += b.num_rows();
            out.push((ids.values().to_vec(), data.inner.app_metadata));
        }
    }
    out
}

async fn walsenders(db: &tokio_postgres::Client) -> i64 {
    db.query_one(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'hyperflight-cdc'
           AND datname = current_database()",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn tails_share_one_slot_and_see_a_concurrent_writer() {
    let url = cdc_database("hf_cdc_tail").await;
    let db = pg(&url).await;
    db.batch_execute(
        "CREATE TABLE public.t (time timestamptz NOT NULL, id int8 NOT NULL, PRIMARY KEY (time, id));
         SELECT create_hypertable('public.t', 'time', chunk_time_interval => interval '1 day');
         INSERT INTO public.t VALUES ('2026-01-01', 0);",
    )
    .await
    .unwrap();
    let slot = format!("hf_tail_{}", std::process::id());
    cdc::setup(
        &db,
        &SetupRequest {
            tables: vec!["public.t".into()],
            publication: "hyperflight".into(),
            slot: slot.clone(),
            publish: Publish::All,
        },
    )
    .await
    .unwrap();
    let mut settings = config(&url);
    settings.tail.slot = slot.clone();
    settings.tail.max_latency = Duration::from_millis(100);
    let server = TestServer::start(settings).await;
    let info = server
        .client()
        .await
        .get_flight_info(arrow_flight::FlightDescriptor::new_cmd(
            r#"{"table": "public.t", "follow": true}"#,
        ))
        .await
        .unwrap();
    assert_eq!(info.endpoint.len(), 1);
    let meta = protocol::EndpointMetadata::from_json(&info.endpoint[0].app_metadata).unwrap();
    assert_eq!(meta.kind, protocol::EndpointKind::Tail);
    let ticket = info.endpoint[0].ticket.clone().unwrap();

    // Two tails, then a writer: 20 transactions of 50 rows, from day 1 into a new chunk (day 3).
    const ROWS: usize = 1_000;
    let a = tail_rows(&server, ticket.clone(), ROWS);
    let b = tail_rows(&server, ticket.clone(), ROWS);
    let writer = async {
        // Both tails subscribe before the first write commits (the ticket starts at "now" anyway).
        wait_until(
            Duration::from_secs(30),
            "the tail session starts",
            || async { walsenders(&db).await == 1 },
        )
        .await;
        for tx in 0..20i64 {
            db.execute(
                "INSERT INTO public.t SELECT timestamptz '2026-01-01' + g * interval '1 minute', g
                 FROM generate_series($1::int8, $1 + 49) g",
                &[&(1 + tx * 50 + if tx >= 10 { 2_880 } else { 0 })],
            )
            .await
            .unwrap();
        }
        // Both tails share one replication session.
        assert_eq!(walsenders(&db).await, 1);
    };
    let (a, b, ()) = tokio::join!(a, b, writer);
    let expected: Vec<i64> = (1..=500).chain(3_381..=3_880).collect();
    for read in [&a, &b] {
        let ids: Vec<i64> = read.iter().flat_map(|(ids, _)| ids.clone()).collect();
        assert_eq!(ids, expected);
    }

    // A resume from a batch's ticket delivers exactly the rows after it.
    let (first, resume) = &a[0];
    let rest = tail_rows(
        &server,
        arrow_flight::Ticket::new(resume.clone()),
        ROWS - first.len(),
    )
    .await;
    let ids: Vec<i64> = rest.iter().flat_map(|(ids, _)| ids.clone()).collect();
    assert_eq!(ids, expected[first.len()..]);

    // With every tail gone, the replication session ends and the slot is free.
    wait_until(Duration::from_secs(30), "the tail session ends", || async {
        walsenders(&db).await == 0
    })
    .await;
    drop(server);
    cdc_cleanup(&url, &db, "hyperflight", &slot).await;
}

#[tokio::test]
async fn a_slow_tail_is_cut_and_resumes_from_its_last_ticket() {
    let url = cdc_database("hf_cdc_slow").await;
    let db = pg(&url).await;
    db.batch_execute(
        "CREATE TABLE public.t (time timestamptz NOT NULL, id int8 NOT NULL, pad text,
                                PRIMARY KEY (time, id));
         SELECT create_hypertable('public.t', 'time');",
    )
    .await
    .unwrap();
    let slot = format!("hf_slow_{}", std::process::id());
    cdc::setup(
        &db,
        &SetupRequest {
            tables: vec!["public.t".into()],
            publication: "hyperflight".into(),
            slot: slot.clone(),
            publish: Publish::All,
        },
    )
    .await
    .unwrap();
    let mut settings = config(&url);
    settings.tail.slot = slot.clone();
    settings.tail.max_latency = Duration::from_millis(50);
    settings.tail.buffer_bytes = 8 << 20;
    let server = TestServer::start(settings).await;
    let info = server
        .client()
        .await
        .get_flight_info(arrow_flight::FlightDescriptor::new_cmd(
            r#"{"table": "public.t", "follow": true}"#,
        ))
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut client = server.client().await;
    let mut stream = client.do_get(ticket).await.unwrap().into_inner();
    let insert = |from: i64| {
        let db = &db;
        async move {
            db.execute(
                "INSERT INTO public.t SELECT timestamptz '2026-01-01' + g * interval '1 second', g,
                        repeat('x', 200)
                 FROM generate_series($1::int8, $1 + 999) g",
                &[&from],
            )
            .await
            .unwrap();
        }
    };
    // One transaction read, then 150 more (about 40 MB decoded: more than the buffer, sockets and
    // HTTP/2 windows hold) while the client reads nothing.
    insert(0).await;
    use futures::TryStreamExt;
    let mut ids: Vec<i64> = Vec::new();
    let mut last_ticket = None;
    fn take(
        data: arrow_flight::decode::DecodedFlightData,
        ids: &mut Vec<i64>,
        last_ticket: &mut Option<bytes::Bytes>,
    ) {
        if let arrow_flight::decode::DecodedPayload::RecordBatch(b) = &data.payload {
            let column = b.column(4).as_primitive::<arrow::datatypes::Int64Type>();
            ids.extend(column.values().iter());
            *last_ticket = Some(data.inner.app_metadata.clone());
        }
    }
    while last_ticket.is_none() {
        let data = tokio::time::timeout(Duration::from_secs(60), stream.try_next())
            .await
            .expect("the first batch within 60 s")
            .unwrap()
            .expect("the tail goes on");
        take(data, &mut ids, &mut last_ticket);
    }
    for tx in 1..=150 {
        insert(tx * 1_000).await;
    }
    // Reading again: what was queued, then ABORTED.
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(60), stream.try_next())
            .await
            .expect("the tail answers within 60 s")
        {
            Ok(Some(data)) => take(data, &mut ids, &mut last_ticket),
            Ok(None) => panic!("a cut tail ends with a status, not a clean end"),
            Err(e) => break status(e),
        }
    };
    assert_eq!(status.code(), tonic::Code::Aborted, "{status:?}");
    assert!(
        ids.len() < 151_000,
        "the client was cut before reading everything"
    );
    // Its last ticket resumes exactly after what it got. Catching up replays faster than a
    // client reads, so a resumed tail may be cut again: each resume goes on from the last ticket.
    let mut cuts = 0;
    while ids.len() < 151_000 {
        let ticket = arrow_flight::Ticket::new(last_ticket.clone().unwrap());
        let mut stream = client.do_get(ticket).await.unwrap().into_inner();
        loop {
            match tokio::time::timeout(Duration::from_secs(60), stream.try_next())
                .await
                .expect("the tail answers within 60 s")
            {
                Ok(Some(data)) => take(data, &mut ids, &mut last_ticket),
                Ok(None) => panic!("a tail ends with a status, not a clean end"),
                Err(e) => {
                    assert_eq!(testkit::status(e).code(), tonic::Code::Aborted);
                    cuts += 1;
                    assert!(cuts < 100, "each resume makes progress");
                    break;
                }
            }
            if ids.len() >= 151_000 {
                break;
            }
        }
    }
    assert_eq!(ids, (0..151_000).collect::<Vec<i64>>());
    drop(server);
    cdc_cleanup(&url, &db, "hyperflight", &slot).await;
}
