"""hyperflight-airbyte against the Airbyte protocol models: every line it prints must validate.

The adapter binary is ``hyperflight-airbyte`` next to ``$HYPERFLIGHT_BIN`` (conftest.py). The catalog given to ``read`` is a
``ConfiguredAirbyteCatalog`` built from what ``discover`` printed.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
from airbyte_protocol.models import (
    AirbyteMessage,
    ConfiguredAirbyteCatalog,
    ConfiguredAirbyteStream,
    DestinationSyncMode,
    Status,
    SyncMode,
    TraceType,
    Type,
)
from airbyte_protocol.models import well_known_types as wkt

from conftest import TEST_ROWS, built_binary

# The payload key each message type must carry.
PAYLOAD = {
    Type.SPEC: "spec",
    Type.CONNECTION_STATUS: "connectionStatus",
    Type.CATALOG: "catalog",
    Type.RECORD: "record",
    Type.STATE: "state",
    Type.LOG: "log",
    Type.TRACE: "trace",
}


@pytest.fixture(scope="module")
def adapter() -> Path:
    return built_binary("hyperflight-airbyte")


@pytest.fixture(scope="module")
def config_file(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    url = urlparse(database_url)
    config = {
        "host": url.hostname, "port": url.port, "database": url.path.lstrip("/"),
        "username": url.username, "password": "unused-under-trust",
        "schemas": ["public"], "timescaledb_max_concurrent_chunks": 2,
    }
    path = tmp_path_factory.mktemp("airbyte") / "config.json"
    path.write_text(json.dumps(config))
    return path


def run(adapter: Path, *args: str, expect_code: int = 0) -> list[AirbyteMessage]:
    """Runs the adapter; parses and validates every stdout line as an AirbyteMessage."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYPERFLIGHT_")}
    done = subprocess.run([str(adapter), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, env=env, check=False)
    assert done.returncode == expect_code, done.stderr.decode(errors="replace")[-2000:]
    messages = []
    for line in done.stdout.decode().splitlines():
        message = AirbyteMessage.parse_raw(line)  # raises on any invalid line
        payload = PAYLOAD[message.type]
        assert getattr(message, payload) is not None, line[:300]
        others = [k for k in PAYLOAD.values() if k != payload and getattr(message, k) is not None]
        assert not others, line[:300]
        messages.append(message)
    return messages


def test_spec(adapter: Path) -> None:
    [message] = run(adapter, "spec")
    assert message.type == Type.SPEC
    props = message.spec.connectionSpecification["properties"]
    assert props["password"]["airbyte_secret"] is True
    for name in ("timescaledb_support", "timescaledb_chunk_discovery_interval_minutes",
                 "timescaledb_max_concurrent_chunks", "timescaledb_enable_chunk_caching",
                 "timescaledb_chunk_cache_ttl_minutes", "timescaledb_max_memory_mb"):
        assert "default" in props[name], name


def test_check(adapter: Path, config_file: Path) -> None:
    messages = run(adapter, "check", "--config", str(config_file))
    status = [m for m in messages if m.type == Type.CONNECTION_STATUS]
    assert [s.connectionStatus.status for s in status] == [Status.SUCCEEDED]


def test_check_failure_is_a_valid_status(adapter: Path, config_file: Path, tmp_path: Path) -> None:
    config = json.loads(config_file.read_text())
    config["database"] = "no_such_database"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(config))
    [status] = [m for m in run(adapter, "check", "--config", str(bad))
                if m.type == Type.CONNECTION_STATUS]
    assert status.connectionStatus.status == Status.FAILED
    assert "no_such_database" in status.connectionStatus.message


