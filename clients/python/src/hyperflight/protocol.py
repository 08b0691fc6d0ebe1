"""The wire contract, mirrored from the Rust ``protocol`` crate (``crates/protocol``).

- :class:`Command`: the JSON of a ``CMD`` descriptor (``command.rs``): a table, optionally columns,
  a window on the time dimension and one snapshot for every endpoint. Unknown keys are refused, as
  the server refuses them, so a typo is never silently ignored.
- :class:`EndpointMetadata`: each endpoint's ``app_metadata`` JSON (``endpoint.rs``), with its
  ``kind`` (:data:`ENDPOINT_KINDS`).

Both are checked against the JSON fixtures in ``crates/protocol/fixtures/`` that the Rust side is
tested against too (``tests/test_protocol.py``), so neither side can drift alone.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Optional, Tuple, Union

Bound = Union[int, str]
"""A window or range bound: an integer for integer dimensions, RFC 3339 text for time."""

ENDPOINT_KINDS = (
    "chunk", "compressed_chunk", "partial_chunk", "partition", "block_range", "table",
    "continuous_aggregate", "view", "query", "tail",
)
"""What an endpoint reads (``EndpointKind``), and so how its resume tickets behave."""


class ProtocolError(ValueError):
    """JSON that does not follow the contract; the message names the key or value at fault."""


def _invalid(what: str) -> ProtocolError:
    return ProtocolError(f"invalid CMD descriptor: {what}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_bound(value: Any) -> bool:
    return _is_int(value) or isinstance(value, str)


@dataclass(frozen=True)
class Command:
    """A ``CMD`` descriptor. ``table`` is ``"schema.table"`` (split at the first dot) or a
    ``(schema, table)`` pair, which names any table exactly; ``start`` is inclusive, ``end``
    exclusive. Construction checks what the server checks."""

    table: Union[str, Tuple[str, str]]
    columns: Optional[Tuple[str, ...]] = None
    start: Optional[Bound] = None
    end: Optional[Bound] = None
    consistent_snapshot: bool = False
    follow: bool = False
    #: ``from`` in the JSON (a Python keyword): where a tail starts, ``"now"`` or an LSN.
    from_: Optional[str] = None

    def __post_init__(self) -> None:
        if isinstance(self.table, (list, tuple)):
            if len(self.table) != 2 or not all(isinstance(p, str) for p in self.table):
                raise _invalid(f"table must be \"schema.table\" or [\"schema\", \"table\"], got {self.table!r}")
            object.__setattr__(self, "table", tuple(self.table))
        elif not isinstance(self.table, str):
            raise _invalid(f"table must be a string or a pair of strings, got {self.table!r}")
        self.parts()  # the dotted form must have both halves
        if self.columns is not None:
            if isinstance(self.columns, str) or not all(isinstance(c, str) for c in self.columns):
                raise _invalid(f"columns must be a list of strings, got {self.columns!r}")
            object.__setattr__(self, "columns", tuple(self.columns))
            if not self.columns:
                raise ProtocolError("columns must not be empty")
        for key in ("start", "end"):
            value = getattr(self, key)
            if value is not None and not _is_bound(value):
                raise _invalid(f"{key} must be an integer or RFC 3339 text, got {value!r}")
        if not isinstance(self.consistent_snapshot, bool):
            raise _invalid(f"consistent_snapshot must be a boolean, got {self.consistent_snapshot!r}")
        if not isinstance(self.follow, bool):
            raise _invalid(f"follow must be a boolean, got {self.follow!r}")
        if self.from_ is not None and not isinstance(self.from_, str):
            raise _invalid(f"from must be \"now\" or an LSN, got {self.from_!r}")
        if self.follow and (self.columns is not None or self.start is not None or self.end is not None
                            or self.consistent_snapshot):
            raise ProtocolError("follow takes only table and from (a tail streams whole rows as they change)")
        if self.from_ is not None and not self.follow:
            raise ProtocolError("from applies to a tail: set follow to true")

    def parts(self) -> Tuple[str, str]:
        """``(schema, table)``; the dotted form splits at its first dot."""
        if isinstance(self.table, tuple):
            return self.table  # type: ignore[return-value]
        schema, dot, name = self.table.partition(".")
        if not (dot and schema and name):
            raise ProtocolError(f'table {self.table!r} must be "schema.table" or ["schema", "table"]')
        return schema, name

    def to_dict(self) -> Dict[str, Any]:
        """The JSON object, without the keys left at their defaults (as the server writes it)."""
        out: Dict[str, Any] = {"table": list(self.table) if isinstance(self.table, tuple) else self.table}
        if self.columns is not None:
            out["columns"] = list(self.columns)
        if self.start is not None:
            out["start"] = self.start
        if self.end is not None:
            out["end"] = self.end
        if self.consistent_snapshot:
            out["consistent_snapshot"] = True
        if self.follow:
            out["follow"] = True
        if self.from_ is not None:
            out["from"] = self.from_
        return out

    def to_json(self) -> bytes:
        """The descriptor's bytes."""
        return json.dumps(self.to_dict()).encode()

    @classmethod
    def from_json(cls, data: Union[bytes, str]) -> "Command":
        """Parses and checks a descriptor's bytes as the server does."""
        try:
            obj = json.loads(data)
        except ValueError as exc:
            raise _invalid(str(exc)) from None
        if not isinstance(obj, dict):
            raise _invalid("expected a JSON object")
        known = {f.name.rstrip("_") for f in fields(cls)}
        unknown = [k for k in obj if k not in known]
        if unknown:
            raise _invalid(f"unknown field `{unknown[0]}`, expected one of {sorted(known)}")
        if "table" not in obj:
            raise _invalid("missing field `table`")
        if "from" in obj:
            obj["from_"] = obj.pop("from")
        return cls(**obj)


