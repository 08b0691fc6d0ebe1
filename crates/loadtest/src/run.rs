//! The run: setup (table, private copy, server), the timed run (clients and the fault task),
//! cleanup, and what the clients share.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use protocol::client::RetryPolicy;
use protocol::{ActionName, TableRef};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::expect::{
    connect, describe, draw_windows, histogram, thresholds, windows_with_expectations, ChunkRange,
    Histogram, Target, Window,
};
use crate::fault::{create_copy, drop_copy, inject, FaultContext, FaultReport, ServerProcess};
use crate::options::{Fault, Options};
use crate::reads::{action, connection, request};
use crate::report::Report;
use crate::tally::Tally;
use crate::LoadError;

/// Longest wait between two retries of one endpoint.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Everything the clients share.
pub(crate) struct Shared {
    /// The table every request names.
    pub(crate) table: TableRef,
    /// The time dimension, summed per endpoint for the checksum.
    pub(crate) time_column: String,
    pub(crate) windows: Vec<Window>,
    pub(crate) chunks: Vec<ChunkRange>,
    /// Chunk name (as endpoint metadata gives it) → index into `chunks`.
    pub(crate) chunk_index: HashMap<String, usize>,
    /// The chunk `--fault drop-chunk` drops, once it starts dropping it.
    pub(crate) dropped: OnceLock<usize>,
    /// When the fault began; events after it are counted in the "after" column.
    pub(crate) fault_started: OnceLock<Instant>,
    /// Retries, backoff and stall limit of every plan and endpoint read.
    pub(crate) policy: RetryPolicy,
    /// Clients start no request after this.
    stop_at: Instant,
    /// Requests still running now are cut.
    hard_deadline: Instant,
    max_requests: u64,
    requests_started: AtomicU64,
    /// Turns true when the caller's shutdown future completes: clients stop, running requests are cut.
    interrupted: watch::Receiver<bool>,
}

impl Shared {
    fn new(
        opts: &Options,
        target: &Target,
        windows: Vec<Window>,
        start: Instant,
        interrupted: watch::Receiver<bool>,
    ) -> Shared {
        let stop_at = start + opts.duration;
        Shared {
            table: TableRef::new(&target.schema, &target.name),
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
            policy: RetryPolicy {
                retries: opts.retries,
                backoff: opts.retry_backoff,
                max_backoff: MAX_BACKOFF,
                stall: Some(opts.stall_timeout),
            },
            stop_at,
            hard_deadline: stop_at + opts.drain_timeout,
            max_requests: opts.requests.unwrap_or(u64::MAX),
            requests_started: AtomicU64::new(0),
            interrupted,
        }
    }

    /// 0 before the fault began (or without one), 1 after.
    pub(crate) fn phase(&self) -> usize {
        usize::from(self.fault_started.get().is_some())
    }

    /// A run over `chunks` one-µs chunks `c0`, `c1`, …, with no windows and fast retries.
    #[cfg(test)]
    pub(crate) fn for_test(chunks: usize) -> Shared {
        let now = Instant::now();
        Shared {
            table: TableRef::new("s", "t"),
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
            policy: RetryPolicy {
                retries: 3,
                backoff: Duration::from_millis(1),
                max_backoff: MAX_BACKOFF,
                stall: Some(Duration::from_secs(1)),
            },
            stop_at: now,
            hard_deadline: now,
            max_requests: 1,
            requests_started: AtomicU64::new(0),
            interrupted: watch::channel(false).1,
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
    let (schema, name) = opts.schema_and_table()?;
    let db = connect(&database_url).await?;
    let source = describe(&db, &schema, &name).await?;

    // The copy's name is this process's: two load tests at once never share one.
    let copy_schema = (opts.fault == Fault::DropChunk)
        .then(|| format!("hyperflight_loadtest_{}", std::process::id()));
    let mut server = opts
        .server_cmd
        .as_deref()
        .map(|cmd| ServerProcess::new(cmd, opts.server_log.clone()));
    let outcome = match target(&db, source, copy_schema.as_deref()).await {
        Ok(target) => run_with(&opts, &db, target, &mut server, interrupted).await,
        Err(e) => Err(e),
    };
    watcher.abort();

    if let Some(s) = server.as_mut() {
        s.stop().await;
    }
    if let Some(s) = &copy_schema {
        drop_copy(&database_url, s).await;
    }
    outcome
}

/// The table to read: `source`, or its private copy in `copy_schema`.
async fn target(
    db: &tokio_postgres::Client,
    source: Target,
    copy_schema: Option<&str>,
) -> Result<Target, LoadError> {
    let Some(s) = copy_schema else {
        return Ok(source);
    };
    tracing::info!(schema = %s, rows = source.rows, "creating the private copy for drop-chunk");
    create_copy(db, &source, s).await?;
    describe(db, s, &source.name).await
}

async fn run_with(
    opts: &Options,
    db: &tokio_postgres::Client,
    target: Target,
    server: &mut Option<ServerProcess>,
    interrupted: watch::Receiver<bool>,
) -> Result<Report, LoadError> {
    let seed = opts.seed.unwrap_or_else(|| rand::thread_rng().gen());
    let (hist, windows) = expectations(db, &target, seed, opts.windows as usize).await?;
    prepare_server(opts, server).await?;

    let start = Instant::now();
    let shared = Arc::new(Shared::new(opts, &target, windows, start, interrupted));
    let target = Arc::new(target);
    let clients: Vec<_> = (0..opts.clients)
        .map(|id| tokio::spawn(client_loop(shared.clone(), id, seed, opts.url.clone())))
        .collect();
    let fault = spawn_fault(opts, &shared, &target, hist, server, start);

    let mut tally = Tally::default();
    for c in clients {
        match c.await {
            Ok(t) => tally.merge(t),
            Err(e) => tally.error(0, "PANIC", || format!("client task: {e}")),
        }
    }
    let elapsed = start.elapsed();
    let fault = match fault {
        Some(task) => Some(finish_fault(opts, &shared, task, server).await),
        None => None,
    };
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
        tally,
        fault,
        interrupted,
    })
}

