"""hyperflight: read TimescaleDB hypertables over Apache Arrow Flight, one endpoint per chunk.

>>> import hyperflight
>>> table = hyperflight.read_table("grpc://127.0.0.1:50051", "public.metrics")  # doctest: +SKIP
"""

from .client import (
    connect,
    descriptor,
    do_action,
    endpoint_metadata,
    flight_info,
    grpc_status,
    list_tables,
    read_flight_info,
    read_table,
)
from .protocol import ENDPOINT_KINDS, Command, EndpointMetadata, ProtocolError

__all__ = [
    "ENDPOINT_KINDS",
    "Command",
    "EndpointMetadata",
    "ProtocolError",
    "connect",
    "descriptor",
    "do_action",
    "endpoint_metadata",
    "flight_info",
    "grpc_status",
    "list_tables",
    "read_flight_info",
    "read_table",
]
__version__ = "0.1.0"
