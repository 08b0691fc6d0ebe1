"""Endpoints as self-contained parts for distributed readers (:mod:`hyperflight.dask`,
:mod:`hyperflight.spark`): GetFlightInfo runs once, on the driver; each part carries one endpoint's
ticket, its locations and the connection settings, and is read wherever the engine runs its task,
failing over between the endpoint's locations through the resume ticket (``stream.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence, Tuple

import pyarrow as pa
import pyarrow.flight as flight

from .client import TableName, TimeBound, connect
from .stream import RetryPolicy, endpoint_batches


@dataclass(frozen=True)
class EndpointPart:
    """One endpoint as a task carries it: everything a worker needs to read it, and nothing else."""

    url: str  # the server that planned it: "reuse this connection" locations mean it
    ticket: bytes
    locations: Tuple[str, ...]  # in the server's order; empty: read from ``url``
    schema: pa.Schema
    token: Optional[str] = field(default=None, repr=False)
    tls_root_certs: Optional[bytes] = field(default=None, repr=False)
    retry: RetryPolicy = RetryPolicy()

    def read(self) -> pa.Table:
        """The endpoint's rows, read here (on the worker), failing over between its locations."""
        endpoint = flight.FlightEndpoint(self.ticket, list(self.locations))
        with connect(self.url, token=self.token, tls_root_certs=self.tls_root_certs,
                     retry=self.retry) as client:
            options = client._options(unary=False)
            batches = list(endpoint_batches(client.clients_for, endpoint, options, self.retry))
        return pa.Table.from_batches(batches, schema=self.schema)


def _uri(location: Any) -> str:
    uri = location.uri
    return uri.decode() if isinstance(uri, bytes) else str(uri)


def endpoint_parts(
    url: str,
    table: TableName,
    *,
    columns: Optional[Sequence[str]] = None,
    start: TimeBound = None,
    end: TimeBound = None,
    token: Optional[str] = None,
    tls_root_certs: Optional[bytes] = None,
    retry: RetryPolicy = RetryPolicy(),
) -> Tuple[pa.Schema, List[EndpointPart]]:
    """GetFlightInfo for the table: its schema and one :class:`EndpointPart` per endpoint, in
    endpoint (= time range) order. Shared by the Dask and Spark readers."""
    with connect(url, token=token, tls_root_certs=tls_root_certs) as client:
        info = client.info(table, columns=columns, start=start, end=end)
        url = client.url
    schema = info.schema
    parts = [
        EndpointPart(url=url, ticket=e.ticket.ticket, locations=tuple(_uri(loc) for loc in e.locations),
                     schema=schema, token=token, tls_root_certs=tls_root_certs, retry=retry)
        for e in info.endpoints
    ]
    return schema, parts


__all__ = ["EndpointPart", "endpoint_parts"]
