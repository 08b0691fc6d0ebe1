#!/usr/bin/env bash
# Creates or updates the project's Python venv (default <repo>/.venv, or $HYPERFLIGHT_VENV) with
# clients/python installed editable plus its dev extras (tests and benchmark drivers).
# pip runs only when pyproject.toml, this script or the interpreter changed since the last success
# (a stamp file in the venv), so calling it before every test run costs a fraction of a second.
# Prints the venv path on stdout; use "$(scripts/python-env.sh)/bin/python".
# $HYPERFLIGHT_PYTHON picks the interpreter that creates the venv (default python3, >= 3.9).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${HYPERFLIGHT_VENV:-$REPO/.venv}
PYTHON=${HYPERFLIGHT_PYTHON:-python3}
PKG=$REPO/clients/python
STAMP=$VENV/.hyperflight-stamp

log() { printf '[python-env] %s\n' "$*" >&2; }

command -v "$PYTHON" >/dev/null || { log "$PYTHON not found"; exit 1; }
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 9))' \
  || { log "$PYTHON is older than 3.9"; exit 1; }

# Concurrent callers (parallel CI steps, test sessions) must not run pip into the same venv at once.
mkdir -p "$VENV"
exec 9>>"$VENV/.lock"
flock -w 900 9 || { log "timed out waiting for $VENV/.lock"; exit 1; }

want=$( { "$PYTHON" -c 'import sys; print(sys.version)'; cat "$PKG/pyproject.toml" "${BASH_SOURCE[0]}"; } \
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

log "installing clients/python[dev] (editable)"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
"$VENV/bin/python" -m pip install -q --upgrade pip >&2
"$VENV/bin/python" -m pip install -q -e "${PKG}[dev]" >&2
echo "$want" >"$STAMP"
echo "$VENV"
