"""Time reading one table into Arrow: hyperflight vs ADBC, ConnectorX and binary COPY.

Run through scripts/bench.sh, which prepares the data and the server. Methods run round-robin,
``--repeat`` rounds after one warm-up, so cache state and machine noise fall on all of them alike.
Reports best and median seconds and rows/s, and hyperflight time / ADBC time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Tuple

import hyperflight


def hyperflight_reader(url: str, table: str, parallelism: int) -> Callable[[], int]:
    return lambda: hyperflight.read_table(url, table, parallelism=parallelism).num_rows


def adbc_reader(database_url: str, sql: str) -> Callable[[], int]:
    import adbc_driver_postgresql.dbapi as adbc

    def run() -> int:
        with adbc.connect(database_url) as conn, conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetch_arrow_table().num_rows

    return run


def connectorx_reader(database_url: str, sql: str) -> Callable[[], int]:
    import connectorx as cx

    return lambda: cx.read_sql(database_url, sql, return_type="arrow").num_rows


def copy_reader(psql: str, database_url: str, sql: str, rows: int) -> Callable[[], int]:
    # The floor: the server's binary COPY, no conversion at all, bytes thrown away by psql.
    def run() -> int:
        subprocess.run([psql, "-X", "-q", database_url, "-c",
                        f"COPY ({sql}) TO STDOUT (FORMAT binary)"],
                       stdout=subprocess.DEVNULL, check=True)
        return rows

    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--flight-url", required=True)
    ap.add_argument("--database-url", required=True, help="postgresql://… of the same database")
    ap.add_argument("--table", default="public.metrics")
    ap.add_argument("--parallelism", default="2,4,8", help="hyperflight parallelisms to time")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--psql", default="psql")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()

    database_url = args.database_url.replace("postgres://", "postgresql://", 1)
    sql = f"SELECT * FROM {args.table}"
    parallelisms = [int(p) for p in args.parallelism.split(",")]
    rows = hyperflight.read_table(args.flight_url, args.table).num_rows  # also the warm-up

    methods: Dict[str, Callable[[], int]] = {
        f"hyperflight p={p}": hyperflight_reader(args.flight_url, args.table, p) for p in parallelisms
    }
    methods["adbc-postgresql"] = adbc_reader(database_url, sql)
    methods["connectorx"] = connectorx_reader(database_url, sql)
    methods["psql COPY binary"] = copy_reader(args.psql, database_url, sql, rows)

    times: Dict[str, List[float]] = {name: [] for name in methods}
    for round_ in range(args.repeat):
        for name, run in methods.items():
            started = time.perf_counter()
            got = run()
            times[name].append(time.perf_counter() - started)
            if got != rows:
                print(f"{name} read {got} rows, expected {rows}", file=sys.stderr)
                return 1
        print(f"round {round_ + 1}/{args.repeat} done", file=sys.stderr)

    summary: Dict[str, Tuple[float, float]] = {
        name: (min(t), statistics.median(t)) for name, t in times.items()
    }
    print(f"{args.table}: {rows:,} rows, best and median of {args.repeat}")
    print(f"{'method':<20} {'best s':>8} {'median s':>9} {'rows/s best':>13} {'rows/s median':>14}")
    for name, (best, median) in summary.items():
        print(f"{name:<20} {best:>8.3f} {median:>9.3f} {rows / best:>13,.0f} {rows / median:>14,.0f}")
    ref = "hyperflight p=4" if "hyperflight p=4" in summary else f"hyperflight p={parallelisms[0]}"
    adbc_best, adbc_median = summary["adbc-postgresql"]
    best, median = summary[ref]
    print(f"{ref} time / ADBC time: {median / adbc_median:.2f} (median), {best / adbc_best:.2f} (best)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"table": args.table, "rows": rows, "seconds": times}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
