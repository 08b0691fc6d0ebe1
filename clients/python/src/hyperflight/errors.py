"""Typed errors and the retry classification, from the gRPC status code of a failed Flight call.

pyarrow turns a gRPC status into an exception class (``FlightUnavailableError``, ``ArrowKeyError``,
…). Most codes have a class of their own; a few share one: INVALID_ARGUMENT, FAILED_PRECONDITION,
RESOURCE_EXHAUSTED and OUT_OF_RANGE all arrive as ``ArrowInvalid``, ABORTED, INTERNAL and DATA_LOSS
as ``FlightInternalError``. For those, and only those, the code is read from the fixed phrase
pyarrow's gRPC layer writes for it at the very start of the text (``"gRPC returned precondition
failed error, with message: "``): pyarrow's rendering of the code, never the server's message, which
comes after it and so cannot pass for a code.

Every typed error subclasses both :class:`HyperflightError` and the pyarrow class the call raised,
so ``except flight.FlightUnauthenticatedError`` in older code still catches
:class:`Unauthenticated`.

:func:`classify` mirrors ``crates/protocol/src/status.rs``: the one retry policy of every client.
"""

from __future__ import annotations

import enum
import re
from typing import Dict, Optional, Type

import pyarrow as pa
import pyarrow.flight as flight


class Retry(enum.Enum):
    """What a client does after a call failed (``protocol::status::Retry``)."""

    RESUME = "resume"  # transient: call again, from the last resume ticket when there is one
    REPLAN = "replan"  # the plan is stale: GetFlightInfo (``Client.info``) again
    FATAL = "fatal"  # repeats on retry: report it


_RESUME_CODES = frozenset({"UNAVAILABLE", "UNKNOWN", "CANCELLED", "ABORTED", "RESOURCE_EXHAUSTED",
                           "DEADLINE_EXCEEDED"})


def classify(code: Optional[str]) -> Retry:
    """How a client treats a gRPC status code name (``"UNAVAILABLE"``, …), as the Rust clients do."""
    if code in _RESUME_CODES:
        return Retry.RESUME
    if code == "FAILED_PRECONDITION":
        return Retry.REPLAN
    return Retry.FATAL


