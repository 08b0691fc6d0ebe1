"""Time reading one table into Arrow: hyperflight vs ADBC, ConnectorX and psql's binary COPY; with
``--window``, a time window of it, also through Flight SQL (the ADBC Flight SQL driver → hyperflight).

Run through scripts/bench.sh, which prepares the data and the server. Every method runs once as an
untimed warm-up, then ``--repeat`` rounds, round-robin, the order reversed every other round, so cache
state, drift and machine noise fall on all of them alike. Every read must return the table's
``SELECT count(*)``. Reports best and median seconds and rows/s, and hyperflight time / ADBC time and
hyperflight time / psql COPY time (median and best).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Tuple

import hyperflight

METHODS = ("hyperflight", "adbc", "flightsql", "connectorx", "psql")
PSQL_NAME = "psql \\copy binary"
FLIGHTSQL_NAME = "ADBC Flight SQL → hyperflight"


def hyperflight_reader(url: str, table: str, parallelism: int, window: Tuple[str, str]) -> Callable[[], int]:
    start, end = window
    return lambda: hyperflight.read_table(url, table, parallelism=parallelism, start=start, end=end).num_rows


def adbc_reader(connect: Callable, url: str, sql: str) -> Callable[[], int]:
    """An ADBC driver's read of ``sql``: PostgreSQL's directly, or Flight SQL's through hyperflight."""
    def run() -> int:
        with connect(url, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetch_arrow_table().num_rows

    return run


def connectorx_reader(database_url: str, sql: str) -> Callable[[], int]:
    import connectorx as cx

    return lambda: cx.read_sql(database_url, sql, return_type="arrow").num_rows


def copy_reader(psql: str, database_url: str, sql: str) -> Callable[[], int]:
    # The floor: the server's binary COPY, no conversion at all, written by psql to /dev/null.
    # psql's "COPY n" status line gives the row count.
    command = f"\\copy ({sql}) TO '/dev/null' (FORMAT binary)"

    def run() -> int:
        out = subprocess.run([psql, "-X", "-v", "ON_ERROR_STOP=1", database_url, "-c", command],
                             stdout=subprocess.PIPE, check=True, text=True).stdout
        m = re.search(r"^COPY (\d+)$", out, re.M)
        if not m:
            raise RuntimeError(f"no COPY status from psql: {out!r}")
        return int(m.group(1))

    return run


def sql_count(psql: str, database_url: str, table: str, where: str) -> int:
    out = subprocess.run([psql, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", database_url, "-c",
                          f"SELECT count(*) FROM {table}{where}"],
                         stdout=subprocess.PIPE, check=True, text=True).stdout
    return int(out.strip())


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--flight-url", required=True)
    ap.add_argument("--database-url", required=True, help="postgresql://… of the same database")
    ap.add_argument("--table", default="public.metrics")
    ap.add_argument("--window", help="START,END: read rows with START <= time < END (RFC 3339)")
    ap.add_argument("--parallelism", default="2,4,8", help="hyperflight parallelisms to time")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help=f"comma-separated subset of {','.join(METHODS)}")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--psql", default="psql")
    ap.add_argument("--title", help="heading printed above the table (default: the table name)")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()

    database_url = args.database_url.replace("postgres://", "postgresql://", 1)
    window = tuple(args.window.split(",")) if args.window else (None, None)
    where = f" WHERE time >= '{window[0]}' AND time < '{window[1]}'" if args.window else ""
    sql = f"SELECT * FROM {args.table}{where}"
    parallelisms = [int(p) for p in args.parallelism.split(",")]
    wanted = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(wanted) - set(METHODS))
    if unknown or not wanted:
        ap.error(f"--methods: unknown {unknown}; choose from {','.join(METHODS)}")
    rows = sql_count(args.psql, database_url, args.table, where)

    methods: Dict[str, Callable[[], int]] = {}
    if "hyperflight" in wanted:
        for p in parallelisms:
            methods[f"hyperflight p={p}"] = hyperflight_reader(args.flight_url, args.table, p, window)
    if "adbc" in wanted:
        import adbc_driver_postgresql.dbapi
        methods["adbc-postgresql"] = adbc_reader(adbc_driver_postgresql.dbapi.connect, database_url, sql)
    if "flightsql" in wanted:
        import adbc_driver_flightsql.dbapi
        name = FLIGHTSQL_NAME + (", windowed scan" if args.window else "")
        methods[name] = adbc_reader(adbc_driver_flightsql.dbapi.connect, args.flight_url, sql)
    if "connectorx" in wanted:
        methods["connectorx"] = connectorx_reader(database_url, sql)
    if "psql" in wanted:
        methods[PSQL_NAME] = copy_reader(args.psql, database_url, sql)

    load_before = loadavg()
    times: Dict[str, List[float]] = {name: [] for name in methods}
    order = list(methods)
    for round_ in range(-1, args.repeat):  # round -1: the warm-up, not timed
        for name in order if round_ % 2 == 0 else reversed(order):
            started = time.perf_counter()
            got = methods[name]()
            elapsed = time.perf_counter() - started
            if got != rows:
                print(f"{name} read {got} rows, SELECT count(*) says {rows}", file=sys.stderr)
                return 1
            if round_ >= 0:
                times[name].append(elapsed)
        print(f"{'warm-up' if round_ < 0 else f'round {round_ + 1}/{args.repeat}'} done",
              file=sys.stderr)

    summary: Dict[str, Tuple[float, float]] = {
        name: (min(t), statistics.median(t)) for name, t in times.items()
    }
    print()
    print(f"{args.title or args.table}: {rows:,} rows (= SELECT count(*) = every read), "
          f"best and median of {args.repeat}; load average before {load_before}, after {loadavg()}")
    width = max(20, *map(len, summary))
    print(f"{'method':<{width}} {'best s':>8} {'median s':>9} {'rows/s best':>13} {'rows/s median':>14}"
          f"  all s")
    for name, (best, median) in summary.items():
        print(f"{name:<{width}} {best:>8.3f} {median:>9.3f} {rows / best:>13,.0f} {rows / median:>14,.0f}"
              f"  {' '.join(f'{t:.3f}' for t in times[name])}")
    for ref_name, label in (("adbc-postgresql", "ADBC"), (PSQL_NAME, "psql \\copy")):
        if ref_name not in summary:
            continue
        ref_best, ref_median = summary[ref_name]
        compared = [f"hyperflight p={p}" for p in parallelisms]
        compared += [n for n in summary if n.startswith(FLIGHTSQL_NAME)]
        for name in compared:
            if name in summary:
                best, median = summary[name]
                print(f"{name} time / {label} time: {median / ref_median:.2f} (median), "
                      f"{best / ref_best:.2f} (best)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"table": args.table, "rows": rows, "seconds": times}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
