"""Feedback: measure applied proposals (rule counters, findings after the apply, false-positive reports, rollbacks,
expiry) into outcomes, and turn outcomes into trust per recommender. Pure: the composition root feeds it."""

from vmshadow.feedback.measure import outcomes_from_counters, outcomes_from_decisions, outcomes_from_findings
from vmshadow.feedback.trust import DEFAULT_HALF_LIFE, PRIOR, trust_by_recommender, trust_from_outcomes

__all__ = [
    "DEFAULT_HALF_LIFE",
    "PRIOR",
    "outcomes_from_counters",
    "outcomes_from_decisions",
    "outcomes_from_findings",
    "trust_by_recommender",
    "trust_from_outcomes",
]
