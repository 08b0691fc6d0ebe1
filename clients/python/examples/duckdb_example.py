"""Read public.metrics from a hyperflight server and aggregate it in DuckDB, zero-copy over Arrow.

Usage: python clients/python/examples/duckdb_example.py grpc://127.0.0.1:50051
"""

import sys
import time

import duckdb

import hyperflight


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else "grpc://127.0.0.1:50051"
    started = time.perf_counter()
    metrics = hyperflight.read_table(url, "public.metrics", parallelism=4)
    print(f"read {metrics.num_rows:,} rows in {time.perf_counter() - started:.2f}s")
    # DuckDB scans the Arrow table in place, finding it by its Python variable name.
    duckdb.sql(
        """
        SELECT device_id, count(*) AS readings, round(avg(temperature), 3) AS avg_temperature
        FROM metrics
        WHERE device_id IS NOT NULL
        GROUP BY device_id
        ORDER BY avg_temperature DESC
        LIMIT 5
        """
    ).show()


if __name__ == "__main__":
    main()
