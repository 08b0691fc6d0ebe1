"""Latency benchmark (issue 14's rows; prints numbers, asserts only row counts).

Run by `scripts/bench.sh --latency` against a freshly started server, so the first GetFlightInfo of
the many-chunk table is a cold one. Both sides warm and in one process where compared, alternating,
medians of --repeat runs:
- a 1-hour window: GetFlightInfo (CMD with [start, end)) + DoGet of every endpoint on one open Flight
  connection, vs ADBC PostgreSQL `SELECT * … WHERE time >= $1 AND time < $2` on one open connection;
- DoGet to the first batch of a one-row chunk (the per-DoGet fixed cost);
- GetFlightInfo of the many-chunk table, first (cold discovery), cached (the plan reused) and a new
  request on the cached discovery;
- every one-row endpoint of the many-chunk table read at parallelism 8;
- with --rss-only --server-pid, instead of all the above: the server's RSS while 64 clients read the
  big table for --clients-seconds (sampled every 50 ms from /proc), next to its reserved batch bytes
  (the `max_memory_mb` budget). bench.sh runs it last: the load leaves the machine busy for a while,
  which would slow whatever is measured right after it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta, timezone
from typing import Callable, List

import pyarrow.flight as flight


def median_ms(samples: List[float]) -> float:
    return statistics.median(samples) * 1000


def timed(f: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--database-url", required=True)
    p.add_argument("--table", default="public.metrics")
    p.add_argument("--many", default="public.tiny_chunks", help="a hypertable of one-row chunks")
    p.add_argument("--repeat", type=int, default=30)
    p.add_argument("--rss-only", action="store_true", help="only the 64-client RSS row")
    p.add_argument("--server-pid", type=int, help="the server's pid, for the 64-client RSS row")
    p.add_argument("--clients-seconds", type=float, default=15.0)
    a = p.parse_args()
    client = flight.FlightClient(a.url)
    descriptor = lambda cmd: flight.FlightDescriptor.for_command(json.dumps(cmd).encode())
    if a.rss_only:
        if not a.server_pid:
            p.error("--rss-only needs --server-pid")
        print(many_clients_rss(a.url, client.get_flight_info(descriptor({"table": a.table})),
                               a.server_pid, a.clients_seconds))
        return 0
    import adbc_driver_postgresql.dbapi as adbc

    # GetFlightInfo of the many-chunk table: the first call on this server discovers its chunks.
    many = descriptor({"table": a.many})
    first_info = timed(lambda: client.get_flight_info(many))
    info = client.get_flight_info(many)
    # pyarrow builds a new list on every `info.endpoints`: take it once (per read it cost 5 ms).
    endpoints = info.endpoints
    cached_info = median_ms([timed(lambda: client.get_flight_info(many)) for _ in range(a.repeat)])
    # pyarrow's own share of that call: turning the received message into a FlightInfo.
    encoded = info.serialize()
    parse = median_ms([timed(lambda: flight.FlightInfo.deserialize(encoded)) for _ in range(a.repeat)])
    # A different request each time (an `end` far beyond the last chunk, one year later per call):
    # the same endpoints, planned anew on the cached discovery instead of reusing the last plan.
    fresh = lambda i: descriptor({"table": a.many, "end": f"{2100 + i}-01-01T00:00:00Z"})
    new_plan = median_ms([timed(lambda i=i: client.get_flight_info(fresh(i))) for i in range(a.repeat)])

    schema, table = a.table.split(".", 1)
    conn = adbc.connect(a.database_url)
    cur = conn.cursor()
    cur.execute(f'SELECT max("time") FROM "{schema}"."{table}"')
    end = cur.fetchone()[0].replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(hours=1)
    iso = lambda t: t.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    window = descriptor({"table": a.table, "start": iso(start), "end": iso(end)})
    sql = f'SELECT * FROM "{schema}"."{table}" WHERE "time" >= $1 AND "time" < $2'

    def via_flight() -> int:
        got = client.get_flight_info(window)
        return sum(client.do_get(e.ticket).read_all().num_rows for e in got.endpoints)

    def via_adbc() -> int:
        cur.execute(sql, (start, end))
        return cur.fetch_arrow_table().num_rows

    one_row = endpoints[len(endpoints) // 2].ticket
    first_batch: List[float] = []

    def small_chunk() -> None:
        t0 = time.perf_counter()
        reader = client.do_get(one_row)
        reader.read_chunk()
        first_batch.append(time.perf_counter() - t0)
        reader.read_all()

    times = {"flight": [], "adbc": []}
    rows = {}
    for _ in range(3):
        via_flight(), via_adbc(), small_chunk()
    first_batch.clear()
    for _ in range(a.repeat):
        for name, f in (("flight", via_flight), ("adbc", via_adbc)):
            t0 = time.perf_counter()
            rows[name] = f()
            times[name].append(time.perf_counter() - t0)
        small_chunk()
    assert rows["flight"] == rows["adbc"], rows

    clients = [flight.FlightClient(a.url) for _ in range(8)]
    def read_endpoint(i: int) -> int:
        return clients[i % 8].do_get(endpoints[i].ticket).read_all().num_rows

    t0 = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        many_rows = sum(pool.map(read_endpoint, range(len(endpoints))))
    many_seconds = time.perf_counter() - t0
    cur.execute(f"SELECT count(*) FROM {a.many}")
    assert many_rows == cur.fetchone()[0], many_rows

    f, d = median_ms(times["flight"]), median_ms(times["adbc"])
    print(f"latency: medians of {a.repeat}, alternating, both sides warm")
    print(f"| measure | hyperflight | ADBC / target |")
    print(f"|---|---|---|")
    print(f"| 1-hour window ({rows['flight']} rows): GetFlightInfo + DoGet vs ADBC warm | {f:.2f} ms | {d:.2f} ms: {f / d:.2f}x (target <= 1.2x) |")
    print(f"| DoGet to first batch, one-row chunk | {median_ms(first_batch):.2f} ms | target <= 3 ms + the query |")
    print(f"| {len(endpoints)} one-row endpoints at parallelism 8 | {many_seconds:.2f} s | target <= 10 s |")
    print(f"| GetFlightInfo, {len(endpoints)} chunks: cached / first | {cached_info:.2f} / {first_info * 1000:.1f} ms | target <= 10 / <= 150 ms |")
    print(f"| of which pyarrow parsing the {len(encoded) / 1e6:.2f} MB FlightInfo (FlightInfo.deserialize alone) | {parse:.2f} ms | |")
    print(f"| GetFlightInfo, {len(endpoints)} chunks, a new request on cached discovery (no plan reuse) | {new_plan:.2f} ms | |")
    return 0


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return int(next(l for l in f if l.startswith("VmRSS:")).split()[1]) / 1024


def many_clients_rss(url: str, info: flight.FlightInfo, pid: int, seconds: float, clients: int = 64) -> str:
    """64 clients, each on a connection of its own, read the table's endpoints round-robin until
    `seconds` pass; meanwhile the server's RSS and reserved batch bytes are sampled."""
    stop = threading.Event()
    rows = [0] * clients
    idle = rss_mib(pid)

    def reader(k: int) -> None:
        c = flight.FlightClient(url)
        endpoints = info.endpoints
        i = k
        while not stop.is_set():
            r = c.do_get(endpoints[i % len(endpoints)].ticket)
            while not stop.is_set():
                try:
                    rows[k] += r.read_chunk().data.num_rows
                except StopIteration:
                    break
            r.cancel()
            i += clients
        c.close()

    stats = flight.FlightClient(url)
    peak_rss, peak_reserved = idle, 0
    threads = [threading.Thread(target=reader, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        peak_rss = max(peak_rss, rss_mib(pid))
        body = next(iter(stats.do_action(flight.Action("stats", b"")))).body.to_pybytes()
        peak_reserved = max(peak_reserved, json.loads(body)["memory_reserved_bytes"])
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    return (f"| server RSS, {clients} clients reading for {seconds:.0f} s ({sum(rows)} rows) | idle {idle:.0f} MiB, "
            f"peak {peak_rss:.0f} MiB; reserved batches peak {peak_reserved / 2**20:.0f} MiB | "
            f"bounded by max_memory_mb + fixed overhead |")


if __name__ == "__main__":
    raise SystemExit(main())
