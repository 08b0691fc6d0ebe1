#!/usr/bin/env bash
# Creates or updates the venv of PyAirbyte (default <repo>/.venv-pyairbyte, or
# $HYPERFLIGHT_PYAIRBYTE_VENV) from clients/python/pyairbyte-requirements.txt, for
# clients/python/tests/test_pyairbyte.py. It cannot be the project venv (scripts/python-env.sh):
# PyAirbyte's pins conflict with the test extra's airbyte-protocol-models.
# pip runs only when the requirements, this script or the interpreter changed since the last success
# (a stamp file in the venv), so calling it before every test run costs a fraction of a second.
# Prints the venv path on stdout; use "$(scripts/pyairbyte-env.sh)/bin/python".
# $HYPERFLIGHT_PYTHON picks the interpreter that creates the venv (default python3; PyAirbyte 0.71
# needs 3.10 to 3.12).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${HYPERFLIGHT_PYAIRBYTE_VENV:-$REPO/.venv-pyairbyte}
PYTHON=${HYPERFLIGHT_PYTHON:-python3}
REQUIREMENTS=$REPO/clients/python/pyairbyte-requirements.txt
STAMP=$VENV/.hyperflight-stamp

log() { printf '[pyairbyte-env] %s\n' "$*" >&2; }

command -v "$PYTHON" >/dev/null || { log "$PYTHON not found"; exit 1; }
"$PYTHON" -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 12))' \
  || { log "$PYTHON is $("$PYTHON" -V 2>&1): PyAirbyte 0.71 needs Python 3.10 to 3.12"; exit 1; }

# Concurrent callers (parallel CI steps, test sessions) must not run pip into the same venv at once.
mkdir -p "$VENV"
exec 9>>"$VENV/.lock"
flock -w 1800 9 || { log "timed out waiting for $VENV/.lock"; exit 1; }

want=$( { "$PYTHON" -c 'import sys; print(sys.version)'; cat "$REQUIREMENTS" "${BASH_SOURCE[0]}"; } \
  | sha256sum | cut -d' ' -f1)
if [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ]; then
  echo "$VENV"; exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating venv in $VENV"
  if ! "$PYTHON" -m venv "$VENV" >&2; then
    # Debian's system python3 ships venv separately.
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
      log "installing python3-venv"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
      "$PYTHON" -m venv "$VENV" >&2
    else
      exit 1
    fi
  fi
fi

log "installing $(grep -m1 '^airbyte==' "$REQUIREMENTS") (a few minutes on a cold machine)"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
"$VENV/bin/python" -m pip install -q --upgrade pip >&2
# Every package is pinned (the whole set is listed): nothing else may come in.
"$VENV/bin/python" -m pip install -q --no-deps -r "$REQUIREMENTS" >&2
"$VENV/bin/python" -m pip check >&2
"$VENV/bin/python" -c 'import airbyte, airbyte.caches, duckdb' >&2
echo "$want" >"$STAMP"
echo "$VENV"
