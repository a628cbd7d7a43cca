"""Outcomes: what happened after a proposal was decided or applied, and the trust a recommender earned from them.

An outcome is evidence about the recommender that made the proposal. Its kind fixes whether it counts for the
recommender (good), against it (bad) or not at all (neutral); its weight says how much (see `DEFAULT_WEIGHTS`).
Outcomes are append-only: a new measurement is a new outcome, never an edit of an old one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any


class Polarity(StrEnum):
    GOOD = "good"
    BAD = "bad"
    NEUTRAL = "neutral"


class OutcomeKind(StrEnum):
    HITS = "hits"  # the applied rule matched live traffic (nftables counters)
    FINDING_STOPPED = "finding_stopped"  # no finding from the offender after the apply, for a quiet period
    FINDING_CONTINUED = "finding_continued"  # the offender still shows up on the shadow port after the apply
    FALSE_POSITIVE = "false_positive"  # an administrator reported the proposal as wrong
    ROLLED_BACK = "rolled_back"  # the applied proposal was taken back
    EXPIRED = "expired"  # a temporary rule ran out: says nothing about its quality

    @property
    def polarity(self) -> Polarity:
        return POLARITY[self]


_K = OutcomeKind
POLARITY: MappingProxyType[OutcomeKind, Polarity] = MappingProxyType(
    {
        _K.HITS: Polarity.GOOD,
        _K.FINDING_STOPPED: Polarity.GOOD,
        # The shadow port copies traffic before TMRs are evaluated, so a blocked offender who keeps trying still
        # produces findings: continuing is not evidence that the deny is wrong (its hits say it works).
        _K.FINDING_CONTINUED: Polarity.NEUTRAL,
        _K.FALSE_POSITIVE: Polarity.BAD,
        _K.ROLLED_BACK: Polarity.BAD,
        _K.EXPIRED: Polarity.NEUTRAL,
    }
)
"""Whether each kind of outcome counts for or against the recommender."""

DEFAULT_WEIGHTS: MappingProxyType[OutcomeKind, float] = MappingProxyType(
    {
        _K.HITS: 1.0,
        _K.FINDING_STOPPED: 1.0,
        _K.FINDING_CONTINUED: 0.0,
        _K.FALSE_POSITIVE: 2.0,  # an administrator's explicit word outweighs one counter reading
        _K.ROLLED_BACK: 1.0,
        _K.EXPIRED: 0.0,
    }
)
"""How much evidence one outcome of each kind is, before recency weighting."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """One observed consequence of a proposal, attributed to the recommender that made it.

    `value` is the measured quantity (packets for hits, findings for finding_continued, 0 otherwise); `weight` is
    the evidence it carries (0 or more); `actor` is who reported it (an administrator, or ``vmshadow`` when
    measured); `detail` is free text (the reason of a false-positive report, the TMR id of the hits, ...).
    """

    id: str
    proposal_id: str
    recommender: str
    kind: OutcomeKind
    observed_at: datetime
    value: float = 0.0
    weight: float = 1.0
    actor: str = "vmshadow"
    detail: str = ""

    def __post_init__(self) -> None:
        if not self.weight >= 0.0:  # also refuses NaN
            raise ValueError(f"outcome {self.id}: weight must be 0 or more, not {self.weight}")
        if self.observed_at.tzinfo is None:
            raise ValueError(f"outcome {self.id}: observed_at must be timezone-aware")

    @property
    def polarity(self) -> Polarity:
        return self.kind.polarity


@dataclass(frozen=True, slots=True)
class TrustSnapshot:
    """A recommender's trust at one moment: the mean of Beta(alpha, beta) over its weighted outcomes.

    `outcomes` is how many outcomes contributed (after merging repeated measurements).
    """

    recommender: str
    trust: float
    alpha: float
    beta: float
    at: datetime
    outcomes: int = 0


def outcome_to_json(o: Outcome) -> dict[str, Any]:
    """The JSON spelling of an outcome (CLI --json, API, SIEM export)."""
    return {
        "id": o.id,
        "proposal_id": o.proposal_id,
        "recommender": o.recommender,
        "kind": str(o.kind),
        "polarity": str(o.polarity),
        "observed_at": o.observed_at.isoformat(),
        "value": o.value,
        "weight": o.weight,
        "actor": o.actor,
        "detail": o.detail,
    }


def trust_snapshot_to_json(s: TrustSnapshot) -> dict[str, Any]:
    return {
        "recommender": s.recommender,
        "trust": s.trust,
        "alpha": s.alpha,
        "beta": s.beta,
        "at": s.at.isoformat(),
        "outcomes": s.outcomes,
    }
