"""The type torture test through pyarrow: every type of the type table, its extremes and NULLs,
compared value by value with what PostgreSQL says each value is.

The table is ``t`` in a schema of this session's own in the test database (``types_torture_<pid>_<tag>``,
so sessions running at once never share it), built by this module and dropped after it.
SQL renders each value into a canonical string with PostgreSQL's own functions (``float8send``,
``encode``, ``extract``, ``::text``); ``render`` turns the Arrow values pyarrow received into the
same form. A mismatch names the column and the row's ``id``.

The special-value rules asserted (``crates/pgarrow/src/types.rs``; ``crates/server/tests/types.rs``
asserts them in Rust):

- float4/float8 keep NaN, ±Infinity, -0.0 and subnormals bit for bit.
- numeric(p,s) with p ≤ 38 and s ≤ p (negative s included) is decimal128(p,s), also through a
  domain and a domain over a domain; any other numeric is text exactly as PostgreSQL prints it
  (NaN, ±Infinity, 100+ digits, trailing zeros).
- date ±infinity is int32 max/min days; timestamp(tz) ±infinity is int64 max/min µs; time 24:00:00
  is 86 400 000 000 µs; interval is (months, days, µs × 1000 ns), each field with its own sign.
- bpchar keeps its padding; json keeps its text byte for byte; jsonb is PostgreSQL's normalized
  text.
- uuid is ``arrow.uuid`` (pyarrow's ``pa.uuid()``), json/jsonb are ``arrow.json`` (``pa.json_()``),
  also as list items.
- One-dimensional arrays are lists keeping NULL elements and empty arrays.
- Any other type is its ``::text``.
"""

from __future__ import annotations

import decimal
import uuid
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import psycopg
import pyarrow as pa
import pytest

import hyperflight
from conftest import unique_name

SCHEMA = unique_name("types_torture")

US = pa.timestamp("us")
USTZ = pa.timestamp("us", tz="UTC")
INTERVAL = pa.month_day_nano_interval()


def list_of(item: pa.DataType) -> pa.DataType:
    return pa.list_(pa.field("item", item))


class Col(NamedTuple):
    name: str
    sql_type: str
    canon: str  # text | padded | float4 | float8 | bytea | date | time | timestamp | interval
    arrow: pa.DataType
    values: Sequence[str]  # SQL expressions; row id k >= 1 holds values[k - 1], row 0 is all NULL
    list: bool = False  # canon applies to the elements of a list


TYPES_SQL = """
CREATE TYPE {s}.mood AS ENUM ('sad', 'ok', 'with space', 'ünï 🦀', 'NULL');
CREATE DOMAIN {s}.amount AS numeric(10,2) CHECK (VALUE > -1000000);
CREATE DOMAIN {s}.positive_amount AS {s}.amount CHECK (VALUE > 0);
"""

