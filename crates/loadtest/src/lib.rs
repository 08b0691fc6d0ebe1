//! The load generator behind `hyperflight-loadtest`: N concurrent Flight clients read random time
//! windows of a hypertable and check every read's row count against SQL, optionally while one fault
//! is injected (database restart, chunk drop, server restart).
//!
//! ```text
//!  setup (untimed)                        timed run (--duration / --requests)
//!  ───────────────                        ─────────────────────────────────────────────────────
//!  SQL: time dimension, chunks, range     client ×N: pick window ─► GetFlightInfo(CMD start/end)
//!  seeded windows                                    ─► DoGet every endpoint in parallel
//!  SQL: one width_bucket scan ─► rows per            ─► on UNAVAILABLE etc.: resume from the last
//!       (window ∩ chunk), cached                        batch's resume ticket (bounded retries)
//!                                                    ─► rows per endpoint == expectation?
//!                                         fault task: restart-db | drop-chunk | restart-server
//! ```
//!
//! Expectations are exact and cost one scan: every window bound and chunk bound becomes a threshold
//! of `width_bucket`, so the rows of any (window ∩ chunk) are a difference of two prefix sums. Reads
//! are checked per endpoint (= per chunk), so a discrepancy names its chunk. Retries are counted apart
//! from errors: a fault that the resume tickets absorb costs retries, not rows. The only *explained*
//! error is `NOT_FOUND` for the chunk that `--fault drop-chunk` dropped; its rows are reported as
//! dropped, not lost.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::TimestampMicrosecondType;
use arrow_flight::decode::DecodedPayload;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{Action, FlightClient, FlightDescriptor, Ticket};
use bytes::Bytes;
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use pgarrow::quote_ident;

/// Largest message a client accepts: a server batch is cut at 16 MiB of values, plus framing.
const MAX_MESSAGE: usize = 64 << 20;
/// Longest wait between two retries of one endpoint.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a spawned server may take to answer `health`.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `--db-restart-cmd` may run.
const DB_RESTART_TIMEOUT: Duration = Duration::from_secs(180);
/// Unexplained errors quoted in the report, at most.
const ERROR_SAMPLES: usize = 8;

/// A fault injected once during the run, at `--fault-at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    /// No fault.
    None,
    /// Run `--db-restart-cmd` (stop and start the database).
    RestartDb,
    /// Read a private copy of the table and drop its oldest chunk.
    DropChunk,
    /// Kill the server started with `--server-cmd` (SIGKILL) and start it again.
    RestartServer,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use clap::ValueEnum;
        match self.to_possible_value() {
            Some(v) => f.write_str(v.get_name()),
            None => write!(f, "{self:?}"),
        }
    }
}

/// What to run. Every loop is bounded: clients stop at `duration` (or after `requests`), reads still
/// running are cut `drain_timeout` later, and each endpoint is retried at most `retries` times.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Flight URL of the server under load.
    #[arg(
        long,
        default_value = "http://127.0.0.1:50051",
        env = "HYPERFLIGHT_LOADTEST_URL"
    )]
    pub url: String,
    /// PostgreSQL URL of the database the server serves: the data range and expected row counts
    /// come from it (and the private copy of `--fault drop-chunk` goes there).
    #[arg(
        long,
        env = "HYPERFLIGHT_LOADTEST_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// Hypertable to read, `schema.table`; its time dimension must be `timestamptz`.
    #[arg(long, default_value = "public.metrics")]
    pub table: String,
    /// Concurrent clients, each on its own connection.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub clients: u32,
    /// How long clients start new requests (`60s`, `500ms`, `2m`; a bare number is seconds).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Stop after this many requests in all (whichever of this and `--duration` comes first).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Seed for windows and their order; the default is random and printed, to repeat a run.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Distinct random windows to draw requests from (their expectations are computed up front).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub windows: u32,
    /// Retries per endpoint (and per GetFlightInfo) after a transient error, each from the last
    /// resume ticket received.
    #[arg(long, default_value_t = 10)]
    pub retries: u32,
    /// First retry delay; doubles per retry, at most 5 s, with jitter.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub retry_backoff: Duration,
    /// A stream that delivers nothing for this long is cut and resumed.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub stall_timeout: Duration,
    /// After `--duration`, how long running requests may take before they are cut (and fail).
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Fault to inject once.
    #[arg(long, value_enum, default_value_t = Fault::None)]
    pub fault: Fault,
    /// When to inject the fault, from the start of the timed run (default: 40% of `--duration`).
    #[arg(long, value_parser = parse_duration)]
    pub fault_at: Option<Duration>,
    /// Shell command that restarts the database, for `--fault restart-db`.
    #[arg(long)]
    pub db_restart_cmd: Option<String>,
    /// Shell command that runs the server in the foreground at `--url`: the load test starts it,
    /// waits for `health`, restarts it for `--fault restart-server`, and stops it at the end. Unless
    /// the environment sets `HYPERFLIGHT_TICKET_SECRET`, the server gets a fixed secret for the run,
    /// so tickets survive its restart.
    #[arg(long)]
    pub server_cmd: Option<String>,
    /// Where the started server's output goes (default: a file in the temp directory).
    #[arg(long)]
    pub server_log: Option<PathBuf>,
}

/// Why a run could not be set up or carried out (failed reads are not this: they are in the report).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The options contradict each other or name something malformed.
    #[error("invalid options: {0}")]
    Options(String),
    /// A setup or bookkeeping query failed.
    #[error("{context}: {source}")]
    Database {
        /// What the load test was doing.
        context: String,
        /// The driver's error.
        source: tokio_postgres::Error,
    },
    /// Anything else that prevents the run: server would not start, table unsuitable, …
    #[error("{0}")]
    Setup(String),
}

fn db_err(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> LoadError {
    let context = context.into();
    move |source| LoadError::Database { context, source }
}

/// Parses `60s`, `500ms`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 60s, 500ms or 2m"))?;
    let d = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    Ok(d)
}

impl Options {
    /// Checks what clap cannot: fault prerequisites, the URL scheme, the table name.
    pub fn validate(&self) -> Result<(), LoadError> {
        let bad = |m: String| Err(LoadError::Options(m));
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return bad(format!(
                "--url {:?} must start with http:// or https://",
                self.url
            ));
        }
        split_table(&self.table)?;
        if self.database_url.is_none() {
            return bad("--database-url is required (expected row counts come from SQL)".into());
        }
        if self.duration.is_zero() {
            return bad("--duration must be positive".into());
        }
        if self.requests == Some(0) {
            return bad("--requests must be positive".into());
        }
        match self.fault {
            Fault::RestartDb if self.db_restart_cmd.is_none() => {
                return bad("--fault restart-db needs --db-restart-cmd".into())
            }
            Fault::RestartServer if self.server_cmd.is_none() => {
                return bad("--fault restart-server needs --server-cmd".into())
            }
            _ => {}
        }
        if self.fault != Fault::None && self.fault_time() >= self.duration {
            return bad("--fault-at must be inside --duration".into());
        }
        Ok(())
    }

    fn fault_time(&self) -> Duration {
        self.fault_at.unwrap_or(self.duration * 2 / 5)
    }
}

fn split_table(table: &str) -> Result<(String, String), LoadError> {
    match table.split_once('.') {
        Some((s, t)) if !s.is_empty() && !t.is_empty() => Ok((s.to_string(), t.to_string())),
        _ => Err(LoadError::Options(format!(
            "--table {table:?} must be schema.table"
        ))),
    }
}

// ───────────────────────────── expectations ─────────────────────────────

/// One chunk of the table under load, bounds in µs since the epoch.
#[derive(Debug, Clone)]
struct ChunkRange {
    /// `schema.name`, as endpoint metadata names it.
    name: String,
    start: i64,
    end: i64,
}

/// A set of rows as the check sees it: how many, and the sum of their time values in µs. A resume
/// that repeats some rows and skips as many others keeps the count but changes the sum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Rows {
    count: u64,
    time_sum: i128,
}

impl std::ops::Add for Rows {
    type Output = Rows;
    fn add(self, o: Rows) -> Rows {
        Rows {
            count: self.count + o.count,
            time_sum: self.time_sum + o.time_sum,
        }
    }
}

