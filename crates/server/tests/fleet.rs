//! Scale-out: servers sharing a ticket secret over a primary and its streaming hot standby
//! (`cluster.sh replica`). Endpoints list every server, rotated so a table's endpoints spread over
//! them; a standby that has not replayed the plan's WAL answers UNAVAILABLE and the client moves on;
//! a server killed mid-read is left for the next location through the resume ticket. The tests
//! share the standby and one pauses its replay: they run one at a time (`.config/nextest.toml`).

use std::collections::{BTreeMap, HashSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int32Type;
use arrow_flight::FlightInfo;
use protocol::client::{
    read_endpoint, ClientConfig, Connection, ReadError, ReadEvent, RetryPolicy,
};
use server::config::{Config, FleetSettings};
use testkit::*;
use tokio::net::TcpListener;

const SECRET: &[u8] = b"a ticket secret the fleet shares";

/// A server of the fleet: `database` its database, `this` its own URL, the others as peers. On a
/// standby it waits 5 s for replay (other tests write to the primary meanwhile).
fn member(database: &str, this: &str, peers: &[&str], replica_peers: &[&str]) -> Config {
    let mut c = config(database);
    c.ticket_secret = SECRET.to_vec();
    c.fleet = FleetSettings {
        advertise_url: Some(this.to_string()),
        peers: peers.iter().map(|s| s.to_string()).collect(),
        replica_peers: replica_peers.iter().map(|s| s.to_string()).collect(),
        replay_wait: Duration::from_secs(5),
    };
    c
}

async fn listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("grpc://{}", l.local_addr().unwrap());
    (l, url)
}

fn connection(url: &str) -> Connection {
    Connection::lazy(&ClientConfig {
        url: url.to_string(),
        ..ClientConfig::default()
    })
    .unwrap()
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        retries: 8,
        backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
        stall: Some(Duration::from_secs(60)),
    }
}

/// Every endpoint of `info` read through `via`'s location failover; the batches, and the retries
/// (their codes and the location each went to).
async fn read_info(
    via: &Connection,
    info: &FlightInfo,
) -> (Vec<RecordBatch>, Vec<(String, usize)>) {
    let mut batches = Vec::new();
    let mut retries = Vec::new();
    for e in &info.endpoint {
        let mut clients = via.endpoint_clients(e).unwrap();
        let ticket = e.ticket.clone().unwrap().ticket;
        read_endpoint(&mut clients, ticket, &policy(), |event| {
            match event {
                // Every batch of a heap chunk carries its ticket: a retry resumes after it.
                ReadEvent::Batch { batch, resume, .. } => {
                    assert!(resume.is_some(), "heap chunks carry resume tickets");
                    batches.push(batch);
                }
                ReadEvent::Retry {
                    error, location, ..
                } => retries.push((error.code.to_string(), location)),
            }
            Ok::<(), ReadError>(())
        })
        .await
        .unwrap();
    }
    (batches, retries)
}

