//! Resume tickets and ticket trust: an interrupted chunk read resumes with nothing lost and nothing
//! repeated; tampered, expired and unexposed tickets are refused; a rewritten or dropped chunk is
//! reported, never silently skipped or repeated.

use arrow_flight::{FlightInfo, Ticket};
use serde_json::Value;
use server::ticket::{TicketBody, TicketSigner};
use testkit::*;

const SECRET: &str = "resume-test-secret-0123456789";

fn config_with_secret(url: &str) -> server::config::Config {
    let mut c = config(url);
    c.ticket_secret = SECRET.as_bytes().to_vec();
    c
}

fn first_ticket(info: &FlightInfo) -> Ticket {
    info.endpoint[0].ticket.clone().unwrap()
}

fn chunk_of(info: &FlightInfo, i: usize) -> String {
    let m: Value = serde_json::from_slice(&info.endpoint[i].app_metadata).unwrap();
    m["chunk"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cut_point_resumes_exactly() {
    let db = pg(fixture_url()).await;
    let server = TestServer::start(config(fixture_url())).await;
    let mut client = server.client().await;
    let info = client
        .get_flight_info(path("public", "metrics"))
        .await
        .unwrap();
    let chunk = chunk_of(&info, 2);
    let ticket = info.endpoint[2].ticket.clone().unwrap();
    let want = metrics_rows_sql(&db, &metrics_canonical_sql(&chunk)).await;

    let full = read_ticket(&mut client, ticket.clone()).await.unwrap();
    let n = full.batches.len();
    assert!(n >= 5, "the chunk spans several batches ({n})");
    assert_same_rows(&metrics_rows(&full.batches), &want);
    assert!(
        full.resume.iter().all(|t| !t.is_empty()),
        "every batch carries a resume ticket"
    );

    for k in [0, 1, n / 2, n - 1, n] {
        let first = read_batches(&mut client, ticket.clone(), k).await.unwrap();
        assert_eq!(first.batches.len(), k);
        let rest_ticket = match first.resume.last() {
            Some(t) => Ticket::new(t.clone()),
            None => ticket.clone(),
        };
        let rest = read_ticket(&mut client, rest_ticket).await.unwrap();
        let mut union = first.batches;
        union.extend(rest.batches);
        let mut rows = metrics_rows(&union);
        let before = rows.len();
        rows.dedup();
        assert_eq!(before, rows.len(), "cut after {k} batches repeated a row");
        assert_same_rows(&rows, &want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_interruption_resumes_exactly() {
    let db = pg(fixture_url()).await;
    let server = TestServer::start(config(fixture_url())).await;
    let mut client = server.client().await;
    let info = client
        .get_flight_info(path("public", "metrics"))
        .await
        .unwrap();
    let want = metrics_rows_sql(&db, &metrics_canonical_sql(&chunk_of(&info, 0))).await;

    let a = read_batches(&mut client, first_ticket(&info), 2)
        .await
        .unwrap();
    let b = read_batches(&mut client, Ticket::new(a.resume[1].clone()), 2)
        .await
        .unwrap();
    let c = read_ticket(&mut client, Ticket::new(b.resume[1].clone()))
        .await
        .unwrap();
    let all: Vec<_> = a
        .batches
        .into_iter()
        .chain(b.batches)
        .chain(c.batches)
        .collect();
    assert_same_rows(&metrics_rows(&all), &want);
    assert_eq!(row_count(&all), want.len(), "no row twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_expired_and_foreign_tickets_are_refused() {
    let server = TestServer::start(config_with_secret(fixture_url())).await;
    let mut client = server.client().await;
    let info = client
        .get_flight_info(path("public", "metrics"))
        .await
        .unwrap();
    let good = first_ticket(&info).ticket.to_vec();

    for i in [0, good.len() / 2, good.len() - 1] {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        let e = read_ticket(&mut client, Ticket::new(bad))
            .await
            .err()
            .unwrap();
        assert_eq!(code(e), tonic::Code::InvalidArgument, "flip at {i}");
    }

    let signer = TicketSigner::new(SECRET.as_bytes().to_vec());
    let body = TicketBody {
        table_schema: "public".into(),
        table_name: "devices".into(),
        scan_schema: "public".into(),
        scan_name: "devices".into(),
        expires_at_ms: 1_000,
        ..TicketBody::current()
    };
    let e = read_ticket(&mut client, Ticket::new(signer.sign(&body)))
        .await
        .err()
        .unwrap();
    let s = status(e);
    assert_eq!(s.code(), tonic::Code::InvalidArgument);
    assert!(s.message().contains("expired"), "{}", s.message());

    // Validly signed, but naming relations discovery does not expose.
    let later = i64::MAX;
    let catalog_table = TicketBody {
        table_schema: "pg_catalog".into(),
        table_name: "pg_authid".into(),
        scan_schema: "pg_catalog".into(),
        scan_name: "pg_authid".into(),
        expires_at_ms: later,
        ..body.clone()
    };
    let e = read_ticket(&mut client, Ticket::new(signer.sign(&catalog_table)))
        .await
        .err()
        .unwrap();
    assert_eq!(code(e), tonic::Code::NotFound);
    let smuggled_scan = TicketBody {
        table_schema: "public".into(),
        table_name: "metrics".into(),
        scan_schema: "pg_catalog".into(),
        scan_name: "pg_authid".into(),
        expires_at_ms: later,
        ..body.clone()
    };
    let e = read_ticket(&mut client, Ticket::new(signer.sign(&smuggled_scan)))
        .await
        .err()
        .unwrap();
    assert_eq!(code(e), tonic::Code::NotFound);
    let plain_smuggle = TicketBody {
        scan_schema: "pg_catalog".into(),
        scan_name: "pg_authid".into(),
        expires_at_ms: later,
        ..body
    };
    let e = read_ticket(&mut client, Ticket::new(signer.sign(&plain_smuggle)))
        .await
        .err()
        .unwrap();
    assert_eq!(code(e), tonic::Code::InvalidArgument);

    // The server is fine afterwards.
    assert!(read_ticket(&mut client, first_ticket(&info)).await.is_ok());
}

/// Reads one batch of the first chunk of a private hypertable, runs `rewrite` (with `{chunk}` and
/// `{index}` replaced by that chunk and its time index), and requires the resume ticket to be
/// refused with FAILED_PRECONDITION; a fresh plan then reads the table as SQL sees it.
async fn rewrite_between_batches_is_failed_precondition(prefix: &str, rewrite: &str) {
    let db = pg(fixture_url()).await;
    let schema = format!("{prefix}_{}", std::process::id());
    private_hypertable(&db, &schema, 2).await;
    let server = TestServer::start(config(fixture_url())).await;
    let mut client = server.client().await;
    let info = client.get_flight_info(path(&schema, "m")).await.unwrap();
    assert_eq!(info.endpoint.len(), 2);
    let chunk = chunk_of(&info, 0);
    let index: String = db
        .query_one(
            "SELECT quote_ident(c.relname) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
             WHERE i.indrelid = $1::text::regclass",
            &[&chunk],
        )
        .await
        .unwrap()
        .get(0);

    let first = read_batches(&mut client, first_ticket(&info), 1)
        .await
        .unwrap();
    // The rewrite waits for the cancelled scan to release its lock.
    let sql = rewrite
        .replace("{chunk}", &chunk)
        .replace("{index}", &index);
    let before = relfilenode_of(&db, &chunk).await;
    db.batch_execute(&sql).await.unwrap();
    assert_ne!(
        relfilenode_of(&db, &chunk).await,
        before,
        "{sql} gave the chunk new storage"
    );
    let e = read_ticket(&mut client, Ticket::new(first.resume[0].clone()))
        .await
        .err()
        .unwrap();
    let s = status(e);
    assert_eq!(
        s.code(),
        tonic::Code::FailedPrecondition,
        "after {sql}: {s:?}"
    );
    assert!(s.message().contains("re-plan"), "{}", s.message());
    // Re-planning reads the rewritten chunk completely.
    action_json(&mut client, "refresh").await;
    let info = client.get_flight_info(path(&schema, "m")).await.unwrap();
    let want = metrics_rows_sql(&db, &metrics_canonical_sql(&format!("{schema}.m"))).await;
    assert_same_rows(&metrics_rows(&read_all(&server, &info).await), &want);
    drop_schema(&db, &schema).await;
}

async fn relfilenode_of(db: &tokio_postgres::Client, relation: &str) -> u32 {
    db.query_one(
        "SELECT relfilenode FROM pg_class WHERE oid = $1::text::regclass",
        &[&relation],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vacuum_full_between_batches_is_failed_precondition() {
    rewrite_between_batches_is_failed_precondition("t_vacuum", "VACUUM FULL {chunk}").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_between_batches_is_failed_precondition() {
    rewrite_between_batches_is_failed_precondition("t_cluster", "CLUSTER {chunk} USING {index}")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_of_a_chunk_between_batches_is_failed_precondition() {
    rewrite_between_batches_is_failed_precondition("t_truncate", "TRUNCATE {chunk}").await;
}

/// The same for a plain table: its tickets are bound to its storage too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_of_a_plain_table_between_batches_is_failed_precondition() {
    let db = pg(fixture_url()).await;
    let s = padded_table(&db, "t_truncate_plain", 20_000, 100).await;
    let server = TestServer::start(config(fixture_url())).await;
    let mut client = server.client().await;
    let info = client.get_flight_info(path(&s, "big")).await.unwrap();
    assert_eq!(info.endpoint.len(), 1);
    let first = read_batches(&mut client, first_ticket(&info), 1)
        .await
        .unwrap();
    assert_eq!(
        row_count(&first.batches),
        TEST_BATCH_ROWS,
        "more batches follow"
    );
    let table = format!("{s}.big");
    let before = relfilenode_of(&db, &table).await;
    db.batch_execute(&format!("TRUNCATE {table}"))
        .await
        .unwrap();
    assert_ne!(relfilenode_of(&db, &table).await, before);
    let e = read_ticket(&mut client, Ticket::new(first.resume[0].clone()))
        .await
        .err()
        .unwrap();
    let st = status(e);
    assert_eq!(st.code(), tonic::Code::FailedPrecondition, "{st:?}");
    drop_schema(&db, &s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_chunk_is_not_found_for_that_endpoint_only() {
    let db = pg(fixture_url()).await;
    let schema = format!("t_drop_{}", std::process::id());
    private_hypertable(&db, &schema, 3).await;
    let mut c = config(fixture_url());
    c.cache_ttl = None; // DoGet sees the drop at once
    let server = TestServer::start(c).await;
    let mut client = server.client().await;
    let info = client.get_flight_info(path(&schema, "m")).await.unwrap();
    assert_eq!(info.endpoint.len(), 3);
    let dropped = chunk_of(&info, 0);
    let chunks = || {
        let (db, q) = (
            &db,
            format!("SELECT c::text FROM show_chunks('{schema}.m') c"),
        );
        async move {
            db.query(&q, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<String>>()
        }
    };
    assert!(chunks().await.contains(&dropped), "{dropped} is a chunk");

    // Exactly the planned chunk goes, by the name the plan gave.
    db.batch_execute(&format!("DROP TABLE {dropped}"))
        .await
        .unwrap();
    let left = chunks().await;
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(!left.contains(&dropped));
    let e = read_ticket(&mut client, first_ticket(&info))
        .await
        .err()
        .unwrap();
    let s = status(e);
    assert_eq!(s.code(), tonic::Code::NotFound);
    assert!(s.message().contains(&dropped), "{}", s.message());
    let mut rest = Vec::new();
    for e in &info.endpoint[1..] {
        rest.extend(
            read_ticket(&mut client, e.ticket.clone().unwrap())
                .await
                .unwrap()
                .batches,
        );
    }
    let want = metrics_rows_sql(&db, &metrics_canonical_sql(&format!("{schema}.m"))).await;
    assert_same_rows(&metrics_rows(&rest), &want);
    drop_schema(&db, &schema).await;
}

/// A window that cuts through a chunk must still come in ctid order, or "rows after this ctid"
/// would repeat some rows and skip others when resumed (the planner likes the hypertable's
/// `time DESC` index for such a window).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_inside_a_chunk_resumes_exactly() {
    let db = pg(fixture_url()).await;
    let mut c = config(fixture_url());
    c.batch_rows = 500;
    let server = TestServer::start(c).await;
    let mut client = server.client().await;
    // About 12% of the chunk: narrow enough for the planner to pick the index.
    let (start, end) = ("2026-10-03T06:00:00Z", "2026-10-03T08:52:06.417045Z");
    let info = client
        .get_flight_info(arrow_flight::FlightDescriptor::new_cmd(
            serde_json::json!({"table": "public.metrics", "start": start, "end": end}).to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(info.endpoint.len(), 1);
    let want = metrics_rows_sql(
        &db,
        &format!(
            "{} WHERE time >= '{start}' AND time < '{end}'",
            metrics_canonical_sql("public.metrics")
        ),
    )
    .await;
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let first = read_batches(&mut client, ticket, 1).await.unwrap();
    let rest = read_ticket(&mut client, Ticket::new(first.resume[0].clone()))
        .await
        .unwrap();
    assert!(!rest.batches.is_empty(), "the window spans several batches");
    let all: Vec<_> = first.batches.into_iter().chain(rest.batches).collect();
    assert_same_rows(&metrics_rows(&all), &want);
}
