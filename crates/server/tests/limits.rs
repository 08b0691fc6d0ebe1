//! Metrics that count exactly, and the `max_concurrent_chunks` cap seen from the database: every
//! figure is compared with a number the test knows, never with "at least one".

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::FlightClient;
use futures::TryStreamExt;
use serde_json::Value;
use testkit::*;

/// The counters that move by exactly `want` between `before` and `after`.
fn assert_deltas(before: &Value, after: &Value, want: &[(&str, i64)]) {
    for (key, delta) in want {
        let (b, a) = (before[key].as_i64(), after[key].as_i64());
        assert!(
            b.is_some() && a.is_some(),
            "stats has no {key}: {before} / {after}"
        );
        assert_eq!(a.unwrap() - b.unwrap(), *delta, "{key}: {b:?} -> {a:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_cache_counts_one_miss_then_hits() {
    let server = TestServer::start(config(fixture_url())).await;
    let mut client = server.client().await;
    let before = action_json(&mut client, "stats").await;
    assert_eq!(before["discovery_cache_hits"], 0, "a fresh server");
    assert_eq!(before["discovery_cache_misses"], 0, "a fresh server");

    let info = client
        .get_flight_info(path("public", "devices"))
        .await
        .unwrap();
    let first = action_json(&mut client, "stats").await;
    assert_deltas(
        &before,
        &first,
        &[("discovery_cache_misses", 1), ("discovery_cache_hits", 0)],
    );
    client
        .get_flight_info(path("public", "devices"))
        .await
        .unwrap();
    let second = action_json(&mut client, "stats").await;
    assert_deltas(
        &first,
        &second,
        &[("discovery_cache_misses", 0), ("discovery_cache_hits", 1)],
    );
    // DoGet resolves its ticket against discovery: one more hit.
    read_ticket(&mut client, info.endpoint[0].ticket.clone().unwrap())
        .await
        .unwrap();
    let third = action_json(&mut client, "stats").await;
    assert_deltas(
        &second,
        &third,
        &[("discovery_cache_misses", 0), ("discovery_cache_hits", 1)],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_cache_every_discovery_is_a_miss() {
    let mut c = config(fixture_url());
    c.cache_ttl = None;
    let server = TestServer::start(c).await;
    let mut client = server.client().await;
    let before = action_json(&mut client, "stats").await;
    for _ in 0..2 {
        client
            .get_flight_info(path("public", "devices"))
            .await
            .unwrap();
    }
    let after = action_json(&mut client, "stats").await;
    assert_deltas(
        &before,
        &after,
        &[("discovery_cache_misses", 2), ("discovery_cache_hits", 0)],
    );
}

/// Reading the whole fixture moves rows, chunks and the duration histogram by exactly what SQL
/// says; once every stream is closed the gauges return to 0 (waited for: a stream's last message
/// reaches the client a moment before the server drops the stream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_read_counts_exactly_and_the_gauges_return_to_zero() {
    let server = TestServer::start(config(fixture_url())).await;
    let mut client = server.client().await;
    let info = client
        .get_flight_info(path("public", "metrics"))
        .await
        .unwrap();
    let chunks = info.endpoint.len() as i64;
    assert_eq!(chunks, FIXTURE_DAYS);
    let before = action_json(&mut client, "stats").await;
    let batches = read_all(&server, &info).await;
    assert_eq!(row_count(&batches) as i64, FIXTURE_ROWS);

    let settled = wait_until(
        Duration::from_secs(30),
        "active_streams, active_scans and memory_reserved_bytes back at 0",
        || {
            let server = &server;
            async move {
                let st = action_json(&mut server.client().await, "stats").await;
                st["active_streams"] == 0
                    && st["active_scans"] == 0
                    && st["memory_reserved_bytes"] == 0
            }
        },
    )
    .await;
    eprintln!("gauges at 0 {settled:?} after the last batch");
    let after = action_json(&mut client, "stats").await;
    assert_deltas(
        &before,
        &after,
        &[
            ("rows_streamed", FIXTURE_ROWS),
            ("chunks_streamed", chunks),
            ("chunk_stream_seconds_count", chunks),
        ],
    );
    assert!(after["bytes_streamed"].as_i64() > before["bytes_streamed"].as_i64());
    let errors = after["stream_errors"].as_object().unwrap();
    assert!(
        errors.values().all(|n| n == 0),
        "no stream failed: {errors:?}"
    );
}

/// "Every series is present from the start": one per code the README's error table names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_error_code_has_a_series_from_the_start() {
    let server = TestServer::start(config(fixture_url())).await;
    let st = action_json(&mut server.client().await, "stats").await;
    let errors = st["stream_errors"].as_object().unwrap();
    let missing: Vec<&str> = [
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "FAILED_PRECONDITION",
        "UNAUTHENTICATED",
        "UNAVAILABLE",
        "RESOURCE_EXHAUSTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "DEADLINE_EXCEEDED",
    ]
    .into_iter()
    .filter(|code| errors.get(*code) != Some(&Value::from(0)))
    .collect();
    assert!(
        missing.is_empty(),
        "stream_errors lacks {missing:?} before any error: {errors:?}"
    );
}

/// Scans the server runs, and COPYs in pg_stat_activity, sampled about every 10 ms.
struct Sampler {
    stop: Arc<AtomicBool>,
    max_copies: Arc<AtomicI64>,
    max_scans: Arc<AtomicI64>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(mut observer: FlightClient, db: tokio_postgres::Client, app: String) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let max_copies = Arc::new(AtomicI64::new(0));
        let max_scans = Arc::new(AtomicI64::new(0));
        let (s, c, n) = (stop.clone(), max_copies.clone(), max_scans.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                let copies: i64 = db
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity
                         WHERE application_name = $1 AND query LIKE 'COPY%' AND state = 'active'",
                        &[&app],
                    )
                    .await
                    .unwrap()
                    .get(0);
                c.fetch_max(copies, Ordering::Relaxed);
                let scans = action_json(&mut observer, "stats").await["active_scans"]
                    .as_i64()
                    .unwrap();
                n.fetch_max(scans, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        Sampler {
            stop,
            max_copies,
            max_scans,
            task,
        }
    }

    async fn finish(self) -> (i64, i64) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        (
            self.max_copies.load(Ordering::Relaxed),
            self.max_scans.load(Ordering::Relaxed),
        )
    }
}

/// Reads a ticket, sleeping `pause` after each batch: a slow client, so its scan stays open.
async fn read_slowly(
    mut client: FlightClient,
    ticket: arrow_flight::Ticket,
    pause: Duration,
) -> usize {
    let mut stream = client.do_get(ticket).await.unwrap();
    let mut rows = 0;
    while let Some(b) = stream.try_next().await.unwrap() {
        rows += b.num_rows();
        tokio::time::sleep(pause).await;
    }
    rows
}

/// Two slow readers per endpoint of a table split into six, with `max_concurrent_chunks = 2`: the cap
/// is reached (exactly 2 COPYs at once in pg_stat_activity) and never exceeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_chunks_is_reached_and_never_exceeded() {
    const MAX_SCANS: usize = 2;
    const ROWS: usize = 360_000;
    let db = pg(fixture_url()).await;
    // ~48 MB of heap in 8 MiB endpoints: 6 block ranges, each longer than any buffering.
    let s = padded_table(&db, "t_scancap", ROWS as i64, 100).await;
    let app = format!("hf_scancap_{}", std::process::id());
    let mut c = config(&format!("{}?application_name={app}", fixture_url()));
    c.max_concurrent_chunks = MAX_SCANS;
    c.plain_endpoint_bytes = 8 << 20;
    let server = TestServer::start(c).await;
    let mut client = server.client().await;
    let info = client.get_flight_info(path(&s, "big")).await.unwrap();
    assert!(
        info.endpoint.len() >= 3,
        "{} endpoints",
        info.endpoint.len()
    );

    let sampler = Sampler::start(server.client().await, pg(fixture_url()).await, app);
    // Two readers per endpoint: more readers than slots, and every one slow.
    let readers = info.endpoint.iter().chain(&info.endpoint).map(|e| {
        let ticket = e.ticket.clone().unwrap();
        let server = &server;
        async move { read_slowly(server.client().await, ticket, Duration::from_millis(50)).await }
    });
    let rows: usize = futures::future::join_all(readers).await.into_iter().sum();
    let (max_copies, max_scans) = sampler.finish().await;
    assert_eq!(rows, 2 * ROWS);
    assert_eq!(
        max_copies, MAX_SCANS as i64,
        "most COPYs at once in pg_stat_activity"
    );
    assert_eq!(max_scans, MAX_SCANS as i64, "most active_scans at once");
    drop_schema(&db, &s).await;
}
