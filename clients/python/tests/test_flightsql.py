"""Flight SQL through the ADBC Flight SQL driver (``adbc_driver_flightsql``), against the real server
and the sample data: every result is compared with what PostgreSQL returns for the same SQL."""

from __future__ import annotations

import datetime as dt
import re
from typing import Iterator

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.flight as flight
import pytest
from adbc_driver_manager import AdbcStatusCode, ProgrammingError

import hyperflight
from conftest import TEST_DAYS, TEST_ROWS

UTC = dt.timezone.utc
WINDOW = (dt.datetime(2026, 10, 2, 6, tzinfo=UTC), dt.datetime(2026, 10, 4, 18, tzinfo=UTC))


def connect(url: str, **db_kwargs: str):
    # hyperflight has no transactions: every statement runs in its own read-only one.
    return flightsql.connect(url, db_kwargs=db_kwargs or None, autocommit=True)


@pytest.fixture(scope="module")
def conn(server: str) -> Iterator:
    with connect(server) as c:
        yield c


def sql_rows(pg, query: str, params=()) -> list:
    return [tuple(r) for r in pg.execute(query, params).fetchall()]


def pruned_chunks(pg, start: dt.datetime, end: dt.datetime) -> int:
    """Chunks of public.metrics that overlap [start, end), as TimescaleDB lists them."""
    [(n,)] = sql_rows(pg, """SELECT count(*) FROM timescaledb_information.chunks
                             WHERE hypertable_schema = 'public' AND hypertable_name = 'metrics'
                               AND range_end > %s AND range_start < %s""", (start, end))
    return n


def test_the_issue_one_liner_counts_the_rows(conn):
    cur = conn.cursor()
    cur.execute("SELECT count(*) FROM public.metrics")
    assert cur.fetchone() == (TEST_ROWS,)


def test_metadata_lists_what_list_flights_lists(conn, server, pg):
    info = conn.adbc_get_info()
    assert info["vendor_name"] == "hyperflight"
    assert re.fullmatch(r"\d+\.\d+\.\d+", info["vendor_version"])
    [catalog] = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
    [(database,)] = sql_rows(pg, "SELECT current_database()")
    assert catalog["catalog_name"] == database
    tables = {(s["db_schema_name"], t["table_name"]): t["table_type"]
              for s in catalog["catalog_db_schemas"] for t in s["db_schema_tables"]}
    listed = {tuple(f.descriptor.path[i].decode() for i in range(2))
              for f in flight.connect(server).list_flights()}
    assert set(tables) == listed
    assert tables[("public", "metrics")] == "HYPERTABLE"
    assert tables[("public", "devices")] == "TABLE"
    assert sorted(conn.adbc_get_table_types()) == ["CONTINUOUS AGGREGATE", "HYPERTABLE", "PARTITIONED TABLE",
                                                   "TABLE", "VIEW"]
    # Filters follow the specification: patterns with % and _, types as listed.
    [only] = conn.adbc_get_objects(depth="tables", db_schema_filter="publ%", table_name_filter="metric_",
                                   table_types_filter=["HYPERTABLE"]).read_all().to_pylist()
    assert [t["table_name"] for s in only["catalog_db_schemas"] for t in s["db_schema_tables"]] == ["metrics"]
    schema = conn.adbc_get_table_schema("metrics", db_schema_filter="public")
    assert schema == flight.connect(server).get_schema(hyperflight.descriptor("public.metrics")).schema
    assert schema.field("time").type == pa.timestamp("us", tz="UTC")


def test_windowed_scan_equals_sql_with_one_endpoint_per_pruned_chunk(conn, pg):
    start, end = WINDOW
    query = (f"SELECT time, device_id, reading FROM public.metrics "
             f"WHERE time >= '{start.isoformat()}' AND time < '{end.isoformat()}'")
    cur = conn.cursor()
    partitions, schema = cur.adbc_execute_partitions(query)
    assert len(partitions) == pruned_chunks(pg, start, end) == 3
    assert schema.names == ["time", "device_id", "reading"]
    cur.execute(query)
    table = cur.fetch_arrow_table()
    [(n, total, first, last)] = sql_rows(
        pg, "SELECT count(*), sum(reading), min(time), max(time) FROM public.metrics "
            "WHERE time >= %s AND time < %s", (start, end))
    assert table.num_rows == n
    assert pc.sum(table["reading"]).as_py() == total
    assert pc.min(table["time"]).as_py() == first and pc.max(table["time"]).as_py() == last


def test_fetch_record_batch_streams_the_same_rows(conn):
    cur = conn.cursor()
    cur.execute("SELECT * FROM public.devices")
    reader = cur.fetch_record_batch()
    assert sum(b.num_rows for b in reader) == 100


