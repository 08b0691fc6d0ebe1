//! The PostgreSQL → Arrow type table: one place that says what every column becomes.
//!
//! | PostgreSQL (oid)                         | Arrow                                   | notes |
//! |------------------------------------------|-----------------------------------------|-------|
//! | `bool` (16)                              | `Boolean`                               | |
//! | `int2` (21) / `int4` (23) / `int8` (20)  | `Int16` / `Int32` / `Int64`             | |
//! | `float4` (700) / `float8` (701)          | `Float32` / `Float64`                   | NaN and ±Infinity kept as IEEE values |
//! | `numeric(p,s)` (1700), 1 ≤ p ≤ 38, s ≤ p, −128 ≤ s | `Decimal128(p,s)`              | NaN / ±Infinity → [`Error::Unrepresentable`]; a value with non-zero digits beyond `s` or more than `p` digits → the same error (never rounded) |
//! | `numeric` unconstrained or other typmods | `Utf8`                                  | exact text as PostgreSQL prints it (`1.50`, `NaN`, `Infinity`, `-Infinity`) |
//! | `text` (25) `varchar` (1043) `bpchar` (1042) `name` (19), enums | `Utf8`           | enums arrive as their label |
//! | `bytea` (17)                             | `Binary`                                | |
//! | `date` (1082)                            | `Date32`                                | days since 1970; `±infinity` → `i32::MAX` / `i32::MIN` |
//! | `time` (1083)                            | `Time64(µs)`                            | |
//! | `timestamp` (1114)                       | `Timestamp(µs, None)`                   | µs since 1970; `±infinity` → `i64::MAX` / `i64::MIN`; a finite value after 294247-01-10 04:00:54.775806 (which would overflow, or meet the `i64::MAX` sentinel) → [`Error::Unrepresentable`] |
//! | `timestamptz` (1184)                     | `Timestamp(µs, "UTC")`                  | as `timestamp` |
//! | `interval` (1186)                        | `Interval(MonthDayNano)`                | nanos = µs × 1000, overflow → [`Error::Unrepresentable`]; `±infinity` (PostgreSQL 17) → all three fields `MAX` / `MIN` |
//! | `uuid` (2950)                            | `FixedSizeBinary(16)`, extension `arrow.uuid` | |
//! | `json` (114) / `jsonb` (3802)            | `Utf8`, extension `arrow.json`          | jsonb version byte must be 1 |
//! | one-dimensional array of any type above  | `List<item>` (item nullable, named `item`) | more than one dimension → [`Error::MultiDimensionalArray`] |
//! | anything else (oid, xml, money, inet, timetz, point, arrays of those, unknown oids) | `Utf8` | selected as `"col"::text` ([`ColumnPlan::cast_to_text`]) |
//!
//! Every field is nullable.
//!
//! [`Error::Unrepresentable`]: super::Error::Unrepresentable
//! [`Error::MultiDimensionalArray`]: super::Error::MultiDimensionalArray

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, IntervalUnit, TimeUnit};

/// What the catalog knows of a column's type; domains already resolved to their base type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PgType {
    /// Base type oid (for an array column: the array type's oid, which the table does not look at).
    pub oid: u32,
    /// `atttypmod`, -1 when none. For an array column it constrains the element (as in PostgreSQL).
    pub typmod: i32,
    /// For array types: the element's base type oid; `None` for non-arrays.
    pub elem_oid: Option<u32>,
    /// Enums are sent (binary) as their label text. For an array column (an array type is
    /// never an enum) this says whether the *element* type is an enum.
    pub is_enum: bool,
}

/// How one column is read: the Arrow field it becomes and whether SQL must cast it to text first.
#[derive(Debug, Clone)]
pub struct ColumnPlan {
    /// The column's Arrow field (name, type, extension metadata; always nullable).
    pub field: Field,
    /// The query must select `"col"::text` instead of `"col"`: the binary form of this type is not
    /// decoded, its text form is (and the field is `Utf8`).
    pub cast_to_text: bool,
    pub(crate) kind: Kind,
}

/// How the decoder reads one column's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Scalar(Scalar),
    /// One-dimensional array of the element kind.
    List(Scalar),
}

/// How the decoder reads one non-array value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scalar {
    Bool,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    Decimal {
        precision: u8,
        scale: i8,
    },
    /// `numeric` printed as exact text.
    NumericText,
    /// UTF-8 text as sent: text-like types, enum labels, and columns cast to text.
    Text,
    Bytea,
    Date,
    Time,
    Timestamp,
    TimestampTz,
    Interval,
    Uuid,
    Json,
    Jsonb,
}

/// PostgreSQL type oids the table knows (`pg_type.dat`).
mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const JSON: u32 = 114;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const INTERVAL: u32 = 1186;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
    pub const JSONB: u32 = 3802;
}

