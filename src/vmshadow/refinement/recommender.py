"""The recommender contract and registry.

A recommender reads findings and the current TMRSet and returns proposals. Every proposal carries its evidence
(finding ids, flow community_ids, measured values), its impact on recorded flows, and the recommender's trust
at the time. Recommenders are pure: no I/O, no clock (time comes from `RecommendContext.now`).

Not every recommender starts from findings: `Recommender.needs` says which inputs it proposes from (findings,
recorded flows, TMRs, VMNs, administrators' outcome reports) and `Recommender.kinds` which proposal kinds it makes;
without one of its needs it proposes nothing. The conformance suite reads both.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import ClassVar, TypeVar

from vmshadow.domain.finding import Finding
from vmshadow.domain.flow import Flow
from vmshadow.domain.ids import stable_id
from vmshadow.domain.outcome import Outcome
from vmshadow.domain.proposal import Proposal, ProposalKind
from vmshadow.domain.tmr import TMRSet
from vmshadow.refinement.guardrails import GuardRails
from vmshadow.refinement.impact import DEFAULT_WINDOW


@dataclass(frozen=True, slots=True)
class ReportedOutcome:
    """An outcome an administrator reported (e.g. a false positive) with the proposal it is about."""

    outcome: Outcome
    proposal: Proposal


@dataclass(frozen=True, slots=True)
class RecommendContext:
    now: datetime
    flows: Sequence[Flow] = ()  # recorded flows, for impact replay and least privilege
    trust: float = 0.5  # the recommender's current trust score
    # never-block list, blast-radius and rate caps; frozen, so one default instance is safely shared
    guard_rails: GuardRails = GuardRails()  # noqa: RUF009
    recent_proposals: Sequence[Proposal] = ()  # proposals already made in the rate window, for the rate cap
    impact_window: timedelta | None = DEFAULT_WINDOW  # the archive replayed for impact; None: every flow given
    reports: Sequence[ReportedOutcome] = ()  # administrators' outcome reports (false positives), with proposals
    past_proposals: Sequence[Proposal] = ()  # earlier proposals on record, for repeat offenders' escalation


class Input(StrEnum):
    """What a recommender proposes from."""

    FINDINGS = "findings"  # the findings passed to `propose`
    FLOWS = "flows"  # `RecommendContext.flows`
    TMRS = "tmrs"  # TMRs in the TMRSet
    VMNS = "vmns"  # VMNs the TMRSet knows
    REPORTS = "reports"  # `RecommendContext.reports`


class Recommender(ABC):
    name: ClassVar[str]
    version: ClassVar[str]
    # Defaults fit a recommender that turns findings into denies or alerts; others say what they need and make.
    needs: ClassVar[frozenset[Input]] = frozenset({Input.FINDINGS})
    kinds: ClassVar[frozenset[ProposalKind]] = frozenset({ProposalKind.ADD_DENY, ProposalKind.ALERT})
    # True: cheap enough, and meant, to run on every batch of findings. False: it reads the whole archive window
    # whatever the batch holds (least privilege), so it runs on a schedule (`stages.recommend.scheduled`).
    per_batch: ClassVar[bool] = True

    @abstractmethod
    def propose(self, findings: Sequence[Finding], tmrset: TMRSet, context: RecommendContext) -> list[Proposal]:
        """Proposals for `findings`; identical proposals are merged, never repeated."""


def as_alert(proposal: Proposal, reason: str) -> Proposal:
    """The alert a rule proposal becomes when the recommender may not propose a rule (e.g. low trust): same
    evidence, impact and conflicts, an id of its own, the reason and the withheld rule in its summary."""
    if proposal.rule is None:
        return proposal
    return replace(
        proposal,
        id=stable_id("prop", ProposalKind.ALERT, "withheld", proposal.id),
        kind=ProposalKind.ALERT,
        rule=None,
        summary=f"alert: {proposal.summary} ({reason})",
    )


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
