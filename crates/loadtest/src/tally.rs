//! The accounting: each request's reads against the window's expectations, per chunk. A row is
//! verified, lost (short, not read, never planned), extra, or explained (the dropped chunk's).

use std::collections::BTreeMap;
use std::time::Duration;

use protocol::client::ReadError;

use crate::expect::Window;
use crate::reads::{rfc3339, EndpointRead, RequestResult};
use crate::run::Shared;

/// Unexplained errors quoted in the report, at most.
const ERROR_SAMPLES: usize = 8;

/// Counters of a run: each client keeps its own, merged at the end into the [`Report`](crate::Report).
#[derive(Debug, Default)]
pub struct Tally {
    /// Requests whose every endpoint was verified (or explained).
    pub requests_ok: u64,
    /// Requests with an unexplained error or a row discrepancy.
    pub requests_failed: u64,
    /// Endpoints read.
    pub endpoints: u64,
    /// Rows received (up to the last resume point of failed reads).
    pub rows_received: u64,
    /// Rows in reads whose count and time checksum matched the expectation.
    pub rows_verified: u64,
    /// Arrow IPC bytes received (header + body of every batch), including re-reads.
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
    /// Completed reads with the expected count but other rows (the time checksum differs).
    pub wrong_rows: u64,
    /// Endpoint retries that went on from a resume ticket rather than from the endpoint's start.
    pub resumed: u64,
    /// Unexplained errors by code: before the fault (or all, without one) and after it began.
    pub errors: [BTreeMap<&'static str, u64>; 2],
    /// Explained errors by code (NOT_FOUND of the dropped chunk).
    pub explained: BTreeMap<&'static str, u64>,
    /// Retries by code, before and after the fault began.
    pub retries: [BTreeMap<&'static str, u64>; 2],
    /// Time to the first batch of each verified request (sorted once the run is over).
    pub first_batch: Vec<Duration>,
    /// Time to the end of each verified request (sorted once the run is over).
    pub whole: Vec<Duration>,
    /// The first few unexplained errors, in words.
    pub samples: Vec<String>,
}

impl Tally {
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

    /// Counts an unexplained error; the first few are logged and kept in words.
    pub(crate) fn error(
        &mut self,
        phase: usize,
        code: &'static str,
        detail: impl FnOnce() -> String,
    ) {
        *self.errors[phase].entry(code).or_default() += 1;
        if self.samples.len() < ERROR_SAMPLES {
            let d = detail();
            tracing::warn!("{code}: {d}");
            self.samples.push(format!("{code}: {d}"));
        }
    }

    /// A request that never finished (cut at the deadline or interrupted): all its rows are lost.
    pub(crate) fn cut(&mut self, phase: usize, w: &Window, code: &'static str, why: &str) {
        self.requests_failed += 1;
        self.not_read += w.total.count;
        self.error(phase, code, || why.into());
    }

    /// Accounts one request against window `w`.
    pub(crate) fn record(&mut self, shared: &Shared, w: &Window, r: RequestResult) {
        let cx = Context {
            shared,
            w,
            phase: shared.phase(),
            dropped: shared.dropped.get().copied(),
        };
        count_retries(&mut self.retries, &r.plan_retries);
        if let Some(e) = &r.plan_error {
            self.not_read += w.total.count;
            self.error(cx.phase, e.code, || {
                format!("GetFlightInfo {}: {}", cx.window(), e.message)
            });
            self.requests_failed += 1;
            return;
        }
        let mut ok = self.record_plan(&cx, &r);
        for (c, e) in &r.endpoints {
            ok &= self.record_endpoint(&cx, *c, e);
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

    /// Chunks the plan left out and endpoints it should not have had; whether all is explained.
    fn record_plan(&mut self, cx: &Context, r: &RequestResult) -> bool {
        let mut ok = true;
        for &c in &r.gaps {
            let rows = cx.w.expected(c).count;
            if Some(c) == cx.dropped {
                self.dropped_rows += rows;
            } else {
                ok = false;
                self.plan_gap += rows;
                self.error(cx.phase, "PLAN_GAP", || {
                    format!(
                        "{}: no endpoint for chunk {} ({rows} rows)",
                        cx.window(),
                        cx.shared.chunks[c].name
                    )
                });
            }
        }
        for name in &r.unexpected {
            ok = false;
            self.error(cx.phase, "UNEXPECTED_ENDPOINT", || {
                format!(
                    "{}: endpoint for {name:?}, which does not overlap it",
                    cx.window()
                )
            });
        }
        ok
    }

    /// One endpoint's read against its chunk's expectation; whether it is verified or explained.
    fn record_endpoint(&mut self, cx: &Context, c: usize, e: &EndpointRead) -> bool {
        self.endpoints += 1;
        self.bytes += e.bytes;
        let (got, want) = (e.rows, cx.w.expected(c));
        self.rows_received += got.count;
        count_retries(&mut self.retries, &e.retries);
        self.resumed += e.resumed;
        let chunk = &cx.shared.chunks[c].name;
        match &e.error {
            None if got == want => {
                self.rows_verified += got.count;
                return true;
            }
            None if got.count == want.count => {
                // Same count, other rows: some were repeated and as many skipped.
                self.wrong_rows += 1;
                self.error(cx.phase, "ROWS_MISMATCH", || {
                    format!(
                        "{}, chunk {chunk}: {} rows as expected, but not the expected rows \
                         (sum of time differs by {} µs)",
                        cx.window(),
                        got.count,
                        got.time_sum - want.time_sum
                    )
                });
            }
            None => {
                self.missing += want.count.saturating_sub(got.count);
                self.extra += got.count.saturating_sub(want.count);
                self.error(cx.phase, "ROW_COUNT_MISMATCH", || {
                    format!(
                        "{}, chunk {chunk}: {} rows, expected {}",
                        cx.window(),
                        got.count,
                        want.count
                    )
                });
            }
            Some(err) if cx.explains(c, err) => {
                *self.explained.entry(err.code).or_default() += 1;
                self.dropped_rows += want.count.saturating_sub(got.count);
                return true;
            }
            Some(err) => {
                self.not_read += want.count.saturating_sub(got.count);
                self.extra += got.count.saturating_sub(want.count);
                self.error(cx.phase, err.code, || {
                    format!(
                        "{}, chunk {chunk}: {} (after {} rows)",
                        cx.window(),
                        err.message,
                        got.count
                    )
                });
            }
        }
        false
    }

    /// Adds another client's counters.
    pub(crate) fn merge(&mut self, o: Tally) {
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

/// What accounting one request needs to know.
struct Context<'a> {
    shared: &'a Shared,
    w: &'a Window,
    /// The fault phase when the request ended.
    phase: usize,
    /// The chunk `--fault drop-chunk` dropped, once it started.
    dropped: Option<usize>,
}

impl Context<'_> {
    fn window(&self) -> String {
        format!(
            "window {} .. {}",
            rfc3339(self.w.start),
            rfc3339(self.w.end)
        )
    }

    /// NOT_FOUND for the dropped chunk is the one explained error.
    fn explains(&self, chunk: usize, err: &ReadError) -> bool {
        err.code == "NOT_FOUND" && Some(chunk) == self.dropped
    }
}

fn count_retries(into: &mut [BTreeMap<&'static str, u64>; 2], retries: &[(&'static str, usize)]) {
    for (code, phase) in retries {
        *into[*phase].entry(code).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;
    use crate::expect::tests::r;
    use crate::expect::Rows;
    use crate::reads::tests::error;

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

    fn read(rows: u64, error_code: Option<&'static str>) -> EndpointRead {
        EndpointRead {
            rows: n(rows),
            error: error_code.map(error),
            ..Default::default()
        }
    }

    fn request(endpoints: Vec<(usize, EndpointRead)>, gaps: Vec<usize>) -> RequestResult {
        RequestResult {
            endpoints,
            gaps,
            ..Default::default()
        }
    }

    #[test]
    fn accounting_separates_verified_lost_and_explained() {
        let s = Shared::for_test(3);
        let w = window(&[10, 20, 30]);
        let mut t = Tally::default();
        let all = || {
            vec![
                (0, read(10, None)),
                (1, read(20, None)),
                (2, read(30, None)),
            ]
        };
        t.record(&s, &w, request(all(), vec![]));
        assert_eq!((t.requests_ok, t.rows_verified), (1, 60));

        // Short read, failed read, a chunk never planned: all lost and all unexplained.
        t.record(
            &s,
            &w,
            request(
                vec![(0, read(9, None)), (1, read(5, Some("UNAVAILABLE")))],
                vec![2],
            ),
        );
        assert_eq!((t.missing, t.not_read, t.plan_gap), (1, 15, 30));
        assert_eq!(t.lost_rows(), 46);
        assert_eq!(t.requests_failed, 1);
        assert_eq!(t.unexplained_errors(), 3);

        // The right count of the wrong rows (a resume that repeats and skips) is caught too.
        let mut swapped = all();
        swapped[0].1.rows.time_sum += 1;
        t.record(&s, &w, request(swapped, vec![]));
        assert_eq!((t.wrong_rows, t.requests_failed), (1, 2));
        assert_eq!(t.errors[0].get("ROWS_MISMATCH"), Some(&1));

        // Once chunk 0 is being dropped, its NOT_FOUND and its absence are explained.
        let mut t = Tally::default();
        s.dropped.get_or_init(|| 0);
        s.fault_started.get_or_init(Instant::now);
        t.record(
            &s,
            &w,
            request(
                vec![
                    (0, read(4, Some("NOT_FOUND"))),
                    (1, read(20, None)),
                    (2, read(30, None)),
                ],
                vec![],
            ),
        );
        t.record(
            &s,
            &w,
            request(vec![(1, read(20, None)), (2, read(30, None))], vec![0]),
        );
        assert_eq!(t.requests_ok, 2);
        assert_eq!(t.dropped_rows, 6 + 10);
        assert_eq!(t.explained.get("NOT_FOUND"), Some(&1));
        assert_eq!(t.unexplained_errors(), 0);
        // NOT_FOUND for a chunk that was not dropped stays unexplained.
        t.record(
            &s,
            &w,
            request(
                vec![
                    (0, read(10, None)),
                    (1, read(0, Some("NOT_FOUND"))),
                    (2, read(30, None)),
                ],
                vec![],
            ),
        );
        assert_eq!(t.errors[1].get("NOT_FOUND"), Some(&1));
    }

    #[test]
    fn retries_and_resumes_are_counted_per_phase_and_merged() {
        let s = Shared::for_test(1);
        let w = window(&[10]);
        let mut ep = read(10, None);
        ep.retries = vec![("UNAVAILABLE", 0), ("UNAVAILABLE", 1)];
        ep.resumed = 2;
        let mut r = request(vec![(0, ep)], vec![]);
        r.plan_retries = vec![("UNKNOWN", 0)];
        let mut a = Tally::default();
        a.record(&s, &w, r);
        assert_eq!((a.total_retries(), a.resumed, a.requests_ok), (3, 2, 1));

        let mut b = Tally::default();
        b.cut(1, &w, "RUN_DEADLINE", "late");
        b.merge(a);
        assert_eq!(b.retries[0].get("UNAVAILABLE"), Some(&1));
        assert_eq!(b.retries[1].get("UNAVAILABLE"), Some(&1));
        assert_eq!(b.retries[0].get("UNKNOWN"), Some(&1));
        assert_eq!((b.resumed, b.requests_ok, b.requests_failed), (2, 1, 1));
        assert_eq!((b.not_read, b.rows_verified), (10, 10));
        assert_eq!(b.samples, vec!["RUN_DEADLINE: late".to_string()]);
    }
}
