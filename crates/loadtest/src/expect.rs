//! What every read must yield, from SQL before the timed run: the table under load, seeded windows,
//! and the rows of each (window ∩ chunk) from one `width_bucket` scan.

use rand::rngs::StdRng;
use rand::Rng;

use pgarrow::quote_ident;

use crate::{db_err, LoadError};

/// One chunk of the table under load, bounds in µs since the epoch.
#[derive(Debug, Clone)]
pub(crate) struct ChunkRange {
    /// `schema.name`, as endpoint metadata names it.
    pub(crate) name: String,
    /// Inclusive start.
    pub(crate) start: i64,
    /// Exclusive end.
    pub(crate) end: i64,
}

/// A set of rows as the check sees it: how many, and the sum of their time values in µs. A resume
/// that repeats some rows and skips as many others keeps the count but changes the sum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Rows {
    pub(crate) count: u64,
    pub(crate) time_sum: i128,
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
pub(crate) struct Window {
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) total: Rows,
    /// (index into the chunk list, expected rows) for every chunk overlapping the window.
    pub(crate) chunks: Vec<(usize, Rows)>,
}

impl Window {
    /// The rows this window must yield from `chunk` (none if it does not overlap).
    pub(crate) fn expected(&self, chunk: usize) -> Rows {
        self.chunks
            .iter()
            .find(|&&(c, _)| c == chunk)
            .map_or(Rows::default(), |&(_, r)| r)
    }
}

/// Rows between sorted thresholds, from one `width_bucket` scan: `below[k]` = rows < `t[k]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Histogram {
    pub(crate) thresholds: Vec<i64>,
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
    pub(crate) fn rows(&self, start: i64, end: i64) -> Option<Rows> {
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
pub(crate) fn draw_windows(rng: &mut StdRng, min: i64, max: i64, n: usize) -> Vec<(i64, i64)> {
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

/// Every window with its expected rows, in total and per chunk. A row in no known chunk is a setup
/// error here rather than a discrepancy blamed on the server later.
pub(crate) fn windows_with_expectations(
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

/// Every window bound and chunk bound, sorted and distinct: the histogram's thresholds.
pub(crate) fn thresholds(bounds: &[(i64, i64)], chunks: &[ChunkRange]) -> Vec<i64> {
    let mut t: Vec<i64> = bounds
        .iter()
        .flat_map(|&(s, e)| [s, e])
        .chain(chunks.iter().flat_map(|c| [c.start, c.end]))
        .collect();
    t.sort_unstable();
    t.dedup();
    t
}

/// The table under load, as the database describes it.
pub(crate) struct Target {
    pub(crate) schema: String,
    pub(crate) name: String,
    /// The time dimension (timestamptz).
    pub(crate) column: String,
    /// Its chunk interval, for the private copy.
    pub(crate) interval: String,
    pub(crate) chunks: Vec<ChunkRange>,
    /// First and last time value, µs.
    pub(crate) min: i64,
    pub(crate) max: i64,
    pub(crate) rows: u64,
}

impl Target {
    pub(crate) fn sql_name(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    pub(crate) fn display_name(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

/// Reads the time dimension, the chunks and the data range of `schema.name`.
pub(crate) async fn describe(
    db: &tokio_postgres::Client,
    schema: &str,
    name: &str,
) -> Result<Target, LoadError> {
    let (column, interval) = time_dimension(db, schema, name).await?;
    let chunks = chunks(db, schema, name).await?;
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
        interval,
        chunks,
        min,
        max,
        rows: range.get::<_, i64>(2).max(0) as u64,
    })
}

/// The hypertable's first dimension (column, chunk interval); it must be timestamptz.
async fn time_dimension(
    db: &tokio_postgres::Client,
    schema: &str,
    name: &str,
) -> Result<(String, String), LoadError> {
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
    Ok((column, interval.unwrap_or_else(|| "1 day".into())))
}

async fn chunks(
    db: &tokio_postgres::Client,
    schema: &str,
    name: &str,
) -> Result<Vec<ChunkRange>, LoadError> {
    let rows = db
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
        .map_err(db_err("listing chunks"))?;
    Ok(rows
        .iter()
        .map(|r| ChunkRange {
            name: r.get(0),
            start: r.get(1),
            end: r.get(2),
        })
        .collect())
}

/// Counts rows and sums their time between `thresholds`, in one scan of the table.
pub(crate) async fn histogram(
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

/// A database connection (libpq's settings: TLS, PG* variables, .pgpass) whose driver task runs
/// in the background.
pub(crate) async fn connect(url: &str) -> Result<tokio_postgres::Client, LoadError> {
    let failed =
        |e: pgconn::ConnectError| LoadError::Setup(format!("connecting to --database-url: {e}"));
    let target =
        pgconn::Target::resolve(url, &pgconn::Params::default(), None, &pgconn::ProcessEnv)
            .map_err(failed)?;
    pgconn::Connector::new(target)
        .map_err(failed)?
        .connect()
        .await
        .map_err(failed)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::SeedableRng;

    pub(crate) fn r(count: u64, time_sum: i128) -> Rows {
        Rows { count, time_sum }
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
        assert_eq!(w[0].expected(1), r(10, 3));
        assert_eq!(w[1].total, r(40, 10));
        // A row outside every chunk is a setup error, not a silent discrepancy later.
        let h = Histogram::from_buckets(vec![0, 50, 100, 150, 200], &[(1, 10, 0), (5, 1, 0)]);
        assert!(windows_with_expectations(&[(0, 250)], &chunks, &h).is_err());
    }
}
