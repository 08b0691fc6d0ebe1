"""The ``hyperflight`` command (also ``python -m hyperflight``): tables, info, read and export.

Windows (``--start`` inclusive, ``--end`` exclusive) take what the table's time dimension needs: an
integer for an integer column, RFC 3339 or a plain date (midnight UTC) for a time column. Table
names are SQL-like: ``schema.table``, ``"My Schema"."My Table"``. A failure prints one line,
``hyperflight: CODE: message``, on stderr and exits 1 (2 for a usage error).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import List, Optional

from . import __version__
from .client import Client, connect
from .errors import HyperflightError
from .export import FORMATS, export
from .protocol import ProtocolError


def _connection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("url", help="grpc://host:port or grpc+tls://host:port")
    p.add_argument("--token", help="bearer token (the server's auth_token)")
    p.add_argument("--tls-root-certs", metavar="PEM", help="file of the CA that signed the server's certificate")


def _query_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("table", help='schema.table, or "Quoted Schema"."Table"')
    p.add_argument("--columns", help="comma-separated projection")
    p.add_argument("--start", help="inclusive: an integer, RFC 3339 or YYYY-MM-DD, as the time column needs")
    p.add_argument("--end", help="exclusive: as --start")
    p.add_argument("--consistent-snapshot", action="store_true", help="every endpoint on one snapshot")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hyperflight", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("tables", "list"):
        p = sub.add_parser(name, help="list the exposed tables" + (" (alias of tables)" if name == "list" else ""))
        _connection_args(p)
    p = sub.add_parser("info", help="schema and endpoints of a table, as JSON")
    _connection_args(p)
    _query_args(p)
    p = sub.add_parser("read", help="read a table and print a summary")
    _connection_args(p)
    _query_args(p)
    p.add_argument("--parallelism", type=int, default=4)
    p = sub.add_parser("export", help="stream a table to a Parquet, CSV or Arrow file")
    _connection_args(p)
    _query_args(p)
    p.add_argument("out", help="output file")
    p.add_argument("--format", choices=FORMATS, help="default: from OUT's suffix, else parquet")
    p.add_argument("--parallelism", type=int, default=4)
    bar = p.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None,
                     help="progress bar on stderr (default: when stderr is a terminal)")
    bar.add_argument("--no-progress", dest="progress", action="store_false")
    return parser


def _client(args: argparse.Namespace) -> Client:
    certs = Path(args.tls_root_certs).read_bytes() if args.tls_root_certs else None
    return connect(args.url, token=args.token, tls_root_certs=certs,
                   parallelism=getattr(args, "parallelism", 4))


def _query(args: argparse.Namespace) -> dict:
    return dict(columns=args.columns.split(",") if args.columns else None, start=args.start, end=args.end,
                consistent_snapshot=args.consistent_snapshot)


def _info(client: Client, args: argparse.Namespace) -> None:
    from .client import endpoint_metadata

    info = client.info(args.table, **_query(args))
    meta = info.schema.metadata or {}
    print(json.dumps({
        "total_records": info.total_records,
        "total_bytes": info.total_bytes,
        "metadata": {k.decode(): v.decode() for k, v in meta.items()},
        "schema": [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in info.schema],
        "endpoints": [m.to_dict() if m else None for m in endpoint_metadata(info)],
    }, indent=2))


def _read(client: Client, args: argparse.Namespace) -> None:
    started = time.perf_counter()
    info = client.info(args.table, **_query(args))
    rows = nbytes = 0
    for batch in client.stream_info(info):
        rows += batch.num_rows
        nbytes += batch.nbytes
    seconds = time.perf_counter() - started
    print(f"table:     {args.table}")
    print(f"rows:      {rows}")
    print(f"endpoints: {len(info.endpoints)}")
    print(f"bytes:     {nbytes}")
    print(f"seconds:   {seconds:.3f}")
    print(f"rows/s:    {rows / max(seconds, 1e-9):,.0f}")
    print("schema:")
    for field in info.schema:
        print(f"  {field.name}: {field.type}{'' if field.nullable else ' not null'}")


def _export(client: Client, args: argparse.Namespace) -> None:
    done = export(client, args.table, args.out, format=args.format, parallelism=args.parallelism,
                  progress=args.progress, **_query(args))
    print(f"wrote {done.rows} rows ({done.bytes / 1e6:.1f} MB in Arrow, {done.endpoints} endpoints) "
          f"to {done.path} as {done.format} in {done.seconds:.2f}s", file=sys.stderr)


def _one_line(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, HyperflightError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        with _client(args) as client:
            if args.command in ("tables", "list"):
                for name in client.tables():
                    print(name)
            elif args.command == "info":
                _info(client, args)
            elif args.command == "read":
                _read(client, args)
            else:
                _export(client, args)
    except KeyboardInterrupt:
        print("hyperflight: interrupted", file=sys.stderr)
        return 130
    except (HyperflightError, ProtocolError, ValueError, OSError) as exc:
        print(f"hyperflight: {_one_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # pyarrow errors outside a Flight call (a file writer's, a cast's)
        print(f"hyperflight: {_one_line(exc)}", file=sys.stderr)
        return 1
    return 0
