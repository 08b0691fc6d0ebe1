//! Test support: the project's real TimescaleDB cluster with the sample fixture, an in-process server
//! on a free port, a Flight client, and helpers to compare what Flight returns with what SQL returns.

pub mod secure;

use std::future::Future;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{
    Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, TimestampMicrosecondType,
};
use arrow_flight::error::FlightError;
use arrow_flight::{FlightClient, FlightDescriptor, FlightInfo, Ticket};
use bytes::Bytes;
use futures::TryStreamExt;
use server::config::Config;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The fixture: `public.metrics` (hypertable, 7 one-day chunks) and `public.devices`.
pub const FIXTURE_DB: &str = "hyperflight_test";
pub const FIXTURE_ROWS: i64 = 200_000;
pub const FIXTURE_DAYS: i64 = 7;
/// Small batches so every chunk spans several.
pub const TEST_BATCH_ROWS: usize = 4_096;

fn script(name: &str, args: &[&str]) -> String {
    let path = repo().join("scripts").join(name);
    let out = Command::new("bash")
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
    assert!(
        out.status.success(),
        "{} {:?} failed:\n{}",
        path.display(),
        args,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The repository's root: two levels above the manifest directory of the crate under test (each
/// crate sits in `crates/<name>`). Taken from cargo at run time, not compile time: cargo reuses a
/// test binary built in a clone at another path, whose baked-in path may be gone.
pub fn repo() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(
            || env!("CARGO_MANIFEST_DIR").into(),
            std::path::PathBuf::from,
        )
        .join("../..")
}

/// URL of the cluster's `postgres` database, starting the cluster if needed.
pub fn cluster_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        script("cluster.sh", &["start"])
            .lines()
            .last()
            .expect("cluster.sh prints the URL")
            .to_string()
    })
}

/// URL of database `name` on the cluster.
pub fn database_url(name: &str) -> String {
    let base = cluster_url();
    format!("{}/{name}", &base[..base.rfind('/').unwrap()])
}

/// URL of the `postgres` database on the cluster's streaming hot standby (`cluster.sh replica`:
/// pg_basebackup -R on first use, TimescaleDB like the primary), starting both if needed.
pub fn replica_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        script("cluster.sh", &["replica"])
            .lines()
            .last()
            .expect("cluster.sh prints the standby's URL")
            .to_string()
    })
}

/// URL of database `name` on the standby (it has every database the primary has).
pub fn replica_database_url(name: &str) -> String {
    let base = replica_url();
    format!("{}/{name}", &base[..base.rfind('/').unwrap()])
}

/// Waits until the standby has replayed everything the primary has written so far (panics after
/// 60 s: replay of a test's writes takes milliseconds unless it is paused).
pub async fn wait_replayed(primary: &tokio_postgres::Client, standby: &tokio_postgres::Client) {
    let lsn: String = primary
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let sql = format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn");
    wait_until(Duration::from_secs(60), "the standby replays", || async {
        standby
            .query_one(&sql, &[])
            .await
            .unwrap()
            .get::<_, bool>(0)
    })
    .await;
}

/// URL of the fixture database, loading it if missing.
pub fn fixture_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        script(
            "load-sample-data.sh",
            &[
                "--database",
                FIXTURE_DB,
                "--rows",
                &FIXTURE_ROWS.to_string(),
                "--days",
                &FIXTURE_DAYS.to_string(),
                "--if-missing",
            ],
        );
        database_url(FIXTURE_DB)
    })
}

/// A plain SQL connection.
pub async fn pg(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    tokio::spawn(conn);
    client
}

/// Test settings: the given database, small batches.
pub fn config(url: &str) -> Config {
    let mut c = Config::for_database(url).unwrap();
    c.batch_rows = TEST_BATCH_ROWS;
    c
}