COLUMNS: List[Col] = [
    Col("bool", "bool", "text", pa.bool_(), ["true", "false"]),
    Col("int2", "int2", "text", pa.int16(), ["-32768", "32767", "0"]),
    Col("int4", "int4", "text", pa.int32(), ["-2147483648", "2147483647", "0"]),
    Col("int8", "int8", "text", pa.int64(), ["-9223372036854775808", "9223372036854775807"]),
    Col("float4", "float4", "float4", pa.float32(),
        ["'NaN'", "'Infinity'", "'-Infinity'", "'-0'", "'1.4e-45'", "'1.1754942e-38'",
         "'3.4028235e38'", "'0.1'"]),
    Col("float8", "float8", "float8", pa.float64(),
        ["'NaN'", "'Infinity'", "'-Infinity'", "'-0'", "'4.9e-324'", "'2.225073858507201e-308'",
         "'1.7976931348623157e308'", "'0.1'"]),
    Col("numeric_10_2", "numeric(10,2)", "text", pa.decimal128(10, 2),
        ["0", "-0.01", "12345678.91", "-99999999.99", "1.5"]),
    Col("numeric_38_0", "numeric(38,0)", "text", pa.decimal128(38, 0),
        ["9" * 38, "-" + "9" * 38, "0"]),
    Col("numeric_38_10", "numeric(38,10)", "text", pa.decimal128(38, 10),
        ["9" * 28 + "." + "9" * 10, "-0.0000000001", "1234567890123456789012345678.0123456789"]),
    Col("numeric_neg_scale", "numeric(5,-3)", "text", pa.decimal128(5, -3),
        ["12000", "-99999000", "0"]),
    Col("numeric_50_10", "numeric(50,10)", "text", pa.string(), ["1" * 40 + ".0123456789", "0"]),
    Col("numeric", "numeric", "text", pa.string(),
        ["'NaN'", "'Infinity'", "'-Infinity'", "0.000",
         "(repeat('9', 120) || '.' || repeat('1', 30))::numeric", "'1e-1000'", "'-0.0001'"]),
    Col("amount", "{s}.amount", "text", pa.decimal128(10, 2), ["12345.6", "-0.01"]),
    Col("positive_amount", "{s}.positive_amount", "text", pa.decimal128(10, 2),
        ["0.01", "99999999.99"]),
    Col("text", "text", "text", pa.string(),
        ["''", "'🦀 emoji, 👩‍👩‍👧 zwj'", "'漢字かな한글'", "'e\u0301 combining, مرحبا'",
         "E'tab\\there\\nnew line \\\\ backslash '' quote'", "'NULL'", "repeat('ab🦀', 40000)"]),
    Col("varchar_10", "varchar(10)", "text", pa.string(), ["'ünïcödé!!'", "''"]),
    Col("bpchar_5", "char(5)", "padded", pa.string(), ["'ab'", "''", "'é'", "'abcde'"]),
    Col("name", "name", "text", pa.string(), ["repeat('n', 63)", "repeat('ñ', 40)"]),
    Col("mood", "{s}.mood", "text", pa.string(), ["'sad'", "'with space'", "'ünï 🦀'", "'NULL'"]),
    Col("bytea", "bytea", "bytea", pa.binary(),
        ["'\\x'", "'\\x00'", "'\\x00ff00'", "decode(repeat('00ff', 50000), 'hex')"]),
    Col("date", "date", "date", pa.date32(),
        ["'1970-01-01'", "'1969-12-31'", "'2100-12-31'", "'4713-01-01 BC'", "'5874897-12-31'",
         "'infinity'", "'-infinity'"]),
    Col("time", "time", "time", pa.time64("us"),
        ["'00:00:00'", "'24:00:00'", "'23:59:59.999999'"]),
    Col("timestamp", "timestamp", "timestamp", US,
        ["'infinity'", "'-infinity'", "'1969-12-31 23:59:59.999999'", "'4713-01-01 00:00:00 BC'",
         "'294247-01-10 04:00:54.775806'", "'2262-04-11 23:47:16.854776'"]),
    Col("timestamptz", "timestamptz", "timestamp", USTZ,
        ["'infinity'", "'-infinity'", "'2024-03-10 02:30:00.123456-08'",
         "'1969-12-31 23:59:59.999999+14'", "'294247-01-10 04:00:54.775806+00'"]),
    Col("interval", "interval", "interval", INTERVAL,
        ["'0'", "'1 year 2 months 3 days 04:05:06.789012'",
         "'-1 year -2 months -3 days -04:05:06.789012'", "'1 mon -1 day 00:00:00.000001'",
         "'178956970 years 7 months'", "'-2147483648 days'", "'2562047:47:16.854775'",
         "'-2562047:47:16.854775'"]),
    Col("uuid", "uuid", "text", pa.uuid(),
        ["'00000000-0000-0000-0000-000000000000'", "'ffffffff-ffff-ffff-ffff-ffffffffffff'",
         "'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'"]),
    Col("json", "json", "text", pa.json_(),
        ["""'{ "a" : 1,  "a" : [ 2 , 3 ] }'""", """'"\\u00e9\\ud83e\\udd80 \\u0000 é🦀"'""",
         "E'{\\n\\t\"k\": \"v\"\\n}\\n'", "' 1e400 '", "'null'"]),
    Col("jsonb", "jsonb", "text", pa.json_(),
        ["""'{"b": {"c": [1, 2.50, null, true, "é🦀"]}, "a": "\\u00e9"}'""",
         """'{"a": 1, "a": 2}'""", "'1e400'", """'"\\ud83e\\udd80"'""", "'null'", "'{}'"]),
    Col("int4_array", "int4[]", "text", list_of(pa.int32()),
        ["'{}'", "'{1,NULL,-2147483648,2147483647}'", "'{NULL}'", "'[5:6]={7,8}'"], list=True),
    Col("text_array", "text[]", "text", list_of(pa.string()),
        ["'{}'", """'{"",NULL,"NULL","a,b","🦀","q\\"uote"}'"""], list=True),
    Col("numeric_array", "numeric(12,3)[]", "text", list_of(pa.decimal128(12, 3)),
        ["'{1.5,NULL,-999999999.999,0}'", "'{}'"], list=True),
    Col("timestamptz_array", "timestamptz[]", "timestamp", list_of(USTZ),
        ["""'{infinity,-infinity,"2000-01-01 00:00:00.000001+00",NULL}'"""], list=True),
    Col("uuid_array", "uuid[]", "text", list_of(pa.uuid()),
        ["'{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,NULL}'", "'{}'"], list=True),
    Col("mood_array", "{s}.mood[]", "text", list_of(pa.string()),
        ["""'{sad,NULL,"with space","ünï 🦀","NULL"}'""", "'{}'"], list=True),
    Col("float8_array", "float8[]", "float8", list_of(pa.float64()),
        ["'{NaN,-Infinity,-0,4.9e-324,NULL}'"], list=True),
    Col("date_array", "date[]", "date", list_of(pa.date32()),
        ["ARRAY['infinity'::date, '-infinity', '1969-12-31', NULL]"], list=True),
    Col("interval_array", "interval[]", "interval", list_of(INTERVAL),
        ["ARRAY['-1 mon 1 day -00:00:00.000001'::interval, NULL]"], list=True),
    Col("jsonb_array", "jsonb[]", "text", list_of(pa.json_()),
        ["""ARRAY['{"a": [1, "é"]}'::jsonb, 'null', NULL]"""], list=True),
    Col("bytea_array", "bytea[]", "bytea", list_of(pa.binary()),
        ["ARRAY['\\x00ff'::bytea, NULL, '\\x']"], list=True),
    # Anything else: ::text.
    Col("inet", "inet", "text", pa.string(), ["'192.168.0.1/24'", "'::ffff:1.2.3.4'"]),
    Col("money", "money", "text", pa.string(),
        ["'-92233720368547758.08'", "'92233720368547758.07'"]),
    Col("timetz", "timetz", "text", pa.string(), ["'24:00:00+15:59'", "'12:34:56.789012+05:30'"]),
    Col("point", "point", "text", pa.string(), ["'(1.5,-2)'", "'(NaN,Infinity)'"]),
    Col("xml", "xml", "text", pa.string(), ["""'<a b="1">é &amp; 🦀</a>'"""]),
    Col("oid", "oid", "text", pa.string(), ["0", "4294967295"]),
    Col("char", '"char"', "text", pa.string(), ["'a'", "'é'", "''"]),
    Col("bit_3", "bit(3)", "text", pa.string(), ["B'101'"]),
    Col("inet_array", "inet[]", "text", pa.string(), ["'{10.0.0.1,NULL}'"]),
]

