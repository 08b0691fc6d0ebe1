"""hyperflight: read TimescaleDB hypertables over Apache Arrow Flight, one endpoint per chunk.

>>> import hyperflight
>>> with hyperflight.connect("grpc://127.0.0.1:50051") as client:  # doctest: +SKIP
...     table = client.read("public.metrics")

# Layout
- ``client``: :class:`Client` (one held connection: tables, info, read, stream, export, to_*) and the
  module functions, thin wrappers over it.
- ``stream``: one endpoint read with automatic resume from its tickets; many in parallel, in order,
  with bounded memory.
- ``errors``: typed errors from the gRPC status code, and the retry classification.
- ``export``: streaming Parquet / CSV / Arrow IPC export with a progress bar.
- ``protocol``: the wire contract (CMD descriptor, endpoint metadata), mirrored from ``crates/protocol``.
- ``cli``: the ``hyperflight`` command.
- ``parts``, ``dask``, ``spark``: distributed readers (one partition per endpoint, read on the workers
  from the endpoint's locations); ``dask`` and ``spark`` need their extras and are not imported here.
"""

try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("hyperflight")
except PackageNotFoundError:  # pragma: no cover -- run from a source tree that is not installed
    __version__ = "0+unknown"

from .client import (
    Client,
    connect,
    descriptor,
    do_action,
    endpoint_metadata,
    flight_info,
    list_tables,
    parse_table_name,
    read_flight_info,
    read_table,
)
from .errors import (
    Aborted,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    HyperflightError,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Retry,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    Unknown,
    classify,
    from_flight,
    grpc_status,
)
from .export import ExportSummary
from .protocol import ENDPOINT_KINDS, Command, EndpointMetadata, ProtocolError
from .stream import RetryPolicy

__all__ = [
    "ENDPOINT_KINDS", "Aborted", "Cancelled", "Client", "Command", "DeadlineExceeded", "EndpointMetadata",
    "ExportSummary", "FailedPrecondition", "HyperflightError", "Internal", "InvalidArgument", "NotFound",
    "OutOfRange", "PermissionDenied", "ProtocolError", "ResourceExhausted", "Retry", "RetryPolicy",
    "Unauthenticated", "Unavailable", "Unimplemented", "Unknown", "classify", "connect", "descriptor",
    "do_action", "endpoint_metadata", "flight_info", "from_flight", "grpc_status", "list_tables",
    "parse_table_name", "read_flight_info", "read_table",
]
