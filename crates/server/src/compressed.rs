//! Compressed chunks (TimescaleDB's columnstore) read with a position on every row.
//!
//! A compressed chunk keeps its rows as batches of up to 1000 rows, one row of a relation of its own
//! per batch, every non-segmentby column a `compressed_data` value. The scan asks PostgreSQL for one
//! COPY row per batch, each column's values as an array (`compressed_data_to_array`), and explodes
//! the arrays into rows here. A row's position is (the batch's ctid, its index in the batch), so a
//! resume ticket continues inside a batch with nothing lost or repeated. Only the requested columns
//! are decompressed. (TimescaleDB 2.28's own SQL-side decompression of a batch, row by row, is 2-3x
//! slower than this, and slower than its own ColumnarScan.)

use arrow::array::{new_null_array, Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::compute::{concat_batches, take};
use arrow::datatypes::TimestampMicrosecondType;
use arrow::datatypes::{DataType, Date32Type, Int16Type, Int32Type, Int64Type, SchemaRef};
use pgarrow::{plan_column, quote_ident, ColumnPlan, DecodedBatch, PgType, Tid};

use crate::catalog::QualifiedName;
use crate::error::Error;
use crate::scan::{Position, ScanBatch, TimeFilter};

/// What the planner knows of a compressed chunk's endpoint.
#[derive(Debug, Clone)]
pub struct CompressedSource {
    /// The relation of compressed batches.
    pub relation: QualifiedName,
    /// Each output column's name and type (domains resolved), in output order.
    pub columns: Vec<(String, PgType)>,
    /// The time dimension's column and type, for a window filter.
    pub time_column: Option<(String, PgType)>,
    /// Continue after this position in the compressed part.
    pub resume: Option<(Tid, u32)>,
}

/// Where a decoded column's values come from.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// A segmentby column: one value per batch, stored as is.
    Segment,
    /// A compressed column: an array of the batch's values.
    Values,
}

/// How to read one chunk's compressed part: the COPY statement and how to explode its rows.
pub struct Layout {
    sql: String,
    /// Decode plans of the COPY's columns after the ctid: the row count, then one per column.
    plans: Vec<ColumnPlan>,
    sources: Vec<Source>,
    /// Output columns (the scan's), then possibly the time column for filtering only.
    outputs: usize,
    /// Index among the decoded columns of the time column, when a window filters rows.
    time_index: Option<usize>,
}

impl Layout {
    /// The COPY's decode plans (after the ctid).
    pub fn plans(&self) -> &[ColumnPlan] {
        &self.plans
    }

    /// The COPY statement.
    pub fn sql(&self) -> &str {
        &self.sql
    }
}

