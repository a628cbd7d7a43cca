"""Conflicts with proposals waiting for review (`refinement/pending.py`), on crafted TMRSets and pending proposals."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.factories import T0, make_proposal
from tests.unit.refinement.test_conflicts import BASE, tmrs
from vmshadow.domain.net import PortRange, Protocol
from vmshadow.domain.proposal import Proposal, ProposalKind, ProposalState
from vmshadow.domain.tmr import TMR, Action, Endpoint, Origin, TMRSet
from vmshadow.domain.vmn import VMN
from vmshadow.refinement.conflicts import ConflictKind, conflicts_of, overlaps
from vmshadow.refinement.pending import (
    PENDING_STATES,
    _ordered,
    conflicts_with_pending,
    is_pending_tag,
    with_pending_conflicts,
)

A = ipaddress.ip_address
NOW = T0 + timedelta(hours=1)
VMNS = (VMN("vm1", addresses=(A("198.18.0.11"),)), VMN("vm2", addresses=(A("198.18.0.12"),)))
ADMIN_ALLOW = TMR("allow-lan", 100, Endpoint.any(), Endpoint.any(), Action.ALLOW, origin=Origin.ADMIN)
IN_FORCE = TMRSet(tmrs=(ADMIN_ALLOW,), vmns=VMNS)
SSH = {"protocol": Protocol.TCP, "ports": (PortRange.single(22),)}


def deny(tid: str, priority: int, src: str = "vm1", dst: str = "vm2", **kw: object) -> TMR:
    values: dict[str, object] = {"origin": Origin.PROPOSAL, **SSH, **kw}
    return TMR(tid, priority, Endpoint.vmn(src), Endpoint.vmn(dst), Action.DENY, **values)  # type: ignore[arg-type]


def allow(tid: str, priority: int, src: str = "vm1", dst: str = "vm2", **kw: object) -> TMR:
    return replace(deny(tid, priority, src, dst, **kw), action=Action.ALLOW)


def proposal(pid: str, rule: TMR | None, state: ProposalState = ProposalState.PROPOSED, **kw: object) -> Proposal:
    kind = ProposalKind.ALERT if rule is None else ProposalKind.ADD_DENY
    if rule is not None and rule.action is Action.ALLOW:
        kind = ProposalKind.ADD_ALLOW
    values: dict[str, object] = {"kind": kind, "state": state, "rule": rule, "conflicts": (), **kw}
    return make_proposal(0, id=pid, **values)


def kinds(tmr: TMR, pending: list[Proposal], tmrset: TMRSet = IN_FORCE) -> list[tuple[ConflictKind, str]]:
    return [(c.kind, c.other_id) for c in conflicts_with_pending(tmr, tmrset, pending, NOW)]


def test_an_approved_allow_not_yet_applied_shadows_a_fresh_deny_and_contradicts_it() -> None:
    approved = proposal("prop-allow", allow("allow-ssh", 10, protocol=Protocol.TCP, ports=()), ProposalState.APPROVED)
    fresh = deny("deny-ssh", 50)
    found = conflicts_with_pending(fresh, IN_FORCE, [approved], NOW)
    assert [(c.kind, c.other_id) for c in found] == [
        (ConflictKind.PENDING_SHADOWED, "prop-allow"),
        (ConflictKind.PENDING_CONTRADICTS, "prop-allow"),
    ]
    assert [c.tag for c in found] == ["pending_shadowed:prop-allow", "pending_contradicts:prop-allow"]
    assert "once the approved add_allow proposal prop-allow" in found[0].sentence
    assert "never decides" in found[0].sentence
    assert "allow-ssh decides it (allow) before deny-ssh" in found[1].sentence
    # against the TMRSet in force alone it only overrides the administrator's broad allow
    assert [c.kind for c in conflicts_of(fresh, IN_FORCE, NOW)] == [ConflictKind.OVERRIDES_ADMIN]


def test_pending_proposals_that_allow_and_deny_part_of_the_same_traffic_contradict() -> None:
    # the pending allow is vm1 -> vm2 tcp/1-1024, the fresh deny vm1 -> any tcp/22: they share vm1 -> vm2 tcp/22
    pending = proposal("prop-allow", allow("allow-low", 60, ports=(PortRange(1, 1024),)))
    fresh = TMR("deny-out", 50, Endpoint.vmn("vm1"), Endpoint.any(), Action.DENY, **SSH, origin=Origin.PROPOSAL)  # type: ignore[arg-type]
    assert kinds(fresh, [pending]) == [(ConflictKind.PENDING_CONTRADICTS, "prop-allow")]
    (c,) = conflicts_with_pending(fresh, IN_FORCE, [pending], NOW)
    assert "deny-out decides it (deny) before allow-low" in c.sentence


def test_a_duplicate_pending_rule_shadows_or_makes_redundant() -> None:
    waiting = proposal("prop-old", deny("deny-a", 50), ProposalState.STAGED)
    assert kinds(deny("deny-b", 50), [waiting]) == [(ConflictKind.PENDING_SHADOWED, "prop-old")]  # ties: after
    assert kinds(deny("deny-b", 40), [waiting]) == [
        (ConflictKind.PENDING_SHADOWS, "prop-old"),  # ahead of the pending duplicate: that one never decides,
        (ConflictKind.PENDING_REDUNDANT, "prop-old"),  # and this one changes nothing once that one is applied
    ]
    # a narrower deny ahead of a pending wider one with nothing in between: redundant once that one is applied
    wide = proposal("prop-wide", deny("deny-wide", 60, protocol=Protocol.TCP, ports=()), ProposalState.EDITED)
    assert kinds(deny("deny-narrow", 50), [wide]) == [(ConflictKind.PENDING_REDUNDANT, "prop-wide")]


def test_redundancy_needs_nothing_in_between_that_decides_otherwise() -> None:
    between = allow("allow-ssh-in-force", 55)
    in_force = TMRSet(tmrs=(ADMIN_ALLOW, between), vmns=VMNS)
    wide = proposal("prop-wide", deny("deny-wide", 60, protocol=Protocol.TCP, ports=()))
    assert kinds(deny("deny-narrow", 50), [wide], in_force) == []


def test_no_conflict_without_shared_traffic_or_with_what_cannot_go_into_force() -> None:
    fresh = deny("deny-ssh", 50)
    other_port = proposal("prop-web", allow("allow-web", 10, ports=(PortRange.single(80),)), ProposalState.APPROVED)
    udp = proposal("prop-udp", allow("allow-udp", 10, protocol=Protocol.UDP), ProposalState.APPROVED)
    # (not vm2 -> vm1: a packet identified as vm1 by MAC may carry vm2's address, so that traffic is shared)
    overlapping = allow("allow-ssh", 10)
    decided = [
        proposal(f"prop-{state}", overlapping, state)
        for state in ProposalState
        if state not in PENDING_STATES  # rejected, applied (the TMRSet's business), expired, rolled back
    ]
    expired = proposal("prop-gone", replace(overlapping, id="allow-gone", expires_at=NOW), ProposalState.APPROVED)
    stranger = proposal(
        "prop-vm9", allow("allow-vm9", 10, src="vm9"), ProposalState.APPROVED
    )  # a VMN the set no longer knows
    alert = proposal("prop-alert", None)
    itself = proposal("prop-self", overlapping)
    pending = [other_port, udp, *decided, expired, stranger, alert, itself]
    assert conflicts_with_pending(fresh, IN_FORCE, pending, NOW, own_id="prop-self") == []
    assert {p.state for p in decided} == set(ProposalState) - PENDING_STATES
    assert {ProposalState.PROPOSED, ProposalState.STAGED, ProposalState.EDITED,
                              ProposalState.APPROVED} == PENDING_STATES  # fmt: skip


def test_a_pending_reprioritize_moves_its_tmr_and_two_proposals_on_one_tmr_are_reported() -> None:
    in_force_deny = deny("deny-ssh", 200, origin=Origin.ADMIN)
    in_force = TMRSet(tmrs=(ADMIN_ALLOW, in_force_deny), vmns=VMNS)
    move = proposal("prop-move", replace(in_force_deny, priority=5), kind=ProposalKind.REPRIORITIZE)
    fresh_allow = allow("allow-ssh", 50)  # ahead of deny-ssh in force; behind it once it moves
    assert kinds(fresh_allow, [move], in_force) == [
        (ConflictKind.PENDING_SHADOWED, "prop-move"),
        (ConflictKind.PENDING_CONTRADICTS, "prop-move"),
    ]
    other_move = replace(in_force_deny, priority=7)
    assert kinds(other_move, [move], in_force) == [(ConflictKind.PENDING_SAME_TMR, "prop-move")]


def test_the_batch_gets_tags_against_the_store_and_each_other() -> None:
    stored_allow = proposal("prop-allow", allow("allow-ssh", 10), ProposalState.APPROVED)
    fresh_deny = proposal("prop-deny", deny("deny-ssh", 50), conflicts=("overrides_admin:x", "pending_shadows:old"))
    fresh_allow = proposal("prop-allow2", allow("allow-ssh2", 60, protocol=Protocol.TCP, ports=()))
    applied = proposal("prop-applied", deny("deny-old", 40), ProposalState.APPLIED, conflicts=("shadowed:y",))
    out = with_pending_conflicts([fresh_deny, fresh_allow, applied], IN_FORCE, [stored_allow], NOW)
    by_id = {p.id: p.conflicts for p in out}
    assert by_id["prop-deny"] == (
        "overrides_admin:x",  # conflicts with the TMRSet stay first; the stale pending tag is gone
        "pending_shadowed:prop-allow",
        "pending_contradicts:prop-allow",
        "pending_contradicts:prop-allow2",
    )
    assert by_id["prop-allow2"] == ("pending_contradicts:prop-deny",)  # stored allow-ssh is covered, not covering
    assert by_id["prop-applied"] == ("shadowed:y",)  # in force already: left as it was
    # a batch proposal replaces the stored one with its id (its newer rule counts, not the stored one's)
    rejected_now = replace(stored_allow, state=ProposalState.REJECTED)
    out = with_pending_conflicts([fresh_deny, rejected_now], IN_FORCE, [stored_allow], NOW)
    assert out[0].conflicts == ("overrides_admin:x",)
    assert is_pending_tag("pending_redundant:p")
    assert not is_pending_tag("redundant:p")


@settings(max_examples=300, deadline=None)
@given(tmrs("fresh"), tmrs("pending"), st.integers(0, 2), st.booleans())
def test_pending_conflicts_agree_with_conflicts_of_once_the_pending_rule_is_applied(
    fresh: TMR, pending_rule: TMR, priority: int, same_action: bool
) -> None:
    pending_rule = replace(pending_rule, priority=1, action=Action.DENY)
    fresh = replace(fresh, priority=priority, action=Action.DENY if same_action else Action.ALLOW)
    found = {c.kind for c in conflicts_with_pending(fresh, BASE, [proposal("prop-p", pending_rule)], NOW)}
    if not overlaps(BASE, fresh, pending_rule):
        assert found == set()  # (a rule matching nothing is reported against the TMRSet, not here)
        return
    applied = {(c.kind, c.other_id) for c in conflicts_of(fresh, BASE.with_tmr(pending_rule), NOW)}
    assert (ConflictKind.PENDING_SHADOWED in found) == ((ConflictKind.SHADOWED, "pending") in applied)
    assert (ConflictKind.PENDING_REDUNDANT in found) == ((ConflictKind.REDUNDANT, "pending") in applied)
    assert (ConflictKind.PENDING_CONTRADICTS in found) is not same_action
    if priority == 1:  # a tie: the pending rule, already there, comes first
        assert ConflictKind.PENDING_SHADOWS not in found
    else:
        shadows = {c.kind for c in conflicts_of(pending_rule, BASE.with_tmr(fresh), NOW)}
        assert (ConflictKind.PENDING_SHADOWS in found) == (ConflictKind.SHADOWED in shadows)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 4), max_size=6), st.integers(0, 4), st.integers(0, 4), st.booleans(), st.booleans())
def test_the_pair_order_is_the_tmrset_order(
    priorities: list[int], pending_at: int, fresh_at: int, pending_moves: bool, fresh_moves: bool
) -> None:
    in_force = TMRSet(tmrs=tuple(deny(f"t{i}", p) for i, p in enumerate(priorities)), vmns=VMNS)
    pending = deny("t0" if pending_moves and priorities else "pending", pending_at)
    fresh = deny("t1" if fresh_moves and len(priorities) > 1 else "fresh", fresh_at)
    expected = in_force.without(pending.id).with_tmr(pending).without(fresh.id).with_tmr(fresh).tmrs
    assert [t.id for t in _ordered(in_force, pending, fresh, NOW)] == [t.id for t in expected]
