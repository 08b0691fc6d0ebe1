#!/usr/bin/env bash
# Benchmark (prints numbers; not a test), two tables in one run on one machine:
#  1. public.metrics (plain chunks): hyperflight's Python client (parallelism 1, 2, 4, 8) vs the ADBC
#     PostgreSQL driver, ConnectorX and psql's binary COPY;
#  2. public.metrics_compressed, the same rows with every chunk compressed (segmentby device_id,
#     orderby time DESC): hyperflight at parallelism 4 and 1 vs
#     psql -c "\copy (SELECT * FROM public.metrics_compressed) TO '/dev/null' (FORMAT binary)";
#  3. a 3-day window of public.metrics: hyperflight, the ADBC Flight SQL driver through hyperflight
#     (SELECT * … WHERE time >= … AND time < …, one endpoint per chunk), the ADBC PostgreSQL driver
#     and psql's binary COPY of the same SELECT (with the first part);
#  4. with --latency (on a freshly started server, then parts 1 and 3, not 2: every row of issue 14's
#     table in one run): a 1-hour window of public.metrics against ADBC, the first batch of a one-row
#     chunk, GetFlightInfo and a parallel read of public.tiny_chunks (10,000 one-hour chunks of one
#     row each) (clients/python/bench/bench_latency.py); the cached GetFlightInfo again from a Rust
#     client (crates/server/examples/gfi_bench.rs); last, the server's RSS under 64 clients.
# Every read is checked against SELECT count(*). The tables are loaded once and kept.
# Usage: scripts/bench.sh [--rows N (default 5000000)] [--repeat R (default 3)]
#                         [--compressed-only | --no-compressed | --latency] [--binary PATH]
#   --binary: use this hyperflight binary instead of building the working tree with cargo.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_BIN=${HYPERFLIGHT_PG_BIN:-/usr/lib/postgresql/15/bin}
ROWS=5000000 REPEAT=3 DB=hyperflight_bench DAYS=14 PLAIN=1 COMPRESSED=1 LATENCY=0 BIN=""

log() { printf '[bench] %s\n' "$*" >&2; }
usage() { echo "usage: $0 [--rows N] [--repeat R] [--compressed-only | --no-compressed | --latency] [--binary PATH]" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --rows) [ $# -ge 2 ] || usage; ROWS=$2; shift 2 ;;
    --repeat) [ $# -ge 2 ] || usage; REPEAT=$2; shift 2 ;;
    --compressed-only) PLAIN=0 COMPRESSED=1; shift ;;
    --no-compressed) PLAIN=1 COMPRESSED=0; shift ;;
    --latency) PLAIN=1 COMPRESSED=0 LATENCY=1; shift ;;
    --binary) [ $# -ge 2 ] || usage; BIN=$(realpath "$2"); shift 2 ;;
    *) usage ;;
  esac