def test_discover_then_read(adapter: Path, config_file: Path, tmp_path: Path, pg) -> None:
    [catalog] = [m.catalog for m in run(adapter, "discover", "--config", str(config_file))
                 if m.type == Type.CATALOG]
    streams = {(s.namespace, s.name): s for s in catalog.streams}
    metrics, devices = streams[("public", "metrics")], streams[("public", "devices")]
    assert metrics.default_cursor_field == ["time"] and metrics.source_defined_cursor
    assert devices.source_defined_primary_key == [["device_id"]]

    configured = ConfiguredAirbyteCatalog(streams=[
        ConfiguredAirbyteStream(stream=metrics, sync_mode=SyncMode.incremental,
                                cursor_field=metrics.default_cursor_field,
                                destination_sync_mode=DestinationSyncMode.append),
        ConfiguredAirbyteStream(stream=devices, sync_mode=SyncMode.full_refresh,
                                destination_sync_mode=DestinationSyncMode.overwrite),
    ])
    catalog_file = tmp_path / "catalog.json"
    catalog_file.write_text(configured.json(exclude_none=True))

    messages = run(adapter, "read", "--config", str(config_file), "--catalog", str(catalog_file))
    records = [m.record for m in messages if m.type == Type.RECORD]
    devices_rows = pg.execute("SELECT count(*) FROM public.devices").fetchone()[0]
    assert len(records) == TEST_ROWS + devices_rows

    # Values follow the well-known types the discovered schema announces.
    for r in records[:2000]:
        if r.stream == "metrics":
            wkt.TimestampWithTimezone.parse_obj(r.data["time"])
        elif r.data["installed_at"] is not None:
            wkt.TimestampWithTimezone.parse_obj(r.data["installed_at"])

    # Per stream: STARTED first, COMPLETE last; STATE record counts add up to the records.
    for name, expected in (("metrics", TEST_ROWS), ("devices", devices_rows)):
        statuses = [m.trace.stream_status.status.value for m in messages
                    if m.type == Type.TRACE and m.trace.type == TraceType.STREAM_STATUS
                    and m.trace.stream_status.stream_descriptor.name == name]
        assert statuses[0] == "STARTED" and statuses[-1] == "COMPLETE", statuses
        states = [m.state for m in messages
                  if m.type == Type.STATE and m.state.stream.stream_descriptor.name == name]
        assert all(s.type.value == "STREAM" for s in states)
        assert sum(s.sourceStats.recordCount for s in states) == expected

    # The final incremental state resumes: a second read with it emits no metrics rows.
    [last] = [m.state for m in messages if m.type == Type.STATE
              and m.state.stream.stream_descriptor.name == "metrics"][-1:]
    state_file = tmp_path / "state.json"
    state_file.write_text(json.dumps([json.loads(last.json(exclude_none=True))]))
    again = run(adapter, "read", "--config", str(config_file), "--catalog", str(catalog_file),
                "--state", str(state_file))
    assert not [m for m in again if m.type == Type.RECORD and m.record.stream == "metrics"]


def test_read_failure_is_a_valid_trace(adapter: Path, config_file: Path, tmp_path: Path) -> None:
    config = json.loads(config_file.read_text())
    config["database"] = "no_such_database"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(config))
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"streams": [{
        "stream": {"name": "metrics", "namespace": "public", "json_schema": {},
                   "supported_sync_modes": ["full_refresh"]},
        "sync_mode": "full_refresh", "destination_sync_mode": "append"}]}))
    messages = run(adapter, "read", "--config", str(bad), "--catalog", str(catalog), expect_code=1)
    errors = [m.trace.error for m in messages if m.type == Type.TRACE and m.trace.type == TraceType.ERROR]
    assert len(errors) == 1
    assert errors[0].failure_type.value == "config_error"
    assert "no_such_database" in errors[0].message


def test_flight_url_over_tls_with_a_token(adapter: Path, server_factory, tmp_path: Path, pg) -> None:
    """``flight_url`` = ``grpc+tls://`` with ``flight_tls_root_certs`` (a private CA) and
    ``flight_token``: check, discover and read of a TLS server that requires a token; without the CA
    or the token, check FAILED saying why."""
    from test_ops import make_ca_and_server_cert

    token = "airbyte-tls-token"
    ca, cert, key = make_ca_and_server_cert(tmp_path)
    ca_pem = ca.read_bytes()
    s = server_factory("--tls-cert", str(cert), "--tls-key", str(key), "--auth-token", token,
                       token=token, tls_root_certs=ca_pem)
    assert s.url.startswith("grpc+tls://")
    good = {"flight_url": s.url, "flight_token": token, "flight_tls_root_certs": ca_pem.decode(),
            "schemas": ["public"]}

    def config(c: dict) -> str:
        path = tmp_path / f"config-{len(list(tmp_path.glob('config-*')))}.json"
        path.write_text(json.dumps(c))
        return str(path)

    good_file = config(good)
    [status] = [m for m in run(adapter, "check", "--config", good_file)
                if m.type == Type.CONNECTION_STATUS]
    assert status.connectionStatus.status == Status.SUCCEEDED, status.connectionStatus.message
    # (The refused token's message names no URL: the server answered, it is the token.)
    for bad, why in (({k: v for k, v in good.items() if k != "flight_tls_root_certs"},
                      [s.url, "certificate"]),
                     ({k: v for k, v in good.items() if k != "flight_token"}, ["token"])):
        [status] = [m for m in run(adapter, "check", "--config", config(bad))
                    if m.type == Type.CONNECTION_STATUS]
        assert status.connectionStatus.status == Status.FAILED
        message = status.connectionStatus.message
        assert all(w in message for w in why), message
        assert token not in message

    [catalog] = [m.catalog for m in run(adapter, "discover", "--config", good_file)
                 if m.type == Type.CATALOG]
    [devices] = [st for st in catalog.streams if (st.namespace, st.name) == ("public", "devices")]
    configured = ConfiguredAirbyteCatalog(streams=[ConfiguredAirbyteStream(
        stream=devices, sync_mode=SyncMode.full_refresh,
        destination_sync_mode=DestinationSyncMode.overwrite)])
    catalog_file = tmp_path / "catalog.json"
    catalog_file.write_text(configured.json(exclude_none=True))
    messages = run(adapter, "read", "--config", good_file, "--catalog", str(catalog_file))
    got = sorted((m.record.data["device_id"], m.record.data["name"]) for m in messages
                 if m.type == Type.RECORD)
    want = pg.execute("SELECT device_id, name FROM public.devices ORDER BY 1, 2").fetchall()
    assert got == [tuple(r) for r in want]
    assert all(token not in m.json() for m in messages)


