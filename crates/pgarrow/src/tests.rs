//! Decoder tests over hand-built binary COPY streams.

use std::sync::Arc;

use arrow::array::{
    Array, AsArray, BinaryArray, BooleanArray, Date32Array, Decimal128Array, FixedSizeBinaryArray,
    Float32Array, Float64Array, Int16Array, Int32Array, Int64Array, IntervalMonthDayNanoArray,
    ListArray, StringArray, Time64MicrosecondArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, IntervalMonthDayNano, TimeUnit};

use super::numeric;
use super::*;

// ---- a test-only binary COPY encoder ----

type Value = Option<Vec<u8>>;

fn header() -> Vec<u8> {
    let mut h = b"PGCOPY\n\xff\r\n\0".to_vec();
    h.extend_from_slice(&0i32.to_be_bytes());
    h.extend_from_slice(&0i32.to_be_bytes());
    h
}

fn row(fields: &[Value]) -> Vec<u8> {
    let mut r = (fields.len() as i16).to_be_bytes().to_vec();
    for f in fields {
        match f {
            None => r.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                r.extend_from_slice(&(v.len() as i32).to_be_bytes());
                r.extend_from_slice(v);
            }
        }
    }
    r
}

const TRAILER: [u8; 2] = [0xff, 0xff];

fn stream(rows: &[Vec<Value>]) -> Vec<u8> {
    let mut s = header();
    for r in rows {
        s.extend(row(r));
    }
    s.extend(TRAILER);
    s
}

fn be<const N: usize>(b: [u8; N]) -> Value {
    Some(b.to_vec())
}
fn text(s: &str) -> Value {
    Some(s.as_bytes().to_vec())
}
fn num(s: &str) -> Value {
    Some(numeric::encode(s))
}
fn tid(block: u32, offset: u16) -> Value {
    let mut v = block.to_be_bytes().to_vec();
    v.extend_from_slice(&offset.to_be_bytes());
    Some(v)
}
fn interval(micros: i64, days: i32, months: i32) -> Value {
    let mut v = micros.to_be_bytes().to_vec();
    v.extend_from_slice(&days.to_be_bytes());
    v.extend_from_slice(&months.to_be_bytes());
    Some(v)
}
fn jsonb(s: &str) -> Value {
    let mut v = vec![1];
    v.extend_from_slice(s.as_bytes());
    Some(v)
}
/// `array_send` of a one-dimensional array.
fn array(elem_oid: u32, elems: &[Value]) -> Value {
    let mut v = Vec::new();
    let has_null = elems.iter().any(Option::is_none);
    if elems.is_empty() {
        v.extend_from_slice(&0i32.to_be_bytes());
        v.extend_from_slice(&0i32.to_be_bytes());
        v.extend_from_slice(&elem_oid.to_be_bytes());
        return Some(v);
    }
    v.extend_from_slice(&1i32.to_be_bytes());
    v.extend_from_slice(&i32::from(has_null).to_be_bytes());
    v.extend_from_slice(&elem_oid.to_be_bytes());
    v.extend_from_slice(&(elems.len() as i32).to_be_bytes());
    v.extend_from_slice(&1i32.to_be_bytes());
    for e in elems {
        match e {
            None => v.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(b) => {
                v.extend_from_slice(&(b.len() as i32).to_be_bytes());
                v.extend_from_slice(b);
            }
        }
    }
    Some(v)
}

fn pg(oid: u32) -> PgType {
    PgType {
        oid,
        typmod: -1,
        elem_oid: None,
        is_enum: false,
    }
}
fn pg_numeric(p: i32, s: i32) -> PgType {
    PgType {
        typmod: ((p << 16) | (s & 0x7ff)) + 4,
        ..pg(1700)
    }
}
fn pg_array(elem: u32) -> PgType {
    PgType {
        elem_oid: Some(elem),
        ..pg(1007)
    }
}

const BIG: BatchLimits = BatchLimits {
    rows: 1 << 20,
    bytes: 1 << 30,
};

/// Pushes `data` in chunks of `chunk` bytes (0 = all at once), then finishes.
fn decode_chunked(
    plans: &[ColumnPlan],
    with_tid: bool,
    limits: BatchLimits,
    data: &[u8],
    chunk: usize,
) -> Result<Vec<DecodedBatch>, Error> {
    let mut d = CopyDecoder::new(plans, with_tid, limits);
    let mut out = Vec::new();
    let chunks: Vec<&[u8]> = if chunk == 0 {
        vec![data]
    } else {
        data.chunks(chunk).collect()
    };
    for c in chunks {
        d.push(c)?;
        while let Some(b) = d.next_batch() {
            out.push(b);
        }
    }
    if let Some(b) = d.finish()? {
        out.push(b);
    }
    assert!(d.next_batch().is_none());
    Ok(out)
}

fn decode(plans: &[ColumnPlan], data: &[u8]) -> Result<Vec<DecodedBatch>, Error> {
    decode_chunked(plans, false, BIG, data, 0)
}

/// The single batch of a stream that must decode.
fn one_batch(plans: &[ColumnPlan], rows: &[Vec<Value>]) -> arrow::record_batch::RecordBatch {
    let mut batches = decode(plans, &stream(rows)).expect("decodes");
    assert_eq!(batches.len(), 1);
    batches.remove(0).batch
}

