"""The audit-log exporter: every stored decision and outcome is published at least once, across restarts."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from tests.factories import at, make_decision, make_proposal
from vmshadow.adapters.sql import SqlStore, open_store
from vmshadow.app.export_audit import GAP_GRACE_S, AuditExport, LogPosition
from vmshadow.domain.errors import InputError
from vmshadow.domain.outcome import Outcome, OutcomeKind
from vmshadow.domain.proposal import ProposalState as S
from vmshadow.export.event import EventKind, ExportEvent
from vmshadow.export.syslog5424 import format_5424


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    s = open_store(f"sqlite:///{tmp_path / 'v.db'}")
    yield s
    s.close()


class Collect:
    def __init__(self) -> None:
        self.events: list[ExportEvent] = []
        self.fail = False

    def __call__(self, events: Sequence[ExportEvent]) -> None:
        if self.fail:
            raise OSError("queue disk full")
        self.events.extend(events)


def outcome(n: int, kind: OutcomeKind = OutcomeKind.HITS) -> Outcome:
    return Outcome(f"out-{n}", "prop-1", "refinement.scoped_deny", kind, at(500 + n), value=float(n), actor="bob")


def decide(store: SqlStore, n: int, a: S, b: S) -> None:
    store.record_decision(make_decision(n, "prop-1", a, b), replace(make_proposal(1), state=b))


def test_each_decision_and_outcome_is_published_once_and_a_restart_continues(store: SqlStore, tmp_path: Path) -> None:
    store.save_batch(proposals=[make_proposal(1)])
    decide(store, 1, S.PROPOSED, S.APPROVED)
    store.record_outcome(outcome(1, OutcomeKind.FALSE_POSITIVE))
    sent = Collect()
    position = tmp_path / "export" / "audit.json"
    exporter = AuditExport(store, sent, position)
    assert exporter.run() == {"decisions": 1, "outcomes": 1}
    assert [(e.kind, e.subject_id, e.action) for e in sent.events] == [
        (EventKind.DECISION, "dec-1", "approved"),
        (EventKind.OUTCOME, "out-1", "false_positive"),
    ]
    decision_event = sent.events[0]
    assert decision_event.rule_id == make_proposal(1).recommender  # the proposal was looked up
    assert "alice moved proposal prop-1 from proposed to approved" in decision_event.summary
    assert "false_positive" in format_5424(sent.events[1])  # formats like any other event

    assert exporter.run() == {"decisions": 0, "outcomes": 0}
    decide(store, 2, S.APPROVED, S.APPLIED)
    store.record_outcome(outcome(2))
    restarted = AuditExport(store, sent, position)  # a new process reading the saved position
    assert restarted.run() == {"decisions": 1, "outcomes": 1}
    assert [e.subject_id for e in sent.events] == ["dec-1", "out-1", "dec-2", "out-2"]


def test_a_failed_publish_keeps_the_position_so_nothing_is_skipped(store: SqlStore, tmp_path: Path) -> None:
    store.save_batch(proposals=[make_proposal(1)])
    decide(store, 1, S.PROPOSED, S.REJECTED)
    sent = Collect()
    sent.fail = True
    exporter = AuditExport(store, sent, tmp_path / "audit.json")
    with pytest.raises(OSError, match="disk full"):
        exporter.run()
    assert not (tmp_path / "audit.json").exists()
    sent.fail = False
    assert AuditExport(store, sent, tmp_path / "audit.json").run() == {"decisions": 1, "outcomes": 0}
    assert [e.subject_id for e in sent.events] == ["dec-1"]


def test_more_than_a_page_is_published_in_pages(
    store: SqlStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("vmshadow.app.export_audit.PAGE", 2)
    store.save_batch(proposals=[make_proposal(1)])
    for n in range(5):
        store.record_outcome(outcome(n))
    sent = Collect()
    assert AuditExport(store, sent, tmp_path / "audit.json").run() == {"decisions": 0, "outcomes": 5}
    assert [e.subject_id for e in sent.events] == [f"out-{n}" for n in range(5)]


def test_a_gap_waits_for_a_late_commit_then_is_given_up() -> None:
    p = LogPosition()
    p.mark([1, 3], now=0.0)  # 2 is missing: maybe a transaction that commits later
    assert (p.upto, p.above) == (1, {3})
    assert p.unseen([(2, "late"), (3, "again")]) == [(2, "late")]
    p.mark([], now=GAP_GRACE_S / 2)
    assert p.upto == 1
    p.mark([], now=GAP_GRACE_S + 1)  # it never came: a rolled-back insert
    assert (p.upto, p.above) == (3, set())
    p.mark([4], now=GAP_GRACE_S + 2)
    assert (p.upto, p.above, p.gap_seen_at) == (4, set(), None)


def test_an_unreadable_position_file_is_refused_naming_it(store: SqlStore, tmp_path: Path) -> None:
    position = tmp_path / "audit.json"
    position.write_text('{"decisions": {"upto": "x"}}')
    with pytest.raises(InputError, match=r"audit\.json.*export position"):
        AuditExport(store, Collect(), position)
    assert position.read_text() == '{"decisions": {"upto": "x"}}'
