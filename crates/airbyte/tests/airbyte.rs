//! `hyperflight-airbyte`, run as a process against the real cluster: spec/check/discover, a full
//! refresh equal to SQL, a SIGKILLed read resumed from its last STATE (whole chunks and mid-chunk
//! resume tickets), incremental reads, and failures that a person can read.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use testkit::*;

const BIN: &str = env!("CARGO_BIN_EXE_hyperflight-airbyte");

/// A scratch directory of this test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("hf-airbyte-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn write(&self, name: &str, v: &Value) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, serde_json::to_vec_pretty(v).unwrap()).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `sql` on database `url` when dropped, even when the test panicked: scratch schemas and
/// databases never outlive their test.
struct DropAfter {
    url: String,
    sql: String,
}

impl Drop for DropAfter {
    fn drop(&mut self) {
        let (url, sql) = (self.url.clone(), self.sql.clone());
        // A thread of its own: this may run inside the test's runtime, which cannot block.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let db = pg(&url).await;
                if let Err(e) = db.batch_execute(&sql).await {
                    eprintln!("cleanup {sql:?} failed: {e}");
                }
            });
        })
        .join();
        if done.is_err() {
            eprintln!("cleanup {:?} panicked", self.sql);
        }
    }
}

/// Drops `schema` of the fixture database at the end of the test.
fn drop_schema_after(schema: &str) -> DropAfter {
    DropAfter {
        url: fixture_url().to_string(),
        sql: format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
    }
}

/// The source config for database `url`, plus `extra` keys.
fn source_config(url: &str, extra: Value) -> Value {
    let pg: tokio_postgres::Config = url.parse().unwrap();
    let host = match &pg.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        other => panic!("unexpected host {other:?}"),
    };
    let mut c = json!({
        "host": host,
        "port": pg.get_ports()[0],
        "database": pg.get_dbname().unwrap(),
        "username": pg.get_user().unwrap(),
        "password": "not-checked-under-trust",
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

/// What a run printed.
struct Run {
    code: Option<i32>,
    lines: Vec<String>,
    messages: Vec<Value>,
    stderr: String,
}

impl Run {
    fn of_type<'a>(&'a self, t: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.messages.iter().filter(move |m| m["type"] == t)
    }

    fn records(&self) -> Vec<&Value> {
        self.of_type("RECORD").collect()
    }

    fn states(&self) -> Vec<&Value> {
        self.of_type("STATE").collect()
    }

    fn errors(&self) -> Vec<&Value> {
        self.of_type("TRACE")
            .filter(|m| m["trace"]["type"] == "ERROR")
            .collect()
    }

    /// Asserts the run exited 0, showing its stderr and error messages otherwise.
    #[track_caller]
    fn assert_ok(&self) {
        assert_eq!(self.code, Some(0), "{}\n{:?}", self.stderr, self.errors());
    }
}

/// Parses stdout: every line must be one JSON message with a known type.
fn parse_lines(stdout: &str) -> (Vec<String>, Vec<Value>) {
    let mut lines = Vec::new();
    let mut messages = Vec::new();
    for line in stdout.lines() {
        let m: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line:.300}"));
        let t = m["type"].as_str().unwrap_or_default().to_string();
        assert!(
            [
                "SPEC",
                "CONNECTION_STATUS",
                "CATALOG",
                "RECORD",
                "STATE",
                "LOG",
                "TRACE"
            ]
            .contains(&t.as_str()),
            "unexpected message type in {line:.300}"
        );
        lines.push(line.to_string());
        messages.push(m);
    }
    (lines, messages)
}

fn run(args: &[&str]) -> Run {
    let out = Command::new(BIN)
        .args(args)
        .env("HYPERFLIGHT_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run hyperflight-airbyte");
    let stdout = String::from_utf8(out.stdout).expect("stdout is UTF-8");
    let (lines, messages) = parse_lines(&stdout);
    Run {
        code: out.status.code(),
        lines,
        messages,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn discover(config: &Path) -> Vec<Value> {
    let r = run(&["discover", "--config", path_str(config)]);
    assert_eq!(r.code, Some(0), "discover failed: {}", r.stderr);
    let catalog: Vec<&Value> = r.of_type("CATALOG").collect();
    assert_eq!(catalog.len(), 1);
    catalog[0]["catalog"]["streams"].as_array().unwrap().clone()
}

/// A configured catalog of the discovered streams `wanted` (namespace, name, mode).
fn configured(streams: &[Value], wanted: &[(&str, &str, &str)]) -> Value {
    let configured: Vec<Value> = wanted
        .iter()
        .map(|(ns, name, mode)| {
            let s = streams
                .iter()
                .find(|s| s["namespace"] == *ns && s["name"] == *name)
                .unwrap_or_else(|| panic!("{ns}.{name} not discovered"))
                .clone();
            let cursor = s.get("default_cursor_field").cloned().unwrap_or(json!([]));
            json!({"stream": s, "sync_mode": mode, "destination_sync_mode": "append",
                   "cursor_field": cursor})
        })
        .collect();
    json!({ "streams": configured })
}

/// The `--state` file content for a STATE message.
fn state_file(state: &Value) -> Value {
    json!([state["state"]])
}

/// The raw JSON text of `"key":` in a RECORD line written by this source (numbers only: floats
/// must be compared by their text, parsed exactly, not through serde_json's fast float parser).
fn raw_number<'a>(line: &'a str, key: &str) -> &'a str {
    let needle = format!("\"{key}\":");
    let start = line.find(&needle).unwrap() + needle.len();
    let rest = &line[start..];
    &rest[..rest.find([',', '}']).unwrap()]
}

fn micros(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap_or_else(|e| panic!("{rfc3339}: {e}"))
        .timestamp_micros()
}

/// A metrics RECORD line in the canonical form of `testkit::metrics_rows_sql`.
fn canonical(line: &str) -> String {
    let m: Value = serde_json::from_str(line).unwrap();
    let d = &m["record"]["data"];
    let num = |key: &str| -> Option<String> {
        let raw = raw_number(line, key);
        (raw != "null").then(|| raw.to_string())
    };
    format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
        micros(d["time"].as_str().expect("time is a string")),
        d["device_id"].as_i64().map(|v| v as i32),
        d["sensor"].as_str().map(str::to_string),
        num("temperature").map(|t| t.parse::<f64>().unwrap().to_bits()),
        num("humidity").map(|t| t.parse::<f32>().unwrap().to_bits()),
        d["status"].as_i64().map(|v| v as i16),
        d["reading"].as_i64(),
        d["ok"].as_bool(),
    )
}

fn sorted_canonical<'a>(lines: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut rows: Vec<String> = lines
        .filter(|l| l.starts_with("{\"type\":\"RECORD\""))
        .map(|l| canonical(l))
        .collect();
    rows.sort_unstable();
    rows
}

fn digest(rows: &[String]) -> String {
    let mut h = Sha256::new();
    for r in rows {
        h.update(r.as_bytes());
        h.update(b"\n");
    }
    format!("{:x}", h.finalize())
}

/// Chunk name → [start, end) in µs, for a hypertable.
async fn chunk_ranges(
    db: &tokio_postgres::Client,
    schema: &str,
    table: &str,
) -> HashMap<String, (i64, i64)> {
    db.query(
        "SELECT chunk_schema || '.' || chunk_name,
                (extract(epoch from range_start) * 1000000)::int8,
                (extract(epoch from range_end) * 1000000)::int8
         FROM timescaledb_information.chunks
         WHERE hypertable_schema = $1 AND hypertable_name = $2",
        &[&schema, &table],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), (r.get(1), r.get(2))))
    .collect()
}

/// The discovered stream `namespace.name`.
fn find_stream<'a>(streams: &'a [Value], namespace: &str, name: &str) -> &'a Value {
    streams
        .iter()
        .find(|s| s["namespace"] == namespace && s["name"] == name)
        .unwrap_or_else(|| panic!("{namespace}.{name} not discovered"))
}

