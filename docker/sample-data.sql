-- The deterministic sample data, as one psql script: the docker-compose stack loads it on the first
-- start of its database, and it is meant to be the single copy that scripts/load-sample-data.sh
-- runs too.
--   public.devices  plain table, 100 rows
--   public.metrics  hypertable on "time", 1-day chunks, :rows rows spread evenly over :days days from
--                   2026-10-01 00:00 UTC (so exactly :days chunks)
-- Usage: psql -X -v ON_ERROR_STOP=1 -v rows=2000000 -v days=14 -f docker/sample-data.sql
-- (Hours, not days, in intervals: day arithmetic would depend on the session time zone.)
-- Every value derives from the row number i by arithmetic (no random()), so two loads with the same
-- rows and days are identical. Each nullable column has NULLs at its own modulus; a few rows carry
-- extreme int2/int8 values and non-ASCII text.
\set ON_ERROR_STOP on
\if :{?rows}
\else
  \set rows 2000000
\endif
\if :{?days}
\else
  \set days 14
\endif
SET client_min_messages = warning;
-- Checked first because the variables are spliced into SQL text below.
SELECT :'rows' ~ '^[1-9][0-9]{0,17}$' AND :'days' ~ '^[1-9][0-9]{0,17}$' AS sizes_ok \gset
\if :sizes_ok
  SELECT :'rows'::int8 >= :'days'::int8 AS sizes_ok \gset
\endif
\if :sizes_ok
\else
  DO $$ BEGIN RAISE EXCEPTION 'rows and days must be positive integers, rows >= days (one row per chunk)'; END $$;
\endif
CREATE EXTENSION IF NOT EXISTS timescaledb;
-- Two statements: TimescaleDB refuses to drop a hypertable together with other objects.
DROP TABLE IF EXISTS public.metrics CASCADE;
DROP TABLE IF EXISTS public.devices CASCADE;

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
SELECT create_hypertable('public.metrics', by_range('time', interval '1 day')) \g /dev/null

-- One INSERT per day (= per chunk), run by \gexec. Row i gets time = start + floor(i * D * 1 day / N),
-- so day d holds rows ceil(d*N/D) .. ceil((d+1)*N/D)-1 and N rows spread evenly over exactly D days.
SELECT format($sql$
INSERT INTO public.metrics
SELECT '2026-10-01 00:00:00+00'::timestamptz
         + floor(i::numeric * %s * 86400000000 / %s)::int8 * interval '1 microsecond',
       CASE WHEN i %% 97 = 0 THEN NULL ELSE 1 + i %% 100 END,
       CASE WHEN i %% 89 = 0 THEN NULL
            WHEN i %% 1000 = 7 THEN 'capteur-' || i %% 10 || ' température ✓ 温度'
            ELSE 'sensor-' || i %% 10 END,
       CASE WHEN i %% 83 = 0 THEN NULL ELSE 20 + 10 * sin(i / 1000.0) + (i %% 7) * 0.125 END,
       CASE WHEN i %% 79 = 0 THEN NULL ELSE (50 + 40 * cos(i / 777.0))::float4 END,
       CASE WHEN i %% 73 = 0 THEN NULL
            WHEN i %% 10007 = 1 THEN -32768
            WHEN i %% 10007 = 2 THEN 32767
            ELSE i %% 600 END::int2,
       CASE WHEN i %% 71 = 0 THEN NULL
            WHEN i %% 50021 = 3 THEN 9223372036854775807
            WHEN i %% 50021 = 4 THEN '-9223372036854775808'::int8
            ELSE i * 1000003 %% 1000000007 - 500000000 END,
       CASE WHEN i %% 67 = 0 THEN NULL ELSE i %% 3 <> 0 END
FROM generate_series(%s::int8, %s::int8) AS i
$sql$, :'days', :'rows', lo, hi)
FROM (SELECT d,
             (d * :'rows'::int8 + :'days'::int8 - 1) / :'days'::int8 AS lo,
             ((d + 1) * :'rows'::int8 + :'days'::int8 - 1) / :'days'::int8 - 1 AS hi
      FROM generate_series(0, :'days'::int8 - 1) AS d) AS days
ORDER BY d
\gexec

-- FREEZE also sets hint bits and the visibility map now, so the first reads (and benchmarks) do not
-- pay for rewriting every page.
VACUUM (FREEZE, ANALYZE) public.metrics;
ANALYZE public.devices;
