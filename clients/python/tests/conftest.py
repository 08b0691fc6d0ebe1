"""Fixtures: the local TimescaleDB cluster with test data, and a hyperflight server over it.

The server binary is ``$HYPERFLIGHT_BIN`` (default ``<repo>/target/debug/hyperflight``); a missing
binary fails the session: these tests exist to check the real server.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator, Optional

import psycopg
import pytest

import hyperflight

REPO = Path(__file__).resolve().parents[3]
TEST_DB = "hyperflight_test"
TEST_ROWS = 200_000
TEST_DAYS = 7
STARTUP_TIMEOUT_S = 60


def _run(*args: str) -> str:
    done = subprocess.run(args, cwd=REPO, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited {done.returncode}", pytrace=False)
    return done.stdout.strip()


@pytest.fixture(scope="session")
def database_url() -> str:
    """postgres:// URL of the test database, loaded with the sample data (once per data set)."""
    base = _run(str(REPO / "scripts/cluster.sh"), "start").rsplit("/", 1)[0]
    _run(
        str(REPO / "scripts/load-sample-data.sh"),
        "--database", TEST_DB, "--rows", str(TEST_ROWS), "--days", str(TEST_DAYS), "--if-missing",
    )
    return f"{base}/{TEST_DB}"


@pytest.fixture(scope="session")
def pg(database_url: str) -> Iterator[psycopg.Connection]:
    """A psycopg connection to the test database, in UTC, autocommit."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        yield conn


@pytest.fixture(scope="session")
def server(database_url: str) -> Iterator[str]:
    """grpc:// URL of a hyperflight server started for this session and stopped after it; its log is
    kept in ``.hyperflight/pytest-server.log`` for post-mortems."""
    s = start_server(database_url, "--batch-rows", "4096", name="server", metrics=False)
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
    name: str = "ops",
    token: Optional[str] = None,
    tls_root_certs: Optional[bytes] = None,
    metrics: bool = True,
) -> ServerProcess:
    """Starts the server binary on a free port with ``flags`` and waits until DoAction health answers
    (with ``token`` and over TLS with ``tls_root_certs`` when given). ``metrics`` serves /metrics on a
    free port too; otherwise it is disabled, so the default 127.0.0.1:9469 is never contended. The log
    is ``.hyperflight/pytest-<name>.log``. The caller stops the server (``stop()``)."""
    binary = Path(os.environ.get("HYPERFLIGHT_BIN", REPO / "target/debug/hyperflight"))
    if not binary.is_file():
        pytest.fail(f"server binary {binary} is missing: run `cargo build --bin hyperflight` "
                    "or set HYPERFLIGHT_BIN", pytrace=False)
    port = free_port()
    url = f"grpc{'+tls' if tls_root_certs is not None else ''}://127.0.0.1:{port}"
    metrics_port = free_port() if metrics else None
    # Our own HYPERFLIGHT_* variables (BIN, VENV, ...) and any a developer exported would otherwise
    # be read as server settings.
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYPERFLIGHT_")}
    env.setdefault("RUST_LOG", "info")
    log_path = REPO / ".hyperflight" / f"pytest-{name}.log"
    log_path.parent.mkdir(exist_ok=True)
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
def server_factory(database_url: str, request) -> Iterator:
    """``server_factory(*flags, **kw)`` starts a server of this test's own (see :func:`start_server`);
    every server it started is stopped when the test ends, whatever the outcome."""
    started: list = []

    def factory(*flags: str, **kw) -> ServerProcess:
        kw.setdefault("name", f"ops-{request.node.name}")
        s = start_server(database_url, *flags, **kw)
        started.append(s)
        return s

    try:
        yield factory
    finally:
        for s in started:
            s.stop()
