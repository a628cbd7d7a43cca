"""A disk-backed, per-sink export queue: events wait here until their sink confirmed them.

Why a SQLite file of its own rather than the main store: the queue must keep accepting events exactly when
something downstream is unavailable, and in distributed mode the main store is PostgreSQL on another host, which
may be the thing that is down; a local file is there whenever the process is. It is a buffer of one process for one
sink, not shared state: no other process reads it, it needs no migrations, and a SIEM outage that piles up a
million events bloats a throw-away file instead of the store's tables and backups. SQLite in WAL mode with
`synchronous=FULL` gives atomic, durable enqueue/ack (a committed enqueue survives a crash of the process and of
the machine) from the standard library, with readers never blocked by the writer.

Delivery is at-least-once: `peek` does not remove anything; `mark_attempt` records (durably) that a batch is about
to be sent; `ack` removes only what the sink confirmed. An event whose earlier attempt may have reached the
receiver is counted in `resent` when it is sent again, so duplicates are bounded and visible. `reject` moves an
event the receiver refused for good (a 4xx) to a dead-letter table, counted and kept for inspection.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vmshadow.export.event import ExportEvent, event_from_json, event_to_json

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    payload TEXT NOT NULL,
    enqueued_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS dead (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    reason TEXT NOT NULL,
    rejected_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

COUNTERS = ("enqueued", "duplicates_ignored", "delivered", "failures", "resent", "rejected")


@dataclass(frozen=True, slots=True)
class QueuedEvent:
    seq: int
    event: ExportEvent
    attempts: int  # send attempts recorded before this one


@dataclass(frozen=True, slots=True)
class QueueStats:
    """What `/metrics` and `vmshadow export` show: depth now, and counters since the file was created."""

    depth: int
    dead: int
    enqueued: int
    duplicates_ignored: int
    delivered: int
    failures: int
    resent: int
    rejected: int
    oldest_age_s: float | None


class DiskQueue:
    """One sink's queue in the SQLite file `path` (created with its directory if missing).

    Not thread-safe: one deliverer per queue; several processes must not share a file.
    """

    def __init__(self, path: Path | str, *, busy_timeout_s: float = 5.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        with self._tx():
            self._db.executemany("INSERT OR IGNORE INTO counters VALUES (?, 0)", [(c,) for c in COUNTERS])

    def _tx(self) -> _Commit:
        # isolation_level=None: transactions are explicit, begun here and ended by _Commit
        self._db.execute("BEGIN IMMEDIATE")
        return _Commit(self._db)

    def _bump(self, name: str, by: int) -> None:
        if by:
            self._db.execute("UPDATE counters SET value = value + ? WHERE name = ?", (by, name))

    def enqueue(self, events: Iterable[ExportEvent]) -> int:
        """Store events in one transaction; an event whose id is already waiting is ignored (and counted).

        Returns how many were added.
        """
        now = time.time()
        rows = [(e.id, json.dumps(event_to_json(e), ensure_ascii=False), now) for e in events]
        with self._tx():
            before = self._db.total_changes
            self._db.executemany(
                "INSERT OR IGNORE INTO pending (event_id, payload, enqueued_at) VALUES (?, ?, ?)", rows
            )
            added = self._db.total_changes - before
            self._bump("enqueued", added)
            self._bump("duplicates_ignored", len(rows) - added)
        return added

    def peek(self, limit: int) -> list[QueuedEvent]:
        """The oldest `limit` waiting events, left in the queue."""
        cur = self._db.execute("SELECT seq, payload, attempts FROM pending ORDER BY seq LIMIT ?", (limit,))
        return [QueuedEvent(seq, event_from_json(json.loads(payload)), attempts) for seq, payload, attempts in cur]

    def mark_attempt(self, items: Sequence[QueuedEvent]) -> None:
        """Record, before sending, that these events are about to be sent (so a crash mid-send is remembered)."""
        with self._tx():
            self._db.executemany("UPDATE pending SET attempts = attempts + 1 WHERE seq = ?", [(i.seq,) for i in items])

    def unmark_attempt(self, items: Sequence[QueuedEvent]) -> None:
        """Undo `mark_attempt` for events that cannot have reached the receiver (it was not even reachable)."""
        with self._tx():
            self._db.executemany(
                "UPDATE pending SET attempts = MAX(0, attempts - 1) WHERE seq = ?", [(i.seq,) for i in items]
            )

    def ack(self, items: Sequence[QueuedEvent]) -> None:
        """Remove events the sink confirmed; those sent before (`attempts > 0`) are counted as `resent`."""
        with self._tx():
            self._db.executemany("DELETE FROM pending WHERE seq = ?", [(i.seq,) for i in items])
            self._bump("delivered", len(items))
            self._bump("resent", sum(1 for i in items if i.attempts > 0))

    def record_failure(self) -> None:
        """Count one failed delivery attempt (the events stay queued)."""
        with self._tx():
            self._bump("failures", 1)

    def reject(self, items: Sequence[QueuedEvent], reason: str) -> None:
        """Move events the receiver refused for good to the dead-letter table."""
        now = time.time()
        with self._tx():
            for i in items:
                self._db.execute(
                    "INSERT OR REPLACE INTO dead SELECT seq, event_id, payload, ?, ? FROM pending WHERE seq = ?",
                    (reason, now, i.seq),
                )
                self._db.execute("DELETE FROM pending WHERE seq = ?", (i.seq,))
            self._bump("rejected", len(items))
            self._bump("failures", 1)

    def depth(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM pending").fetchone()[0])

    def dead_letters(self, limit: int = 100) -> list[tuple[ExportEvent, str]]:
        cur = self._db.execute("SELECT payload, reason FROM dead ORDER BY seq LIMIT ?", (limit,))
        return [(event_from_json(json.loads(payload)), reason) for payload, reason in cur]

    def stats(self) -> QueueStats:
        counters = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
        oldest = self._db.execute("SELECT MIN(enqueued_at) FROM pending").fetchone()[0]
        dead = int(self._db.execute("SELECT COUNT(*) FROM dead").fetchone()[0])
        return QueueStats(
            depth=self.depth(),
            dead=dead,
            oldest_age_s=None if oldest is None else max(0.0, time.time() - float(oldest)),
            **{c: int(counters.get(c, 0)) for c in COUNTERS},
        )

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> DiskQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Commit:
    """Commit on success, roll back on error, for a transaction already begun."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._db.execute("ROLLBACK" if exc_type is not None else "COMMIT")