/// A server running in this process until dropped.
pub struct TestServer {
    pub addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    pub handle: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub async fn start(config: Config) -> TestServer {
        Self::start_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), config)
    }

    /// A server on a listener bound beforehand: a fleet's servers name each other in their settings.
    pub fn start_on(listener: TcpListener, config: Config) -> TestServer {
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            server::server::run(listener, config, async {
                let _ = stopped.await;
            })
            .await
            .expect("server runs");
        });
        TestServer {
            addr,
            stop: Some(stop),
            handle,
        }
    }

    pub async fn client(&self) -> FlightClient {
        let channel = tonic::transport::Endpoint::new(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .expect("connect to test server");
        FlightClient::new(channel)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub fn path(schema: &str, table: &str) -> FlightDescriptor {
    FlightDescriptor::new_path(vec![schema.into(), table.into()])
}

/// The gRPC code of a failed call.
pub fn code(e: FlightError) -> tonic::Code {
    status(e).code()
}

/// One endpoint's batches and each batch's app_metadata (its resume ticket).
pub struct Read {
    pub batches: Vec<RecordBatch>,
    pub resume: Vec<Bytes>,
}

/// Reads a ticket completely.
pub async fn read_ticket(client: &mut FlightClient, ticket: Ticket) -> Result<Read, FlightError> {
    read_batches(client, ticket, usize::MAX).await
}

/// Reads at most `limit` batches of a ticket, then drops the stream.
pub async fn read_batches(
    client: &mut FlightClient,
    ticket: Ticket,
    limit: usize,
) -> Result<Read, FlightError> {
    let mut stream = client.do_get(ticket).await?.into_inner();
    let mut read = Read {
        batches: Vec::new(),
        resume: Vec::new(),
    };
    while read.batches.len() < limit {
        let Some(data) = stream.try_next().await? else {
            break;
        };
        if let arrow_flight::decode::DecodedPayload::RecordBatch(b) = data.payload {
            read.batches.push(b);
            read.resume.push(data.inner.app_metadata);
        }
    }
    Ok(read)
}

/// Reads every endpoint of `info` concurrently, each on its own connection; batches in endpoint order.
pub async fn read_all(server: &TestServer, info: &FlightInfo) -> Vec<RecordBatch> {
    let reads = info.endpoint.iter().map(|e| {
        let ticket = e.ticket.clone().expect("endpoint has a ticket");
        async move {
            let mut client = server.client().await;
            read_ticket(&mut client, ticket)
                .await
                .expect("endpoint reads")
                .batches
        }
    });
    futures::future::join_all(reads)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// SQL that renders rows of `relation` (metrics-shaped) in the canonical form of [`metrics_rows`].
pub fn metrics_canonical_sql(relation: &str) -> String {
    format!(
        "SELECT (extract(epoch from time) * 1000000)::int8, device_id, sensor, \
         temperature, humidity, status, reading, ok FROM {relation}"
    )
}

/// A metrics-shaped hypertable of this test's own (`<schema>.m`, the first `days` days of the
/// fixture), for tests that rewrite, drop or write: other tests running in parallel never see it.
pub async fn private_hypertable(db: &tokio_postgres::Client, schema: &str, days: i64) {
    db.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};
         CREATE TABLE {schema}.m (LIKE public.metrics);
         SELECT create_hypertable('{schema}.m', 'time', chunk_time_interval => interval '1 day');
         INSERT INTO {schema}.m SELECT * FROM public.metrics
           WHERE time < timestamptz '2026-10-01 00:00:00+00' + {days} * interval '24 hours';
         ANALYZE {schema}.m;"
    ))
    .await
    .unwrap();
}

/// Canonical text of every `public.metrics` row from SQL: floats by their bits, time in µs.
pub async fn metrics_rows_sql(db: &impl tokio_postgres::GenericClient, sql: &str) -> Vec<String> {
    let rows = db.query(sql, &[]).await.unwrap();
    let mut out: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
                r.get::<_, i64>(0),
                r.get::<_, Option<i32>>(1),
                r.get::<_, Option<String>>(2),
                r.get::<_, Option<f64>>(3).map(f64::to_bits),
                r.get::<_, Option<f32>>(4).map(f32::to_bits),
                r.get::<_, Option<i16>>(5),
                r.get::<_, Option<i64>>(6),
                r.get::<_, Option<bool>>(7),
            )
        })
        .collect();
    out.sort_unstable();
    out
}

