//! Prepared statements: the open ones (bounded per client connection, dropped when closed or idle),
//! their parameter schema, and bound values turned into typed SQL literals.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use bytes::Bytes;
use pgarrow::{plan_column, PgType};
use tokio_postgres::types::{Kind, Type};

use super::statement::Statement;
use crate::catalog::quote_ident;
use crate::error::Error;

/// Prepared statements one client connection may hold open at once.
pub const MAX_PER_CLIENT: usize = 64;
/// A prepared statement unused this long is dropped (clients that vanish never close theirs).
const IDLE: Duration = Duration::from_secs(3600);

struct Open {
    /// The connection that created it, for the per-client bound.
    owner: Option<SocketAddr>,
    statement: Arc<Statement>,
    /// What PostgreSQL inferred for each parameter: the type its literal is cast to.
    types: Vec<Type>,
    /// The bound values as SQL literals; empty until bound.
    literals: Vec<String>,
    last_used: Instant,
}

/// The open prepared statements, by handle.
#[derive(Default)]
pub struct Prepared(Mutex<HashMap<Bytes, Open>>);

impl Prepared {
    /// Opens `statement` for `owner` and returns its handle.
    pub fn create(
        &self,
        owner: Option<SocketAddr>,
        statement: Statement,
        types: Vec<Type>,
    ) -> Result<Bytes, Error> {
        let mut open = self.0.lock().expect("prepared statements lock");
        let now = Instant::now();
        open.retain(|_, s| now.duration_since(s.last_used) < IDLE);
        if open.values().filter(|s| s.owner == owner).count() >= MAX_PER_CLIENT {
            return Err(Error::Busy(format!(
                "{MAX_PER_CLIENT} prepared statements are open on this connection; close one first"
            )));
        }
        let handle = Bytes::from(rand::random::<[u8; 16]>().to_vec());
        open.insert(
            handle.clone(),
            Open {
                owner,
                statement: Arc::new(statement),
                types,
                literals: Vec::new(),
                last_used: now,
            },
        );
        Ok(handle)
    }

    /// The statement of `handle` and its bound literals.
    pub fn bound(&self, handle: &[u8]) -> Result<(Arc<Statement>, Vec<String>), Error> {
        let mut open = self.0.lock().expect("prepared statements lock");
        let s = open.get_mut(handle).ok_or_else(unknown)?;
        s.last_used = Instant::now();
        Ok((s.statement.clone(), s.literals.clone()))
    }

    /// Binds one row of parameter values to `handle`.
    pub fn bind(&self, handle: &[u8], batches: &[RecordBatch]) -> Result<(), Error> {
        let mut open = self.0.lock().expect("prepared statements lock");
        let s = open.get_mut(handle).ok_or_else(unknown)?;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let Some(batch) = batches
            .iter()
            .find(|b| b.num_rows() > 0)
            .filter(|_| rows == 1)
        else {
            return Err(Error::InvalidRequest(format!(
                "bind exactly one row of parameters; got {rows}"
            )));
        };
        if batch.num_columns() != s.types.len() {
            return Err(Error::InvalidRequest(format!(
                "the statement takes {} parameter(s); {} bound",
                s.types.len(),
                batch.num_columns()
            )));
        }
        let literals = batch
            .columns()
            .iter()
            .zip(&s.types)
            .map(|(array, ty)| literal(array.as_ref(), ty))
            .collect::<Result<_, _>>()?;
        s.literals = literals;
        s.last_used = Instant::now();
        Ok(())
    }

    /// Closes `handle`; closing an unknown one is a no-op.
    pub fn close(&self, handle: &[u8]) {
        self.0
            .lock()
            .expect("prepared statements lock")
            .remove(handle);
    }
}

fn unknown() -> Error {
    Error::InvalidRequest("unknown or closed prepared statement handle".into())
}