fn decode_err(plans: &[ColumnPlan], rows: &[Vec<Value>]) -> Error {
    match decode(plans, &stream(rows)) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

// ---- values of every type ----

#[test]
fn fixed_width_types() {
    let plans = [
        plan_column("b", &pg(16)),
        plan_column("i2", &pg(21)),
        plan_column("i4", &pg(23)),
        plan_column("i8", &pg(20)),
        plan_column("f4", &pg(700)),
        plan_column("f8", &pg(701)),
    ];
    let batch = one_batch(
        &plans,
        &[
            vec![
                be([1]),
                be(i16::MIN.to_be_bytes()),
                be(i32::MIN.to_be_bytes()),
                be(i64::MIN.to_be_bytes()),
                be(f32::NAN.to_be_bytes()),
                be(f64::INFINITY.to_be_bytes()),
            ],
            vec![None, None, None, None, None, None],
            vec![
                be([0]),
                be(i16::MAX.to_be_bytes()),
                be(42i32.to_be_bytes()),
                be(i64::MAX.to_be_bytes()),
                be((-1.5f32).to_be_bytes()),
                be(f64::NEG_INFINITY.to_be_bytes()),
            ],
        ],
    );
    assert_eq!(batch.schema().fields().len(), 6);
    let b = batch
        .column(0)
        .as_any()
        .downcast_ref::<BooleanArray>()
        .unwrap();
    assert_eq!(
        b.iter().collect::<Vec<_>>(),
        [Some(true), None, Some(false)]
    );
    let c = batch
        .column(1)
        .as_any()
        .downcast_ref::<Int16Array>()
        .unwrap();
    assert_eq!(
        c.iter().collect::<Vec<_>>(),
        [Some(i16::MIN), None, Some(i16::MAX)]
    );
    let c = batch
        .column(2)
        .as_any()
        .downcast_ref::<Int32Array>()
        .unwrap();
    assert_eq!(
        c.iter().collect::<Vec<_>>(),
        [Some(i32::MIN), None, Some(42)]
    );
    let c = batch
        .column(3)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap();
    assert_eq!(
        c.iter().collect::<Vec<_>>(),
        [Some(i64::MIN), None, Some(i64::MAX)]
    );
    let c = batch
        .column(4)
        .as_any()
        .downcast_ref::<Float32Array>()
        .unwrap();
    assert!(c.value(0).is_nan());
    assert!(c.is_null(1));
    assert_eq!(c.value(2), -1.5);
    let c = batch
        .column(5)
        .as_any()
        .downcast_ref::<Float64Array>()
        .unwrap();
    assert_eq!(
        c.iter().collect::<Vec<_>>(),
        [Some(f64::INFINITY), None, Some(f64::NEG_INFINITY)]
    );
}

#[test]
fn text_like_types() {
    let plans = [
        plan_column("t", &pg(25)),
        plan_column("vc", &pg(1043)),
        plan_column("bp", &pg(1042)),
        plan_column("nm", &pg(19)),
        plan_column(
            "e",
            &PgType {
                is_enum: true,
                ..pg(50_000)
            },
        ),
        plan_column("inet", &pg(869)),
        plan_column("by", &pg(17)),
        plan_column("j", &pg(114)),
        plan_column("jb", &pg(3802)),
    ];
    assert!(plans[5].cast_to_text);
    let batch = one_batch(
        &plans,
        &[
            vec![
                text("héllo ☃"),
                text(""),
                text("ab  "),
                text("pg_class"),
                text("happy"),
                text("10.0.0.1/32"),
                Some(vec![0, 0xff, 0x80]),
                text(r#"{"a": [1, 2]}"#),
                jsonb(r#"{"a": [1, 2]}"#),
            ],
            vec![None, None, None, None, None, None, None, None, None],
            vec![
                text("x"),
                text("y"),
                text("z"),
                text("n"),
                text("sad"),
                text("::1/128"),
                Some(vec![]),
                text("null"),
                jsonb(""),
            ],
        ],
    );
    let strings = |i: usize| -> Vec<Option<String>> {
        batch
            .column(i)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap()
            .iter()
            .map(|v| v.map(str::to_owned))
            .collect()
    };
    let s = |v: &str| Some(v.to_owned());
    assert_eq!(strings(0), [s("héllo ☃"), None, s("x")]);
    assert_eq!(strings(1), [s(""), None, s("y")]);
    assert_eq!(strings(2), [s("ab  "), None, s("z")]);
    assert_eq!(strings(3), [s("pg_class"), None, s("n")]);
    assert_eq!(strings(4), [s("happy"), None, s("sad")]);
    assert_eq!(strings(5), [s("10.0.0.1/32"), None, s("::1/128")]);
    let by = batch
        .column(6)
        .as_any()
        .downcast_ref::<BinaryArray>()
        .unwrap();
    assert_eq!(
        by.iter().collect::<Vec<_>>(),
        [Some(&[0u8, 0xff, 0x80][..]), None, Some(&[][..])]
    );
    assert_eq!(strings(7), [s(r#"{"a": [1, 2]}"#), None, s("null")]);
    assert_eq!(strings(8), [s(r#"{"a": [1, 2]}"#), None, s("")]);
}

#[test]
fn numeric_columns() {
    let plans = [
        plan_column("n", &pg(1700)),
        plan_column("d", &pg_numeric(10, 2)),
        plan_column("d38", &pg_numeric(38, 38)),
        plan_column("d38_0", &pg_numeric(38, 0)),
    ];
    let nines = "9".repeat(38);
    let rows = [
        vec![num("0"), num("0"), num("0"), num("0")],
        vec![
            num("-12.50"),
            num("-12.50"),
            num(&format!("0.{nines}")),
            num(&nines),
        ],
        vec![
            num("123456789012345678901234567890.000001"),
            num("99999999.99"),
            num(&format!("-0.{nines}")),
            num(&format!("-{nines}")),
        ],
        vec![num("NaN"), None, None, None],
        vec![
            num("Infinity"),
            num("0.01"),
            num("0.00000000000000000000000000000000000001"),
            num("1"),
        ],
        vec![num("-Infinity"), num("-0.01"), num("-0.1"), num("-1")],
        vec![num("0.000100"), num("1"), num("0"), num("0")],
        vec![None, num("12345678"), num("0"), num("0")],
    ];
    let batch = one_batch(&plans, &rows);
    let n = batch
        .column(0)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    assert_eq!(
        n.iter().collect::<Vec<_>>(),
        [
            Some("0"),
            Some("-12.50"),
            Some("123456789012345678901234567890.000001"),
            Some("NaN"),
            Some("Infinity"),
            Some("-Infinity"),
            Some("0.000100"),
            None
        ]
    );
    let d = batch
        .column(1)
        .as_any()
        .downcast_ref::<Decimal128Array>()
        .unwrap();
    assert_eq!((d.precision(), d.scale()), (10, 2));
    assert_eq!(
        d.iter().collect::<Vec<_>>(),
        [
            Some(0),
            Some(-1250),
            Some(9_999_999_999),
            None,
            Some(1),
            Some(-1),
            Some(100),
            Some(1_234_567_800)
        ]
    );
    let max = 10i128.pow(38) - 1;
    let d = batch
        .column(2)
        .as_any()
        .downcast_ref::<Decimal128Array>()
        .unwrap();
    assert_eq!((d.precision(), d.scale()), (38, 38));
    assert_eq!(
        d.iter().collect::<Vec<_>>(),
        [
            Some(0),
            Some(max),
            Some(-max),
            None,
            Some(1),
            Some(-(10i128.pow(37))),
            Some(0),
            Some(0)
        ]
    );
    let d = batch
        .column(3)
        .as_any()
        .downcast_ref::<Decimal128Array>()
        .unwrap();
    assert_eq!(
        d.iter().collect::<Vec<_>>(),
        [
            Some(0),
            Some(max),
            Some(-max),
            None,
            Some(1),
            Some(-1),
            Some(0),
            Some(0)
        ]
    );
}

#[test]
fn decimal_special_values_are_errors() {
    let plans = [plan_column("price", &pg_numeric(10, 2))];
    for special in ["NaN", "Infinity", "-Infinity"] {
        let e = decode_err(&plans, &[vec![num(special)]]);
        assert!(
            matches!(&e, Error::Unrepresentable { column, .. } if column == "price"),
            "{special}: {e}"
        );
        assert!(e.to_string().contains("price"));
    }
    // Too many digits for the declared precision, or digits beyond the scale: never rounded.
    for bad in ["123456789.00", "0.001"] {
        let e = decode_err(&plans, &[vec![num(bad)]]);
        assert!(matches!(e, Error::Unrepresentable { .. }), "{bad}: {e}");
    }
}

#[test]
fn temporal_types() {
    let plans = [
        plan_column("d", &pg(1082)),
        plan_column("t", &pg(1083)),
        plan_column("ts", &pg(1114)),
        plan_column("tz", &pg(1184)),
        plan_column("iv", &pg(1186)),
    ];
    assert_eq!(
        plans[3].field.data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
    let batch = one_batch(
        &plans,
        &[
            vec![
                be(0i32.to_be_bytes()),
                be(0i64.to_be_bytes()),
                be(0i64.to_be_bytes()),
                be(0i64.to_be_bytes()),
                interval(1_500_000, 2, 3),
            ],
            vec![
                be((-10_957i32).to_be_bytes()),
                be(86_400_000_000i64.to_be_bytes()),
                be((-946_684_800_000_000i64).to_be_bytes()),
                be(1i64.to_be_bytes()),
                interval(-1, -2, -3),
            ],
            vec![
                be(i32::MAX.to_be_bytes()),
                be(45_296_789_012i64.to_be_bytes()),
                be(i64::MAX.to_be_bytes()),
                be(i64::MIN.to_be_bytes()),
                interval(i64::MAX, i32::MAX, i32::MAX),
            ],
            vec![
                be(i32::MIN.to_be_bytes()),
                None,
                None,
                None,
                interval(i64::MIN, i32::MIN, i32::MIN),
            ],
            vec![None, None, None, None, None],
        ],
    );
    let d = batch
        .column(0)
        .as_any()
        .downcast_ref::<Date32Array>()
        .unwrap();
    assert_eq!(
        d.iter().collect::<Vec<_>>(),
        [Some(10_957), Some(0), Some(i32::MAX), Some(i32::MIN), None]
    );
    let t = batch
        .column(1)
        .as_any()
        .downcast_ref::<Time64MicrosecondArray>()
        .unwrap();
    assert_eq!(
        t.iter().collect::<Vec<_>>(),
        [
            Some(0),
            Some(86_400_000_000),
            Some(45_296_789_012),
            None,
            None
        ]
    );
    for i in [2, 3] {
        let ts = batch
            .column(i)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .unwrap();
        let expected = if i == 2 {
            [
                Some(946_684_800_000_000),
                Some(0),
                Some(i64::MAX),
                None,
                None,
            ]
        } else {
            [
                Some(946_684_800_000_000),
                Some(946_684_800_000_001),
                Some(i64::MIN),
                None,
                None,
            ]
        };
        assert_eq!(ts.iter().collect::<Vec<_>>(), expected);
    }
    let iv = batch
        .column(4)
        .as_any()
        .downcast_ref::<IntervalMonthDayNanoArray>()
        .unwrap();
    assert_eq!(
        iv.iter().collect::<Vec<_>>(),
        [
            Some(IntervalMonthDayNano::new(3, 2, 1_500_000_000)),
            Some(IntervalMonthDayNano::new(-3, -2, -1000)),
            Some(IntervalMonthDayNano::new(i32::MAX, i32::MAX, i64::MAX)),
            Some(IntervalMonthDayNano::new(i32::MIN, i32::MIN, i64::MIN)),
            None
        ]
    );
}

#[test]
fn temporal_overflow_is_an_error() {
    let ts = [plan_column("ts", &pg(1184))];
    let e = decode_err(&ts, &[vec![be((i64::MAX - 1).to_be_bytes())]]);
    assert!(
        matches!(&e, Error::Unrepresentable { column, .. } if column == "ts"),
        "{e}"
    );
    // The last finite µs that fits (294247-01-10 04:00:54.775806) is kept; the next one would be
    // i64::MAX, which means +infinity, so it is an error rather than a silent infinity.
    let max = i64::MAX - 946_684_800_000_000;
    let batch = one_batch(&ts, &[vec![be((max - 1).to_be_bytes())]]);
    assert_eq!(
        batch
            .column(0)
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
            .value(0),
        i64::MAX - 1
    );
    let e = decode_err(&ts, &[vec![be(max.to_be_bytes())]]);
    assert!(
        matches!(&e, Error::Unrepresentable { column, .. } if column == "ts"),
        "{e}"
    );
    let iv = [plan_column("iv", &pg(1186))];
    let e = decode_err(&iv, &[vec![interval(i64::MAX / 999, 0, 0)]]);
    assert!(
        matches!(&e, Error::Unrepresentable { column, .. } if column == "iv"),
        "{e}"
    );
    let t = [plan_column("t", &pg(1083))];
    let e = decode_err(&t, &[vec![be((-1i64).to_be_bytes())]]);
    assert!(
        matches!(&e, Error::Malformed { column, .. } if column == "t"),
        "{e}"
    );
    let d = [plan_column("d", &pg(1082))];
    let e = decode_err(&d, &[vec![be((i32::MAX - 5).to_be_bytes())]]);
    assert!(
        matches!(&e, Error::Unrepresentable { column, .. } if column == "d"),
        "{e}"
    );
    // A finite date that would land on i32::MAX (+infinity) is an error, not infinity.
    let e = decode_err(&d, &[vec![be((i32::MAX - 10_957).to_be_bytes())]]);
    assert!(
        matches!(&e, Error::Unrepresentable { column, .. } if column == "d"),
        "{e}"
    );
}

#[test]
fn uuid_column() {
    let plans = [plan_column("id", &pg(2950))];
    let id: [u8; 16] = *b"\x12\x34\x56\x78\x9a\xbc\xde\xf0\x01\x23\x45\x67\x89\xab\xcd\xef";
    let batch = one_batch(
        &plans,
        &[vec![Some(id.to_vec())], vec![None], vec![Some(vec![0; 16])]],
    );
    let u = batch
        .column(0)
        .as_any()
        .downcast_ref::<FixedSizeBinaryArray>()
        .unwrap();
    assert_eq!(u.value_length(), 16);
    assert_eq!(
        u.iter().collect::<Vec<_>>(),
        [Some(&id[..]), None, Some(&[0u8; 16][..])]
    );
    assert_eq!(
        batch
            .schema()
            .field(0)
            .metadata()
            .get("ARROW:extension:name")
            .map(String::as_str),
        Some("arrow.uuid")
    );
}

#[test]
fn arrays() {
    let plans = [
        plan_column("ints", &pg_array(23)),
        plan_column("texts", &pg_array(25)),
        plan_column("ids", &pg_array(2950)),
        plan_column(
            "decs",
            &PgType {
                typmod: ((5 << 16) | 1) + 4,
                ..pg_array(1700)
            },
        ),
    ];
    let batch = one_batch(
        &plans,
        &[
            vec![
                array(23, &[be(1i32.to_be_bytes()), None, be(3i32.to_be_bytes())]),
                array(25, &[text("a"), text("ü")]),
                array(2950, &[Some(vec![7; 16])]),
                array(1700, &[num("1.5"), None]),
            ],
            vec![
                array(23, &[]),
                array(25, &[]),
                array(2950, &[None]),
                array(1700, &[]),
            ],
            vec![None, None, None, None],
            vec![
                array(23, &[be(4i32.to_be_bytes())]),
                array(25, &[None]),
                None,
                array(1700, &[num("-9999.9")]),
            ],
        ],
    );
    let ints = batch
        .column(0)
        .as_any()
        .downcast_ref::<ListArray>()
        .unwrap();
    let lists: Vec<Option<Vec<Option<i32>>>> = ints
        .iter()
        .map(|l| {
            l.map(|a| {
                a.as_primitive::<arrow::datatypes::Int32Type>()
                    .iter()
                    .collect()
            })
        })
        .collect();
    assert_eq!(
        lists,
        [
            Some(vec![Some(1), None, Some(3)]),
            Some(vec![]),
            None,
            Some(vec![Some(4)])
        ]
    );
    let texts = batch
        .column(1)
        .as_any()
        .downcast_ref::<ListArray>()
        .unwrap();
    let lists: Vec<Option<Vec<Option<String>>>> = texts
        .iter()
        .map(|l| {
            l.map(|a| {
                a.as_string::<i32>()
                    .iter()
                    .map(|s| s.map(str::to_owned))
                    .collect()
            })
        })
        .collect();
    assert_eq!(
        lists,
        [
            Some(vec![Some("a".to_owned()), Some("ü".to_owned())]),
            Some(vec![]),
            None,
            Some(vec![None])
        ]
    );
    let ids = batch
        .column(2)
        .as_any()
        .downcast_ref::<ListArray>()
        .unwrap();
    assert_eq!(ids.value_offsets(), &[0, 1, 2, 2, 2]);
    assert_eq!(ids.values().as_fixed_size_binary().value(0), &[7; 16]);
    assert!(ids.values().is_null(1));
    let decs = batch
        .column(3)
        .as_any()
        .downcast_ref::<ListArray>()
        .unwrap();
    let values = decs
        .values()
        .as_primitive::<arrow::datatypes::Decimal128Type>();
    assert_eq!(
        values.iter().collect::<Vec<_>>(),
        [Some(15), None, Some(-99_999)]
    );
    assert_eq!(values.data_type(), &DataType::Decimal128(5, 1));
}

#[test]
fn array_errors() {
    let plans = [plan_column("grid", &pg_array(23))];
    // int4[][]: ndim 2.
    let mut two_d = Vec::new();
    for x in [2i32, 0, 23, 1, 1, 1, 1] {
        two_d.extend_from_slice(&x.to_be_bytes());
    }
    for v in [1i32, 2] {
        two_d.extend_from_slice(&4i32.to_be_bytes());
        two_d.extend_from_slice(&v.to_be_bytes());
    }
    let e = decode_err(&plans, &[vec![Some(two_d)]]);
    assert!(
        matches!(&e, Error::MultiDimensionalArray { column, ndim: 2 } if column == "grid"),
        "{e}"
    );
    assert!(e.to_string().contains("multi-dimensional arrays"));

    let good = array(23, &[be(1i32.to_be_bytes()), be(2i32.to_be_bytes())]).unwrap();
    let mut cases = vec![
        good[..good.len() - 1].to_vec(),               // truncated element
        [good.clone(), vec![0]].concat(),              // trailing byte
        good[..10].to_vec(),                           // truncated header
        array(23, &[be(1i16.to_be_bytes())]).unwrap(), // wrong element width
    ];
    let mut negative = good.clone();
    negative[0..4].copy_from_slice(&(-1i32).to_be_bytes());
    cases.push(negative);
    let mut count = good.clone();
    count[12..16].copy_from_slice(&(-5i32).to_be_bytes());
    cases.push(count);
    let mut huge = good.clone();
    huge[12..16].copy_from_slice(&i32::MAX.to_be_bytes());
    cases.push(huge);
    for (i, c) in cases.into_iter().enumerate() {
        let e = decode_err(&plans, &[vec![Some(c)]]);
        assert!(
            matches!(&e, Error::Malformed { column, .. } if column == "grid"),
            "case {i}: {e}"
        );
    }
}

// ---- batching, splitting, tids ----

fn metrics_plans() -> Vec<ColumnPlan> {
    vec![
        plan_column("time", &pg(1184)),
        plan_column("device", &pg(23)),
        plan_column("sensor", &pg(25)),
        plan_column("value", &pg(701)),
        plan_column("n", &pg(1700)),
        plan_column("tags", &pg_array(25)),
    ]
}

fn metrics_row(i: u32) -> Vec<Value> {
    let null_every = |k: u32, v: Value| if i.is_multiple_of(k) { None } else { v };
    vec![
        tid(i / 7, (i % 7 + 1) as u16),
        be((i64::from(i) * 1_000_000).to_be_bytes()),
        null_every(5, be((i as i32 % 13).to_be_bytes())),
        null_every(3, text(&format!("sensor-{}-ü", i % 4))),
        be((f64::from(i) * 0.25).to_be_bytes()),
        null_every(4, num(&format!("{}.{:03}", i, i % 1000))),
        null_every(6, array(25, &[text("a"), None, text(&i.to_string())])),
    ]
}

fn metrics_stream(n: u32) -> Vec<u8> {
    stream(&(0..n).map(metrics_row).collect::<Vec<_>>())
}

#[test]
fn batches_split_at_row_limit_and_report_last_tid() {
    let plans = metrics_plans();
    let data = metrics_stream(10);
    let limits = BatchLimits {
        rows: 3,
        bytes: 1 << 30,
    };
    let batches = decode_chunked(&plans, true, limits, &data, 0).unwrap();
    let sizes: Vec<_> = batches.iter().map(|b| b.batch.num_rows()).collect();
    assert_eq!(sizes, [3, 3, 3, 1]);
    let tids: Vec<_> = batches.iter().map(|b| b.last_tid).collect();
    let expect = |i: u32| {
        Some(Tid {
            block: i / 7,
            offset: (i % 7 + 1) as u16,
        })
    };
    assert_eq!(tids, [expect(2), expect(5), expect(8), expect(9)]);
    assert_eq!(
        batches[0].batch.schema(),
        CopyDecoder::new(&plans, true, limits).schema()
    );
    let devices = batches[1]
        .batch
        .column(1)
        .as_primitive::<arrow::datatypes::Int32Type>();
    assert_eq!(devices.iter().collect::<Vec<_>>(), [Some(3), Some(4), None]);
}

#[test]
fn batches_split_at_byte_limit() {
    let plans = [plan_column("v", &pg(20))];
    let rows: Vec<_> = (0..10i64).map(|i| vec![be(i.to_be_bytes())]).collect();
    let limits = BatchLimits {
        rows: 100,
        bytes: 20,
    };
    let batches = decode_chunked(&plans, false, limits, &stream(&rows), 0).unwrap();
    let sizes: Vec<_> = batches.iter().map(|b| b.batch.num_rows()).collect();
    assert_eq!(sizes, [3, 3, 3, 1]);
    assert!(batches.iter().all(|b| b.last_tid.is_none()));
    // NULLs carry no value bytes.
    let rows: Vec<_> = (0..5).map(|_| vec![None]).collect();
    let batches = decode_chunked(&plans, false, limits, &stream(&rows), 0).unwrap();
    assert_eq!(batches.len(), 1);
    // A zero byte limit emits every row on its own.
    let limits = BatchLimits {
        rows: 100,
        bytes: 0,
    };
    let rows: Vec<_> = (0..4i64).map(|i| vec![be(i.to_be_bytes())]).collect();
    let batches = decode_chunked(&plans, false, limits, &stream(&rows), 0).unwrap();
    assert_eq!(batches.len(), 4);
}

#[test]
fn every_split_of_the_input_gives_the_same_batches() {
    let plans = metrics_plans();
    let data = metrics_stream(23);
    let limits = BatchLimits {
        rows: 5,
        bytes: 1 << 30,
    };
    let whole = decode_chunked(&plans, true, limits, &data, 0).unwrap();
    assert_eq!(whole.len(), 5);
    let same = |other: &[DecodedBatch], what: &str| {
        assert_eq!(other.len(), whole.len(), "{what}");
        for (a, b) in whole.iter().zip(other) {
            assert_eq!(a.batch, b.batch, "{what}");
            assert_eq!(a.last_tid, b.last_tid, "{what}");
        }
    };
    for chunk in [1, 2, 3, 7, 19, 64, 1000] {
        same(
            &decode_chunked(&plans, true, limits, &data, chunk).unwrap(),
            &format!("chunk {chunk}"),
        );
    }
    // Every two-way split.
    for cut in 0..=data.len() {
        let mut d = CopyDecoder::new(&plans, true, limits);
        let mut out = Vec::new();
        for part in [&data[..cut], &data[cut..]] {
            d.push(part).unwrap();
            out.extend(std::iter::from_fn(|| d.next_batch()));
        }
        out.extend(d.finish().unwrap());
        same(&out, &format!("cut {cut}"));
    }
    // Row by row, as tokio-postgres' copy_out delivers it (header alone, then one row per push).
    let mut d = CopyDecoder::new(&plans, true, limits);
    let mut out = Vec::new();
    d.push(&header()).unwrap();
    for i in 0..23 {
        d.push(&row(&metrics_row(i))).unwrap();
        out.extend(std::iter::from_fn(|| d.next_batch()));
    }
    d.push(&TRAILER).unwrap();
    out.extend(d.finish().unwrap());
    same(&out, "row by row");
}

#[test]
fn header_with_extension_and_empty_stream() {
    let plans = [plan_column("v", &pg(23))];
    let mut data = b"PGCOPY\n\xff\r\n\0".to_vec();
    data.extend_from_slice(&(1i32 << 17).to_be_bytes()); // a compatible flag bit: ignored
    data.extend_from_slice(&3i32.to_be_bytes());
    data.extend_from_slice(b"ext");
    data.extend(row(&[be(5i32.to_be_bytes())]));
    data.extend(TRAILER);
    for chunk in [0, 1] {
        let batches = decode_chunked(&plans, false, BIG, &data, chunk).unwrap();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].batch.num_rows(), 1);
    }
    // No rows at all.
    assert!(decode(&plans, &stream(&[])).unwrap().is_empty());
    // No columns: only the tid.
    let batches = decode_chunked(
        &[],
        true,
        BIG,
        &stream(&[vec![tid(1, 2)], vec![tid(3, 4)]]),
        0,
    )
    .unwrap();
    assert_eq!(batches[0].batch.num_rows(), 2);
    assert_eq!(batches[0].batch.num_columns(), 0);
    assert_eq!(
        batches[0].last_tid,
        Some(Tid {
            block: 3,
            offset: 4
        })
    );
}

// ---- trailer and malformed input ----

#[test]
fn trailer_rules() {
    let plans = [plan_column("v", &pg(23))];
    let full = stream(&[vec![be(1i32.to_be_bytes())]]);
    // Without the trailer.
    let e = decode(&plans, &full[..full.len() - 2]).unwrap_err();
    assert!(matches!(e, Error::Stream { .. }), "{e}");
    // Half a trailer / half a row.
    let e = decode(&plans, &full[..full.len() - 1]).unwrap_err();
    assert!(e.to_string().contains("inside a row"), "{e}");
    let e = decode(&plans, &full[..full.len() - 4]).unwrap_err();
    assert!(matches!(e, Error::Stream { .. }), "{e}");
    // Nothing at all, or only part of the header.
    assert!(decode(&plans, &[]).is_err());
    assert!(decode(&plans, &header()[..12]).is_err());
    // Data after the trailer, in the same push or a later one.
    let e = decode(&plans, &[full.clone(), vec![0]].concat()).unwrap_err();
    assert!(e.to_string().contains("after the trailer"), "{e}");
    let mut d = CopyDecoder::new(&plans, false, BIG);
    d.push(&full).unwrap();
    assert!(d.push(&[0, 1]).is_err());
    // Once failed, always failed.
    assert!(matches!(d.push(&[]), Err(Error::Poisoned)));
    assert!(matches!(d.finish(), Err(Error::Poisoned)));
    // An empty push after the trailer is fine.
    let mut d = CopyDecoder::new(&plans, false, BIG);
    d.push(&full).unwrap();
    d.push(&[]).unwrap();
    assert_eq!(d.finish().unwrap().unwrap().batch.num_rows(), 1);
    assert!(d.finish().unwrap().is_none());
}

#[test]
fn finish_returns_untaken_batches_first() {
    let plans = [plan_column("v", &pg(23))];
    let rows: Vec<_> = (0..5i32).map(|i| vec![be(i.to_be_bytes())]).collect();
    let mut d = CopyDecoder::new(
        &plans,
        false,
        BatchLimits {
            rows: 2,
            bytes: 1 << 20,
        },
    );
    d.push(&stream(&rows)).unwrap();
    let mut sizes = vec![d.finish().unwrap().unwrap().batch.num_rows()];
    sizes.extend(std::iter::from_fn(|| d.next_batch()).map(|b| b.batch.num_rows()));
    assert_eq!(sizes, [2, 2, 1]);
}

#[test]
fn malformed_streams_are_errors() {
    let plans = [plan_column("v", &pg(23)), plan_column("s", &pg(25))];
    let good_row = || vec![be(1i32.to_be_bytes()), text("a")];

    let mut bad_sig = stream(&[good_row()]);
    bad_sig[0] = b'X';
    assert!(matches!(
        decode(&plans, &bad_sig),
        Err(Error::Stream { .. })
    ));
    // A bad signature is noticed from its first byte, without waiting for the rest.
    let mut d = CopyDecoder::new(&plans, false, BIG);
    assert!(d.push(b"COPY").is_err());

    let mut oids = stream(&[good_row()]);
    oids[11..15].copy_from_slice(&(1i32 << 16).to_be_bytes());
    assert!(matches!(decode(&plans, &oids), Err(Error::Stream { .. })));
    let mut critical = stream(&[good_row()]);
    critical[11..15].copy_from_slice(&1i32.to_be_bytes());
    assert!(matches!(
        decode(&plans, &critical),
        Err(Error::Stream { .. })
    ));
    let mut ext = stream(&[good_row()]);
    ext[15..19].copy_from_slice(&(-1i32).to_be_bytes());
    assert!(matches!(decode(&plans, &ext), Err(Error::Stream { .. })));

    // Wrong field counts.
    for fields in [
        vec![be(1i32.to_be_bytes())],
        [good_row(), vec![None]].concat(),
        vec![],
    ] {
        let e = decode_err(&plans, &[fields]);
        assert!(e.to_string().contains("fields, expected 2"), "{e}");
    }
    let mut negative_count = header();
    negative_count.extend_from_slice(&(-2i16).to_be_bytes());
    assert!(decode(&plans, &negative_count).is_err());

    // A negative length other than -1.
    let mut neg_len = header();
    neg_len.extend_from_slice(&2i16.to_be_bytes());
    neg_len.extend_from_slice(&(-2i32).to_be_bytes());
    assert!(matches!(
        decode(&plans, &neg_len),
        Err(Error::Stream { .. })
    ));

    // Wrong fixed-width lengths.
    for v in [be(1i16.to_be_bytes()), be(1i64.to_be_bytes()), Some(vec![])] {
        let e = decode_err(&plans, &[vec![v, text("a")]]);
        assert!(
            matches!(&e, Error::Malformed { column, .. } if column == "v"),
            "{e}"
        );
    }
    let b = [plan_column("flag", &pg(16))];
    assert!(matches!(
        decode_err(&b, &[vec![be([2])]]),
        Error::Malformed { .. }
    ));
    let u = [plan_column("u", &pg(2950))];
    assert!(matches!(
        decode_err(&u, &[vec![Some(vec![0; 15])]]),
        Error::Malformed { .. }
    ));
    let iv = [plan_column("iv", &pg(1186))];
    assert!(matches!(
        decode_err(&iv, &[vec![Some(vec![0; 12])]]),
        Error::Malformed { .. }
    ));

    // Invalid UTF-8, including a character split across two values.
    let e = decode_err(&plans, &[vec![None, Some(vec![0xff, 0xfe])]]);
    assert!(
        matches!(&e, Error::InvalidUtf8 { column } if column == "s"),
        "{e}"
    );
    let e = decode_err(
        &plans,
        &[vec![None, Some(vec![0xc3])], vec![None, Some(vec![0xa9])]],
    );
    assert!(
        matches!(&e, Error::InvalidUtf8 { column } if column == "s"),
        "{e}"
    );

    // jsonb version.
    let jb = [plan_column("doc", &pg(3802))];
    let e = decode_err(&jb, &[vec![Some(b"\x02{}".to_vec())]]);
    assert!(
        matches!(&e, Error::Malformed { column, .. } if column == "doc"),
        "{e}"
    );
    assert!(matches!(
        decode_err(&jb, &[vec![Some(vec![])]]),
        Error::Malformed { .. }
    ));

    // Malformed numeric in both numeric columns.
    let ns = [
        plan_column("n", &pg(1700)),
        plan_column("d", &pg_numeric(5, 2)),
    ];
    let e = decode_err(&ns, &[vec![Some(vec![0, 1, 0, 0]), num("1")]]);
    assert!(
        matches!(&e, Error::Malformed { column, .. } if column == "n"),
        "{e}"
    );
    let e = decode_err(
        &ns,
        &[vec![num("1"), Some(vec![0, 0, 0, 0, 0x12, 0, 0, 0])]],
    );
    assert!(
        matches!(&e, Error::Malformed { column, .. } if column == "d"),
        "{e}"
    );

    // tid problems.
    let e = decode_chunked(
        &plans,
        true,
        BIG,
        &stream(&[[vec![None], good_row()].concat()]),
        0,
    );
    assert!(e.is_err());
    let e = decode_chunked(
        &plans,
        true,
        BIG,
        &stream(&[[vec![be([0; 4])], good_row()].concat()]),
        0,
    );
    assert!(e.is_err());
}

// ---- never panic ----

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn all_type_plans() -> Vec<ColumnPlan> {
    [
        16, 21, 23, 20, 700, 701, 1700, 25, 17, 1082, 1083, 1114, 1184, 1186, 2950, 114, 3802,
    ]
    .into_iter()
    .map(|oid| plan_column(&format!("c{oid}"), &pg(oid)))
    .chain([
        plan_column("dec", &pg_numeric(20, 4)),
        plan_column("arr", &pg_array(23)),
        plan_column("tarr", &pg_array(3802)),
    ])
    .collect()
}

/// Feeds `data` in random pieces; any result is fine, a panic is not.
fn feed(rng: &mut Rng, plans: &[ColumnPlan], with_tid: bool, data: &[u8]) {
    let limits = BatchLimits {
        rows: 1 + rng.below(4),
        bytes: rng.below(200),
    };
    let mut d = CopyDecoder::new(plans, with_tid, limits);
    let mut rest = data;
    while !rest.is_empty() {
        let n = 1 + rng.below(rest.len());
        let (now, later) = rest.split_at(n);
        rest = later;
        if d.push(now).is_err() {
            break;
        }
        while d.next_batch().is_some() {}
    }
    let _ = d.finish();
}

#[test]
fn fuzz_random_bytes_never_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let plans = all_type_plans();
    for i in 0..3000 {
        let len = rng.below(300);
        let mut data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Most random streams die at the signature; give most a valid header.
        if i % 4 != 0 {
            data = [header(), data].concat();
        }
        let subset = &plans[..rng.below(plans.len() + 1)];
        feed(&mut rng, subset, i % 2 == 0, &data);
    }
}

#[test]
fn fuzz_mutated_streams_never_panic() {
    let mut rng = Rng(42);
    let plans = all_type_plans();
    let row_values = |i: u32| -> Vec<Value> {
        vec![
            tid(i, 1),
            be([1]),
            be(7i16.to_be_bytes()),
            be(7i32.to_be_bytes()),
            be(7i64.to_be_bytes()),
            be(7f32.to_be_bytes()),
            be(7f64.to_be_bytes()),
            num("-123.4500"),
            text("héllo"),
            Some(vec![1, 2, 3]),
            be(7i32.to_be_bytes()),
            be(7i64.to_be_bytes()),
            be(7i64.to_be_bytes()),
            be(7i64.to_be_bytes()),
            interval(1, 2, 3),
            Some(vec![9; 16]),
            text("{}"),
            jsonb("[]"),
            num("1234.5"),
            array(23, &[be(1i32.to_be_bytes()), None]),
            array(3802, &[jsonb("1"), None]),
        ]
    };
    let good = stream(&(0..4).map(row_values).collect::<Vec<_>>());
    assert_eq!(
        decode_chunked(&plans, true, BIG, &good, 0).unwrap()[0]
            .batch
            .num_rows(),
        4
    );
    for _ in 0..3000 {
        let mut data = good.clone();
        for _ in 0..1 + rng.below(4) {
            if data.len() < 4 {
                break;
            }
            match rng.below(4) {
                0 => {
                    let at = rng.below(data.len());
                    data[at] = rng.next() as u8;
                }
                1 => {
                    let at = rng.below(data.len());
                    data[at] ^= 1 << rng.below(8);
                }
                2 => data.truncate(rng.below(data.len() + 1)),
                _ => {
                    // A length or count field set to an extreme.
                    let at = rng.below(data.len().saturating_sub(4));
                    let v = [i32::MAX, i32::MIN, -1, 0, 1 << 20][rng.below(5)];
                    data[at..at + 4].copy_from_slice(&v.to_be_bytes());
                }
            }
        }
        feed(&mut rng, &plans, true, &data);
    }
}

#[test]
fn schema_follows_the_plans() {
    let plans = metrics_plans();
    let d = CopyDecoder::new(&plans, true, BIG);
    let schema = d.schema();
    let names: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["time", "device", "sensor", "value", "n", "tags"]);
    assert!(schema.fields().iter().all(|f| f.is_nullable()));
    assert!(Arc::ptr_eq(&schema, &d.schema()));
}
