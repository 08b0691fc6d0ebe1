"""Production operation (issue 6), seen from a client: the Prometheus endpoint and DoAction stats,
bearer/basic authentication, TLS, and the server-wide memory budget and scan cap under 16 concurrent
readers.

Every test starts a server of its own (``server_factory`` in conftest.py: a free port, its own flags,
/metrics on a free port, stopped at the end of the test), so settings and counters never leak from one
test to another. Expected values come from SQL on the test database.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Dict, FrozenSet, Optional, Tuple

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.flight as flight
import pytest
from prometheus_client.parser import text_string_to_metric_families

import hyperflight
from conftest import unique_name

MiB = 1 << 20

# The metric names of the design ("Metrics" in /work/shared/design.md), with their Prometheus types.
DESIGN_METRICS = {
    "hyperflight_rows_streamed_total": "counter",
    "hyperflight_bytes_streamed_total": "counter",
    "hyperflight_chunks_streamed_total": "counter",
    "hyperflight_stream_errors_total": "counter",
    "hyperflight_active_streams": "gauge",
    "hyperflight_memory_reserved_bytes": "gauge",
    "hyperflight_discovery_cache_hits_total": "counter",
    "hyperflight_discovery_cache_misses_total": "counter",
    "hyperflight_chunk_stream_seconds": "histogram",
}

Samples = Dict[Tuple[str, FrozenSet[Tuple[str, str]]], float]


# --- helpers ---------------------------------------------------------------------------------------


def fetch_metrics_text(metrics_url: str) -> str:
    with urllib.request.urlopen(metrics_url, timeout=5) as resp:
        assert resp.status == 200
        assert resp.headers["content-type"].startswith("text/plain")
        return resp.read().decode()


def parse_metrics(text: str) -> Tuple[Dict[str, str], Samples]:
    """(family name → type, (sample name, labels) → value). The parser drops ``_total`` from counter
    family names; sample names keep it."""
    families: Dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = family.type
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return families, samples


def scrape(metrics_url: str) -> Samples:
    return parse_metrics(fetch_metrics_text(metrics_url))[1]


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 when absent (a labelled counter has no sample before its first event)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def wait_for_metrics(metrics_url: str, condition: Callable[[Samples], bool],
                     timeout: float = 30.0) -> Samples:
    """Scrapes every 50 ms until ``condition`` holds, for up to ``timeout`` seconds, and returns the
    last scrape: the caller's assertions then say what did not happen in time."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(metrics_url)
        if condition(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def stats(url: str, token: Optional[str] = None) -> dict:
    [body] = hyperflight.do_action(url, "stats", token=token, timeout=10)
    return json.loads(body)


def sql_one(pg: psycopg.Connection, query: str):
    return pg.execute(query).fetchone()


def devices_reference(pg: psycopg.Connection) -> list:
    rows = pg.execute(
        "SELECT device_id, name, location, installed_at FROM public.devices ORDER BY device_id"
    ).fetchall()
    return [dict(zip(("device_id", "name", "location", "installed_at"), r)) for r in rows]


def assert_devices_exact(table: pa.Table, pg: psycopg.Connection) -> None:
    reference = devices_reference(pg)
    assert table.num_rows == len(reference) == 100
    got = table.sort_by("device_id").select(["device_id", "name", "location", "installed_at"])
    assert got.to_pylist() == reference


def read_all_endpoints(client: flight.FlightClient, descriptor, options=None) -> pa.Table:
    options = options or flight.FlightCallOptions()
    info = client.get_flight_info(descriptor, options)
    tables = [client.do_get(ep.ticket, options).read_all() for ep in info.endpoints]
    return pa.concat_tables(tables) if tables else info.schema.empty_table()


DEVICES = flight.FlightDescriptor.for_path("public", "devices")


# --- 1. /metrics and DoAction stats ----------------------------------------------------------------


def test_metrics_endpoint_exposes_every_design_metric(server_factory):
    """A fresh server's /metrics parses as Prometheus text and names every metric of the design, with
    its type: a dashboard or alert must not see a metric appear only after its first event."""
    s = server_factory()
    families, samples = parse_metrics(fetch_metrics_text(s.metrics_url))
    sample_names = {name for name, _ in samples}
    missing = []
    for name, kind in DESIGN_METRICS.items():
        family = name[: -len("_total")] if kind == "counter" else name
        if families.get(family) != kind:
            missing.append(f"{name} ({kind}): family {family!r} is {families.get(family)!r}")
        elif kind == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                if name + suffix not in sample_names:
                    missing.append(name + suffix)
    assert not missing, f"/metrics of a fresh server lacks: {missing}\n{fetch_metrics_text(s.metrics_url)}"
    # Only /metrics is served there.
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(s.metrics_url.replace("/metrics", "/other"), timeout=5)
    assert err.value.code == 404


def test_metrics_count_rows_chunks_and_errors_exactly(server_factory, pg):
    s = server_factory()
    (sql_rows,) = sql_one(pg, "SELECT count(*) FROM public.metrics")
    (sql_chunks,) = sql_one(pg, "SELECT count(*) FROM show_chunks('public.metrics')")
    assert (sql_rows, sql_chunks) == (200_000, 7)

    before = scrape(s.metrics_url)
    table = hyperflight.read_table(s.url, "public.metrics", parallelism=4)
    assert table.num_rows == sql_rows

    # A scan counts its chunk just before it ends the stream; allow for the scrape racing that.
    after = wait_for_metrics(s.metrics_url, lambda m: released(m) and value(
        m, "hyperflight_chunks_streamed_total") - value(before, "hyperflight_chunks_streamed_total") >= sql_chunks)

    def delta(name: str) -> float:
        return value(after, name) - value(before, name)

    print(f"\n/metrics after one read: rows {value(after, 'hyperflight_rows_streamed_total'):.0f}, "
          f"chunks {value(after, 'hyperflight_chunks_streamed_total'):.0f}, "
          f"bytes {value(after, 'hyperflight_bytes_streamed_total'):.0f}")
    assert delta("hyperflight_rows_streamed_total") == sql_rows
    assert delta("hyperflight_chunks_streamed_total") == sql_chunks
    assert delta("hyperflight_chunk_stream_seconds_count") == sql_chunks
    assert delta("hyperflight_chunk_stream_seconds_sum") > 0
    # IPC bytes: at least the fixed-width values of every row (time 8, device_id 4, temperature 8,
    # humidity 4, status 2, reading 8).
    assert delta("hyperflight_bytes_streamed_total") >= sql_rows * 34
    # Discovery: the start-up health probe filled the cache (TTL of minutes), so GetFlightInfo and
    # each chunk's DoGet (which resolves its ticket against discovery) are hits, none a miss.
    assert delta("hyperflight_discovery_cache_hits_total") == 1 + sql_chunks
    assert delta("hyperflight_discovery_cache_misses_total") == 0
    assert value(after, "hyperflight_active_streams") == 0
    assert value(after, "hyperflight_memory_reserved_bytes") == 0
    assert value(after, "hyperflight_active_scans") == 0
    assert value(after, "hyperflight_stream_errors_total", code="INVALID_ARGUMENT") == 0

    # A garbage ticket: INVALID_ARGUMENT for the client, one stream error with that code.
    with flight.connect(s.url) as client:
        with pytest.raises(pa.ArrowInvalid) as err:
            client.do_get(flight.Ticket(b"garbage, not a signed ticket")).read_all()
    assert hyperflight.grpc_status(err.value) == "INVALID_ARGUMENT"
    errors = wait_for_metrics(s.metrics_url, lambda m: value(
        m, "hyperflight_stream_errors_total", code="INVALID_ARGUMENT") >= 1)
    assert value(errors, "hyperflight_stream_errors_total", code="INVALID_ARGUMENT") == 1, errors
    assert value(errors, "hyperflight_rows_streamed_total") == value(after, "hyperflight_rows_streamed_total")

    # DoAction stats reports the same figures as /metrics.
    st = stats(s.url)
    final = scrape(s.metrics_url)
    assert st["rows_streamed"] == value(final, "hyperflight_rows_streamed_total") == sql_rows
    assert st["chunks_streamed"] == value(final, "hyperflight_chunks_streamed_total") == sql_chunks
    assert st["bytes_streamed"] == value(final, "hyperflight_bytes_streamed_total")
    assert st["chunk_stream_seconds_count"] == sql_chunks
    assert {code: n for code, n in st["stream_errors"].items() if n} == {"INVALID_ARGUMENT": 1}
    assert st["active_streams"] == 0 and st["memory_reserved_bytes"] == 0


def test_discovery_without_the_cache_is_a_miss_every_time(server_factory):
    s = server_factory("--enable-chunk-caching", "false")
    before = scrape(s.metrics_url)
    assert hyperflight.read_table(s.url, "public.devices").num_rows == 100
    after = wait_for_metrics(s.metrics_url, lambda m: released(m) and value(
        m, "hyperflight_chunks_streamed_total") > value(before, "hyperflight_chunks_streamed_total"))
    # GetFlightInfo and the one endpoint's DoGet each discovered afresh.
    for name, want in (("hyperflight_discovery_cache_misses_total", 2), ("hyperflight_discovery_cache_hits_total", 0)):
        assert value(after, name) - value(before, name) == want, name


# --- 2. authentication -----------------------------------------------------------------------------

TOKEN = "s3cret-token"


def test_auth_token_is_required_and_accepted(server_factory, pg):
    s = server_factory("--auth-token", TOKEN, token=TOKEN)
    good = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {TOKEN}".encode())])
    nothing = flight.FlightCallOptions()
    wrong = flight.FlightCallOptions(headers=[(b"authorization", b"Bearer s3cret-tokeN")])
    # The token as a bare value, without the scheme, is not accepted either.
    bare = flight.FlightCallOptions(headers=[(b"authorization", TOKEN.encode())])

    with flight.connect(s.url) as client:
        info = client.get_flight_info(DEVICES, good)
        ticket = info.endpoints[0].ticket
        for options in (nothing, wrong, bare):
            with pytest.raises(flight.FlightUnauthenticatedError):
                list(client.list_flights(options=options))
            with pytest.raises(flight.FlightUnauthenticatedError):
                client.get_flight_info(DEVICES, options)
            with pytest.raises(flight.FlightUnauthenticatedError):
                client.do_get(ticket, options).read_all()
            with pytest.raises(flight.FlightUnauthenticatedError):
                list(client.do_action(flight.Action("stats", b""), options))

        # The right bearer token: every call works, the data is exact.
        names = {".".join(p.decode() for p in i.descriptor.path) for i in client.list_flights(options=good)}
        assert {"public.devices", "public.metrics"} <= names
        assert_devices_exact(client.do_get(ticket, good).read_all(), pg)

    # The Python client's token argument.
    assert_devices_exact(hyperflight.read_table(s.url, "public.devices", token=TOKEN), pg)
    with pytest.raises(flight.FlightUnauthenticatedError):
        hyperflight.read_table(s.url, "public.devices")

    # Basic auth whose password is the token: Handshake hands back the bearer header.
    with flight.connect(s.url) as client:
        pair = client.authenticate_basic_token("anyone", TOKEN)
        assert tuple(pair) == (b"authorization", f"Bearer {TOKEN}".encode())
        assert_devices_exact(read_all_endpoints(client, DEVICES, flight.FlightCallOptions(headers=[pair])), pg)
    with flight.connect(s.url) as client:
        with pytest.raises(flight.FlightUnauthenticatedError):
            client.authenticate_basic_token("anyone", "wrong-password")
        with pytest.raises(flight.FlightUnauthenticatedError):
            client.authenticate_basic_token(TOKEN, "")  # the token as user name is not the password


# --- 3. TLS ----------------------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert done.returncode == 0, f"openssl {' '.join(args)}:\n{done.stdout}"


def make_ca_and_server_cert(dir: Path) -> Tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate it signs for 127.0.0.1 and localhost (P-256 keys).
    Returns (ca.pem, server.pem, server.key)."""
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=hyperflight test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=dir)
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost", cwd=dir)
    (dir / "server.ext").write_text(
        "subjectAltName = IP:127.0.0.1, DNS:localhost\n"
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature\n"
        "extendedKeyUsage = serverAuth\n"
    )
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "server.ext", cwd=dir)
    return dir / "ca.pem", dir / "server.pem", dir / "server.key"


def test_tls(server_factory, pg, tmp_path):
    # Fresh statistics, so the server's row estimate for devices is exact.
    pg.execute("ANALYZE public.devices")
    ca, cert, key = make_ca_and_server_cert(tmp_path)
    ca_pem = ca.read_bytes()
    s = server_factory("--tls-cert", str(cert), "--tls-key", str(key), tls_root_certs=ca_pem)
    port = s.url.rsplit(":", 1)[1]
    assert s.url == f"grpc+tls://127.0.0.1:{port}"

    # Trusting the CA: exact data, by IP and by host name (both are in the certificate).
    for host in ("127.0.0.1", "localhost"):
        with flight.connect(f"grpc+tls://{host}:{port}", tls_root_certs=ca_pem) as client:
            assert_devices_exact(read_all_endpoints(client, DEVICES), pg)
        # The package's own reader takes the CA too.
        table = hyperflight.read_table(
            f"grpc+tls://{host}:{port}", "public.devices", tls_root_certs=ca_pem
        )
        assert table.num_rows == 100

    # The call deadline bounds each failing call: neither hangs.
    short = flight.FlightCallOptions(timeout=5)
    # A plaintext client cannot talk to the TLS port.
    with flight.connect(f"grpc://127.0.0.1:{port}") as client:
        with pytest.raises((flight.FlightUnavailableError, flight.FlightTimedOutError)) as plain_err:
            client.get_flight_info(DEVICES, short)
    # A TLS client that does not trust the CA (system roots only) refuses the server's certificate.
    with flight.connect(s.url) as client:
        with pytest.raises(flight.FlightUnavailableError) as untrusted_err:
            client.get_flight_info(DEVICES, short)
    assert "handshake" in str(untrusted_err.value).lower(), untrusted_err.value
    print(f"\nplaintext client: {type(plain_err.value).__name__}: {str(plain_err.value)[:160]}"
          f"\nclient without the CA: {type(untrusted_err.value).__name__}: {str(untrusted_err.value)[:160]}")
    # The server is still serving TLS clients after those failed handshakes.
    with flight.connect(s.url, tls_root_certs=ca_pem) as client:
        assert client.get_flight_info(DEVICES).total_records == 100


# --- 4. memory budget and scan cap under load ------------------------------------------------------

CLIENTS = 16
MAX_MEMORY_MB = 64
MAX_SCANS = 2
# Fixed allowance on top of the budget: the scans' batches under construction (2 scans × one batch
# being decoded, before it is reserved) and tonic/h2 send buffers for 16 × 4 open streams.
FIXED_OVERHEAD_MB = 48

# Only this test's server: its sessions carry an application_name of their own, so the servers of
# other test sessions on the same cluster are not counted.
ACTIVE_COPIES_SQL = """
SELECT count(*) FROM pg_stat_activity
WHERE application_name = %s AND query LIKE 'COPY%%' AND state = 'active'
"""


def _status_kib(pid: int) -> Dict[str, int]:
    """VmRSS and VmHWM of a process, in KiB, from /proc/<pid>/status."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0])
    return out


class Sampler(threading.Thread):
    """Every ~50 ms: COPYs running for hyperflight (pg_stat_activity), the server's RSS, and the
    active_scans and memory_reserved_bytes gauges from /metrics. Keeps the maxima."""

    def __init__(self, database_url: str, application_name: str, pid: int, metrics_url: str):
        super().__init__(daemon=True)
        self.database_url, self.pid, self.metrics_url = database_url, pid, metrics_url
        self.application_name = application_name
        self.stop_event = threading.Event()
        self.error: Optional[BaseException] = None
        self.samples = 0
        self.max_copies = 0
        self.max_rss_kib = 0
        self.max_scans = 0.0
        self.max_reserved = 0.0
        self.max_streams = 0.0

    def run(self) -> None:
        try:
            with psycopg.connect(self.database_url, autocommit=True) as conn:
                while not self.stop_event.is_set():
                    tick = time.monotonic()
                    (copies,) = conn.execute(ACTIVE_COPIES_SQL, [self.application_name]).fetchone()
                    rss = _status_kib(self.pid)["VmRSS"]
                    m = scrape(self.metrics_url)
                    self.max_copies = max(self.max_copies, copies)
                    self.max_rss_kib = max(self.max_rss_kib, rss)
                    self.max_scans = max(self.max_scans, value(m, "hyperflight_active_scans"))
                    self.max_reserved = max(self.max_reserved, value(m, "hyperflight_memory_reserved_bytes"))
                    self.max_streams = max(self.max_streams, value(m, "hyperflight_active_streams"))
                    self.samples += 1
                    self.stop_event.wait(max(0.0, 0.05 - (time.monotonic() - tick)))
        except BaseException as exc:  # reported by the test
            self.error = exc


def released(samples: Samples) -> bool:
    """No stream, scan or memory reservation left on the server."""
    return all(value(samples, name) == 0 for name in (
        "hyperflight_active_streams", "hyperflight_active_scans", "hyperflight_memory_reserved_bytes"))


def test_memory_budget_and_scan_cap_under_16_concurrent_readers(server_factory, pg, database_url):
    application_name = unique_name("hyperflight_ops")
    s = server_factory("--max-memory-mb", str(MAX_MEMORY_MB), "--max-concurrent-chunks", str(MAX_SCANS),
                       "--batch-rows", "8192", application_name=application_name)
    # Warm the runtime, the pool and discovery with a tiny read; once it has released everything,
    # take the idle figure.
    assert hyperflight.read_table(s.url, "public.devices").num_rows == 100
    warm = wait_for_metrics(s.metrics_url, released)
    assert released(warm), warm
    idle_kib = _status_kib(s.pid)["VmRSS"]

    sql_rows, sql_sum = sql_one(pg, "SELECT count(*), sum(reading) FROM public.metrics")

    results: list = [None] * CLIENTS
    full: Dict[str, pa.Table] = {}

    def reader(i: int) -> None:
        try:
            t = hyperflight.read_table(s.url, "public.metrics", parallelism=4)
            results[i] = (t.num_rows, pc.sum(t["reading"]).as_py())
            if i == 0:
                full["table"] = t  # the others are dropped at once: the client has 2 cores too
        except BaseException as exc:
            results[i] = exc

    sampler = Sampler(database_url, application_name, s.pid, s.metrics_url)
    sampler.start()
    started = time.monotonic()
    threads = [threading.Thread(target=reader, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    elapsed = time.monotonic() - started
    sampler.stop_event.set()
    sampler.join(timeout=10)
    hwm_kib = _status_kib(s.pid)["VmHWM"]
    # The last stream may still be closing on the server when its reader has all the rows.
    after = wait_for_metrics(s.metrics_url, lambda m: released(m) and value(
        m, "hyperflight_rows_streamed_total") >= CLIENTS * sql_rows + 100)

    peak_kib = max(sampler.max_rss_kib, hwm_kib)
    limit_kib = idle_kib + (MAX_MEMORY_MB + FIXED_OVERHEAD_MB) * 1024
    print(f"\n{CLIENTS} readers × {sql_rows} rows in {elapsed:.1f} s, {sampler.samples} samples: "
          f"idle RSS {idle_kib / 1024:.1f} MiB, peak RSS sampled {sampler.max_rss_kib / 1024:.1f} MiB, "
          f"VmHWM {hwm_kib / 1024:.1f} MiB (limit {limit_kib / 1024:.1f} MiB = idle + "
          f"{MAX_MEMORY_MB} + {FIXED_OVERHEAD_MB}); max COPYs {sampler.max_copies}, "
          f"max active_scans {sampler.max_scans:.0f}, max memory_reserved_bytes "
          f"{sampler.max_reserved:.0f} ({sampler.max_reserved / MiB:.2f} MiB), "
          f"max active_streams {sampler.max_streams:.0f}")

    assert sampler.error is None, f"sampler failed: {sampler.error!r}"
    assert not any(t.is_alive() for t in threads), "readers still running after 120 s"
    for i, r in enumerate(results):
        assert not isinstance(r, BaseException), f"reader {i} failed: {r!r}"
        assert r == (sql_rows, sql_sum), f"reader {i}: (rows, sum(reading)) {r} != SQL {(sql_rows, sql_sum)}"

    # Every figure was taken while the load ran (64 DoGets queue for 2 slots for many seconds, some
    # hundred samples), and the load filled the scan slots without ever exceeding them: in the
    # database and in the gauge.
    assert sampler.samples >= 50, sampler.samples
    assert sampler.max_copies == MAX_SCANS, sampler.max_copies
    assert sampler.max_scans == MAX_SCANS, sampler.max_scans
    assert sampler.max_reserved <= MAX_MEMORY_MB * MiB, sampler.max_reserved
    assert peak_kib <= limit_kib, (
        f"peak RSS {peak_kib} KiB > idle {idle_kib} KiB + {MAX_MEMORY_MB} MiB budget + "
        f"{FIXED_OVERHEAD_MB} MiB overhead")
    # Everything was returned once the readers were done.
    assert value(after, "hyperflight_active_scans") == 0
    assert value(after, "hyperflight_active_streams") == 0
    assert value(after, "hyperflight_memory_reserved_bytes") == 0
    assert value(after, "hyperflight_rows_streamed_total") == CLIENTS * sql_rows + 100

    # One reader's rows, as a multiset, equal the table's rows in SQL.
    table = full["table"]
    cur = pg.cursor()
    cur.execute(f"SELECT {', '.join(table.schema.names)} FROM public.metrics")
    columns = list(zip(*cur.fetchall()))
    reference = pa.table(
        [pa.array(col, type=field.type) for col, field in zip(columns, table.schema)],
        schema=pa.schema([pa.field(f.name, f.type) for f in table.schema]),
    )
    keys = [("time", "ascending"), ("device_id", "ascending"), ("sensor", "ascending")]
    got = table.replace_schema_metadata(None).sort_by(keys)
    want = reference.sort_by(keys)
    assert got.num_rows == want.num_rows == sql_rows
    for name in table.schema.names:
        assert got[name].equals(want[name]), f"column {name} differs from SQL"
