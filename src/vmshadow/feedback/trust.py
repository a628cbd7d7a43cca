"""Trust per recommender: the Beta reputation model with recency weighting.

A recommender's record is a stream of good and bad outcomes. Following Jøsang & Ismail, "The Beta Reputation
System" (15th Bled Electronic Commerce Conference, 2002), its reputation is the Beta(alpha, beta) posterior with

    alpha = 1 + sum of weight * decay over good outcomes
    beta  = 1 + sum of weight * decay over bad outcomes
    trust = alpha / (alpha + beta)                         (the posterior mean; Beta(1, 1) gives 0.5)

where decay = 0.5 ** (age / half_life) is the paper's forgetting factor expressed as a half-life: an outcome
`half_life` old counts half as much as one observed now, so a recommender can earn trust back, and lose it.
Neutral outcomes (expiry, a finding that continued after a deny) carry no evidence.

Repeated measurements of one thing are one piece of evidence: of several outcomes of the same kind about the same
proposal (hits measured every minute, the same false positive reported twice), only the strongest after decay
counts. So a rule that keeps matching does not inflate its recommender's trust without bound, and adding an
outcome never moves trust against its polarity.

>>> from datetime import UTC, datetime
>>> from vmshadow.domain.outcome import Outcome, OutcomeKind
>>> now = datetime(2025, 3, 1, tzinfo=UTC)
>>> trust_from_outcomes([], now, recommender="deny").trust
0.5
>>> hit = Outcome("o1", "p1", "deny", OutcomeKind.HITS, now, value=42)
>>> round(trust_from_outcomes([hit], now).trust, 3)
0.667
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timedelta

from vmshadow.domain.outcome import Outcome, OutcomeKind, Polarity, TrustSnapshot

DEFAULT_HALF_LIFE = timedelta(days=14)
PRIOR = (1.0, 1.0)
"""Beta(1, 1): uniform, no opinion; trust 0.5 before any outcome."""


def decay(age: timedelta, half_life: timedelta) -> float:
    """The weight left after `age`: 1 now, 0.5 one half-life ago. A future outcome (negative age) counts fully."""
    if half_life <= timedelta(0):
        raise ValueError(f"half_life must be positive, not {half_life}")
    return math.pow(0.5, max(age, timedelta(0)) / half_life)


def trust_from_outcomes(
    outcomes: Iterable[Outcome],
    at: datetime,
    half_life: timedelta = DEFAULT_HALF_LIFE,
    *,
    recommender: str | None = None,
) -> TrustSnapshot:
    """One recommender's trust at `at` from its outcomes; outcomes observed after `at` are not known yet.

    `recommender` names it when there are no outcomes; every outcome must be about it (`ValueError` otherwise).
    """
    strongest: dict[tuple[str, OutcomeKind], tuple[Polarity, float]] = {}
    for o in outcomes:
        if recommender is None:
            recommender = o.recommender
        elif o.recommender != recommender:
            raise ValueError(f"outcome {o.id} is about recommender {o.recommender!r}, not {recommender!r}")
        if o.observed_at > at or o.polarity is Polarity.NEUTRAL:
            continue
        evidence = o.weight * decay(at - o.observed_at, half_life)
        key = (o.proposal_id, o.kind)
        if key not in strongest or evidence > strongest[key][1]:
            strongest[key] = (o.polarity, evidence)
    if recommender is None:
        raise ValueError("no outcomes and no recommender named")
    # fsum is exact, so trust does not depend on the order the outcomes came in.
    alpha = math.fsum([PRIOR[0], *(e for polarity, e in strongest.values() if polarity is Polarity.GOOD)])
    beta = math.fsum([PRIOR[1], *(e for polarity, e in strongest.values() if polarity is Polarity.BAD)])
    return TrustSnapshot(recommender, alpha / (alpha + beta), alpha, beta, at, outcomes=len(strongest))


def trust_by_recommender(
    outcomes: Iterable[Outcome],
    at: datetime,
    half_life: timedelta = DEFAULT_HALF_LIFE,
    *,
    recommenders: Iterable[str] = (),
) -> dict[str, TrustSnapshot]:
    """Trust at `at` for every recommender with outcomes, plus `recommenders` (those without any get the prior)."""
    grouped: dict[str, list[Outcome]] = {name: [] for name in recommenders}
    for o in outcomes:
        grouped.setdefault(o.recommender, []).append(o)
    return {
        name: trust_from_outcomes(found, at, half_life, recommender=name) for name, found in sorted(grouped.items())
    }