/// The table: a type decoded from its binary form, or `None` when it is read as `::text`.
fn scalar(oid: u32, typmod: i32, is_enum: bool) -> Option<Scalar> {
    Some(match oid {
        _ if is_enum => Scalar::Text,
        oid::BOOL => Scalar::Bool,
        oid::INT2 => Scalar::Int16,
        oid::INT4 => Scalar::Int32,
        oid::INT8 => Scalar::Int64,
        oid::FLOAT4 => Scalar::Float32,
        oid::FLOAT8 => Scalar::Float64,
        oid::NUMERIC => numeric(typmod),
        oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::NAME => Scalar::Text,
        oid::BYTEA => Scalar::Bytea,
        oid::DATE => Scalar::Date,
        oid::TIME => Scalar::Time,
        oid::TIMESTAMP => Scalar::Timestamp,
        oid::TIMESTAMPTZ => Scalar::TimestampTz,
        oid::INTERVAL => Scalar::Interval,
        oid::UUID => Scalar::Uuid,
        oid::JSON => Scalar::Json,
        oid::JSONB => Scalar::Jsonb,
        _ => return None,
    })
}

/// `numeric(p,s)` → `Decimal128(p,s)` when Arrow can hold every value of the column, else exact text.
fn numeric(typmod: i32) -> Scalar {
    // PostgreSQL: typmod = ((p << 16) | (s & 0x7ff)) + VARHDRSZ, s sign-extended from 11 bits (PG 15+).
    let Some(m) = typmod.checked_sub(4).filter(|m| *m >= 0) else {
        return Scalar::NumericText;
    };
    let precision = (m >> 16) & 0xffff;
    let scale = ((m & 0x7ff) ^ 1024) - 1024;
    match (u8::try_from(precision), i8::try_from(scale)) {
        (Ok(p @ 1..=38), Ok(s)) if i32::from(s) <= i32::from(p) => Scalar::Decimal {
            precision: p,
            scale: s,
        },
        _ => Scalar::NumericText,
    }
}

impl Scalar {
    /// The Arrow type of a value, and the canonical extension it carries, if any.
    fn arrow(self) -> (DataType, Option<&'static str>) {
        let dt = match self {
            Scalar::Bool => DataType::Boolean,
            Scalar::Int16 => DataType::Int16,
            Scalar::Int32 => DataType::Int32,
            Scalar::Int64 => DataType::Int64,
            Scalar::Float32 => DataType::Float32,
            Scalar::Float64 => DataType::Float64,
            Scalar::Decimal { precision, scale } => DataType::Decimal128(precision, scale),
            Scalar::NumericText | Scalar::Text => DataType::Utf8,
            Scalar::Bytea => DataType::Binary,
            Scalar::Date => DataType::Date32,
            Scalar::Time => DataType::Time64(TimeUnit::Microsecond),
            Scalar::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            Scalar::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Scalar::Interval => DataType::Interval(IntervalUnit::MonthDayNano),
            Scalar::Uuid => return (DataType::FixedSizeBinary(16), Some("arrow.uuid")),
            Scalar::Json | Scalar::Jsonb => return (DataType::Utf8, Some("arrow.json")),
        };
        (dt, None)
    }

    pub(crate) fn field(self, name: &str) -> Field {
        let (dt, extension) = self.arrow();
        let field = Field::new(name, dt, true);
        match extension {
            Some(ext) => field.with_metadata(HashMap::from([
                ("ARROW:extension:name".to_owned(), ext.to_owned()),
                ("ARROW:extension:metadata".to_owned(), String::new()),
            ])),
            None => field,
        }
    }
}

