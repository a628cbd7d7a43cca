"""The deliverer over fake sinks: acknowledge only what was confirmed, back off, isolate refused events."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from tests.factories import make_finding
from vmshadow.export.delivery import Deliverer
from vmshadow.export.event import ExportEvent, from_finding
from vmshadow.export.queue import DiskQueue
from vmshadow.export.sinks import SinkError


def events(n: int) -> list[ExportEvent]:
    base = from_finding(make_finding(0))
    return [replace(base, id=f"evt-{i}") for i in range(n)]


@dataclass
class ScriptedSink:
    """Records what it got; `script` says what each call does: "ok", ("partial", k), "down", "refuse"."""

    script: list[object] = field(default_factory=list)
    got: list[str] = field(default_factory=list)
    calls: int = 0
    name: str = "scripted"
    refuse_ids: set[str] = field(default_factory=set)

    def send(self, batch: Sequence[ExportEvent]) -> None:
        self.calls += 1
        action = self.script.pop(0) if self.script else "ok"
        if any(e.id in self.refuse_ids for e in batch):
            raise SinkError("HTTP 422", retryable=False)
        if action == "down":
            raise SinkError("connection refused", retryable=True)
        if isinstance(action, tuple):
            k = action[1]
            assert isinstance(k, int)
            self.got.extend(e.id for e in batch[:k])
            raise SinkError("reset", retryable=True, delivered=k)
        self.got.extend(e.id for e in batch)

    def close(self) -> None:
        return None


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[DiskQueue]:
    q = DiskQueue(tmp_path / "q.sqlite")
    yield q
    q.close()


def test_drains_in_batches(queue: DiskQueue) -> None:
    queue.enqueue(events(25))
    sink = ScriptedSink()
    report = Deliverer(queue, sink, batch_size=10).drain()
    assert sink.got == [f"evt-{i}" for i in range(25)]
    assert (report.delivered, report.batches, report.empty, report.failed_attempts) == (25, 3, True, 0)
    assert report.queue.resent == 0


def test_partial_batch_acks_only_the_confirmed_prefix(queue: DiskQueue) -> None:
    queue.enqueue(events(10))
    t = FakeTime()
    sink = ScriptedSink(script=[("partial", 4)])
    report = Deliverer(queue, sink, batch_size=10, clock=t.clock, sleep=t.sleep).drain()
    assert report.delivered == 10
    assert sink.got == [f"evt-{i}" for i in range(10)]  # the 6 unconfirmed were sent again
    assert report.queue.resent == 6
    assert report.failed_attempts == 1


def test_backs_off_exponentially_and_stops_at_the_deadline(queue: DiskQueue) -> None:
    queue.enqueue(events(3))
    t = FakeTime()
    sink = ScriptedSink(script=["down"] * 100)
    deliverer = Deliverer(queue, sink, retry_initial_s=1, retry_max_s=8, clock=t.clock, sleep=t.sleep)
    report = deliverer.drain(timeout_s=20)
    assert t.sleeps == [1, 2, 4, 8, 5]  # capped at 8, the last wait cut at the deadline
    assert report.delivered == 0
    assert report.queue.depth == 3
    assert report.queue.failures == report.failed_attempts == 5
    assert report.last_error == "connection refused"
    # a success resets the backoff
    sink.script = []
    assert deliverer.drain(timeout_s=20).delivered == 3
    assert deliverer.next_retry_s == 1


def test_max_batches_bounds_a_drain(queue: DiskQueue) -> None:
    queue.enqueue(events(10))
    report = Deliverer(queue, ScriptedSink(), batch_size=2).drain(max_batches=3)
    assert (report.delivered, report.queue.depth) == (6, 4)


def test_refused_batch_is_split_to_find_the_refused_event(queue: DiskQueue) -> None:
    queue.enqueue(events(6))
    sink = ScriptedSink(refuse_ids={"evt-2"})
    report = Deliverer(queue, sink, batch_size=6).drain()
    assert sink.got == ["evt-0", "evt-1", "evt-3", "evt-4", "evt-5"]
    assert (report.delivered, report.rejected, report.queue.depth) == (5, 1, 0)
    ((dead, reason),) = queue.dead_letters()
    assert dead.id == "evt-2"
    assert "422" in reason


def test_crash_between_send_and_ack_resends_and_counts(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite"
    q = DiskQueue(path)
    q.enqueue(events(5))
    sink = ScriptedSink()

    class CrashError(Exception):
        pass

    def crash(items: object) -> None:
        raise CrashError

    q.ack = crash  # type: ignore[method-assign]
    with pytest.raises(CrashError):
        Deliverer(q, sink, batch_size=5).deliver_batch()
    q.close()
    with DiskQueue(path) as again:
        report = Deliverer(again, sink).drain()
    assert sink.got == [f"evt-{i}" for i in range(5)] * 2
    assert (report.delivered, report.queue.resent) == (5, 5)


def test_batch_size_must_be_positive(queue: DiskQueue) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        Deliverer(queue, ScriptedSink(), batch_size=0)


def test_attempts_that_reached_nobody_are_not_counted_as_resent(queue: DiskQueue) -> None:
    queue.enqueue(events(3))

    @dataclass
    class Unreachable(ScriptedSink):
        def send(self, batch: Sequence[ExportEvent]) -> None:
            self.calls += 1
            if self.calls == 1:
                raise SinkError("cannot connect", retryable=True, possibly_sent=False)
            super().send(batch)

    t = FakeTime()
    report = Deliverer(queue, Unreachable(), clock=t.clock, sleep=t.sleep).drain()
    assert (report.delivered, report.queue.resent, report.queue.failures) == (3, 0, 1)
