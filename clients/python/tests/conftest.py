"""Fixtures: the local TimescaleDB cluster with test data, and a hyperflight server over it.

The binaries are ``$HYPERFLIGHT_BIN`` (the server) and its siblings ``hyperflight-airbyte`` and
``hyperflight-loadtest`` in the same folder, as ``scripts/test.sh`` builds and sets them. There is no
default: a binary left over from an older build would be tested instead of the code at hand. A
missing one fails the session: these tests exist to check the real binaries.

PostgreSQL's own tools run through ``scripts/cluster.sh psql`` only (its ``$HYPERFLIGHT_PG_BIN``),
never from ``PATH``. Several test sessions may share the cluster at once: the sample data in
``hyperflight_test`` is loaded once and only read; what a test creates gets a name of its own
(:func:`unique_name`) and is dropped when the test ends.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator, Optional

import psycopg
import pytest

import hyperflight

REPO = Path(__file__).resolve().parents[3]
# A venv shared between clones (CI keeps one outside the clone) could import another clone's client:
# these tests would then check that code instead of the code at hand.
if not Path(hyperflight.__file__).resolve().is_relative_to(REPO / "clients/python"):
    raise ImportError(f"hyperflight is imported from {hyperflight.__file__}, not from {REPO}: run scripts/python-env.sh")
TEST_DB = "hyperflight_test"
TEST_ROWS = 200_000
TEST_DAYS = 7
STARTUP_TIMEOUT_S = 60


def _run(*args: str) -> str:
    done = subprocess.run(args, cwd=REPO, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited {done.returncode}", pytrace=False)
    return done.stdout.strip()


def built_binary(name: str) -> Path:
    """``name`` (``hyperflight``, ``hyperflight-airbyte``, ``hyperflight-loadtest``) from the folder
    of ``$HYPERFLIGHT_BIN``."""
    server = os.environ.get("HYPERFLIGHT_BIN")
    if not server:
        pytest.fail("HYPERFLIGHT_BIN is not set: run scripts/test.sh, or build with "
                    "`cargo build --workspace --bins` and set HYPERFLIGHT_BIN=<target>/debug/hyperflight",
                    pytrace=False)
    path = Path(server).with_name(name)
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `cargo build --workspace --bins`", pytrace=False)
    return path


def unique_name(prefix: str) -> str:
    """A database or schema name no other test session uses: ``prefix``, our pid and a random tag."""
    return f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"


def psql(database: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``psql -X -q -v ON_ERROR_STOP=1 -d database args...`` through ``scripts/cluster.sh psql``."""
    done = subprocess.run(
        [str(REPO / "scripts/cluster.sh"), "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", database, *args],
        cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, text=True,
    )
    if check and done.returncode != 0:
        pytest.fail(f"psql -d {database} {' '.join(args)} exited {done.returncode}:\n{done.stderr}",
                    pytrace=False)
    return done


@pytest.fixture(scope="session")
def cluster_url() -> str:
    """postgres://…:PORT (no database) of the running cluster, started if needed."""
    return _run(str(REPO / "scripts/cluster.sh"), "start").rsplit("/", 1)[0]


@pytest.fixture(scope="session")
def database_url(cluster_url: str) -> str:
    """postgres:// URL of the test database, loaded with the sample data (once per data set)."""
    _run(
        str(REPO / "scripts/load-sample-data.sh"),
        "--database", TEST_DB, "--rows", str(TEST_ROWS), "--days", str(TEST_DAYS), "--if-missing",
    )
    return f"{cluster_url}/{TEST_DB}"


