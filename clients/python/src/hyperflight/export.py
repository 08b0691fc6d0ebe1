"""Export: a table streamed to a Parquet, CSV or Arrow IPC file with bounded memory and a progress bar.

Batches go from :meth:`Client.stream_info` straight to the file writer, so memory stays at a few
batches per endpoint in flight whatever the table's size. The file is written as ``OUT.partial`` and
renamed to ``OUT`` once complete: a failed export never leaves a truncated file under the real name.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Sequence

import pyarrow as pa

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client, TableName, TimeBound

FORMATS = ("parquet", "csv", "arrow")
_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".arrow": "arrow",
             ".feather": "arrow", ".ipc": "arrow"}


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote."""

    path: str
    format: str
    rows: int
    bytes: int  # Arrow bytes of the batches written (not the file's size)
    endpoints: int
    seconds: float


def format_for(path: str, format: Optional[str]) -> str:
    """``format`` when given, else from the file's suffix, else Parquet."""
    if format is not None:
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
        return format
    return _SUFFIXES.get(os.path.splitext(path)[1].lower(), "parquet")


def _writer(fmt: str, path: str, schema: pa.Schema) -> Any:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetWriter(path, schema)
    if fmt == "csv":
        import pyarrow.csv as csv

        return csv.CSVWriter(path, schema)
    return pa.ipc.new_file(path, schema)


class _Progress:
    """A tqdm bar on stderr: endpoints done / total, and rows, bytes and rows/s as its postfix."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.bar = None
        self.rows = self.bytes = 0
        self.started = time.monotonic()
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="endpoint", file=sys.stderr, dynamic_ncols=True,
                            desc="export", mininterval=0.2)

    def batch(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        self.bytes += batch.nbytes
        if self.bar is not None:
            self.bar.set_postfix_str(self.text(), refresh=False)

    def endpoint_done(self, _index: int) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(self.text(), refresh=False)
            self.bar.update(1)

    def text(self) -> str:
        seconds = max(time.monotonic() - self.started, 1e-9)
        return (f"{self.rows:,} rows, {self.bytes / 1e6:,.1f} MB, {self.rows / seconds:,.0f} rows/s, "
                f"{self.bytes / 1e6 / seconds:,.1f} MB/s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def export(
    client: "Client",
    table: "TableName",
    path: str,
    *,
    format: Optional[str] = None,
    columns: Optional[Sequence[str]] = None,
    start: "TimeBound" = None,
    end: "TimeBound" = None,
    consistent_snapshot: bool = False,
    parallelism: Optional[int] = None,
    progress: Optional[bool] = None,
) -> ExportSummary:
    """Streams ``table`` (optionally projected and windowed) to ``path`` as Parquet, CSV or Arrow
    IPC (``format``, or from the suffix; Parquet by default). ``progress`` shows a bar on stderr;
    by default when stderr is a terminal."""
    fmt = format_for(path, format)
    if progress is None:
        progress = sys.stderr.isatty()
    started = time.monotonic()
    info = client.info(table, columns=columns, start=start, end=end, consistent_snapshot=consistent_snapshot)
    bar = _Progress(len(info.endpoints), progress)
    partial = f"{path}.partial"
    try:
        reader = client.stream_info(info, parallelism=parallelism, on_endpoint_done=bar.endpoint_done)
        with _writer(fmt, partial, info.schema) as writer:
            for batch in reader:
                writer.write_batch(batch)
                bar.batch(batch)
        os.replace(partial, path)
    except BaseException:
        try:
            os.unlink(partial)
        except FileNotFoundError:
            pass
        raise
    finally:
        bar.close()
    return ExportSummary(path=path, format=fmt, rows=bar.rows, bytes=bar.bytes,
                         endpoints=len(info.endpoints), seconds=time.monotonic() - started)