fn first_locations(info: &FlightInfo) -> BTreeMap<String, usize> {
    let mut spread = BTreeMap::new();
    for e in &info.endpoint {
        *spread.entry(e.location[0].uri.clone()).or_default() += 1;
    }
    spread
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_spread_over_a_primary_and_a_standby_server_and_read_exactly() {
    let primary = pg(fixture_url()).await;
    let standby = pg(&replica_database_url(FIXTURE_DB)).await;
    wait_replayed(&primary, &standby).await;
    let ((la, a), (lb, b)) = (listener().await, listener().await);
    let _sa = TestServer::start_on(la, member(fixture_url(), &a, &[], &[&b]));
    let _sb = TestServer::start_on(
        lb,
        member(&replica_database_url(FIXTURE_DB), &b, &[&a], &[]),
    );

    let info = connection(&a)
        .client()
        .get_flight_info(path("public", "metrics"))
        .await
        .unwrap();
    assert_eq!(info.endpoint.len(), FIXTURE_DAYS as usize);
    for (i, e) in info.endpoint.iter().enumerate() {
        let uris: Vec<&str> = e.location.iter().map(|l| l.uri.as_str()).collect();
        let expected = if i % 2 == 0 { [&*a, &*b] } else { [&*b, &*a] };
        assert_eq!(uris, expected, "endpoint {i}: every server, rotated");
    }
    let spread = first_locations(&info);
    eprintln!("endpoint distribution (first location): {spread:?}");
    assert_eq!(
        (spread[&a], spread[&b]),
        (4, 3),
        "7 endpoints over 2 servers"
    );

    // Each endpoint read from its first location: the standby's server reads the primary's tickets.
    let (batches, retries) = read_info(&connection(&a), &info).await;
    assert_eq!(retries, [], "no location failed");
    let sql = metrics_rows_sql(&primary, &metrics_canonical_sql("public.metrics")).await;
    assert_same_rows(&metrics_rows(&batches), &sql);
    for url in [&a, &b] {
        let stats = action_json(&mut connection(url).client(), "stats").await;
        let chunks = stats["chunks_streamed"].as_u64().unwrap();
        assert!(chunks >= 3, "{url} streamed {chunks} chunks");
    }

    // And the other way: a plan made on the standby's server, read on the primary's.
    let info = connection(&b)
        .client()
        .get_flight_info(path("public", "metrics"))
        .await
        .unwrap();
    let mut on_a = connection(&a).client();
    let mut rows = Vec::new();
    for e in &info.endpoint {
        rows.extend(
            read_ticket(&mut on_a, e.ticket.clone().unwrap())
                .await
                .unwrap()
                .batches,
        );
    }
    assert_same_rows(&metrics_rows(&rows), &sql);

    // A consistent snapshot lives in the planning server's session: its endpoints list no other
    // location, and another server of the fleet refuses its tickets, saying why.
    let consistent = arrow_flight::FlightDescriptor::new_cmd(
        r#"{"table": "public.metrics", "consistent_snapshot": true}"#,
    );
    let pinned = connection(&a)
        .client()
        .get_flight_info(consistent)
        .await
        .unwrap();
    assert!(pinned.endpoint.iter().all(|e| e.location.is_empty()));
    let refused = read_ticket(
        &mut connection(&b).client(),
        pinned.endpoint[0].ticket.clone().unwrap(),
    )
    .await
    .err()
    .unwrap();
    let refused = status(refused);
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("not held by this server"),
        "{}",
        refused.message()
    );

    // A server with another secret refuses the fleet's tickets.
    let mut stranger = config(fixture_url());
    stranger.ticket_secret = b"another secret, another fleet".to_vec();
    let stranger = TestServer::start(stranger).await;
    let e = read_ticket(
        &mut stranger.client().await,
        info.endpoint[0].ticket.clone().unwrap(),
    )
    .await
    .err()
    .unwrap();
    assert_eq!(code(e), tonic::Code::InvalidArgument);
}

async fn count(db: &tokio_postgres::Client, sql: String) -> i64 {
    db.query_one(&sql, &[]).await.unwrap().get(0)
}

/// Resumes replay on the standby when dropped, however the test ends.
struct ReplayPaused;

impl ReplayPaused {
    async fn pause(standby: &tokio_postgres::Client) -> ReplayPaused {
        standby
            .batch_execute("SELECT pg_wal_replay_pause()")
            .await
            .unwrap();
        ReplayPaused
    }
}

