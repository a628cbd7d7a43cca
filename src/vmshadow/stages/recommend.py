"""`run_recommend`: findings in, merged proposals out, through every recommender.

Not every recommender belongs on every batch: `per_batch(recommenders)` are those meant to run whenever findings
arrive; `scheduled(recommenders)` read the whole archive window whatever the batch holds (least privilege) and run
on a schedule, e.g. hourly, with `run_recommend([], tmrset, scheduled(...), context)`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from vmshadow.domain.finding import Finding
from vmshadow.domain.proposal import Proposal
from vmshadow.domain.tmr import TMRSet
from vmshadow.refinement.merge import merge_proposals
from vmshadow.refinement.recommender import RecommendContext, Recommender


def run_recommend(
    findings: Sequence[Finding],
    tmrset: TMRSet,
    recommenders: Sequence[Recommender],
    context: RecommendContext,
    trust: Mapping[str, float] | None = None,
) -> list[Proposal]:
    """Every recommender's proposals, merged; each recommender sees its own trust (`trust`, by name)."""
    proposals: list[Proposal] = []
    for recommender in recommenders:
        own = replace(context, trust=trust[recommender.name]) if trust and recommender.name in trust else context
        proposals.extend(recommender.propose(findings, tmrset, own))
    return merge_proposals(proposals)


def per_batch(recommenders: Sequence[Recommender]) -> list[Recommender]:
    """The recommenders to run on every batch of findings."""
    return [r for r in recommenders if r.per_batch]


def scheduled(recommenders: Sequence[Recommender]) -> list[Recommender]:
    """The recommenders to run on a schedule over the archive window."""
    return [r for r in recommenders if not r.per_batch]
