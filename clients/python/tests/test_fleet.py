"""Scale-out with real components: two servers sharing a ticket secret, one on the cluster's primary
and one on its streaming hot standby (``scripts/cluster.sh replica``); Dask on a LocalCluster of 2
worker processes and Spark ``local[2]`` reading the endpoints; a server killed mid-read; replay
paused on the standby while rows arrive on the primary."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import time
from typing import Iterator, List, Tuple

import psycopg
import pyarrow as pa
import pytest

import hyperflight
from conftest import REPO, TEST_DB, _run, built_binary, free_port, unique_name
from test_read import METRICS_SQL, arrow_rows, assert_same_rows, sql_rows

SECRET = "a ticket secret the fleet shares"
REPLAY_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def standby_url(database_url: str) -> str:
    """postgres:// URL of the test database on the hot standby (started, and made on first use)."""
    return _run(str(REPO / "scripts/cluster.sh"), "replica").rsplit("/", 1)[0] + f"/{TEST_DB}"


def wait_replayed(pg: psycopg.Connection, standby_url: str) -> None:
    """Until the standby has replayed all the primary has written so far."""
    lsn = pg.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]
    deadline = time.monotonic() + REPLAY_TIMEOUT_S
    with psycopg.connect(standby_url, autocommit=True) as standby:
        while not standby.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone()[0]:
            assert time.monotonic() < deadline, f"the standby did not replay to {lsn}"
            time.sleep(0.05)


@pytest.fixture
def fleet(server_factory, standby_url: str, pg: psycopg.Connection) -> Tuple:
    """Server A on the primary and B on the standby, each listing the other; A is the one asked."""
    wait_replayed(pg, standby_url)
    pa_, pb = free_port(), free_port()
    a_url, b_url = f"grpc://127.0.0.1:{pa_}", f"grpc://127.0.0.1:{pb}"
    common = ("--ticket-secret", SECRET, "--batch-rows", "4096", "--replay-wait-ms", "5000")
    a = server_factory(*common, "--advertise-url", a_url, "--replica-peers", b_url, port=pa_, metrics=False)
    b = server_factory(*common, "--advertise-url", b_url, "--peers", a_url, port=pb, metrics=False,
                       database=standby_url)
    return a, b


def first_locations(info) -> collections.Counter:
    return collections.Counter(e.locations[0].uri.decode() if isinstance(e.locations[0].uri, bytes)
                               else str(e.locations[0].uri) for e in info.endpoints)


def streamed(url: str) -> int:
    return json.loads(hyperflight.do_action(url, "stats")[0])["rows_streamed"]


def test_dask_reads_one_partition_per_endpoint_across_both_servers(fleet, pg: psycopg.Connection) -> None:
    import dask
    import hyperflight.dask as hd
    from distributed import Client, LocalCluster

    a, b = fleet
    info = hyperflight.flight_info(a.url, "public.metrics")
    spread = first_locations(info)
    print(f"endpoint distribution (first location): {dict(spread)}")
    assert spread == {a.url: 4, b.url: 3}
    assert all(len(e.locations) == 2 for e in info.endpoints)

    df = hd.read_table(a.url, "public.metrics")
    assert df.npartitions == len(info.endpoints) == 7
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        result = df.compute()
        workers = client.run(lambda: 1)
    assert len(workers) == 2
    table = pa.Table.from_pandas(result, preserve_index=False)
    assert table.schema.field("time").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("device_id").type == pa.int32()
    assert_same_rows(arrow_rows(table.cast(info.schema)), sql_rows(pg, METRICS_SQL))
    # Both servers served their share.
    assert streamed(a.url) > 0 and streamed(b.url) > 0

    # A window and a projection, with a Dask aggregate on top.
    window = hd.read_table(a.url, "public.metrics", columns=["time", "device_id", "reading"],
                           start="2026-10-03", end="2026-10-05")
    with dask.config.set(scheduler="synchronous"):
        total = int(window["reading"].sum().compute())
        rows = len(window)
    expected = pg.execute("SELECT count(*), sum(reading) FROM public.metrics "
                          "WHERE time >= '2026-10-03Z' AND time < '2026-10-05Z'").fetchone()
    assert (rows, total) == (expected[0], int(expected[1]))


