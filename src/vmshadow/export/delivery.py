"""The deliverer: drains one sink's queue into the sink, acknowledging only what the sink confirmed.

At-least-once: a batch is marked as attempted (durably) before it is sent and removed only after the sink
confirmed it, so a crash anywhere in between sends it again; events sent again are counted (`resent`), which
bounds the duplicates a receiver may see (it can drop them by `event.id`). A receiver that is away makes the
deliverer back off exponentially, bounded by `retry_max_s`. A receiver that refuses a batch for good (HTTP 4xx)
makes the deliverer send that batch's events one by one, so only the refused event goes to the dead letters.
Every loop here is bounded in batches and in time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from vmshadow.export.queue import DiskQueue, QueueStats
from vmshadow.export.sinks import Sink, SinkError


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """What one `deliver_batch` or `drain` call did, and the queue afterwards."""

    delivered: int
    rejected: int
    failed_attempts: int
    batches: int
    last_error: str | None
    queue: QueueStats

    @property
    def empty(self) -> bool:
        return self.queue.depth == 0


@dataclass(frozen=True, slots=True)
class BatchResult:
    sent: int  # events handed to the sink
    delivered: int  # confirmed and acknowledged
    rejected: int  # refused for good, moved to the dead letters
    error: str | None
    retry: bool = False  # a retryable failure: wait before the next attempt


class Deliverer:
    def __init__(
        self,
        queue: DiskQueue,
        sink: Sink,
        *,
        batch_size: int = 200,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.queue = queue
        self.sink = sink
        self.batch_size = batch_size
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self._clock = clock
        self._sleep = sleep
        self._delay = retry_initial_s
        self._singles = 0  # events still to send one by one after a refused batch

    @property
    def next_retry_s(self) -> float:
        """How long the next failure makes the deliverer wait (exponential, capped)."""
        return self._delay

    def deliver_batch(self) -> BatchResult:
        """Send one batch (or one event, while isolating a refused one)."""
        size = 1 if self._singles > 0 else self.batch_size
        items = self.queue.peek(size)
        if not items:
            return BatchResult(0, 0, 0, None)
        self.queue.mark_attempt(items)
        try:
            self.sink.send([i.event for i in items])
        except SinkError as exc:
            confirmed = items[: max(0, min(exc.delivered, len(items)))]
            if confirmed:
                self.queue.ack(confirmed)
            rest = items[len(confirmed) :]
            if exc.retryable:
                if not exc.possibly_sent:
                    self.queue.unmark_attempt(rest)
                self.queue.record_failure()
                return BatchResult(len(items), len(confirmed), 0, str(exc), retry=True)
            if len(rest) > 1:
                # which event the receiver refused is unknown: find it by sending them one at a time
                self._singles = len(rest)
                self.queue.record_failure()
                return BatchResult(len(items), len(confirmed), 0, str(exc))
            self.queue.reject(rest, str(exc))
            self._singles = max(0, self._singles - 1)
            return BatchResult(len(items), len(confirmed), len(rest), str(exc))
        self.queue.ack(items)
        self._singles = max(0, self._singles - len(items))
        self._delay = self.retry_initial_s
        return BatchResult(len(items), len(items), 0, None)

    def drain(self, *, max_batches: int = 1000, timeout_s: float = 30.0) -> DeliveryReport:
        """Deliver until the queue is empty, `max_batches` were tried or `timeout_s` passed.

        A retryable failure waits (backing off, never past the deadline) and tries again.
        """
        deadline = self._clock() + timeout_s
        delivered = rejected = failed = batches = 0
        last_error: str | None = None
        for _ in range(max_batches):
            if self._clock() >= deadline:
                break
            result = self.deliver_batch()
            if result.sent == 0:
                break  # queue empty
            batches += 1
            delivered += result.delivered
            rejected += result.rejected
            if result.error is not None:
                last_error = result.error
            if result.retry:
                failed += 1
                wait = min(self._delay, max(0.0, deadline - self._clock()))
                self._delay = min(self._delay * 2, self.retry_max_s)
                if wait > 0:
                    self._sleep(wait)
        return DeliveryReport(delivered, rejected, failed, batches, last_error, self.queue.stats())