/// The fixture's table facts, as discovered: `metrics`' time dimension is its cursor, `devices`'
/// primary key is its key.
fn assert_fixture_facts(streams: &[Value]) {
    let metrics = find_stream(streams, "public", "metrics");
    assert_eq!(metrics["source_defined_cursor"], true);
    assert_eq!(metrics["default_cursor_field"], json!(["time"]));
    assert_eq!(
        metrics["supported_sync_modes"],
        json!(["full_refresh", "incremental"])
    );
    let devices = find_stream(streams, "public", "devices");
    assert_eq!(
        devices["source_defined_primary_key"],
        json!([["device_id"]])
    );
    assert_eq!(devices["source_defined_cursor"], false);
}

#[test]
fn spec_check_and_discover() {
    let spec = run(&["spec"]);
    assert_eq!(spec.code, Some(0));
    assert_eq!(spec.messages.len(), 1);
    let props = &spec.messages[0]["spec"]["connectionSpecification"]["properties"];
    assert_eq!(props["password"]["airbyte_secret"], true);
    for key in [
        "host",
        "port",
        "database",
        "username",
        "schemas",
        "ssl_mode",
        "flight_url",
        "timescaledb_support",
        "timescaledb_chunk_discovery_interval_minutes",
        "timescaledb_max_concurrent_chunks",
        "timescaledb_enable_chunk_caching",
        "timescaledb_chunk_cache_ttl_minutes",
        "timescaledb_max_memory_mb",
        "replication_method",
    ] {
        assert!(props.get(key).is_some(), "spec lacks {key}");
    }
    let methods = &props["replication_method"]["oneOf"];
    assert_eq!(methods[0]["properties"]["method"]["const"], "Standard");
    assert_eq!(methods[1]["properties"]["method"]["const"], "CDC");
    for key in [
        "replication_slot",
        "publication",
        "initial_waiting_seconds",
        "lsn_commit_behaviour",
    ] {
        assert!(
            methods[1]["properties"].get(key).is_some(),
            "CDC lacks {key}"
        );
    }

    let dir = Scratch::new("discover");
    let config = dir.write("config.json", &source_config(fixture_url(), json!({})));
    let check = run(&["check", "--config", path_str(&config)]);
    assert_eq!(check.code, Some(0), "{}", check.stderr);
    let status: Vec<&Value> = check.of_type("CONNECTION_STATUS").collect();
    assert_eq!(
        status[0]["connectionStatus"]["status"], "SUCCEEDED",
        "{:?}",
        check.lines
    );

    let streams = discover(&config);
    assert!(streams
        .iter()
        .all(|s| !s["namespace"].as_str().unwrap().starts_with("_timescaledb")));
    assert_fixture_facts(&streams);
    let metrics = find_stream(&streams, "public", "metrics");
    let time = &metrics["json_schema"]["properties"]["time"];
    assert_eq!(time["airbyte_type"], "timestamp_with_timezone");
    assert_eq!(time["format"], "date-time");
    assert_eq!(
        metrics["json_schema"]["properties"]["humidity"]["type"],
        json!(["null", "number"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_refresh_equals_sql() {
    let db = pg(fixture_url()).await;
    let dir = Scratch::new("full");
    let config = dir.write("config.json", &source_config(fixture_url(), json!({})));
    let catalog = dir.write(
        "catalog.json",
        &configured(&discover(&config), &[("public", "metrics", "full_refresh")]),
    );
    let r = tokio::task::spawn_blocking(move || {
        run(&[
            "read",
            "--config",
            path_str(&config),
            "--catalog",
            path_str(&catalog),
        ])
    })
    .await
    .unwrap();
    r.assert_ok();

    let got = sorted_canonical(r.lines.iter());
    let want = metrics_rows_sql(&db, &metrics_canonical_sql("public.metrics")).await;
    assert_eq!(got.len() as i64, FIXTURE_ROWS);
    assert_same_rows(&got, &want);
    assert_eq!(digest(&got), digest(&want));

    // Protocol shape: STARTED first, COMPLETE last, counts add up, final state is an empty pass.
    let statuses: Vec<&Value> = r
        .of_type("TRACE")
        .map(|m| &m["trace"]["stream_status"]["status"])
        .collect();
    assert_eq!(statuses.first().unwrap().as_str(), Some("STARTED"));
    assert!(statuses.contains(&&json!("RUNNING")));
    assert_eq!(statuses.last().unwrap().as_str(), Some("COMPLETE"));
    let counted: f64 = r
        .states()
        .iter()
        .map(|s| s["state"]["sourceStats"]["recordCount"].as_f64().unwrap())
        .sum();
    assert_eq!(counted as i64, FIXTURE_ROWS);
    let last = r.states().last().unwrap()["state"]["stream"]["stream_state"].clone();
    assert_eq!(last["completed_chunks"], json!([]));
    assert_eq!(last["in_progress"], json!({}));
    // A STATE comes after the records it covers: every record precedes the last STATE.
    let last_state = r
        .lines
        .iter()
        .rposition(|l| l.contains("\"type\":\"STATE\""))
        .unwrap();
    let last_record = r
        .lines
        .iter()
        .rposition(|l| l.contains("\"type\":\"RECORD\""))
        .unwrap();
    assert!(last_record < last_state);
}

/// Starts a read, reads its stdout until `stop` says so (given the lines so far and the latest
/// STATE), then SIGKILLs it. Returns every line read.
fn read_until_killed(args: Vec<String>, stop: impl Fn(&Value) -> bool) -> Vec<String> {
    let mut child = Command::new(BIN)
        .args(&args)
        .env("HYPERFLIGHT_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start hyperflight-airbyte");
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    for line in stdout.lines() {
        let line = line.unwrap();
        let is_state = line.starts_with("{\"type\":\"STATE\"");
        let stop_now = is_state && stop(&serde_json::from_str(&line).unwrap());
        lines.push(line);
        if stop_now {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(
        status.code().is_none(),
        "the read ended before it was killed"
    );
    lines
}

/// Records before the last STATE of `lines`, and that STATE.
fn covered(lines: &[String]) -> (Vec<String>, Value) {
    let at = lines
        .iter()
        .rposition(|l| l.starts_with("{\"type\":\"STATE\""))
        .expect("a STATE was read");
    (
        lines[..at].to_vec(),
        serde_json::from_str(&lines[at]).unwrap(),
    )
}

/// Reruns `args` with the last STATE a killed first run wrote; returns what the first run covered,
/// that STATE, and the second run, which must succeed.
async fn rerun_with_last_state(
    dir: &Scratch,
    args: &[String],
    first: &[String],
) -> (Vec<String>, Value, Run) {
    let (before, state) = covered(first);
    let state_path = dir.write("state.json", &state_file(&state));
    let mut resume_args = args.to_vec();
    resume_args.extend(["--state".to_string(), path_str(&state_path).to_string()]);
    let second = tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = resume_args.iter().map(String::as_str).collect();
        run(&a)
    })
    .await
    .unwrap();
    second.assert_ok();
    (before, state, second)
}

/// Kills a full refresh after `stop`, resumes it from the last STATE, and checks exactly-once:
/// records covered by that STATE plus the resumed read equal the table, and no chunk completed in
/// the first run is read again.
async fn kill_and_resume(
    name: &str,
    db: &tokio_postgres::Client,
    config: Value,
    stream: (&str, &str),
    canonical_sql: &str,
    stop: fn(&Value) -> bool,
) -> Value {
    let dir = Scratch::new(name);
    let config = dir.write("config.json", &config);
    let catalog = dir.write(
        "catalog.json",
        &configured(&discover(&config), &[(stream.0, stream.1, "full_refresh")]),
    );
    let args: Vec<String> = [
        "read",
        "--config",
        path_str(&config),
        "--catalog",
        path_str(&catalog),
    ]
    .map(String::from)
    .to_vec();
    let first = tokio::task::spawn_blocking({
        let args = args.clone();
        move || read_until_killed(args, stop)
    })
    .await
    .unwrap();
    let (before, state, second) = rerun_with_last_state(&dir, &args, &first).await;

    let blob = &state["state"]["stream"]["stream_state"];
    let completed: Vec<String> = blob["completed_chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert!(!completed.is_empty(), "the first run completed some chunk");
    let ranges = chunk_ranges(db, stream.0, stream.1).await;
    assert!(
        completed.len() < ranges.len(),
        "the first run was killed before every chunk was complete"
    );
    let in_completed = |t: i64| {
        completed
            .iter()
            .any(|c| (ranges[c].0..ranges[c].1).contains(&t))
    };
    let time_of = |line: &String| {
        let m: Value = serde_json::from_str(line).unwrap();
        micros(m["record"]["data"]["time"].as_str().unwrap())
    };
    let records = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l.starts_with("{\"type\":\"RECORD\""))
            .cloned()
            .collect()
    };
    let (first_records, second_records) = (records(&before), records(&second.lines));
    // The completed chunks: every row came in the first run, none in the second.
    let total = metrics_rows_sql(db, canonical_sql).await;
    let in_completed_sql = total
        .iter()
        .filter(|r| in_completed(r.split('|').next().unwrap().parse().unwrap()))
        .count();
    assert!(in_completed_sql > 0);
    assert_eq!(
        first_records
            .iter()
            .filter(|l| in_completed(time_of(l)))
            .count(),
        in_completed_sql,
        "the first run delivered the completed chunks whole"
    );
    assert_eq!(
        second_records
            .iter()
            .filter(|l| in_completed(time_of(l)))
            .count(),
        0,
        "the resumed read repeated a row of a completed chunk"
    );
    // Exactly the rest: the table's rows minus those the STATE covered.
    assert_eq!(
        second_records.len(),
        total.len() - first_records.len(),
        "the resumed read delivered exactly the rows the first run had not"
    );
    assert!(!second_records.is_empty());
    let counted: f64 = second
        .states()
        .iter()
        .map(|s| s["state"]["sourceStats"]["recordCount"].as_f64().unwrap())
        .sum();
    assert_eq!(counted as usize, second_records.len());
    let mut union = sorted_canonical(first_records.iter().chain(second_records.iter()));
    let n = union.len();
    union.dedup();
    assert_eq!(n, union.len(), "a row was delivered twice");
    assert_same_rows(&union, &total);
    blob.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_read_resumes_from_its_last_state() {
    let db = pg(fixture_url()).await;
    // Two chunks at a time, killed after its third STATE: some chunks completed, others not begun.
    let config = source_config(
        fixture_url(),
        json!({"timescaledb_max_concurrent_chunks": 2}),
    );
    kill_and_resume(
        "kill",
        &db,
        config,
        ("public", "metrics"),
        &metrics_canonical_sql("public.metrics"),
        |s| {
            s["state"]["stream"]["stream_state"]["completed_chunks"]
                .as_array()
                .unwrap()
                .len()
                >= 3
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_read_resumes_mid_chunk_from_a_resume_ticket() {
    let db = pg(fixture_url()).await;
    // One 200k-row chunk spans 4 batches: the STATE after the 2nd carries its resume ticket, signed
    // by an in-process service whose key the next process derives again from the config.
    let schema = scratch_schema(&db, "airbyte_mid").await;
    let _cleanup = drop_schema_after(&schema);
    db.batch_execute(&format!(
        "CREATE TABLE {schema}.big (LIKE public.metrics);
         SELECT create_hypertable('{schema}.big', 'time', chunk_time_interval => interval '365 days');
         INSERT INTO {schema}.big SELECT * FROM public.metrics;
         ANALYZE {schema}.big;"
    ))
    .await
    .unwrap();
    let config = source_config(
        fixture_url(),
        json!({"schemas": [schema], "timescaledb_max_concurrent_chunks": 1}),
    );
    let blob = kill_and_resume_mid(&db, config, &schema).await;
    assert!(blob["in_progress"]
        .as_object()
        .unwrap()
        .values()
        .any(Value::is_string));
}

/// As [`kill_and_resume`], for a one-chunk table: stops at the first STATE with a resume ticket.
async fn kill_and_resume_mid(db: &tokio_postgres::Client, config: Value, schema: &str) -> Value {
    let dir = Scratch::new("mid");
    let config = dir.write("config.json", &config);
    let catalog = dir.write(
        "catalog.json",
        &configured(&discover(&config), &[(schema, "big", "full_refresh")]),
    );
    let args: Vec<String> = [
        "read",
        "--config",
        path_str(&config),
        "--catalog",
        path_str(&catalog),
    ]
    .map(String::from)
    .to_vec();
    let first = tokio::task::spawn_blocking({
        let args = args.clone();
        move || {
            read_until_killed(args, |s| {
                s["state"]["stream"]["stream_state"]["in_progress"]
                    .as_object()
                    .unwrap()
                    .values()
                    .any(Value::is_string)
            })
        }
    })
    .await
    .unwrap();
    let (before, state, second) = rerun_with_last_state(&dir, &args, &first).await;
    assert!(
        !second.lines.iter().any(|l| l.contains("was refused")),
        "the resume ticket was accepted by the new process"
    );
    let first_rows = sorted_canonical(before.iter()).len();
    assert!(first_rows > 0 && first_rows < FIXTURE_ROWS as usize);
    assert_eq!(
        second.records().len(),
        FIXTURE_ROWS as usize - first_rows,
        "the resumed read delivered exactly the rows after the resume ticket"
    );
    let mut union = sorted_canonical(before.iter().chain(second.lines.iter()));
    let n = union.len();
    union.dedup();
    assert_eq!(n, union.len(), "a row was delivered twice");
    let want = metrics_rows_sql(db, &metrics_canonical_sql(&format!("{schema}.big"))).await;
    assert_same_rows(&union, &want);
    state["state"]["stream"]["stream_state"].clone()
}

/// Runs the binary with `args` off the async workers (the test's server runs on them).
async fn run_blocking(args: Vec<String>) -> Run {
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&a)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_url_needs_no_database_credentials() {
    let db = pg(fixture_url()).await;
    let server = TestServer::start(config(fixture_url())).await;
    let dir = Scratch::new("remote");
    // No host, port, database, username or password: the source never connects to PostgreSQL.
    let url = format!("grpc://{}", server.addr);
    let config = dir.write("config.json", &json!({ "flight_url": url }));
    let config_arg = path_str(&config).to_string();

    let check = run_blocking(vec!["check".into(), "--config".into(), config_arg.clone()]).await;
    let status = &check.of_type("CONNECTION_STATUS").next().unwrap()["connectionStatus"];
    assert_eq!(status["status"], "SUCCEEDED", "{:?}", check.lines);
    assert!(check
        .of_type("LOG")
        .any(|m| m["log"]["message"].as_str().unwrap().contains(&url)));

    // Discover: the cursor and the primary key are the facts the server publishes.
    let streams = tokio::task::spawn_blocking(move || discover(&config))
        .await
        .unwrap();
    assert_fixture_facts(&streams);
    let metrics = find_stream(&streams, "public", "metrics");

    // Read: a full refresh equal to SQL, and an incremental one whose cursor is the highest time.
    let catalog = dir.write(
        "catalog.json",
        &configured(
            &streams,
            &[
                ("public", "metrics", "full_refresh"),
                ("public", "devices", "incremental"),
            ],
        ),
    );
    let mut incremental = configured(&streams, &[("public", "metrics", "incremental")]);
    incremental["streams"][0]["stream"]["json_schema"]["properties"] = json!({
        "time": metrics["json_schema"]["properties"]["time"].clone()
    });
    let incremental = dir.write("incremental.json", &incremental);
    let read = |catalog: &Path| {
        run_blocking(vec![
            "read".into(),
            "--config".into(),
            config_arg.clone(),
            "--catalog".into(),
            path_str(catalog).into(),
        ])
    };
    // devices has no time dimension and no cursor field: incremental is refused for it alone.
    let r = read(&catalog).await;
    assert_ne!(r.code, Some(0));
    let errors = r.errors();
    assert_eq!(
        errors.len(),
        2,
        "the stream's error and the read's: {:?}",
        errors
    );
    assert!(errors[0]["trace"]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("needs a cursor field"));
    // Small batches (4096 rows): STATEs inside chunks, and still every row exactly once.
    assert!(r.states().len() > 7);
    let got = sorted_canonical(r.lines.iter());
    let want = metrics_rows_sql(&db, &metrics_canonical_sql("public.metrics")).await;
    assert_same_rows(&got, &want);

    let r = read(&incremental).await;
    r.assert_ok();
    assert_eq!(r.records().len() as i64, FIXTURE_ROWS);
    let max: String = db
        .query_one(
            "SELECT to_char(max(time) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM public.metrics",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        r.states().last().unwrap()["state"]["stream"]["stream_state"]["cursor"],
        max
    );
}

#[test]
fn check_with_flight_url_names_the_url_as_given() {
    let dir = Scratch::new("remote-down");
    let closed = StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("grpc://127.0.0.1:{closed}");
    let config = dir.write("config.json", &json!({ "flight_url": url }));
    let check = run(&["check", "--config", path_str(&config)]);
    assert_eq!(check.code, Some(0), "{}", check.stderr);
    let status = &check.of_type("CONNECTION_STATUS").next().unwrap()["connectionStatus"];
    assert_eq!(status["status"], "FAILED");
    let message = status["message"].as_str().unwrap();
    assert!(message.contains(&url), "{message}");
    assert!(!message.contains("http://"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_reads_emit_only_rows_after_the_cursor() {
    let db = pg(fixture_url()).await;
    let schema = format!("airbyte_inc_{}", std::process::id());
    private_hypertable(&db, &schema, 3).await;
    let _cleanup = drop_schema_after(&schema);
    let dir = Scratch::new("inc");
    let config = dir.write(
        "config.json",
        &source_config(fixture_url(), json!({ "schemas": [schema] })),
    );
    let catalog = dir.write(
        "catalog.json",
        &configured(&discover(&config), &[(&schema, "m", "incremental")]),
    );
    let read = |state: Option<&Value>| {
        let mut args = vec![
            "read".to_string(),
            "--config".into(),
            path_str(&config).into(),
            "--catalog".into(),
            path_str(&catalog).into(),
        ];
        if let Some(s) = state {
            let p = dir.write("state.json", &state_file(s));
            args.extend(["--state".to_string(), path_str(&p).to_string()]);
        }
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = run(&a);
        r.assert_ok();
        r
    };

    // First read: everything; the cursor is the highest time.
    let first = tokio::task::block_in_place(|| read(None));
    let all = metrics_rows_sql(&db, &metrics_canonical_sql(&format!("{schema}.m"))).await;
    assert_same_rows(&sorted_canonical(first.lines.iter()), &all);
    let state = (*first.states().last().unwrap()).clone();
    let cursor = state["state"]["stream"]["stream_state"]["cursor"]
        .as_str()
        .unwrap()
        .to_string();
    let max: String = db
        .query_one(
            &format!(
                "SELECT to_char(max(time) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM {schema}.m"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(cursor, max);

    // New rows: two after the cursor (one in the last chunk, one in a new chunk), one exactly at
    // the cursor and one late row in an old chunk — neither of the last two is emitted.
    db.batch_execute(&format!(
        "INSERT INTO {schema}.m (time, device_id, sensor) VALUES
           ('{max}'::timestamptz + interval '1 microsecond', 9001, 'after-1'),
           ('{max}'::timestamptz + interval '2 days', 9002, 'after-2'),
           ('{max}'::timestamptz, 9003, 'equal'),
           ('2026-10-01 12:00:00+00', 9004, 'late');"
    ))
    .await
    .unwrap();
    let second = tokio::task::block_in_place(|| read(Some(&state)));
    let sensors: BTreeSet<String> = second
        .records()
        .iter()
        .map(|r| r["record"]["data"]["sensor"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        sensors,
        BTreeSet::from(["after-1".to_string(), "after-2".to_string()])
    );
    assert_eq!(second.records().len(), 2);

    // Nothing new: the pass reads the chunks at the cursor (the rows "equal" and "after-1" are
    // there) and filters every row out; the stream completes, and the cursor stays.
    let state2 = (*second.states().last().unwrap()).clone();
    let cursor2 = state2["state"]["stream"]["stream_state"]["cursor"].clone();
    let (at_or_below, above): (i64, i64) = {
        let r = db
            .query_one(
                &format!(
                    "SELECT count(*) FILTER (WHERE time <= $1::text::timestamptz),
                            count(*) FILTER (WHERE time > $1::text::timestamptz) FROM {schema}.m"
                ),
                &[&cursor2.as_str().unwrap()],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(above, 0);
    assert!(at_or_below > 0);
    let third = tokio::task::block_in_place(|| read(Some(&state2)));
    assert_eq!(third.records().len(), 0);
    assert!(third
        .of_type("TRACE")
        .any(|m| m["trace"]["stream_status"]["status"] == "COMPLETE"));
    assert_eq!(
        third.states().last().unwrap()["state"]["stream"]["stream_state"]["cursor"],
        cursor2
    );
}

/// The cluster checks the password of this one role (scripts/cluster.sh); every other role is trusted.
const PASSWORD_ROLE: &str = "hyperflight_password_check";
const PASSWORD: &str = "the-right-password";

/// Creates (or resets) the password-checked role on the real cluster.
fn password_role() {
    let admin = psql(cluster_url())
        .arg("-c")
        .arg(format!(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{PASSWORD_ROLE}') THEN
                 CREATE ROLE {PASSWORD_ROLE} LOGIN;
               END IF;
             END $$;
             ALTER ROLE {PASSWORD_ROLE} PASSWORD '{PASSWORD}';"
        ))
        .output()
        .unwrap();
    assert!(
        admin.status.success(),
        "{}",
        String::from_utf8_lossy(&admin.stderr)
    );
}

#[test]
fn wrong_password_and_other_bad_configs_fail_readably() {
    let dir = Scratch::new("bad");
    password_role();
    let right_password = dir.write(
        "right-password.json",
        &source_config(
            fixture_url(),
            json!({"username": PASSWORD_ROLE, "password": PASSWORD}),
        ),
    );
    let check = run(&["check", "--config", path_str(&right_password)]);
    let status = &check.of_type("CONNECTION_STATUS").next().unwrap()["connectionStatus"];
    assert_eq!(status["status"], "SUCCEEDED", "{:?}", check.lines);

    let wrong_password = dir.write(
        "wrong-password.json",
        &source_config(
            fixture_url(),
            json!({"username": PASSWORD_ROLE, "password": "wrong"}),
        ),
    );
    let check = run(&["check", "--config", path_str(&wrong_password)]);
    assert_eq!(
        check.code,
        Some(0),
        "check exits 0 on FAILED (Airbyte convention)"
    );
    let status = &check.of_type("CONNECTION_STATUS").next().unwrap()["connectionStatus"];
    assert_eq!(status["status"], "FAILED");
    let message = status["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "authentication failed for role \"{PASSWORD_ROLE}\" (check the password)"
        )),
        "{message}"
    );
    assert!(
        !message.contains("wrong"),
        "the password is not echoed: {message}"
    );

    let catalog = dir.write(
        "catalog.json",
        &json!({"streams": [{"stream": {"name": "metrics", "namespace": "public",
            "json_schema": {}, "supported_sync_modes": ["full_refresh"]},
            "sync_mode": "full_refresh", "destination_sync_mode": "append"}]}),
    );
    let read = run(&[
        "read",
        "--config",
        path_str(&wrong_password),
        "--catalog",
        path_str(&catalog),
    ]);
    assert_ne!(read.code, Some(0));
    assert!(read.records().is_empty());
    let errors = read.errors();
    assert_eq!(errors.len(), 1, "{:?}", read.lines);
    assert_eq!(errors[0]["trace"]["error"]["failure_type"], "config_error");
    assert!(errors[0]["trace"]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("authentication failed for role"));

    // The real cluster: a database that does not exist, a port nobody listens on, TLS asked for.
    let closed = StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for (extra, expect) in [
        (
            json!({"database": "no_such_db"}),
            "database \"no_such_db\" does not exist",
        ),
        (json!({"port": closed}), "connection refused"),
        (
            json!({"ssl_mode": "require"}),
            "the server does not support TLS",
        ),
        (
            json!({"schemas": ["no_such_schema"]}),
            "no_such_schema do not exist",
        ),
    ] {
        let c = dir.write("c.json", &source_config(fixture_url(), extra.clone()));
        let check = run(&["check", "--config", path_str(&c)]);
        assert_eq!(check.code, Some(0));
        let status = &check.of_type("CONNECTION_STATUS").next().unwrap()["connectionStatus"];
        assert_eq!(status["status"], "FAILED", "{extra}");
        let message = status["message"].as_str().unwrap();
        assert!(message.contains(expect), "{extra}: {message}");
        assert!(!message.contains("panicked") && !message.contains("backtrace"));
    }
}

/// Each config `check` cannot use: CONNECTION_STATUS FAILED with the reason, exit 0 (Airbyte's
/// convention); `discover` and `read` of the same config: one TRACE ERROR (config_error) and nothing
/// else, non-zero exit.
#[test]
fn invalid_configs_fail_check_with_their_reason_and_discover_and_read_with_a_trace_error() {
    let dir = Scratch::new("invalid");
    let catalog = dir.write(
        "catalog.json",
        &json!({"streams": [{"stream": {"name": "metrics", "namespace": "public",
            "json_schema": {}, "supported_sync_modes": ["full_refresh"]},
            "sync_mode": "full_refresh", "destination_sync_mode": "append"}]}),
    );
    let good = source_config(fixture_url(), json!({}));
    let mut missing_host = good.clone();
    missing_host.as_object_mut().unwrap().remove("host");
    let mut string_port = good.clone();
    string_port["port"] = json!("5432");
    let cases: [(&str, Option<String>, &str); 5] = [
        (
            "missing host",
            Some(missing_host.to_string()),
            "invalid config host: is required unless flight_url is set",
        ),
        (
            "string port",
            Some(string_port.to_string()),
            "invalid type: string \"5432\", expected i64",
        ),
        ("bad JSON", Some("{\"host\": ".into()), "EOF while parsing"),
        (
            "not an object",
            Some("[1, 2]".into()),
            "invalid config file",
        ),
        ("unreadable file", None, "cannot read config file"),
    ];
    for (case, text, expect) in cases {
        let path = dir.0.join(format!("{}.json", case.replace(' ', "-")));
        match &text {
            Some(t) => std::fs::write(&path, t).unwrap(),
            // A path that does not exist: unreadable.
            None => {
                let _ = std::fs::remove_file(&path);
            }
        }
        let check = run(&["check", "--config", path_str(&path)]);
        assert_eq!(check.code, Some(0), "{case}: {}", check.stderr);
        assert!(check.errors().is_empty(), "{case}: {:?}", check.lines);
        let status: Vec<&Value> = check.of_type("CONNECTION_STATUS").collect();
        assert_eq!(status.len(), 1, "{case}: {:?}", check.lines);
        assert_eq!(status[0]["connectionStatus"]["status"], "FAILED", "{case}");
        let message = status[0]["connectionStatus"]["message"].as_str().unwrap();
        assert!(message.contains(expect), "{case}: {message}");

        // discover and read: a TRACE ERROR (config_error) with the reason, and a non-zero exit.
        let discover = run(&["discover", "--config", path_str(&path)]);
        let read = run(&[
            "read",
            "--config",
            path_str(&path),
            "--catalog",
            path_str(&catalog),
        ]);
        for (command, r) in [("discover", &discover), ("read", &read)] {
            assert_ne!(r.code, Some(0), "{case}: {command}");
            assert!(r.of_type("CONNECTION_STATUS").next().is_none(), "{case}");
            assert!(r.of_type("CATALOG").next().is_none(), "{case}");
            assert!(r.records().is_empty(), "{case}: {command}");
            let errors = r.errors();
            assert_eq!(errors.len(), 1, "{case}: {command}: {:?}", r.lines);
            assert_eq!(errors[0]["trace"]["error"]["failure_type"], "config_error");
            let message = errors[0]["trace"]["error"]["message"].as_str().unwrap();
            assert!(message.contains(expect), "{case}: {command}: {message}");
            assert_eq!(r.lines.len(), 1, "{case}: {command}: only the TRACE ERROR");
        }
    }
}

/// `flight_token` reaches a server started with `auth_token`: without it (or with a wrong one)
/// check fails naming the refusal; with it, check, discover and read work, and the read's TRACE
/// ESTIMATE carries the server's totals. The token never shows in the output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_token_is_sent_to_a_server_with_auth_token() {
    const TOKEN: &str = "the-flight-token-42";
    let mut server_config = config(fixture_url());
    server_config.auth_token = Some(TOKEN.into());
    let server = TestServer::start(server_config).await;
    let dir = Scratch::new("token");
    let url = format!("grpc://{}", server.addr);
    let check = |config: Value, name: &str| {
        let path = dir.write(name, &config);
        run_blocking(vec![
            "check".into(),
            "--config".into(),
            path_str(&path).into(),
        ])
    };
    for (name, extra) in [
        ("none.json", json!({})),
        ("wrong.json", json!({"flight_token": "wrong-token"})),
    ] {
        let mut c = json!({ "flight_url": url });
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let r = check(c, name).await;
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        let status = &r.of_type("CONNECTION_STATUS").next().unwrap()["connectionStatus"];
        assert_eq!(status["status"], "FAILED", "{name}");
        let message = status["message"].as_str().unwrap();
        assert!(message.contains("Unauthenticated"), "{name}: {message}");
        assert!(!message.contains("wrong-token"), "{message}");
    }
    let good = json!({ "flight_url": url, "flight_token": TOKEN, "schemas": ["public"] });
    let r = check(good.clone(), "good.json").await;
    let status = &r.of_type("CONNECTION_STATUS").next().unwrap()["connectionStatus"];
    assert_eq!(status["status"], "SUCCEEDED", "{:?}", r.lines);

    let config = dir.write("good.json", &good);
    let streams = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || discover(&config))
            .await
            .unwrap()
    };
    let catalog = dir.write(
        "catalog.json",
        &configured(&streams, &[("public", "metrics", "full_refresh")]),
    );
    let r = run_blocking(vec![
        "read".into(),
        "--config".into(),
        path_str(&config).into(),
        "--catalog".into(),
        path_str(&catalog).into(),
    ])
    .await;
    r.assert_ok();
    assert_eq!(r.records().len() as i64, FIXTURE_ROWS);
    assert!(r.lines.iter().all(|l| !l.contains(TOKEN)));
    let estimates: Vec<&Value> = r
        .of_type("TRACE")
        .filter(|m| m["trace"]["type"] == "ESTIMATE")
        .collect();
    assert_eq!(
        estimates.len(),
        1,
        "{:?}",
        r.of_type("TRACE").collect::<Vec<_>>()
    );
    let estimate = &estimates[0]["trace"]["estimate"];
    assert_eq!(estimate["type"], "STREAM");
    assert_eq!(estimate["name"], "metrics");
    assert_eq!(estimate["namespace"], "public");
    assert!(estimate["row_estimate"].as_i64().unwrap() > 0, "{estimate}");
    assert!(
        estimate["byte_estimate"].as_i64().unwrap() > 0,
        "{estimate}"
    );
    // The estimate comes before the stream's first record.
    let first_record = r
        .lines
        .iter()
        .position(|l| l.contains("\"type\":\"RECORD\""))
        .unwrap();
    let estimate_line = r
        .lines
        .iter()
        .position(|l| l.contains("\"ESTIMATE\""))
        .unwrap();
    assert!(estimate_line < first_record);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_resume_ticket_rereads_its_chunk() {
    let db = pg(fixture_url()).await;
    let chunk: String = db
        .query_one(
            "SELECT chunk_schema || '.' || chunk_name FROM timescaledb_information.chunks
             WHERE hypertable_schema = 'public' AND hypertable_name = 'metrics'
             ORDER BY range_start LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let dir = Scratch::new("refused");
    let config = dir.write("config.json", &source_config(fixture_url(), json!({})));
    let mut catalog = configured(&discover(&config), &[("public", "metrics", "full_refresh")]);
    // Only the time column, to keep the output small.
    let schema = &mut catalog["streams"][0]["stream"]["json_schema"]["properties"];
    *schema = json!({"time": schema["time"].clone()});
    let catalog = dir.write("catalog.json", &catalog);
    // A ticket this service never signed (as after an expiry or a change of credentials).
    let state = dir.write(
        "state.json",
        &json!([{"type": "STREAM", "stream": {
            "stream_descriptor": {"name": "metrics", "namespace": "public"},
            "stream_state": {"state_version": 1, "sync_mode": "full_refresh", "columns": ["time"],
                             "completed_chunks": [], "in_progress": {chunk.clone(): "Zm9yZ2Vk"}}}}]),
    );
    let r = tokio::task::spawn_blocking(move || {
        run(&[
            "read",
            "--config",
            path_str(&config),
            "--catalog",
            path_str(&catalog),
            "--state",
            path_str(&state),
        ])
    })
    .await
    .unwrap();
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let refused: Vec<&Value> = r
        .of_type("LOG")
        .filter(|m| {
            m["log"]["message"]
                .as_str()
                .unwrap()
                .contains("was refused")
        })
        .collect();
    assert_eq!(
        refused.len(),
        1,
        "{:?}",
        r.of_type("LOG").collect::<Vec<_>>()
    );
    assert_eq!(refused[0]["log"]["level"], "WARN");
    assert!(refused[0]["log"]["message"]
        .as_str()
        .unwrap()
        .contains(&chunk));
    assert_eq!(r.records().len() as i64, FIXTURE_ROWS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_postgres_without_timescaledb_is_not_a_failure() {
    // A database of this run's own, dropped at the end (its extension is dropped below).
    let name = format!("airbyte_plain_{}", std::process::id());
    let admin = pg(cluster_url()).await;
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        // One statement per call: DROP DATABASE cannot run in a multi-statement transaction.
        admin.batch_execute(&sql).await.unwrap();
    }
    let _cleanup = DropAfter {
        url: cluster_url().to_string(),
        sql: format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    };
    let url = database_url(&name);
    let db = pg(&url).await;
    db.batch_execute("DROP EXTENSION IF EXISTS timescaledb CASCADE")
        .await
        .unwrap();
    let schema = scratch_schema(&db, "airbyte_plain").await;
    db.batch_execute(&format!(
        "CREATE TABLE {schema}.events (id int8 PRIMARY KEY, at timestamptz, note text);
         INSERT INTO {schema}.events SELECT i, timestamptz '2026-01-01' + i * interval '1 minute', 'n' || i
           FROM generate_series(1, 500) AS i;"
    ))
    .await
    .unwrap();
    let dir = Scratch::new("plain");
    let config = dir.write(
        "config.json",
        &source_config(&url, json!({ "schemas": [schema] })),
    );
    let check = run(&["check", "--config", path_str(&config)]);
    let status = &check.of_type("CONNECTION_STATUS").next().unwrap()["connectionStatus"];
    assert_eq!(status["status"], "SUCCEEDED", "{:?}", check.lines);
    assert!(check.of_type("LOG").any(|m| m["log"]["message"]
        .as_str()
        .unwrap()
        .contains("TimescaleDB is not installed")));

    let streams = discover(&config);
    let events = streams.iter().find(|s| s["name"] == "events").unwrap();
    assert_eq!(events["source_defined_cursor"], false);
    assert_eq!(events["source_defined_primary_key"], json!([["id"]]));
    // Incremental on a user-chosen cursor: filtered by the source, strictly after the saved value.
    let mut catalog = configured(&streams, &[(&schema, "events", "incremental")]);
    catalog["streams"][0]["cursor_field"] = json!(["id"]);
    let catalog = dir.write("catalog.json", &catalog);
    let read = |state: Option<&Value>| {
        let mut args = vec![
            "read",
            "--config",
            path_str(&config),
            "--catalog",
            path_str(&catalog),
        ];
        let p;
        if let Some(s) = state {
            p = dir.write("state.json", &state_file(s));
            args.extend(["--state", path_str(&p)]);
        }
        run(&args)
    };
    let first = read(None);
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    assert_eq!(first.records().len(), 500);
    let state = (*first.states().last().unwrap()).clone();
    assert_eq!(state["state"]["stream"]["stream_state"]["cursor"], 500);
    db.batch_execute(&format!(
        "INSERT INTO {schema}.events VALUES (501, now(), 'new')"
    ))
    .await
    .unwrap();
    let second = read(Some(&state));
    let records = second.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["record"]["data"]["id"], 501);
}

/// A continuous aggregate is a stream with its bucket column as cursor, and a full refresh emits
/// exactly the view's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuous_aggregates_are_streams() {
    let db = pg(fixture_url()).await;
    let s = scratch_schema(&db, "ab_cagg").await;
    let _drop = drop_schema_after(&s);
    private_hypertable(&db, &s, 2).await;
    for sql in [
        format!(
            "CREATE MATERIALIZED VIEW {s}.hourly WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
             SELECT time_bucket('1 hour', time) AS bucket, device_id, count(*) AS n
             FROM {s}.m GROUP BY 1, 2 WITH NO DATA"
        ),
        format!("CALL refresh_continuous_aggregate('{s}.hourly', NULL, '2026-10-01 18:00:00+00')"),
    ] {
        db.simple_query(&sql).await.unwrap();
    }
    let dir = Scratch::new("cagg");
    let config = dir.write(
        "config.json",
        &source_config(fixture_url(), json!({"schemas": [s]})),
    );
    let streams = discover(&config);
    let stream = find_stream(&streams, &s, "hourly");
    assert_eq!(stream["source_defined_cursor"], json!(true));
    assert_eq!(stream["default_cursor_field"], json!(["bucket"]));
    let catalog = dir.write(
        "catalog.json",
        &configured(&streams, &[(&s, "hourly", "full_refresh")]),
    );
    let r = tokio::task::spawn_blocking(move || {
        run(&[
            "read",
            "--config",
            path_str(&config),
            "--catalog",
            path_str(&catalog),
        ])
    })
    .await
    .unwrap();
    r.assert_ok();
    let mut got: Vec<String> = r
        .records()
        .iter()
        .map(|m| {
            let d = &m["record"]["data"];
            format!(
                "{}|{}|{}",
                micros(d["bucket"].as_str().unwrap()),
                d["device_id"],
                d["n"]
            )
        })
        .collect();
    got.sort_unstable();
    let mut want: Vec<String> = db
        .query(
            &format!(
                "SELECT (extract(epoch from bucket) * 1000000)::int8, device_id, n FROM {s}.hourly"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let device = r
                .get::<_, Option<i32>>(1)
                .map_or("null".to_string(), |d| d.to_string());
            format!("{}|{device}|{}", r.get::<_, i64>(0), r.get::<_, i64>(2))
        })
        .collect();
    want.sort_unstable();
    assert!(want.len() > 24, "both materialized and real-time rows");
    assert_eq!(got, want);
}

/// A CDC set-up of its own: a database with hypertable `public.m (time, id, v)` (one-day chunks,
/// primary key (time, id)) holding `rows` rows over three days, its publication `hf_ab_pub` and the
/// slot made by `hyperflight cdc setup`'s code, and the source config reading them.
async fn cdc_fixture(prefix: &str, rows: i32, commit: &str) -> (String, String, Value) {
    let url = cdc_database(prefix).await;
    let db = pg(&url).await;
    db.batch_execute(&format!(
        "CREATE TABLE public.m (time timestamptz NOT NULL, id int NOT NULL, v float8,
                                PRIMARY KEY (time, id));
         SELECT create_hypertable('public.m', 'time', chunk_time_interval => interval '1 day');
         INSERT INTO public.m SELECT '2026-01-01'::timestamptz + (i % 3) * interval '1 day'
                                     + i * interval '1 second', i, i * 0.5
                              FROM generate_series(1, {rows}) i;"
    ))
    .await
    .unwrap();
    // Slot names are cluster-wide.
    let slot = format!("{prefix}_{}", std::process::id());
    server::cdc::setup(
        &db,
        &server::cdc::SetupRequest {
            tables: vec!["public.m".into()],
            publication: "hf_ab_pub".into(),
            slot: slot.clone(),
            publish: server::cdc::Publish::All,
        },
    )
    .await
    .unwrap();
    let config = source_config(
        &url,
        json!({"replication_method": {"method": "CDC", "replication_slot": slot,
               "publication": "hf_ab_pub", "initial_waiting_seconds": 60,
               "lsn_commit_behaviour": commit}}),
    );
    (url, slot, config)
}

/// The LSN of a GLOBAL STATE message.
fn state_lsn(state: &Value) -> u64 {
    assert_eq!(state["state"]["type"], "GLOBAL", "{state}");
    state["state"]["global"]["shared_state"]["lsn"]
        .as_u64()
        .unwrap()
}

/// How far the slot was acknowledged.
async fn slot_flushed(db: &tokio_postgres::Client, slot: &str) -> u64 {
    let flushed: i64 = db
        .query_one(
            "SELECT (confirmed_flush_lsn - '0/0')::int8 FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap()
        .get(0);
    flushed as u64
}

fn read_args(config: &Path, catalog: &Path, state: Option<&Path>) -> Vec<String> {
    let mut args = vec![
        "read".to_string(),
        "--config".into(),
        path_str(config).into(),
        "--catalog".into(),
        path_str(catalog).into(),
    ];
    if let Some(s) = state {
        args.extend(["--state".to_string(), path_str(s).into()]);
    }
    args
}

/// The first CDC sync copies the table under the slot's exported snapshot (equal to SQL, every
/// record at the slot's consistent point); the next emits exactly the inserts (one in a new
/// chunk), the update and the delete made since, with their `_ab_cdc_*` columns; with `After
/// loading Data in the destination` the slot is never acknowledged past the state a sync started
/// from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_copies_under_the_slot_snapshot_then_emits_each_change_once() {
    let (url, slot, config) =
        cdc_fixture("hf_ab_cdc", 3_000, "After loading Data in the destination").await;
    let db = pg(&url).await;
    let dir = Scratch::new("cdc");
    let config_path = dir.write("config.json", &config);
    let streams = discover(&config_path);
    let m = find_stream(&streams, "public", "m");
    assert_eq!(m["supported_sync_modes"], json!(["incremental"]));
    assert_eq!(m["default_cursor_field"], json!(["_ab_cdc_lsn"]));
    for c in ["_ab_cdc_lsn", "_ab_cdc_updated_at", "_ab_cdc_deleted_at"] {
        assert!(m["json_schema"]["properties"].get(c).is_some(), "{c}");
    }
    let catalog = dir.write(
        "catalog.json",
        &configured(&streams, &[("public", "m", "incremental")]),
    );

    // First sync: the copy, while another session commits a row at a time (ids from 500000): each
    // of those must be in the copy or in the next sync's changes, never in both, never in neither.
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (url, writing) = (url.clone(), writing.clone());
        tokio::spawn(async move {
            let db = pg(&url).await;
            let mut written = 0i32;
            while writing.load(Ordering::Relaxed) && written < 20_000 {
                db.execute(
                    "INSERT INTO public.m VALUES ('2026-01-02 06:00:00+00', $1, 0)",
                    &[&(500_000 + written)],
                )
                .await
                .unwrap();
                written += 1;
            }
            written
        })
    };
    let first = run_blocking(read_args(&config_path, &catalog, None)).await;
    writing.store(false, Ordering::Relaxed);
    let written = writer.await.unwrap();
    first.assert_ok();
    let states = first.states();
    assert_eq!(states.len(), 1, "one STATE, after the copy");
    let statuses: Vec<(usize, &Value)> = first
        .messages
        .iter()
        .enumerate()
        .filter(|(_, m)| m["trace"]["type"] == "STREAM_STATUS")
        .map(|(i, m)| (i, &m["trace"]["stream_status"]["status"]))
        .collect();
    let state_at = first.messages.iter().position(|m| m["type"] == "STATE");
    assert_eq!(
        statuses
            .last()
            .map(|(i, s)| (*s == "COMPLETE", Some(*i) > state_at)),
        Some((true, true)),
        "COMPLETE comes last, after the STATE: {statuses:?}"
    );
    let copied_at = state_lsn(states[0]);
    let records = first.records();
    let id = |r: &Value| r["record"]["data"]["id"].as_i64().unwrap();
    let (base, concurrent_copied): (Vec<&Value>, Vec<&Value>) =
        records.iter().partition(|r| id(r) < 500_000);
    let (count, sum): (i64, i64) = {
        let r = db
            .query_one(
                "SELECT count(*), sum(id)::int8 FROM public.m WHERE id < 500000",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(base.len() as i64, count);
    assert_eq!(base.iter().map(|r| id(r)).sum::<i64>(), sum);
    for r in &records {
        let d = &r["record"]["data"];
        assert_eq!(d["_ab_cdc_lsn"].as_u64(), Some(copied_at));
        assert!(d["_ab_cdc_updated_at"].is_string());
        assert!(d["_ab_cdc_deleted_at"].is_null());
    }
    let consistent_point: i64 = db
        .query_one(
            "SELECT (confirmed_flush_lsn - '0/0')::int8 FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        consistent_point as u64, copied_at,
        "the state is the slot's consistent point"
    );

    // Changes: two inserts (one making a new chunk), an update, a delete; each its own commit.
    for change in [
        "INSERT INTO public.m VALUES ('2026-01-02 12:00:00+00', 100001, 1.5)",
        "INSERT INTO public.m VALUES ('2027-06-01 00:00:00+00', 100002, 2.5)",
        "UPDATE public.m SET v = 99 WHERE id = 7",
        "DELETE FROM public.m WHERE id = 8",
    ] {
        db.batch_execute(change).await.unwrap();
    }
    let state_path = dir.write("state.json", &state_file(states[0]));
    let second = run_blocking(read_args(&config_path, &catalog, Some(&state_path))).await;
    second.assert_ok();
    let last_state = second.states().last().cloned().cloned().unwrap();
    let streamed_to = state_lsn(&last_state);
    let (concurrent_streamed, changed): (Vec<&Value>, Vec<&Value>) =
        second.records().into_iter().partition(|r| id(r) >= 500_000);
    let mut concurrent: Vec<i64> = concurrent_copied
        .iter()
        .chain(&concurrent_streamed)
        .map(|r| id(r))
        .collect();
    concurrent.sort_unstable();
    assert_eq!(
        concurrent,
        (500_000..500_000 + i64::from(written)).collect::<Vec<i64>>(),
        "rows committed during the copy: each exactly once ({} in the copy)",
        concurrent_copied.len()
    );
    let changes: Vec<(i64, Option<f64>, bool, u64)> = changed
        .iter()
        .map(|r| {
            let d = &r["record"]["data"];
            assert!(d["_ab_cdc_updated_at"].is_string(), "{d}");
            (
                d["id"].as_i64().unwrap(),
                d["v"].as_f64(),
                d["_ab_cdc_deleted_at"].is_string(),
                d["_ab_cdc_lsn"].as_u64().unwrap(),
            )
        })
        .collect();
    let summary: Vec<(i64, Option<f64>, bool)> = changes
        .iter()
        .map(|&(id, v, del, _)| (id, v, del))
        .collect();
    assert_eq!(
        summary,
        vec![
            (100001, Some(1.5), false),
            (100002, Some(2.5), false),
            (7, Some(99.0), false),
            // The delete carries the key (replica identity: the primary key), other columns null.
            (8, None, true),
        ]
    );
    let lsns: Vec<u64> = changes.iter().map(|c| c.3).collect();
    assert!(
        lsns.windows(2).all(|w| w[0] < w[1]),
        "one commit each: {lsns:?}"
    );
    assert!(
        lsns[0] > copied_at && lsns[3] <= streamed_to,
        "{lsns:?} {copied_at} {streamed_to}"
    );
    slot_released(&db, &slot).await;
    assert_eq!(
        slot_flushed(&db, &slot).await,
        copied_at,
        "After loading Data: acknowledged only as far as the state the sync started from"
    );

    // Nothing new: nothing emitted, the same position.
    let state_path = dir.write("state.json", &state_file(&last_state));
    let third = run_blocking(read_args(&config_path, &catalog, Some(&state_path))).await;
    third.assert_ok();
    assert_eq!(third.records().len(), 0);
    assert!(state_lsn(third.states().last().unwrap()) >= streamed_to);
    slot_released(&db, &slot).await;
    cdc_cleanup(&url, &db, "hf_ab_pub", &slot).await;
}

/// A CDC sync SIGKILLed mid-stream, rerun with the last STATE it wrote: every change arrives
/// (nothing lost), and the only duplicates are changes after that STATE, with their LSN. With
/// `While reading Data` the slot is acknowledged, but never past an emitted STATE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_killed_mid_stream_loses_nothing_on_rerun() {
    let (url, slot, config) = cdc_fixture("hf_ab_cdckill", 10, "While reading Data").await;
    let db = pg(&url).await;
    let dir = Scratch::new("cdckill");
    let config_path = dir.write("config.json", &config);
    let streams = discover(&config_path);
    let catalog = dir.write(
        "catalog.json",
        &configured(&streams, &[("public", "m", "incremental")]),
    );
    let first = run_blocking(read_args(&config_path, &catalog, None)).await;
    first.assert_ok();
    let state_path = dir.write("state.json", &state_file(first.states()[0]));
    // 40 transactions of 250 rows: a STATE every ~4 of them.
    for t in 0..40 {
        db.execute(
            "INSERT INTO public.m SELECT '2026-01-02'::timestamptz + i * interval '1 second', i, 1
             FROM generate_series($1::int * 250 + 1000, $1::int * 250 + 1249) i",
            &[&t],
        )
        .await
        .unwrap();
    }
    let expected: BTreeSet<i64> = (1000..11_000).collect();
    let args = read_args(&config_path, &catalog, Some(&state_path));
    let killed = {
        let args = args.clone();
        tokio::task::spawn_blocking(move || {
            read_until_killed(args, |s| {
                s["state"]["sourceStats"]["recordCount"].as_f64() > Some(0.0)
            })
        })
        .await
        .unwrap()
    };
    let (before, state) = covered(&killed);
    let kill_lsn = state_lsn(&state);
    let ids = |lines: &[String]| -> Vec<(i64, u64)> {
        lines
            .iter()
            .filter(|l| l.starts_with("{\"type\":\"RECORD\""))
            .map(|l| {
                let d = &serde_json::from_str::<Value>(l).unwrap()["record"]["data"];
                (
                    d["id"].as_i64().unwrap(),
                    d["_ab_cdc_lsn"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let covered_ids = ids(&before);
    assert!(!covered_ids.is_empty() && covered_ids.len() < expected.len());
    assert!(covered_ids.iter().all(|&(_, lsn)| lsn <= kill_lsn));
    slot_released(&db, &slot).await;
    let flushed = slot_flushed(&db, &slot).await;
    assert!(
        flushed <= kill_lsn,
        "acknowledged {flushed} past the last STATE {kill_lsn}"
    );

    let state_path = dir.write("state.json", &state_file(&state));
    let rerun = run_blocking(read_args(&config_path, &catalog, Some(&state_path))).await;
    rerun.assert_ok();
    let rerun_ids = ids(&rerun.lines);
    assert!(
        rerun_ids.iter().all(|&(_, lsn)| lsn > kill_lsn),
        "the rerun repeats nothing the last STATE covered"
    );
    let all: BTreeSet<i64> = covered_ids.iter().chain(&rerun_ids).map(|r| r.0).collect();
    assert_eq!(all, expected, "nothing lost");
    assert_eq!(
        covered_ids.len() + rerun_ids.len(),
        expected.len(),
        "no duplicate"
    );
    slot_released(&db, &slot).await;
    cdc_cleanup(&url, &db, "hf_ab_pub", &slot).await;
}

/// A CDC config naming a publication that does not exist fails `check` and `read` with the name
/// and what to do, as does a stream the publication does not cover; a state whose slot was
/// dropped fails `read` as a config error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_without_publication_or_slot_fails_readably() {
    let (url, slot, mut config) = cdc_fixture("hf_ab_cdcbad", 10, "While reading Data").await;
    let db = pg(&url).await;
    let dir = Scratch::new("cdcbad");
    let good = dir.write("good.json", &config);
    let streams = discover(&good);
    let catalog = dir.write(
        "catalog.json",
        &configured(&streams, &[("public", "m", "incremental")]),
    );
    // A stream the publication does not cover: copied once, it would never change.
    db.batch_execute("CREATE TABLE public.unpublished (id int PRIMARY KEY)")
        .await
        .unwrap();
    let streams = discover(&good);
    let both = dir.write(
        "both.json",
        &configured(
            &streams,
            &[
                ("public", "m", "incremental"),
                ("public", "unpublished", "incremental"),
            ],
        ),
    );
    let read = run_blocking(read_args(&good, &both, None)).await;
    assert_eq!(read.code, Some(1));
    let error = &read.errors()[0]["trace"]["error"];
    assert_eq!(error["failure_type"], "config_error");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("does not cover public.unpublished:"),
        "{error}"
    );
    assert!(read.records().is_empty());

    config["replication_method"]["publication"] = json!("no_such_pub");
    let bad = dir.write("bad.json", &config);
    let check = run_blocking(vec![
        "check".into(),
        "--config".into(),
        path_str(&bad).into(),
    ])
    .await;
    let status = &check.of_type("CONNECTION_STATUS").next().unwrap()["connectionStatus"];
    assert_eq!(status["status"], "FAILED");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("publication \"no_such_pub\" does not exist"),
        "{status}"
    );
    let read = run_blocking(read_args(&bad, &catalog, None)).await;
    assert_eq!(read.code, Some(1));
    let errors = read.errors();
    assert_eq!(errors[0]["trace"]["error"]["failure_type"], "config_error");
    assert!(!read.stderr.contains("panicked"), "{}", read.stderr);

    // A state whose slot is gone: its changes cannot be had, so the connection must be reset.
    let state = dir.write(
        "state.json",
        &json!([{"type": "GLOBAL", "global": {"shared_state": {"state_version": 1, "lsn": 1},
                 "stream_states": [{"stream_descriptor": {"name": "m", "namespace": "public"},
                                    "stream_state": {}}]}}]),
    );
    server::cdc::teardown(&db, "unused", &slot).await.unwrap();
    let read = run_blocking(read_args(&good, &catalog, Some(&state))).await;
    assert_eq!(read.code, Some(1));
    let error = &read.errors()[0]["trace"]["error"];
    assert_eq!(error["failure_type"], "config_error");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("does not exist any more"),
        "{error}"
    );
    cdc_cleanup(&url, &db, "hf_ab_pub", &slot).await;
}