ROWS = 1 + max(len(c.values) for c in COLUMNS)


def quote(ident: str) -> str:
    return '"' + ident.replace('"', '""') + '"'


def setup_sql() -> str:
    defs = ", ".join(f"{quote(c.name)} {c.sql_type}" for c in COLUMNS)
    sql = TYPES_SQL + f"CREATE TABLE {{s}}.t (id int4 NOT NULL, {defs});\n"
    for i in range(ROWS):
        values = ", ".join(c.values[i - 1] if 0 < i <= len(c.values) else "NULL" for c in COLUMNS)
        sql += f"INSERT INTO {{s}}.t VALUES ({i}, {values});\n"
    sql += ("SELECT create_hypertable('{s}.t', 'id', chunk_time_interval => 3, "
            "migrate_data => true);\n")
    return sql.replace("{s}", SCHEMA)


def sql_canon(canon: str, e: str) -> str:
    """The canonical form of SQL expression ``e`` (NULL stays NULL)."""
    if canon == "text":
        return f"({e})::text"
    if canon == "padded":  # the output function's text: ::text would trim bpchar's padding
        return f"CASE WHEN {e} IS NOT NULL THEN format('%s', {e}) END"
    if canon in ("float4", "float8"):
        return f"encode({canon}send({e}), 'hex')"
    if canon == "bytea":
        return f"encode({e}, 'hex')"
    if canon == "date":
        return (f"CASE WHEN {e} = 'infinity' THEN '2147483647' WHEN {e} = '-infinity' "
                f"THEN '-2147483648' ELSE ({e} - date '1970-01-01')::text END")
    if canon == "time":
        return f"(extract(epoch FROM {e}) * 1000000)::int8::text"
    if canon == "timestamp":
        return (f"CASE WHEN {e} = 'infinity' THEN '9223372036854775807' WHEN {e} = '-infinity' "
                f"THEN '-9223372036854775808' "
                f"ELSE (extract(epoch FROM {e}) * 1000000)::int8::text END")
    if canon == "interval":
        return (f"(extract(year FROM {e}) * 12 + extract(month FROM {e}))::text || ' ' "
                f"|| extract(day FROM {e})::text || ' ' "
                f"|| (((extract(hour FROM {e}) * 3600 + extract(minute FROM {e}) * 60) * 1000000 "
                f"+ extract(microseconds FROM {e})) * 1000)::int8::text")
    raise AssertionError(f"unknown canonical form {canon}")