/// Works out the layout for `source` in the scan's transaction, or `None` when a column cannot be
/// decompressed this way (array columns: TimescaleDB 2.28 has no SQL function for them; columns
/// added after compression, whose value lives in the catalog): the chunk is then read in one pass.
pub async fn layout(
    txn: &tokio_postgres::Client,
    chunk: &QualifiedName,
    source: &CompressedSource,
    filter: Option<&TimeFilter>,
) -> Result<Option<Layout>, Error> {
    let mut wanted = source.columns.clone();
    let time_index = match (filter, &source.time_column) {
        (Some(_), Some((name, ty))) => Some(match wanted.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                wanted.push((name.clone(), ty.clone()));
                wanted.len() - 1
            }
        }),
        (Some(_), None) => return Ok(None),
        (None, _) => None,
    };
    if wanted.iter().any(|(_, ty)| ty.elem_oid.is_some()) {
        return Ok(None);
    }
    let names: Vec<&str> = wanted.iter().map(|(n, _)| n.as_str()).collect();
    let oids: Vec<u32> = wanted.iter().map(|(_, t)| t.oid).collect();
    let typmods: Vec<i32> = wanted.iter().map(|(_, t)| t.typmod).collect();
    let rows = txn
        .query(
            "SELECT a.atttypid = '_timescaledb_internal.compressed_data'::pg_catalog.regtype,
                    pg_catalog.format_type(b.oid, b.typmod), coalesce(ca.atthasmissing, true)
             FROM unnest($1::text[], $2::oid[], $3::int4[]) WITH ORDINALITY AS b(name, oid, typmod, ord)
             LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = $4::text::regclass
                  AND a.attname = b.name AND NOT a.attisdropped
             LEFT JOIN pg_catalog.pg_attribute ca ON ca.attrelid = $5::text::regclass
                  AND ca.attname = b.name AND NOT ca.attisdropped
             ORDER BY b.ord",
            &[&names, &oids, &typmods, &source.relation.quoted(), &chunk.quoted()],
        )
        .await?;
    let mut select = vec!["c._ts_meta_count".to_string()];
    let int4 = PgType {
        oid: 23,
        typmod: -1,
        elem_oid: None,
        is_enum: false,
    };
    let mut plans = vec![plan_column("_ts_meta_count", &int4)];
    let mut sources = Vec::with_capacity(wanted.len());
    for ((name, ty), row) in wanted.iter().zip(&rows) {
        let (Some(compressed), type_name, missing) = (
            row.get::<_, Option<bool>>(0),
            row.get::<_, String>(1),
            row.get::<_, bool>(2),
        ) else {
            return Ok(None); // not in the relation of batches
        };
        if missing {
            return Ok(None);
        }
        let plan = plan_column(name, ty);
        let col = format!("c.{}", quote_ident(name));
        if compressed {
            let text = if plan.cast_to_text { "::text[]" } else { "" };
            select.push(format!(
                "CASE WHEN (SELECT i.algorithm FROM _timescaledb_functions.compressed_data_info({col}) i) \
                 <> 'NULL' THEN _timescaledb_functions.compressed_data_to_array({col}, NULL::{type_name}){text} END"
            ));
            let elem = if plan.cast_to_text {
                PgType {
                    oid: 25,
                    typmod: -1,
                    elem_oid: None,
                    is_enum: false,
                }
            } else {
                ty.clone()
            };
            plans.push(plan_column(
                name,
                &PgType {
                    oid: 0,
                    elem_oid: Some(elem.oid),
                    ..elem
                },
            ));
            sources.push(Source::Values);
        } else {
            select.push(if plan.cast_to_text {
                format!("{col}::text")
            } else {
                col
            });
            plans.push(plan);
            sources.push(Source::Segment);
        }
    }
    let resume = source
        .resume
        .map(|(t, _)| format!(" WHERE c.ctid >= '({},{})'::tid", t.block, t.offset))
        .unwrap_or_default();
    let sql = format!(
        "COPY (SELECT c.ctid, {} FROM {} c{resume}) TO STDOUT (FORMAT binary)",
        select.join(", "),
        source.relation.quoted()
    );
    Ok(Some(Layout {
        sql,
        plans,
        sources,
        outputs: source.columns.len(),
        time_index,
    }))
}

/// Turns decoded batch rows (one per compressed batch) into output batches of at most `batch_rows`
/// rows, each with the position of its last row.
pub struct Exploder {
    layout: Layout,
    schema: SchemaRef,
    filter: Option<TimeFilter>,
    resume: Option<(Tid, u32)>,
    batch_rows: usize,
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    last: Option<Position>,
}

impl Exploder {
    /// An exploder for `layout`, producing `schema`'s columns.
    pub fn new(
        layout: Layout,
        schema: SchemaRef,
        source: &CompressedSource,
        filter: Option<TimeFilter>,
        batch_rows: usize,
    ) -> Exploder {
        Exploder {
            layout,
            schema,
            filter,
            resume: source.resume,
            batch_rows: batch_rows.max(1),
            pending: Vec::new(),
            pending_rows: 0,
            last: None,
        }
    }

