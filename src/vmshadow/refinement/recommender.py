"""The recommender contract and registry.

A recommender reads findings and the current TMRSet and returns proposals. Every proposal carries its evidence
(finding ids, flow community_ids, measured values), its impact on recorded flows, and the recommender's trust
at the time. Recommenders are pure: no I/O, no clock (time comes from `RecommendContext.now`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, TypeVar

from vmshadow.domain.finding import Finding
from vmshadow.domain.flow import Flow
from vmshadow.domain.proposal import Proposal
from vmshadow.domain.tmr import TMRSet
from vmshadow.refinement.guardrails import GuardRails


@dataclass(frozen=True, slots=True)
class RecommendContext:
    now: datetime
    flows: Sequence[Flow] = ()  # recorded flows, for impact replay
    trust: float = 0.5  # the recommender's current trust score
    # never-block list, blast-radius and rate caps; frozen, so one default instance is safely shared
    guard_rails: GuardRails = GuardRails()  # noqa: RUF009
    recent_proposals: Sequence[Proposal] = ()  # proposals already made in the rate window, for the rate cap


class Recommender(ABC):
    name: ClassVar[str]
    version: ClassVar[str]

    @abstractmethod
    def propose(self, findings: Sequence[Finding], tmrset: TMRSet, context: RecommendContext) -> list[Proposal]:
        """Proposals for `findings`; identical proposals are merged, never repeated."""


_REGISTRY: dict[str, type[Recommender]] = {}

R = TypeVar("R", bound=type[Recommender])


def register(cls: R) -> R:
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing is not cls:
        raise ValueError(f"recommender name {cls.name!r} is already taken by {existing.__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


def recommender_types() -> dict[str, type[Recommender]]:
    from vmshadow.refinement import builtin  # noqa: F401  (registers the built-ins)

    return dict(sorted(_REGISTRY.items()))
