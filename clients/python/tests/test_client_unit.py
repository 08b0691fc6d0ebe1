"""The client's own logic, without a server: descriptors and gRPC status recovery."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.flight as flight
import pytest

import hyperflight


def test_whole_table_is_a_path_descriptor() -> None:
    for name in ("public.metrics", ("public", "metrics"), "metrics"):
        d = hyperflight.descriptor(name)
        assert d.descriptor_type == flight.DescriptorType.PATH
        assert [p.decode() if isinstance(p, bytes) else p for p in d.path] == ["public", "metrics"]


def test_query_is_a_json_command() -> None:
    d = hyperflight.descriptor("public.metrics", columns=["time", "device_id"],
                               start=datetime(2026, 10, 3), end="2026-10-05T00:00:00Z")
    assert d.descriptor_type == flight.DescriptorType.CMD
    assert json.loads(d.command) == {
        "table": "public.metrics", "columns": ["time", "device_id"],
        "start": "2026-10-03T00:00:00+00:00", "end": "2026-10-05T00:00:00Z",
    }
    odd = hyperflight.descriptor(("My Schema", 'My "Table"'), start=5)
    assert json.loads(odd.command) == {"table": ["My Schema", 'My "Table"'], "start": 5}
    aware = datetime(2026, 10, 3, 2, tzinfo=timezone.utc)
    assert json.loads(hyperflight.descriptor("a.b", end=aware).command)["end"] == "2026-10-03T02:00:00+00:00"


def test_bad_table_name_is_rejected() -> None:
    with pytest.raises(ValueError):
        hyperflight.descriptor(("only-one",))


@pytest.mark.parametrize("exc, code", [
    (pa.ArrowInvalid("Flight returned invalid argument error, with message: malformed ticket"),
     "INVALID_ARGUMENT"),
    (pa.ArrowInvalid("gRPC returned precondition failed error, with message: re-plan"),
     "FAILED_PRECONDITION"),
    (pa.ArrowKeyError("Flight returned not found error, with message: x"), "NOT_FOUND"),
    (flight.FlightUnauthenticatedError("no token"), "UNAUTHENTICATED"),
    (flight.FlightUnavailableError("db down"), "UNAVAILABLE"),
    (ValueError("not a flight error"), None),
])
def test_grpc_status(exc: BaseException, code: str) -> None:
    assert hyperflight.grpc_status(exc) == code