impl Drop for ReplayPaused {
    fn drop(&mut self) {
        let _ = psql(replica_url())
            .args(["-c", "SELECT pg_wal_replay_resume()"])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_with_replay_paused_never_serves_rows_older_than_the_plan() {
    let primary = pg(fixture_url()).await;
    let standby = pg(&replica_database_url(FIXTURE_DB)).await;
    let schema = format!("fleet_pause_{}", std::process::id());
    private_hypertable(&primary, &schema, 2).await;
    wait_replayed(&primary, &standby).await;
    let table = format!("{schema}.m");
    let before = count(&standby, format!("SELECT count(*) FROM {table}")).await;

    let paused = ReplayPaused::pause(&standby).await;
    // New rows in both chunks, after the standby stopped replaying.
    primary
        .batch_execute(&format!(
            "INSERT INTO {table} (time, device_id, reading) \
             SELECT timestamptz '2026-10-01 00:00:00+00' + g * interval '1 minute', -1, g \
             FROM generate_series(0, 2 * 1440 - 1) g"
        ))
        .await
        .unwrap();
    let after = count(&primary, format!("SELECT count(*) FROM {table}")).await;
    assert_eq!(after, before + 2 * 1440);
    assert_eq!(
        count(&standby, format!("SELECT count(*) FROM {table}")).await,
        before,
        "replay is paused"
    );

    let ((la, a), (lb, b)) = (listener().await, listener().await);
    let _sa = TestServer::start_on(la, member(fixture_url(), &a, &[], &[&b]));
    let mut behind = member(&replica_database_url(FIXTURE_DB), &b, &[&a], &[]);
    behind.fleet.replay_wait = Duration::from_millis(300);
    let _sb = TestServer::start_on(lb, behind);
    let descriptor = path(&schema, "m");
    let info = connection(&a)
        .client()
        .get_flight_info(descriptor.clone())
        .await
        .unwrap();
    assert_eq!(info.endpoint.len(), 2);

    // The standby's server refuses every ticket: its rows are older than the plan.
    let mut on_b = connection(&b).client();
    for e in &info.endpoint {
        let err = read_ticket(&mut on_b, e.ticket.clone().unwrap())
            .await
            .err()
            .expect("a standby behind the plan must not answer");
        let status = status(err);
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status.message().contains("standby"), "{}", status.message());
    }
    // Through failover the read is exact: endpoint 1 starts at the standby and moves on.
    let (batches, retries) = read_info(&connection(&a), &info).await;
    assert_eq!(row_count(&batches) as i64, after);
    assert_eq!(retries, [("UNAVAILABLE".to_string(), 1)]);
    let sql = metrics_rows_sql(&primary, &metrics_canonical_sql(&table)).await;
    assert_same_rows(&metrics_rows(&batches), &sql);

    // Replay resumed, the standby's server serves the same tickets, new rows included.
    drop(paused);
    wait_replayed(&primary, &standby).await;
    let mut rows = Vec::new();
    for e in &info.endpoint {
        rows.extend(
            read_ticket(&mut on_b, e.ticket.clone().unwrap())
                .await
                .unwrap()
                .batches,
        );
    }
    assert_same_rows(&metrics_rows(&rows), &sql);
    drop_schema(&primary, &schema).await;
}

/// The server binary against the fixture, on `url`'s port; SIGKILLed when dropped.
struct Killable(std::process::Child);

impl Killable {
    fn start(url: &str, peers: &str) -> Killable {
        let listen = url.trim_start_matches("grpc://");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hyperflight"));
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("HYPERFLIGHT_")) {
            cmd.env_remove(k);
        }
        cmd.args(["serve", "--database-url", fixture_url(), "--listen", listen])
            .args(["--metrics-listen", "", "--batch-rows", "1000"])
            .args(["--advertise-url", url, "--peers", peers])
            .env(
                "HYPERFLIGHT_TICKET_SECRET",
                std::str::from_utf8(SECRET).unwrap(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Killable(cmd.spawn().unwrap())
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Killable {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_read_is_left_for_the_next_location() {
    let db = pg(fixture_url()).await;
    // Far more than HTTP/2 windows and socket buffers hold, so the kill lands mid-stream.
    let schema = padded_table(&db, "fleet_kill", 300_000, 120).await;
    let a = format!("grpc://127.0.0.1:{}", free_port());
    let (lb, b) = listener().await;
    let mut killed = Killable::start(&a, &b);
    let _sb = TestServer::start_on(lb, member(fixture_url(), &b, &[&a], &[]));

    let via = connection(&a);
    let mut info = None;
    for _ in 0..200 {
        match via.client().get_flight_info(path(&schema, "big")).await {
            Ok(i) => {
                info = Some(i);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let info = info.expect("the killable server comes up");
    assert_eq!(info.endpoint.len(), 1);
    let endpoint = &info.endpoint[0];
    assert_eq!(
        endpoint.location[0].uri, a,
        "endpoint 0 starts at the planning server"
    );

    let mut clients = via.endpoint_clients(endpoint).unwrap();
    let mut ids: Vec<i32> = Vec::new();
    let mut pending: Vec<i32> = Vec::new();
    let mut retries = Vec::new();
    read_endpoint(
        &mut clients,
        endpoint.ticket.clone().unwrap().ticket,
        &policy(),
        |event| {
            match event {
                ReadEvent::Batch { batch, resume, .. } => {
                    pending.extend(batch.column(0).as_primitive::<Int32Type>().values());
                    // Rows count once their ticket arrived; a retry resumes after that.
                    if resume.is_some() {
                        ids.append(&mut pending);
                    }
                    if ids.len() >= 5_000 && retries.is_empty() {
                        killed.kill();
                    }
                }
                ReadEvent::Retry {
                    error,
                    resumed,
                    location,
                    ..
                } => {
                    assert!(resumed, "the retry continues from the resume ticket");
                    pending.clear();
                    retries.push((error.code, location));
                }
            }
            Ok::<(), ReadError>(())
        },
    )
    .await
    .unwrap();
    ids.append(&mut pending);
    assert!(!retries.is_empty(), "the kill cut the stream");
    assert!(
        retries.iter().all(|&(_, l)| l == 1),
        "every retry went to the surviving server: {retries:?}"
    );
    let distinct: HashSet<i32> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), ids.len(), "no row repeated");
    let (n, sum): (i64, i64) = {
        let r = db
            .query_one(
                &format!("SELECT count(*), sum(id)::int8 FROM {schema}.big"),
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(ids.len() as i64, n, "no row lost");
    assert_eq!(ids.iter().map(|&i| i as i64).sum::<i64>(), sum);
    drop_schema(&db, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_conflict_on_the_standby_is_resumed_elsewhere_exactly() {
    let primary = pg(fixture_url()).await;
    let standby = pg(&replica_database_url(FIXTURE_DB)).await;
    let schema = padded_table(&primary, "fleet_conflict", 300_000, 120).await;
    wait_replayed(&primary, &standby).await;
    let ((la, a), (lb, b)) = (listener().await, listener().await);
    let mut on_standby = member(&replica_database_url(FIXTURE_DB), &b, &[&a], &[]);
    on_standby.batch_rows = 1_000;
    let _sa = TestServer::start_on(la, member(fixture_url(), &a, &[], &[&b]));
    let _sb = TestServer::start_on(lb, on_standby);

    // Planned on the standby's server: endpoint 0 starts there.
    let via = connection(&b);
    let info = via
        .client()
        .get_flight_info(path(&schema, "big"))
        .await
        .unwrap();
    let endpoint = &info.endpoint[0];
    assert_eq!(endpoint.location[0].uri, b);
    let mut clients = via.endpoint_clients(endpoint).unwrap();
    let (mut ids, mut pending, mut retries) = (Vec::<i32>::new(), Vec::<i32>::new(), Vec::new());
    let mut locked = false;
    read_endpoint(
        &mut clients,
        endpoint.ticket.clone().unwrap().ticket,
        &policy(),
        |event| {
            match event {
                ReadEvent::Batch { batch, resume, .. } => {
                    pending.extend(batch.column(0).as_primitive::<Int32Type>().values());
                    if resume.is_some() {
                        ids.append(&mut pending);
                    }
                    if !locked {
                        // An ACCESS EXCLUSIVE lock on the primary is replayed on the standby, where
                        // the read holds ACCESS SHARE: replay waits max_standby_streaming_delay (1 s),
                        // then cancels the read. (A lock, not a VACUUM cleanup: other tests' open
                        // snapshots on the primary may keep VACUUM from removing anything.)
                        locked = true;
                        let lock = format!("LOCK TABLE {schema}.big IN ACCESS EXCLUSIVE MODE");
                        let done = psql(fixture_url())
                            .args(["-1", "-c", &lock])
                            .status()
                            .unwrap();
                        assert!(done.success());
                    }
                    // A slow reader: the standby's query is still running when replay needs it.
                    if retries.is_empty() {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                ReadEvent::Retry {
                    error,
                    resumed,
                    location,
                    ..
                } => {
                    assert!(resumed, "the retry continues from the resume ticket");
                    pending.clear();
                    retries.push((error.code, error.message, location));
                }
            }
            Ok::<(), ReadError>(())
        },
    )
    .await
    .unwrap();
    ids.append(&mut pending);
    assert!(
        retries
            .iter()
            .any(|(code, message, location)| *code == "UNAVAILABLE"
                && message.contains("recovery conflict")
                && *location == 1),
        "the standby cancelled the read for a recovery conflict and the primary's server went on: {retries:?}"
    );
    let distinct: HashSet<i32> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), ids.len(), "no row repeated");
    assert_eq!(ids.len(), 300_000, "no row lost");
    assert_eq!(
        ids.iter().map(|&i| i as i64).sum::<i64>(),
        300_000 * 300_001 / 2
    );
    drop_schema(&primary, &schema).await;
}
