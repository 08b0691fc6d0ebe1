//! Cached GetFlightInfo as a Rust client sees it (`scripts/bench.sh --latency`, next to
//! `bench_latency.py`'s pyarrow figure): the same request repeated on one connection, so every call
//! after the first is answered from the reused plan. Prints one row of the benchmark table.
//!
//! Arguments: `URL TABLE REPEAT` (e.g. `grpc://127.0.0.1:50051 public.tiny_chunks 50`).

use std::time::Instant;

use arrow_flight::FlightDescriptor;
use protocol::client::{ClientConfig, Connection};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, table, repeat] = args.as_slice() else {
        panic!("usage: gfi_bench URL TABLE REPEAT");
    };
    let repeat: usize = repeat.parse().expect("REPEAT is a count");
    let config = ClientConfig {
        url: url.clone(),
        ..ClientConfig::default()
    };
    let mut client = Connection::open(&config)
        .await
        .expect("server reachable")
        .client();
    let descriptor = FlightDescriptor::new_cmd(serde_json::json!({ "table": table }).to_string());
    let mut call = async || {
        let start = Instant::now();
        let info = client
            .get_flight_info(descriptor.clone())
            .await
            .expect("GetFlightInfo");
        (start.elapsed().as_secs_f64() * 1000.0, info.endpoint.len())
    };
    let (_, endpoints) = call().await;
    let mut ms = Vec::with_capacity(repeat);
    for _ in 0..repeat {
        ms.push(call().await.0);
    }
    ms.sort_by(f64::total_cmp);
    println!(
        "| GetFlightInfo, {endpoints} chunks, cached, Rust client (arrow-flight, median of {repeat}) | {:.2} ms | target <= 10 ms |",
        ms[ms.len() / 2]
    );
}
