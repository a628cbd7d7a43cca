"""Export the review audit log and the outcomes: every decision and outcome in the store reaches the SIEM sinks.

Decisions are recorded by whoever makes them (`vmshadow proposals approve` in a shell, the API, the TM), outcomes by
the measuring duty or an administrator's report; none of them runs the exporter. So the service reads both
append-only logs by sequence number and publishes what is new (`AuditExport.run`, a periodic duty of `vmshadow
run`). The position is kept in a small JSON file beside the export queues and written only after the events are
durably queued: a crash in between publishes some events again (at least once; the SIEM drops them by event id),
never skips one.

PostgreSQL hands out sequence numbers at insert and another transaction may commit a lower one later, so a gap in
the numbers may still fill in. The position is therefore "everything up to N, and these numbers above it"; a gap
is waited for `GAP_GRACE_S` and then taken for a rolled-back insert (its number will never be used).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from vmshadow.app.paths import write_json_atomically
from vmshadow.domain.decision import Decision
from vmshadow.domain.errors import InputError, Issue
from vmshadow.domain.outcome import Outcome
from vmshadow.export.event import ExportEvent, from_decision, from_outcome_record
from vmshadow.ports.store import Store

AUDIT_POSITION = "audit-position.json"  # the file's name, in the export queue directory
GAP_GRACE_S = 60.0
PAGE = 1000

T = TypeVar("T")


@dataclass
class LogPosition:
    """How far one append-only log has been exported: every number up to `upto`, plus `above` (gaps below them)."""

    upto: int = 0
    above: set[int] = field(default_factory=set)
    gap_seen_at: float | None = None  # monotonic time the lowest missing number was first noticed

    def unseen(self, rows: Sequence[tuple[int, T]]) -> list[tuple[int, T]]:
        return [(seq, item) for seq, item in rows if seq > self.upto and seq not in self.above]

    def mark(self, seqs: Sequence[int], now: float) -> None:
        self.above.update(seqs)
        self._advance()
        if self.above and self.gap_seen_at is None:
            self.gap_seen_at = now
        elif self.above and self.gap_seen_at is not None and now - self.gap_seen_at >= GAP_GRACE_S:
            self.upto += 1  # the gap's insert was rolled back: its number never comes
            self.gap_seen_at = None
            self._advance()
            if self.above:
                self.gap_seen_at = now
        elif not self.above:
            self.gap_seen_at = None

    def _advance(self) -> None:
        while self.upto + 1 in self.above:
            self.upto += 1
            self.above.discard(self.upto)

    def to_json(self) -> dict[str, Any]:
        return {"upto": self.upto, "above": sorted(self.above)}

    @classmethod
    def from_json(cls, data: object) -> LogPosition:
        if not isinstance(data, dict):
            return cls()
        upto = data.get("upto", 0)
        above = data.get("above", [])
        if not isinstance(upto, int) or not isinstance(above, list) or not all(isinstance(s, int) for s in above):
            raise ValueError("export position: 'upto' must be an integer and 'above' a list of integers")
        return cls(upto=upto, above=set(above))


@dataclass
class AuditExport:
    """Publishes new decisions (with their proposals) and outcomes; `run` is one turn, returns what it published.

    `publish` must have stored the events durably when it returns (`Exporter.publish` does).
    """

    store: Store
    publish: Callable[[Sequence[ExportEvent]], object]
    position_path: Path
    clock: Callable[[], float] = time.monotonic
    decisions: LogPosition = field(init=False)
    outcomes: LogPosition = field(init=False)

    def __post_init__(self) -> None:
        self.decisions, self.outcomes = _read_positions(self.position_path)

    def run(self) -> dict[str, int]:
        published = {"decisions": 0, "outcomes": 0}
        while True:
            new_decisions = self.decisions.unseen(self.store.decisions_after(self.decisions.upto, limit=PAGE))
            new_outcomes = self.outcomes.unseen(self.store.outcomes_after(self.outcomes.upto, limit=PAGE))
            if not new_decisions and not new_outcomes:
                break
            self.publish([*self._decision_events(d for _, d in new_decisions), *self._outcome_events(new_outcomes)])
            now = self.clock()
            self.decisions.mark([s for s, _ in new_decisions], now)
            self.outcomes.mark([s for s, _ in new_outcomes], now)
            self._save()  # only after the events are queued: a crash before this publishes them again
            published["decisions"] += len(new_decisions)
            published["outcomes"] += len(new_outcomes)
            if len(new_decisions) < PAGE and len(new_outcomes) < PAGE:
                break
        now = self.clock()
        self.decisions.mark([], now)  # let a long-open gap expire even when nothing new came
        self.outcomes.mark([], now)
        return published

    def _decision_events(self, decisions: Iterable[Decision]) -> list[ExportEvent]:
        return [from_decision(d, self.store.proposal(d.proposal_id)) for d in decisions]

    @staticmethod
    def _outcome_events(rows: Sequence[tuple[int, Outcome]]) -> list[ExportEvent]:
        return [from_outcome_record(o) for _, o in rows]

    def _save(self) -> None:
        document = {"decisions": self.decisions.to_json(), "outcomes": self.outcomes.to_json()}
        write_json_atomically(self.position_path, document)


def _read_positions(path: Path) -> tuple[LogPosition, LogPosition]:
    if not path.exists():
        return LogPosition(), LogPosition()
    try:
        document = json.loads(path.read_text())
        return LogPosition.from_json(document.get("decisions")), LogPosition.from_json(document.get("outcomes"))
    except (OSError, ValueError, AttributeError) as exc:
        # Refusing to start beats silently skipping part of the audit log; deleting the file re-exports it all.
        raise InputError(
            Issue(str(path), f"unreadable export position ({exc}); delete the file to export the audit log again")
        ) from exc


def read_audit_position(path: Path) -> dict[str, int]:
    """How far each log has been exported (every number up to it), for `vmshadow export status`; 0: nothing yet."""
    decisions, outcomes = _read_positions(path)
    return {"decisions": decisions.upto, "outcomes": outcomes.upto}
