"""Spark: a PySpark (>= 4.0) Python data source, ``spark.read.format("hyperflight")``, with one
input partition per Flight endpoint (per chunk).

>>> from hyperflight.spark import HyperflightDataSource  # doctest: +SKIP
>>> spark.dataSource.register(HyperflightDataSource)
>>> df = (spark.read.format("hyperflight").option("url", "grpc://127.0.0.1:50051")
...       .option("table", "public.metrics").option("columns", "time,device_id")
...       .option("start", "2026-10-03").load())

Options: ``url`` and ``table`` (required), ``columns`` (comma-separated), ``start`` (inclusive),
``end`` (exclusive), ``token``. The driver plans once (GetFlightInfo, in :meth:`partitions`);
each Spark task reads its endpoint from the endpoint's locations, failing over between them
through the resume ticket (``parts.py``), and hands Spark Arrow record batches.

Needs the ``spark`` extra (``pip install 'hyperflight[spark]'``: pyspark >= 4.0) and Java 17.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional

import pyarrow as pa
from pyspark.sql.datasource import DataSource, DataSourceReader, InputPartition
from pyspark.sql.pandas.types import from_arrow_schema
from pyspark.sql.types import StructType

from .client import connect, descriptor
from .parts import EndpointPart, endpoint_parts


@dataclass
class _Options:
    url: str
    table: str
    columns: Optional[List[str]]
    start: Optional[str]
    end: Optional[str]
    token: Optional[str]

    @classmethod
    def parse(cls, options: Dict[str, str]) -> "_Options":
        missing = [k for k in ("url", "table") if not options.get(k)]
        if missing:
            raise ValueError(f"hyperflight data source: option(s) {', '.join(missing)} required")
        columns = options.get("columns")
        return cls(url=options["url"], table=options["table"],
                   columns=[c.strip() for c in columns.split(",")] if columns else None,
                   start=options.get("start") or None, end=options.get("end") or None,
                   token=options.get("token") or None)


class EndpointPartition(InputPartition):
    """One endpoint: what a Spark task needs to read it."""

    def __init__(self, index: int, part: EndpointPart) -> None:
        super().__init__(index)
        self.part = part


class HyperflightDataSource(DataSource):
    """``spark.read.format("hyperflight")``: a table of a hyperflight server (see the module)."""

    @classmethod
    def name(cls) -> str:
        return "hyperflight"

    def schema(self) -> StructType:
        o = _Options.parse(self.options)
        with connect(o.url, token=o.token) as client:
            d = descriptor(o.table, columns=o.columns, start=o.start, end=o.end)
            arrow = client.flight.get_schema(d, client._options()).schema
        return from_arrow_schema(arrow)

    def reader(self, schema: StructType) -> "HyperflightReader":
        return HyperflightReader(_Options.parse(self.options))


class HyperflightReader(DataSourceReader):
    """Plans on the driver (one partition per endpoint); reads each endpoint in its task."""

    def __init__(self, options: _Options) -> None:
        self.options = options

    def partitions(self) -> List[InputPartition]:
        o = self.options
        _, parts = endpoint_parts(o.url, o.table, columns=o.columns, start=o.start, end=o.end,
                                  token=o.token)
        return [EndpointPartition(i, p) for i, p in enumerate(parts)]

    def read(self, partition: InputPartition) -> Iterator[Any]:
        assert isinstance(partition, EndpointPartition)
        table: pa.Table = partition.part.read()
        yield from table.to_batches()


__all__ = ["EndpointPartition", "HyperflightDataSource", "HyperflightReader"]