/// Seeded windows and the rows each must yield, from one scan of the table.
async fn expectations(
    db: &tokio_postgres::Client,
    target: &Target,
    seed: u64,
    n: usize,
) -> Result<(Histogram, Vec<Window>), LoadError> {
    let mut rng = StdRng::seed_from_u64(seed);
    let bounds = draw_windows(&mut rng, target.min, target.max, n);
    let t = Instant::now();
    let hist = histogram(db, target, thresholds(&bounds, &target.chunks)).await?;
    let windows = windows_with_expectations(&bounds, &target.chunks, &hist)?;
    tracing::info!(
        table = %target.display_name(),
        rows = target.rows,
        chunks = target.chunks.len(),
        windows = windows.len(),
        seconds = t.elapsed().as_secs_f64(),
        "expectations ready"
    );
    Ok((hist, windows))
}

/// Starts the server (with `--server-cmd`), checks that it answers, and for `drop-chunk` makes it
/// see the private copy.
async fn prepare_server(
    opts: &Options,
    server: &mut Option<ServerProcess>,
) -> Result<(), LoadError> {
    if let Some(s) = server.as_mut() {
        let took = s.start(&opts.url).await?;
        tracing::info!(seconds = took.as_secs_f64(), log = %s.log.display(), "server started");
    }
    action(&opts.url, ActionName::Health, Duration::from_secs(10))
        .await
        .map_err(LoadError::Setup)?;
    // Discovery is cached: make a private copy created a moment ago visible.
    if opts.fault == Fault::DropChunk {
        action(&opts.url, ActionName::Refresh, Duration::from_secs(60))
            .await
            .map_err(LoadError::Setup)?;
    }
    Ok(())
}

type FaultTask = JoinHandle<(FaultReport, Option<ServerProcess>)>;

/// The task that injects the fault at `--fault-at`, if there is one. For `restart-server` the
/// server process moves into it and comes back with its report.
fn spawn_fault(
    opts: &Options,
    shared: &Arc<Shared>,
    target: &Arc<Target>,
    hist: Histogram,
    server: &mut Option<ServerProcess>,
    start: Instant,
) -> Option<FaultTask> {
    if opts.fault == Fault::None {
        return None;
    }
    let at = opts.fault_time();
    let cx = FaultContext {
        shared: shared.clone(),
        url: opts.url.clone(),
        database_url: opts.database_url.clone().unwrap_or_default(),
        target: target.clone(),
        hist,
        db_restart_cmd: opts.db_restart_cmd.clone(),
    };
    let owned = server.take_if(|_| opts.fault == Fault::RestartServer);
    let fault = opts.fault;
    Some(tokio::spawn(async move {
        tokio::time::sleep_until(start + at).await;
        inject(fault, cx, owned, at).await
    }))
}

/// The fault's report once the clients are done; the server process comes back to `server`.
async fn finish_fault(
    opts: &Options,
    shared: &Shared,
    task: FaultTask,
    server: &mut Option<ServerProcess>,
) -> FaultReport {
    let not_applied = |detail| FaultReport::not_applied(opts.fault, opts.fault_time(), detail);
    // The run ended (e.g. at --requests) before the fault was due: do not inject it any more.
    if shared.fault_started.get().is_none() {
        task.abort();
        return not_applied("the run ended before --fault-at".into());
    }
    match task.await {
        Ok((report, back)) => {
            if back.is_some() {
                *server = back;
            }
            report
        }
        Err(e) => not_applied(format!("fault task failed: {e}")),
    }
}

/// One client: requests on its own connection until the run ends, each checked as it finishes.
async fn client_loop(shared: Arc<Shared>, id: u32, seed: u64, url: String) -> Tally {
    let mut tally = Tally::default();
    let conn = match connection(&url) {
        Ok(c) => c,
        Err(e) => {
            tally.error(0, "SETUP", || e);
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
        let (code, why) = tokio::select! {
            r = tokio::time::timeout_at(shared.hard_deadline, request(&shared, &conn, w)) => match r {
                Ok(r) => {
                    tally.record(&shared, w, r);
                    continue;
                }
                Err(_) => ("RUN_DEADLINE", "a request was still running at the end of --drain-timeout"),
            },
            _ = until_true(&mut interrupted) => ("INTERRUPTED", "the run was interrupted"),
        };
        tally.cut(shared.phase(), w, code, why);
    }
    tally
}

/// Completes when `rx` turns true; never, if its sender is gone.
async fn until_true(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|&v| v).await.is_err() {
        std::future::pending::<()>().await;
    }
}
