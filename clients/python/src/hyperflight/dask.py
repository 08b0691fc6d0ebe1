"""Dask: a table as a ``dask.dataframe`` with one partition per Flight endpoint (per chunk).

GetFlightInfo runs once, where :func:`read_table` is called; each partition is a task that reads
its endpoint on whichever worker runs it, from the endpoint's locations (a fleet of servers lists
several: the task fails over between them through the resume ticket; see ``parts.py``). Nothing
but the ticket, the locations and the connection settings travels in the task graph.

>>> import hyperflight.dask  # doctest: +SKIP
>>> df = hyperflight.dask.read_table("grpc://127.0.0.1:50051", "public.metrics",
...                                  columns=["time", "device_id"], start="2026-10-03")
>>> df.groupby("device_id").size().compute()

Needs the ``dask`` extra (``pip install 'hyperflight[dask]'``: dask[dataframe,distributed]).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import pyarrow as pa

from .client import TableName, TimeBound
from .parts import EndpointPart, endpoint_parts
from .stream import RetryPolicy


def _to_pandas(table: pa.Table) -> Any:
    # Arrow-backed columns: integers with NULLs stay integers, time zones and decimals are kept,
    # so a partition holds exactly what the server sent.
    import pandas as pd  # noqa: PLC0415 -- a dependency of dask.dataframe

    return table.to_pandas(types_mapper=pd.ArrowDtype)


def _read_part(part: EndpointPart) -> Any:
    return _to_pandas(part.read())


def read_table(
    url: str,
    table: TableName,
    *,
    columns: Optional[Sequence[str]] = None,
    start: TimeBound = None,
    end: TimeBound = None,
    token: Optional[str] = None,
    tls_root_certs: Optional[bytes] = None,
    retry: RetryPolicy = RetryPolicy(),
) -> Any:
    """A lazy ``dask.dataframe.DataFrame`` of ``table`` with one partition per endpoint, in
    endpoint order (a hypertable's chunks in time order). ``columns``, ``start`` (inclusive) and
    ``end`` (exclusive) are those of :meth:`hyperflight.Client.info`. The plan is made now; its
    tickets expire after the server's ``ticket_ttl_minutes``, so compute within that time.
    ``consistent_snapshot`` is not offered: its snapshot is held by the planning server only, which
    would defeat spreading the reads."""
    import dask.dataframe as dd  # noqa: PLC0415 -- optional dependency

    schema, parts = endpoint_parts(url, table, columns=columns, start=start, end=end, token=token,
                                   tls_root_certs=tls_root_certs, retry=retry)
    meta = _to_pandas(schema.empty_table())
    if not parts:
        return dd.from_pandas(meta, npartitions=1)
    return dd.from_map(_read_part, parts, meta=meta, label="hyperflight-read", enforce_metadata=False)


__all__ = ["read_table"]
