"""The :class:`Client` (one held connection) and the module functions, thin wrappers over it.

A hypertable's FlightInfo has one endpoint per chunk, in range order. :meth:`Client.stream` reads
the endpoints ``parallelism`` at a time with bounded memory and hands out their batches in endpoint
order, resuming a broken stream from its last ticket (``stream.py``); :meth:`Client.read` collects
that stream into one Table, so the result is deterministic whatever the parallelism. Failures are
typed (``errors.py``).
"""

from __future__ import annotations

import re
import threading
from datetime import date, datetime, timezone
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import pyarrow as pa
import pyarrow.flight as flight

from .errors import HyperflightError, from_flight
from .export import ExportSummary, export
from .protocol import Command, EndpointMetadata
from .stream import RetryPolicy, endpoint_batches, ordered_batches

TableName = Union[str, Tuple[str, str], Sequence[str]]
TimeBound = Union[str, int, datetime, date, None]

# Endpoint locations with this URI mean "the server you asked" (Flight 15+ convention).
_REUSE_CONNECTION = "arrow-flight-reuse-connection://?"
_PLAIN_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_INTEGER = re.compile(r"^[+-]?\d+$")


def _location(url: str) -> str:
    """Accepts ``grpc://host:port``, ``grpc+tls://…`` or a bare ``host:port``."""
    return url if "://" in url else f"grpc://{url}"


def _options(token: Optional[str], timeout: Optional[float] = None) -> flight.FlightCallOptions:
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    return flight.FlightCallOptions(headers=headers, timeout=timeout)


def parse_table_name(text: str) -> Tuple[str, str]:
    """``schema.table`` as SQL writes it: ``"My Schema".t`` or ``"a.b"."c""d"`` (double quotes
    around a part keep its dots and case, ``""`` is a quote); no dot means ``public``. Unquoted parts
    are taken as written (the server matches names exactly)."""
    parts: List[str] = []
    i, n = 0, len(text)
    while True:
        if i < n and text[i] == '"':
            j, buf = i + 1, []
            while True:
                k = text.find('"', j)
                if k < 0:
                    raise ValueError(f"table name {text!r}: unterminated quote")
                buf.append(text[j:k])
                if text[k + 1:k + 2] == '"':
                    buf.append('"')
                    j = k + 2
                    continue
                break
            parts.append("".join(buf))
            i = k + 1
        else:
            k = text.find(".", i)
            end = n if k < 0 else k
            if '"' in text[i:end]:
                raise ValueError(f"table name {text!r}: a quote inside an unquoted name")
            parts.append(text[i:end])
            i = end
        if i == n:
            break
        if text[i] != ".":
            raise ValueError(f"table name {text!r}: expected '.' after a quoted name")
        i += 1
    if len(parts) > 2 or not all(parts):
        raise ValueError(f"table name {text!r} must be table, schema.table or \"Quoted Schema\".\"Table\"")
    return ("public", parts[0]) if len(parts) == 1 else (parts[0], parts[1])


def _split(table: TableName) -> Tuple[str, str]:
    """A table argument as ``(schema, table)``: see :func:`parse_table_name`, or a pair."""
    if isinstance(table, str):
        if '"' in table:
            return parse_table_name(table)
        schema, dot, name = table.partition(".")
        return (schema, name) if dot else ("public", schema)
    parts = tuple(table)
    if len(parts) != 2 or not all(isinstance(p, str) for p in parts):
        raise ValueError(f"table must be 'schema.table' or a (schema, table) pair, got {table!r}")
    return parts  # type: ignore[return-value]


