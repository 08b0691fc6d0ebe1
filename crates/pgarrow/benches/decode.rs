//! Throughput of the binary COPY decoder on a `metrics`-shaped table.
//!
//! Builds an in-memory binary COPY stream of 2,000,000 rows of
//! `metrics(time timestamptz, device_id int4, sensor text, temperature float8, humidity float4,
//! status int2, reading int8, ok bool)` preceded by a `ctid`, with some NULLs, and pushes it one
//! row per `push` (as tokio-postgres' `copy_out` delivers it). Run with
//! `cargo bench --bench decode`.

use std::hint::black_box;
use std::time::Instant;

use pgarrow::{plan_column, BatchLimits, CopyDecoder, PgType};

const ROWS: u32 = 2_000_000;
const RUNS: usize = 3;

fn pg(oid: u32) -> PgType {
    PgType {
        oid,
        typmod: -1,
        elem_oid: None,
        is_enum: false,
    }
}

fn field(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        Some(v) => {
            out.extend_from_slice(&(v.len() as i32).to_be_bytes());
            out.extend_from_slice(v);
        }
    }
}

/// The header, then every row, then the trailer: (bytes, where each piece ends).
fn build_stream() -> (Vec<u8>, Vec<usize>) {
    let sensors = ["temperature-a", "humidity-b", "pressure-c", "co2-d"];
    let mut data = b"PGCOPY\n\xff\r\n\0".to_vec();
    data.extend_from_slice(&[0; 8]);
    let mut ends = vec![data.len()];
    for i in 0..ROWS {
        data.extend_from_slice(&9i16.to_be_bytes());
        let mut tid = (i / 100).to_be_bytes().to_vec();
        tid.extend_from_slice(&((i % 100 + 1) as u16).to_be_bytes());
        field(&mut data, Some(&tid));
        let time = 757_382_400_000_000i64 + i64::from(i) * 1_000_000;
        field(&mut data, Some(&time.to_be_bytes()));
        field(&mut data, Some(&((i % 1000) as i32).to_be_bytes()));
        let sensor = sensors[(i % 4) as usize].as_bytes();
        field(&mut data, (i % 50 != 0).then_some(sensor));
        let temperature = 20.0 + f64::from(i % 100) * 0.1;
        field(
            &mut data,
            (i % 20 != 0).then_some(&temperature.to_be_bytes()),
        );
        let humidity = 40.0f32 + (i % 30) as f32;
        field(&mut data, (i % 10 != 0).then_some(&humidity.to_be_bytes()));
        field(&mut data, Some(&((i % 3) as i16).to_be_bytes()));
        field(&mut data, Some(&(i64::from(i) * 7).to_be_bytes()));
        field(&mut data, (i % 7 != 0).then_some(&[u8::from(i % 2 == 0)]));
        ends.push(data.len());
    }
    data.extend_from_slice(&(-1i16).to_be_bytes());
    ends.push(data.len());
    (data, ends)
}

fn main() {
    let plans: Vec<_> = [
        ("time", 1184),
        ("device_id", 23),
        ("sensor", 25),
        ("temperature", 701),
        ("humidity", 700),
        ("status", 21),
        ("reading", 20),
        ("ok", 16),
    ]
    .into_iter()
    .map(|(name, oid)| plan_column(name, &pg(oid)))
    .collect();
    let (data, ends) = build_stream();
    let limits = BatchLimits {
        rows: 65_536,
        bytes: 64 << 20,
    };

    let mut best = f64::MAX;
    for run in 0..RUNS {
        let start = Instant::now();
        let mut decoder = CopyDecoder::new(&plans, true, limits);
        let (mut rows, mut batches, mut begin) = (0, 0, 0);
        for &end in &ends {
            decoder.push(&data[begin..end]).expect("valid stream");
            begin = end;
            while let Some(b) = decoder.next_batch() {
                rows += b.batch.num_rows();
                batches += 1;
                black_box(b);
            }
        }
        if let Some(b) = decoder.finish().expect("valid stream") {
            rows += b.batch.num_rows();
            batches += 1;
            black_box(b);
        }
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(rows, ROWS as usize);
        println!(
            "run {run}: {rows} rows in {batches} batches, {:.3} s: {:.2} M rows/s, {:.0} MB/s",
            secs,
            rows as f64 / secs / 1e6,
            data.len() as f64 / secs / 1e6,
        );
        best = best.min(secs);
    }
    println!(
        "best of {RUNS}: {:.2} M rows/s, {:.0} MB/s of COPY data ({:.1} MB, {} bytes/row)",
        f64::from(ROWS) / best / 1e6,
        data.len() as f64 / best / 1e6,
        data.len() as f64 / 1e6,
        data.len() / ROWS as usize,
    );
}
