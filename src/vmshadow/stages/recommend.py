"""`run_recommend`: findings in, merged proposals out, through every recommender."""

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
