"""Merging identical proposals: one proposal per id, with the union of its evidence."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from vmshadow.domain.proposal import Evidence, Proposal
from vmshadow.domain.tmr import TMR

MAX_EVIDENCE_FLOWS = 100


def _merge(a: Proposal, b: Proposal) -> Proposal:
    """One proposal from two with the same id: union of evidence, the stronger score."""
    strongest = a if a.score >= b.score else b
    return replace(
        strongest,
        created_at=min(a.created_at, b.created_at),
        evidence=Evidence(
            finding_ids=tuple(dict.fromkeys(a.evidence.finding_ids + b.evidence.finding_ids)),
            community_ids=tuple(dict.fromkeys(a.evidence.community_ids + b.evidence.community_ids))[
                :MAX_EVIDENCE_FLOWS
            ],
            measured=strongest.evidence.measured,
        ),
    )


def merge_proposals(proposals: Sequence[Proposal]) -> list[Proposal]:
    """Identical proposals (same id) merged into one, in first-seen order."""
    merged: dict[str, Proposal] = {}
    for p in proposals:
        merged[p.id] = _merge(merged[p.id], p) if p.id in merged else p
    return list(merged.values())


def same_rule(a: TMR | None, b: TMR | None) -> bool:
    """Whether two rules are the same rule: id, priority, match, action and expiry (not who wrote it, nor the
    comment: a stored proposal's rule may have lost its origin, an administrator may have reworded it)."""
    if a is None or b is None:
        return a is b
    return (a.id, a.priority, a.src, a.dst, a.protocol, a.ports, a.action, a.expires_at) == (
        b.id, b.priority, b.src, b.dst, b.protocol, b.ports, b.action, b.expires_at
    )  # fmt: skip


def keep_decision(stored: Proposal | None, fresh: Proposal) -> Proposal:
    """A proposal made again: the stored one gains the fresh evidence, but keeps its state, creation time and rule
    (an administrator's decision, an edit included, stands). Without a stored one, the fresh proposal as it is.

    When the stored rule is the fresh one (`same_rule`), the impact and conflicts are the fresh ones whatever the
    scores: they were computed now, over the latest window and the TMRSet in force, where the stored ones are as
    old as the proposal (so is the rule's origin: a `reprioritize` stored before rules kept their origin learns it).
    When they differ (an administrator edited the stored rule), the fresh numbers and summary are about another
    rule, so the stored ones stay."""
    if stored is None:
        return fresh
    merged = replace(merge_proposals([stored, fresh])[0], state=stored.state, created_at=stored.created_at)
    if stored.rule is None or fresh.rule is None:
        return replace(merged, kind=stored.kind, rule=stored.rule)
    if same_rule(stored.rule, fresh.rule):
        rule = replace(stored.rule, origin=fresh.rule.origin)
        return replace(merged, rule=rule, impact=fresh.impact, conflicts=fresh.conflicts)
    return replace(merged, rule=stored.rule, summary=stored.summary, impact=stored.impact, conflicts=stored.conflicts)
