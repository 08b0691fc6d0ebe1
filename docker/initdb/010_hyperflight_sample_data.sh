#!/usr/bin/env bash
# Loads the sample data into $POSTGRES_DB on the first start of the timescaledb container: the image
# runs /docker-entrypoint-initdb.d/* once, on an empty data directory, after its own 000_/001_
# scripts (which create the timescaledb extension). The data is docker/sample-data.sql, the same
# deterministic rows as scripts/load-sample-data.sh; size it with HYPERFLIGHT_SAMPLE_ROWS/_DAYS.
# The entrypoint may source this file rather than run it, so it sets no shell options of its own.
echo "hyperflight: loading ${HYPERFLIGHT_SAMPLE_ROWS:-2000000} sample rows over ${HYPERFLIGHT_SAMPLE_DAYS:-14} days into ${POSTGRES_DB:-postgres}"
psql -X -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
  -v rows="${HYPERFLIGHT_SAMPLE_ROWS:-2000000}" -v days="${HYPERFLIGHT_SAMPLE_DAYS:-14}" \
  -f /hyperflight/sample-data.sql
