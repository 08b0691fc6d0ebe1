"""The Client (issue 16) against real servers: held connection, bounded-memory stream, automatic resume
across a server restart, typed errors, the ``hyperflight`` command and its export, packaging."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path
from typing import Iterator, List, Tuple

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.flight as flight
import pyarrow.parquet as pq
import pytest

import hyperflight
from conftest import REPO, free_port, unique_name
from test_read import METRICS_SQL, arrow_rows, assert_same_rows, sql_rows

PKG = REPO / "clients/python"
TICKET_SECRET = "resume-test-secret-0123456789abcdef"
INT_ROWS = 1_000_000  # events: integer time dimension, chunks of 100 000
WIDE_ROWS = 1_000_000  # wide: ~0.5 kB a row, 0.5 GB: the table that must not fit in the stream's memory


# --- a scratch database of this module's own: an integer hypertable, a quoted schema, a wide table ---


@pytest.fixture(scope="module")
def scratch_url(cluster_url: str) -> Iterator[str]:
    name = unique_name("hyperflight_client")
    with psycopg.connect(f"{cluster_url}/postgres", autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
        try:
            with psycopg.connect(f"{cluster_url}/{name}", autocommit=True) as db:
                db.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
                db.execute("CREATE TABLE events (id bigint NOT NULL, v int)")
                db.execute("SELECT create_hypertable('events', 'id', chunk_time_interval => 100000)")
                db.execute(f"INSERT INTO events SELECT i, i % 97 FROM generate_series(0, {INT_ROWS - 1}) i")
                db.execute('CREATE SCHEMA "My Schema"')
                db.execute('CREATE TABLE "My Schema".t (k int PRIMARY KEY, "Name" text)')
                db.execute('INSERT INTO "My Schema".t SELECT i, \'n\' || i FROM generate_series(1, 10) i')
                db.execute("CREATE TABLE wide (id bigint NOT NULL, payload text)")
                db.execute("SELECT create_hypertable('wide', 'id', chunk_time_interval => 40000)")
                db.execute(f"INSERT INTO wide SELECT i, repeat(md5(i::text), 16) "
                           f"FROM generate_series(0, {WIDE_ROWS - 1}) i")
                db.execute("ANALYZE")
            yield f"{cluster_url}/{name}"
        finally:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="module")
def scratch_server(scratch_url: str, server_logs: Path) -> Iterator[str]:
    from conftest import start_server

    s = start_server(scratch_url, "--batch-rows", "4096", name="client-scratch", metrics=False,
                     log_dir=server_logs)
    try:
        yield s.url
    finally:
        s.stop()


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m hyperflight ARGS``; stdout and stderr captured."""
    done = subprocess.run([sys.executable, "-m", "hyperflight", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=300)
    if check:
        assert done.returncode == 0, f"exit {done.returncode}:\n{done.stderr}"
    return done


# --- the Client ---


def test_client_holds_one_connection_and_reads_like_sql(server: str, pg: psycopg.Connection) -> None:
    with hyperflight.connect(server, parallelism=3) as client:
        assert "public.metrics" in client.tables()
        info = client.info("public.metrics", columns=["time", "reading"], start="2026-10-03",
                           end="2026-10-05T00:00:00Z")
        assert len(info.endpoints) == 2
        table = client.read("public.metrics")
        reader = client.stream("public.metrics", parallelism=2)
        assert isinstance(reader, pa.RecordBatchReader)
        streamed = reader.read_all()
        with pytest.raises(hyperflight.NotFound):
            client.read("public.no_such_table")
        # The connection is still usable after an error.
        assert client.read("public.devices").num_rows == 100
    assert_same_rows(arrow_rows(table), sql_rows(pg, METRICS_SQL))
    # Batches come in endpoint order whatever the parallelism: the same table, not just the same rows.
    assert streamed.equals(table)
    assert hyperflight.read_table(server, "public.metrics", parallelism=1).equals(table)


def test_conversions(server: str, pg: psycopg.Connection) -> None:
    with hyperflight.connect(server) as client:
        df = client.to_pandas("public.devices")
        assert len(df) == 100 and str(df["installed_at"].dt.tz) == "UTC"
        pl = client.to_polars("public.devices")
        assert pl.height == 100 and pl.columns == list(df.columns)
        assert pl["installed_at"].dtype.time_zone == "UTC"
        rel = client.to_duckdb("public.metrics")
        (count, total), = rel.aggregate("count(*), sum(reading)").fetchall()
    assert (count, total) == pg.execute("SELECT count(*), sum(reading) FROM public.metrics").fetchone()


def test_stream_peak_memory_is_well_below_the_table(scratch_server: str) -> None:
    # A child process of its own, so the figure is the stream's alone: its peak RSS while streaming the
    # wide table, over its RSS once connected and planned, against the table's Arrow size.
    script = f"""
import json, pyarrow as pa, hyperflight
def hwm():  # peak RSS of this process image, in KiB (getrusage's would count the forking pytest's)
    with open("/proc/self/status") as f:
        return int(next(l for l in f if l.startswith("VmHWM:")).split()[1])
with hyperflight.connect({scratch_server!r}) as c:
    info = c.info("public.wide")
    base = hwm()
    rows = nbytes = 0
    for batch in c.stream("public.wide", parallelism=2):
        rows += batch.num_rows; nbytes += batch.nbytes
    peak = hwm()
print(json.dumps({{"rows": rows, "bytes": nbytes, "endpoints": len(info.endpoints),
                   "base_kib": base, "peak_kib": peak}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    m = json.loads(done.stdout)
    grown = (m["peak_kib"] - m["base_kib"]) * 1024
    print(f"\nstream of {m['rows']} rows, {m['bytes'] / 1e6:.0f} MB in Arrow over {m['endpoints']} endpoints: "
          f"RSS {m['base_kib'] / 1024:.0f} MB before, peak {m['peak_kib'] / 1024:.0f} MB, "
          f"grown {grown / 1e6:.1f} MB")
    assert m["rows"] == WIDE_ROWS
    assert grown < m["bytes"] / 4, f"RSS grew {grown / 1e6:.1f} MB for a {m['bytes'] / 1e6:.1f} MB table"


def test_read_resumes_across_a_server_restart(
    server_factory, pg: psycopg.Connection, server_logs: Path
) -> None:
    # A server of the test's own, with a fixed ticket secret, killed in the middle of a read and started
    # again on the same port: the read goes on from the last batch's ticket.
    port = free_port()
    flags = ("--ticket-secret", TICKET_SECRET, "--batch-rows", "1024")
    first = server_factory(*flags, port=port, metrics=False)
    policy = hyperflight.RetryPolicy(retries=30, backoff=0.1, max_backoff=1.0)
    with hyperflight.connect(first.url, retry=policy) as client:
        reader = client.stream("public.metrics", parallelism=2)
        head: List[pa.RecordBatch] = [reader.read_next_batch() for _ in range(10)]
        first.proc.kill()
        first.proc.wait()
        second = server_factory(*flags, port=port, metrics=False)
        tail = reader.read_all()
        resumed = client.retries
    table = pa.concat_tables([pa.Table.from_batches(head, schema=tail.schema), tail])
    print(f"\n{table.num_rows} rows, {resumed} streams resumed across the restart")
    assert resumed >= 1, "the kill did not cut any stream: nothing was resumed"
    assert second.proc.poll() is None
    assert_same_rows(arrow_rows(table), sql_rows(pg, METRICS_SQL))  # no row lost, none twice


# --- typed errors ---


def test_typed_errors_from_the_status_code(server_factory, server: str) -> None:
    with hyperflight.connect(server) as client:
        with pytest.raises(hyperflight.NotFound) as nf:
            client.info("public.no_such_table")
        with pytest.raises(hyperflight.InvalidArgument) as bad:
            client.info("public.metrics", columns=["no_such_column"])
        with pytest.raises(hyperflight.InvalidArgument):
            list(hyperflight.stream.endpoint_batches(
                lambda e: [client.flight], flight.FlightEndpoint(b"garbage", []), flight.FlightCallOptions(),
                hyperflight.RetryPolicy()))
    assert nf.value.code == "NOT_FOUND" and nf.value.retry is hyperflight.Retry.FATAL
    assert isinstance(nf.value, pa.ArrowKeyError)  # still what pyarrow raised, for older code
    assert "\n" not in str(bad.value) and str(bad.value).startswith("INVALID_ARGUMENT: ")

    s = server_factory("--auth-token", "s3cret-token-for-typed-errors", token="s3cret-token-for-typed-errors",
                       metrics=False)
    with pytest.raises(hyperflight.Unauthenticated) as unauth:
        hyperflight.read_table(s.url, "public.devices")
    assert isinstance(unauth.value, flight.FlightUnauthenticatedError)
    assert hyperflight.read_table(s.url, "public.devices", token="s3cret-token-for-typed-errors").num_rows == 100

    with hyperflight.connect(f"grpc://127.0.0.1:{free_port()}", timeout=5) as nobody:
        with pytest.raises(hyperflight.Unavailable) as down:
            nobody.tables()
    assert down.value.retry is hyperflight.Retry.RESUME


@pytest.mark.parametrize("exc, cls", [
    (pa.ArrowInvalid("gRPC returned precondition failed error, with message: relation rewritten"),
     hyperflight.FailedPrecondition),
    (pa.ArrowInvalid("gRPC returned resource exhausted error, with message: 8 snapshots held"),
     hyperflight.ResourceExhausted),
    (pa.ArrowInvalid("gRPC returned invalid argument error, with message: precondition failed error"),
     hyperflight.InvalidArgument),  # the server's text never passes for a code
    (flight.FlightUnauthorizedError("gRPC returned permission denied error, with message: no"),
     hyperflight.PermissionDenied),
    (flight.FlightInternalError("gRPC returned aborted error, with message: stalled"), hyperflight.Aborted),
    (flight.FlightUnavailableError("gRPC returned unavailable error, with message: x"), hyperflight.Unavailable),
    (flight.FlightServerError("Flight RPC failed with message: x"), hyperflight.Unknown),
])
def test_exception_mapping(exc: BaseException, cls: type) -> None:
    err = hyperflight.from_flight(exc)
    assert type(err) is cls and isinstance(err, hyperflight.HyperflightError) and isinstance(err, type(exc))
    want = {"FAILED_PRECONDITION": "REPLAN", "INVALID_ARGUMENT": "FATAL", "PERMISSION_DENIED": "FATAL"}
    assert err.retry.name == want.get(err.code, "RESUME")


def test_table_names_parse_like_sql() -> None:
    assert hyperflight.parse_table_name('"My Schema".t') == ("My Schema", "t")
    assert hyperflight.parse_table_name('"a.b"."c""d"') == ("a.b", 'c"d')
    assert hyperflight.parse_table_name("metrics") == ("public", "metrics")
    for bad in ('"open.t', 'a.b.c', '"x"y.t', "a."):
        with pytest.raises(ValueError):
            hyperflight.parse_table_name(bad)


# --- the command ---


def test_cli_integer_window_and_quoted_names(scratch_server: str, scratch_url: str) -> None:
    done = cli("read", scratch_server, "public.events", "--start", "500000", "--end", "600000")
    assert "rows:      100000" in done.stdout, done.stdout
    done = cli("read", scratch_server, '"My Schema".t')
    assert "rows:      10" in done.stdout
    info = json.loads(cli("info", scratch_server, "public.events", "--start", "500000").stdout)
    assert info["metadata"]["hyperflight.time_column"] == "id"
    assert len(info["endpoints"]) == 5 and info["endpoints"][0]["range_start"] == 500000
    # The library takes the digit string too: the time column's type decides.
    with hyperflight.connect(scratch_server) as c:
        assert c.read("public.events", start="999990").num_rows == 10


def test_cli_plain_dates_tables_and_version(server: str, pg: psycopg.Connection) -> None:
    done = cli("read", server, "public.metrics", "--start", "2026-10-03", "--end", "2026-10-05")
    (want,) = pg.execute("SELECT count(*) FROM public.metrics "
                         "WHERE time >= '2026-10-03Z' AND time < '2026-10-05Z'").fetchone()
    assert f"rows:      {want}\n" in done.stdout
    assert "public.metrics" in cli("tables", server).stdout.split()
    assert cli("--version").stdout.strip() == f"hyperflight {hyperflight.__version__}"


def test_cli_errors_are_one_line_and_exit_nonzero(server: str, tmp_path: Path) -> None:
    cases = [
        (("read", server, "public.no_such_table"), "NOT_FOUND"),
        (("read", server, "public.metrics", "--columns", "nope"), "INVALID_ARGUMENT"),
        (("read", server, "public.metrics", "--start", "yesterday-ish"), "INVALID_ARGUMENT"),
        (("tables", f"grpc://127.0.0.1:{free_port()}"), "UNAVAILABLE"),
        (("read", server, '"unterminated.t'), "ValueError"),
        (("export", server, "public.devices", str(tmp_path / "x.parquet"), "--tls-root-certs",
          str(tmp_path / "missing.pem")), "FileNotFoundError"),
    ]
    for args, code in cases:
        done = cli(*args, check=False)
        assert done.returncode == 1, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("hyperflight: ") and code in lines[0], (args, done.stderr)
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "x.parquet").exists()


def test_cli_export_parquet_equals_sql(server: str, pg: psycopg.Connection, tmp_path: Path) -> None:
    out = tmp_path / "metrics.parquet"
    done = cli("export", server, "public.metrics", str(out), "--parallelism", "3", "--progress")
    # The progress bar (tqdm, forced on: stderr is no terminal here): endpoints done / total, rows,
    # bytes and the rate.
    (chunks,) = pg.execute("SELECT count(*) FROM show_chunks('public.metrics')").fetchone()
    assert f"{chunks}/{chunks}" in done.stderr and "rows/s" in done.stderr and "MB" in done.stderr, done.stderr
    print("\n" + done.stderr.strip().splitlines()[-1])
    table = pq.read_table(out)
    assert table.schema.metadata[b"hyperflight.time_column"] == b"time"
    assert_same_rows(arrow_rows(table), sql_rows(pg, METRICS_SQL))
    assert not Path(f"{out}.partial").exists()


@pytest.mark.parametrize("fmt", ["csv", "arrow"])
def test_cli_export_csv_and_arrow(server: str, pg: psycopg.Connection, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"devices.{fmt}"
    done = cli("export", server, "public.devices", str(out), "--columns", "device_id,name")
    assert "progress" not in done.stderr and "wrote 100 rows" in done.stderr
    table = pacsv.read_csv(out) if fmt == "csv" else pa.ipc.open_file(out).read_all()
    got = sorted(zip(*(table.column(c).to_pylist() for c in ("device_id", "name"))))
    assert got == sorted(tuple(r) for r in pg.execute("SELECT device_id, name FROM public.devices").fetchall())


# --- packaging ---


def test_pip_install_gives_the_console_script(tmp_path: Path) -> None:
    # A clean venv, a regular (not editable) install from the source tree, dependencies included
    # (from the package index, or pip's cache). pip builds in the source folder (build/), so a copy
    # of it, not the work tree, is installed.
    source = tmp_path / "source"
    shutil.copytree(PKG, source, ignore=shutil.ignore_patterns("tests", "bench", "examples", "build",
                                                                "*.egg-info", "__pycache__"))
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin/python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", str(source)], check=True,
                   stdin=subprocess.DEVNULL, timeout=600)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    check = ("import importlib.metadata as m, pathlib, hyperflight; "
             "assert 'site-packages' in hyperflight.__file__, hyperflight.__file__; "
             "assert (pathlib.Path(hyperflight.__file__).parent / 'py.typed').exists(); "
             "reqs = m.requires('hyperflight'); assert any(r.startswith('pyarrow') for r in reqs), reqs; "
             "print(m.version('hyperflight'))")
    version = subprocess.run([str(py), "-c", check], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert version.returncode == 0, version.stderr
    script = subprocess.run([str(env_dir / "bin/hyperflight"), "--version"], capture_output=True, text=True,
                            env=env, cwd=tmp_path)
    assert script.returncode == 0, script.stderr
    assert script.stdout.strip() == f"hyperflight {version.stdout.strip()}"