fn opt<T>(a: &dyn Array, i: usize, v: impl FnOnce() -> T) -> Option<T> {
    a.is_valid(i).then(v)
}

/// Canonical text of every row in `batches` (metrics schema), sorted.
pub fn metrics_rows(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        let time = b.column(0).as_primitive::<TimestampMicrosecondType>();
        let device = b.column(1).as_primitive::<Int32Type>();
        let sensor = b.column(2).as_string::<i32>();
        let temp = b.column(3).as_primitive::<Float64Type>();
        let hum = b.column(4).as_primitive::<Float32Type>();
        let status = b.column(5).as_primitive::<Int16Type>();
        let reading = b.column(6).as_primitive::<Int64Type>();
        let ok = b.column(7).as_boolean();
        for i in 0..b.num_rows() {
            assert!(time.is_valid(i), "time is NOT NULL");
            out.push(format!(
                "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
                time.value(i),
                opt(device, i, || device.value(i)),
                opt(sensor, i, || sensor.value(i).to_string()),
                opt(temp, i, || temp.value(i).to_bits()),
                opt(hum, i, || hum.value(i).to_bits()),
                opt(status, i, || status.value(i)),
                opt(reading, i, || reading.value(i)),
                opt(ok, i, || ok.value(i)),
            ));
        }
    }
    out.sort_unstable();
    out
}

/// Total rows in `batches`.
pub fn row_count(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

/// Asserts two sorted row lists are the same multiset, reporting the first difference (not 200k rows).
pub fn assert_same_rows(flight: &[String], sql: &[String]) {
    if let Some(i) = (0..flight.len().min(sql.len())).find(|&i| flight[i] != sql[i]) {
        panic!(
            "rows differ at sorted position {i}: flight {:?} vs sql {:?} ({} vs {} rows)",
            flight[i],
            sql[i],
            flight.len(),
            sql.len()
        );
    }
    assert_eq!(flight.len(), sql.len(), "row counts differ");
}

/// A fresh, empty schema named `<prefix>_<pid>` for one test's own objects (dropped first if a
/// crashed run left it behind). Remove it with [`drop_schema`].
pub async fn scratch_schema(db: &tokio_postgres::Client, prefix: &str) -> String {
    let s = format!("{prefix}_{}", std::process::id());
    db.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS {s} CASCADE; CREATE SCHEMA {s};"
    ))
    .await
    .unwrap();
    s
}

/// A fresh, empty database named `<prefix>_<pid>` on the cluster, for a test that changes
/// database-wide state (grants, extensions): two suites running at once never share it. Returns its
/// URL. Remove it with [`drop_database`].
pub async fn scratch_database(prefix: &str) -> String {
    let name = format!("{prefix}_{}", std::process::id());
    let admin = pg(cluster_url()).await;
    // Two statements, not one string: neither may run inside the implicit transaction of a batch.
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        admin
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }
    database_url(&name)
}

/// Drops a database made by [`scratch_database`], closing any session still on it (a server's
/// pool may keep connections open a moment after the server stopped).
pub async fn drop_database(url: &str) {
    let name = &url[url.rfind('/').unwrap() + 1..];
    pg(cluster_url())
        .await
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .unwrap_or_else(|e| panic!("drop database {name}: {e:?}"));
}

/// `psql` for `url`, from the same PostgreSQL installation `scripts/cluster.sh` runs (its `psql`
/// command), never whichever psql is first on PATH. Quiet, no psqlrc, stops at the first error; add
/// `-c SQL` or `-f FILE`.
pub fn psql(url: &str) -> Command {
    cluster_url(); // cluster.sh psql requires a running cluster
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("scripts/cluster.sh")).args([
        "psql",
        "-d",
        url,
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
    ]);
    cmd
}