done
[[ "$ROWS" =~ ^[1-9][0-9]*$ ]] || { log "--rows must be a positive integer"; exit 2; }
[[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || { log "--repeat must be a positive integer"; exit 2; }

BASE=$("$REPO/scripts/cluster.sh" start)
BASE=${BASE%/*}
q() { "$PG_BIN/psql" "$BASE/$DB" -X -q -A -t -v ON_ERROR_STOP=1 "$@"; }
"$REPO/scripts/load-sample-data.sh" --database "$DB" --rows "$ROWS" --days "$DAYS" --if-missing >&2

# public.metrics_compressed: a copy of public.metrics with every chunk compressed. Kept when it has
# the same row count as public.metrics in $DAYS chunks, all compressed, none partially.
load_compressed() {
  mkdir -p "$REPO/.hyperflight"
  exec 8>>"$REPO/.hyperflight/load-$DB-compressed.lock"
  flock -w 1800 8 || { log "timed out waiting for another loader of metrics_compressed"; exit 1; }
  local want have=""
  want="$(q -c "SELECT count(*) FROM public.metrics") $DAYS $DAYS"
  if [ "$(q -c "SELECT to_regclass('public.metrics_compressed') IS NOT NULL")" = t ]; then
    have=$(q -F ' ' -c "SELECT (SELECT count(*) FROM public.metrics_compressed),
        (SELECT count(*) FROM show_chunks('public.metrics_compressed')),
        (SELECT count(*) FROM timescaledb_information.chunks
          WHERE hypertable_schema = 'public' AND hypertable_name = 'metrics_compressed'
            AND is_compressed
            AND NOT EXISTS (SELECT 1 FROM _timescaledb_catalog.chunk k
                            WHERE k.schema_name = chunk_schema AND k.table_name = chunk_name
                              AND k.status & 8 <> 0))")  # 8: partially compressed
  fi
  if [ "$have" = "$want" ]; then
    log "public.metrics_compressed already has $have (rows, chunks, compressed chunks)"
  else
    log "public.metrics_compressed has '${have:-nothing}', want '$want': loading (takes a while)"
    local t0=$SECONDS
    q -1 <<'SQL' >/dev/null
SET client_min_messages = warning;
DROP TABLE IF EXISTS public.metrics_compressed;
CREATE TABLE public.metrics_compressed (LIKE public.metrics);
SELECT create_hypertable('public.metrics_compressed', by_range('time', interval '1 day'));
INSERT INTO public.metrics_compressed SELECT * FROM public.metrics;
ALTER TABLE public.metrics_compressed SET (timescaledb.compress,
  timescaledb.compress_segmentby = 'device_id', timescaledb.compress_orderby = 'time DESC');
SELECT count(compress_chunk(c)) FROM show_chunks('public.metrics_compressed') c;
SQL
    q -c "ANALYZE public.metrics_compressed"
    log "loaded public.metrics_compressed in $((SECONDS - t0))s"
  fi
  log "public.metrics_compressed: $(q -F ' ' -c "SELECT pg_size_pretty(before_compression_total_bytes) || ' before, ' || pg_size_pretty(after_compression_total_bytes) || ' after compression' FROM hypertable_compression_stats('public.metrics_compressed')")"
  exec 8>&-
}
[ "$COMPRESSED" -eq 0 ] || load_compressed

# public.tiny_chunks: 10,000 one-hour chunks with one row each (TimescaleDB makes a chunk per row).
if [ "$LATENCY" -eq 1 ] && [ "$(q -c "SELECT count(*) FROM show_chunks('public.tiny_chunks')" 2>/dev/null || echo 0)" != 10000 ]; then
  log "loading public.tiny_chunks (10,000 chunks; a few minutes)"
  q <<'SQL' >/dev/null
SET client_min_messages = warning;
DROP TABLE IF EXISTS public.tiny_chunks;
CREATE TABLE public.tiny_chunks ("time" timestamptz NOT NULL, v double precision);
SELECT create_hypertable('public.tiny_chunks', by_range('time', interval '1 hour'));
SQL
  # 500 chunks per transaction: each new chunk holds locks until commit (max_locks_per_transaction).
  for first in $(seq 0 500 9500); do
    q -c "INSERT INTO public.tiny_chunks SELECT timestamptz '2025-01-01' + g * interval '1 hour', g
          FROM generate_series($first, $first + 499) g" >/dev/null
  done
  q -c "ANALYZE public.tiny_chunks" >/dev/null
fi

VENV=$("$REPO/scripts/python-env.sh")
PY=$VENV/bin/python
if [ -z "$BIN" ]; then
  log "cargo build --release"
  (cd "$REPO" && cargo build --release --quiet --bin hyperflight)
  # CARGO_TARGET_DIR may put the binary outside the repo.
  BIN=$("$REPO/scripts/target-dir.sh")/release/hyperflight
fi
[ -x "$BIN" ] || { log "no executable at $BIN"; exit 1; }
if [ "$LATENCY" -eq 1 ]; then
  # Built now, not between the measurements.
  log "cargo build --release --example gfi_bench"
  (cd "$REPO" && cargo build --release --quiet --locked -p hyperflight-server --example gfi_bench)
fi

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
log "server $BIN on $FLIGHT (log: $SERVER_LOG); $(nproc) cores"

if [ "$LATENCY" -eq 1 ]; then
  "$PY" "$REPO/clients/python/bench/bench_latency.py" --url "$FLIGHT" --database-url "$BASE/$DB" \
    --repeat "$((REPEAT * 10))"
  # The same cached GetFlightInfo from a Rust (arrow-flight) client.
  (cd "$REPO" && cargo run --quiet --release --locked -p hyperflight-server --example gfi_bench -- \
    "$FLIGHT" public.tiny_chunks "$((REPEAT * 10))")
fi
if [ "$PLAIN" -eq 1 ]; then
  "$PY" "$REPO/clients/python/bench/bench_read.py" --flight-url "$FLIGHT" --database-url "$BASE/$DB" \
    --repeat "$REPEAT" --psql "$PG_BIN/psql" --parallelism 1,2,4,8 --title "public.metrics (uncompressed chunks)"
  "$PY" "$REPO/clients/python/bench/bench_read.py" --flight-url "$FLIGHT" --database-url "$BASE/$DB" \
    --repeat "$REPEAT" --psql "$PG_BIN/psql" --window 2026-10-03T00:00:00Z,2026-10-06T00:00:00Z \
    --methods hyperflight,flightsql,adbc,psql --parallelism 4 \
    --title "public.metrics, windowed scan (3 of $DAYS days)"
fi
if [ "$COMPRESSED" -eq 1 ]; then
  "$PY" "$REPO/clients/python/bench/bench_read.py" --flight-url "$FLIGHT" --database-url "$BASE/$DB" \
    --repeat "$REPEAT" --psql "$PG_BIN/psql" --table public.metrics_compressed \
    --methods hyperflight,psql --parallelism 4,1 \
    --title "public.metrics_compressed (all $DAYS chunks compressed)"
  # The server reads a compressed chunk batch by batch unless it cannot (then it logs this).
  one_pass=$(grep -c 'compressed chunk read in one pass' "$SERVER_LOG" || true)
  echo "server log: $one_pass compressed chunk reads fell back to one pass (0 = all batch-wise)"
fi
if [ "$LATENCY" -eq 1 ]; then
  # Last: 64 clients leave the machine busy for a while after they stop.
  "$PY" "$REPO/clients/python/bench/bench_latency.py" --url "$FLIGHT" --database-url "$BASE/$DB" \
    --rss-only --server-pid "$SERVER_PID"
fi
