//! The figures of a finished run, whether it passed, and how they print (the README quotes these
//! lines; `lost rows: 0` on a line of its own means every read was verified).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::fault::FaultReport;
use crate::options::Fault;
use crate::tally::Tally;

/// Figures of a finished run. [`Report::passed`] decides the exit code; `Display` prints it.
#[derive(Debug, Default)]
pub struct Report {
    /// Concurrent clients.
    pub clients: u32,
    /// Seed of the windows (repeat a run with `--seed`).
    pub seed: u64,
    /// Table read (the private copy under `--fault drop-chunk`).
    pub table: String,
    /// Its rows when the run began.
    pub table_rows: u64,
    /// Chunk count when the run began.
    pub chunks: usize,
    /// Distinct windows requests were drawn from.
    pub windows: usize,
    /// Wall time of the timed run, including the drain.
    pub elapsed: Duration,
    /// Every client's counters, merged; latencies sorted.
    pub tally: Tally,
    /// What the fault did, if one was asked for.
    pub fault: Option<FaultReport>,
    /// The run was cut short by the caller's shutdown.
    pub interrupted: bool,
}

impl Report {
    /// Every read verified or explained, nothing lost or repeated, the fault (if any) applied.
    pub fn passed(&self) -> bool {
        self.all_rows_verified()
            && self.tally.requests_ok > 0
            && self.fault.as_ref().is_none_or(|f| f.applied)
            && !self.interrupted
    }

    fn all_rows_verified(&self) -> bool {
        let t = &self.tally;
        t.unexplained_errors() == 0 && t.lost_rows() == 0 && t.extra == 0
    }

    fn write_header(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
        if self.tally.requests_ok == 0 {
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
        Ok(())
    }

    /// Requests, rows, throughput and latencies.
    fn write_volume(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.tally;
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        writeln!(
            f,
            "requests: {} ({} verified, {} failed), endpoints read: {}",
            t.requests_ok + t.requests_failed,
            t.requests_ok,
            t.requests_failed,
            t.endpoints
        )?;
        writeln!(
            f,
            "rows: {} received, {} verified by count and time checksum per chunk ({:.0} rows/s)",
            t.rows_received,
            t.rows_verified,
            t.rows_received as f64 / secs
        )?;
        writeln!(
            f,
            "throughput: {:.1} MB/s ({:.1} MB)",
            t.bytes as f64 / 1e6 / secs,
            t.bytes as f64 / 1e6
        )?;
        for (name, v) in [("first batch", &t.first_batch), ("whole read", &t.whole)] {
            writeln!(
                f,
                "latency {name}: p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms",
                percentile_ms(v, 50.0),
                percentile_ms(v, 95.0),
                percentile_ms(v, 99.0)
            )?;
        }
        Ok(())
    }

    /// Errors and retries, split at the fault when there is one.
    fn write_errors(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.tally;
        let split = |ms: &[BTreeMap<&'static str, u64>; 2]| match &self.fault {
            Some(_) => format!(
                "{} (before the fault: {}; after: {})",
                counts(&merged(ms)),
                counts(&ms[0]),
                counts(&ms[1])
            ),
            None => counts(&merged(ms)),
        };
        writeln!(f, "errors (unexplained): {}", split(&t.errors))?;
        writeln!(f, "errors (explained): {}", counts(&t.explained))?;
        writeln!(
            f,
            "retries: {} — {}; {} endpoint retries went on from a resume ticket",
            t.total_retries(),
            split(&t.retries),
            t.resumed
        )?;
        if self
            .fault
            .as_ref()
            .is_some_and(|r| r.fault == Fault::DropChunk)
        {
            writeln!(
                f,
                "rows of the dropped chunk (explained, not lost): {}",
                t.dropped_rows
            )?;
        }
        for s in &t.samples {
            writeln!(f, "  e.g. {s}")?;
        }
        Ok(())
    }

    /// The last line: `lost rows: 0`, or what is not verified.
    fn write_verdict(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.tally;
        if self.all_rows_verified() {
            return write!(f, "lost rows: 0");
        }
        write!(
            f,
            "lost rows: NOT VERIFIED — {} missing ({} short in completed reads, {} in failed \
             reads, {} never planned), {} extra, {} reads with other rows than expected, {} \
             unexplained errors",
            t.lost_rows(),
            t.missing,
            t.not_read,
            t.plan_gap,
            t.extra,
            t.wrong_rows,
            t.unexplained_errors()
        )
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_header(f)?;
        self.write_volume(f)?;
        self.write_errors(f)?;
        self.write_verdict(f)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(ok: u64) -> Report {
        Report {
            tally: Tally {
                requests_ok: ok,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn report_prints_lost_rows_zero_only_when_all_verified() {
        let mut r = verified(3);
        assert!(r.passed());
        assert!(r.to_string().ends_with("\nlost rows: 0"));
        r.tally.errors[0].insert("UNAVAILABLE", 1);
        assert!(!r.passed());
        let text = r.to_string();
        assert!(!text.lines().any(|l| l == "lost rows: 0"), "{text}");
        r.tally.errors[0].clear();
        r.tally.extra = 2;
        assert!(!r.passed());
        assert!(r.to_string().contains("lost rows: NOT VERIFIED"));
        r.tally.extra = 0;
        r.tally.not_read = 1;
        assert!(!r.passed());
        assert!(r.to_string().contains("NOT VERIFIED — 1 missing"));
    }

    #[test]
    fn a_run_without_a_verified_request_or_with_a_failed_fault_fails() {
        let r = verified(0);
        assert!(!r.passed());
        assert!(r.to_string().contains("NO REQUEST was verified"));
        let mut r = verified(1);
        r.fault = Some(FaultReport::not_applied(
            Fault::RestartServer,
            Duration::from_secs(2),
            "no server".into(),
        ));
        assert!(!r.passed());
        assert!(
            r.to_string()
                .contains("fault: restart-server at 2.0 s, took 0.0 s, NOT APPLIED: no server"),
            "{r}"
        );
        r.fault = None;
        r.interrupted = true;
        assert!(!r.passed());
    }

    #[test]
    fn errors_and_retries_split_at_the_fault() {
        let mut r = verified(1);
        r.tally.retries[0].insert("UNAVAILABLE", 2);
        r.tally.retries[1].insert("UNAVAILABLE", 3);
        r.tally.resumed = 4;
        assert!(r.to_string().contains(
            "\nretries: 5 — UNAVAILABLE 5; 4 endpoint retries went on from a resume ticket\n"
        ));
        r.fault = Some(FaultReport {
            fault: Fault::DropChunk,
            at: Duration::from_secs(1),
            took: Duration::from_secs(1),
            applied: true,
            detail: "d".into(),
        });
        r.tally.dropped_rows = 7;
        let text = r.to_string();
        assert!(
            text.contains("UNAVAILABLE 5 (before the fault: UNAVAILABLE 2; after: UNAVAILABLE 3)"),
            "{text}"
        );
        assert!(
            text.contains("\nrows of the dropped chunk (explained, not lost): 7\n"),
            "{text}"
        );
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&v, 50.0), 50.0);
        assert_eq!(percentile_ms(&v, 99.0), 99.0);
        assert_eq!(percentile_ms(&v[..1], 95.0), 1.0);
        assert_eq!(percentile_ms(&[], 50.0), 0.0);
    }
}