/// The one PostgreSQL → Arrow type table (see the module docs).
pub fn plan_column(name: &str, ty: &PgType) -> ColumnPlan {
    let kind = match ty.elem_oid {
        None => scalar(ty.oid, ty.typmod, ty.is_enum).map(Kind::Scalar),
        Some(elem) => scalar(elem, ty.typmod, ty.is_enum).map(Kind::List),
    };
    match kind {
        Some(kind @ Kind::Scalar(s)) => ColumnPlan {
            field: s.field(name),
            cast_to_text: false,
            kind,
        },
        Some(kind @ Kind::List(s)) => ColumnPlan {
            field: Field::new(name, DataType::List(Arc::new(s.field("item"))), true),
            cast_to_text: false,
            kind,
        },
        None => ColumnPlan {
            field: Field::new(name, DataType::Utf8, true),
            cast_to_text: true,
            kind: Kind::Scalar(Scalar::Text),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(oid: u32, typmod: i32) -> PgType {
        PgType {
            oid,
            typmod,
            elem_oid: None,
            is_enum: false,
        }
    }

    fn numeric_typmod(p: i32, s: i32) -> i32 {
        ((p << 16) | (s & 0x7ff)) + 4
    }

    #[test]
    fn scalar_types() {
        let cases = [
            (16, DataType::Boolean),
            (21, DataType::Int16),
            (23, DataType::Int32),
            (20, DataType::Int64),
            (700, DataType::Float32),
            (701, DataType::Float64),
            (25, DataType::Utf8),
            (1043, DataType::Utf8),
            (1042, DataType::Utf8),
            (19, DataType::Utf8),
            (17, DataType::Binary),
            (1082, DataType::Date32),
            (1083, DataType::Time64(TimeUnit::Microsecond)),
            (1114, DataType::Timestamp(TimeUnit::Microsecond, None)),
            (
                1184,
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            ),
            (1186, DataType::Interval(IntervalUnit::MonthDayNano)),
            (2950, DataType::FixedSizeBinary(16)),
            (114, DataType::Utf8),
            (3802, DataType::Utf8),
            (1700, DataType::Utf8),
        ];
        for (oid, dt) in cases {
            let plan = plan_column("c", &ty(oid, -1));
            assert_eq!(plan.field.data_type(), &dt, "oid {oid}");
            assert!(plan.field.is_nullable());
            assert!(!plan.cast_to_text, "oid {oid}");
            assert_eq!(plan.field.name(), "c");
        }
    }

    #[test]
    fn extensions() {
        let uuid = plan_column("u", &ty(2950, -1));
        assert_eq!(
            uuid.field
                .metadata()
                .get("ARROW:extension:name")
                .map(String::as_str),
            Some("arrow.uuid")
        );
        assert_eq!(
            uuid.field
                .metadata()
                .get("ARROW:extension:metadata")
                .map(String::as_str),
            Some("")
        );
        for oid in [114, 3802] {
            let json = plan_column("j", &ty(oid, -1));
            assert_eq!(
                json.field
                    .metadata()
                    .get("ARROW:extension:name")
                    .map(String::as_str),
                Some("arrow.json")
            );
        }
        assert!(plan_column("t", &ty(25, -1)).field.metadata().is_empty());
    }

    #[test]
    fn numeric_typmods() {
        let cases = [
            (numeric_typmod(10, 2), DataType::Decimal128(10, 2)),
            (numeric_typmod(38, 0), DataType::Decimal128(38, 0)),
            (numeric_typmod(38, 38), DataType::Decimal128(38, 38)),
            (numeric_typmod(1, 0), DataType::Decimal128(1, 0)),
            (numeric_typmod(5, -3), DataType::Decimal128(5, -3)),
            (numeric_typmod(39, 2), DataType::Utf8),
            (numeric_typmod(1000, 0), DataType::Utf8),
            (numeric_typmod(2, 5), DataType::Utf8),
            (numeric_typmod(10, -200), DataType::Utf8),
            (-1, DataType::Utf8),
            (0, DataType::Utf8),
            (i32::MIN, DataType::Utf8),
        ];
        for (typmod, dt) in cases {
            let plan = plan_column("n", &ty(1700, typmod));
            assert_eq!(plan.field.data_type(), &dt, "typmod {typmod}");
            assert!(!plan.cast_to_text);
        }
    }

    #[test]
    fn enums_and_fallbacks() {
        let e = PgType {
            oid: 91234,
            typmod: -1,
            elem_oid: None,
            is_enum: true,
        };
        let plan = plan_column("e", &e);
        assert_eq!(plan.field.data_type(), &DataType::Utf8);
        assert!(!plan.cast_to_text);
        for oid in [26, 142, 790, 869, 1266, 600, 18, 123_456] {
            let plan = plan_column("x", &ty(oid, -1));
            assert_eq!(plan.field.data_type(), &DataType::Utf8);
            assert!(plan.cast_to_text, "oid {oid}");
        }
    }

    #[test]
    fn arrays() {
        let arr = |elem: u32, typmod: i32| PgType {
            oid: 1,
            typmod,
            elem_oid: Some(elem),
            is_enum: false,
        };
        let plan = plan_column("a", &arr(23, -1));
        assert!(!plan.cast_to_text);
        let DataType::List(item) = plan.field.data_type() else {
            panic!("not a list: {:?}", plan.field.data_type());
        };
        assert_eq!(item.name(), "item");
        assert!(item.is_nullable());
        assert_eq!(item.data_type(), &DataType::Int32);

        let plan = plan_column("a", &arr(1700, numeric_typmod(12, 3)));
        let DataType::List(item) = plan.field.data_type() else {
            panic!("not a list");
        };
        assert_eq!(item.data_type(), &DataType::Decimal128(12, 3));

        let plan = plan_column("a", &arr(2950, -1));
        let DataType::List(item) = plan.field.data_type() else {
            panic!("not a list");
        };
        assert_eq!(
            item.metadata()
                .get("ARROW:extension:name")
                .map(String::as_str),
            Some("arrow.uuid")
        );

        // An array of a type read as text is read as text as a whole.
        let plan = plan_column("a", &arr(869, -1));
        assert!(plan.cast_to_text);
        assert_eq!(plan.field.data_type(), &DataType::Utf8);

        let plan = plan_column(
            "a",
            &PgType {
                oid: 1,
                typmod: -1,
                elem_oid: Some(77_777),
                is_enum: true,
            },
        );
        assert!(!plan.cast_to_text);
        assert!(
            matches!(plan.field.data_type(), DataType::List(f) if f.data_type() == &DataType::Utf8)
        );
    }
}
