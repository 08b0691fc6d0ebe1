//! `hyperflight-airbyte`, run as a process against the real cluster: spec/check/discover, a full
//! refresh equal to SQL, a SIGKILLed read resumed from its last STATE (whole chunks and mid-chunk
//! resume tickets), incremental reads, and failures that a person can read.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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
    ] {
        assert!(props.get(key).is_some(), "spec lacks {key}");
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
    assert_eq!(r.code, Some(0), "{}\n{:?}", r.stderr, r.errors());

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
    assert_eq!(
        second.code,
        Some(0),
        "{}\n{:?}",
        second.stderr,
        second.errors()
    );
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
    assert_eq!(r.code, Some(0), "{}\n{:?}", r.stderr, r.errors());
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
        assert_eq!(r.code, Some(0), "{}\n{:?}", r.stderr, r.errors());
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
    assert_eq!(r.code, Some(0), "{}\n{:?}", r.stderr, r.errors());
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
    assert_eq!(r.code, Some(0), "{}\n{:?}", r.stderr, r.errors());
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