def test_spark_reads_one_partition_per_endpoint(fleet, pg: psycopg.Connection, monkeypatch) -> None:
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from hyperflight.spark import HyperflightDataSource

    a, b = fleet
    # Spark's Python workers run this interpreter (the venv, with pyarrow and hyperflight).
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    spark = (SparkSession.builder.master("local[2]").appName("hyperflight-test")
             .config("spark.ui.enabled", "false").config("spark.sql.session.timeZone", "UTC")
             .config("spark.driver.memory", "1g").getOrCreate())
    try:
        spark.dataSource.register(HyperflightDataSource)
        df = (spark.read.format("hyperflight").option("url", a.url).option("table", "public.metrics")
              .option("columns", "time,device_id,reading,temperature").load())
        assert df.rdd.getNumPartitions() == 7
        # reading is int8 with large values: its sum needs Spark's decimal, as PostgreSQL's numeric.
        row = df.agg(F.count("*").alias("n"), F.sum(F.col("reading").cast("decimal(38,0)")).alias("r"),
                     F.countDistinct("device_id").alias("d"), F.sum("temperature").alias("t"),
                     F.unix_micros(F.min("time")).alias("lo"), F.unix_micros(F.max("time")).alias("hi"),
                     F.sum(F.unix_seconds("time")).alias("ts")).collect()[0]
        us = "(extract(epoch FROM time) * 1000000)::int8"
        expected = pg.execute(f"SELECT count(*), sum(reading), count(DISTINCT device_id), sum(temperature), "
                              f"min({us}), max({us}), sum(floor(extract(epoch FROM time))::int8) "
                              f"FROM public.metrics").fetchone()
        assert (row["n"], int(row["r"]), row["d"]) == (expected[0], int(expected[1]), expected[2])
        assert row["t"] == pytest.approx(expected[3], rel=1e-12)
        assert (row["lo"], row["hi"], row["ts"]) == (expected[4], expected[5], int(expected[6]))
        assert streamed(a.url) > 0 and streamed(b.url) > 0
    finally:
        spark.stop()


@pytest.fixture
def big_table(pg: psycopg.Connection) -> Iterator[str]:
    """A plain table far larger than HTTP/2 windows and socket buffers hold, so a kill lands
    mid-stream: 300,000 rows, ids 1..300000."""
    schema = unique_name("fleet_kill")
    pg.execute(f"CREATE SCHEMA {schema}")
    pg.execute(f"CREATE TABLE {schema}.big AS SELECT g::int AS id, repeat('x', 120) AS pad "
               f"FROM generate_series(1, 300000) g")
    pg.execute(f"ANALYZE {schema}.big")
    try:
        yield f"{schema}.big"
    finally:
        pg.execute(f"DROP SCHEMA {schema} CASCADE")


def test_a_server_killed_mid_read_leaves_the_read_exact(server_factory, big_table: str) -> None:
    pa_, pb = free_port(), free_port()
    a_url, b_url = f"grpc://127.0.0.1:{pa_}", f"grpc://127.0.0.1:{pb}"
    common = ("--ticket-secret", SECRET, "--batch-rows", "1000")
    a = server_factory(*common, "--advertise-url", a_url, "--peers", b_url, port=pa_, metrics=False)
    b = server_factory(*common, "--advertise-url", b_url, "--peers", a_url, port=pb, metrics=False)
    with hyperflight.connect(a.url, retry=hyperflight.RetryPolicy(backoff=0.05)) as client:
        info = client.info(big_table, columns=["id"])
        assert [str(l.uri.decode() if isinstance(l.uri, bytes) else l.uri) for l in info.endpoints[0].locations] \
            == [a_url, b_url]
        ids: List[int] = []
        for batch in client.stream_info(info, parallelism=1):
            ids.extend(batch.column(0).to_pylist())
            if a.proc.poll() is None and len(ids) >= 5000:
                a.proc.kill()  # SIGKILL: no goodbye, the stream is cut
                a.proc.wait()
        assert client.retries >= 1, "the kill cut the stream"
    assert len(ids) == 300_000 and sorted(ids) == list(range(1, 300_001)), "nothing lost, nothing twice"
    assert streamed(b.url) > 0


