# Sourced by python-env.sh and pyairbyte-env.sh: what both venvs share.
# `venv_open VENV PYTHON WAIT KEY FILE...` takes the venv's lock, waiting at most WAIT seconds
# (concurrent callers must not run pip into it at once). When the stamp says the interpreter, KEY and
# FILEs are unchanged since the last success, it prints the venv and exits the calling script;
# otherwise it creates the venv if missing, upgrades pip and returns, with the new stamp in WANT. The
# caller then installs and runs `venv_close VENV`. Needs log() and `set -e`.
# KEY: what the install depends on besides the files; an editable install's source directory, since
# a venv outside the clone (CI's) outlives the clone it was installed from.

venv_open() {
  local venv=$1 python=$2 wait=$3 key=$4
  shift 4
  mkdir -p "$venv"
  exec 9>>"$venv/.lock"
  flock -w "$wait" 9 || { log "timed out waiting for $venv/.lock"; exit 1; }
  WANT=$( { "$python" -c 'import sys; print(sys.version)'; echo "$key"; cat "$@"; } | sha256sum | cut -d' ' -f1)
  if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.hyperflight-stamp" 2>/dev/null)" = "$WANT" ]; then
    echo "$venv"; exit 0
  fi
  if [ ! -x "$venv/bin/python" ]; then
    log "creating venv in $venv"
    if ! "$python" -m venv "$venv" >&2; then
      # Debian's system python3 ships venv separately.
      if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        log "installing python3-venv"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
        "$python" -m venv "$venv" >&2
      else
        exit 1
      fi
    fi
  fi
  export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
}

# Records the successful install and prints the venv.
venv_close() {
  echo "$WANT" >"$1/.hyperflight-stamp"
  echo "$1"
}
