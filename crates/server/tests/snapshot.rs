//! `consistent_snapshot`: with a writer inserting into several chunks during a parallel read, the union
//! of the endpoints equals the table as of the exported snapshot — checked against rows read by this
//! test inside that same snapshot.

use arrow_flight::{FlightDescriptor, Ticket};
use prost::Message;
use serde_json::json;
use server::ticket::proto::SignedTicket;
use server::ticket::TicketBody;
use testkit::*;

fn snapshot_of(ticket: &Ticket) -> String {
    let signed = SignedTicket::decode(ticket.ticket.clone()).unwrap();
    TicketBody::decode(signed.body.as_slice()).unwrap().snapshot
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_read_under_writes_equals_the_snapshot() {
    let url = fixture_url();
    let db = pg(url).await;
    let schema = format!("t_snap_{}", std::process::id());
    private_hypertable(&db, &schema, 3).await;
    let server = TestServer::start(config(url)).await;
    let mut client = server.client().await;

    let info = client
        .get_flight_info(FlightDescriptor::new_cmd(
            json!({"table": [&schema, "m"], "consistent_snapshot": true}).to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(info.endpoint.len(), 3);
    let id = snapshot_of(info.endpoint[0].ticket.as_ref().unwrap());
    assert!(!id.is_empty());
    for e in &info.endpoint {
        assert_eq!(
            snapshot_of(e.ticket.as_ref().unwrap()),
            id,
            "one snapshot for all endpoints"
        );
    }
    assert_eq!(action_json(&mut client, "stats").await["held_snapshots"], 1);

    // What the table looked like in that snapshot, read by the test itself.
    let mut check = pg(url).await;
    let txn = check
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .unwrap();
    txn.batch_execute(&format!("SET TRANSACTION SNAPSHOT '{id}'"))
        .await
        .unwrap();
    let want = metrics_rows_sql(&txn, &metrics_canonical_sql(&format!("{schema}.m"))).await;
    txn.commit().await.unwrap();

    // A writer adds rows to every chunk before and while the endpoints are read.
    let writer_db = pg(url).await;
    let insert = format!(
        "INSERT INTO {schema}.m (time, device_id, sensor, reading)
         SELECT timestamptz '2026-10-01 00:00:00+00' + (g * 7 % 72) * interval '1 hour' + interval '17 seconds',
                -1, 'late', g FROM generate_series(1, 300) g"
    );
    writer_db.batch_execute(&insert).await.unwrap();
    let writer = tokio::spawn(async move {
        for _ in 0..10 {
            writer_db.batch_execute(&insert).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    });
    let got = metrics_rows(&read_all(&server, &info).await);
    writer.await.unwrap();

    let now: i64 = db
        .query_one(&format!("SELECT count(*) FROM {schema}.m"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        now as usize,
        want.len() + 11 * 300,
        "the writer really wrote"
    );
    assert_same_rows(&got, &want);

    // Every endpoint was read to its end: the snapshot is released, its tickets are void.
    assert_eq!(action_json(&mut client, "stats").await["held_snapshots"], 0);
    let e = read_ticket(&mut client, info.endpoint[0].ticket.clone().unwrap())
        .await
        .err()
        .unwrap();
    assert_eq!(code(e), tonic::Code::FailedPrecondition);
    drop_schema(&db, &schema).await;
}

/// At most 8 consistent snapshots are held: the 9th plan is RESOURCE_EXHAUSTED, and once one plan
/// has been read to its end (its snapshot released) a new one is granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ninth_held_snapshot_is_resource_exhausted() {
    let server = TestServer::start(config(fixture_url())).await;
    let mut client = server.client().await;
    let consistent = || {
        FlightDescriptor::new_cmd(
            json!({"table": "public.devices", "consistent_snapshot": true}).to_string(),
        )
    };
    let mut held = Vec::new();
    // The README's figure.
    const MAX_HELD: usize = 8;
    for i in 0..MAX_HELD {
        let info = client
            .get_flight_info(consistent())
            .await
            .unwrap_or_else(|e| panic!("snapshot {}: {e}", i + 1));
        held.push(info);
    }
    assert_eq!(action_json(&mut client, "stats").await["held_snapshots"], 8);

    let e = client.get_flight_info(consistent()).await.unwrap_err();
    assert_eq!(code(e), tonic::Code::ResourceExhausted);
    assert_eq!(
        action_json(&mut client, "stats").await["held_snapshots"],
        8,
        "the refused plan holds nothing"
    );
    // A plan without a snapshot is not limited.
    client
        .get_flight_info(path("public", "devices"))
        .await
        .unwrap();

    let done = read_all(&server, &held.pop().unwrap()).await;
    assert_eq!(row_count(&done), 100);
    assert_eq!(action_json(&mut client, "stats").await["held_snapshots"], 7);
    client.get_flight_info(consistent()).await.unwrap();
    assert_eq!(action_json(&mut client, "stats").await["held_snapshots"], 8);
}

/// A client that plans a consistent read and never reads cannot hold the snapshot (and vacuum)
/// for the tickets' lifetime: unused for `snapshot_idle_seconds`, it is released, and its tickets
/// then say FAILED_PRECONDITION (plan again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unused_snapshot_is_released_after_the_idle_limit() {
    let mut c = config(fixture_url());
    c.snapshot_idle = std::time::Duration::from_secs(1);
    let server = TestServer::start(c).await;
    let mut client = server.client().await;
    let info = client
        .get_flight_info(FlightDescriptor::new_cmd(
            json!({"table": "public.devices", "consistent_snapshot": true}).to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(action_json(&mut client, "stats").await["held_snapshots"], 1);
    wait_until(
        std::time::Duration::from_secs(30),
        "the idle snapshot released",
        || {
            let server = &server;
            async move {
                action_json(&mut server.client().await, "stats").await["held_snapshots"] == 0
            }
        },
    )
    .await;
    let Err(e) = client
        .do_get(info.endpoint[0].ticket.clone().unwrap())
        .await
    else {
        panic!("a released snapshot cannot be read");
    };
    let e = status(e);
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{}", e.message());
}