def test_the_airbyte_source_continues_at_the_next_location_when_a_server_dies(
        server_factory, big_table: str, tmp_path) -> None:
    pa_, pb = free_port(), free_port()
    a_url, b_url = f"grpc://127.0.0.1:{pa_}", f"grpc://127.0.0.1:{pb}"
    common = ("--ticket-secret", SECRET, "--batch-rows", "1000")
    a = server_factory(*common, "--advertise-url", a_url, "--peers", b_url, port=pa_, metrics=False)
    b = server_factory(*common, "--advertise-url", b_url, "--peers", a_url, port=pb, metrics=False)
    namespace, name = big_table.split(".")
    (tmp_path / "config.json").write_text(json.dumps({"flight_url": a.url}))
    (tmp_path / "catalog.json").write_text(json.dumps({"streams": [{
        "stream": {"name": name, "namespace": namespace, "json_schema": {"properties": {"id": {}}},
                   "supported_sync_modes": ["full_refresh"]},
        "sync_mode": "full_refresh", "destination_sync_mode": "overwrite"}]}))
    proc = subprocess.Popen([str(built_binary("hyperflight-airbyte")), "read", "--config",
                             str(tmp_path / "config.json"), "--catalog", str(tmp_path / "catalog.json")],
                            stdout=subprocess.PIPE, text=True)
    ids: List[int] = []
    logs: List[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        message = json.loads(line)
        if message["type"] == "RECORD":
            ids.append(message["record"]["data"]["id"])
            if a.proc.poll() is None and len(ids) >= 5000:
                a.proc.kill()  # SIGKILL mid-stream: the endpoint's next location is B
                a.proc.wait()
        elif message["type"] == "LOG":
            logs.append(message["log"]["message"])
    assert proc.wait(timeout=300) == 0, logs
    assert any("continuing at " + b_url in m for m in logs), logs
    assert len(ids) == 300_000 and sorted(ids) == list(range(1, 300_001)), "nothing lost, nothing twice"
    assert streamed(b.url) > 0


def test_paused_replay_never_gives_stale_rows(fleet, pg: psycopg.Connection, standby_url: str) -> None:
    a, b = fleet
    schema = unique_name("fleet_pause")
    pg.execute(f"CREATE SCHEMA {schema}")
    pg.execute(f"CREATE TABLE {schema}.m (time timestamptz NOT NULL, v int8)")
    pg.execute(f"SELECT create_hypertable('{schema}.m', 'time', chunk_time_interval => interval '1 day')")
    pg.execute(f"INSERT INTO {schema}.m SELECT timestamptz '2026-10-01Z' + g * interval '1 minute', g "
               f"FROM generate_series(0, 4 * 1440 - 1) g")
    wait_replayed(pg, standby_url)
    with psycopg.connect(standby_url, autocommit=True) as standby:
        standby.execute("SELECT pg_wal_replay_pause()")
        try:
            pg.execute(f"INSERT INTO {schema}.m SELECT timestamptz '2026-10-01Z' + g * interval '1 minute', -g "
                       f"FROM generate_series(0, 4 * 1440 - 1) g")
            assert standby.execute(f"SELECT count(*) FROM {schema}.m").fetchone()[0] == 4 * 1440
            # Dask on the plan of the primary's server: the standby's server refuses (UNAVAILABLE),
            # its partitions move on to the primary's; every row of the plan is there.
            import dask
            import hyperflight.dask as hd
            hyperflight.do_action(a.url, "refresh")  # the table is newer than the server's discovery
            df = hd.read_table(a.url, f"{schema}.m")
            assert df.npartitions == 4
            with dask.config.set(scheduler="threads"):
                result = df.compute()
            assert len(result) == 8 * 1440
            assert int(result["v"].sum()) == 0  # g and -g: the second insert is there in full
            assert json_errors(b.url).get("UNAVAILABLE", 0) >= 2
        finally:
            standby.execute("SELECT pg_wal_replay_resume()")
    pg.execute(f"DROP SCHEMA {schema} CASCADE")


def json_errors(url: str) -> dict:
    return json.loads(hyperflight.do_action(url, "stats")[0])["stream_errors"]
