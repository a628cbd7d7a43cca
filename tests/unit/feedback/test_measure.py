"""Outcomes measured from counters, findings after an apply, the review log, and false-positive reports."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from datetime import timedelta

import pytest

from tests.factories import at, make_alert, make_decision, make_finding, make_proposal
from vmshadow.domain.errors import InputError
from vmshadow.domain.outcome import OutcomeKind, Polarity
from vmshadow.domain.proposal import ProposalState
from vmshadow.feedback.measure import (
    false_positive,
    outcomes_from_counters,
    outcomes_from_decisions,
    outcomes_from_findings,
    was_applied,
)

S = ProposalState
APPLIED = make_proposal(1, state=S.APPLIED)
APPLIED_AT = at(100)


def test_hits_between_two_readings_become_one_outcome_per_applied_proposal() -> None:
    other = make_proposal(2, state=S.APPLIED)
    approved = make_proposal(3, state=S.APPROVED)
    found = outcomes_from_counters(
        [APPLIED, other, approved], {"tmr-1": 5, "tmr-2": 7}, {"tmr-1": 12, "tmr-2": 7, "tmr-3": 50}, at(200)
    )
    (hits,) = found
    assert (hits.proposal_id, hits.kind, hits.value, hits.recommender) == (
        "prop-1",
        OutcomeKind.HITS,
        7,
        "deny_scanner",
    )
    assert hits.polarity is Polarity.GOOD
    assert hits.observed_at == at(200)
    assert "tmr-1" in hits.detail


def test_a_counter_reset_by_a_replace_counts_from_zero() -> None:
    (hits,) = outcomes_from_counters([APPLIED], {"tmr-1": 40}, {"tmr-1": 3}, at(200))
    assert hits.value == 3


def test_a_rule_not_in_force_or_an_alert_gives_no_hits() -> None:
    alert = make_alert(4, state=S.APPLIED)
    assert outcomes_from_counters([APPLIED, alert], {}, {"tmr-9": 4}, at(200)) == []


def test_measuring_the_same_reading_twice_gives_the_same_id() -> None:
    first = outcomes_from_counters([APPLIED], {}, {"tmr-1": 3}, at(200))
    again = outcomes_from_counters([APPLIED], {}, {"tmr-1": 3}, at(200))
    later = outcomes_from_counters([APPLIED], {}, {"tmr-1": 3}, at(260))
    assert first == again
    assert first[0].id != later[0].id


EVIDENCE = make_finding(1)  # find-1: the scan behind prop-1


def test_the_offender_continuing_after_the_apply_is_recorded() -> None:
    later = make_finding(7, observed_at=APPLIED_AT + timedelta(minutes=5))
    before = make_finding(8, observed_at=APPLIED_AT - timedelta(minutes=5))
    someone_else = make_finding(9, src_ip=ipaddress.ip_address("192.0.2.9"), src_vmn=None, observed_at=at(150))
    (o,) = outcomes_from_findings(APPLIED, [EVIDENCE, later, before, someone_else], applied_at=APPLIED_AT, at=at(500))
    assert (o.kind, o.value, o.detail) == (OutcomeKind.FINDING_CONTINUED, 1, "find-7")
    assert o.polarity is Polarity.NEUTRAL  # mirror before TMR: a blocked offender still shows up


def test_the_same_vmn_from_another_address_is_the_same_offender() -> None:
    moved = make_finding(7, src_ip=ipaddress.ip_address("192.0.2.9"), observed_at=at(150))
    (o,) = outcomes_from_findings(APPLIED, [EVIDENCE, moved], applied_at=APPLIED_AT, at=at(500))
    assert o.kind is OutcomeKind.FINDING_CONTINUED


def test_silence_for_the_quiet_period_means_the_finding_stopped() -> None:
    quiet = timedelta(hours=1)
    assert outcomes_from_findings(APPLIED, [EVIDENCE], applied_at=APPLIED_AT, at=at(200), quiet=quiet) == []
    (o,) = outcomes_from_findings(APPLIED, [EVIDENCE], applied_at=APPLIED_AT, at=APPLIED_AT + quiet, quiet=quiet)
    (again,) = outcomes_from_findings(APPLIED, [EVIDENCE], applied_at=APPLIED_AT, at=APPLIED_AT + 2 * quiet)
    assert o.kind is OutcomeKind.FINDING_STOPPED
    assert o.polarity is Polarity.GOOD
    assert again.id == o.id  # stopping is one fact, however often it is measured


def test_without_the_evidence_nothing_can_be_said() -> None:
    assert outcomes_from_findings(APPLIED, [make_finding(7)], applied_at=APPLIED_AT, at=at(99_999)) == []


def test_rollbacks_and_expiries_in_the_review_log_become_outcomes() -> None:
    p, q = make_proposal(1), make_proposal(2, recommender="allow_least")
    decisions = [
        make_decision(1, p.id, S.APPROVED, S.APPLIED),
        make_decision(2, p.id, S.APPLIED, S.ROLLED_BACK, reason="broke backups"),
        make_decision(3, q.id, S.APPLIED, S.EXPIRED, actor="vmshadow"),
        make_decision(4, "prop-unknown", S.APPLIED, S.ROLLED_BACK),
    ]
    found = outcomes_from_decisions({p.id: p, q.id: q}, decisions)
    assert [(o.proposal_id, o.recommender, o.kind, o.actor, o.detail) for o in found] == [
        ("prop-1", "deny_scanner", OutcomeKind.ROLLED_BACK, "alice", "broke backups"),
        ("prop-2", "allow_least", OutcomeKind.EXPIRED, "vmshadow", "step 3"),
    ]
    assert found[0].observed_at == decisions[1].decided_at
    assert outcomes_from_decisions({p.id: p, q.id: q}, decisions) == found


def test_a_false_positive_report_needs_an_applied_proposal_and_a_reason() -> None:
    o = false_positive(APPLIED, [], actor="alice", reason="  nightly backup  ", at=at(300))
    assert (o.kind, o.actor, o.detail, o.weight) == (OutcomeKind.FALSE_POSITIVE, "alice", "nightly backup", 2.0)
    assert false_positive(APPLIED, [], actor="alice", reason="other words", at=at(900)).id == o.id
    assert false_positive(APPLIED, [], actor="bob", reason="x", at=at(300)).id != o.id
    with pytest.raises(InputError, match="never applied"):
        false_positive(make_proposal(1), [], actor="alice", reason="x", at=at(300))
    with pytest.raises(InputError, match="needs a reason"):
        false_positive(APPLIED, [], actor="alice", reason=" ", at=at(300))


def test_a_proposal_rolled_back_or_expired_was_applied() -> None:
    assert was_applied(make_proposal(1, state=S.ROLLED_BACK))
    assert was_applied(make_proposal(1, state=S.EXPIRED))
    assert not was_applied(make_proposal(1, state=S.APPROVED))
    assert not was_applied(make_proposal(1, state=S.REJECTED), [make_decision(1, "prop-2", S.APPROVED, S.APPLIED)])
    assert was_applied(make_proposal(1, state=S.REJECTED), [make_decision(1, "prop-1", S.APPROVED, S.APPLIED)])


def test_an_outcome_refuses_a_negative_weight_and_a_naive_time() -> None:
    (o,) = outcomes_from_counters([APPLIED], {}, {"tmr-1": 3}, at(200))
    with pytest.raises(ValueError, match="weight"):
        replace(o, weight=-1.0)
    with pytest.raises(ValueError, match="timezone"):
        replace(o, observed_at=at(0).replace(tzinfo=None))