impl std::ops::Sub for Rows {
    type Output = Rows;
    fn sub(self, o: Rows) -> Rows {
        Rows {
            count: self.count.saturating_sub(o.count),
            time_sum: self.time_sum - o.time_sum,
        }
    }
}

/// A request window `[start, end)` and the rows it must yield, per chunk it overlaps.
#[derive(Debug, Clone)]
struct Window {
    start: i64,
    end: i64,
    total: Rows,
    /// (index into the chunk list, expected rows) for every chunk overlapping the window.
    chunks: Vec<(usize, Rows)>,
}

/// Rows between sorted thresholds, from one `width_bucket` scan: `below[k]` = rows < `t[k]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Histogram {
    thresholds: Vec<i64>,
    below: Vec<Rows>,
}

impl Histogram {
    /// Builds it from `width_bucket` results (bucket, count, time sum): bucket 0 is below `t[0]`,
    /// bucket j in `[t[j-1], t[j])`.
    fn from_buckets(thresholds: Vec<i64>, buckets: &[(i64, i64, i128)]) -> Histogram {
        let mut per_bucket = vec![Rows::default(); thresholds.len() + 1];
        for &(bucket, n, time_sum) in buckets {
            if let Some(r) = usize::try_from(bucket)
                .ok()
                .and_then(|b| per_bucket.get_mut(b))
            {
                *r = *r
                    + Rows {
                        count: n.max(0) as u64,
                        time_sum,
                    };
            }
        }
        let mut below = Vec::with_capacity(thresholds.len());
        let mut sum = Rows::default();
        for r in &per_bucket[..thresholds.len()] {
            sum = sum + *r;
            below.push(sum);
        }
        Histogram { thresholds, below }
    }

    /// Rows in `[start, end)`; both must be thresholds.
    fn rows(&self, start: i64, end: i64) -> Option<Rows> {
        if start >= end {
            return Some(Rows::default());
        }
        let a = self.thresholds.binary_search(&start).ok()?;
        let b = self.thresholds.binary_search(&end).ok()?;
        Some(self.below[b] - self.below[a])
    }
}

/// Seeded windows inside `[min, max]`: lengths log-uniform from 1/1024 to 1/2 of the span (many
/// short reads, some long ones), and one in 32 covering everything. Bounds fall on any µs, so the
/// chunks at a window's edges are filtered in SQL.
fn draw_windows(rng: &mut StdRng, min: i64, max: i64, n: usize) -> Vec<(i64, i64)> {
    let span = max - min + 1;
    (0..n)
        .map(|_| {
            if span < 4 || rng.gen_ratio(1, 32) {
                return (min, max + 1);
            }
            let len = ((span as f64) * 2f64.powf(-rng.gen_range(1.0..10.0))).max(1.0) as i64;
            let start = rng.gen_range(min..=max + 1 - len);
            (start, start + len)
        })
        .collect()
}

fn windows_with_expectations(
    bounds: &[(i64, i64)],
    chunks: &[ChunkRange],
    hist: &Histogram,
) -> Result<Vec<Window>, LoadError> {
    let missing = || LoadError::Setup("internal: a window bound is not a threshold".into());
    bounds
        .iter()
        .map(|&(start, end)| {
            let total = hist.rows(start, end).ok_or_else(missing)?;
            let mut per_chunk = Vec::new();
            for (i, c) in chunks.iter().enumerate() {
                if c.start < end && c.end > start {
                    let rows = hist
                        .rows(c.start.max(start), c.end.min(end))
                        .ok_or_else(missing)?;
                    per_chunk.push((i, rows));
                }
            }
            let in_chunks = per_chunk
                .iter()
                .fold(Rows::default(), |acc, &(_, r)| acc + r);
            if in_chunks != total {
                return Err(LoadError::Setup(format!(
                    "{} rows of a window lie in no known chunk (was the table written during setup?)",
                    total.count.abs_diff(in_chunks.count)
                )));
            }
            Ok(Window {
                start,
                end,
                total,
                chunks: per_chunk,
            })
        })
        .collect()
}

/// The table under load, as the database describes it.
struct Target {
    schema: String,
    name: String,
    column: String,
    interval: String,
    chunks: Vec<ChunkRange>,
    min: i64,
    max: i64,
    rows: u64,
}

