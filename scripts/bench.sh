#!/usr/bin/env bash
# Benchmark (prints numbers; not a test): reading one hypertable into Arrow through hyperflight's
# Python client (parallelism 2, 4, 8) vs the ADBC PostgreSQL driver, ConnectorX and psql's binary COPY,
# all against the same table in the same run.
# Usage: scripts/bench.sh [--rows N (default 5000000)] [--repeat R (default 3)]
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_BIN=${HYPERFLIGHT_PG_BIN:-/usr/lib/postgresql/15/bin}
ROWS=5000000 REPEAT=3 DB=hyperflight_bench

log() { printf '[bench] %s\n' "$*" >&2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --rows) ROWS=${2:?}; shift 2 ;;
    --repeat) REPEAT=${2:?}; shift 2 ;;
    *) echo "usage: $0 [--rows N] [--repeat R]" >&2; exit 2 ;;
  esac
done

BASE=$("$REPO/scripts/cluster.sh" start)
BASE=${BASE%/*}
"$REPO/scripts/load-sample-data.sh" --database "$DB" --rows "$ROWS" --days 14 --if-missing >&2
VENV=$("$REPO/scripts/python-env.sh")
PY=$VENV/bin/python
log "cargo build --release"
(cd "$REPO" && cargo build --release --quiet --bin hyperflight)
# CARGO_TARGET_DIR may put the binary outside the repo.
BIN=$(cd "$REPO" && cargo metadata --format-version 1 --no-deps | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/hyperflight

PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
FLIGHT=grpc://127.0.0.1:$PORT
SERVER_LOG=$REPO/.hyperflight/bench-server.log
# HYPERFLIGHT_* variables in the caller's environment would be read as server settings.
mapfile -t unset_args < <(compgen -e | grep '^HYPERFLIGHT_' | sed 's/^/-u/' || true)
env "${unset_args[@]}" "$BIN" serve --database-url "$BASE/$DB" \
  --listen "127.0.0.1:$PORT" </dev/null >"$SERVER_LOG" 2>&1 &
SERVER_PID=$!
trap 'kill "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null || true' EXIT

deadline=$((SECONDS + 60))
until "$PY" -c "import hyperflight, sys; hyperflight.do_action(sys.argv[1], 'health', timeout=2)" "$FLIGHT" 2>/dev/null; do
  if ! kill -0 "$SERVER_PID" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
    log "server did not become healthy; last lines of $SERVER_LOG:"
    tail -n 30 "$SERVER_LOG" >&2
    exit 1
  fi
  sleep 0.2
done
log "server on $FLIGHT (log: $SERVER_LOG); $(nproc) cores"

"$PY" "$REPO/clients/python/bench/bench_read.py" --flight-url "$FLIGHT" --database-url "$BASE/$DB" \
  --repeat "$REPEAT" --psql "$PG_BIN/psql"
