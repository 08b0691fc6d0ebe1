//! A client that opens DoGet and stops reading must not hold a scan slot forever: after
//! `stalled_stream_seconds` its scan ends, the slot goes to others, and the stalled client, when it
//! reads again, gets the batches already queued and then ABORTED, from which it resumes with its
//! last ticket, losing and repeating nothing.

use std::time::{Duration, Instant};

use arrow::array::AsArray;
use arrow::datatypes::Int32Type;
use arrow_flight::Ticket;
use futures::TryStreamExt;
use testkit::*;

const ROWS: i64 = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_loses_its_slot_and_resumes_without_loss() {
    let db = pg(fixture_url()).await;
    let s = padded_table(&db, "t_stall", ROWS, 1000).await;
    let mut c = config(fixture_url());
    c.max_concurrent_chunks = 1;
    c.batch_rows = 1000;
    c.stall_timeout = Duration::from_secs(2);
    let server = TestServer::start(c).await;
    let mut client = server.client().await;
    let info = client.get_flight_info(path(&s, "big")).await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();

    // The stalled client: one batch, then nothing while it holds the stream open.
    let mut stalled = server.client().await;
    let mut stream = stalled.do_get(ticket).await.unwrap().into_inner();
    let mut ids: Vec<i32> = Vec::new();
    let mut last_ticket = None;
    let take = |data: arrow_flight::decode::DecodedFlightData,
                ids: &mut Vec<i32>,
                last: &mut Option<bytes::Bytes>| {
        if let arrow_flight::decode::DecodedPayload::RecordBatch(b) = data.payload {
            ids.extend(
                b.column(0)
                    .as_primitive::<Int32Type>()
                    .values()
                    .iter()
                    .copied(),
            );
            *last = Some(data.inner.app_metadata);
        }
    };
    while ids.is_empty() {
        let data = stream.try_next().await.unwrap().unwrap();
        take(data, &mut ids, &mut last_ticket);
    }

    // With the only scan slot held by the stalled client, another read still gets through.
    let probe = Instant::now();
    let devices = client
        .get_flight_info(path("public", "devices"))
        .await
        .unwrap();
    let read = tokio::time::timeout(
        Duration::from_secs(120),
        read_ticket(&mut client, devices.endpoint[0].ticket.clone().unwrap()),
    )
    .await
    .expect("a stalled client must not keep others from reading")
    .unwrap();
    assert_eq!(row_count(&read.batches), 100);
    eprintln!(
        "probe read with 1 stalled client and 1 slot: {:?}",
        probe.elapsed()
    );

    // The stalled client reads again: queued batches, then ABORTED (resume from the last ticket).
    let status = loop {
        match stream.try_next().await {
            Ok(Some(data)) => take(data, &mut ids, &mut last_ticket),
            Ok(None) => panic!("a stalled stream must not end as if complete"),
            Err(e) => break testkit::status(e),
        }
    };
    assert_eq!(status.code(), tonic::Code::Aborted, "{}", status.message());
    assert!(status.message().contains("resume"), "{}", status.message());
    let resumed = read_ticket(&mut stalled, Ticket::new(last_ticket.unwrap()))
        .await
        .unwrap();
    for b in &resumed.batches {
        ids.extend(
            b.column(0)
                .as_primitive::<Int32Type>()
                .values()
                .iter()
                .copied(),
        );
    }
    ids.sort_unstable();
    assert_eq!(
        ids,
        (1..=ROWS as i32).collect::<Vec<_>>(),
        "nothing lost, nothing repeated"
    );
    drop_schema(&db, &s).await;
}
