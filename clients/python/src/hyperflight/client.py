"""Flight calls against a hyperflight server, and the parallel chunk reader.

A hypertable's FlightInfo has one endpoint per chunk, in range order. ``read_table`` fetches the
endpoints concurrently, each on its own ``FlightClient``, and concatenates them in endpoint order,
so the result is deterministic whatever the parallelism.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import List, Optional, Sequence, Tuple, Union

import pyarrow as pa
import pyarrow.flight as flight

from .protocol import Command, EndpointMetadata

TableName = Union[str, Tuple[str, str], Sequence[str]]
TimeBound = Union[str, int, datetime, None]

# Endpoint locations with this URI mean "the server you asked" (Flight 15+ convention).
_REUSE_CONNECTION = "arrow-flight-reuse-connection://?"


def _location(url: str) -> str:
    """Accepts ``grpc://host:port``, ``grpc+tls://…`` or a bare ``host:port``."""
    return url if "://" in url else f"grpc://{url}"


def _options(token: Optional[str], timeout: Optional[float] = None) -> flight.FlightCallOptions:
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    return flight.FlightCallOptions(headers=headers, timeout=timeout)


def _split(table: TableName) -> Tuple[str, str]:
    """``"schema.table"`` (first dot splits; no dot means ``public``) or a ``(schema, table)`` pair."""
    if isinstance(table, str):
        schema, dot, name = table.partition(".")
        return (schema, name) if dot else ("public", schema)
    parts = tuple(table)
    if len(parts) != 2 or not all(isinstance(p, str) for p in parts):
        raise ValueError(f"table must be 'schema.table' or a (schema, table) pair, got {table!r}")
    return parts  # type: ignore[return-value]


