from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

from tests.factories import make_finding
from vmshadow.export.event import ExportEvent, from_finding
from vmshadow.export.queue import DiskQueue


def events(n: int, start: int = 0) -> list[ExportEvent]:
    base = from_finding(make_finding(0))
    return [replace(base, id=f"evt-{i}", summary=f"event {i} ünï") for i in range(start, start + n)]


def test_enqueue_peek_ack_in_order(tmp_path: Path) -> None:
    with DiskQueue(tmp_path / "q.sqlite") as q:
        assert q.enqueue(events(5)) == 5
        batch = q.peek(3)
        assert [i.event.id for i in batch] == ["evt-0", "evt-1", "evt-2"]
        assert batch[0].event == events(1)[0]
        assert q.depth() == 5  # peek removes nothing
        q.ack(batch)
        assert [i.event.id for i in q.peek(10)] == ["evt-3", "evt-4"]
        stats = q.stats()
        assert (stats.depth, stats.enqueued, stats.delivered, stats.resent) == (2, 5, 3, 0)
        assert stats.oldest_age_s is not None


def test_survives_reopening_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "q.sqlite"
    q = DiskQueue(path)
    q.enqueue(events(4))
    q.mark_attempt(q.peek(2))
    q.close()
    with DiskQueue(path) as again:
        items = again.peek(10)
        assert [i.attempts for i in items] == [1, 1, 0, 0]
        again.ack(items)
        assert again.stats().resent == 2  # the two attempted before the "restart" may be duplicates
        assert again.depth() == 0
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_waiting_duplicates_are_ignored_and_counted(tmp_path: Path) -> None:
    with DiskQueue(tmp_path / "q.sqlite") as q:
        q.enqueue(events(3))
        assert q.enqueue(events(5)) == 2
        stats = q.stats()
        assert (stats.depth, stats.enqueued, stats.duplicates_ignored) == (5, 5, 3)


def test_reject_moves_to_dead_letters(tmp_path: Path) -> None:
    with DiskQueue(tmp_path / "q.sqlite") as q:
        q.enqueue(events(3))
        first = q.peek(1)
        q.reject(first, "HTTP 400")
        q.record_failure()
        assert q.depth() == 2
        assert q.dead_letters() == [(first[0].event, "HTTP 400")]
        stats = q.stats()
        assert (stats.rejected, stats.dead, stats.failures) == (1, 1, 2)


def test_empty_queue(tmp_path: Path) -> None:
    with DiskQueue(tmp_path / "q.sqlite") as q:
        assert q.peek(10) == []
        assert q.stats().oldest_age_s is None
        q.ack([])
        assert q.stats().delivered == 0
