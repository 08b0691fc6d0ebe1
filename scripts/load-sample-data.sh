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

q "$DB" >/dev/null <<'SQL'
SET client_min_messages = warning;
DROP TABLE IF EXISTS public.metrics, public.devices CASCADE;

CREATE TABLE public.devices (
  device_id    int PRIMARY KEY,
  name         text NOT NULL,
  location     text,
  installed_at timestamptz
);
INSERT INTO public.devices
SELECT d,
       'device-' || d,
       CASE WHEN d % 7 = 0 THEN NULL
            WHEN d % 10 = 3 THEN 'Zürich – Halle ' || d
            ELSE 'hall-' || d % 5 END,
       CASE WHEN d % 11 = 0 THEN NULL
            ELSE '2025-01-01 08:00:00+00'::timestamptz + d * interval '24 hours 37 minutes 12.345678 seconds' END
FROM generate_series(1, 100) AS d;

CREATE TABLE public.metrics (
  time        timestamptz NOT NULL,
  device_id   int,
  sensor      text,
  temperature float8,
  humidity    float4,
  status      int2,
  reading     int8,
  ok          bool
);
SELECT create_hypertable('public.metrics', by_range('time', interval '1 day'));
SQL

# One INSERT per day (= per chunk). Row i gets time = start + floor(i * D * 1 day / N), so day d
# holds rows ceil(d*N/D) .. ceil((d+1)*N/D)-1 and N rows spread evenly over exactly D days.
day_us=86400000000
for ((d = 0; d < DAYS; d++)); do
  lo=$(( (d * ROWS + DAYS - 1) / DAYS ))
  hi=$(( ((d + 1) * ROWS + DAYS - 1) / DAYS - 1 ))
  q "$DB" <<SQL
INSERT INTO public.metrics
SELECT '2026-10-01 00:00:00+00'::timestamptz
         + floor(i::numeric * $DAYS * $day_us / $ROWS)::int8 * interval '1 microsecond',
       CASE WHEN i % 97 = 0 THEN NULL ELSE 1 + i % 100 END,
       CASE WHEN i % 89 = 0 THEN NULL
            WHEN i % 1000 = 7 THEN 'capteur-' || i % 10 || ' température ✓ 温度'
            ELSE 'sensor-' || i % 10 END,
       CASE WHEN i % 83 = 0 THEN NULL ELSE 20 + 10 * sin(i / 1000.0) + (i % 7) * 0.125 END,
       CASE WHEN i % 79 = 0 THEN NULL ELSE (50 + 40 * cos(i / 777.0))::float4 END,
       CASE WHEN i % 73 = 0 THEN NULL
            WHEN i % 10007 = 1 THEN -32768
            WHEN i % 10007 = 2 THEN 32767
            ELSE i % 600 END::int2,
       CASE WHEN i % 71 = 0 THEN NULL
            WHEN i % 50021 = 3 THEN 9223372036854775807
            WHEN i % 50021 = 4 THEN '-9223372036854775808'::int8
            ELSE i * 1000003 % 1000000007 - 500000000 END,
       CASE WHEN i % 67 = 0 THEN NULL ELSE i % 3 <> 0 END
FROM generate_series($lo::int8, $hi::int8) AS i;
SQL
  log "$DB: day $((d + 1))/$DAYS: $((hi - lo + 1)) rows ($(elapsed)s)"
done

# FREEZE also sets hint bits and the visibility map now, so the first reads (and benchmarks) do not
# pay for rewriting every page.
q "$DB" -c "VACUUM (FREEZE, ANALYZE) public.metrics" -c "ANALYZE public.devices"

read -r rows chunks < <(q "$DB" -F ' ' -c \
  "SELECT (SELECT count(*) FROM public.metrics), (SELECT count(*) FROM show_chunks('public.metrics'))")
echo "$DB: loaded public.metrics $rows rows in $chunks chunks, public.devices 100 rows ($(elapsed)s)"
