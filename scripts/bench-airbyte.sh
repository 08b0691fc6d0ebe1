#!/usr/bin/env bash
# Benchmark (prints numbers; not a test): a full refresh of public.metrics through hyperflight-airbyte
# (release build, in-process Flight service) with its RECORD/STATE output sent to /dev/null.
# Prints seconds and records/s per run and the best run.
# Usage: scripts/bench-airbyte.sh [--rows N (default 5000000)] [--repeat R (default 3)]
#                                 [--chunks C (timescaledb_max_concurrent_chunks, default 4)]
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_BIN=${HYPERFLIGHT_PG_BIN:-/usr/lib/postgresql/15/bin}
ROWS=5000000 REPEAT=3 CHUNKS=4 DB=hyperflight_bench

log() { printf '[bench-airbyte] %s\n' "$*" >&2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --rows) ROWS=${2:?}; shift 2 ;;
    --repeat) REPEAT=${2:?}; shift 2 ;;
    --chunks) CHUNKS=${2:?}; shift 2 ;;
    *) echo "usage: $0 [--rows N] [--repeat R] [--chunks C]" >&2; exit 2 ;;
  esac
done

URL=$("$REPO/scripts/cluster.sh" start)
PORT=${URL##*:}; PORT=${PORT%%/*}
"$REPO/scripts/load-sample-data.sh" --database "$DB" --rows "$ROWS" --days 14 --if-missing >&2
log "cargo build --release"
(cd "$REPO" && cargo build --release --quiet --bin hyperflight-airbyte)
BIN=$("$REPO/scripts/target-dir.sh")/release/hyperflight-airbyte

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cat >"$WORK/config.json" <<JSON
{"host": "127.0.0.1", "port": $PORT, "database": "$DB", "username": "postgres",
 "timescaledb_max_concurrent_chunks": $CHUNKS}
JSON
# No json_schema properties: every column is read.
cat >"$WORK/catalog.json" <<'JSON'
{"streams": [{"stream": {"name": "metrics", "namespace": "public", "json_schema": {},
                         "supported_sync_modes": ["full_refresh", "incremental"]},
              "sync_mode": "full_refresh", "destination_sync_mode": "overwrite"}]}
JSON
records=$("$PG_BIN/psql" "${URL%/*}/$DB" -X -q -A -t -c "SELECT count(*) FROM public.metrics")
log "$records rows in public.metrics ($DB); $(nproc) cores; timescaledb_max_concurrent_chunks=$CHUNKS"

# One run checked for completeness (STATE recordCount adds up to the table), then the timed runs.
"$BIN" read --config "$WORK/config.json" --catalog "$WORK/catalog.json" \
  | grep '"type":"STATE"' >"$WORK/states.jsonl" || true
counted=$(sed -n 's/.*"recordCount":\([0-9]*\)\.0.*/\1/p' "$WORK/states.jsonl" | awk '{ s += $1 } END { print s + 0 }')
[ "$counted" = "$records" ] || { log "STATE messages count $counted records, the table has $records"; exit 1; }

best=""
for ((i = 1; i <= REPEAT; i++)); do
  t0=$(date +%s.%N)
  "$BIN" read --config "$WORK/config.json" --catalog "$WORK/catalog.json" >/dev/null
  t1=$(date +%s.%N)
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
  rate=$(awk -v n="$records" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')
  echo "run $i: $secs s, $rate records/s"
  if [ -z "$best" ] || awk -v s="$secs" -v b="$best" 'BEGIN { exit !(s < b) }'; then best=$secs; fi
done
echo "best: $best s, $(awk -v n="$records" -v s="$best" 'BEGIN { printf "%.0f", n / s }') records/s ($records records to /dev/null)"
