"""Feedback end to end on a store: an applied deny is hit and its recommender's trust rises; a false-positive report
and a rollback lower it; a report on a proposal that was never applied is refused and stores nothing."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

from tests.factories import at, make_finding, make_proposal
from vmshadow.adapters.sql import open_store
from vmshadow.app.feedback import current_trust, measure, recompute_trust
from vmshadow.app.review import decide_proposal
from vmshadow.cli import outcomes, recommenders
from vmshadow.domain.outcome import OutcomeKind
from vmshadow.domain.proposal import ProposalState
from vmshadow.review.lifecycle import decide

S = ProposalState

# The registration cli/main.py is to carry.
root = typer.Typer()
root.add_typer(outcomes.app, name="outcomes")
root.add_typer(recommenders.app, name="recommenders")


def vmshadow(*args: str | Path) -> Result:
    return CliRunner().invoke(root, [str(a) for a in args])


def trust_table(db: Path) -> dict[str, Any]:
    result = vmshadow("recommenders", "--db", db, "--json")
    assert result.exit_code == 0, result.stderr
    return {r["recommender"]: r for r in json.loads(result.stdout)}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A store with prop-1 (deny_scanner) applied as TMR tmr-1, and prop-2 (allow_least) only proposed."""
    path = tmp_path / "v.db"
    with open_store(f"sqlite:///{path}") as store:
        p = make_proposal(1)
        store.save_batch(proposals=[p, make_proposal(2, recommender="allow_least")])
        for target, t in ((S.APPROVED, at(10)), (S.APPLIED, at(20))):
            p, decision = decide(p, target, actor="alice", at=t)
            store.record_decision(decision, p)
    return path


def url(db: Path) -> str:
    return f"sqlite:///{db}"


def test_hits_raise_trust_then_a_false_positive_and_a_rollback_lower_it(db: Path) -> None:
    assert trust_table(db)["deny_scanner"]["trust"] == 0.5
    now = datetime.now(UTC)  # the CLI reports and shows trust at the wall clock's now
    (hits,) = measure(url(db), {"tmr-1": 42, "allow-all": 900}, at=now)
    assert (hits.kind, hits.value, hits.proposal_id) == (OutcomeKind.HITS, 42, "prop-1")
    assert measure(url(db), {"tmr-1": 42}, at=now) == []  # the same reading again records nothing
    raised = trust_table(db)["deny_scanner"]
    assert raised["trust"] > 0.5
    assert raised["outcomes"] == 1

    report = vmshadow("outcomes", "report", "prop-1", "--reason", "it was the backup job", "--db", db,
                      "--actor", "bob", "--json")  # fmt: skip
    assert report.exit_code == 0, report.stderr
    assert json.loads(report.stdout)["kind"] == "false_positive"
    after_report = trust_table(db)["deny_scanner"]["trust"]
    assert after_report < raised["trust"]

    decide_proposal(url(db), "prop-1", S.ROLLED_BACK, actor="alice", reason="false positive")
    snapshots = recompute_trust(url(db))
    assert snapshots["deny_scanner"].trust < after_report
    assert snapshots["allow_least"].trust == 0.5  # no outcomes yet: the prior
    assert current_trust(url(db), "deny_scanner") == pytest.approx(snapshots["deny_scanner"].trust)

    listed = vmshadow("outcomes", "list", "--proposal", "prop-1", "--db", db, "--json")
    assert [o["kind"] for o in json.loads(listed.stdout)] == ["hits", "false_positive", "rolled_back"]
    shown = trust_table(db)["deny_scanner"]
    assert [h["trust"] for h in shown["history"]] == [snapshots["deny_scanner"].trust]
    assert "deny_scanner" in vmshadow("recommenders", "--db", db).stdout


def test_trust_history_grows_with_each_recorded_computation(db: Path) -> None:
    first = vmshadow("recommenders", "--db", db, "--record")
    assert first.exit_code == 0, first.stderr
    measure(url(db), {"tmr-1": 5})
    assert vmshadow("recommenders", "--db", db, "--record").exit_code == 0
    history = [h["trust"] for h in trust_table(db)["deny_scanner"]["history"]]
    assert len(history) == 2
    assert history[0] == 0.5
    assert history[1] > 0.5


def test_a_report_on_a_proposal_never_applied_is_refused_and_stores_nothing(db: Path) -> None:
    with open_store(url(db)) as store:
        store.save_batch(proposals=[replace(make_proposal(3), state=S.APPROVED)])
    for pid in ("prop-2", "prop-3"):
        refused = vmshadow("outcomes", "report", pid, "--reason", "wrong", "--db", db)
        assert refused.exit_code == 2
        assert "never applied" in refused.stderr
    unknown = vmshadow("outcomes", "report", "prop-404", "--reason", "wrong", "--db", db)
    assert unknown.exit_code == 2
    assert "no proposal" in unknown.stderr
    no_reason = vmshadow("outcomes", "report", "prop-1", "--db", db)
    assert no_reason.exit_code == 2
    assert "needs a reason" in no_reason.stderr
    with open_store(url(db)) as store:
        assert store.outcomes() == []
    assert trust_table(db)["deny_scanner"]["trust"] == 0.5


def test_measure_reads_findings_after_the_apply_and_rollbacks_from_the_log(db: Path) -> None:
    with open_store(url(db)) as store:
        store.save_batch(findings=[make_finding(1)])  # the evidence behind prop-1, before the apply
    stopped = measure(url(db), {})
    assert [(o.kind, o.proposal_id) for o in stopped] == [(OutcomeKind.FINDING_STOPPED, "prop-1")]

    with open_store(url(db)) as store:
        store.save_batch(findings=[make_finding(7, observed_at=at(600))])  # the same scanner, after the apply
    continued = measure(url(db), {"tmr-1": 3})
    assert sorted(o.kind for o in continued) == [OutcomeKind.FINDING_CONTINUED, OutcomeKind.HITS]

    decide_proposal(url(db), "prop-1", S.ROLLED_BACK, actor="alice", reason="wrong scope")
    assert [o.kind for o in measure(url(db), {})] == [OutcomeKind.ROLLED_BACK]
    assert measure(url(db), {}) == []
