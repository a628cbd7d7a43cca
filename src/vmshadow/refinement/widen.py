"""Widening an undecided proposal in place: a growing attack gives one proposal to review, not one per stage.

A scan caught early yields a deny for the few ports seen so far; seconds later the same scan yields a deny for every
port. Both are right for what was known when they were made, but an administrator should see one proposal, with
all the evidence and the wider rule. So a fresh proposal whose rule covers the rule of a stored proposal that is
still waiting (state `proposed`, same recommender) takes that proposal's place: same id and creation time, the
fresh rule, impact and summary, the union of the evidence. A proposal someone already acted on (staged, edited,
approved, applied, rejected...) is never changed: the wider rule then stays a proposal of its own.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import replace

from vmshadow.domain.net import PortRange, Protocol
from vmshadow.domain.proposal import Evidence, Proposal, ProposalState
from vmshadow.domain.tmr import TMR, Endpoint, EndpointKind
from vmshadow.refinement.merge import MAX_EVIDENCE_FLOWS


def _dst_covers(wide: Endpoint, narrow: Endpoint) -> bool:
    if wide == narrow or wide.kind is EndpointKind.ANY:
        return True
    if wide.kind is EndpointKind.NETWORK and narrow.kind is EndpointKind.NETWORK:
        w, n = ipaddress.ip_network(wide.value), ipaddress.ip_network(narrow.value)
        return w.version == n.version and n.subnet_of(w)  # type: ignore[arg-type]
    return False


def _ports_cover(wide: tuple[PortRange, ...], narrow: tuple[PortRange, ...]) -> bool:
    if not wide:
        return True  # every port
    if not narrow:
        return False
    return all(any(w.first <= n.first and n.last <= w.last for w in wide) for n in narrow)


def covers(wide: TMR, narrow: TMR) -> bool:
    """Whether `wide` matches everything `narrow` matches: same action and source, a destination, protocol and
    ports at least as wide. (VMN and group endpoints count as equal only to themselves.)"""
    return (
        wide.action is narrow.action
        and wide.src == narrow.src
        and _dst_covers(wide.dst, narrow.dst)
        and (wide.protocol is narrow.protocol or wide.protocol is Protocol.ANY)
        and _ports_cover(wide.ports, narrow.ports)
    )


def _evidence(older: Evidence, newer: Evidence) -> Evidence:
    return Evidence(
        finding_ids=tuple(dict.fromkeys(older.finding_ids + newer.finding_ids)),
        community_ids=tuple(dict.fromkeys(older.community_ids + newer.community_ids))[:MAX_EVIDENCE_FLOWS],
        measured=newer.measured,  # the latest measurement
    )


def placed(fresh: Proposal, waiting: Sequence[Proposal]) -> Proposal:
    """Where a fresh proposal goes among the stored ones still waiting for review (state `proposed`):

    * it widens one, or makes the same rule again (its rule covers that one's): the fresh rule, impact and summary
      (replayed over more flows than the waiting one's) under the waiting proposal's id
      and creation time, the union of the evidence (the oldest such proposal, if several);
    * one already covers it: that proposal, with the fresh evidence added (its rule is wide enough);
    * otherwise: `fresh` as it is.
    Only proposals of the same recommender and kind are considered."""
    if fresh.rule is None:
        return fresh
    rule = fresh.rule
    same = [
        p
        for p in waiting
        if p.state is ProposalState.PROPOSED
        and p.id != fresh.id
        and p.recommender == fresh.recommender
        and p.kind is fresh.kind
        and p.rule is not None
    ]
    narrower = [p for p in same if p.rule is not None and covers(rule, p.rule)]
    if narrower:
        host = min(narrower, key=lambda p: (p.created_at, p.id))
        return replace(
            fresh,
            id=host.id,
            created_at=host.created_at,
            score=max(host.score, fresh.score),
            evidence=_evidence(host.evidence, fresh.evidence),
        )
    wider = [p for p in same if p.rule is not None and covers(p.rule, rule)]
    if wider:
        host = min(wider, key=lambda p: (p.created_at, p.id))
        return replace(host, score=max(host.score, fresh.score), evidence=_evidence(host.evidence, fresh.evidence))
    return fresh
