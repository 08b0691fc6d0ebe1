#!/usr/bin/env bash
# Loads deterministic sample data into the local cluster (scripts/cluster.sh), for tests, examples and
# benchmarks:
#   public.devices  plain table, 100 rows
#   public.metrics  hypertable on "time", 1-day chunks, N rows spread evenly over D days from
#                   2026-10-01 00:00 UTC (so exactly D chunks)
# Usage: scripts/load-sample-data.sh [--database NAME] [--rows N] [--days D] [--if-missing]
# (Hours, not days, in intervals: day arithmetic would depend on the session time zone.)
# Every value derives from the row number i by arithmetic (no random()), so two loads with the same
# N and D are identical. Each nullable column has NULLs at its own modulus; a few rows carry extreme
# int2/int8 values and non-ASCII text.
# --if-missing: keep the data when metrics already has exactly N rows in D chunks (fast; tests call it
# at every start). Prints one summary line on stdout; progress goes to stderr.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_BIN=${HYPERFLIGHT_PG_BIN:-/usr/lib/postgresql/15/bin}
DB=hyperflight ROWS=2000000 DAYS=14 IF_MISSING=0

log() { printf '[load-sample-data] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
usage() { echo "usage: $0 [--database NAME] [--rows N] [--days D] [--if-missing]" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --database) [ $# -ge 2 ] || usage; DB=$2; shift 2 ;;
    --rows) [ $# -ge 2 ] || usage; ROWS=$2; shift 2 ;;
    --days) [ $# -ge 2 ] || usage; DAYS=$2; shift 2 ;;
    --if-missing) IF_MISSING=1; shift ;;
    -h|--help) usage ;;
    *) log "unknown argument: $1"; usage ;;
  esac
done
# The name is spliced into SQL and the URL: allow plain identifiers only.
[[ "$DB" =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "--database must match [a-z_][a-z0-9_]*"
[[ "$ROWS" =~ ^[1-9][0-9]*$ ]] || die "--rows must be a positive integer"
[[ "$DAYS" =~ ^[1-9][0-9]*$ ]] || die "--days must be a positive integer"
[ "$ROWS" -ge "$DAYS" ] || die "--rows must be at least --days (one row per chunk)"

T0=$(date +%s.%N)
elapsed() { awk -v t0="$T0" -v t1="$(date +%s.%N)" 'BEGIN { printf "%.1f", t1 - t0 }'; }

URL=$("$REPO/scripts/cluster.sh" start)
BASE=${URL%/*}
q() { "$PG_BIN/psql" "$BASE/$1" -X -q -A -t -v ON_ERROR_STOP=1 "${@:2}"; }

# Serialize loaders of the same database: concurrent test sessions must not load twice or see a
# half-built table.
mkdir -p "$REPO/.hyperflight"
exec 9>>"$REPO/.hyperflight/load-$DB.lock"
flock -w 1800 9 || die "timed out waiting for another loader of $DB"

if [ -z "$(q postgres -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")" ]; then
  log "creating database $DB"
  q postgres -c "CREATE DATABASE $DB"
fi
q "$DB" -c "SET client_min_messages = warning" -c "CREATE EXTENSION IF NOT EXISTS timescaledb"

if [ "$IF_MISSING" -eq 1 ]; then
  have=""
  if [ "$(q "$DB" -c "SELECT to_regclass('public.metrics') IS NOT NULL AND to_regclass('public.devices') IS NOT NULL")" = t ]; then
    have=$(q "$DB" -F ' ' -c "SELECT (SELECT count(*) FROM public.metrics), (SELECT count(*) FROM show_chunks('public.metrics'))")
  fi
  if [ "$have" = "$ROWS $DAYS" ]; then
    echo "$DB: public.metrics already has $ROWS rows in $DAYS chunks ($(elapsed)s)"
    exit 0
  fi
  log "$DB: public.metrics has '${have:-nothing}', want '$ROWS $DAYS': reloading"
fi

# The tables and rows are docker/sample-data.sql, the one copy the docker-compose stack loads too.
log "$DB: loading $ROWS rows over $DAYS days"
q "$DB" -v rows="$ROWS" -v days="$DAYS" -f "$REPO/docker/sample-data.sql" >/dev/null

read -r rows chunks < <(q "$DB" -F ' ' -c \
  "SELECT (SELECT count(*) FROM public.metrics), (SELECT count(*) FROM show_chunks('public.metrics'))")
echo "$DB: loaded public.metrics $rows rows in $chunks chunks, public.devices 100 rows ($(elapsed)s)"
