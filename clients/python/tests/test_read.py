"""The Python client against a real hyperflight server: every figure is checked against SQL."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any, List, Sequence, Tuple

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.flight as flight
import pytest

import hyperflight

METRICS_TYPES = {
    "time": pa.timestamp("us", tz="UTC"),
    "device_id": pa.int32(),
    "sensor": pa.string(),
    "temperature": pa.float64(),
    "humidity": pa.float32(),
    "status": pa.int16(),
    "reading": pa.int64(),
    "ok": pa.bool_(),
}
# humidity::float8 makes PostgreSQL widen float4 exactly as Arrow's float32 -> Python float does.
METRICS_SQL = ("SELECT time, device_id, sensor, temperature, humidity::float8, status, reading, ok "
               "FROM public.metrics")
DEVICES_SQL = "SELECT device_id, name, location, installed_at FROM public.devices"
# The keys of every endpoint's app_metadata (EndpointMetadata in crates/protocol/src/endpoint.rs);
# compression_ratio is added for compressed chunks, block_start/block_end for block ranges only.
METADATA_KEYS = {"kind", "chunk", "chunk_id", "range_start", "range_end", "size_bytes", "estimated_rows",
                 "is_compressed"}


def _sort_key(row: Sequence[Any]) -> Tuple[Any, ...]:
    # NULLs sort first without ever comparing None with a value.
    return tuple((False, 0) if v is None else (True, v) for v in row)


def assert_same_rows(actual: List[Tuple[Any, ...]], expected: List[Tuple[Any, ...]]) -> None:
    """Multiset equality, value by value; reports the first difference instead of a huge diff."""
    assert len(actual) == len(expected), f"{len(actual)} rows, SQL has {len(expected)}"
    actual = sorted(actual, key=_sort_key)
    expected = sorted(expected, key=_sort_key)
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert a == e, f"sorted row {i} differs:\n  flight: {a!r}\n  sql:    {e!r}"


def arrow_rows(table: pa.Table) -> List[Tuple[Any, ...]]:
    return [tuple(r.values()) for r in table.to_pylist()]


def sql_rows(pg: psycopg.Connection, query: str) -> List[Tuple[Any, ...]]:
    return [tuple(r) for r in pg.execute(query).fetchall()]


def as_utc(value: Any) -> datetime:
    """A chunk range bound from app_metadata: RFC 3339 text or integer microseconds since epoch."""
    if isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(timezone.utc)
    if isinstance(value, int) and not isinstance(value, bool):
        return datetime.fromtimestamp(0, timezone.utc) + timedelta(microseconds=value)
    raise AssertionError(f"range bound {value!r} is neither RFC 3339 text nor integer microseconds")


@pytest.fixture(scope="module")
def metrics(server: str) -> pa.Table:
    return hyperflight.read_table(server, "public.metrics", parallelism=4)


def test_list_tables(server: str) -> None:
    tables = hyperflight.list_tables(server)
    assert "public.metrics" in tables
    assert "public.devices" in tables
    hidden = [t for t in tables if t.startswith("_timescaledb") or "_hyper_" in t]
    assert hidden == [], f"internal relations exposed: {hidden}"


def test_flight_info_has_one_endpoint_per_chunk_in_range_order(server: str, pg: psycopg.Connection) -> None:
    info = hyperflight.flight_info(server, "public.metrics")
    chunks = pg.execute(
        "SELECT format('%I.%I', c.schema_name, c.table_name), c.id, s.range_start, s.range_end "
        "FROM _timescaledb_catalog.chunk c "
        "JOIN timescaledb_information.chunks s "
        "  ON s.chunk_schema = c.schema_name AND s.chunk_name = c.table_name "
        "WHERE s.hypertable_schema = 'public' AND s.hypertable_name = 'metrics' "
        "ORDER BY s.range_start").fetchall()
    (count,) = pg.execute("SELECT count(*) FROM show_chunks('public.metrics')").fetchone()
    assert len(info.endpoints) == count == len(chunks)

    # The JSON itself: exactly the keys of an uncompressed heap chunk.
    for endpoint in info.endpoints:
        raw = json.loads(endpoint.app_metadata)
        assert set(raw) == METADATA_KEYS, f"keys {sorted(raw)}, expected {sorted(METADATA_KEYS)}"
    # The client's typed reading of it (strict: unknown or missing keys would raise).
    meta = hyperflight.endpoint_metadata(info)
    for m in meta:
        assert m is not None
        assert m.kind == "chunk"
        assert m.is_compressed is False
        assert m.compression_ratio is None and m.block_start is None and m.block_end is None
        assert m.size_bytes > 0
    assert [m.chunk for m in meta] == [c[0] for c in chunks], "endpoints not in range order"
    assert [m.chunk_id for m in meta] == [c[1] for c in chunks]
    assert [(as_utc(m.range_start), as_utc(m.range_end)) for m in meta] == \
        [(c[2], c[3]) for c in chunks]
    # Row estimates: the planner's statistics per chunk (the loader ANALYZEs every chunk).
    estimates = dict(pg.execute(
        "SELECT format('%I.%I', n.nspname, c.relname), c.reltuples::int8 FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.oid IN (SELECT show_chunks('public.metrics'))").fetchall())
    assert {m.chunk: m.estimated_rows for m in meta} == estimates


def test_read_metrics_types_and_figures(metrics: pa.Table, pg: psycopg.Connection) -> None:
    assert {f.name: f.type for f in metrics.schema} == METRICS_TYPES
    assert metrics.schema.names == list(METRICS_TYPES)
    rows, total, devices, first, last = pg.execute(
        "SELECT count(*), sum(reading), count(DISTINCT device_id), min(time), max(time) "
        "FROM public.metrics").fetchone()
    assert metrics.num_rows == rows
    assert sum(v for v in metrics.column("reading").to_pylist() if v is not None) == total
    assert len(set(metrics.column("device_id").drop_null().to_pylist())) == devices
    bounds = pc.min_max(metrics.column("time"))
    assert (bounds["min"].as_py(), bounds["max"].as_py()) == (first, last)


def test_read_metrics_rows_equal_sql(metrics: pa.Table, pg: psycopg.Connection) -> None:
    assert_same_rows(arrow_rows(metrics), sql_rows(pg, METRICS_SQL))


@pytest.mark.parametrize("parallelism", [1, 3])
def test_read_is_the_same_at_any_parallelism(server: str, metrics: pa.Table, parallelism: int) -> None:
    # Endpoints are concatenated in order, so the table is identical, not just the same multiset.
    assert hyperflight.read_table(server, ("public", "metrics"), parallelism=parallelism).equals(metrics)


def test_duckdb_over_arrow_matches_sql(metrics: pa.Table, pg: psycopg.Connection) -> None:
    query = ("SELECT count(*), sum(reading), count(DISTINCT device_id), min(time), max(time), "
             "count(sensor), count(humidity), count(ok) FILTER (WHERE ok) FROM {}")
    tbl = metrics  # noqa: F841 -- DuckDB finds the Arrow table by its Python name
    (got,) = duckdb.sql(query.format("tbl")).fetchall()
    want = pg.execute(query.format("public.metrics")).fetchone()
    assert tuple(got[:3]) == tuple(want[:3])
    assert got[3] == want[3] and got[4] == want[4]
    assert tuple(got[5:]) == tuple(want[5:])
    per_device = "SELECT device_id, count(*), sum(status) FROM {} GROUP BY 1 ORDER BY 1 NULLS FIRST"
    assert duckdb.sql(per_device.format("tbl")).fetchall() == \
        [tuple(r) for r in pg.execute(per_device.format("public.metrics")).fetchall()]


def test_read_devices_exactly(server: str, pg: psycopg.Connection) -> None:
    devices = hyperflight.read_table(server, "public.devices")
    assert {f.name: f.type for f in devices.schema} == {
        "device_id": pa.int32(), "name": pa.string(), "location": pa.string(),
        "installed_at": pa.timestamp("us", tz="UTC"),
    }
    assert_same_rows(arrow_rows(devices), sql_rows(pg, DEVICES_SQL))


def test_errors_have_their_grpc_kind_and_the_server_stays_up(
    server: str, metrics: pa.Table, pg: psycopg.Connection
) -> None:
    with flight.FlightClient(server) as client:
        # INVALID_ARGUMENT: pyarrow raises ArrowInvalid ("Flight returned invalid argument error").
        with pytest.raises(pa.ArrowInvalid) as garbage:
            client.do_get(flight.Ticket(b"garbage")).read_all()
        assert type(garbage.value) is pa.ArrowInvalid
        assert hyperflight.grpc_status(garbage.value) == "INVALID_ARGUMENT", str(garbage.value)

        # NOT_FOUND: pyarrow raises ArrowKeyError ("Flight returned not found error").
        with pytest.raises(pa.ArrowKeyError) as unknown:
            client.get_flight_info(flight.FlightDescriptor.for_path("public", "no_such_table"))
        assert type(unknown.value) is pa.ArrowKeyError
        assert hyperflight.grpc_status(unknown.value) == "NOT_FOUND", str(unknown.value)

    again = hyperflight.read_table(server, "public.metrics", parallelism=2)
    assert again.num_rows == metrics.num_rows
    assert again.equals(metrics)


def test_projection_and_time_range(server: str, pg: psycopg.Connection) -> None:
    # A CMD descriptor: two of seven days, two columns; start inclusive, end exclusive.
    start, end = "2026-10-03T00:00:00Z", "2026-10-05T00:00:00Z"
    info = hyperflight.flight_info(server, "public.metrics", columns=["time", "reading"],
                                   start=start, end=end)
    assert len(info.endpoints) == 2
    table = hyperflight.read_flight_info(server, info)
    assert table.schema.names == ["time", "reading"]
    assert_same_rows(arrow_rows(table), sql_rows(
        pg, f"SELECT time, reading FROM public.metrics WHERE time >= '{start}' AND time < '{end}'"))


def test_batches_respect_batch_rows(server: str) -> None:
    info = hyperflight.flight_info(server, "public.metrics")
    with flight.FlightClient(server) as client:
        batches = client.do_get(info.endpoints[0].ticket).read_all().to_batches()
    sizes = [b.num_rows for b in batches]
    assert max(sizes) <= 4096, f"batch sizes {sizes[:10]}... exceed --batch-rows 4096"


def test_consistent_snapshot_reads_the_same_rows(server: str, metrics: pa.Table) -> None:
    # One exported snapshot for every endpoint: a CMD descriptor even without projection or window.
    info = hyperflight.flight_info(server, "public.metrics", consistent_snapshot=True)
    assert json.loads(info.descriptor.command) == {"table": "public.metrics", "consistent_snapshot": True}
    assert hyperflight.read_flight_info(server, info, parallelism=4).equals(metrics)