class HyperflightError(Exception):
    """A failed call to a hyperflight server. ``code`` is the gRPC status code name, ``message`` the
    server's text (one line), ``retry`` what :func:`classify` says about the code."""

    code = "UNKNOWN"

    def __init__(self, message: str = "", code: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    @property
    def retry(self) -> Retry:
        return classify(self.code)

    def __str__(self) -> str:  # KeyError (NotFound's pyarrow base) would quote the text
        return f"{self.code}: {self.message}" if self.message else self.code


class NotFound(HyperflightError, pa.ArrowKeyError):
    """An unknown table, or a chunk dropped since planning."""
    code = "NOT_FOUND"


class InvalidArgument(HyperflightError, pa.ArrowInvalid):
    """A bad command, column, window or ticket."""
    code = "INVALID_ARGUMENT"


class FailedPrecondition(HyperflightError, pa.ArrowInvalid):
    """The plan is stale (a relation was rewritten, a snapshot released): call ``info`` again."""
    code = "FAILED_PRECONDITION"


class ResourceExhausted(HyperflightError, pa.ArrowInvalid):
    """A server-side limit (held snapshots, memory); transient."""
    code = "RESOURCE_EXHAUSTED"


class OutOfRange(HyperflightError, pa.ArrowInvalid):
    """A stored value its Arrow type cannot hold."""
    code = "OUT_OF_RANGE"


class Unauthenticated(HyperflightError, flight.FlightUnauthenticatedError):
    """The server wants a token (``token=``) and got none or a wrong one."""
    code = "UNAUTHENTICATED"


class PermissionDenied(HyperflightError, flight.FlightUnauthorizedError):
    """The database refused the read for lack of privilege."""
    code = "PERMISSION_DENIED"


class Unavailable(HyperflightError, flight.FlightUnavailableError):
    """The server or its database cannot be reached (reads retry these before raising)."""
    code = "UNAVAILABLE"


class DeadlineExceeded(HyperflightError, flight.FlightTimedOutError):
    code = "DEADLINE_EXCEEDED"


class Cancelled(HyperflightError, flight.FlightCancelledError):
    code = "CANCELLED"


class Aborted(HyperflightError, flight.FlightInternalError):
    """The server gave up a stalled stream's scan slot; resumable."""
    code = "ABORTED"


class Internal(HyperflightError, flight.FlightInternalError):
    code = "INTERNAL"


class Unimplemented(HyperflightError, pa.ArrowNotImplementedError):
    code = "UNIMPLEMENTED"


class Unknown(HyperflightError, flight.FlightServerError):
    """UNKNOWN, which is also how a broken connection often surfaces; resumable."""
    code = "UNKNOWN"


_BY_CODE: Dict[str, Type[HyperflightError]] = {
    cls.code: cls
    for cls in (NotFound, InvalidArgument, FailedPrecondition, ResourceExhausted, OutOfRange,
                Unauthenticated, PermissionDenied, Unavailable, DeadlineExceeded, Cancelled, Aborted,
                Internal, Unimplemented, Unknown)
}

# One pyarrow class, one code.
_BY_CLASS = (
    (flight.FlightUnauthenticatedError, "UNAUTHENTICATED"),
    (flight.FlightUnauthorizedError, "PERMISSION_DENIED"),
    (flight.FlightUnavailableError, "UNAVAILABLE"),
    (flight.FlightTimedOutError, "DEADLINE_EXCEEDED"),
    (flight.FlightCancelledError, "CANCELLED"),
    (pa.ArrowKeyError, "NOT_FOUND"),
    (pa.ArrowNotImplementedError, "UNIMPLEMENTED"),
)
# Classes several codes share: pyarrow's own phrase for the code, anchored at the start.
_SHARED = re.compile(r"^(?:gRPC|Flight) returned ([a-z -]+?) error, with message: ")
_INVALID_CODES = {"invalid argument": "INVALID_ARGUMENT", "precondition failed": "FAILED_PRECONDITION",
                  "resource exhausted": "RESOURCE_EXHAUSTED", "out-of-range": "OUT_OF_RANGE"}
_INTERNAL_CODES = {"aborted": "ABORTED", "internal": "INTERNAL", "data loss": "DATA_LOSS"}


def _shared_code(exc: BaseException, table: Dict[str, str], default: str) -> str:
    match = _SHARED.match(str(exc))
    return table.get(match.group(1), default) if match else default


def grpc_status(exc: BaseException) -> Optional[str]:
    """The gRPC status code name behind an exception raised by a Flight call (``"NOT_FOUND"``,
    ``"INVALID_ARGUMENT"``, ``"FAILED_PRECONDITION"``, …), or None when it is not one."""
    if isinstance(exc, HyperflightError):
        return exc.code
    for cls, code in _BY_CLASS:
        if isinstance(exc, cls):
            return code
    if isinstance(exc, pa.ArrowInvalid):
        return _shared_code(exc, _INVALID_CODES, "INVALID_ARGUMENT")
    if isinstance(exc, flight.FlightInternalError):
        return _shared_code(exc, _INTERNAL_CODES, "INTERNAL")
    if isinstance(exc, flight.FlightServerError):
        return "UNKNOWN"
    return None


def _server_text(exc: BaseException) -> str:
    """The server's message without pyarrow's prefix and gRPC's debug tail, on one line."""
    text = str(exc)
    _, sep, rest = text.partition("with message: ")
    text = rest if sep else text
    text = text.split(". Detail:", 1)[0].split(". gRPC client debug context:", 1)[0]
    return " ".join(text.split())


def from_flight(exc: BaseException) -> BaseException:
    """``exc`` as a typed :class:`HyperflightError` when it is a Flight call's failure, else ``exc``."""
    if isinstance(exc, HyperflightError):
        return exc
    code = grpc_status(exc)
    if code is None:
        return exc
    cls = _BY_CODE.get(code, HyperflightError)
    err = cls(_server_text(exc), code)
    err.__cause__ = exc
    return err