def _bound(value: TimeBound) -> Union[str, int, None]:
    """RFC 3339 for datetimes (naive ones are taken as UTC) and dates (midnight UTC); ints and
    strings pass through (a plain ``YYYY-MM-DD`` string becomes midnight UTC)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.isoformat()
    if isinstance(value, date):
        return f"{value.isoformat()}T00:00:00Z"
    if isinstance(value, str) and _PLAIN_DATE.match(value):
        return f"{value}T00:00:00Z"
    return value


def descriptor(
    table: TableName,
    *,
    columns: Optional[Sequence[str]] = None,
    start: TimeBound = None,
    end: TimeBound = None,
    consistent_snapshot: bool = False,
) -> flight.FlightDescriptor:
    """The descriptor for a table: PATH for a whole table, a JSON CMD (:class:`Command`) when a
    projection, a time range (``start`` inclusive, ``end`` exclusive) or one snapshot for every
    endpoint is asked for. Raises ``ValueError`` for what the server would refuse."""
    schema, name = _split(table)
    if columns is None and start is None and end is None and not consistent_snapshot:
        return flight.FlightDescriptor.for_path(schema, name)
    # A plain string keeps the readable "schema.table" form; a pair or a quoted name becomes the
    # array form, which names any table exactly.
    readable = isinstance(table, str) and "." in table and '"' not in table
    command = Command(
        table=table if readable else (schema, name),  # type: ignore[arg-type]
        columns=None if columns is None else tuple(columns),
        start=_bound(start),
        end=_bound(end),
        consistent_snapshot=consistent_snapshot,
    )
    return flight.FlightDescriptor.for_command(command.to_json())


def _call(fn: Callable[[], Any]) -> Any:
    """Runs a Flight call, raising its failure as a typed :class:`HyperflightError`."""
    try:
        return fn()
    except (pa.ArrowException, flight.FlightError) as exc:
        err = from_flight(exc)
        if err is exc:
            raise
        raise err from exc


class Client:
    """One connection to a hyperflight server (a context manager; ``close()`` ends it).

    ``parallelism`` is how many endpoints a read fetches at once, ``retry`` the bounded retries
    with backoff of a broken stream, ``timeout`` the deadline of each unary call in seconds.
    Every method raises :class:`HyperflightError` subclasses (:class:`NotFound`, …)."""

    def __init__(
        self,
        url: str,
        *,
        token: Optional[str] = None,
        tls_root_certs: Optional[bytes] = None,
        parallelism: int = 4,
        retry: RetryPolicy = RetryPolicy(),
        timeout: Optional[float] = None,
    ) -> None:
        if parallelism < 1:
            raise ValueError("parallelism must be at least 1")
        self.url = _location(url)
        self.parallelism = parallelism
        self.retry = retry
        self._token = token  # sent as "authorization: Bearer …" on every call; never printed
        self._tls_root_certs = tls_root_certs  # for endpoints that name another location
        self._timeout = timeout
        self.flight = flight.FlightClient(self.url, tls_root_certs=tls_root_certs)
        self._others: Dict[str, flight.FlightClient] = {}  # other locations endpoints name
        self._lock = threading.Lock()
        self.retries = 0  # failed streams retried (resumed or read again) so far, for diagnostics

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            for c in self._others.values():
                c.close()
            self._others.clear()
        self.flight.close()

    def _options(self, unary: bool = True) -> flight.FlightCallOptions:
        return _options(self._token, self._timeout if unary else None)

    def clients_for(self, endpoint: flight.FlightEndpoint) -> List[flight.FlightClient]:
        """A client per location the endpoint lists, in its order (this connection for its own URL
        and for Flight's "reuse this connection" URI; one client per other server, kept open); this
        connection alone when it lists none."""
        clients = []
        for loc in endpoint.locations:
            uri = loc.uri.decode() if isinstance(loc.uri, bytes) else str(loc.uri)
            if uri in (_REUSE_CONNECTION, self.url):
                clients.append(self.flight)
                continue
            with self._lock:
                if uri not in self._others:
                    self._others[uri] = flight.FlightClient(uri, tls_root_certs=self._tls_root_certs)
                clients.append(self._others[uri])
        return clients or [self.flight]

    def _count_retry(self, _err: HyperflightError) -> None:
        with self._lock:
            self.retries += 1

    # --- metadata ---

    def tables(self) -> List[str]:
        """Every table the server exposes, as ``"schema.table"``, in the server's order."""
        infos = _call(lambda: list(self.flight.list_flights(options=self._options())))
        return [".".join(p.decode() if isinstance(p, bytes) else p for p in info.descriptor.path)
                for info in infos]

    def schema(self, table: TableName) -> pa.Schema:
        """The table's Arrow schema, with ``hyperflight.*`` metadata (kind, time column, key)."""
        schema, name = _split(table)
        result = _call(lambda: self.flight.get_schema(flight.FlightDescriptor.for_path(schema, name),
                                                      self._options()))
        return result.schema

    def _window(self, table: TableName, start: TimeBound, end: TimeBound) -> Tuple[TimeBound, TimeBound]:
        """Digit strings become ints when the table's time dimension is an integer column (its type
        is the schema's ``hyperflight.time_column`` field's), so ``--start 500000`` works."""
        if not any(isinstance(b, str) and _INTEGER.match(b) for b in (start, end)):
            return start, end
        schema = self.schema(table)
        column = (schema.metadata or {}).get(b"hyperflight.time_column")
        index = schema.get_field_index(column.decode()) if column else -1
        if index < 0 or not pa.types.is_integer(schema.field(index).type):
            return start, end
        return tuple(int(b) if isinstance(b, str) and _INTEGER.match(b) else b  # type: ignore[return-value]
                     for b in (start, end))

    def info(
        self,
        table: TableName,
        *,
        columns: Optional[Sequence[str]] = None,
        start: TimeBound = None,
        end: TimeBound = None,
        consistent_snapshot: bool = False,
    ) -> flight.FlightInfo:
        """GetFlightInfo: schema and endpoints (one per chunk, in range order). ``start``
        (inclusive) and ``end`` (exclusive) bound the time dimension: datetimes (naive = UTC),
        dates, RFC 3339 or ``YYYY-MM-DD`` text, ints (or digit strings) for integer dimensions."""
        start, end = self._window(table, start, end)
        command = descriptor(table, columns=columns, start=start, end=end,
                             consistent_snapshot=consistent_snapshot)
        return _call(lambda: self.flight.get_flight_info(command, self._options()))

    # --- data ---

    def stream_info(
        self,
        info: flight.FlightInfo,
        *,
        parallelism: Optional[int] = None,
        on_endpoint_done: Callable[[int], None] = lambda i: None,
    ) -> pa.RecordBatchReader:
        """The batches of every endpoint of ``info`` as one reader, in endpoint order, with at most
        ``parallelism`` endpoints in flight and two batches queued for each; broken streams resume
        from their last ticket. ``on_endpoint_done(i)`` is called once endpoint ``i`` is read."""
        options = self._options(unary=False)

        def read(endpoint: flight.FlightEndpoint, on_reader: Callable) -> Iterator[pa.RecordBatch]:
            return endpoint_batches(self.clients_for, endpoint, options, self.retry, on_reader,
                                    self._count_retry)

        batches = ordered_batches(list(info.endpoints), read,
                                  parallelism=parallelism or self.parallelism,
                                  on_endpoint_done=on_endpoint_done)
        return pa.RecordBatchReader.from_batches(info.schema, batches)

    def stream(
        self,
        table: TableName,
        *,
        columns: Optional[Sequence[str]] = None,
        start: TimeBound = None,
        end: TimeBound = None,
        consistent_snapshot: bool = False,
        parallelism: Optional[int] = None,
    ) -> pa.RecordBatchReader:
        """A table as a ``pyarrow.RecordBatchReader`` with bounded memory (see :meth:`stream_info`):
        batches in endpoint (= time range) order. Feed it to DuckDB, a Parquet writer, …"""
        info = self.info(table, columns=columns, start=start, end=end,
                         consistent_snapshot=consistent_snapshot)
        return self.stream_info(info, parallelism=parallelism)

    def read(
        self,
        table: TableName,
        *,
        columns: Optional[Sequence[str]] = None,
        start: TimeBound = None,
        end: TimeBound = None,
        consistent_snapshot: bool = False,
        parallelism: Optional[int] = None,
    ) -> pa.Table:
        """A table as one ``pyarrow.Table`` (endpoints fetched in parallel, in endpoint order)."""
        return self.stream(table, columns=columns, start=start, end=end,
                           consistent_snapshot=consistent_snapshot, parallelism=parallelism).read_all()

    def to_pandas(self, table: TableName, **read_options: Any) -> Any:
        """:meth:`read` as a pandas DataFrame (needs pandas); time zones, decimals and UUIDs are
        kept."""
        return self.read(table, **read_options).to_pandas()

    def to_polars(self, table: TableName, **read_options: Any) -> Any:
        """:meth:`read` as a Polars DataFrame (needs polars). Polars cannot import
        ``month_day_nano_interval`` (PostgreSQL ``interval``) columns: leave them out with
        ``columns=``."""
        import polars  # noqa: PLC0415 -- optional dependency

        return polars.from_arrow(self.read(table, **read_options))

    def to_duckdb(self, table: TableName, connection: Any = None, **read_options: Any) -> Any:
        """A DuckDB relation over :meth:`stream` (needs duckdb): DuckDB pulls the batches as it
        scans, so an aggregate never holds the table in memory. The relation reads once."""
        import duckdb  # noqa: PLC0415 -- optional dependency

        con = connection if connection is not None else duckdb.connect()
        return con.from_arrow(self.stream(table, **read_options))

    def export(self, table: TableName, path: str, **options: Any) -> "ExportSummary":
        """Streams a table to ``path`` (Parquet, CSV or Arrow IPC): see :func:`hyperflight.export.export`."""
        return export(self, table, path, **options)

    def do_action(self, action: str, body: bytes = b"") -> List[bytes]:
        """Run a DoAction (``health``, ``stats``, ``refresh``) and return the result bodies."""
        return _call(lambda: [r.body.to_pybytes()
                              for r in self.flight.do_action(flight.Action(action, body), self._options())])


def connect(
    url: str,
    *,
    token: Optional[str] = None,
    tls_root_certs: Optional[bytes] = None,
    parallelism: int = 4,
    retry: RetryPolicy = RetryPolicy(),
    timeout: Optional[float] = None,
) -> Client:
    """A :class:`Client` for ``url`` (``grpc://host:port``, ``grpc+tls://host:port`` or
    ``host:port``). ``token`` is the server's ``auth_token``; ``tls_root_certs`` the PEM of the CA
    that signed a TLS server's certificate.

    >>> with hyperflight.connect("grpc://127.0.0.1:50051") as c:  # doctest: +SKIP
    ...     t = c.read("public.metrics")
    """
    return Client(url, token=token, tls_root_certs=tls_root_certs, parallelism=parallelism,
                  retry=retry, timeout=timeout)


# --- module functions: one call, one connection ---


def list_tables(url: str, *, token: Optional[str] = None, tls_root_certs: Optional[bytes] = None) -> List[str]:
    """Every table the server exposes, as ``"schema.table"``, in the server's order."""
    with connect(url, token=token, tls_root_certs=tls_root_certs) as c:
        return c.tables()


def flight_info(
    url: str,
    table: TableName,
    *,
    columns: Optional[Sequence[str]] = None,
    start: TimeBound = None,
    end: TimeBound = None,
    consistent_snapshot: bool = False,
    token: Optional[str] = None,
    tls_root_certs: Optional[bytes] = None,
) -> flight.FlightInfo:
    """GetFlightInfo for a table (optionally projected, time-bounded, on one snapshot)."""
    with connect(url, token=token, tls_root_certs=tls_root_certs) as c:
        return c.info(table, columns=columns, start=start, end=end, consistent_snapshot=consistent_snapshot)


def endpoint_metadata(info: flight.FlightInfo) -> List[Optional[EndpointMetadata]]:
    """Each endpoint's ``app_metadata`` as :class:`EndpointMetadata` (kind, chunk, chunk_id,
    range_start, range_end, size_bytes, estimated_rows, is_compressed, and compression_ratio,
    block_start, block_end where they apply), in endpoint order; None where an endpoint has none.
    Raises :class:`ProtocolError` for metadata that does not follow the contract."""
    return [
        EndpointMetadata.from_json(ep.app_metadata) if getattr(ep, "app_metadata", b"") else None
        for ep in info.endpoints
    ]


def read_flight_info(
    url: str,
    info: flight.FlightInfo,
    *,
    parallelism: int = 4,
    token: Optional[str] = None,
    tls_root_certs: Optional[bytes] = None,
) -> pa.Table:
    """DoGet every endpoint of ``info``, ``parallelism`` at a time, into one Table in endpoint
    order, with the FlightInfo's schema."""
    with connect(url, token=token, tls_root_certs=tls_root_certs, parallelism=parallelism) as c:
        return c.stream_info(info).read_all()


def read_table(
    url: str,
    table: TableName,
    *,
    parallelism: int = 4,
    columns: Optional[Sequence[str]] = None,
    start: TimeBound = None,
    end: TimeBound = None,
    consistent_snapshot: bool = False,
    token: Optional[str] = None,
    tls_root_certs: Optional[bytes] = None,
) -> pa.Table:
    """Read a table (hypertable chunk by chunk) into one Arrow Table: :meth:`Client.read` on a
    connection of its own.

    >>> t = read_table("grpc://127.0.0.1:50051", "public.metrics")  # doctest: +SKIP
    """
    with connect(url, token=token, tls_root_certs=tls_root_certs, parallelism=parallelism) as c:
        return c.read(table, columns=columns, start=start, end=end, consistent_snapshot=consistent_snapshot)


def do_action(
    url: str,
    action: str,
    *,
    token: Optional[str] = None,
    timeout: Optional[float] = None,
    tls_root_certs: Optional[bytes] = None,
) -> List[bytes]:
    """Run a DoAction (``health``, ``stats``, ``refresh``) and return the result bodies."""
    with connect(url, token=token, tls_root_certs=tls_root_certs, timeout=timeout) as c:
        return c.do_action(action)


__all__ = ["Client", "HyperflightError", "connect", "descriptor", "do_action", "endpoint_metadata",
           "flight_info", "list_tables", "parse_table_name", "read_flight_info", "read_table"]
