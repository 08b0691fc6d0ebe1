//! The command line: what to run, which fault, and the checks clap cannot make.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::LoadError;

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

/// Parses `60s`, `500ms`, `2m`, `1h` or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
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
        self.schema_and_table()?;
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

    /// When the fault is due, from the start of the timed run.
    pub(crate) fn fault_time(&self) -> Duration {
        self.fault_at.unwrap_or(self.duration * 2 / 5)
    }

    /// `--table` as (schema, table).
    pub(crate) fn schema_and_table(&self) -> Result<(String, String), LoadError> {
        match self.table.split_once('.') {
            Some((s, t)) if !s.is_empty() && !t.is_empty() => Ok((s.to_string(), t.to_string())),
            _ => Err(LoadError::Options(format!(
                "--table {:?} must be schema.table",
                self.table
            ))),
        }
    }
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
        assert!(with(&["--fault", "restart-server", "--server-cmd", "true"]).is_ok());
        assert!(with(&["--fault", "drop-chunk", "--fault-at", "61s"]).is_err());
        assert!(with(&["--fault", "drop-chunk", "--fault-at", "59s"]).is_ok());
        assert!(with(&["--table", "metrics"]).is_err());
        assert!(with(&["--table", "s.metrics"]).is_ok());
        assert!(with(&["--url", "127.0.0.1:1"]).is_err());
        assert!(with(&["--duration", "0s"]).is_err());
        assert!(with(&["--requests", "0"]).is_err());
        assert!(parse(&[]).validate().is_err(), "no database URL");
    }
}
