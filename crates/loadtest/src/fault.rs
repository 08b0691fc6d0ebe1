//! The fault injected once mid-run, and what it needs: the server process `--server-cmd` started
//! (for `restart-server`), the private copy of the table (for `drop-chunk`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use protocol::ActionName;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use pgarrow::quote_ident;

use crate::expect::{connect, histogram, Histogram, Target};
use crate::options::Fault;
use crate::reads::action;
use crate::run::Shared;
use crate::{db_err, LoadError};

/// How long a spawned server may take to answer `health`.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `--db-restart-cmd` may run.
const DB_RESTART_TIMEOUT: Duration = Duration::from_secs(180);

/// A server process started from `--server-cmd`.
pub(crate) struct ServerProcess {
    cmd: String,
    pub(crate) log: PathBuf,
    /// One ticket secret for both lives of the server, so tickets from the first stay valid.
    secret: Option<String>,
    child: Option<Child>,
}

impl ServerProcess {
    /// A server to start from `cmd`, logging to `log` (default: a file in the temp directory).
    pub(crate) fn new(cmd: &str, log: Option<PathBuf>) -> ServerProcess {
        ServerProcess {
            cmd: cmd.to_string(),
            log: log.unwrap_or_else(|| {
                std::env::temp_dir().join(format!(
                    "hyperflight-loadtest-server-{}.log",
                    std::process::id()
                ))
            }),
            secret: std::env::var_os("HYPERFLIGHT_TICKET_SECRET")
                .is_none()
                .then(|| format!("loadtest-{:032x}", rand::random::<u128>())),
            child: None,
        }
    }

    /// Starts the server and waits until it answers `health` at `url`; how long that took.
    pub(crate) async fn start(&mut self, url: &str) -> Result<Duration, LoadError> {
        let t0 = Instant::now();
        let mut child = self.spawn()?;
        let deadline = t0 + SERVER_START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(LoadError::Setup(format!(
                    "--server-cmd exited with {status} (log: {})",
                    self.log.display()
                )));
            }
            if action(url, ActionName::Health, Duration::from_secs(2))
                .await
                .is_ok()
            {
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

    fn spawn(&self) -> Result<Child, LoadError> {
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
        cmd.spawn()
            .map_err(|e| LoadError::Setup(format!("cannot start --server-cmd: {e}")))
    }

    /// SIGKILL: the crash the restart fault simulates.
    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// SIGTERM, then SIGKILL if it has not stopped within 10 s.
    pub(crate) async fn stop(&mut self) {
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

impl FaultReport {
    /// A fault that was due at `at` but not applied, and why.
    pub(crate) fn not_applied(fault: Fault, at: Duration, detail: String) -> FaultReport {
        FaultReport {
            fault,
            at,
            took: Duration::ZERO,
            applied: false,
            detail,
        }
    }
}

/// What the fault task needs from the run.
pub(crate) struct FaultContext {
    pub(crate) shared: Arc<Shared>,
    pub(crate) url: String,
    pub(crate) database_url: String,
    pub(crate) target: Arc<Target>,
    /// The expectations' histogram, recomputed after a chunk drop to check what changed.
    pub(crate) hist: Histogram,
    pub(crate) db_restart_cmd: Option<String>,
}

/// Applies `fault` now. The server process (for `restart-server`) comes back with the report.
pub(crate) async fn inject(
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
            Some(s) => restart_server(s, &cx.url).await,
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

async fn restart_server(s: &mut ServerProcess, url: &str) -> Result<String, String> {
    let t0 = Instant::now();
    s.kill().await;
    let down = t0.elapsed();
    let up = s.start(url).await.map_err(|e| e.to_string())?;
    Ok(format!(
        "server killed (SIGKILL) and started again; answering after {:.1} s",
        (down + up).as_secs_f64()
    ))
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

/// Drops the private copy's oldest chunk, then checks that exactly its rows left every window.
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
    let refreshed = action(&cx.url, ActionName::Refresh, Duration::from_secs(30))
        .await
        .is_ok();
    let fell = check_only_chunk_left(cx, &db, victim).await?;
    let chunk_rows = cx
        .hist
        .rows(chunk.start, chunk.end)
        .unwrap_or_default()
        .count;
    Ok(format!(
        "dropped oldest chunk {} ({chunk_rows} rows); server refresh {}; expectations recomputed: \
         {fell} of {} windows lost exactly that chunk's rows, the others are unchanged",
        chunk.name,
        if refreshed { "ok" } else { "failed" },
        cx.shared.windows.len()
    ))
}

/// Recomputes every expectation; how many windows lost exactly chunk `victim`'s rows. Any other
/// change is an error: the table was written by someone else, and the expectations would be wrong.
async fn check_only_chunk_left(
    cx: &FaultContext,
    db: &tokio_postgres::Client,
    victim: usize,
) -> Result<usize, String> {
    let after = histogram(db, &cx.target, cx.hist.thresholds.clone())
        .await
        .map_err(|e| e.to_string())?;
    let mut fell = 0;
    let mut mismatched = 0;
    for w in &cx.shared.windows {
        let gone = w.expected(victim);
        if after.rows(w.start, w.end) != Some(w.total - gone) {
            mismatched += 1;
        } else if gone.count > 0 {
            fell += 1;
        }
    }
    if mismatched > 0 {
        return Err(format!(
            "after dropping {}, {mismatched} window(s) changed by other than that chunk's rows",
            cx.shared.chunks[victim].name
        ));
    }
    Ok(fell)
}

/// A private copy of the source table in `schema`, for `--fault drop-chunk`: dropping a chunk of
/// the shared table would change other users' data.
pub(crate) async fn create_copy(
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

/// Drops the private copy's schema; a failure is logged, not fatal (the report is still valid).
pub(crate) async fn drop_copy(database_url: &str, schema: &str) {
    // A fresh connection: the run's may have died with a database restart.
    let dropped = match connect(database_url).await {
        Ok(c) => c
            .batch_execute(&format!(
                "SET client_min_messages = warning; DROP SCHEMA IF EXISTS {} CASCADE",
                quote_ident(schema)
            ))
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = dropped {
        tracing::warn!(%schema, error = %e, "could not drop the private copy");
    }
}