def sql_column(c: Col) -> str:
    if not c.list:
        return sql_canon(c.canon, quote(c.name))
    e = quote(c.name)
    # [len:value,N,...]: N is a NULL element, len the value's bytes; unambiguous for any text.
    return (f"CASE WHEN {e} IS NOT NULL THEN '[' || coalesce(("
            f"SELECT string_agg(coalesce(octet_length(c) || ':' || c, 'N'), ',' ORDER BY o) "
            f"FROM (SELECT o, {sql_canon(c.canon, 'el')} AS c "
            f"FROM unnest({e}) WITH ORDINALITY AS u(el, o)) AS v), '') || ']' END")


def decimal_text(d: decimal.Decimal, scale: int) -> str:
    """A decimal128(p, scale) value as PostgreSQL prints numeric(p, scale)."""
    sign, digits, exponent = d.as_tuple()
    assert isinstance(exponent, int)
    unscaled = int("".join(map(str, digits)) or "0") * 10 ** (exponent + scale)
    text = str(unscaled)
    if scale <= 0:
        text = "0" if unscaled == 0 else text + "0" * -scale
    else:
        text = text.rjust(scale + 1, "0")
        text = text[:-scale] + "." + text[-scale:]
    return ("-" if sign and unscaled else "") + text


def render(arr: pa.Array) -> List[Optional[str]]:
    """Each value of ``arr`` in the canonical form of its Arrow type (None for NULL)."""
    t = arr.type
    if isinstance(t, pa.UuidType):
        return [None if b is None else str(uuid.UUID(bytes=b)) for b in arr.storage.to_pylist()]
    if isinstance(t, pa.JsonType):
        return arr.storage.to_pylist()
    if pa.types.is_list(t):
        out: List[Optional[str]] = []
        for i in range(len(arr)):
            if not arr[i].is_valid:
                out.append(None)
                continue
            items = render(arr[i].values)
            out.append("[" + ",".join(
                "N" if v is None else f"{len(v.encode())}:{v}" for v in items) + "]")
        return out
    if pa.types.is_boolean(t):
        return [None if v is None else str(v).lower() for v in arr.to_pylist()]
    if pa.types.is_float32(t):
        return [None if v is None else f"{v:08x}" for v in arr.view(pa.uint32()).to_pylist()]
    if pa.types.is_float64(t):
        return [None if v is None else f"{v:016x}" for v in arr.view(pa.uint64()).to_pylist()]
    if pa.types.is_decimal(t):
        return [None if v is None else decimal_text(v, t.scale) for v in arr.to_pylist()]
    if pa.types.is_string(t):
        return arr.to_pylist()
    if pa.types.is_binary(t):
        return [None if v is None else v.hex() for v in arr.to_pylist()]
    if pa.types.is_date32(t):
        return [None if v is None else str(v) for v in arr.view(pa.int32()).to_pylist()]
    if pa.types.is_time64(t) or pa.types.is_timestamp(t):
        return [None if v is None else str(v) for v in arr.view(pa.int64()).to_pylist()]
    if t == INTERVAL:
        return [None if v is None else f"{v.months} {v.days} {v.nanoseconds}"
                for v in arr.to_pylist()]
    if pa.types.is_integer(t):
        return [None if v is None else str(v) for v in arr.to_pylist()]
    raise AssertionError(f"no canonical form for Arrow type {t}")


@pytest.fixture(scope="module")
def torture(server: str, pg: psycopg.Connection) -> Iterator[str]:
    """Builds ``<SCHEMA>.t``, makes the server see it, and drops the schema after the module."""
    with pg.transaction():
        pg.execute(f"CREATE SCHEMA {SCHEMA}")
        pg.execute(setup_sql())  # no parameters: sent as one multi-statement query
    try:
        hyperflight.do_action(server, "refresh")
        yield f"{SCHEMA}.t"
    finally:
        pg.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        hyperflight.do_action(server, "refresh")