/// Polls `check` every 50 ms until it holds and returns how long that took; panics naming `what`
/// once `limit` has passed. For conditions that become true "soon" (a query leaving
/// pg_stat_activity, gauges falling to 0): the test asserts that they happen, and `limit` is
/// generous enough that a loaded 2-core machine never reaches it unless something is wrong.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{what}: not so after {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A scratch schema (see [`scratch_schema`]) holding `big (id int, pad text)`: `rows` rows whose
/// `pad` is `pad_bytes` of 'x' (kept under TOAST's threshold, so the heap really is that large).
/// For tests that need a stream longer than HTTP/2 windows and socket buffers can hold, or batches
/// of a known size. Returns the schema; remove it with [`drop_schema`].
pub async fn padded_table(
    db: &tokio_postgres::Client,
    prefix: &str,
    rows: i64,
    pad_bytes: usize,
) -> String {
    assert!(
        pad_bytes < 1900,
        "a wider row would be TOASTed and compressed"
    );
    let s = scratch_schema(db, prefix).await;
    db.batch_execute(&format!(
        "CREATE TABLE {s}.big AS SELECT g::int AS id, repeat('x', {pad_bytes}) AS pad
           FROM generate_series(1, {rows}) g;
         ANALYZE {s}.big;"
    ))
    .await
    .unwrap();
    s
}

/// Drops a schema made by [`scratch_schema`] or [`private_hypertable`].
pub async fn drop_schema(db: &tokio_postgres::Client, schema: &str) {
    db.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

/// The gRPC status of a failed call.
pub fn status(e: FlightError) -> tonic::Status {
    match e {
        FlightError::Tonic(s) => *s,
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

/// Runs a DoAction and parses its one JSON result.
pub async fn action_json(client: &mut FlightClient, action: &str) -> serde_json::Value {
    let results: Vec<Bytes> = client
        .do_action(arrow_flight::Action::new(action.to_string(), ""))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(results.len(), 1, "{action} returns one result");
    serde_json::from_slice(&results[0]).unwrap()
}

/// A binary of another workspace crate, built by the same `cargo test --workspace` (or
/// `cargo nextest run --workspace`) run: it sits beside the test executable's `deps/` folder.
pub fn workspace_bin(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test knows its executable");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executables live in target/<profile>/deps");
    let bin = dir.join(name);
    assert!(
        bin.is_file(),
        "{} is missing: run the tests with --workspace so every binary is built",
        bin.display()
    );
    bin
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free loopback port")
        .port()
}

/// A database of its own for a change capture test (publications and slots are database-wide),
/// after dropping the idle slots crashed runs left in theirs (a slot keeps WAL until dropped).
pub async fn cdc_database(prefix: &str) -> String {
    pg(cluster_url())
        .await
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
             WHERE database LIKE $1 AND NOT active",
            &[&format!("{prefix}%")],
        )
        .await
        .unwrap();
    let url = scratch_database(prefix).await;
    pg(&url)
        .await
        .batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        .await
        .unwrap();
    url
}

/// Waits for the slot to be released, drops it and the publication, then the database.
pub async fn cdc_cleanup(url: &str, db: &tokio_postgres::Client, publication: &str, slot: &str) {
    slot_released(db, slot).await;
    server::cdc::teardown(db, publication, slot).await.unwrap();
    drop_database(url).await;
}

/// Waits until no process reads `slot`: a stopped (or killed) stream's walsender exits a moment
/// after the client's connection closed.
pub async fn slot_released(db: &tokio_postgres::Client, slot: &str) {
    wait_until(Duration::from_secs(30), "the slot is released", || async {
        db.query_one(
            "SELECT NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND active)",
            &[&slot],
        )
        .await
        .unwrap()
        .get(0)
    })
    .await;
}
