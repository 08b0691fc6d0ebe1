//! The load generator, run as its binary against the fixture: a short plain run, a server restart and
//! a chunk drop each end with every row accounted for. Also: the docker-compose stack's init SQL
//! yields exactly the rows of `scripts/load-sample-data.sh`.



use std::path::Path;
use std::process::Output;

use testkit::*;

const LOADTEST: &str = env!("CARGO_BIN_EXE_hyperflight-loadtest");
fn server_bin() -> std::path::PathBuf {
    testkit::workspace_bin("hyperflight")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Runs the load test binary with `args`; the load goes to 127.0.0.1 only.
async fn loadtest(args: &[&str]) -> (Output, String) {
    let out = tokio::process::Command::new(LOADTEST)
        .args(args)
        .env("HYPERFLIGHT_LOG", "warn")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run hyperflight-loadtest");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    (out, report)
}

/// Asserts a passing run: exit 0, no unexplained error, `lost rows: 0` on a line of its own.
fn assert_verified(out: &Output, report: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "load test failed ({}):\n{report}\n{stderr}",
        out.status
    );
    assert!(
        report.lines().any(|l| l == "lost rows: 0"),
        "no `lost rows: 0` in:\n{report}"
    );
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("errors (unexplained): none")),
        "unexplained errors in:\n{report}"
    );
    let verified = report
        .lines()
        .find_map(|l| l.strip_prefix("requests: "))
        .and_then(|l| l.split(" (").nth(1))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(verified > 0, "no verified request in:\n{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_run_verifies_every_row() {
    let server = TestServer::start(config(fixture_url())).await;
    let url = format!("http://{}", server.addr);
    let (out, report) = loadtest(&[
        "--url",
        &url,
        "--database-url",
        fixture_url(),
        "--clients",
        "4",
        "--duration",
        "8s",
        "--seed",
        "11",
    ])
    .await;
    assert_verified(&out, &report);
    println!("{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_costs_retries_not_rows() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    // No ticket secret in the command: the load test gives both lives of the server the same one.
    let server_cmd = format!(
        "{} serve --database-url {} --listen 127.0.0.1:{port} --batch-rows 4096 --metrics-listen ''",
        server_bin().display(),
        fixture_url()
    );
    let log = std::env::temp_dir().join(format!("hyperflight-loadtest-test-{port}.log"));
    let (out, report) = loadtest(&[
        "--url",
        &url,
        "--database-url",
        fixture_url(),
        "--clients",
        "3",
        "--duration",
        "5s",
        "--fault",
        "restart-server",
        "--fault-at",
        "2s",
        "--server-cmd",
        &server_cmd,
        "--server-log",
        &log.to_string_lossy(),
    ])
    .await;
    assert_verified(&out, &report);
    assert!(
        report.contains("fault: restart-server at 2.0 s")
            && report.contains("applied: server killed"),
        "{report}"
    );
    println!("{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_chunk_is_explained_not_lost() {
    let mut c = config(fixture_url());
    // DoGet sees the drop at once, as a NOT_FOUND; plans made after the drop leave the chunk out.
    c.cache_ttl = None;
    let server = TestServer::start(c).await;
    let url = format!("http://{}", server.addr);
    let (out, report) = loadtest(&[
        "--url",
        &url,
        "--database-url",
        fixture_url(),
        "--clients",
        "3",
        "--duration",
        "5s",
        "--fault",
        "drop-chunk",
        "--fault-at",
        "2s",
    ])
    .await;
    assert_verified(&out, &report);
    assert!(report.contains("applied: dropped oldest chunk"), "{report}");
    let dropped: u64 = report
        .lines()
        .find_map(|l| l.strip_prefix("rows of the dropped chunk (explained, not lost): "))
        .and_then(|n| n.parse().ok())
        .expect("dropped rows line");
    println!("{report}\n(dropped rows accounted: {dropped})");
    // The run read a private copy (named on the report's first line), dropped at the end.
    let copy = report
        .lines()
        .next()
        .and_then(|l| l.split(", ").nth(2))
        .and_then(|t| t.split('.').next())
        .expect("the table on the first line");
    assert!(copy.starts_with("hyperflight_loadtest_"), "{report}");
    let db = pg(fixture_url()).await;
    let left = db
        .query("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&copy])
        .await
        .unwrap();
    assert!(left.is_empty(), "schema {copy} was left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_init_sql_loads_the_same_rows_as_the_loader() {
    let fixture = pg(fixture_url()).await;
    let name = "hyperflight_compose_init_check";
    let admin = pg(&database_url("postgres")).await;
    // One statement per call: several in one string would share a transaction, which these refuse.
    for stmt in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        admin.batch_execute(&stmt).await.unwrap();
    }
    let sql = Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/sample-data.sql");
    let psql = std::env::var("HYPERFLIGHT_PG_BIN")
        .map(|d| format!("{d}/psql"))
        .unwrap_or_else(|_| "/usr/lib/postgresql/15/bin/psql".into());
    let out = tokio::process::Command::new(psql)
        .arg(database_url(name))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
        .args(["-v", &format!("rows={FIXTURE_ROWS}")])
        .args(["-v", &format!("days={FIXTURE_DAYS}")])
        .arg("-f")
        .arg(&sql)
        .output()
        .await
        .expect("run psql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Chunk count, then a digest of every row of both tables in a fixed order.
    let checksum = "SELECT concat_ws(' ',
            (SELECT count(*) FROM show_chunks('public.metrics')),
            (SELECT count(*) FROM public.metrics),
            (SELECT md5(string_agg(m::text, '|' ORDER BY time, device_id, reading)) FROM public.metrics m),
            (SELECT md5(string_agg(d::text, '|' ORDER BY device_id)) FROM public.devices d))";
    let theirs = pg(&database_url(name)).await;
    let want: String = fixture.query_one(checksum, &[]).await.unwrap().get(0);
    let got: String = theirs.query_one(checksum, &[]).await.unwrap().get(0);
    assert_eq!(
        got, want,
        "docker/sample-data.sql differs from the loader's data"
    );
    drop(theirs);
    admin
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .unwrap();
}