def by_id(columns: Dict[str, List[Optional[str]]]) -> Dict[int, Dict[str, Optional[str]]]:
    ids = columns["id"]
    assert len(set(ids)) == len(ids), "a row was delivered twice"
    return {int(i): {name: values[k] for name, values in columns.items()}
            for k, i in enumerate(ids)}


def sql_table(pg: psycopg.Connection) -> Dict[int, Dict[str, Optional[str]]]:
    exprs = ", ".join(sql_column(c) for c in COLUMNS)
    rows = pg.execute(f"SELECT id, ARRAY[{exprs}]::text[] FROM {SCHEMA}.t ORDER BY id").fetchall()
    return {i: {"id": str(i), **dict(zip((c.name for c in COLUMNS), values))} for i, values in rows}


def assert_same_values(flight: Dict[int, Dict[str, Optional[str]]],
                       sql: Dict[int, Dict[str, Optional[str]]]) -> None:
    assert sorted(flight) == sorted(sql), "row ids differ"

    def show(v: Optional[str]) -> str:
        return repr(v) if v is None or len(v) <= 200 else f"{v[:100]!r}… ({len(v)} chars)"

    wrong = [f"column {name!r}, row id {i}: flight {show(flight[i][name])} but SQL {show(want)}"
             for i, row in sql.items() for name, want in row.items() if flight[i][name] != want]
    assert not wrong, f"{len(wrong)} values read wrong:\n" + "\n".join(wrong)


def test_types_are_exact(server: str, torture: str) -> None:
    schema = hyperflight.flight_info(server, torture).schema
    want = pa.schema([pa.field("id", pa.int32())] + [pa.field(c.name, c.arrow) for c in COLUMNS])
    assert schema.names == want.names
    wrong = [f"{f.name}: {f.type} (expected {w.type})"
             for f, w in zip(schema, want) if not f.type.equals(w.type) or not f.nullable]
    assert not wrong, "Arrow types differ:\n" + "\n".join(wrong)
    # pyarrow recognizes the canonical extensions, also inside lists.
    assert isinstance(schema.field("uuid").type, pa.UuidType)
    assert isinstance(schema.field("json").type, pa.JsonType)
    assert isinstance(schema.field("uuid_array").type.value_type, pa.UuidType)


@pytest.mark.parametrize("parallelism", [1, 4])
def test_every_value_equals_sql(server: str, torture: str, pg: psycopg.Connection,
                                parallelism: int) -> None:
    info = hyperflight.flight_info(server, torture)
    assert len(info.endpoints) >= 3, "the values travel through several chunks"
    table = hyperflight.read_flight_info(server, info, parallelism=parallelism)
    assert table.num_rows == ROWS
    flight = by_id({name: render(table.column(name).combine_chunks())
                    for name in table.column_names})
    sql = sql_table(pg)
    assert_same_values(flight, sql)
    # Every value went in: a column left NULL by mistake would compare equal and prove nothing.
    for c in COLUMNS:
        assert sum(row[c.name] is not None for row in sql.values()) == len(c.values), c.name


def test_projection_reads_the_same_values(server: str, torture: str,
                                          pg: psycopg.Connection) -> None:
    wanted = ["money", "uuid_array", "id", "numeric_38_10", "bpchar_5", "interval", "jsonb"]
    table = hyperflight.read_table(server, torture, columns=wanted)
    assert table.column_names == wanted
    flight = by_id({name: render(table.column(name).combine_chunks()) for name in wanted})
    sql = {i: {k: v for k, v in row.items() if k in wanted} for i, row in sql_table(pg).items()}
    assert_same_values(flight, sql)


def test_duckdb_reads_the_extension_columns(server: str, torture: str,
                                            pg: psycopg.Connection) -> None:
    # Consumers downstream see the values, not just pyarrow: DuckDB maps arrow.uuid to UUID.
    import duckdb

    tbl = hyperflight.read_table(server, torture, columns=["id", "uuid"])  # noqa: F841
    got = duckdb.sql("SELECT id, uuid::VARCHAR FROM tbl ORDER BY id").fetchall()
    want = pg.execute(f"SELECT id, uuid::text FROM {SCHEMA}.t ORDER BY id").fetchall()
    assert got == [tuple(r) for r in want]
