#!/usr/bin/env bash
# From nothing to a hypertable read over Arrow Flight: installs TimescaleDB (as root), starts the local
# cluster, loads the sample data (2,000,000 rows in 14 daily chunks unless --rows/--days say otherwise),
# builds and starts the server, reads public.metrics with the Python client and queries it with DuckDB.
# The cluster keeps running afterwards (scripts/cluster.sh stop); the server is stopped.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
log() { printf '\n==> %s\n' "$*" >&2; }

if [ "$(id -u)" -eq 0 ]; then
  log "TimescaleDB"
  bash scripts/install-timescaledb.sh
elif ! ls /usr/lib/postgresql/15/lib/timescaledb-*.so >/dev/null 2>&1; then
  echo "TimescaleDB is not installed: run 'sudo scripts/install-timescaledb.sh' once, or run this as root" >&2
  exit 1
fi
log "cluster"
CLUSTER=$(bash scripts/cluster.sh start)
echo "$CLUSTER"
log "sample data"
bash scripts/load-sample-data.sh --database hyperflight --if-missing "$@"
log "Python client"
VENV=$(bash scripts/python-env.sh)
log "building the server (release)"
cargo build --release --bin hyperflight
BIN=$(scripts/target-dir.sh)/release/hyperflight

PORT=$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL="grpc://127.0.0.1:$PORT"
mkdir -p .hyperflight
"$BIN" serve --database-url "${CLUSTER%/*}/hyperflight" --listen "127.0.0.1:$PORT" \
  >.hyperflight/quickstart-server.log 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  "$VENV/bin/python" -c "import hyperflight,sys; hyperflight.do_action('$URL', 'health')" 2>/dev/null && break
  kill -0 $SERVER 2>/dev/null || { cat .hyperflight/quickstart-server.log >&2; exit 1; }
  sleep 0.1
done
log "server on $URL (log: .hyperflight/quickstart-server.log); tables:"
"$VENV/bin/python" -m hyperflight list "$URL"
log "reading public.metrics, one endpoint per chunk, 4 in parallel"
"$VENV/bin/python" -m hyperflight read "$URL" public.metrics --parallelism 4
log "DuckDB over the Arrow table"
"$VENV/bin/python" clients/python/examples/duckdb_example.py "$URL"
log "done. Try it yourself:  $BIN serve --database-url ${CLUSTER%/*}/hyperflight"