    /// Explodes every compressed batch in `decoded`; finished output batches go to `out`.
    pub fn push(&mut self, decoded: DecodedBatch, out: &mut Vec<ScanBatch>) -> Result<(), Error> {
        // The decoder cuts a batch per row, so each decoded batch is one compressed batch.
        let tid = decoded
            .last_tid
            .ok_or_else(|| corrupt("a compressed batch without its ctid"))?;
        let batch = decoded.batch;
        let count = batch.column(0).as_primitive::<Int32Type>().value(0).max(0) as usize;
        let skip = match self.resume {
            Some((at, done)) if at == tid => (done as usize).min(count),
            _ => 0,
        };
        let values: Vec<ArrayRef> = (0..self.layout.sources.len())
            .map(|i| self.column_values(&batch, i, count))
            .collect::<Result<_, _>>()?;
        let kept: Vec<u32> = match (&self.filter, self.layout.time_index) {
            (Some(f), Some(t)) => {
                let time = micros(&values[t])?;
                (skip..count)
                    .filter(|&i| {
                        time[i].is_some_and(|v| {
                            f.start.is_none_or(|s| v >= s) && f.end.is_none_or(|e| v < e)
                        })
                    })
                    .map(|i| i as u32)
                    .collect()
            }
            _ => (skip as u32..count as u32).collect(),
        };
        let mut from = 0;
        while from < kept.len() {
            let n = (self.batch_rows - self.pending_rows).min(kept.len() - from);
            let indices = UInt32Array::from(kept[from..from + n].to_vec());
            let columns = values[..self.layout.outputs]
                .iter()
                .map(|v| take(v, &indices, None))
                .collect::<Result<Vec<_>, _>>()?;
            self.pending
                .push(RecordBatch::try_new(self.schema.clone(), columns)?);
            self.pending_rows += n;
            self.last = Some(Position::Batch {
                tid,
                rows_done: kept[from + n - 1] + 1,
            });
            from += n;
            if self.pending_rows == self.batch_rows {
                out.push(self.flush()?);
            }
        }
        Ok(())
    }

    /// The rows still pending, as a last batch.
    pub fn finish(&mut self) -> Result<Option<ScanBatch>, Error> {
        if self.pending_rows == 0 {
            return Ok(None);
        }
        self.flush().map(Some)
    }

    fn flush(&mut self) -> Result<ScanBatch, Error> {
        let batch = concat_batches(&self.schema, &self.pending)?;
        self.pending.clear();
        self.pending_rows = 0;
        Ok(ScanBatch {
            batch,
            position: self.last.take(),
        })
    }

    /// Decoded column `i` (after the row count) as `count` values.
    fn column_values(
        &self,
        batch: &RecordBatch,
        i: usize,
        count: usize,
    ) -> Result<ArrayRef, Error> {
        let column = batch.column(i + 1);
        Ok(match self.layout.sources[i] {
            Source::Segment => take(column, &UInt32Array::from(vec![0u32; count]), None)?,
            Source::Values => {
                let list = column.as_list::<i32>();
                let DataType::List(item) = list.data_type() else {
                    return Err(corrupt("a compressed column did not decode as a list"));
                };
                if list.is_null(0) {
                    new_null_array(item.data_type(), count)
                } else {
                    let v = list.value(0);
                    if v.len() != count {
                        return Err(corrupt(&format!(
                            "a batch of {count} rows has {} values in a column",
                            v.len()
                        )));
                    }
                    v
                }
            }
        })
    }
}

/// A time dimension column's values in TimescaleDB's internal units (µs for time types).
fn micros(values: &ArrayRef) -> Result<Vec<Option<i64>>, Error> {
    const DAY_US: i64 = 86_400_000_000;
    Ok(match values.data_type() {
        DataType::Timestamp(_, _) => values
            .as_primitive::<TimestampMicrosecondType>()
            .iter()
            .collect(),
        DataType::Date32 => values
            .as_primitive::<Date32Type>()
            .iter()
            .map(|d| d.map(|d| i64::from(d).saturating_mul(DAY_US)))
            .collect(),
        DataType::Int64 => values.as_primitive::<Int64Type>().iter().collect(),
        DataType::Int32 => values
            .as_primitive::<Int32Type>()
            .iter()
            .map(|v| v.map(i64::from))
            .collect(),
        DataType::Int16 => values
            .as_primitive::<Int16Type>()
            .iter()
            .map(|v| v.map(i64::from))
            .collect(),
        other => return Err(corrupt(&format!("time dimension of type {other}"))),
    })
}

fn corrupt(what: &str) -> Error {
    Error::Decode(pgarrow::Error::Stream {
        detail: format!("compressed chunk: {what}"),
    })
}