/// Row 0 of `array` as a SQL literal cast to `ty`, e.g. `CAST('2026-10-01T00:00:00Z' AS
/// "pg_catalog"."timestamptz")`. COPY takes no bind parameters, so values travel as literals.
fn literal(array: &dyn Array, ty: &Type) -> Result<String, Error> {
    let cast = |value: &str| {
        format!(
            "CAST({value} AS {}.{})",
            quote_ident(ty.schema()),
            quote_ident(ty.name())
        )
    };
    if array.is_null(0) {
        return Ok(cast("NULL"));
    }
    let text = match array.data_type() {
        DataType::Binary => hex(array.as_binary::<i32>().value(0)),
        DataType::LargeBinary => hex(array.as_binary::<i64>().value(0)),
        DataType::BinaryView => hex(array.as_binary_view().value(0)),
        _ => ArrayFormatter::try_new(array, &FormatOptions::default())?
            .value(0)
            .to_string(),
    };
    // The pool pins standard_conforming_strings: only quotes need doubling.
    Ok(cast(&format!("'{}'", text.replace('\'', "''"))))
}

fn hex(bytes: &[u8]) -> String {
    let digits: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("\\x{digits}")
}

/// A PostgreSQL type as the type table reads it: domains resolved, enum and array element noted.
pub fn pg_type(ty: &Type, typmod: i32) -> PgType {
    match ty.kind() {
        Kind::Domain(base) => pg_type(base, typmod),
        Kind::Array(elem) => {
            let elem = pg_type(elem, -1);
            PgType {
                oid: ty.oid(),
                typmod,
                is_enum: elem.is_enum,
                elem_oid: Some(elem.oid),
            }
        }
        kind => PgType {
            oid: ty.oid(),
            typmod,
            is_enum: matches!(kind, Kind::Enum(_)),
            elem_oid: None,
        },
    }
}

/// The parameter schema of a prepared statement: `$1..$n` typed as the type table maps what
/// PostgreSQL inferred.
pub fn parameter_schema(types: &[Type]) -> Schema {
    let fields: Vec<Field> = types
        .iter()
        .enumerate()
        .map(|(i, ty)| {
            let plan = plan_column(&format!("${}", i + 1), &pg_type(ty, -1));
            plan.field.as_ref().clone().with_nullable(true)
        })
        .collect();
    Schema::new(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{BinaryArray, Int64Array, StringArray, TimestampMicrosecondArray};

    #[test]
    fn literals_are_typed_and_quoted() {
        let text = StringArray::from(vec!["it's"]);
        assert_eq!(
            literal(&text, &Type::TEXT).unwrap(),
            "CAST('it''s' AS \"pg_catalog\".\"text\")"
        );
        let ts = TimestampMicrosecondArray::from(vec![1_790_812_800_000_000]).with_timezone("UTC");
        assert_eq!(
            literal(&ts, &Type::TIMESTAMPTZ).unwrap(),
            "CAST('2026-10-01T00:00:00Z' AS \"pg_catalog\".\"timestamptz\")"
        );
        let none = Int64Array::from(vec![None]);
        assert_eq!(
            literal(&none, &Type::INT8).unwrap(),
            "CAST(NULL AS \"pg_catalog\".\"int8\")"
        );
        let bin = BinaryArray::from(vec![&b"\x01\xff"[..]]);
        assert_eq!(
            literal(&bin, &Type::BYTEA).unwrap(),
            "CAST('\\x01ff' AS \"pg_catalog\".\"bytea\")"
        );
    }

    #[test]
    fn open_statements_are_bounded_per_client() {
        let p = Prepared::default();
        let (a, b) = (
            Some(([127, 0, 0, 1], 1).into()),
            Some(([127, 0, 0, 1], 2).into()),
        );
        let s = || Statement::parse("SELECT 1").unwrap();
        let handles: Vec<Bytes> = (0..MAX_PER_CLIENT)
            .map(|_| p.create(a, s(), Vec::new()).unwrap())
            .collect();
        assert!(matches!(p.create(a, s(), Vec::new()), Err(Error::Busy(_))));
        assert!(p.create(b, s(), Vec::new()).is_ok());
        p.close(&handles[0]);
        assert!(p.bound(&handles[0]).is_err());
        assert!(p.create(a, s(), Vec::new()).is_ok());
    }
}
