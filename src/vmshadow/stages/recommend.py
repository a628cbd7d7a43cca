"""`run_recommend`: findings in, merged proposals out, through every recommender."""

from __future__ import annotations

from collections.abc import Sequence

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
) -> list[Proposal]:
    proposals: list[Proposal] = []
    for recommender in recommenders:
        proposals.extend(recommender.propose(findings, tmrset, context))
    return merge_proposals(proposals)