impl Target {
    fn sql_name(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    fn display_name(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

async fn describe(
    db: &tokio_postgres::Client,
    schema: &str,
    name: &str,
) -> Result<Target, LoadError> {
    let dims = db
        .query(
            "SELECT column_name::text, column_type::text, time_interval::text
             FROM timescaledb_information.dimensions
             WHERE hypertable_schema = $1 AND hypertable_name = $2 AND dimension_number = 1",
            &[&schema, &name],
        )
        .await
        .map_err(db_err(format!(
            "reading the time dimension of {schema}.{name}"
        )))?;
    let Some(dim) = dims.first() else {
        return Err(LoadError::Setup(format!(
            "{schema}.{name} is not a hypertable (the load test reads time windows of one)"
        )));
    };
    let (column, ty, interval): (String, String, Option<String>) =
        (dim.get(0), dim.get(1), dim.get(2));
    if ty != "timestamp with time zone" {
        return Err(LoadError::Setup(format!(
            "{schema}.{name}: time dimension {column:?} is {ty}; the load test needs timestamptz"
        )));
    }
    let chunks = db
        .query(
            "SELECT chunk_schema::text || '.' || chunk_name::text,
                    (extract(epoch FROM range_start) * 1000000)::int8,
                    (extract(epoch FROM range_end) * 1000000)::int8
             FROM timescaledb_information.chunks
             WHERE hypertable_schema = $1 AND hypertable_name = $2
             ORDER BY range_start",
            &[&schema, &name],
        )
        .await
        .map_err(db_err("listing chunks"))?
        .iter()
        .map(|r| ChunkRange {
            name: r.get(0),
            start: r.get(1),
            end: r.get(2),
        })
        .collect();
    let table = format!("{}.{}", quote_ident(schema), quote_ident(name));
    let col = quote_ident(&column);
    let range = db
        .query_one(
            &format!(
                "SELECT (extract(epoch FROM min({col})) * 1000000)::int8,
                        (extract(epoch FROM max({col})) * 1000000)::int8, count(*) FROM {table}"
            ),
            &[],
        )
        .await
        .map_err(db_err("reading the data range"))?;
    let (Some(min), Some(max)) = (
        range.get::<_, Option<i64>>(0),
        range.get::<_, Option<i64>>(1),
    ) else {
        return Err(LoadError::Setup(format!("{schema}.{name} has no rows")));
    };
    Ok(Target {
        schema: schema.into(),
        name: name.into(),
        column,
        interval: interval.unwrap_or_else(|| "1 day".into()),
        chunks,
        min,
        max,
        rows: range.get::<_, i64>(2).max(0) as u64,
    })
}

async fn histogram(
    db: &tokio_postgres::Client,
    target: &Target,
    thresholds: Vec<i64>,
) -> Result<Histogram, LoadError> {
    // Thresholds go in as µs and become timestamptz once (an InitPlan), so the scan compares
    // timestamps, and `epoch + n µs` is exact. The time sum is numeric, sent as text.
    let sql = format!(
        "SELECT width_bucket({col}, (SELECT array_agg(timestamptz 'epoch' + b * interval '1 microsecond' ORDER BY b)
                                     FROM unnest($1::int8[]) AS b))::int8,
                count(*), coalesce(sum((extract(epoch FROM {col}) * 1000000)::int8), 0)::text
         FROM {table} GROUP BY 1",
        col = quote_ident(&target.column),
        table = target.sql_name()
    );
    let rows = db
        .query(&sql, &[&thresholds])
        .await
        .map_err(db_err("counting rows per window"))?;
    let mut buckets = Vec::with_capacity(rows.len());
    for r in &rows {
        let sum: String = r.get(2);
        let sum = sum
            .parse::<i128>()
            .map_err(|_| LoadError::Setup(format!("unexpected time sum {sum:?}")))?;
        buckets.push((r.get(0), r.get(1), sum));
    }
    Ok(Histogram::from_buckets(thresholds, &buckets))
}

fn thresholds(bounds: &[(i64, i64)], chunks: &[ChunkRange]) -> Vec<i64> {
    let mut t: Vec<i64> = bounds
        .iter()
        .flat_map(|&(s, e)| [s, e])
        .chain(chunks.iter().flat_map(|c| [c.start, c.end]))
        .collect();
    t.sort_unstable();
    t.dedup();
    t
}

// ───────────────────────────── reads ─────────────────────────────

/// Why a call or stream failed: a gRPC code name or one of the load test's own.
#[derive(Debug, Clone)]
struct ReadError {
    code: &'static str,
    message: String,
    retryable: bool,
}

/// gRPC's name for a status code.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

impl From<FlightError> for ReadError {
    fn from(e: FlightError) -> Self {
        match e {
            FlightError::Tonic(status) => {
                // Transient: the server or database went away (UNAVAILABLE), the connection broke
                // mid-stream (tonic reports h2/transport failures as UNKNOWN or CANCELLED), or a
                // server-side limit was hit. Anything else repeats on retry, so it is final.
                let retryable = matches!(
                    status.code(),
                    Code::Unavailable
                        | Code::Unknown
                        | Code::Cancelled
                        | Code::Aborted
                        | Code::ResourceExhausted
                );
                ReadError {
                    code: code_name(status.code()),
                    message: status.message().to_string(),
                    retryable,
                }
            }
            other => ReadError {
                code: "DECODE",
                message: other.to_string(),
                retryable: false,
            },
        }
    }
}

fn stalled(what: &str, after: Duration) -> ReadError {
    ReadError {
        code: "STALLED",
        message: format!("{what}: nothing received for {after:?}"),
        retryable: true,
    }
}

/// A Flight client on `channel` that accepts the server's largest batches.
fn flight_client(channel: Channel) -> FlightClient {
    FlightClient::new_from_inner(
        FlightServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
    )
}

fn channel(url: &str) -> Result<Channel, LoadError> {
    Ok(Endpoint::from_shared(url.to_string())
        .map_err(|e| LoadError::Options(format!("--url {url:?}: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect_lazy())
}

/// Calls DoAction `name` once and returns the first result's body as text.
async fn action(channel: Channel, name: &str) -> Result<String, ReadError> {
    let mut client = flight_client(channel);
    let mut results = client.do_action(Action::new(name, Bytes::new())).await?;
    let mut text = String::new();
    if let Some(body) = results.next().await {
        text = String::from_utf8_lossy(&body?).into_owned();
    }
    Ok(text)
}

/// Asks the server at `url` for `health` once, within `limit`.
pub async fn probe_health(url: &str, limit: Duration) -> Result<String, LoadError> {
    let ch = channel(url)?;
    match tokio::time::timeout(limit, action(ch, "health")).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(e)) => Err(LoadError::Setup(format!(
            "health: {} {}",
            e.code, e.message
        ))),
        Err(_) => Err(LoadError::Setup(format!(
            "health: no answer within {limit:?}"
        ))),
    }
}

/// Everything the clients share.
struct Shared {
    table: Vec<String>,
    /// The time dimension, summed per endpoint for the checksum.
    time_column: String,
    windows: Vec<Window>,
    chunks: Vec<ChunkRange>,
    chunk_index: HashMap<String, usize>,
    /// The chunk `--fault drop-chunk` drops, once it starts dropping it.
    dropped: OnceLock<usize>,
    /// When the fault began; events after it are counted in the "after" column.
    fault_started: OnceLock<Instant>,
    retries: u32,
    retry_backoff: Duration,
    stall_timeout: Duration,
    stop_at: Instant,
    hard_deadline: Instant,
    max_requests: u64,
    requests_started: AtomicU64,
    /// Turns true when the caller's shutdown future completes: clients stop, running requests are cut.
    interrupted: watch::Receiver<bool>,
}

impl Shared {
    fn phase(&self) -> usize {
        usize::from(self.fault_started.get().is_some())
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .retry_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(MAX_BACKOFF);
        // Jitter spreads out the clients that all lost their streams at the same moment.
        base.mul_f64(rand::thread_rng().gen_range(0.5..1.5))
    }
}

/// One endpoint's read, across its retries.
#[derive(Debug, Default)]
struct EndpointRead {
    /// Rows up to the last resume point (plus the tail, once the stream ended cleanly).
    rows: Rows,
    bytes: u64,
    first_batch: Option<Instant>,
    /// Code of each retry, with the fault phase it happened in.
    retries: Vec<(&'static str, usize)>,
    /// Retries that went on from a resume ticket (the others started the endpoint over).
    resumed: u64,
    error: Option<ReadError>,
}

async fn read_endpoint(shared: &Shared, channel: Channel, ticket: Ticket) -> EndpointRead {
    let mut client = flight_client(channel);
    let mut read = EndpointRead::default();
    let mut resume: Option<Bytes> = None;
    let mut attempt = 0;
    loop {
        let t = resume
            .clone()
            .map(Ticket::new)
            .unwrap_or_else(|| ticket.clone());
        let mut pending = Rows::default();
        match stream_once(shared, &mut client, t, &mut read, &mut resume, &mut pending).await {
            Ok(()) => {
                read.rows = read.rows + pending;
                return read;
            }
            // Rows after the last resume ticket (`pending`) are read again by the retry.
            Err(e) if e.retryable && attempt < shared.retries => {
                attempt += 1;
                read.retries.push((e.code, shared.phase()));
                read.resumed += u64::from(resume.is_some());
                tracing::debug!(code = e.code, message = %e.message, attempt, rows = read.rows.count, resumable = resume.is_some(), "retrying endpoint");
                tokio::time::sleep(shared.backoff(attempt)).await;
            }
            Err(e) => {
                read.error = Some(e);
                return read;
            }
        }
    }
}

async fn stream_once(
    shared: &Shared,
    client: &mut FlightClient,
    ticket: Ticket,
    read: &mut EndpointRead,
    resume: &mut Option<Bytes>,
    pending: &mut Rows,
) -> Result<(), ReadError> {
    let stall = shared.stall_timeout;
    let stream = tokio::time::timeout(stall, client.do_get(ticket))
        .await
        .map_err(|_| stalled("DoGet", stall))??;
    let mut stream = stream.into_inner();
    loop {
        let next = tokio::time::timeout(stall, stream.next())
            .await
            .map_err(|_| stalled("stream", stall))?;
        let Some(data) = next else {
            return Ok(());
        };
        let data = data?;
        read.bytes += (data.inner.data_header.len() + data.inner.data_body.len()) as u64;
        if let DecodedPayload::RecordBatch(batch) = data.payload {
            read.first_batch.get_or_insert_with(Instant::now);
            let rows = Rows {
                count: batch.num_rows() as u64,
                time_sum: time_sum(&batch, &shared.time_column)?,
            };
            if data.inner.app_metadata.is_empty() {
                // No resume ticket (e.g. a compressed chunk): a retry starts before this batch.
                *pending = *pending + rows;
            } else {
                read.rows = read.rows + *pending + rows;
                *pending = Rows::default();
                *resume = Some(data.inner.app_metadata);
            }
        }
    }
}

/// Sum of the time column in µs (the half of the checksum that tells which rows arrived).
fn time_sum(batch: &RecordBatch, column: &str) -> Result<i128, ReadError> {
    let values = batch
        .column_by_name(column)
        .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
        .ok_or_else(|| ReadError {
            code: "DECODE",
            message: format!("batch has no Timestamp(µs) column {column:?}"),
            retryable: false,
        })?;
    Ok(values.iter().flatten().map(i128::from).sum())
}

/// The outcome of one request (one window).
#[derive(Debug, Default)]
struct RequestResult {
    plan_retries: Vec<(&'static str, usize)>,
    plan_error: Option<ReadError>,
    /// Chunks that overlap the window but got no endpoint.
    gaps: Vec<usize>,
    /// Endpoints naming no chunk of the window.
    unexpected: Vec<String>,
    endpoints: Vec<(usize, EndpointRead)>,
    first_batch: Option<Duration>,
    elapsed: Duration,
}

async fn request(shared: &Shared, channel: &Channel, w: &Window) -> RequestResult {
    let t0 = Instant::now();
    let mut result = RequestResult::default();
    let cmd = serde_json::json!({
        "table": shared.table,
        "start": rfc3339(w.start),
        "end": rfc3339(w.end),
    })
    .to_string();
    let mut client = flight_client(channel.clone());
    let mut attempt = 0;
    let info = loop {
        let call = client.get_flight_info(FlightDescriptor::new_cmd(cmd.clone()));
        let outcome = match tokio::time::timeout(shared.stall_timeout, call).await {
            Ok(r) => r.map_err(ReadError::from),
            Err(_) => Err(stalled("GetFlightInfo", shared.stall_timeout)),
        };
        match outcome {
            Ok(info) => break info,
            Err(e) if e.retryable && attempt < shared.retries => {
                attempt += 1;
                result.plan_retries.push((e.code, shared.phase()));
                tokio::time::sleep(shared.backoff(attempt)).await;
            }
            Err(e) => {
                result.plan_error = Some(e);
                result.elapsed = t0.elapsed();
                return result;
            }
        }
    };

    let mut planned = Vec::new();
    for e in &info.endpoint {
        let chunk = serde_json::from_slice::<serde_json::Value>(&e.app_metadata)
            .ok()
            .and_then(|m| m.get("chunk").and_then(|c| c.as_str()).map(str::to_string))
            .unwrap_or_default();
        match (shared.chunk_index.get(&chunk), &e.ticket) {
            (Some(&i), Some(t)) if w.chunks.iter().any(|&(c, _)| c == i) => {
                planned.push((i, t.clone()))
            }
            _ => result.unexpected.push(chunk),
        }
    }
    result.gaps = w
        .chunks
        .iter()
        .map(|&(c, _)| c)
        .filter(|c| !planned.iter().any(|(p, _)| p == c))
        .collect();

    let reads = planned
        .into_iter()
        .map(|(i, t)| async move { (i, read_endpoint(shared, channel.clone(), t).await) });
    result.endpoints = futures::future::join_all(reads).await;
    result.first_batch = result
        .endpoints
        .iter()
        .filter_map(|(_, r)| r.first_batch)
        .min()
        .map(|t| t - t0);
    result.elapsed = t0.elapsed();
    result
}

fn rfc3339(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_default()
}

// ───────────────────────────── accounting ─────────────────────────────

/// Counters of one client, merged into the report.
#[derive(Debug, Default)]
struct Tally {
    requests_ok: u64,
    requests_failed: u64,
    endpoints: u64,
    rows_received: u64,
    rows_verified: u64,
    bytes: u64,
    missing: u64,
    extra: u64,
    not_read: u64,
    plan_gap: u64,
    dropped_rows: u64,
    wrong_rows: u64,
    resumed: u64,
    /// Unexplained errors by code, before and after the fault began.
    errors: [BTreeMap<&'static str, u64>; 2],
    explained: BTreeMap<&'static str, u64>,
    retries: [BTreeMap<&'static str, u64>; 2],
    first_batch: Vec<Duration>,
    whole: Vec<Duration>,
    samples: Vec<String>,
}

impl Tally {
    fn error(&mut self, phase: usize, code: &'static str, detail: impl FnOnce() -> String) {
        *self.errors[phase].entry(code).or_default() += 1;
        if self.samples.len() < ERROR_SAMPLES {
            let d = detail();
            tracing::warn!("{code}: {d}");
            self.samples.push(format!("{code}: {d}"));
        }
    }

    fn record(&mut self, shared: &Shared, w: &Window, r: RequestResult) {
        let phase = shared.phase();
        let dropped = shared.dropped.get().copied();
        let where_ = || format!("window {} .. {}", rfc3339(w.start), rfc3339(w.end));
        for (code, p) in &r.plan_retries {
            *self.retries[*p].entry(code).or_default() += 1;
        }
        let mut ok = true;
        if let Some(e) = &r.plan_error {
            self.not_read += w.total.count;
            self.error(phase, e.code, || {
                format!("GetFlightInfo {}: {}", where_(), e.message)
            });
            self.requests_failed += 1;
            return;
        }
        for &c in &r.gaps {
            let rows = expected(w, c).count;
            if Some(c) == dropped {
                self.dropped_rows += rows;
            } else {
                ok = false;
                self.plan_gap += rows;
                self.error(phase, "PLAN_GAP", || {
                    format!(
                        "{}: no endpoint for chunk {} ({rows} rows)",
                        where_(),
                        shared.chunks[c].name
                    )
                });
            }
        }
        for name in &r.unexpected {
            ok = false;
            self.error(phase, "UNEXPECTED_ENDPOINT", || {
                format!(
                    "{}: endpoint for {name:?}, which does not overlap it",
                    where_()
                )
            });
        }
        for (c, e) in &r.endpoints {
            self.endpoints += 1;
            self.bytes += e.bytes;
            let (got, want) = (e.rows, expected(w, *c));
            self.rows_received += got.count;
            for (code, p) in &e.retries {
                *self.retries[*p].entry(code).or_default() += 1;
            }
            self.resumed += e.resumed;
            let chunk = &shared.chunks[*c].name;
            match &e.error {
                None if got == want => self.rows_verified += got.count,
                None if got.count == want.count => {
                    // Same count, other rows: some were repeated and as many skipped.
                    ok = false;
                    self.wrong_rows += 1;
                    self.error(phase, "ROWS_MISMATCH", || {
                        format!(
                            "{}, chunk {chunk}: {} rows as expected, but not the expected rows \
                             (sum of time differs by {} µs)",
                            where_(),
                            got.count,
                            got.time_sum - want.time_sum
                        )
                    });
                }
                None => {
                    ok = false;
                    self.missing += want.count.saturating_sub(got.count);
                    self.extra += got.count.saturating_sub(want.count);
                    self.error(phase, "ROW_COUNT_MISMATCH", || {
                        format!(
                            "{}, chunk {chunk}: {} rows, expected {}",
                            where_(),
                            got.count,
                            want.count
                        )
                    });
                }
                Some(err) if err.code == "NOT_FOUND" && Some(*c) == dropped => {
                    *self.explained.entry(err.code).or_default() += 1;
                    self.dropped_rows += want.count.saturating_sub(got.count);
                }
                Some(err) => {
                    ok = false;
                    self.not_read += want.count.saturating_sub(got.count);
                    self.extra += got.count.saturating_sub(want.count);
                    self.error(phase, err.code, || {
                        format!(
                            "{}, chunk {chunk}: {} (after {} rows)",
                            where_(),
                            err.message,
                            got.count
                        )
                    });
                }
            }
        }
        if ok {
            self.requests_ok += 1;
            self.whole.push(r.elapsed);
            if let Some(f) = r.first_batch {
                self.first_batch.push(f);
            }
        } else {
            self.requests_failed += 1;
        }
    }

    fn merge(&mut self, o: Tally) {
        self.requests_ok += o.requests_ok;
        self.requests_failed += o.requests_failed;
        self.endpoints += o.endpoints;
        self.rows_received += o.rows_received;
        self.rows_verified += o.rows_verified;
        self.bytes += o.bytes;
        self.missing += o.missing;
        self.extra += o.extra;
        self.not_read += o.not_read;
        self.plan_gap += o.plan_gap;
        self.dropped_rows += o.dropped_rows;
        self.resumed += o.resumed;
        self.wrong_rows += o.wrong_rows;
        for (mine, theirs) in self
            .errors
            .iter_mut()
            .chain(self.retries.iter_mut())
            .chain(std::iter::once(&mut self.explained))
            .zip(o.errors.into_iter().chain(o.retries).chain([o.explained]))
        {
            for (k, v) in theirs {
                *mine.entry(k).or_default() += v;
            }
        }
        self.first_batch.extend(o.first_batch);
        self.whole.extend(o.whole);
        for s in o.samples {
            if self.samples.len() < ERROR_SAMPLES {
                self.samples.push(s);
            }
        }
    }
}

fn expected(w: &Window, chunk: usize) -> Rows {
    w.chunks
        .iter()
        .find(|&&(c, _)| c == chunk)
        .map_or(Rows::default(), |&(_, r)| r)
}

async fn client_loop(shared: Arc<Shared>, id: u32, seed: u64, url: String) -> Tally {
    let mut tally = Tally::default();
    let channel = match channel(&url) {
        Ok(c) => c,
        Err(e) => {
            tally.error(0, "SETUP", || e.to_string());
            return tally;
        }
    };
    let mut rng = StdRng::seed_from_u64(seed ^ u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut interrupted = shared.interrupted.clone();
    loop {
        if Instant::now() >= shared.stop_at || *interrupted.borrow() {
            break;
        }
        if shared.requests_started.fetch_add(1, Ordering::Relaxed) >= shared.max_requests {
            break;
        }
        let w = &shared.windows[rng.gen_range(0..shared.windows.len())];
        let cut = tokio::select! {
            r = tokio::time::timeout_at(shared.hard_deadline, request(&shared, &channel, w)) => match r {
                Ok(r) => {
                    tally.record(&shared, w, r);
                    continue;
                }
                Err(_) => ("RUN_DEADLINE", "a request was still running at the end of --drain-timeout"),
            },
            _ = until_true(&mut interrupted) => ("INTERRUPTED", "the run was interrupted"),
        };
        tally.requests_failed += 1;
        tally.not_read += w.total.count;
        tally.error(shared.phase(), cut.0, || cut.1.into());
    }
    tally
}

/// Completes when `rx` turns true; never, if its sender is gone.
async fn until_true(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|&v| v).await.is_err() {
        std::future::pending::<()>().await;
    }
}

// ───────────────────────────── faults and the server process ─────────────────────────────

/// A server process started from `--server-cmd`.
struct ServerProcess {
    cmd: String,
    log: PathBuf,
    secret: Option<String>,
    child: Option<Child>,
}

impl ServerProcess {
    async fn start(&mut self, url: &str) -> Result<Duration, LoadError> {
        let t0 = Instant::now();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| LoadError::Setup(format!("server log {}: {e}", self.log.display())))?;
        let log2 = log
            .try_clone()
            .map_err(|e| LoadError::Setup(format!("server log: {e}")))?;
        let mut cmd = Command::new("sh");
        // `exec` makes the server the process we hold, so a kill reaches it and not a shell.
        cmd.arg("-c")
            .arg(format!("exec {}", self.cmd))
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2)
            .kill_on_drop(true);
        if let Some(s) = &self.secret {
            cmd.env("HYPERFLIGHT_TICKET_SECRET", s);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| LoadError::Setup(format!("cannot start --server-cmd: {e}")))?;
        let deadline = t0 + SERVER_START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(LoadError::Setup(format!(
                    "--server-cmd exited with {status} (log: {})",
                    self.log.display()
                )));
            }
            if probe_health(url, Duration::from_secs(2)).await.is_ok() {
                self.child = Some(child);
                return Ok(t0.elapsed());
            }
            if Instant::now() >= deadline {
                let _ = child.start_kill();
                return Err(LoadError::Setup(format!(
                    "the server from --server-cmd did not answer health at {url} within {SERVER_START_TIMEOUT:?} (log: {})",
                    self.log.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: the crash the restart fault simulates.
    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// SIGTERM, then SIGKILL if it has not stopped within 10 s.
    async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_err()
        {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}

/// What the fault did.
#[derive(Debug, Clone)]
pub struct FaultReport {
    /// The fault.
    pub fault: Fault,
    /// When it began, from the start of the timed run.
    pub at: Duration,
    /// How long applying it took (for restarts: until the service answered again).
    pub took: Duration,
    /// Whether it was applied as asked.
    pub applied: bool,
    /// What happened, in words.
    pub detail: String,
}

struct FaultContext {
    shared: Arc<Shared>,
    url: String,
    database_url: String,
    target: Arc<Target>,
    hist: Histogram,
    db_restart_cmd: Option<String>,
}

async fn inject(
    fault: Fault,
    cx: FaultContext,
    mut server: Option<ServerProcess>,
    at: Duration,
) -> (FaultReport, Option<ServerProcess>) {
    let t0 = Instant::now();
    cx.shared.fault_started.get_or_init(Instant::now);
    tracing::info!(%fault, "injecting fault");
    let outcome: Result<String, String> = match fault {
        Fault::None => Ok(String::new()),
        Fault::RestartDb => restart_db(cx.db_restart_cmd.as_deref().unwrap_or_default()).await,
        Fault::RestartServer => match server.as_mut() {
            Some(s) => {
                s.kill().await;
                let down = t0.elapsed();
                s.start(&cx.url)
                    .await
                    .map(|up| {
                        format!(
                            "server killed (SIGKILL) and started again; answering after {:.1} s",
                            (down + up).as_secs_f64()
                        )
                    })
                    .map_err(|e| e.to_string())
            }
            None => Err("no server process to restart".into()),
        },
        Fault::DropChunk => drop_oldest_chunk(&cx).await,
    };
    let (applied, detail) = match outcome {
        Ok(d) => (true, d),
        Err(e) => (false, e),
    };
    tracing::info!(applied, %detail, "fault done");
    let report = FaultReport {
        fault,
        at,
        took: t0.elapsed(),
        applied,
        detail,
    };
    (report, server)
}

async fn restart_db(cmd: &str) -> Result<String, String> {
    let run = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(DB_RESTART_TIMEOUT, run).await {
        Err(_) => Err(format!(
            "--db-restart-cmd did not finish within {DB_RESTART_TIMEOUT:?}"
        )),
        Ok(Err(e)) => Err(format!("cannot run --db-restart-cmd: {e}")),
        Ok(Ok(out)) if out.status.success() => Ok("database restarted by --db-restart-cmd".into()),
        Ok(Ok(out)) => Err(format!(
            "--db-restart-cmd failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

async fn drop_oldest_chunk(cx: &FaultContext) -> Result<String, String> {
    let target = &cx.target;
    let Some((victim, chunk)) = target
        .chunks
        .iter()
        .enumerate()
        .min_by_key(|(_, c)| c.start)
    else {
        return Err("the table has no chunk to drop".into());
    };
    let db = connect(&cx.database_url).await.map_err(|e| e.to_string())?;
    // From here on, NOT_FOUND for this chunk and plans without it are explained.
    cx.shared.dropped.get_or_init(|| victim);
    let dropped = db
        .query(
            "SELECT drop_chunks($1::text::regclass,
                                older_than => timestamptz 'epoch' + $2::int8 * interval '1 microsecond')::text",
            &[&target.sql_name(), &chunk.end],
        )
        .await
        .map_err(|e| format!("drop_chunks failed: {e}"))?;
    let names: Vec<String> = dropped.iter().map(|r| r.get(0)).collect();
    if names != [chunk.name.clone()] {
        return Err(format!(
            "drop_chunks dropped {names:?}, expected exactly {}",
            chunk.name
        ));
    }
    // New plans should not name the chunk any more; stale ones get NOT_FOUND (explained) anyway.
    let refreshed = match channel(&cx.url) {
        Ok(ch) => action(ch, "refresh").await.is_ok(),
        Err(_) => false,
    };
    // Recompute every expectation and check that exactly the dropped chunk's rows disappeared.
    let after = histogram(&db, target, cx.hist.thresholds.clone())
        .await
        .map_err(|e| e.to_string())?;
    let mut fell = 0;
    let mut mismatched = 0;
    for w in &cx.shared.windows {
        let now = after.rows(w.start, w.end);
        let gone = expected(w, victim);
        if now != Some(w.total - gone) {
            mismatched += 1;
        } else if gone.count > 0 {
            fell += 1;
        }
    }
    let chunk_rows = cx
        .hist
        .rows(chunk.start, chunk.end)
        .unwrap_or_default()
        .count;
    if mismatched > 0 {
        return Err(format!(
            "after dropping {}, {mismatched} window(s) changed by other than that chunk's rows",
            chunk.name
        ));
    }
    Ok(format!(
        "dropped oldest chunk {} ({chunk_rows} rows); server refresh {}; expectations recomputed: \
         {fell} of {} windows lost exactly that chunk's rows, the others are unchanged",
        chunk.name,
        if refreshed { "ok" } else { "failed" },
        cx.shared.windows.len()
    ))
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, LoadError> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(db_err("connecting to --database-url"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "load test's database connection ended");
        }
    });
    Ok(client)
}

/// A private copy of the source table, for `--fault drop-chunk`: dropping a chunk of the shared
/// table would change other users' data.
async fn create_copy(
    db: &tokio_postgres::Client,
    source: &Target,
    schema: &str,
) -> Result<(), LoadError> {
    let s = quote_ident(schema);
    let copy = format!("{s}.{}", quote_ident(&source.name));
    db.batch_execute(&format!(
        "SET client_min_messages = warning;
         DROP SCHEMA IF EXISTS {s} CASCADE; CREATE SCHEMA {s};
         CREATE TABLE {copy} (LIKE {src} INCLUDING DEFAULTS);",
        src = source.sql_name()
    ))
    .await
    .map_err(db_err("creating the private copy"))?;
    db.execute(
        "SELECT create_hypertable($1::text::regclass, by_range($2::text::name, $3::text::interval))",
        &[&copy, &source.column, &source.interval],
    )
    .await
    .map_err(db_err("making the private copy a hypertable"))?;
    db.batch_execute(&format!(
        "INSERT INTO {copy} SELECT * FROM {src}; ANALYZE {copy};",
        src = source.sql_name()
    ))
    .await
    .map_err(db_err("filling the private copy"))?;
    Ok(())
}

// ───────────────────────────── the run ─────────────────────────────

/// Figures of a finished run. [`Report::passed`] decides the exit code; `Display` prints it.
#[derive(Debug, Default)]
pub struct Report {
    /// Concurrent clients.
    pub clients: u32,
    /// Seed of the windows (repeat a run with `--seed`).
    pub seed: u64,
    /// Table read (the private copy under `--fault drop-chunk`).
    pub table: String,
    /// Its rows and chunks when the run began.
    pub table_rows: u64,
    /// Chunk count when the run began.
    pub chunks: usize,
    /// Distinct windows requests were drawn from.
    pub windows: usize,
    /// Wall time of the timed run, including the drain.
    pub elapsed: Duration,
    /// Requests whose every endpoint was verified (or explained).
    pub requests_ok: u64,
    /// Requests with an unexplained error or a row discrepancy.
    pub requests_failed: u64,
    /// Endpoints read.
    pub endpoints: u64,
    /// Rows received (up to the last resume point of failed reads).
    pub rows_received: u64,
    /// Rows in reads whose count matched the expectation.
    pub rows_verified: u64,
    /// Arrow IPC bytes received (header + body of every FlightData), including re-reads.
    pub bytes: u64,
    /// Rows short in reads that completed.
    pub missing: u64,
    /// Rows beyond the expectation (duplicates).
    pub extra: u64,
    /// Rows of failed reads never received.
    pub not_read: u64,
    /// Rows of chunks a plan left out.
    pub plan_gap: u64,
    /// Rows of the chunk `--fault drop-chunk` dropped, expected by a request but gone (explained).
    pub dropped_rows: u64,
    /// Endpoint retries that went on from a resume ticket rather than from the endpoint's start.
    pub resumed: u64,
    /// Completed reads with the expected count but other rows (the time checksum differs).
    pub wrong_rows: u64,
    /// Unexplained errors by code: before the fault (or all, without one) and after it began.
    pub errors: [BTreeMap<&'static str, u64>; 2],
    /// Explained errors by code (NOT_FOUND of the dropped chunk).
    pub explained: BTreeMap<&'static str, u64>,
    /// Retries by code, before and after the fault began.
    pub retries: [BTreeMap<&'static str, u64>; 2],
    /// Time to the first batch of each verified request, sorted.
    pub first_batch: Vec<Duration>,
    /// Time to the end of each verified request, sorted.
    pub whole: Vec<Duration>,
    /// The first few unexplained errors, in words.
    pub samples: Vec<String>,
    /// What the fault did, if one was asked for.
    pub fault: Option<FaultReport>,
    /// The run was cut short by the caller's shutdown.
    pub interrupted: bool,
}

impl Report {
    /// Rows that should have arrived and did not, for any unexplained reason.
    pub fn lost_rows(&self) -> u64 {
        self.missing + self.not_read + self.plan_gap
    }

    /// Unexplained errors, all codes and phases.
    pub fn unexplained_errors(&self) -> u64 {
        self.errors.iter().flat_map(|m| m.values()).sum()
    }

    /// Retries, all codes and phases.
    pub fn total_retries(&self) -> u64 {
        self.retries.iter().flat_map(|m| m.values()).sum()
    }

    /// Every read verified or explained, nothing lost or repeated, the fault (if any) applied.
    pub fn passed(&self) -> bool {
        self.unexplained_errors() == 0
            && self.lost_rows() == 0
            && self.extra == 0
            && self.requests_ok > 0
            && self.fault.as_ref().is_none_or(|f| f.applied)
            && !self.interrupted
    }
}

/// Nearest-rank percentile of sorted durations, in ms.
fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

fn counts(m: &BTreeMap<&'static str, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn merged(ms: &[BTreeMap<&'static str, u64>; 2]) -> BTreeMap<&'static str, u64> {
    let mut all = ms[0].clone();
    for (k, v) in &ms[1] {
        *all.entry(k).or_default() += v;
    }
    all
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        writeln!(
            f,
            "load test: {} clients, {:.1} s, {} ({} rows, {} chunks), {} windows, seed {}",
            self.clients,
            self.elapsed.as_secs_f64(),
            self.table,
            self.table_rows,
            self.chunks,
            self.windows,
            self.seed
        )?;
        if self.interrupted {
            writeln!(f, "INTERRUPTED before the end of the run")?;
        }
        if self.requests_ok == 0 {
            writeln!(f, "NO REQUEST was verified: nothing was tested")?;
        }
        if let Some(fr) = &self.fault {
            writeln!(
                f,
                "fault: {} at {:.1} s, took {:.1} s, {}: {}",
                fr.fault,
                fr.at.as_secs_f64(),
                fr.took.as_secs_f64(),
                if fr.applied { "applied" } else { "NOT APPLIED" },
                fr.detail
            )?;
        }
        writeln!(
            f,
            "requests: {} ({} verified, {} failed), endpoints read: {}",
            self.requests_ok + self.requests_failed,
            self.requests_ok,
            self.requests_failed,
            self.endpoints
        )?;
        writeln!(
            f,
            "rows: {} received, {} verified by count and time checksum per chunk ({:.0} rows/s)",
            self.rows_received,
            self.rows_verified,
            self.rows_received as f64 / secs
        )?;
        writeln!(
            f,
            "throughput: {:.1} MB/s ({:.1} MB)",
            self.bytes as f64 / 1e6 / secs,
            self.bytes as f64 / 1e6
        )?;
        for (name, v) in [
            ("first batch", &self.first_batch),
            ("whole read", &self.whole),
        ] {
            writeln!(
                f,
                "latency {name}: p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms",
                percentile_ms(v, 50.0),
                percentile_ms(v, 95.0),
                percentile_ms(v, 99.0)
            )?;
        }
        let split = |ms: &[BTreeMap<&'static str, u64>; 2]| match &self.fault {
            Some(_) => format!(
                "{} (before the fault: {}; after: {})",
                counts(&merged(ms)),
                counts(&ms[0]),
                counts(&ms[1])
            ),
            None => counts(&merged(ms)),
        };
        writeln!(f, "errors (unexplained): {}", split(&self.errors))?;
        writeln!(f, "errors (explained): {}", counts(&self.explained))?;
        writeln!(
            f,
            "retries: {} — {}; {} endpoint retries went on from a resume ticket",
            self.total_retries(),
            split(&self.retries),
            self.resumed
        )?;
        if self
            .fault
            .as_ref()
            .is_some_and(|r| r.fault == Fault::DropChunk)
        {
            writeln!(
                f,
                "rows of the dropped chunk (explained, not lost): {}",
                self.dropped_rows
            )?;
        }
        for s in &self.samples {
            writeln!(f, "  e.g. {s}")?;
        }
        if self.unexplained_errors() == 0 && self.lost_rows() == 0 && self.extra == 0 {
            write!(f, "lost rows: 0")
        } else {
            write!(
                f,
                "lost rows: NOT VERIFIED — {} missing ({} short in completed reads, {} in failed \
                 reads, {} never planned), {} extra, {} reads with other rows than expected, {} \
                 unexplained errors",
                self.lost_rows(),
                self.missing,
                self.not_read,
                self.plan_gap,
                self.extra,
                self.wrong_rows,
                self.unexplained_errors()
            )
        }
    }
}

/// Runs the load test: setup, the timed run with its fault, cleanup. When `shutdown` completes
/// (the binary passes SIGINT/SIGTERM), clients stop, running requests are cut and counted as failed,
/// and cleanup still runs. `Err` means the run could not be carried out; a run with failed reads is
/// an `Ok` report that did not pass.
pub async fn run(
    opts: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Report, LoadError> {
    opts.validate()?;
    let (interrupt, interrupted) = watch::channel(false);
    let watcher = tokio::spawn(async move {
        shutdown.await;
        tracing::warn!("interrupted: stopping clients, then cleaning up");
        let _ = interrupt.send(true);
    });
    let database_url = opts.database_url.clone().unwrap_or_default();
    let (schema, name) = split_table(&opts.table)?;
    let db = connect(&database_url).await?;
    let source = describe(&db, &schema, &name).await?;

    let copy_schema = (opts.fault == Fault::DropChunk)
        .then(|| format!("hyperflight_loadtest_{}", std::process::id()));
    let target = match &copy_schema {
        Some(s) => {
            tracing::info!(schema = %s, rows = source.rows, "creating the private copy for drop-chunk");
            create_copy(&db, &source, s).await?;
            describe(&db, s, &name).await?
        }
        None => source,
    };

    let mut server = opts.server_cmd.as_ref().map(|cmd| ServerProcess {
        cmd: cmd.clone(),
        log: opts.server_log.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!(
                "hyperflight-loadtest-server-{}.log",
                std::process::id()
            ))
        }),
        // One secret for both lives of the server, so tickets from the first stay valid.
        secret: std::env::var_os("HYPERFLIGHT_TICKET_SECRET")
            .is_none()
            .then(|| format!("loadtest-{:032x}", rand::thread_rng().gen::<u128>())),
        child: None,
    });
    let outcome = run_with(&opts, &db, target, server.as_mut(), interrupted).await;
    watcher.abort();

    if let Some(s) = server.as_mut() {
        s.stop().await;
    }
    if let Some(s) = &copy_schema {
        // A fresh connection: the first may have died with a database restart.
        let dropped = match connect(&database_url).await {
            Ok(c) => c
                .batch_execute(&format!(
                    "SET client_min_messages = warning; DROP SCHEMA IF EXISTS {} CASCADE",
                    quote_ident(s)
                ))
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = dropped {
            tracing::warn!(schema = %s, error = %e, "could not drop the private copy");
        }
    }
    outcome
}

async fn run_with(
    opts: &Options,
    db: &tokio_postgres::Client,
    target: Target,
    mut server: Option<&mut ServerProcess>,
    interrupted: watch::Receiver<bool>,
) -> Result<Report, LoadError> {
    let seed = opts.seed.unwrap_or_else(|| rand::thread_rng().gen());
    let mut rng = StdRng::seed_from_u64(seed);
    let bounds = draw_windows(&mut rng, target.min, target.max, opts.windows as usize);
    let t = Instant::now();
    let hist = histogram(db, &target, thresholds(&bounds, &target.chunks)).await?;
    let windows = windows_with_expectations(&bounds, &target.chunks, &hist)?;
    tracing::info!(
        table = %target.display_name(),
        rows = target.rows,
        chunks = target.chunks.len(),
        windows = windows.len(),
        seconds = t.elapsed().as_secs_f64(),
        "expectations ready"
    );

    if let Some(s) = server.as_deref_mut() {
        let took = s.start(&opts.url).await?;
        tracing::info!(seconds = took.as_secs_f64(), log = %s.log.display(), "server started");
    }
    probe_health(&opts.url, Duration::from_secs(10)).await?;
    // Discovery is cached: make a private copy created a moment ago visible.
    if opts.fault == Fault::DropChunk {
        action(channel(&opts.url)?, "refresh")
            .await
            .map_err(|e| LoadError::Setup(format!("refresh: {} {}", e.code, e.message)))?;
    }

    let start = Instant::now();
    let stop_at = start + opts.duration;
    let shared = Arc::new(Shared {
        table: vec![target.schema.clone(), target.name.clone()],
        time_column: target.column.clone(),
        windows,
        chunk_index: target
            .chunks
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect(),
        chunks: target.chunks.clone(),
        dropped: OnceLock::new(),
        fault_started: OnceLock::new(),
        retries: opts.retries,
        retry_backoff: opts.retry_backoff,
        stall_timeout: opts.stall_timeout,
        stop_at,
        hard_deadline: stop_at + opts.drain_timeout,
        max_requests: opts.requests.unwrap_or(u64::MAX),
        requests_started: AtomicU64::new(0),
        interrupted,
    });
    let target = Arc::new(target);

    let clients: Vec<_> = (0..opts.clients)
        .map(|id| tokio::spawn(client_loop(shared.clone(), id, seed, opts.url.clone())))
        .collect();

    let mut fault = None;
    let mut server_back = None;
    if opts.fault != Fault::None {
        let at = opts.fault_time();
        let cx = FaultContext {
            shared: shared.clone(),
            url: opts.url.clone(),
            database_url: opts.database_url.clone().unwrap_or_default(),
            target: target.clone(),
            hist: hist.clone(),
            db_restart_cmd: opts.db_restart_cmd.clone(),
        };
        // The server process moves into the fault task that restarts it, and comes back after.
        let restarts = opts.fault == Fault::RestartServer;
        let owned = server
            .as_deref_mut()
            .filter(|_| restarts)
            .map(|s| ServerProcess {
                cmd: s.cmd.clone(),
                log: s.log.clone(),
                secret: s.secret.clone(),
                child: s.child.take(),
            });
        let fault_kind = opts.fault;
        fault = Some(tokio::spawn(async move {
            tokio::time::sleep_until(start + at).await;
            inject(fault_kind, cx, owned, at).await
        }));
    }

    let mut tally = Tally::default();
    for c in clients {
        match c.await {
            Ok(t) => tally.merge(t),
            Err(e) => tally.error(0, "PANIC", || format!("client task: {e}")),
        }
    }
    let elapsed = start.elapsed();
    let fault_report = match fault {
        // The run ended (e.g. at --requests) before the fault was due: do not inject it any more.
        Some(task) if shared.fault_started.get().is_none() => {
            task.abort();
            Some(FaultReport {
                fault: opts.fault,
                at: opts.fault_time(),
                took: Duration::ZERO,
                applied: false,
                detail: "the run ended before --fault-at".into(),
            })
        }
        Some(task) => match task.await {
            Ok((report, s)) => {
                server_back = s;
                Some(report)
            }
            Err(e) => Some(FaultReport {
                fault: opts.fault,
                at: opts.fault_time(),
                took: Duration::ZERO,
                applied: false,
                detail: format!("fault task failed: {e}"),
            }),
        },
        None => None,
    };
    if let (Some(s), Some(back)) = (server, server_back) {
        s.child = back.child;
    }
    tally.first_batch.sort_unstable();
    tally.whole.sort_unstable();
    let interrupted = *shared.interrupted.borrow();
    Ok(Report {
        clients: opts.clients,
        seed,
        table: target.display_name(),
        table_rows: target.rows,
        chunks: target.chunks.len(),
        windows: shared.windows.len(),
        elapsed,
        requests_ok: tally.requests_ok,
        requests_failed: tally.requests_failed,
        endpoints: tally.endpoints,
        rows_received: tally.rows_received,
        rows_verified: tally.rows_verified,
        bytes: tally.bytes,
        missing: tally.missing,
        extra: tally.extra,
        not_read: tally.not_read,
        plan_gap: tally.plan_gap,
        dropped_rows: tally.dropped_rows,
        resumed: tally.resumed,
        wrong_rows: tally.wrong_rows,
        errors: tally.errors,
        explained: tally.explained,
        retries: tally.retries,
        first_batch: tally.first_batch,
        whole: tally.whole,
        samples: tally.samples,
        fault: fault_report,
        interrupted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("60"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in [
            "",
            "s",
            "1.5s",
            "-1s",
            "10 parsecs",
            "99999999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn histogram_counts_between_thresholds() {
        // Thresholds 10, 20, 30; rows: 3 below 10, 5 in [10,20), 7 in [20,30), 11 at/after 30.
        let h = Histogram::from_buckets(
            vec![10, 20, 30],
            &[(0, 3, 15), (1, 5, 75), (2, 7, 175), (3, 11, 400)],
        );
        assert_eq!(h.rows(10, 20), Some(r(5, 75)));
        assert_eq!(h.rows(10, 30), Some(r(12, 250)));
        assert_eq!(h.rows(20, 20), Some(Rows::default()));
        assert_eq!(h.rows(30, 10), Some(Rows::default()));
        assert_eq!(h.rows(10, 25), None, "not a threshold");
        // Buckets missing from the result (no rows) count as empty; nonsense buckets are ignored.
        let h = Histogram::from_buckets(vec![1, 2], &[(2, 4, 8), (-1, 9, 9), (7, 9, 9)]);
        assert_eq!(h.rows(1, 2), Some(Rows::default()));
    }

    #[test]
    fn windows_are_seeded_and_inside_the_range() {
        let draw = |seed| draw_windows(&mut StdRng::seed_from_u64(seed), 1_000, 9_000_000, 500);
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        for (s, e) in draw(7) {
            assert!(1_000 <= s && s < e && e <= 9_000_001, "{s}..{e}");
        }
        assert_eq!(
            draw_windows(&mut StdRng::seed_from_u64(1), 5, 5, 3),
            vec![(5, 6); 3]
        );
    }

    #[test]
    fn expectations_split_windows_by_chunk() {
        let chunks = vec![
            ChunkRange {
                name: "a".into(),
                start: 0,
                end: 100,
            },
            ChunkRange {
                name: "b".into(),
                start: 100,
                end: 200,
            },
        ];
        let bounds = vec![(50, 150), (0, 200)];
        let t = thresholds(&bounds, &chunks);
        assert_eq!(t, vec![0, 50, 100, 150, 200]);
        // 10 rows per threshold interval.
        let h = Histogram::from_buckets(t, &[(1, 10, 1), (2, 10, 2), (3, 10, 3), (4, 10, 4)]);
        let w = windows_with_expectations(&bounds, &chunks, &h).unwrap();
        assert_eq!(w[0].total, r(20, 5));
        assert_eq!(w[0].chunks, vec![(0, r(10, 2)), (1, r(10, 3))]);
        assert_eq!(w[1].total, r(40, 10));
        // A row outside every chunk is a setup error, not a silent discrepancy later.
        let h = Histogram::from_buckets(vec![0, 50, 100, 150, 200], &[(1, 10, 0), (5, 1, 0)]);
        assert!(windows_with_expectations(&[(0, 250)], &chunks, &h).is_err());
    }

    fn r(count: u64, time_sum: i128) -> Rows {
        Rows { count, time_sum }
    }

    /// `n` rows whose times sum to 7n (a stand-in for the real checksum).
    fn n(count: u64) -> Rows {
        r(count, 7 * i128::from(count))
    }

    fn window(counts: &[u64]) -> Window {
        let chunks: Vec<(usize, Rows)> = counts.iter().map(|&c| n(c)).enumerate().collect();
        Window {
            start: 0,
            end: 10,
            total: chunks.iter().fold(Rows::default(), |a, c| a + c.1),
            chunks,
        }
    }

    fn shared(chunks: usize) -> Shared {
        let now = Instant::now();
        Shared {
            table: vec!["s".into(), "t".into()],
            time_column: "time".into(),
            windows: vec![],
            chunks: (0..chunks)
                .map(|i| ChunkRange {
                    name: format!("c{i}"),
                    start: i as i64,
                    end: i as i64 + 1,
                })
                .collect(),
            chunk_index: HashMap::new(),
            dropped: OnceLock::new(),
            fault_started: OnceLock::new(),
            retries: 3,
            retry_backoff: Duration::from_millis(1),
            stall_timeout: Duration::from_secs(1),
            stop_at: now,
            hard_deadline: now,
            max_requests: 1,
            requests_started: AtomicU64::new(0),
            interrupted: watch::channel(false).1,
        }
    }

    fn read(rows: u64, error: Option<&'static str>) -> EndpointRead {
        EndpointRead {
            rows: n(rows),
            error: error.map(|code| ReadError {
                code,
                message: "m".into(),
                retryable: false,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn accounting_separates_verified_lost_and_explained() {
        let s = shared(3);
        let w = window(&[10, 20, 30]);
        let mut t = Tally::default();
        t.record(
            &s,
            &w,
            RequestResult {
                endpoints: vec![
                    (0, read(10, None)),
                    (1, read(20, None)),
                    (2, read(30, None)),
                ],
                ..Default::default()
            },
        );
        assert_eq!((t.requests_ok, t.rows_verified), (1, 60));

        // Short read, failed read, a chunk never planned: all lost and all unexplained.
        t.record(
            &s,
            &w,
            RequestResult {
                gaps: vec![2],
                endpoints: vec![(0, read(9, None)), (1, read(5, Some("UNAVAILABLE")))],
                ..Default::default()
            },
        );
        assert_eq!((t.missing, t.not_read, t.plan_gap), (1, 15, 30));
        assert_eq!(t.requests_failed, 1);
        assert_eq!(t.errors[0].values().sum::<u64>(), 3);

        // The right count of the wrong rows (a resume that repeats and skips) is caught too.
        let mut swapped = read(10, None);
        swapped.rows.time_sum += 1;
        t.record(
            &s,
            &w,
            RequestResult {
                endpoints: vec![(0, swapped), (1, read(20, None)), (2, read(30, None))],
                ..Default::default()
            },
        );
        assert_eq!((t.wrong_rows, t.requests_failed), (1, 2));
        assert_eq!(t.errors[0].get("ROWS_MISMATCH"), Some(&1));

        // Once chunk 0 is being dropped, its NOT_FOUND and its absence are explained.
        let mut t = Tally::default();
        s.dropped.get_or_init(|| 0);
        s.fault_started.get_or_init(Instant::now);
        t.record(
            &s,
            &w,
            RequestResult {
                endpoints: vec![
                    (0, read(4, Some("NOT_FOUND"))),
                    (1, read(20, None)),
                    (2, read(30, None)),
                ],
                ..Default::default()
            },
        );
        t.record(
            &s,
            &w,
            RequestResult {
                gaps: vec![0],
                endpoints: vec![(1, read(20, None)), (2, read(30, None))],
                ..Default::default()
            },
        );
        assert_eq!(t.requests_ok, 2);
        assert_eq!(t.dropped_rows, 6 + 10);
        assert_eq!(t.explained.get("NOT_FOUND"), Some(&1));
        assert!(t.errors.iter().all(|m| m.is_empty()));
        // NOT_FOUND for a chunk that was not dropped stays unexplained.
        t.record(
            &s,
            &w,
            RequestResult {
                endpoints: vec![
                    (0, read(10, None)),
                    (1, read(0, Some("NOT_FOUND"))),
                    (2, read(30, None)),
                ],
                ..Default::default()
            },
        );
        assert_eq!(t.errors[1].get("NOT_FOUND"), Some(&1));
    }

    #[test]
    fn report_prints_lost_rows_zero_only_when_all_verified() {
        let mut r = Report {
            requests_ok: 3,
            ..Default::default()
        };
        assert!(r.passed());
        assert!(r.to_string().ends_with("lost rows: 0"));
        r.errors[0].insert("UNAVAILABLE", 1);
        assert!(!r.passed());
        let text = r.to_string();
        assert!(!text.lines().any(|l| l == "lost rows: 0"), "{text}");
        r.errors[0].clear();
        r.extra = 2;
        assert!(!r.passed());
        assert!(r.to_string().contains("lost rows: NOT VERIFIED"));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&v, 50.0), 50.0);
        assert_eq!(percentile_ms(&v, 99.0), 99.0);
        assert_eq!(percentile_ms(&v[..1], 95.0), 1.0);
        assert_eq!(percentile_ms(&[], 50.0), 0.0);
    }

    #[test]
    fn options_need_what_their_fault_needs() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            o: Options,
        }
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("lt").chain(args.iter().copied()))
                .map(|c| c.o)
                .unwrap()
        };
        let base = ["--database-url", "postgres://x@127.0.0.1/db"];
        assert!(parse(&base).validate().is_ok());
        let with = |extra: &[&str]| {
            let mut a = base.to_vec();
            a.extend_from_slice(extra);
            parse(&a).validate()
        };
        assert!(with(&["--fault", "restart-db"]).is_err());
        assert!(with(&["--fault", "restart-db", "--db-restart-cmd", "true"]).is_ok());
        assert!(with(&["--fault", "restart-server"]).is_err());
        assert!(with(&["--fault", "drop-chunk", "--fault-at", "61s"]).is_err());
        assert!(with(&["--table", "metrics"]).is_err());
        assert!(with(&["--url", "127.0.0.1:1"]).is_err());
        assert!(parse(&[]).validate().is_err(), "no database URL");
    }
}