_REQUIRED_METADATA = ("kind", "chunk", "chunk_id", "range_start", "range_end", "size_bytes",
                      "estimated_rows", "is_compressed")


@dataclass(frozen=True)
class EndpointMetadata:
    """An endpoint's ``app_metadata``: what it reads and how big it is. Range bounds use the time
    dimension's form (RFC 3339 or integers), ``None`` when open-ended or not a chunk; sizes are -1
    when unknown. The last three keys are absent from the JSON when ``None``."""

    kind: str  # one of ENDPOINT_KINDS
    chunk: Optional[str]  # the chunk or partition read, "schema.name"; None for the table itself
    chunk_id: Optional[int]  # TimescaleDB's chunk id
    range_start: Optional[Bound]  # inclusive start on the time dimension
    range_end: Optional[Bound]  # exclusive end
    size_bytes: int  # on disk (compressed size for compressed chunks)
    estimated_rows: int
    is_compressed: bool  # wholly or partly
    compression_ratio: Optional[float] = None  # uncompressed / compressed, compressed chunks
    block_start: Optional[int] = None  # first heap block of a block range
    block_end: Optional[int] = None  # exclusive end block; None for the last, open range

    def __post_init__(self) -> None:
        def check(ok: bool, key: str) -> None:
            if not ok:
                raise ProtocolError(f"invalid endpoint metadata: {key} = {getattr(self, key)!r}")

        check(self.kind in ENDPOINT_KINDS, "kind")
        check(self.chunk is None or isinstance(self.chunk, str), "chunk")
        check(self.chunk_id is None or _is_int(self.chunk_id), "chunk_id")
        check(self.range_start is None or _is_bound(self.range_start), "range_start")
        check(self.range_end is None or _is_bound(self.range_end), "range_end")
        check(_is_int(self.size_bytes), "size_bytes")
        check(_is_int(self.estimated_rows), "estimated_rows")
        check(isinstance(self.is_compressed, bool), "is_compressed")
        check(self.compression_ratio is None or (isinstance(self.compression_ratio, (int, float))
                                                 and not isinstance(self.compression_ratio, bool)),
              "compression_ratio")
        for key in ("block_start", "block_end"):
            value = getattr(self, key)
            check(value is None or (_is_int(value) and 0 <= value < 1 << 32), key)

    def to_dict(self) -> Dict[str, Any]:
        """The JSON object as the server writes it: the optional tail only when set."""
        out = asdict(self)
        for key in ("compression_ratio", "block_start", "block_end"):
            if out[key] is None:
                del out[key]
        return out

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict()).encode()

    @classmethod
    def from_dict(cls, obj: Any) -> "EndpointMetadata":
        if not isinstance(obj, dict):
            raise ProtocolError(f"invalid endpoint metadata: expected a JSON object, got {obj!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(k for k in obj if k not in known)
        missing = [k for k in _REQUIRED_METADATA if k not in obj]
        if unknown or missing:
            raise ProtocolError(f"invalid endpoint metadata: unknown keys {unknown}, missing keys {missing}")
        return cls(**obj)

    @classmethod
    def from_json(cls, data: Union[bytes, str]) -> "EndpointMetadata":
        """Parses an endpoint's ``app_metadata``; unknown or missing keys are an error."""
        try:
            obj = json.loads(data)
        except ValueError as exc:
            raise ProtocolError(f"invalid endpoint metadata: {exc}") from None
        return cls.from_dict(obj)

