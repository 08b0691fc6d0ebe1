"""hyperflight-airbyte as Airbyte's tools see it: every RECORD against its stream's declared JSON
schema (Draft 7), the connector image files, and PyAirbyte end to end into its DuckDB cache.

Fixture tables: ``public.metrics`` and ``public.devices`` of the sample data, and a scratch schema of
this module's own with a hypertable holding float NaN and ±Infinity rows, a table of the types the
server emits (special values included), and a table whose name and columns need quoting.

PyAirbyte (the ``airbyte`` package) pins ``pydantic>=2``, ``duckdb==1.4.3`` and ``pyarrow<22``,
while the test extra holds ``airbyte-protocol-models`` (``pydantic<2``, test_airbyte.py): the two
cannot share one venv. So PyAirbyte runs in an interpreter of its own, driven by :data:`DRIVER`:
``$HYPERFLIGHT_PYAIRBYTE_PYTHON`` (``scripts/test.sh`` sets it), else the python of the venv that
``scripts/pyairbyte-env.sh`` creates or reuses (``clients/python/pyairbyte-requirements.txt``). These
tests are never skipped: a venv that cannot be made fails them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

import jsonschema
import psycopg
import pytest
import yaml

from conftest import REPO, built_binary, unique_name

AIRBYTE_DIR = REPO / "airbyte"

# Airbyte's well-known formats, with the ` BC` suffix they allow (what a destination parses).
FORMATS = {
    ("date", None): r"^\d{4,}-\d{2}-\d{2}( BC)?$",
    ("date-time", "timestamp_with_timezone"): r"^\d{4,}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z( BC)?$",
    ("date-time", "timestamp_without_timezone"): r"^\d{4,}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?( BC)?$",
    ("time", "time_without_timezone"): r"^\d{2}:\d{2}:\d{2}(\.\d+)?$",
    ("uuid", None): r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
}

SCRATCH_SQL = '''
CREATE SCHEMA {s};
CREATE TABLE {s}.readings (time timestamptz NOT NULL, id int4, v float8, r float4, vs float8[]);
SELECT create_hypertable('{s}.readings', 'time', chunk_time_interval => interval '1 day');
INSERT INTO {s}.readings VALUES
  ('2026-10-01 00:00:00+00', 1, 1.5, 2.5, '{{1,2}}'),
  ('2026-10-01 01:00:00+00', 2, 'NaN', 'NaN', '{{NaN,1}}'),
  ('2026-10-02 00:00:00+00', 3, 'Infinity', '-Infinity', NULL),
  ('2026-10-02 01:00:00+00', 4, '-Infinity', 'Infinity', '{{-Infinity}}'),
  ('2026-10-03 00:00:00+00', 5, NULL, NULL, '{{}}'),
  ('2026-10-03 01:00:00+00', 6, -0.0, 1e-38, '{{1e308}}');
CREATE TABLE {s}.types (
  id int4 PRIMARY KEY, b bool, i2 int2, i8 int8, f4 float4, f8 float8, num numeric(12,3),
  free numeric, t text, vc varchar(8), by bytea, u uuid, d date, tm time, ts timestamp,
  tstz timestamptz, iv interval, j json, jb jsonb, ia int4[], ta text[]);
INSERT INTO {s}.types VALUES
  (1, true, -32768, 9223372036854775807, 3.25, 0.1, 123456789.125, 1.5e-20, 'a"b\\c', 'vc', '\\x00ff',
   'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2026-10-01', '23:59:59.999999', '2026-10-01 12:00:00',
   '2026-10-01 12:00:00+00', '1 year 2 mons 3 days 04:05:06.5', '{{"k": [1, 2]}}', '{{"k": null}}',
   '{{1,NULL,3}}', '{{"x","y z"}}'),
  (2, false, 0, -1, 'NaN', 'Infinity', -0.001, 'NaN', '', '', '\\x', '00000000-0000-0000-0000-000000000000',
   'infinity', '00:00:00', '-infinity', 'infinity', '-1 day', '1', '[]', '{{}}', '{{}}'),
  (3, NULL, NULL, NULL, '-Infinity', 'NaN', NULL, '-Infinity', NULL, NULL, NULL, NULL,
   '0044-03-15', '24:00:00', '0001-01-01 00:00:00', '-infinity', NULL, NULL, NULL, NULL, NULL);
CREATE TABLE {s}.bc (id int4 PRIMARY KEY, d date, ts timestamp, tstz timestamptz);
INSERT INTO {s}.bc VALUES (1, '0044-03-15 BC', '0001-01-01 00:00:00 BC', '0001-12-31 23:59:59.5+00 BC'),
                          (2, '0001-01-01', '0001-01-01 00:00:00', '0001-01-01 00:00:00+00');
CREATE TABLE {s}."Odd ""Name""" ("Mixed Col" int4 PRIMARY KEY, "sp ace" text, "ünï" float8);
INSERT INTO {s}."Odd ""Name""" VALUES (1, 'one', 'NaN'), (2, 'two', 2.5), (3, NULL, NULL);
ANALYZE {s}.bc; ANALYZE {s}.readings; ANALYZE {s}.types; ANALYZE {s}."Odd ""Name""";
'''

# Float cells written as null by the adapter (and so listed in meta.changes): table → (id column,
# {id: fields}).
NULLED = {
    "readings": ("id", {2: {"v", "r", "vs"}, 3: {"v", "r"}, 4: {"v", "r", "vs"}}),
    "types": ("id", {2: {"f4", "f8", "d", "ts", "tstz"}, 3: {"f4", "f8", "tstz"}}),
    'Odd "Name"': ("Mixed Col", {1: {"ünï"}}),
    "bc": ("id", {}),
}


@pytest.fixture(scope="module")
def adapter() -> Path:
    return built_binary("hyperflight-airbyte")


@pytest.fixture(scope="module")
def scratch(database_url: str) -> Iterator[str]:
    """A schema of this module's own with the NaN, types and quoted-name tables."""
    schema = unique_name("airbyte_pyab")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(SCRATCH_SQL.format(s=schema))
        try:
            yield schema
        finally:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def source_config(database_url: str, schema: str) -> dict[str, Any]:
    url = urlparse(database_url)
    return {
        "host": url.hostname, "port": url.port, "database": url.path.lstrip("/"),
        "username": url.username, "password": "unused-under-trust", "schemas": [schema],
        "timescaledb_max_concurrent_chunks": 2,
    }


def run(adapter: Path, *args: str) -> list[dict]:
    """Runs the adapter; every stdout line is JSON."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYPERFLIGHT_")}
    done = subprocess.run([str(adapter), *args], capture_output=True, stdin=subprocess.DEVNULL,
                          env=env, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return [json.loads(line) for line in done.stdout.decode().splitlines()]


def discover_and_read(adapter: Path, config: dict, tmp_path: Path) -> tuple[list[dict], list[dict]]:
    """Discovers the config's streams and reads them all (full refresh): (streams, RECORD payloads)."""
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config))
    [catalog] = [m["catalog"] for m in run(adapter, "discover", "--config", str(config_file))
                 if m["type"] == "CATALOG"]
    streams = catalog["streams"]
    configured = {"streams": [{"stream": s, "sync_mode": "full_refresh",
                               "destination_sync_mode": "overwrite"} for s in streams]}
    catalog_file = tmp_path / "catalog.json"
    catalog_file.write_text(json.dumps(configured))
    messages = run(adapter, "read", "--config", str(config_file), "--catalog", str(catalog_file))
    errors = [m for m in messages if m["type"] == "TRACE" and m["trace"]["type"] == "ERROR"]
    assert not errors, errors
    return streams, [m["record"] for m in messages if m["type"] == "RECORD"]


def format_violations(schema: dict, data: dict) -> list[str]:
    """Strings of a formatted property that do not match Airbyte's well-known format."""
    bad = []
    for name, value in data.items():
        prop = schema["properties"][name]
        items = prop.get("items", {}) if isinstance(value, list) else None
        for v, p in ([(x, items) for x in value] if items is not None else [(value, prop)]):
            key = (p.get("format"), p.get("airbyte_type"))
            if isinstance(v, str) and key in FORMATS and not re.match(FORMATS[key], v):
                bad.append(f"{name}={v!r} is not {key}")
    return bad


@pytest.mark.parametrize("which", ["public", "scratch"])
def test_every_record_validates_against_its_stream_schema(
    adapter: Path, database_url: str, scratch: str, tmp_path: Path, pg, which: str
) -> None:
    schema_name = "public" if which == "public" else scratch
    streams, records = discover_and_read(adapter, source_config(database_url, schema_name), tmp_path)
    validators = {}
    for s in streams:
        jsonschema.Draft7Validator.check_schema(s["json_schema"])
        validators[s["name"]] = jsonschema.Draft7Validator(s["json_schema"])
    counts: dict[str, int] = {}
    violations = []
    for r in records:
        counts[r["stream"]] = counts.get(r["stream"], 0) + 1
        validator = validators[r["stream"]]
        errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(r["data"])]
        errors += format_violations(validator.schema, r["data"])
        if errors:
            violations.append((r["stream"], r["data"], errors))
        # Nothing nulled silently: every null the source made is a meta change, and only those.
        for change in r.get("meta", {}).get("changes", []):
            assert change == {"field": change["field"], "change": "NULLED",
                              "reason": "SOURCE_SERIALIZATION_ERROR"}, change
            field = r["data"][change["field"]]
            assert field is None or isinstance(field, list), change
    assert not violations, violations[:10]
    for s in streams:
        name = s["name"].replace('"', '""')
        want = pg.execute(f'SELECT count(*) FROM {schema_name}."{name}"').fetchone()[0]
        assert counts.get(s["name"], 0) == want, s["name"]
    if which == "public":
        return
    assert set(counts) == set(NULLED)
    for table, (key, expected) in NULLED.items():
        got = {r["data"][key]: {c["field"] for c in r.get("meta", {}).get("changes", [])}
               for r in records if r["stream"] == table}
        assert {k: v for k, v in got.items() if v} == expected, table
    # No float is ever a string: NaN and ±Infinity are nulls now.
    readings = {r["data"]["id"]: r["data"] for r in records if r["stream"] == "readings"}
    assert readings[2]["v"] is None and readings[2]["vs"] == [None, 1]
    assert readings[6]["vs"] == [1e308]


# --- The connector image files (airbyte/): what can be checked without an engine ---


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_connector_image_files_follow_airbyte_conventions() -> None:
    dockerfile = AIRBYTE_DIR / "Dockerfile"
    metadata = yaml.safe_load((AIRBYTE_DIR / "metadata.yaml").read_text())["data"]
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    lint = subprocess.run([hadolint, "--failure-threshold", "warning", str(dockerfile)],
                          capture_output=True, text=True, check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr

    steps = dockerfile_instructions(dockerfile)
    final = steps[max(i for i, (w, _) in enumerate(steps) if w == "FROM"):]
    env = " ".join(a for w, a in final if w == "ENV")
    entry_env = re.search(r"AIRBYTE_ENTRYPOINT=\"?([^\"\s]+)\"?", env)
    assert entry_env, "ENV AIRBYTE_ENTRYPOINT in the final stage"
    [entrypoint] = [json.loads(a) for w, a in final if w == "ENTRYPOINT"]
    assert entrypoint == [entry_env.group(1)], "ENTRYPOINT (exec form) is AIRBYTE_ENTRYPOINT"
    assert Path(entrypoint[0]).name == "hyperflight-airbyte"
    copied = [a for w, a in final if w == "COPY"]
    assert any(a.split()[-1] == entrypoint[0] and "hyperflight-airbyte" in a for a in copied), copied
    build = " ".join(a for w, a in steps if w == "RUN")
    # The main Dockerfile's cargo command (so a shared cache mount makes it a no-op), which builds
    # the connector among the workspace's binaries.
    assert "cargo build --release --locked --workspace --bins" in build
    assert "target/release/hyperflight-airbyte /out/" in build
    labels = dict(re.findall(r"([\w.]+)=\"?([^\"\s]+)\"?", " ".join(a for w, a in final if w == "LABEL")))
    assert labels["io.airbyte.name"] == metadata["dockerRepository"]
    assert labels["io.airbyte.version"] == metadata["dockerImageTag"]
    assert any(w == "USER" and a not in ("root", "0") for w, a in final), "runs as a non-root user"

    assert metadata["connectorType"] == "source"
    assert str(uuid.UUID(metadata["definitionId"])) == metadata["definitionId"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", metadata["dockerImageTag"])
    workspace = (REPO / "Cargo.toml").read_text()
    assert f'version = "{metadata["dockerImageTag"]}"' in workspace, "image tag = workspace version"
    assert metadata["dockerRepository"].endswith("/source-hyperflight")
    assert metadata["releaseStage"] in ("alpha", "beta", "generally_available", "custom")
    assert metadata["supportLevel"] in ("community", "certified")
    assert metadata["connectorSubtype"] == "database"
    assert metadata["name"] and metadata["documentationUrl"] and metadata["license"]
    assert metadata["tags"] and all(":" in t for t in metadata["tags"])


# --- PyAirbyte end to end ---

PYAIRBYTE_VERSION = "0.71.3"


@pytest.fixture(scope="module")
def pyairbyte_python() -> str:
    """The python of PyAirbyte's venv: ``$HYPERFLIGHT_PYAIRBYTE_PYTHON``, else
    ``scripts/pyairbyte-env.sh``'s (created on first use, a few minutes; then reused)."""
    python = os.environ.get("HYPERFLIGHT_PYAIRBYTE_PYTHON")
    if not python:
        done = subprocess.run(["bash", str(REPO / "scripts/pyairbyte-env.sh")], cwd=REPO,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
                              check=False, timeout=3600)
        if done.returncode != 0:
            pytest.fail(f"scripts/pyairbyte-env.sh exited {done.returncode}", pytrace=False)
        python = str(Path(done.stdout.strip()) / "bin/python")
    version = subprocess.run([python, "-c", "from importlib.metadata import version; print(version('airbyte'))"],
                             capture_output=True, text=True, check=False)
    assert version.stdout.strip() == PYAIRBYTE_VERSION, (python, version.stdout, version.stderr)
    return python

# Runs in PyAirbyte's interpreter: argv[1] is a JSON job, the result (JSON) goes to argv[2].
DRIVER = r"""
import json, os, sys
os.environ["AIRBYTE_OFFLINE_MODE"] = "1"
os.environ["DO_NOT_TRACK"] = "1"
import airbyte as ab
from airbyte.caches import DuckDBCache
import sqlalchemy

job = json.load(open(sys.argv[1]))
result = {}
source = ab.get_source("source-hyperflight", config=job["config"],
                       local_executable=job["executable"], install_if_missing=False)
try:
    source.check()
    result["check"] = "SUCCEEDED"
except Exception as e:  # the check's message, as PyAirbyte shows it
    result["check"] = f"FAILED: {e!r} {getattr(e, 'context', '')}"
if job.get("check_only"):
    json.dump(result, open(sys.argv[2], "w"))
    sys.exit(0)
result["streams"] = sorted(source.get_available_streams())
source.select_streams(job["streams"])
for stream, cursor in job.get("cursors", {}).items():
    source.set_cursor_key(stream, cursor)
cache = DuckDBCache(db_path=job["cache"], schema_name="main")
result["reads"] = []
for mode in job["reads"]:
    try:
        read = source.read(cache=cache, force_full_refresh=(mode == "full_refresh"))
        result["reads"].append({"mode": mode, "processed": read.processed_records,
                                "counts": {s: len(read[s]) for s in job["streams"]}})
    except Exception as e:
        result["reads"].append({"mode": mode, "error": repr(e)})
        break
result["sql"] = {}
with cache.get_sql_engine().connect() as c:
    for name, sql in job.get("sql", {}).items():
        try:
            result["sql"][name] = [[None if v is None else str(v) for v in row]
                                   for row in c.execute(sqlalchemy.text(sql)).fetchall()]
        except Exception as e:
            result["sql"][name] = repr(e)
json.dump(result, open(sys.argv[2], "w"))
"""


def pyairbyte(python: str, job: dict, tmp_path: Path) -> dict:
    job_file, result_file = tmp_path / "job.json", tmp_path / "result.json"
    job_file.write_text(json.dumps(job))
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYPERFLIGHT_")}
    done = subprocess.run([python, str(driver), str(job_file), str(result_file)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, check=False,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(result_file.read_text())


def decimal_text(v: Any) -> str | None:
    """A number as DuckDB's DECIMAL(38,9) text shows it."""
    return None if v is None else f"{Decimal(str(v)):.9f}"


def test_pyairbyte_reads_the_sample_tables_into_duckdb(
    adapter: Path, pyairbyte_python: str, database_url: str, tmp_path: Path, pg
) -> None:
    job = {
        "executable": str(adapter), "config": source_config(database_url, "public"),
        "cache": str(tmp_path / "cache.duckdb"), "streams": ["metrics", "devices"],
        # devices is a plain table: incremental needs a cursor the user picks.
        "cursors": {"devices": "installed_at"},
        "reads": ["full_refresh", "incremental", "incremental"],
        "sql": {
            "metrics": "SELECT count(*), sum(reading), sum(device_id), count(DISTINCT sensor), "
                       "strftime(min(time), '%Y-%m-%d %H:%M:%S.%f'), "
                       "strftime(max(time), '%Y-%m-%d %H:%M:%S.%f'), count(*) FILTER (WHERE ok), "
                       "sum(status) FROM main.metrics",
            "devices": "SELECT device_id, name, location, strftime(installed_at, '%Y-%m-%d %H:%M:%S.%f') "
                       "FROM main.devices ORDER BY device_id, _airbyte_extracted_at",
            "metrics_sums": "SELECT sum(temperature), sum(humidity) FROM main.metrics",
        },
    }
    result = pyairbyte(pyairbyte_python, job, tmp_path)
    assert result["check"] == "SUCCEEDED"
    assert {"metrics", "devices"} <= set(result["streams"])
    rows, devices = (pg.execute(f"SELECT count(*) FROM public.{t}").fetchone()[0]
                     for t in ("metrics", "devices"))
    full, first, second = result["reads"]
    assert "error" not in full and "error" not in first and "error" not in second, result["reads"]
    assert full["processed"] == rows + devices
    assert full["counts"] == {"metrics": rows, "devices": devices}
    # A full refresh sets no cursor: the first incremental read reads everything (appended to
    # metrics, which has no primary key; merged into devices by its key), the next one nothing.
    assert first["processed"] == rows + devices
    assert second["processed"] == 0
    assert second["counts"] == {"metrics": 2 * rows, "devices": devices}

    want = pg.execute(
        "SELECT count(*), sum(reading), sum(device_id), count(DISTINCT sensor), "
        "to_char(min(time) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), "
        "to_char(max(time) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), "
        "count(*) FILTER (WHERE ok), sum(status) FROM public.metrics").fetchone()
    got = result["sql"]["metrics"][0]
    doubled = [2 * int(want[0]), 2 * int(want[1]), 2 * int(want[2]), int(want[3]), want[4], want[5],
               2 * int(want[6]), 2 * int(want[7])]
    assert [int(got[0]), int(got[1]), int(got[2]), int(got[3]), got[4], got[5], int(got[6]),
            int(got[7])] == doubled
    want_devices = [[str(d), n, loc, None if t is None else t]
                    for d, n, loc, t in pg.execute(
                        "SELECT device_id, name, location, "
                        "to_char(installed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') "
                        "FROM public.devices ORDER BY device_id").fetchall()]
    assert result["sql"]["devices"] == want_devices
    # float64 → DECIMAL(38,9) (see the number limits below): sums agree to 1e-3.
    want_sum = pg.execute("SELECT sum(temperature)::numeric, sum(humidity::float8)::numeric "
                          "FROM public.metrics").fetchone()
    for want, got in zip(want_sum, result["sql"]["metrics_sums"][0]):
        assert abs(Decimal(got) - 2 * want) < Decimal("1e-3"), (want, got)


def test_pyairbyte_reads_nan_types_and_quoted_names(
    adapter: Path, pyairbyte_python: str, database_url: str, scratch: str, tmp_path: Path, pg
) -> None:
    streams = ["readings", "types", 'Odd "Name"']
    job = {
        "executable": str(adapter), "config": source_config(database_url, scratch),
        "cache": str(tmp_path / "cache.duckdb"), "streams": streams,
        "cursors": {"types": "id", 'Odd "Name"': "Mixed Col"},
        "reads": ["full_refresh", "incremental", "incremental"],
        "sql": {
            "readings": "SELECT id, v, r, _airbyte_meta FROM main.readings "
                        "ORDER BY id, _airbyte_extracted_at",
            "types": "SELECT id, b, i2, i8, f8, num, free, t, d, ts, tstz, u, j FROM main.types "
                     "ORDER BY id, _airbyte_extracted_at",
            "tables": "SELECT table_name FROM information_schema.tables ORDER BY 1",
        },
    }
    result = pyairbyte(pyairbyte_python, job, tmp_path)
    assert result["check"] == "SUCCEEDED"
    assert set(streams) <= set(result["streams"])
    counts = {t: pg.execute(f'SELECT count(*) FROM {scratch}."{t.replace(chr(34), 2 * chr(34))}"')
              .fetchone()[0] for t in streams}
    full, first, second = result["reads"]
    assert "error" not in full and "error" not in first and "error" not in second, result["reads"]
    assert full["counts"] == counts
    assert first["processed"] == sum(counts.values())
    assert second["processed"] == 0
    # NaN and ±Infinity arrive as NULL.
    by_id = {int(row[0]): row for row in result["sql"]["readings"]}
    assert by_id[1][1:3] == ["1.500000000", "2.500000000"]
    for i in (2, 3, 4):
        assert by_id[i][1] is None and by_id[i][2] is None
        # (PyAirbyte 0.71 keeps none of the record's meta.changes: its _airbyte_meta is {}.)
    types = {int(row[0]): row for row in result["sql"]["types"]}
    assert types[1][1:6] == ["True", "-32768", "9223372036854775807", "0.100000000",
                             "123456789.125000000"]
    assert types[1][6] == "0.000000000000000000015" and types[1][7] == 'a"b\\c'  # unconstrained numeric: text
    assert types[2][4] is None  # float8 Infinity
    assert types[2][8] is None and types[2][9] is None  # date infinity, timestamp -infinity
    assert types[1][11] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    # The quoted name is a table of its own in the cache.
    assert any("odd" in t[0].lower() for t in result["sql"]["tables"]), result["sql"]["tables"]


def test_pyairbyte_shows_why_check_failed(
    adapter: Path, pyairbyte_python: str, database_url: str, tmp_path: Path
) -> None:
    config = source_config(database_url, "public") | {"database": "no_such_database"}
    result = pyairbyte(pyairbyte_python,
                       {"executable": str(adapter), "config": config, "check_only": True}, tmp_path)
    assert result["check"].startswith("FAILED")
    assert 'database \\"no_such_database\\" does not exist' in result["check"] \
        or 'database "no_such_database" does not exist' in result["check"], result["check"]


# What PyAirbyte's DuckDB cache itself cannot hold. It parses each RECORD's JSON numbers as Python
# floats (float64) and stores `number` as DECIMAL(38,9), converting the float: a value keeps about
# 16 significant digits (the rest is the conversion's noise) and at most 9 fraction digits. The exact
# limit: a number loads when its float64 is below 1e29 in magnitude. The largest that loads is the
# float64 9.999999999999997e28 (99999999999999973840964812800, either sign); the next float64 up,
# the one nearest 1e29 (99999999999999991433150857216), fails the stream's load, as do a float4 of
# 3.4e38 and timestamps before year 1 (Airbyte's "... BC" form; BC dates load). The README's
# Airbyte section quotes these.
LIMIT_SQL = """
CREATE SCHEMA {s};
CREATE TABLE {s}.fits (id int4 PRIMARY KEY, n numeric(38,9), f numeric(38,10));
INSERT INTO {s}.fits VALUES (1, 1e28, 0.1234567891),
                            (2, 12345678901234567890.123456789, 1.0000000005),
                            (3, 9007199254740993, 0.5),
                            (4, 1e20, -0.000000001),
                            (5, 99999999999999973840964812800, 0),
                            (6, -99999999999999973840964812800, 0);
CREATE TABLE {s}.too_big (id int4 PRIMARY KEY, n numeric(38,9));
INSERT INTO {s}.too_big VALUES (1, 99999999999999991433150857216);
CREATE TABLE {s}.float_too_big (id int4 PRIMARY KEY, x float4);
INSERT INTO {s}.float_too_big VALUES (1, 3.4e38);
CREATE TABLE {s}.bc (id int4 PRIMARY KEY, ts timestamp);
INSERT INTO {s}.bc VALUES (1, '0001-01-01 00:00:00 BC');
"""


def test_pyairbyte_duckdb_cache_number_limits(
    adapter: Path, pyairbyte_python: str, database_url: str, tmp_path: Path
) -> None:
    schema = unique_name("airbyte_limits")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(LIMIT_SQL.format(s=schema))
        try:
            config = source_config(database_url, schema)
            base = {"executable": str(adapter), "config": config, "reads": ["full_refresh"]}
            fits = pyairbyte(pyairbyte_python,
                             base | {"cache": str(tmp_path / "a.duckdb"), "streams": ["fits"],
                                     "sql": {"fits": "SELECT id, n, f FROM main.fits ORDER BY id"}},
                             tmp_path)
            assert "error" not in fits["reads"][0], fits["reads"]
            assert fits["sql"]["fits"] == [
                ["1", "9999999999999999538762658202.121142272", "0.123456789"],
                ["2", "12345678901234568227.576610816", "1.000000001"],
                ["3", "9007199254740992.000000000", "0.500000000"],
                ["4", "99999999999999991433.150857216", "-1E-9"],
                ["5", "99999999999999978859343891977.453174784", "0E-9"],
                ["6", "-99999999999999978859343891977.453174784", "0E-9"],
            ], fits["sql"]["fits"]
            for table in ("too_big", "float_too_big", "bc"):
                r = pyairbyte(pyairbyte_python,
                              base | {"cache": str(tmp_path / f"{table}.duckdb"), "streams": [table]},
                              tmp_path)
                assert "error" in r["reads"][0], (table, r["reads"])
        finally:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
