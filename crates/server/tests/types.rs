//! The type torture test: a hypertable with one column per row of the type table (plus an enum,
//! domains, arrays and types read as text), holding NULLs and every extreme we know of, read through
//! Flight and compared value by value with what PostgreSQL itself says each value is.
//!
//! How a value is compared: SQL renders it into a canonical string (computed in SQL, from PostgreSQL's
//! own functions: `float8send`, `encode`, `extract`, `::text`), the test renders the Arrow value into
//! the same form ([`render`]), and every (row, column) pair must be equal. A mismatch names the column
//! and the row's `id`. The Arrow schema is compared exactly too: data types, nullability, list item
//! fields and the `ARROW:extension:name` metadata.
//!
//! Special-value rules asserted here (from `src/pgarrow/types.rs`):
//!
//! - float4/float8: NaN, ±Infinity, -0.0 and subnormals keep their exact IEEE bits (`float8send`).
//! - numeric(p,s) with 1 ≤ p ≤ 38 and s ≤ p (s may be negative, PostgreSQL 15) is `Decimal128(p,s)`,
//!   exact (38 digits included); a domain over it, or a domain over that domain, is the same.
//!   NaN in such a column is an error naming the column (`nan_*` tables below); PostgreSQL itself
//!   refuses ±Infinity there.
//! - Any other numeric (unconstrained, p > 38, s > p) is `Utf8` exactly as PostgreSQL prints it,
//!   including `NaN`, `Infinity`, `-Infinity`, trailing zeros and 100 000+ digit values.
//! - date `±infinity` is `i32::MAX` / `i32::MIN`; timestamp and timestamptz `±infinity` are
//!   `i64::MAX` / `i64::MIN` µs. A finite timestamp beyond what µs since 1970 can hold without
//!   meeting those sentinels (after 294247-01-10 04:00:54.775806) is an error naming the column.
//! - time 24:00:00 is 86 400 000 000 µs.
//! - interval is months, days and µs × 1000 nanoseconds, each field keeping its own sign; more than
//!   ±2562047:47:16.854775 of time is an error naming the column.
//! - bpchar keeps its padding (as PostgreSQL's output function prints it, not as `::text`, which
//!   trims it); json keeps its text byte for byte (whitespace, duplicate keys); jsonb is PostgreSQL's
//!   normalized text; enums are their labels.
//! - uuid is 16 bytes with extension `arrow.uuid`; json and jsonb are Utf8 with `arrow.json`.
//! - A one-dimensional array is a List whose items follow the rules above; NULL elements and empty
//!   arrays are kept; a lower bound other than 1 is dropped; two dimensions are an error naming the
//!   column.
//! - Every other type (inet, money, timetz, point, xml, oid, "char", bit, ranges, arrays of those …)
//!   is Utf8 equal to `::text`.
//! - NULL is NULL in every column, and the first row is NULL in every column but `id`.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Field, Float32Type, Float64Type, Int16Type, Int32Type,
    Int64Type, IntervalMonthDayNanoType, IntervalUnit, Time64MicrosecondType, TimeUnit,
    TimestampMicrosecondType,
};
use arrow_flight::error::FlightError;
use arrow_flight::{FlightClient, FlightDescriptor};
use testkit::*;

/// The database of this file's tables (created if missing).
const TYPES_DB: &str = "hyperflight_types";
/// The schema holding them; its comment is the fingerprint of the SQL that built it.
const SCHEMA: &str = "torture";

/// How a value becomes its canonical string. SQL and Arrow must agree on this form; see [`sql_canon`]
/// and [`render`].
#[derive(Debug, Clone, Copy)]
enum Canon {
    /// `x::text`: booleans, integers, numerics, text, enums, uuid, json, and types read as text.
    Text,
    /// The output function's text (`format('%s', x)`): bpchar with its padding.
    Padded,
    /// IEEE bits in hex (`float4send`).
    Float4,
    /// IEEE bits in hex (`float8send`).
    Float8,
    /// Bytes in hex.
    Bytea,
    /// Days since 1970-01-01; ±infinity as `i32::MAX` / `i32::MIN`.
    Date,
    /// µs since midnight.
    Time,
    /// µs since 1970-01-01 00:00:00 (UTC for timestamptz); ±infinity as `i64::MAX` / `i64::MIN`.
    Timestamp,
    /// `months days nanoseconds`, each from `extract`.
    Interval,
    /// `[len:value,N,…]` of the element form (`N` = NULL element, `len` = bytes of the value).
    List(&'static Canon),
}

/// One column of the torture table.
struct Col {
    name: &'static str,
    sql_type: &'static str,
    canon: Canon,
    /// The Arrow field's expected data type and extension name.
    arrow: (DataType, Option<&'static str>),
    /// SQL expressions: row `id` k (k ≥ 1) holds `values[k - 1]`, NULL past the end; row 0 is NULL.
    values: &'static [&'static str],
}

fn col(
    name: &'static str,
    sql_type: &'static str,
    canon: Canon,
    arrow: DataType,
    values: &'static [&'static str],
) -> Col {
    Col {
        name,
        sql_type,
        canon,
        arrow: (arrow, None),
        values,
    }
}

fn ext(mut c: Col, name: &'static str) -> Col {
    c.arrow.1 = Some(name);
    c
}

