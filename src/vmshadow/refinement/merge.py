"""Merging identical proposals: one proposal per id, with the union of its evidence."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from vmshadow.domain.proposal import Evidence, Proposal

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


def keep_decision(stored: Proposal | None, fresh: Proposal) -> Proposal:
    """A proposal made again: the stored one gains the fresh evidence, but keeps its state and creation time
    (an administrator's decision stands). Without a stored one, the fresh proposal as it is."""
    if stored is None:
        return fresh
    merged = merge_proposals([stored, fresh])[0]
    return replace(merged, state=stored.state, created_at=stored.created_at)
