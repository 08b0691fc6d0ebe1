//! Change capture under load (`scripts/bench-cdc.sh`): a writer inserts at a steady rate into a
//! hypertable while a live tail over Flight and a `ChangeStream` (each on a slot of its own) follow
//! it; then a third slot, not read while the writer ran, is read as fast as it decodes. Prints the
//! rate the writer reached, the rows per second each consumer decoded, and the insert-to-tail-client
//! latency (p50, p99) measured on each row's own insert time. With `HYPERFLIGHT_AIRBYTE_BIN` (as
//! `scripts/bench-cdc.sh` sets it), the Airbyte source's CDC method copies the empty table before the
//! writer starts (a fourth slot), then a second sync reads the writer's changes as records.
//!
//! Arguments: `[rows_per_second] [seconds]` (default 25000 for 20 s).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use futures::TryStreamExt;
use server::cdc::{self, ChangeStream, Publish, QualifiedName, SetupRequest, StreamOptions};
use testkit::*;

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as i64
}

fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// The Airbyte source's CDC method on its own slot: `start` runs the first sync (the copy under
/// the slot's snapshot) and keeps its state; `changes` reads what was committed since as records.
struct AirbyteCdc {
    bin: PathBuf,
    dir: PathBuf,
}

impl AirbyteCdc {
    fn start(bin: PathBuf, url: &str, slot: &str) -> Self {
        let pg: tokio_postgres::Config = url.parse().unwrap();
        let tokio_postgres::config::Host::Tcp(host) = &pg.get_hosts()[0] else {
            panic!("a TCP host in {url}")
        };
        let dir = std::env::temp_dir().join(format!("hf-cdc-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cdc = AirbyteCdc { bin, dir };
        cdc.write(
            "config.json",
            serde_json::json!({
            "host": host, "port": pg.get_ports()[0], "database": pg.get_dbname().unwrap(),
            "username": pg.get_user().unwrap(), "password": "unused-under-trust",
            "replication_method": {"method": "CDC", "replication_slot": slot,
                                   "publication": "hyperflight"}}),
        );
        let (lines, _) = cdc.run(&["discover"], Some(r#"{"type":"CATALOG""#));
        let catalog: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        let stream = catalog["catalog"]["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "events")
            .expect("public.events discovered")
            .clone();
        cdc.write(
            "catalog.json",
            serde_json::json!({"streams": [{
            "stream": stream, "sync_mode": "incremental", "destination_sync_mode": "append",
            "cursor_field": ["_ab_cdc_lsn"]}]}),
        );
        let catalog = cdc.path("catalog.json");
        let (states, _) = cdc.run(&["read", "--catalog", &catalog], Some(r#"{"type":"STATE""#));
        let state: serde_json::Value = serde_json::from_str(states.last().unwrap()).unwrap();
        cdc.write("state.json", serde_json::json!([state["state"]]));
        cdc
    }

    fn write(&self, file: &str, value: serde_json::Value) {
        std::fs::write(self.dir.join(file), value.to_string()).unwrap();
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).to_str().unwrap().to_string()
    }

    /// Runs `hyperflight-airbyte <args> --config config.json`; returns the lines starting with
    /// `keep` and how many RECORD lines there were.
    fn run(&self, args: &[&str], keep: Option<&str>) -> (Vec<String>, usize) {
        let mut child = Command::new(&self.bin)
            .args(args)
            .args(["--config", &self.path("config.json")])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", self.bin.display()));
        let (mut kept, mut records) = (Vec::new(), 0);
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            if line.starts_with(r#"{"type":"RECORD""#) {
                records += 1;
            } else if keep.is_some_and(|k| line.starts_with(k)) {
                kept.push(line);
            }
        }
        assert!(
            child.wait().unwrap().success(),
            "hyperflight-airbyte {args:?} failed"
        );
        (kept, records)
    }

    /// The second sync: the changes since the first, as records; their count and the wall time.
    fn changes(&self) -> (usize, Duration) {
        let started = Instant::now();
        let catalog = self.path("catalog.json");
        let state = self.path("state.json");
        let (_, records) = self.run(&["read", "--catalog", &catalog, "--state", &state], None);
        (records, started.elapsed())
    }
}

impl Drop for AirbyteCdc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn airbyte_bin() -> Option<PathBuf> {
    std::env::var_os("HYPERFLIGHT_AIRBYTE_BIN").map(PathBuf::from)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rate: i64 = args.get(1).map_or(25_000, |a| a.parse().expect("rows/s"));
    let seconds: u64 = args.get(2).map_or(20, |a| a.parse().expect("seconds"));
    let url = scratch_database("hf_cdc_bench").await;
    let db = pg(&url).await;
    db.batch_execute(
        "CREATE EXTENSION IF NOT EXISTS timescaledb;
         CREATE TABLE public.events (time timestamptz NOT NULL, id int8 NOT NULL,
                                     sent_us int8 NOT NULL, value float8, PRIMARY KEY (time, id));
         SELECT create_hypertable('public.events', 'time', chunk_time_interval => interval '1 hour');",
    )
    .await
    .unwrap();
    let pid = std::process::id();
    let (tail_slot, stream_slot, backlog_slot, airbyte_slot) = (
        format!("hf_bench_tail_{pid}"),
        format!("hf_bench_cs_{pid}"),
        format!("hf_bench_backlog_{pid}"),
        format!("hf_bench_airbyte_{pid}"),
    );
    cdc::setup(
        &db,
        &SetupRequest {
            tables: vec!["public.events".into()],
            publication: "hyperflight".into(),
            slot: tail_slot.clone(),
            publish: Publish::All,
        },
    )
    .await
    .unwrap();
    for slot in [&stream_slot, &backlog_slot, &airbyte_slot] {
        db.execute(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
            &[slot],
        )
        .await
        .unwrap();
    }

    // The Airbyte source's first sync (it makes its slot afresh, exporting the snapshot it copies).
    let airbyte = airbyte_bin().map(|bin| AirbyteCdc::start(bin, &url, &airbyte_slot));

    let mut settings = config(&url);
    settings.batch_rows = 65_536;
    settings.tail.slot = tail_slot.clone();
    settings.tail.max_latency = Duration::from_millis(50);
    let server = TestServer::start(settings.clone()).await;
    let info = server
        .client()
        .await
        .get_flight_info(arrow_flight::FlightDescriptor::new_cmd(
            r#"{"table": "public.events", "follow": true}"#,
        ))
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let total = rate * seconds as i64;

    // The tail client: rows and each row's latency from its insert.
    let tail = {
        let mut client = server.client().await;
        async move {
            let mut stream = client.do_get(ticket).await.unwrap().into_inner();
            let (mut rows, mut latencies, mut first) = (0i64, Vec::new(), None);
            while rows < total {
                let data = tokio::time::timeout(Duration::from_secs(60), stream.try_next())
                    .await
                    .expect("tail batch within 60 s")
                    .unwrap()
                    .expect("the tail goes on");
                if let arrow_flight::decode::DecodedPayload::RecordBatch(b) = data.payload {
                    let received = now_us();
                    first.get_or_insert_with(Instant::now);
                    let sent = b.column(5).as_primitive::<Int64Type>();
                    latencies.extend(sent.values().iter().map(|s| received - s));
                    rows += b.num_rows() as i64;
                }
            }
            (rows, first.unwrap().elapsed(), latencies)
        }
    };
    // A ChangeStream: the decoded change rate a CDC consumer (such as a connector) sees.
    let mut changes = ChangeStream::start(
        &settings,
        StreamOptions {
            slot: stream_slot.clone(),
            publication: "hyperflight".into(),
            tables: vec![QualifiedName::new("public", "events")],
            start_lsn: None,
            stop_lsn: None,
        },
    )
    .await
    .unwrap();
    let decoded = async {
        let (mut rows, mut first) = (0i64, None);
        while rows < total {
            let batch = tokio::time::timeout(Duration::from_secs(60), changes.next())
                .await
                .expect("changes within 60 s")
                .unwrap()
                .expect("the stream goes on");
            first.get_or_insert_with(Instant::now);
            rows += batch.batch.num_rows() as i64;
            changes.acknowledge(batch.lsn);
        }
        (rows, first.unwrap().elapsed())
    };
    // The writer: one transaction every 10 ms, on a 2-connection pool so a slow commit does not
    // hold the next one.
    let writer = async {
        let per_tx = (rate / 100).max(1);
        let started = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut next = 0i64;
        while next < total {
            tick.tick().await;
            let n = per_tx.min(total - next);
            db.execute(
                "INSERT INTO public.events
                 SELECT now(), g, $3, random() FROM generate_series($1::int8, $1 + $2 - 1) g",
                &[&next, &n, &now_us()],
            )
            .await
            .unwrap();
            next += n;
        }
        started.elapsed()
    };
    let ((tail_rows, tail_time, mut latencies), (cs_rows, cs_time), write_time) =
        tokio::join!(tail, decoded, writer);
    latencies.sort_unstable();
    // The backlog: the same changes read from a slot nobody read while they were written, as
    // fast as they decode.
    let backlog = {
        let mut stream = ChangeStream::start(
            &settings,
            StreamOptions {
                slot: backlog_slot.clone(),
                publication: "hyperflight".into(),
                tables: vec![QualifiedName::new("public", "events")],
                start_lsn: None,
                stop_lsn: None,
            },
        )
        .await
        .unwrap();
        let started = Instant::now();
        let mut rows = 0i64;
        while rows < total {
            let batch = tokio::time::timeout(Duration::from_secs(60), stream.next())
                .await
                .expect("changes within 60 s")
                .unwrap()
                .expect("the stream goes on");
            rows += batch.batch.num_rows() as i64;
        }
        let elapsed = started.elapsed();
        stream.stop().await.unwrap();
        (rows, elapsed)
    };
    let airbyte_changes = airbyte.as_ref().map(AirbyteCdc::changes);
    println!(
        "writer:        {total} rows in {:.1} s = {:.0} rows/s (target {rate})",
        write_time.as_secs_f64(),
        total as f64 / write_time.as_secs_f64()
    );
    println!(
        "tail (Flight): {tail_rows} rows in {:.1} s = {:.0} rows/s",
        tail_time.as_secs_f64(),
        tail_rows as f64 / tail_time.as_secs_f64()
    );
    println!(
        "ChangeStream:  {cs_rows} rows in {:.1} s = {:.0} change records/s",
        cs_time.as_secs_f64(),
        cs_rows as f64 / cs_time.as_secs_f64()
    );
    println!(
        "backlog:       {} rows in {:.1} s = {:.0} change records/s (catching up, as fast as they decode)",
        backlog.0,
        backlog.1.as_secs_f64(),
        backlog.0 as f64 / backlog.1.as_secs_f64()
    );
    match airbyte_changes {
        Some((records, took)) => println!(
            "Airbyte CDC:   {records} records in {:.1} s = {:.0} records/s (a sync reading the writer's changes, process start to exit)",
            took.as_secs_f64(),
            records as f64 / took.as_secs_f64()
        ),
        None => println!("Airbyte CDC:   not measured (HYPERFLIGHT_AIRBYTE_BIN unset)"),
    }
    println!(
        "insert-to-tail-client latency: p50 {:.1} ms, p99 {:.1} ms (tail_max_latency_ms 50)",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99)
    );
    changes.stop().await.unwrap();
    drop(server);
    wait_until(Duration::from_secs(30), "slots released", || async {
        db.query_one(
            "SELECT NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = ANY ($1) AND active)",
            &[&vec![tail_slot.clone(), stream_slot.clone(), backlog_slot.clone(), airbyte_slot.clone()]],
        )
        .await
        .unwrap()
        .get(0)
    })
    .await;
    for slot in [&tail_slot, &stream_slot, &backlog_slot, &airbyte_slot] {
        cdc::teardown(&db, "hyperflight", slot).await.unwrap();
    }
    drop_database(&url).await;
}
