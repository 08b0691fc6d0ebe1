"""Command line: ``python -m hyperflight read URL TABLE`` and ``python -m hyperflight list URL``."""

from __future__ import annotations

import argparse
import sys
import time
from typing import List, Optional

from .client import flight_info, list_tables, read_flight_info


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hyperflight", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    read = sub.add_parser("read", help="read a table and print a summary")
    read.add_argument("url", help="grpc://host:port")
    read.add_argument("table", help="schema.table")
    read.add_argument("--parallelism", type=int, default=4)
    read.add_argument("--columns", help="comma-separated projection")
    read.add_argument("--start", help="RFC 3339, inclusive")
    read.add_argument("--end", help="RFC 3339, exclusive")
    read.add_argument("--token", help="bearer token")
    ls = sub.add_parser("list", help="list the exposed tables")
    ls.add_argument("url")
    ls.add_argument("--token")
    args = parser.parse_args(argv)

    if args.command == "list":
        for name in list_tables(args.url, token=args.token):
            print(name)
        return 0

    started = time.perf_counter()
    info = flight_info(
        args.url,
        args.table,
        columns=args.columns.split(",") if args.columns else None,
        start=args.start,
        end=args.end,
        token=args.token,
    )
    table = read_flight_info(args.url, info, parallelism=args.parallelism, token=args.token)
    seconds = time.perf_counter() - started
    print(f"table:     {args.table}")
    print(f"rows:      {table.num_rows}")
    print(f"endpoints: {len(info.endpoints)}")
    print(f"bytes:     {table.nbytes}")
    print(f"seconds:   {seconds:.3f}")
    print(f"rows/s:    {table.num_rows / seconds:,.0f}")
    print("schema:")
    for field in table.schema:
        print(f"  {field.name}: {field.type}{'' if field.nullable else ' not null'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
