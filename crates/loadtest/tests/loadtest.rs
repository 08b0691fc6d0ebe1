//! The load generator, run as its binary against the fixture: a short plain run, a server restart and
//! a chunk drop each end with every row accounted for, and each shows that its fault really hit
//! reads. Also: `docker/sample-data.sql` yields the rows its header documents.

use std::process::Output;

use testkit::*;

const LOADTEST: &str = env!("CARGO_BIN_EXE_hyperflight-loadtest");
fn server_bin() -> std::path::PathBuf {
    testkit::workspace_bin("hyperflight")
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
    let verified = figure(report, "requests: ", |l| l.split(" (").nth(1));
    assert!(verified > 0, "no verified request in:\n{report}");
    // Every row received was verified: nothing arrived that the check skipped.
    let received = figure(report, "rows: ", |l| l.split(' ').next());
    let checked = figure(report, "rows: ", |l| l.split(" received, ").nth(1));
    assert!(received > 0 && received == checked, "{report}");
}

/// The number at the start of what `pick` finds in the report line that starts with `prefix`.
fn figure(report: &str, prefix: &str, pick: impl Fn(&str) -> Option<&str>) -> u64 {
    report
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(pick)
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no figure after {prefix:?} in:\n{report}"))
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
    // Small batches and more scan slots keep many streams past their first ticket at any moment,
    // so the kill is sure to break some that can resume.
    let server_cmd = format!(
        "{} serve --database-url {} --listen 127.0.0.1:{port} --batch-rows 512 \
         --max-concurrent-chunks 8 --metrics-listen ''",
        server_bin().display(),
        fixture_url()
    );
    let log = std::env::temp_dir().join(format!(
        "hyperflight-loadtest-test-{}-{port}.log",
        std::process::id()
    ));
    let (out, report) = loadtest(&[
        "--url",
        &url,
        "--database-url",
        fixture_url(),
        "--clients",
        "6",
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
    // The kill broke streams, and reads went on from their resume tickets with nothing lost.
    let retries = figure(&report, "retries: ", |l| Some(l));
    let resumed = figure(&report, "retries: ", |l| l.rsplit("; ").next());
    assert!(retries > 0 && resumed > 0, "no resumed read in:\n{report}");
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
    // Requests after the drop did ask for the chunk, and its rows were explained.
    assert!(dropped > 0, "no request met the dropped chunk:\n{report}");
    println!("{report}");
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

/// `docker/sample-data.sql` (what the compose stack loads) into a scratch database, checked against
/// the rows its header documents, computed here from the row number: not against another load of
/// the same script, which would pass whatever the script did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_data_sql_yields_the_documented_rows() {
    // Rows not a multiple of days, so days differ in size; enough rows for every special value.
    const ROWS: i64 = 60_001;
    const DAYS: i64 = 4;
    let name = format!(
        "hyperflight_sample_check_{}_{:08x}",
        std::process::id(),
        rand::random::<u32>()
    );
    let admin = pg(&database_url("postgres")).await;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    // Checked in a task, so the scratch database is dropped even when a check fails.
    let checked = tokio::spawn(load_and_check(database_url(&name), ROWS, DAYS)).await;
    admin
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .unwrap();
    if let Err(e) = checked {
        std::panic::resume_unwind(e.into_panic());
    }
}

const DAY_US: i64 = 86_400_000_000;

async fn load_and_check(url: String, rows: i64, days: i64) {
    let sql = repo().join("docker/sample-data.sql");
    let out = psql(&url)
        .args(["-v", &format!("rows={rows}")])
        .args(["-v", &format!("days={days}")])
        .arg("-f")
        .arg(&sql)
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let db = pg(&url).await;
    let want: Vec<Metric> = (0..rows)
        .map(|i| Metric::documented(i, rows, days))
        .collect();
    check_chunks(&db, &want, days).await;
    check_metrics(&db, &want).await;
    check_devices(&db).await;
}

fn start_us() -> i64 {
    chrono::DateTime::parse_from_rfc3339("2026-10-01T00:00:00Z")
        .unwrap()
        .timestamp_micros()
}

/// Exactly `days` one-day chunks from the start, each holding the rows whose time falls in it.
async fn check_chunks(db: &tokio_postgres::Client, want: &[Metric], days: i64) {
    let start = start_us();
    let got: Vec<(i64, i64, i64)> = db
        .query(
            "SELECT (extract(epoch FROM range_start) * 1000000)::int8,
                    (extract(epoch FROM range_end) * 1000000)::int8,
                    (SELECT count(*) FROM public.metrics m WHERE m.tableoid =
                        format('%I.%I', c.chunk_schema, c.chunk_name)::regclass)
             FROM timescaledb_information.chunks c
             WHERE hypertable_schema = 'public' AND hypertable_name = 'metrics'
             ORDER BY range_start",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let expected: Vec<(i64, i64, i64)> = (0..days)
        .map(|d| {
            let (lo, hi) = (start + d * DAY_US, start + (d + 1) * DAY_US);
            let n = want.iter().filter(|m| lo <= m.time && m.time < hi).count();
            (lo, hi, n as i64)
        })
        .collect();
    assert_eq!(got, expected, "chunks: (start µs, end µs, rows)");
}

/// Every row of `public.metrics`, in time order, against the documented one.
async fn check_metrics(db: &tokio_postgres::Client, want: &[Metric]) {
    let count: i64 = db
        .query_one("SELECT count(*) FROM public.metrics", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, want.len() as i64, "row count");
    let sql = format!("{} ORDER BY time", metrics_canonical_sql("public.metrics"));
    let got = db.query(&sql, &[]).await.unwrap();
    for (i, (row, want)) in got.iter().zip(want).enumerate() {
        let have = Metric {
            time: row.get(0),
            device_id: row.get(1),
            sensor: row.get(2),
            temperature: row.get(3),
            humidity: row.get(4),
            status: row.get(5),
            reading: row.get(6),
            ok: row.get(7),
        };
        assert!(
            have.matches(want),
            "row {i}: got {have:?}, documented {want:?}"
        );
    }
    // The special values are in the data, so the checks above covered them.
    for (what, present) in [
        (
            "status -32768",
            want.iter().any(|m| m.status == Some(i16::MIN)),
        ),
        (
            "reading i64::MAX",
            want.iter().any(|m| m.reading == Some(i64::MAX)),
        ),
        (
            "reading i64::MIN",
            want.iter().any(|m| m.reading == Some(i64::MIN)),
        ),
        (
            "non-ASCII sensor",
            want.iter()
                .any(|m| m.sensor.as_deref().is_some_and(|s| !s.is_ascii())),
        ),
    ] {
        assert!(present, "{what} missing from the checked rows");
    }
}

/// `public.devices`: 100 rows, each value from its device number.
async fn check_devices(db: &tokio_postgres::Client) {
    let installed_from = chrono::DateTime::parse_from_rfc3339("2025-01-01T08:00:00Z")
        .unwrap()
        .timestamp_micros();
    let got: Vec<(i32, String, Option<String>, Option<i64>)> = db
        .query(
            "SELECT device_id, name, location,
                    (extract(epoch FROM installed_at) * 1000000)::int8
             FROM public.devices ORDER BY device_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let want: Vec<(i32, String, Option<String>, Option<i64>)> = (1..=100)
        .map(|d: i32| {
            let location = match d {
                _ if d % 7 == 0 => None,
                _ if d % 10 == 3 => Some(format!("Zürich – Halle {d}")),
                _ => Some(format!("hall-{}", d % 5)),
            };
            // 24 h 37 min 12.345678 s per device number.
            let installed = (d % 11 != 0).then(|| installed_from + i64::from(d) * 88_632_345_678);
            (d, format!("device-{d}"), location, installed)
        })
        .collect();
    assert_eq!(got, want);
}

/// A `public.metrics` row; time in µs since the epoch.
#[derive(Debug)]
struct Metric {
    time: i64,
    device_id: Option<i32>,
    sensor: Option<String>,
    temperature: Option<f64>,
    humidity: Option<f32>,
    status: Option<i16>,
    reading: Option<i64>,
    ok: Option<bool>,
}

impl Metric {
    /// Row `i` of `rows` over `days` days, as the script's header and comments describe it.
    fn documented(i: i64, rows: i64, days: i64) -> Metric {
        let offset = i128::from(i) * i128::from(days) * i128::from(DAY_US) / i128::from(rows);
        let unless = |modulus: i64| i % modulus != 0;
        let x = i as f64;
        Metric {
            time: start_us() + offset as i64,
            device_id: unless(97).then(|| 1 + (i % 100) as i32),
            sensor: unless(89).then(|| match i % 1000 {
                7 => format!("capteur-{} température ✓ 温度", i % 10),
                _ => format!("sensor-{}", i % 10),
            }),
            temperature: unless(83)
                .then(|| 20.0 + 10.0 * (x / 1000.0).sin() + (i % 7) as f64 * 0.125),
            humidity: unless(79).then(|| (50.0 + 40.0 * (x / 777.0).cos()) as f32),
            status: unless(73).then_some(match i % 10007 {
                1 => i16::MIN,
                2 => i16::MAX,
                _ => (i % 600) as i16,
            }),
            reading: unless(71).then(|| match i % 50021 {
                3 => i64::MAX,
                4 => i64::MIN,
                _ => i * 1_000_003 % 1_000_000_007 - 500_000_000,
            }),
            ok: unless(67).then_some(i % 3 != 0),
        }
    }

    /// Equal, floats within rounding (the database's sin/cos and numeric division may differ from
    /// Rust's in the last bits).
    fn matches(&self, o: &Metric) -> bool {
        let close = |a: Option<f64>, b: Option<f64>, tol: f64| match (a, b) {
            (Some(a), Some(b)) => (a - b).abs() <= tol,
            (a, b) => a.is_none() && b.is_none(),
        };
        self.time == o.time
            && self.device_id == o.device_id
            && self.sensor == o.sensor
            && close(self.temperature, o.temperature, 1e-9)
            && close(
                self.humidity.map(f64::from),
                o.humidity.map(f64::from),
                1e-4,
            )
            && self.status == o.status
            && self.reading == o.reading
            && self.ok == o.ok
    }
}
