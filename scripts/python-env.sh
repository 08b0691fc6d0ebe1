#!/usr/bin/env bash
# Creates or updates the project's Python venv (default <repo>/.venv, or $HYPERFLIGHT_VENV) with
# clients/python installed editable plus its dev extras (tests and benchmark drivers).
# pip runs only when pyproject.toml, this script, the interpreter or the clone's path changed since
# the last success (a stamp file in the venv), so calling it before every test run costs a fraction
# of a second.
# Prints the venv path on stdout; use "$(scripts/python-env.sh)/bin/python".
# $HYPERFLIGHT_PYTHON picks the interpreter that creates the venv (default python3, >= 3.9).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${HYPERFLIGHT_VENV:-$REPO/.venv}
PYTHON=${HYPERFLIGHT_PYTHON:-python3}
PKG=$REPO/clients/python

log() { printf '[python-env] %s\n' "$*" >&2; }

command -v "$PYTHON" >/dev/null || { log "$PYTHON not found"; exit 1; }
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 9))' \
  || { log "$PYTHON is older than 3.9"; exit 1; }

# shellcheck source=scripts/venv-lib.sh
source "$REPO/scripts/venv-lib.sh"
venv_open "$VENV" "$PYTHON" 900 "$PKG" "$PKG/pyproject.toml" "${BASH_SOURCE[0]}" "$REPO/scripts/venv-lib.sh"

log "installing clients/python[dev] (editable)"
"$VENV/bin/python" -m pip install -q -e "${PKG}[dev]" >&2
venv_close "$VENV"
