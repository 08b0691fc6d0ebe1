//! The `max_memory_mb` budget binds, seen from outside: slow readers of wide rows against a 16 MiB
//! budget make scans wait for budget, the reserved bytes never pass it, and the process's RSS stays
//! within the budget plus a fixed overhead.
//!
//! The server is the real binary in a process of its own, so its RSS is the server's alone: the
//! clients' buffers and decoded batches are in the test's process.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use testkit::*;

const MAX_MEMORY_MB: u64 = 16;
const MAX_SCANS: usize = 2;
const READERS: usize = 4;
/// Rows of ~1 KB: a 4096-row batch is ~4 MiB decoded, so two scans, each with two batches queued
/// and a third reserved while it waits to be queued, want ~24 MiB: more than the budget.
const ROWS: i64 = 40_000;
const PAD: usize = 1_000;
/// Memory outside the budget, fixed by the settings and not by the number of readers or rows
/// (README, "Memory"):
/// - the batch each running scan is building: MAX_SCANS x ~4 MiB;
/// - a batch taken off the budget once encoded, while its IPC copy waits in gRPC send buffers:
///   about two per running stream, MAX_SCANS x 2 x ~4 MiB;
/// - allocator slack (freed memory glibc keeps in its arenas).
///
/// 64 MiB covers these with room; the budget itself is MAX_MEMORY_MB on top.
const FIXED_OVERHEAD_MB: u64 = 64;

/// A client whose HTTP/2 receive windows are 512 KiB, so what the server may push ahead of a slow
/// reader is small.
async fn small_window_client(addr: std::net::SocketAddr) -> arrow_flight::FlightClient {
    let channel = tonic::transport::Endpoint::new(format!("http://{addr}"))
        .unwrap()
        .initial_stream_window_size(512 << 10)
        .initial_connection_window_size(512 << 10)
        .connect()
        .await
        .unwrap();
    arrow_flight::FlightClient::new(channel)
}

/// The server binary on a free port, killed when dropped.
struct ServerProcess {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl ServerProcess {
    async fn start() -> ServerProcess {
        let port = free_port();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_hyperflight"))
            .args(["serve", "--database-url", fixture_url()])
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--metrics-listen",
                "",
            ])
            .args(["--batch-rows", &TEST_BATCH_ROWS.to_string()])
            .args(["--max-memory-mb", &MAX_MEMORY_MB.to_string()])
            .args(["--max-concurrent-chunks", &MAX_SCANS.to_string()])
            .env("HYPERFLIGHT_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("start the server binary");
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_until(
            Duration::from_secs(60),
            "the server listens",
            || async move { tokio::net::TcpStream::connect(addr).await.is_ok() },
        )
        .await;
        ServerProcess { child, addr }
    }

    async fn client(&self) -> arrow_flight::FlightClient {
        small_window_client(self.addr).await
    }

    fn rss_kib(&self) -> i64 {
        rss_kib(&format!("/proc/{}/status", self.child.id()))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rss_kib(status_file: &str) -> i64 {
    let status = std::fs::read_to_string(status_file).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("/proc/self/status has VmRSS");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_budget_binds_and_rss_stays_within_it() {
    let db = pg(fixture_url()).await;
    let s = padded_table(&db, "t_budget", ROWS, PAD).await;
    let server = ServerProcess::start().await;
    let mut client = server.client().await;
    let info = client.get_flight_info(path(&s, "big")).await.unwrap();
    assert_eq!(info.endpoint.len(), 1);
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let idle_kib = server.rss_kib();

    let stop = Arc::new(AtomicBool::new(false));
    let peak_rss = Arc::new(AtomicI64::new(idle_kib));
    let peak_reserved = Arc::new(AtomicI64::new(0));
    let sampler = {
        let (stop, peak_rss, peak_reserved) =
            (stop.clone(), peak_rss.clone(), peak_reserved.clone());
        let mut observer = server.client().await;
        let status_file = format!("/proc/{}/status", server.child.id());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                peak_rss.fetch_max(rss_kib(&status_file), Ordering::Relaxed);
                let st = action_json(&mut observer, "stats").await;
                peak_reserved.fetch_max(
                    st["memory_reserved_bytes"].as_i64().unwrap(),
                    Ordering::Relaxed,
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // Slow readers: 100 ms per batch, so every scan is held back by its client.
    let readers = (0..READERS).map(|_| {
        let (server, ticket) = (&server, ticket.clone());
        async move {
            let mut client = server.client().await;
            let mut stream = client.do_get(ticket).await.unwrap();
            let mut rows = 0;
            while let Some(b) = stream.try_next().await.unwrap() {
                rows += b.num_rows();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            rows
        }
    });
    let rows: usize = futures::future::join_all(readers).await.into_iter().sum();
    stop.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    assert_eq!(rows as i64, READERS as i64 * ROWS);

    let (peak_kib, reserved) = (
        peak_rss.load(Ordering::Relaxed),
        peak_reserved.load(Ordering::Relaxed),
    );
    eprintln!(
        "idle RSS {} MiB, peak RSS {} MiB, peak memory_reserved_bytes {:.1} MiB",
        idle_kib / 1024,
        peak_kib / 1024,
        reserved as f64 / (1 << 20) as f64
    );
    let budget = (MAX_MEMORY_MB << 20) as i64;
    assert!(reserved <= budget, "reserved {reserved} > budget {budget}");
    assert!(
        reserved > budget / 2,
        "the readers did fill the budget: peak reserved {reserved} of {budget}"
    );
    assert!(
        peak_kib - idle_kib <= ((MAX_MEMORY_MB + FIXED_OVERHEAD_MB) << 10) as i64,
        "RSS grew {} MiB (idle {} MiB, peak {} MiB): more than max_memory_mb {MAX_MEMORY_MB} + {FIXED_OVERHEAD_MB}",
        (peak_kib - idle_kib) / 1024,
        idle_kib / 1024,
        peak_kib / 1024
    );
    wait_until(
        Duration::from_secs(30),
        "memory_reserved_bytes back at 0",
        || {
            let server = &server;
            async move {
                action_json(&mut server.client().await, "stats").await["memory_reserved_bytes"] == 0
            }
        },
    )
    .await;

    // That a reservation waited for budget is known only to the server: it must count it.
    let st = action_json(&mut client, "stats").await;
    let waits = st
        .get("memory_reservation_waits_total")
        .and_then(|v| v.as_i64());
    drop_schema(&db, &s).await;
    assert!(
        waits.is_some_and(|n| n >= 1),
        "stats must report memory_reservation_waits_total (reservations that waited for budget), \
         at least 1 here; got {waits:?} in {st}"
    );
}