/// A nullable field as the server builds it: extension metadata name plus empty metadata.
fn field(name: &str, dt: DataType, extension: Option<&str>) -> Field {
    let f = Field::new(name, dt, true);
    match extension {
        Some(e) => f.with_metadata(HashMap::from([
            ("ARROW:extension:name".to_owned(), e.to_owned()),
            ("ARROW:extension:metadata".to_owned(), String::new()),
        ])),
        None => f,
    }
}

fn list(dt: DataType, extension: Option<&str>) -> DataType {
    DataType::List(Arc::new(field("item", dt, extension)))
}

const TEXT: Canon = Canon::Text;

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, None)
}
fn tstz() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}
fn interval() -> DataType {
    DataType::Interval(IntervalUnit::MonthDayNano)
}

/// Types the table needs besides built-in ones.
const TYPES_SQL: &str = "
CREATE TYPE {s}.mood AS ENUM ('sad', 'ok', 'with space', 'ünï 🦀', 'NULL');
CREATE DOMAIN {s}.amount AS numeric(10,2) CHECK (VALUE > -1000000);
CREATE DOMAIN {s}.positive_amount AS {s}.amount CHECK (VALUE > 0);
CREATE DOMAIN {s}.mood_domain AS {s}.mood;
CREATE DOMAIN {s}.word AS text;
CREATE DOMAIN {s}.int_list AS int4[] CHECK (cardinality(VALUE) < 10);
CREATE DOMAIN {s}.price_list AS numeric(10,2)[];
CREATE TYPE {s}.pair AS (n int4, t text);
";

