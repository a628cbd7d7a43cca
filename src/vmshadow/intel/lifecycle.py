"""How much an indicator is believed, and for how long: per-source trust and confidence decay.

An indicator's *effective* confidence at a time is its listed confidence, times the trust given to its source,
halved every `half_life` since the indicator's `valid_from`:

    effective = confidence × trust × 0.5 ** ((at - valid_from) / half_life)

An indicator without `valid_from` (most plain lists) does not decay: nothing says since when it was listed.
Expiry (`valid_until`) and revocation are not a matter of degree and stay with `Indicator.is_valid`; an effective
confidence below the policy's `min_confidence` makes a match count as none. Pure: no I/O.

>>> from datetime import UTC, datetime, timedelta
>>> from vmshadow.domain.indicator import IndicatorType
>>> policy = IntelPolicy(sources=(("ipsum*", SourcePolicy(trust=0.5, half_life=timedelta(days=10))),))
>>> listed = Indicator(IndicatorType.IPV4, "198.51.100.1", "ipsum/level3.txt", confidence=80,
...                    valid_from=datetime(2026, 1, 1, tzinfo=UTC))
>>> policy.confidence(listed, datetime(2026, 1, 11, tzinfo=UTC))
20
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from vmshadow.domain.indicator import Indicator


@dataclass(frozen=True, slots=True)
class SourcePolicy:
    """`trust` (0..1) multiplies the source's confidence; `half_life` (None: no decay) halves it over time."""

    trust: float = 1.0
    half_life: timedelta | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.trust <= 1.0 or math.isnan(self.trust):
            raise ValueError(f"trust must be in 0..1, got {self.trust}")
        if self.half_life is not None and self.half_life <= timedelta(0):
            raise ValueError(f"half_life must be positive, got {self.half_life}")


@dataclass(frozen=True, slots=True)
class IntelPolicy:
    """Per-source policies, the first matching entry winning: a name matches a source equal to it, or starting
    with it when the name ends with ``*`` (``ipsum*`` covers ``ipsum/level3.txt``). Other sources get `default`."""

    sources: tuple[tuple[str, SourcePolicy], ...] = ()
    default: SourcePolicy = SourcePolicy()
    min_confidence: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.min_confidence <= 100:
            raise ValueError(f"min_confidence must be in 0..100, got {self.min_confidence}")

    def for_source(self, source: str) -> SourcePolicy:
        for name, policy in self.sources:
            if source == name or (name.endswith("*") and source.startswith(name[:-1])):
                return policy
        return self.default

    def confidence(self, indicator: Indicator, at: datetime) -> int:
        """The indicator's effective confidence at `at` (0..100)."""
        policy = self.for_source(indicator.source)
        value = indicator.confidence * policy.trust
        if policy.half_life is not None and indicator.valid_from is not None and at > indicator.valid_from:
            value *= 0.5 ** ((at - indicator.valid_from) / policy.half_life)
        return max(0, min(100, round(value)))

    @property
    def is_neutral(self) -> bool:
        """Whether every effective confidence is the listed one (no trust below 1, no decay, no minimum)."""
        policies = [self.default, *(p for _, p in self.sources)]
        return self.min_confidence == 0 and all(p.trust == 1.0 and p.half_life is None for p in policies)