@pytest.fixture
def scratch_database(cluster_url: str) -> Iterator[str]:
    """The name of an empty database of this test's own, dropped when the test ends."""
    name = unique_name("hyperflight_scratch")
    with psycopg.connect(f"{cluster_url}/postgres", autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
        try:
            yield name
        finally:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def pg(database_url: str) -> Iterator[psycopg.Connection]:
    """A psycopg connection to the test database, in UTC, autocommit."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        yield conn


@pytest.fixture(scope="session")
def server_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where this session's servers log: under pytest's base temp dir, which keeps the last few
    sessions for post-mortems and is never shared by two sessions."""
    return tmp_path_factory.mktemp("server-logs")


@pytest.fixture(scope="session")
def server(database_url: str, server_logs: Path) -> Iterator[str]:
    """grpc:// URL of a hyperflight server started for this session and stopped after it; its log is
    ``server.log`` in :func:`server_logs`."""
    s = start_server(database_url, "--batch-rows", "4096", name="server", metrics=False, log_dir=server_logs)
    try:
        yield s.url
    finally:
        s.stop()


# --- Servers: the session's, and those of a test's own (test_ops.py), each with its own flags, port
# and log, always stopped ---


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A hyperflight server process started by :func:`start_server`."""

    def __init__(self, proc: subprocess.Popen, url: str, metrics_url: Optional[str], log_path: Path, log):
        self.proc = proc
        self.pid = proc.pid
        self.url = url
        self.metrics_url = metrics_url  # http://127.0.0.1:PORT/metrics, or None
        self.log_path = log_path
        self._log = log

    def log_tail(self, chars: int = 4000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._log.closed:
            self._log.close()


def start_server(
    database_url: str,
    *flags: str,
    log_dir: Path,
    name: str = "ops",
    token: Optional[str] = None,
    tls_root_certs: Optional[bytes] = None,
    metrics: bool = True,
    application_name: Optional[str] = None,
    port: Optional[int] = None,
) -> ServerProcess:
    """Starts the server binary on a free port with ``flags`` and waits until DoAction health answers
    (with ``token`` and over TLS with ``tls_root_certs`` when given). ``metrics`` serves /metrics on a
    free port too; otherwise it is disabled, so the default 127.0.0.1:9469 is never contended.
    ``application_name`` names the server's database sessions, which tells them apart in
    ``pg_stat_activity`` from those of every other server on the cluster. The log is
    ``<log_dir>/<name>.log``. ``port`` reuses a port (a restart); by default a free one is taken. The
    caller stops the server (``stop()``)."""
    binary = built_binary("hyperflight")
    port = port or free_port()
    url = f"grpc{'+tls' if tls_root_certs is not None else ''}://127.0.0.1:{port}"
    metrics_port = free_port() if metrics else None
    # Our own HYPERFLIGHT_* variables (BIN, VENV, ...) and any a developer exported would otherwise
    # be read as server settings.
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYPERFLIGHT_")}
    env.setdefault("RUST_LOG", "info")
    if application_name is not None:
        database_url += ("&" if "?" in database_url else "?") + f"application_name={application_name}"
    log_path = log_dir / f"{name}.log"
    log = open(log_path, "w")
    args = [str(binary), "serve", "--database-url", database_url, "--listen", f"127.0.0.1:{port}",
            "--metrics-listen", f"127.0.0.1:{metrics_port}" if metrics_port else "", *flags]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = ServerProcess(proc, url, f"http://127.0.0.1:{metrics_port}/metrics" if metrics_port else None,
                           log_path, log)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            server.stop()
            pytest.fail(f"server exited with {proc.returncode} at startup:\n{server.log_tail()}", pytrace=False)
        try:
            hyperflight.do_action(url, "health", token=token, timeout=2, tls_root_certs=tls_root_certs)
            return server
        except Exception as exc:  # not listening yet, or not healthy yet
            if time.monotonic() > deadline:
                server.stop()
                pytest.fail(f"server not healthy after {STARTUP_TIMEOUT_S}s ({exc}):\n{server.log_tail()}",
                            pytrace=False)
            time.sleep(0.1)


@pytest.fixture
def server_factory(database_url: str, server_logs: Path, request) -> Iterator:
    """``server_factory(*flags, database=URL, **kw)`` starts a server of this test's own (see
    :func:`start_server`), over the test database unless ``database`` names another;
    every server it started is stopped when the test ends, whatever the outcome."""
    started: list = []

    def factory(*flags: str, database: Optional[str] = None, **kw) -> ServerProcess:
        kw.setdefault("name", f"ops-{request.node.name}-{len(started)}")
        kw.setdefault("log_dir", server_logs)
        s = start_server(database or database_url, *flags, **kw)
        started.append(s)
        return s

    try:
        yield factory
    finally:
        for s in started:
            s.stop()