fn columns() -> Vec<Col> {
    use DataType::*;
    vec![
        col("bool", "bool", TEXT, Boolean, &["true", "false"]),
        col("int2", "int2", TEXT, Int16, &["-32768", "32767", "0", "-1"]),
        col("int4", "int4", TEXT, Int32, &["-2147483648", "2147483647", "0"]),
        col(
            "int8",
            "int8",
            TEXT,
            Int64,
            &["-9223372036854775808", "9223372036854775807", "0"],
        ),
        col(
            "float4",
            "float4",
            Canon::Float4,
            Float32,
            &[
                "'NaN'",
                "'Infinity'",
                "'-Infinity'",
                "'-0'",
                "'1.4e-45'",        // smallest subnormal
                "'1.1754942e-38'",  // largest subnormal
                "'1.17549435e-38'", // smallest normal
                "'3.4028235e38'",
                "'-3.4028235e38'",
                "'0.1'",
            ],
        ),
        col(
            "float8",
            "float8",
            Canon::Float8,
            Float64,
            &[
                "'NaN'",
                "'Infinity'",
                "'-Infinity'",
                "'-0'",
                "'4.9e-324'",
                "'2.225073858507201e-308'",
                "'2.2250738585072014e-308'",
                "'1.7976931348623157e308'",
                "'-1.7976931348623157e308'",
                "'0.1'",
            ],
        ),
        col(
            "numeric_10_2",
            "numeric(10,2)",
            TEXT,
            Decimal128(10, 2),
            &["0", "-0.01", "12345678.91", "-99999999.99", "1.5"],
        ),
        col(
            "numeric_38_0",
            "numeric(38,0)",
            TEXT,
            Decimal128(38, 0),
            &[
                "99999999999999999999999999999999999999",
                "-99999999999999999999999999999999999999",
                "0",
                "1",
            ],
        ),
        col(
            "numeric_38_10",
            "numeric(38,10)",
            TEXT,
            Decimal128(38, 10),
            &[
                "9999999999999999999999999999.9999999999",
                "-9999999999999999999999999999.9999999999",
                "-0.0000000001",
                "1234567890123456789012345678.0123456789",
                "0",
            ],
        ),
        col(
            "numeric_38_38",
            "numeric(38,38)",
            TEXT,
            Decimal128(38, 38),
            &[
                "0.99999999999999999999999999999999999999",
                "-0.00000000000000000000000000000000000001",
                "0.5",
            ],
        ),
        col(
            "numeric_neg_scale",
            "numeric(5,-3)",
            TEXT,
            Decimal128(5, -3),
            &["12000", "-99999000", "0", "499"],
        ),
        col(
            "numeric_scale_gt_precision",
            "numeric(3,5)",
            TEXT,
            Utf8,
            &["0.00123", "-0.00999", "0"],
        ),
        col(
            "numeric_50_10",
            "numeric(50,10)",
            TEXT,
            Utf8,
            &["1234567890123456789012345678901234567890.0123456789", "0", "-1.5"],
        ),
        col(
            "numeric",
            "numeric",
            TEXT,
            Utf8,
            &[
                "'NaN'",
                "'Infinity'",
                "'-Infinity'",
                "0",
                "0.000",
                "(repeat('9', 120) || '.' || repeat('1', 30))::numeric",
                "('-' || repeat('1234567890', 11))::numeric",
                "'1e-1000'",
                "'1e131071'",
                "'-0.0001'",
                "'12345678901234567890.12345678901234567890'",
            ],
        ),
        col(
            "amount",
            "{s}.amount",
            TEXT,
            Decimal128(10, 2),
            &["12345.6", "-0.01", "-999999.99", "99999999.99"],
        ),
        col(
            "positive_amount",
            "{s}.positive_amount",
            TEXT,
            Decimal128(10, 2),
            &["0.01", "99999999.99"],
        ),
        col(
            "mood_domain",
            "{s}.mood_domain",
            TEXT,
            Utf8,
            &["'ok'", "'ünï 🦀'"],
        ),
        col(
            "int_list",
            "{s}.int_list",
            Canon::List(&TEXT),
            list(Int32, None),
            &["'{1,NULL,3}'", "'{}'"],
        ),
        col(
            "price_list",
            "{s}.price_list",
            Canon::List(&TEXT),
            list(Decimal128(10, 2), None),
            &["'{1.5,NULL,-99999999.99}'"],
        ),
        col(
            "timestamptz_0",
            "timestamptz(0)",
            Canon::Timestamp,
            tstz(),
            &["'2000-01-01 00:00:00.7+00'", "'-infinity'"],
        ),
        col(
            "interval_ym",
            "interval year to month",
            Canon::Interval,
            interval(),
            &["'-1 year -2 months'", "'3 days'"],
        ),
        col(
            "text",
            "text",
            TEXT,
            Utf8,
            &[
                "''",
                "'plain'",
                "'🦀 emoji, 👩‍👩‍👧 zwj'",
                "'漢字かな한글'",
                "'e\u{301} combining, ﷽, مرحبا'",
                "E'tab\\there\\nnew line \\\\ backslash '' quote'",
                "'NULL'",
                "repeat('ab🦀', 40000)", // TOASTed and compressed
            ],
        ),
        col(
            "varchar_10",
            "varchar(10)",
            TEXT,
            Utf8,
            &["'ünïcödé!!'", "''", "'🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀'"],
        ),
        col(
            "bpchar_5",
            "char(5)",
            Canon::Padded,
            Utf8,
            &["'ab'", "''", "'é'", "'abcde'", "'🦀 '"],
        ),
        col(
            "name",
            "name",
            TEXT,
            Utf8,
            &["repeat('n', 63)", "'ñame'", "repeat('ñ', 40)", "''"],
        ),
        col(
            "mood",
            "{s}.mood",
            TEXT,
            Utf8,
            &["'sad'", "'with space'", "'ünï 🦀'", "'NULL'"],
        ),
        col(
            "bytea",
            "bytea",
            Canon::Bytea,
            Binary,
            &[
                "'\\x'",
                "'\\x00'",
                "'\\x00ff00'",
                "convert_to('🦀', 'UTF8')",
                "decode(repeat('00ff', 50000), 'hex')",
            ],
        ),
        col(
            "date",
            "date",
            Canon::Date,
            Date32,
            &[
                "'1970-01-01'",
                "'1969-12-31'",
                "'2000-01-01'",
                "'2100-12-31'",
                "'0001-01-01'",
                "'4713-01-01 BC'",
                "'5874897-12-31'",
                "'infinity'",
                "'-infinity'",
                "'1582-10-04'",
            ],
        ),
        col(
            "time",
            "time",
            Canon::Time,
            Time64(TimeUnit::Microsecond),
            &[
                "'00:00:00'",
                "'24:00:00'",
                "'23:59:59.999999'",
                "'12:34:56.000001'",
            ],
        ),
        col(
            "timestamp",
            "timestamp",
            Canon::Timestamp,
            ts(),
            &[
                "'infinity'",
                "'-infinity'",
                "'1970-01-01 00:00:00'",
                "'1969-12-31 23:59:59.999999'",
                "'2000-01-01 00:00:00.000001'",
                "'4713-01-01 00:00:00 BC'",
                "'294247-01-10 04:00:54.775806'", // the last µs before i64::MAX
                "'2262-04-11 23:47:16.854776'",   // past Timestamp(ns)
                "'1900-02-28 12:00:00.5'",
            ],
        ),
        col(
            "timestamptz",
            "timestamptz",
            Canon::Timestamp,
            tstz(),
            &[
                "'infinity'",
                "'-infinity'",
                "'1970-01-01 00:00:00+00'",
                "'2024-03-10 02:30:00.123456-08'",
                "'1969-12-31 23:59:59.999999+14'",
                "'4713-01-01 00:00:00+00 BC'",
                "'294247-01-10 04:00:54.775806+00'",
                "'2100-01-01 00:00:00.000001+00'",
            ],
        ),
        col(
            "interval",
            "interval",
            Canon::Interval,
            interval(),
            &[
                "'0'",
                "'1 year 2 months 3 days 04:05:06.789012'",
                "'-1 year -2 months -3 days -04:05:06.789012'",
                "'1 mon -1 day 00:00:00.000001'",
                "'-1 mon +1 day -00:00:00.000001'",
                "'178956970 years 7 months'",   // i32::MAX months
                "'-178956970 years -8 months'", // i32::MIN months
                "'2147483647 days'",
                "'-2147483648 days'",
                "'2562047:47:16.854775'", // the most time whose ns fit an i64
                "'-2562047:47:16.854775'",
            ],
        ),
        ext(
            col(
                "uuid",
                "uuid",
                TEXT,
                FixedSizeBinary(16),
                &[
                    "'00000000-0000-0000-0000-000000000000'",
                    "'ffffffff-ffff-ffff-ffff-ffffffffffff'",
                    "'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'",
                ],
            ),
            "arrow.uuid",
        ),
        ext(
            col(
                "json",
                "json",
                TEXT,
                Utf8,
                &[
                    r#"'{ "a" : 1,  "a" : [ 2 , 3 ] }'"#,
                    r#"'"\u00e9\ud83e\udd80 \u0000 é🦀"'"#,
                    "E'{\\n\\t\"k\": \"v\"\\n}\\n'",
                    "' 1e400 '",
                    r#"'{"nested": {"deep": [[[{"x": null}]]]}}'"#,
                    "'null'",
                    "'[]'",
                ],
            ),
            "arrow.json",
        ),
        ext(
            col(
                "jsonb",
                "jsonb",
                TEXT,
                Utf8,
                &[
                    r#"'{"b": {"c": [1, 2.50, null, true, "é🦀"]}, "a": "\u00e9"}'"#,
                    r#"'{"a": 1, "a": 2}'"#,
                    "'1e400'",
                    r#"'"\ud83e\udd80"'"#,
                    "'[]'",
                    "'{}'",
                    "'null'",
                    r#"'{"deep": [[[[[[[[[[{"x": [null]}]]]]]]]]]]}'"#,
                ],
            ),
            "arrow.json",
        ),
        col(
            "int4_array",
            "int4[]",
            Canon::List(&TEXT),
            list(Int32, None),
            &[
                "'{}'",
                "'{1,NULL,-2147483648,2147483647}'",
                "'{NULL}'",
                "'[5:6]={7,8}'",
            ],
        ),
        col(
            "text_array",
            "text[]",
            Canon::List(&TEXT),
            list(Utf8, None),
            &[
                "'{}'",
                r#"'{"",NULL,"NULL","a,b","🦀","q\"uote"}'"#,
                "ARRAY[repeat('x', 3000), 'y']",
            ],
        ),
        col(
            "numeric_array",
            "numeric(12,3)[]",
            Canon::List(&TEXT),
            list(Decimal128(12, 3), None),
            &["'{1.5,NULL,-999999999.999,0}'", "'{}'"],
        ),
        col(
            "numeric_free_array",
            "numeric[]",
            Canon::List(&TEXT),
            list(Utf8, None),
            &["'{NaN,Infinity,-Infinity,-1e-20,NULL,0.00}'"],
        ),
        col(
            "timestamptz_array",
            "timestamptz[]",
            Canon::List(&Canon::Timestamp),
            list(tstz(), None),
            &[r#"'{infinity,-infinity,"2000-01-01 00:00:00.000001+00",NULL}'"#],
        ),
        col(
            "uuid_array",
            "uuid[]",
            Canon::List(&TEXT),
            list(FixedSizeBinary(16), Some("arrow.uuid")),
            &[
                "'{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,NULL,00000000-0000-0000-0000-000000000000}'",
                "'{}'",
            ],
        ),
        col(
            "mood_array",
            "{s}.mood[]",
            Canon::List(&TEXT),
            list(Utf8, None),
            &[r#"'{sad,NULL,"with space","ünï 🦀","NULL"}'"#, "'{}'"],
        ),
        col(
            "float8_array",
            "float8[]",
            Canon::List(&Canon::Float8),
            list(Float64, None),
            &["'{NaN,-Infinity,Infinity,-0,4.9e-324,NULL}'"],
        ),
        col(
            "float4_array",
            "float4[]",
            Canon::List(&Canon::Float4),
            list(Float32, None),
            &["'{NaN,-0,1.4e-45,NULL}'"],
        ),
        col(
            "bool_array",
            "bool[]",
            Canon::List(&TEXT),
            list(Boolean, None),
            &["'{t,f,NULL}'"],
        ),
        col(
            "int2_array",
            "int2[]",
            Canon::List(&TEXT),
            list(Int16, None),
            &["'{-32768,32767,NULL}'"],
        ),
        col(
            "int8_array",
            "int8[]",
            Canon::List(&TEXT),
            list(Int64, None),
            &["'{-9223372036854775808,9223372036854775807,NULL}'"],
        ),
        col(
            "bytea_array",
            "bytea[]",
            Canon::List(&Canon::Bytea),
            list(Binary, None),
            &["ARRAY['\\x00ff'::bytea, NULL, '\\x']"],
        ),
        col(
            "date_array",
            "date[]",
            Canon::List(&Canon::Date),
            list(Date32, None),
            &["ARRAY['infinity'::date, '-infinity', '1969-12-31', NULL]"],
        ),
        col(
            "time_array",
            "time[]",
            Canon::List(&Canon::Time),
            list(Time64(TimeUnit::Microsecond), None),
            &["ARRAY['24:00:00'::time, NULL, '00:00:00.000001']"],
        ),
        col(
            "timestamp_array",
            "timestamp[]",
            Canon::List(&Canon::Timestamp),
            list(ts(), None),
            &["ARRAY['-infinity'::timestamp, '1969-12-31 23:59:59.999999', NULL]"],
        ),
        col(
            "interval_array",
            "interval[]",
            Canon::List(&Canon::Interval),
            list(interval(), None),
            &["ARRAY['-1 mon 1 day -00:00:00.000001'::interval, NULL, '0']"],
        ),
        col(
            "jsonb_array",
            "jsonb[]",
            Canon::List(&TEXT),
            list(Utf8, Some("arrow.json")),
            &[r#"ARRAY['{"a": [1, "é"]}'::jsonb, 'null', NULL]"#],
        ),
        col(
            "json_array",
            "json[]",
            Canon::List(&TEXT),
            list(Utf8, Some("arrow.json")),
            &[r#"ARRAY['{ "a" : 1, "a" : 2 }'::json, NULL]"#],
        ),
        col(
            "bpchar_array",
            "char(3)[]",
            Canon::List(&Canon::Padded),
            list(Utf8, None),
            &["ARRAY['a', NULL, 'é', '']"],
        ),
        col(
            "varchar_array",
            "varchar[]",
            Canon::List(&TEXT),
            list(Utf8, None),
            &["ARRAY['', NULL, '🦀']"],
        ),
        // Anything else: `::text`.
        col(
            "inet",
            "inet",
            TEXT,
            Utf8,
            &["'192.168.0.1/24'", "'::ffff:1.2.3.4'", "'2001:db8::1/128'"],
        ),
        col("cidr", "cidr", TEXT, Utf8, &["'10.0.0.0/8'"]),
        col(
            "money",
            "money",
            TEXT,
            Utf8,
            &[
                "'-92233720368547758.08'",
                "'92233720368547758.07'",
                "'0'",
                "'1234.5'",
            ],
        ),
        col(
            "timetz",
            "timetz",
            TEXT,
            Utf8,
            &[
                "'24:00:00+15:59'",
                "'00:00:00-15:59'",
                "'12:34:56.789012+05:30'",
            ],
        ),
        col(
            "point",
            "point",
            TEXT,
            Utf8,
            &["'(1.5,-2)'", "'(NaN,Infinity)'", "'(-0,1e-320)'"],
        ),
        col(
            "xml",
            "xml",
            TEXT,
            Utf8,
            &[r#"'<a b="1">é &amp; 🦀</a>'"#, "'text only'", "''"],
        ),
        col("oid", "oid", TEXT, Utf8, &["0", "4294967295"]),
        col("char", "\"char\"", TEXT, Utf8, &["'a'", "'é'", "''"]),
        col("bit_3", "bit(3)", TEXT, Utf8, &["B'101'", "B'000'"]),
        col("varbit", "varbit", TEXT, Utf8, &["B''", "B'1'"]),
        col("int4range", "int4range", TEXT, Utf8, &["'[1,5)'", "'empty'"]),
        col("tsvector", "tsvector", TEXT, Utf8, &["'a fat cat''s'"]),
        col(
            "macaddr",
            "macaddr",
            TEXT,
            Utf8,
            &["'08:00:2b:01:02:03'"],
        ),
        col(
            "pair",
            "{s}.pair",
            TEXT,
            Utf8,
            &["ROW(1, 'a \"b\", c')", "ROW(NULL, NULL)"],
        ),
        col(
            "pair_array",
            "{s}.pair[]",
            TEXT,
            Utf8,
            &["ARRAY[ROW(1, 'x')::{s}.pair, NULL]"],
        ),
        col(
            "int4multirange",
            "int4multirange",
            TEXT,
            Utf8,
            &["'{[1,3), [5,7)}'", "'{}'"],
        ),
        col("char_array", "\"char\"[]", TEXT, Utf8, &["'{a,NULL}'"]),
        col(
            "inet_array",
            "inet[]",
            TEXT,
            Utf8,
            &["'{10.0.0.1,NULL}'", "'{}'"],
        ),
    ]
}

/// Tables whose one bad value must fail the read: (table, column, SQL type, value, words the error
/// message must contain).
const BAD_VALUES: &[(&str, &str, &str, &str, &[&str])] = &[
    (
        "nan_price",
        "price",
        "numeric(10,2)",
        "'NaN'",
        &["NaN", "Decimal128(10, 2)"],
    ),
    ("nan_amount", "amount", "{s}.amount", "'NaN'", &["NaN"]),
    (
        "nan_positive",
        "positive",
        "{s}.positive_amount",
        "'NaN'",
        &["NaN"],
    ),
    (
        "nan_in_array",
        "prices",
        "numeric(12,3)[]",
        "'{1,NaN}'",
        &["NaN"],
    ),
    (
        "far_timestamp",
        "far",
        "timestamp",
        "'294276-12-31 23:59:59.999999'",
        &["timestamp"],
    ),
    (
        "max_timestamp",
        "max_ts",
        "timestamptz",
        "'294247-01-10 04:00:54.775807+00'",
        &["timestamp"],
    ),
    (
        "long_interval",
        "span",
        "interval",
        "'2562047:47:16.854776'",
        &["interval"],
    ),
    (
        "matrix",
        "cells",
        "int4[]",
        "'{{1,2},{3,4}}'",
        &["2 dimensions"],
    ),
];

/// Arrays whose element type is a domain: the element is the domain's base type, as for a column.
fn domain_array_columns() -> Vec<Col> {
    use DataType::*;
    vec![
        col(
            "amounts",
            "{s}.amount[]",
            Canon::List(&TEXT),
            list(Decimal128(10, 2), None),
            &["'{1.5,NULL,-0.01}'", "'{}'"],
        ),
        col(
            "positive_amounts",
            "{s}.positive_amount[]",
            Canon::List(&TEXT),
            list(Decimal128(10, 2), None),
            &["'{0.01,NULL}'"],
        ),
        col(
            "moods",
            "{s}.mood_domain[]",
            Canon::List(&TEXT),
            list(Utf8, None),
            &[r#"'{sad,NULL,"ünï 🦀"}'"#],
        ),
        col(
            "words",
            "{s}.word[]",
            Canon::List(&TEXT),
            list(Utf8, None),
            &["'{a,NULL,🦀}'"],
        ),
    ]
}

/// SQL creating table `{s}.name` of `cols` after an `id` column, and filling it: row 0 is NULL in
/// every column, row k holds each column's k-th value (NULL past its end).
fn table_sql(name: &str, cols: &[Col]) -> String {
    let defs: Vec<String> = cols
        .iter()
        .map(|c| format!("{} {}", quote(c.name), c.sql_type))
        .collect();
    let mut sql = format!(
        "CREATE TABLE {{s}}.{name} (id int4 NOT NULL, {});\n",
        defs.join(", ")
    );
    let rows = cols.iter().map(|c| c.values.len()).max().unwrap_or(0);
    for id in 0..=rows {
        let values: Vec<&str> = cols
            .iter()
            .map(|c| match id.checked_sub(1) {
                Some(k) => c.values.get(k).copied().unwrap_or("NULL"),
                None => "NULL",
            })
            .collect();
        sql += &format!(
            "INSERT INTO {{s}}.{name} VALUES ({id}, {});\n",
            values.join(", ")
        );
    }
    sql
}

/// The SQL that builds every table of this file in `schema`.
fn setup_sql(schema: &str) -> String {
    let mut sql = TYPES_SQL.to_owned();
    // A hypertable of 4-row chunks, so the values travel through several chunk endpoints.
    sql += &table_sql("t", &columns());
    sql += "SELECT create_hypertable('{s}.t', 'id', chunk_time_interval => 4, migrate_data => true);\n";
    sql += &table_sql("domain_arrays", &domain_array_columns());
    for (table, column, ty, value, _) in BAD_VALUES {
        sql += &format!(
            "CREATE TABLE {{s}}.{table} (id int4, {column} {ty});\n\
             INSERT INTO {{s}}.{table} VALUES (1, NULL), (2, {value}), (3, NULL);\n"
        );
    }
    sql.replace("{s}", schema)
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// The canonical form of SQL expression `e` (NULL stays NULL).
fn sql_canon(canon: Canon, e: &str) -> String {
    match canon {
        Canon::Text => format!("({e})::text"),
        Canon::Padded => format!("CASE WHEN {e} IS NOT NULL THEN format('%s', {e}) END"),
        Canon::Float4 => format!("encode(float4send({e}), 'hex')"),
        Canon::Float8 => format!("encode(float8send({e}), 'hex')"),
        Canon::Bytea => format!("encode({e}, 'hex')"),
        Canon::Date => format!(
            "CASE WHEN {e} = 'infinity' THEN '2147483647' WHEN {e} = '-infinity' \
             THEN '-2147483648' ELSE ({e} - date '1970-01-01')::text END"
        ),
        Canon::Time => format!("(extract(epoch FROM {e}) * 1000000)::int8::text"),
        Canon::Timestamp => format!(
            "CASE WHEN {e} = 'infinity' THEN '9223372036854775807' WHEN {e} = '-infinity' \
             THEN '-9223372036854775808' ELSE (extract(epoch FROM {e}) * 1000000)::int8::text END"
        ),
        Canon::Interval => format!(
            "(extract(year FROM {e}) * 12 + extract(month FROM {e}))::text || ' ' \
             || extract(day FROM {e})::text || ' ' \
             || (((extract(hour FROM {e}) * 3600 + extract(minute FROM {e}) * 60) * 1000000 \
                 + extract(microseconds FROM {e})) * 1000)::int8::text"
        ),
        Canon::List(item) => format!(
            "CASE WHEN {e} IS NOT NULL THEN '[' || coalesce((\
               SELECT string_agg(coalesce(octet_length(c) || ':' || c, 'N'), ',' ORDER BY o) \
               FROM (SELECT o, {} AS c FROM unnest({e}) WITH ORDINALITY AS u(el, o)) AS v), '') \
             || ']' END",
            sql_canon(*item, "el")
        ),
    }
}

/// Row `i` of `a` in the canonical form of its Arrow type (`None` for NULL).
fn render(a: &dyn Array, i: usize) -> Option<String> {
    if a.is_null(i) {
        return None;
    }
    Some(match a.data_type() {
        DataType::Boolean => a.as_boolean().value(i).to_string(),
        DataType::Int16 => a.as_primitive::<Int16Type>().value(i).to_string(),
        DataType::Int32 => a.as_primitive::<Int32Type>().value(i).to_string(),
        DataType::Int64 => a.as_primitive::<Int64Type>().value(i).to_string(),
        DataType::Float32 => format!("{:08x}", a.as_primitive::<Float32Type>().value(i).to_bits()),
        DataType::Float64 => format!(
            "{:016x}",
            a.as_primitive::<Float64Type>().value(i).to_bits()
        ),
        DataType::Decimal128(_, scale) => {
            decimal_text(a.as_primitive::<Decimal128Type>().value(i), *scale)
        }
        DataType::Utf8 => a.as_string::<i32>().value(i).to_owned(),
        DataType::Binary => hex(a.as_binary::<i32>().value(i)),
        DataType::Date32 => a.as_primitive::<Date32Type>().value(i).to_string(),
        DataType::Time64(TimeUnit::Microsecond) => a
            .as_primitive::<Time64MicrosecondType>()
            .value(i)
            .to_string(),
        DataType::Timestamp(TimeUnit::Microsecond, _) => a
            .as_primitive::<TimestampMicrosecondType>()
            .value(i)
            .to_string(),
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            let v = a.as_primitive::<IntervalMonthDayNanoType>().value(i);
            format!("{} {} {}", v.months, v.days, v.nanoseconds)
        }
        DataType::FixedSizeBinary(16) => {
            let h = hex(a.as_fixed_size_binary().value(i));
            format!(
                "{}-{}-{}-{}-{}",
                &h[..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..]
            )
        }
        DataType::List(_) => {
            let items = a.as_list::<i32>().value(i);
            let parts: Vec<String> = (0..items.len())
                .map(|j| match render(&items, j) {
                    Some(v) => format!("{}:{v}", v.len()),
                    None => "N".to_owned(),
                })
                .collect();
            format!("[{}]", parts.join(","))
        }
        other => panic!("no canonical form for Arrow type {other}"),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A Decimal128 value as PostgreSQL prints numeric(p,s): exactly `s` fractional digits, and for a
/// negative scale the integer with its trailing zeros.
fn decimal_text(v: i128, scale: i8) -> String {
    let sign = if v < 0 { "-" } else { "" };
    let digits = v.unsigned_abs().to_string();
    if scale <= 0 {
        return if v == 0 {
            "0".to_owned()
        } else {
            format!("{sign}{digits}{}", "0".repeat(scale.unsigned_abs().into()))
        };
    }
    let scale = usize::from(scale.unsigned_abs());
    let digits = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = digits.split_at(digits.len() - scale);
    format!("{sign}{int}.{frac}")
}

/// URL of this file's database, with every table built and current. Safe when several test
/// processes call it at once: they take turns on an advisory lock, and the schema is rebuilt only
/// when its comment (the fingerprint of [`setup_sql`]) differs from this build's.
async fn types_db() -> String {
    let admin = pg(cluster_url()).await;
    admin
        .execute(
            "SELECT pg_advisory_lock(hashtext('hyperflight tests/types.rs'))",
            &[],
        )
        .await
        .unwrap();
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&TYPES_DB])
        .await
        .unwrap()
        .is_some();
    if !exists {
        admin
            .batch_execute(&format!("CREATE DATABASE {TYPES_DB}"))
            .await
            .unwrap();
    }
    let url = database_url(TYPES_DB);
    let db = pg(&url).await;
    let sql = setup_sql(SCHEMA);
    let mut hasher = std::hash::DefaultHasher::new();
    sql.hash(&mut hasher);
    let fingerprint = format!("{:016x}", hasher.finish());
    let current: Option<String> = db
        .query_one(
            "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = $1
             UNION ALL SELECT NULL LIMIT 1",
            &[&SCHEMA],
        )
        .await
        .unwrap()
        .get(0);
    if current.as_deref() != Some(fingerprint.as_str()) {
        db.batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            .await
            .unwrap();
        db.batch_execute(&format!(
            "BEGIN; DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA};\n{sql}\n\
             ANALYZE {SCHEMA}.t; COMMENT ON SCHEMA {SCHEMA} IS '{fingerprint}'; COMMIT;"
        ))
        .await
        .unwrap_or_else(|e| panic!("building the torture tables: {e:?}"));
    }
    admin
        .execute(
            "SELECT pg_advisory_unlock(hashtext('hyperflight tests/types.rs'))",
            &[],
        )
        .await
        .unwrap();
    url
}

/// Every row of `descriptor`, read through Flight, by `id`: each column's canonical values.
async fn flight_rows(
    server: &TestServer,
    descriptor: FlightDescriptor,
) -> (
    arrow::datatypes::SchemaRef,
    BTreeMap<i32, Vec<Option<String>>>,
) {
    let mut client = server.client().await;
    let info = client.get_flight_info(descriptor).await.unwrap();
    let schema = Arc::new(info.clone().try_decode_schema().unwrap());
    let batches = read_all(server, &info).await;
    let mut rows = BTreeMap::new();
    for b in &batches {
        assert_eq!(
            b.schema(),
            schema,
            "a batch's schema differs from GetFlightInfo's"
        );
        let id_col = schema.index_of("id").expect("an id column");
        let ids = b.column(id_col).as_primitive::<Int32Type>();
        for i in 0..b.num_rows() {
            let values = b.columns().iter().map(|c| render(c, i)).collect();
            assert!(
                rows.insert(ids.value(i), values).is_none(),
                "row {} delivered twice",
                ids.value(i)
            );
        }
    }
    (schema, rows)
}

/// Every row of `columns` from SQL, by `id`, each value in its column's canonical form.
async fn sql_rows(
    db: &tokio_postgres::Client,
    table: &str,
    columns: &[(&str, Canon)],
) -> BTreeMap<i32, Vec<Option<String>>> {
    let exprs: Vec<String> = columns
        .iter()
        .map(|(name, canon)| sql_canon(*canon, &quote(name)))
        .collect();
    let sql = format!(
        "SELECT id, ARRAY[{}]::text[] FROM {SCHEMA}.{table} ORDER BY id",
        exprs.join(", ")
    );
    db.query(&sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{sql}"))
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Compares every value; the failure lists each wrong value by column and row.
fn assert_same_values(
    names: &[&str],
    flight: &BTreeMap<i32, Vec<Option<String>>>,
    sql: &BTreeMap<i32, Vec<Option<String>>>,
) {
    assert_eq!(
        flight.keys().collect::<Vec<_>>(),
        sql.keys().collect::<Vec<_>>(),
        "row ids differ"
    );
    let mut wrong = Vec::new();
    for (id, want) in sql {
        let got = &flight[id];
        for ((name, g), w) in names.iter().zip(got).zip(want) {
            if g != w {
                let show = |v: &Option<String>| match v {
                    Some(s) if s.len() > 200 => format!(
                        "{:?}… ({} bytes)",
                        s.chars().take(100).collect::<String>(),
                        s.len()
                    ),
                    other => format!("{other:?}"),
                };
                wrong.push(format!(
                    "column {name:?}, row id {id}: flight {} but SQL {}",
                    show(g),
                    show(w)
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} values read wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// Reads `table` (of `cols`) through Flight and asserts its exact Arrow fields and every value.
async fn assert_reads_exactly(
    server: &TestServer,
    db: &tokio_postgres::Client,
    table: &str,
    cols: &[Col],
) {
    let (schema, flight) = flight_rows(server, path(SCHEMA, table)).await;
    let mut want = vec![Field::new("id", DataType::Int32, true)];
    want.extend(
        cols.iter()
            .map(|c| field(c.name, c.arrow.0.clone(), c.arrow.1)),
    );
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let want_names: Vec<&str> = want.iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, want_names, "columns of {table}");
    let wrong: Vec<String> = schema
        .fields()
        .iter()
        .zip(&want)
        .filter(|(got, want)| got.as_ref() != *want)
        .map(|(got, want)| {
            format!(
                "column {:?}: Arrow field {got:?}, expected {want:?}",
                want.name()
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} Arrow fields wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    let mut spec = vec![("id", Canon::Text)];
    spec.extend(cols.iter().map(|c| (c.name, c.canon)));
    let sql = sql_rows(db, table, &spec).await;
    let names: Vec<&str> = spec.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        sql.len(),
        1 + cols.iter().map(|c| c.values.len()).max().unwrap()
    );
    assert_same_values(&names, &flight, &sql);

    // Every value went in: a column left NULL by mistake would compare equal and prove nothing.
    for (i, c) in cols.iter().enumerate() {
        let non_null = sql.values().filter(|row| row[i + 1].is_some()).count();
        assert_eq!(
            non_null,
            c.values.len(),
            "column {:?}: non-NULL values",
            c.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_reads_exactly_as_postgres_has_it() {
    let url = types_db().await;
    let db = pg(&url).await;
    let mut config = config(&url);
    config.batch_rows = 3; // several batches per chunk: every builder is finished and reused
    let server = TestServer::start(config).await;
    let mut client = server.client().await;
    let info = client.get_flight_info(path(SCHEMA, "t")).await.unwrap();
    assert!(
        info.endpoint.len() >= 3,
        "one endpoint per chunk: {}",
        info.endpoint.len()
    );
    assert_reads_exactly(&server, &db, "t", &columns()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrays_of_domains_read_as_arrays_of_their_base_type() {
    let url = types_db().await;
    let db = pg(&url).await;
    let server = TestServer::start(config(&url)).await;
    assert_reads_exactly(&server, &db, "domain_arrays", &domain_array_columns()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projected_columns_read_the_same_values() {
    let url = types_db().await;
    let db = pg(&url).await;
    let server = TestServer::start(config(&url)).await;
    let cols = columns();
    // A mix of decoded, text-cast and list columns, out of table order.
    let wanted = [
        "money",
        "uuid_array",
        "id",
        "numeric_38_10",
        "timetz",
        "bpchar_5",
        "interval",
    ];
    let cmd = serde_json::json!({ "table": [SCHEMA, "t"], "columns": wanted });
    let (schema, flight) = flight_rows(
        &server,
        FlightDescriptor::new_cmd(cmd.to_string().into_bytes()),
    )
    .await;
    let spec: Vec<(&str, Canon)> = wanted
        .iter()
        .map(|w| match cols.iter().find(|c| c.name == *w) {
            Some(c) => (c.name, c.canon),
            None => ("id", Canon::Text),
        })
        .collect();
    let got: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(got, wanted);
    let sql = sql_rows(&db, "t", &spec).await;
    assert_same_values(&wanted, &flight, &sql);
}

async fn read_table(client: &mut FlightClient, table: &str) -> Result<usize, FlightError> {
    let info = client.get_flight_info(path(SCHEMA, table)).await?;
    let mut rows = 0;
    for e in &info.endpoint {
        let read = read_ticket(client, e.ticket.clone().unwrap()).await?;
        rows += row_count(&read.batches);
    }
    Ok(rows)
}

/// A value the column's Arrow type cannot hold fails the read with a message naming the column
/// and the problem, never a wrong value. The server maps these decoder errors to OUT_OF_RANGE (or
/// UNIMPLEMENTED for multi-dimensional arrays) "cannot convert data: …" (src/error.rs), and keeps
/// serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrepresentable_values_fail_naming_the_column() {
    let url = types_db().await;
    let server = TestServer::start(config(&url)).await;
    let mut client = server.client().await;
    for (table, column, _, _, words) in BAD_VALUES {
        let e = read_table(&mut client, table)
            .await
            .expect_err(&format!("reading {table} must fail"));
        let s = status(e);
        // Multi-dimensional arrays are a feature not built; every other case is a valid value
        // outside what its Arrow type holds.
        let want = if *table == "matrix" {
            tonic::Code::Unimplemented
        } else {
            tonic::Code::OutOfRange
        };
        assert_eq!(s.code(), want, "{table}: {s:?}");
        let message = s.message();
        assert!(
            message.starts_with("cannot convert data: "),
            "{table}: {message}"
        );
        assert!(
            message.contains(&format!("column {column:?}")),
            "{table}: the message names column {column:?}: {message}"
        );
        for w in *words {
            assert!(message.contains(w), "{table}: {message:?} lacks {w:?}");
        }
    }
    // The server is still up and reads a good table.
    let rows = 1 + columns().iter().map(|c| c.values.len()).max().unwrap();
    assert_eq!(read_table(&mut client, "t").await.unwrap(), rows);
}