def test_time_bucket_aggregate_equals_sql(conn, pg):
    query = ("SELECT time_bucket('6 hours', time) AS bucket, count(*) AS n, sum(reading) AS total "
             "FROM public.metrics GROUP BY bucket ORDER BY bucket")
    cur = conn.cursor()
    partitions, _ = cur.adbc_execute_partitions(query)
    assert len(partitions) == 1  # one `query` endpoint: PostgreSQL aggregates
    cur.execute(query)
    table = cur.fetch_arrow_table()
    # sum(int8) is an unconstrained numeric: Utf8, exact as PostgreSQL prints it (README, types).
    assert table.schema.types == [pa.timestamp("us", tz="UTC"), pa.int64(), pa.string()]
    got = [(r["bucket"], r["n"], r["total"]) for r in table.to_pylist()]
    assert got == [(b, n, str(total)) for b, n, total in sql_rows(pg, query)]
    assert len(got) == TEST_DAYS * 4


def test_join_equals_sql(conn, pg):
    query = ("SELECT d.name, count(*) AS n FROM public.metrics m JOIN public.devices d USING (device_id) "
             "WHERE m.time < '2026-10-03' GROUP BY d.name ORDER BY d.name")
    cur = conn.cursor()
    cur.execute(query)
    assert cur.fetchall() == sql_rows(pg, query)


def test_parameters_bind_and_still_fan_out(conn, pg):
    start, end = WINDOW
    cur = conn.cursor()
    query = "SELECT time, reading FROM public.metrics WHERE time >= ? AND time < ? AND device_id = ?"
    partitions, _ = cur.adbc_execute_partitions(query, (start, end, 7))
    assert len(partitions) == pruned_chunks(pg, start, end)
    cur.execute(query, (start, end, 7))
    table = cur.fetch_arrow_table()
    [(n, total)] = sql_rows(pg, "SELECT count(*), sum(reading) FROM public.metrics "
                                "WHERE time >= %s AND time < %s AND device_id = 7", (start, end))
    assert (table.num_rows, pc.sum(table["reading"]).as_py()) == (n, total)
    # Values with quotes stay values.
    cur.execute("SELECT count(*) FROM public.devices WHERE name = ?", ("device-1' OR '1'='1",))
    assert cur.fetchone() == (0,)
    cur.execute("SELECT name FROM public.devices WHERE device_id = $1", (3,))
    assert cur.fetchall() == [("device-3",)]


@pytest.mark.parametrize("statement, kind", [
    ("INSERT INTO public.devices (device_id, name) VALUES (1000, 'x')", "INSERT"),
    ("DELETE FROM public.devices", "DELETE"),
    ("CREATE TABLE public.nope (a int)", "CREATE TABLE"),
    ("DROP TABLE public.devices", "DROP TABLE"),
    ("SELECT 1; DELETE FROM public.devices", None),
])
def test_writes_ddl_and_batches_are_refused(conn, pg, statement, kind):
    cur = conn.cursor()
    with pytest.raises(ProgrammingError) as refused:
        cur.execute(statement)
    assert refused.value.status_code == AdbcStatusCode.INVALID_ARGUMENT
    expected = f"{kind} statements are refused" if kind else "one statement at a time"
    assert expected in str(refused.value)
    assert sql_rows(pg, "SELECT count(*) FROM public.devices") == [(100,)]


def test_bearer_token_is_required_and_accepted(server_factory):
    token = "flight-sql-token-0123456789"
    s = server_factory("--auth-token", token, token=token)
    with connect(s.url) as anonymous:
        with pytest.raises(adbc_driver_flightsql.dbapi.Error) as denied:
            anonymous.cursor().execute("SELECT 1")
        assert denied.value.status_code == AdbcStatusCode.UNAUTHENTICATED
    with connect(s.url, **{adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value:
                           f"Bearer {token}"}) as c:
        cur = c.cursor()
        cur.execute("SELECT count(*) FROM public.devices")
        assert cur.fetchone() == (100,)


def test_unknown_actions_are_unimplemented_and_flight_api_is_unchanged(server):
    client = flight.connect(server)
    with pytest.raises(pa.ArrowNotImplementedError) as unknown:
        list(client.do_action(flight.Action("nope", b"")))
    assert "unknown action \"nope\"; known: refresh, health, stats, CreatePreparedStatement" in str(unknown.value)
    names = [a.type for a in client.list_actions()]
    assert names == ["refresh", "health", "stats", "CreatePreparedStatement", "ClosePreparedStatement"]
    assert hyperflight.read_table(server, "public.devices").num_rows == 100
