"""Reading endpoints: one endpoint with automatic resume, many in parallel with bounded memory.

Data path::

    endpoint 0 ─ worker ─▶ queue(depth) ─┐
    endpoint 1 ─ worker ─▶ queue(depth) ─┼─▶ consumer: endpoint 0's batches, then 1's, …
    …  (at most ``parallelism`` started   │    (a finished endpoint starts the next one)
        and not yet consumed)            ─┘

So at most ``parallelism × (depth + 1)`` batches are held, whatever the table's size, and batches
come out in endpoint order (= time range order for a hypertable), whatever the parallelism.

:func:`endpoint_batches` reads one endpoint. Every batch's ``app_metadata`` is a resume ticket; when
the stream fails with a transient code (:data:`Retry.RESUME`) or is cut, it calls DoGet again with
the last batch's ticket, after a backoff, up to ``retries`` times in a row (the count starts over
once a batch arrives), at the endpoint's next location when it lists several (a fleet of servers:
one that is down or whose standby is behind answers UNAVAILABLE, and the next one continues). An endpoint without tickets (a view, the real-time part of a continuous
aggregate) is read again from its start only if none of its batches were handed out yet; otherwise
the error is raised, as re-reading would repeat rows.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Sequence

import pyarrow as pa
import pyarrow.flight as flight

from .errors import HyperflightError, Retry, from_flight


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff for transient failures of a read."""

    retries: int = 6  # attempts in a row without a batch in between, after the first
    backoff: float = 0.2  # seconds before the first retry; doubles each time
    max_backoff: float = 5.0  # seconds, at most, between two attempts

    def delay(self, attempt: int) -> float:
        return min(self.max_backoff, self.backoff * (2 ** attempt))


class _Cancelled(Exception):
    """The consumer went away: stop reading."""


def endpoint_batches(
    clients_for: Callable[[flight.FlightEndpoint], Sequence[flight.FlightClient]],
    endpoint: flight.FlightEndpoint,
    options: flight.FlightCallOptions,
    policy: RetryPolicy,
    on_reader: Callable[[Optional[flight.FlightStreamReader]], None] = lambda r: None,
    on_retry: Callable[[HyperflightError], None] = lambda e: None,
) -> Iterator[pa.RecordBatch]:
    """The record batches of one endpoint, resumed from the last ticket after transient failures.
    Raises a typed :class:`HyperflightError` for what cannot be retried or after ``policy.retries``
    failed attempts in a row. ``clients_for`` gives a client per location of the endpoint: the read
    starts at the first and each retry goes to the next, round the list. ``on_reader`` is told of
    each open stream, so it can be cancelled; ``on_retry`` of each failure that is retried."""
    clients = clients_for(endpoint)
    at = 0  # the location read from
    ticket = endpoint.ticket
    handed_out = False  # batches of this endpoint already yielded
    resumable = True  # the last batch carried a ticket (or none was yielded yet)
    failures = 0
    while True:
        try:
            reader = clients[at].do_get(ticket, options)
            on_reader(reader)
            while True:
                try:
                    chunk = reader.read_chunk()
                except StopIteration:
                    return
                if chunk.data is None:
                    continue
                meta = chunk.app_metadata
                if meta is not None and meta.size:
                    ticket, resumable = flight.Ticket(meta.to_pybytes()), True
                else:
                    resumable = False
                failures = 0
                handed_out = True
                yield chunk.data
        except (pa.ArrowException, flight.FlightError) as exc:
            err = from_flight(exc)
            if not isinstance(err, HyperflightError):
                raise
            if err.retry is not Retry.RESUME or failures >= policy.retries or (handed_out and not resumable):
                raise err from exc
            on_retry(err)
            time.sleep(policy.delay(failures))
            failures += 1
            at = (at + 1) % len(clients)
        finally:
            on_reader(None)


_DONE = object()  # queue sentinel: the endpoint ended


class _Worker:
    """Reads one endpoint into a bounded queue on a pool thread."""

    def __init__(self, depth: int, stop: threading.Event) -> None:
        self.queue: "queue.Queue[object]" = queue.Queue(maxsize=depth)
        self.stop = stop  # set when the consumer goes away
        self.reader: Optional[flight.FlightStreamReader] = None  # the open stream, to cancel

    def _put(self, item: object) -> None:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Cancelled()

    def _set_reader(self, reader: Optional[flight.FlightStreamReader]) -> None:
        self.reader = reader

    def run(self, batches: Callable[[Callable], Iterator[pa.RecordBatch]]) -> None:
        try:
            for batch in batches(self._set_reader):
                self._put(batch)
            self._put(_DONE)
        except _Cancelled:
            pass
        except BaseException as exc:  # handed to the consumer, raised there
            try:
                self._put(exc)
            except _Cancelled:
                pass

    def cancel(self) -> None:
        reader = self.reader
        if reader is not None:
            try:
                reader.cancel()
            except Exception:
                pass


def ordered_batches(
    endpoints: Sequence[flight.FlightEndpoint],
    read: Callable[[flight.FlightEndpoint, Callable], Iterator[pa.RecordBatch]],
    *,
    parallelism: int,
    depth: int = 2,
    on_endpoint_done: Callable[[int], None] = lambda i: None,
) -> Iterator[pa.RecordBatch]:
    """Every endpoint's batches in endpoint order, reading at most ``parallelism`` endpoints ahead
    with at most ``depth`` batches queued for each. Closing the iterator stops the reads."""
    if parallelism < 1:
        raise ValueError("parallelism must be at least 1")
    stop = threading.Event()
    workers: List[_Worker] = []
    pool = ThreadPoolExecutor(max_workers=max(1, min(parallelism, len(endpoints))),
                              thread_name_prefix="hyperflight-read")

    def start(i: int) -> None:
        worker = _Worker(depth, stop)
        workers.append(worker)
        endpoint = endpoints[i]
        pool.submit(worker.run, lambda on_reader: read(endpoint, on_reader))

    try:
        for i in range(min(parallelism, len(endpoints))):
            start(i)
        for i in range(len(endpoints)):
            worker = workers[i]
            while True:
                item = worker.queue.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item  # type: ignore[misc]
            workers[i] = None  # type: ignore[call-overload]  # its batches are the caller's now
            on_endpoint_done(i)
            if i + parallelism < len(endpoints):
                start(i + parallelism)
    finally:
        stop.set()
        for worker in workers:
            if worker is not None:
                worker.cancel()
        pool.shutdown(wait=True)