def _bound(value: TimeBound) -> Union[str, int, None]:
    """RFC 3339 for datetimes (naive ones are taken as UTC); ints and strings pass through."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.isoformat()
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
    # A string keeps the readable "schema.table" form; a pair becomes the array form, which quotes
    # any name exactly.
    command = Command(
        table=table if isinstance(table, str) and "." in table else (schema, name),
        columns=None if columns is None else tuple(columns),
        start=_bound(start),
        end=_bound(end),
        consistent_snapshot=consistent_snapshot,
    )
    return flight.FlightDescriptor.for_command(command.to_json())


def connect(url: str, *, tls_root_certs: Optional[bytes] = None) -> flight.FlightClient:
    """A FlightClient for ``url`` (``grpc://host:port``, ``grpc+tls://host:port`` or ``host:port``).
    ``tls_root_certs`` is the PEM of the CA that signed a TLS server's certificate."""
    return flight.FlightClient(_location(url), tls_root_certs=tls_root_certs)


def list_tables(
    url: str, *, token: Optional[str] = None, tls_root_certs: Optional[bytes] = None
) -> List[str]:
    """Every table the server exposes, as ``"schema.table"``, in the server's order."""
    with connect(url, tls_root_certs=tls_root_certs) as client:
        return [
            ".".join(p.decode() if isinstance(p, bytes) else p for p in info.descriptor.path)
            for info in client.list_flights(options=_options(token))
        ]


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
    """GetFlightInfo for a table (optionally projected, time-bounded, on one snapshot): schema and
    endpoints."""
    command = descriptor(table, columns=columns, start=start, end=end,
                         consistent_snapshot=consistent_snapshot)
    with connect(url, tls_root_certs=tls_root_certs) as client:
        return client.get_flight_info(command, _options(token))


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
    """DoGet every endpoint of ``info``, ``parallelism`` at a time, and concatenate the streams in
    endpoint order into one Table with the FlightInfo's schema. Errors propagate as raised by
    pyarrow.flight."""
    if parallelism < 1:
        raise ValueError("parallelism must be at least 1")
    options = _options(token)
    local = threading.local()
    clients: List[flight.FlightClient] = []
    lock = threading.Lock()

    def client_for(location: str) -> flight.FlightClient:
        # One client per thread and location: no gRPC stream shares a connection with another call
        # from this reader, so the threads truly scan in parallel.
        cache = getattr(local, "clients", None)
        if cache is None:
            cache = local.clients = {}
        if location not in cache:
            cache[location] = flight.FlightClient(location, tls_root_certs=tls_root_certs)
            with lock:
                clients.append(cache[location])
        return cache[location]

    def fetch(endpoint: flight.FlightEndpoint) -> List[pa.RecordBatch]:
        uris = [
            loc.uri.decode() if isinstance(loc.uri, bytes) else str(loc.uri)
            for loc in endpoint.locations
        ]
        uris = [u for u in uris if u != _REUSE_CONNECTION]
        reader = client_for(uris[0] if uris else _location(url)).do_get(endpoint.ticket, options)
        return reader.read_all().to_batches()

    try:
        endpoints = list(info.endpoints)
        if len(endpoints) <= 1 or parallelism == 1:
            parts = [fetch(ep) for ep in endpoints]
        else:
            with ThreadPoolExecutor(max_workers=min(parallelism, len(endpoints))) as pool:
                parts = list(pool.map(fetch, endpoints))
    finally:
        for c in clients:
            c.close()
    return pa.Table.from_batches([b for part in parts for b in part], schema=info.schema)


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
    """Read a table (hypertable chunk by chunk) into one Arrow Table.

    ``table`` is ``"schema.table"`` or a ``(schema, table)`` pair. ``columns`` projects, ``start``
    (inclusive) and ``end`` (exclusive) bound the time dimension: datetimes (naive = UTC), RFC 3339
    strings, or ints for integer dimensions. ``consistent_snapshot`` makes every endpoint read one
    exported snapshot. Endpoints are fetched ``parallelism`` at a time and
    concatenated in endpoint (= time range) order. ``token`` is the server's ``auth_token``;
    ``tls_root_certs`` the PEM CA for a ``grpc+tls://`` server.

    >>> t = read_table("grpc://127.0.0.1:50051", "public.metrics")  # doctest: +SKIP
    """
    info = flight_info(
        url, table, columns=columns, start=start, end=end, consistent_snapshot=consistent_snapshot,
        token=token, tls_root_certs=tls_root_certs,
    )
    return read_flight_info(
        url, info, parallelism=parallelism, token=token, tls_root_certs=tls_root_certs
    )


def do_action(
    url: str,
    action: str,
    *,
    token: Optional[str] = None,
    timeout: Optional[float] = None,
    tls_root_certs: Optional[bytes] = None,
) -> List[bytes]:
    """Run a DoAction (``health``, ``stats``, ``refresh``) and return the result bodies."""
    with connect(url, tls_root_certs=tls_root_certs) as client:
        results = client.do_action(flight.Action(action, b""), _options(token, timeout))
        return [r.body.to_pybytes() for r in results]


# pyarrow turns a gRPC status into an Arrow exception class, several codes sharing a class; the
# message prefix it adds tells those apart. Resuming clients need FAILED_PRECONDITION ("re-plan this
# chunk") apart from INVALID_ARGUMENT, which both arrive as ArrowInvalid.
_INVALID_BY_MESSAGE = (
    ("precondition failed", "FAILED_PRECONDITION"),
    ("resource exhausted", "RESOURCE_EXHAUSTED"),
    ("out-of-range", "OUT_OF_RANGE"),
)
_BY_CLASS = (
    (flight.FlightUnauthenticatedError, "UNAUTHENTICATED"),
    (flight.FlightUnauthorizedError, "PERMISSION_DENIED"),
    (flight.FlightUnavailableError, "UNAVAILABLE"),
    (flight.FlightTimedOutError, "DEADLINE_EXCEEDED"),
    (flight.FlightCancelledError, "CANCELLED"),
    (flight.FlightInternalError, "INTERNAL"),
    (pa.ArrowKeyError, "NOT_FOUND"),
    (pa.ArrowNotImplementedError, "UNIMPLEMENTED"),
)


def grpc_status(exc: BaseException) -> Optional[str]:
    """The gRPC status code name behind an exception raised by a Flight call (``"NOT_FOUND"``,
    ``"INVALID_ARGUMENT"``, ``"FAILED_PRECONDITION"``, …), or None when it is not one."""
    for cls, code in _BY_CLASS:
        if isinstance(exc, cls):
            return code
    if isinstance(exc, pa.ArrowInvalid):
        text = str(exc)
        for needle, code in _INVALID_BY_MESSAGE:
            if needle in text:
                return code
        return "INVALID_ARGUMENT"
    if isinstance(exc, flight.FlightServerError):
        return "UNKNOWN"
    return None
