#!/usr/bin/env bash
# The whole test suite: Rust unit and integration tests (cargo nextest) and the Python client tests
# (pytest), all against the project's own TimescaleDB cluster (scripts/cluster.sh). Installs what is
# missing first: TimescaleDB when run as root, the Python venvs always (the project's and PyAirbyte's,
# scripts/python-env.sh and scripts/pyairbyte-env.sh). Both suites run even if the
# first fails; the exit code is non-zero if either did.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
log() { printf '[test] %s\n' "$*" >&2; }

if [ "$(id -u)" -eq 0 ]; then
  bash scripts/install-timescaledb.sh
  # The SSH tunnel tests start their own sshd on a loopback port (never the system's service).
  if [ ! -x /usr/sbin/sshd ]; then
    log "installing openssh-server (for the SSH tunnel tests)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openssh-server >/dev/null
  fi
  # The Spark data source test (test_fleet.py) runs PySpark, which needs a JVM.
  if ! command -v java >/dev/null; then
    log "installing openjdk-17-jre-headless (for the Spark test)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openjdk-17-jre-headless >/dev/null
  fi
elif ! ls /usr/lib/postgresql/15/lib/timescaledb-*.so >/dev/null 2>&1; then
  log "TimescaleDB is not installed: run 'sudo scripts/install-timescaledb.sh' once"; exit 1
fi
log "cluster: $(bash scripts/cluster.sh start)"
VENV=$(bash scripts/python-env.sh)
# PyAirbyte (test_pyairbyte.py) cannot share that venv: a second one, created once and then reused.
PYAIRBYTE_VENV=$(bash scripts/pyairbyte-env.sh)

log "building"
cargo build --workspace --bins
TARGET_DIR=$(scripts/target-dir.sh)
export HYPERFLIGHT_BIN="$TARGET_DIR/debug/hyperflight"
export HYPERFLIGHT_PYAIRBYTE_PYTHON="$PYAIRBYTE_VENV/bin/python"

status=0
log "Rust tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast || status=1
else
  cargo test --workspace --no-fail-fast || status=1
fi
log "Python tests"
"$VENV/bin/python" -m pytest clients/python/tests -q -p no:cacheprovider || status=1

if [ "$status" -ne 0 ]; then log "FAILED"; else log "all tests passed"; fi
exit "$status"
