"""Proposals: suggested changes to the TMRSet (or alerts), with evidence, impact and an explicit lifecycle."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType

from vmshadow.domain.errors import IllegalTransitionError, Issue
from vmshadow.domain.finding import Measured
from vmshadow.domain.tmr import TMR


class ProposalKind(StrEnum):
    ADD_ALLOW = "add_allow"
    ADD_DENY = "add_deny"
    REPRIORITIZE = "reprioritize"
    TEMPORARY_EXCEPTION = "temporary_exception"
    ALERT = "alert"


class ProposalState(StrEnum):
    PROPOSED = "proposed"
    STAGED = "staged"  # compiled as a counting-only rule: live hits accumulate before enforcement
    EDITED = "edited"
    APPROVED = "approved"
    REJECTED = "rejected"
    APPLIED = "applied"
    EXPIRED = "expired"
    ROLLED_BACK = "rolled_back"


_S = ProposalState
TRANSITIONS: MappingProxyType[ProposalState, frozenset[ProposalState]] = MappingProxyType(
    {
        _S.PROPOSED: frozenset({_S.STAGED, _S.EDITED, _S.APPROVED, _S.REJECTED}),
        _S.STAGED: frozenset({_S.EDITED, _S.APPROVED, _S.REJECTED}),
        _S.EDITED: frozenset({_S.STAGED, _S.EDITED, _S.APPROVED, _S.REJECTED}),
        _S.APPROVED: frozenset({_S.APPLIED, _S.REJECTED}),
        _S.APPLIED: frozenset({_S.EXPIRED, _S.ROLLED_BACK}),
        _S.REJECTED: frozenset(),
        _S.EXPIRED: frozenset(),
        _S.ROLLED_BACK: frozenset(),
    }
)
"""Every allowed edge of the review lifecycle. Anything not listed is refused."""


@dataclass(frozen=True, slots=True)
class Evidence:
    finding_ids: tuple[str, ...] = ()
    community_ids: tuple[str, ...] = ()
    measured: Measured = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class VMNImpact:
    """One VMN's share of an impact: its flows (as source or destination) whose verdict would change."""

    vmn: str
    newly_blocked_flows: int = 0
    newly_allowed_flows: int = 0
    examples: tuple[str, ...] = ()  # community_ids of its affected flows


@dataclass(frozen=True, slots=True)
class Impact:
    """What the proposal would change on recorded flows, replayed through the TMRSet before and after.

    `since`: the start of the replayed window (flows that ended earlier were left out); None when every recorded
    flow given was replayed. `per_vmn`: the change per VMN, by name (a flow between two VMNs counts for both).
    """

    flows_replayed: int = 0
    newly_blocked_flows: int = 0
    newly_allowed_flows: int = 0
    vmns_affected: tuple[str, ...] = ()
    examples: tuple[str, ...] = ()  # community_ids of affected flows
    since: datetime | None = None
    per_vmn: tuple[VMNImpact, ...] = ()


@dataclass(frozen=True, slots=True)
class Proposal:
    """A recommender's suggestion. `rule` is None for alerts."""

    id: str
    kind: ProposalKind
    state: ProposalState
    recommender: str
    recommender_version: str
    score: float
    trust: float
    created_at: datetime
    summary: str
    rule: TMR | None = None
    evidence: Evidence = Evidence()
    impact: Impact = Impact()
    conflicts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if (self.kind is ProposalKind.ALERT) != (self.rule is None):
            raise ValueError(f"proposal {self.id}: an alert has no rule, every other kind has one")


def can_transition(current: ProposalState, target: ProposalState) -> bool:
    return target in TRANSITIONS[current]


def transition(proposal: Proposal, target: ProposalState) -> Proposal:
    """The proposal in `target` state, or `IllegalTransitionError` naming the refused edge."""
    if not can_transition(proposal.state, target):
        allowed = ", ".join(sorted(TRANSITIONS[proposal.state])) or "none (final state)"
        raise IllegalTransitionError(
            Issue(
                source=f"proposal {proposal.id}",
                field="state",
                message=f"cannot go from {proposal.state} to {target}; allowed: {allowed}",
            )
        )
    if target is ProposalState.APPLIED and proposal.kind is ProposalKind.ALERT:
        raise IllegalTransitionError(
            Issue(source=f"proposal {proposal.id}", field="kind", message="an alert has no rule to apply")
        )
    return replace(proposal, state=target)
