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

log() { printf '[pyairbyte-env] %s\n' "$*" >&2; }

command -v "$PYTHON" >/dev/null || { log "$PYTHON not found"; exit 1; }
"$PYTHON" -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 12))' \
  || { log "$PYTHON is $("$PYTHON" -V 2>&1): PyAirbyte 0.71 needs Python 3.10 to 3.12"; exit 1; }

# shellcheck source=scripts/venv-lib.sh
source "$REPO/scripts/venv-lib.sh"
venv_open "$VENV" "$PYTHON" 1800 "" "$REQUIREMENTS" "${BASH_SOURCE[0]}" "$REPO/scripts/venv-lib.sh"

log "installing $(grep -m1 '^airbyte==' "$REQUIREMENTS") (a few minutes on a cold machine)"
# Every package is pinned (the whole set is listed): nothing else may come in.
"$VENV/bin/python" -m pip install -q --no-deps -r "$REQUIREMENTS" >&2
"$VENV/bin/python" -m pip check >&2
"$VENV/bin/python" -c 'import airbyte, airbyte.caches, duckdb' >&2
venv_close "$VENV"