def test_cdc_messages_validate_and_carry_the_changes(adapter: Path, config_file: Path, tmp_path: Path,
                                                     pg) -> None:
    """The CDC replication method: the copy, then an insert, an update and a delete, all as valid
    Airbyte messages (the GLOBAL STATE included), with the ``_ab_cdc_*`` columns."""
    name = f"hf_pycdc_{os.getpid()}"
    pg.execute(f"CREATE SCHEMA {name}")
    pg.execute(f"CREATE TABLE {name}.t (id int PRIMARY KEY, v text)")
    pg.execute(f"INSERT INTO {name}.t SELECT i, 'v' || i FROM generate_series(1, 50) i")
    pg.execute(f"CREATE PUBLICATION {name} FOR TABLE {name}.t")
    try:
        config = json.loads(config_file.read_text())
        config["schemas"] = [name]
        config["replication_method"] = {"method": "CDC", "replication_slot": name, "publication": name,
                                        "initial_waiting_seconds": 60}
        cdc_config = tmp_path / "cdc.json"
        cdc_config.write_text(json.dumps(config))
        [catalog] = [m.catalog for m in run(adapter, "discover", "--config", str(cdc_config))
                     if m.type == Type.CATALOG]
        [stream] = catalog.streams
        assert stream.supported_sync_modes == [SyncMode.incremental]
        assert stream.default_cursor_field == ["_ab_cdc_lsn"]
        configured = ConfiguredAirbyteCatalog(streams=[ConfiguredAirbyteStream(
            stream=stream, sync_mode=SyncMode.incremental, cursor_field=["_ab_cdc_lsn"],
            destination_sync_mode=DestinationSyncMode.append_dedup, primary_key=[["id"]])])
        catalog_file = tmp_path / "cdc-catalog.json"
        catalog_file.write_text(configured.json(exclude_none=True))

        def read(state: object | None) -> tuple[list, object]:
            args = ["read", "--config", str(cdc_config), "--catalog", str(catalog_file)]
            if state is not None:
                state_file = tmp_path / "cdc-state.json"
                # Without by_alias pydantic names the field global_.
                saved = json.loads(state.json(exclude_none=True, by_alias=True))
                state_file.write_text(json.dumps([saved]))
                args += ["--state", str(state_file)]
            messages = run(adapter, *args)
            states = [m.state for m in messages if m.type == Type.STATE]
            assert states and all(s.type.value == "GLOBAL" for s in states)
            return [m.record.data for m in messages if m.type == Type.RECORD], states[-1]

        copied, state = read(None)
        assert sorted(r["id"] for r in copied) == list(range(1, 51))
        lsn = state.global_.shared_state.lsn
        assert {r["_ab_cdc_lsn"] for r in copied} == {lsn}

        pg.execute(f"INSERT INTO {name}.t VALUES (51, 'new')")
        pg.execute(f"UPDATE {name}.t SET v = 'changed' WHERE id = 2")
        pg.execute(f"DELETE FROM {name}.t WHERE id = 3")
        changes, state = read(state)
        assert [(r["id"], r["v"], r["_ab_cdc_deleted_at"] is not None) for r in changes] == [
            (51, "new", False), (2, "changed", False), (3, None, True)]
        for r in changes:
            wkt.TimestampWithTimezone.parse_obj(r["_ab_cdc_updated_at"])
            assert lsn < r["_ab_cdc_lsn"] <= state.global_.shared_state.lsn
    finally:
        # The read's walsender exits a moment after the process.
        for _ in range(300):
            active = pg.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s AND active",
                                (name,)).fetchone()[0]
            if not active:
                break
            time.sleep(0.1)
        pg.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                   (name,))
        pg.execute(f"DROP PUBLICATION IF EXISTS {name}")
        pg.execute(f"DROP SCHEMA {name} CASCADE")
