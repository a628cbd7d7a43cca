"""`TemporaryExceptionRecommender`: a time-boxed allow for activity an administrator reported as legitimate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from vmshadow.domain.finding import Finding
from vmshadow.domain.ids import stable_id
from vmshadow.domain.outcome import OutcomeKind
from vmshadow.domain.proposal import Evidence, Proposal, ProposalKind, ProposalState
from vmshadow.domain.tmr import TMR, Action, Origin, TMRSet
from vmshadow.refinement.conflicts import conflicts_of
from vmshadow.refinement.guardrails import GuardContext
from vmshadow.refinement.impact import Replay
from vmshadow.refinement.merge import merge_proposals
from vmshadow.refinement.recommender import (
    Input,
    RecommendContext,
    Recommender,
    ReportedOutcome,
    as_alert,
    register,
)


@dataclass(frozen=True, slots=True)
class TemporaryExceptionSettings:
    duration: timedelta = timedelta(hours=24)  # from the report; afterwards the deny decides again
    min_trust: float = 0.2  # a recommender trusted less than this only raises alerts

    def __post_init__(self) -> None:
        if self.duration <= timedelta(0):
            raise ValueError(f"the exception duration must be positive, not {self.duration}")


@register
class TemporaryExceptionRecommender(Recommender):
    """Proposes `temporary_exception`: when an administrator reports an applied deny as a false positive
    (`RecommendContext.reports`, outcome kind `false_positive`), an allow with the deny's match, placed just ahead
    of it (ahead of where the TMRSet has it now, else where the proposal put it), that expires `duration` (24 h)
    after the report. The clock starts at the report, not at the run, so proposing again gives the same rule, and a
    report whose exception would already have expired proposes nothing. Reports on allows or alerts propose
    nothing (an exception only lifts a deny). Several reports on one deny give one proposal (the earliest report
    sets the expiry). Evidence is the reported proposal's, plus who reported it and why; score 1.0 (an
    administrator's explicit word). Low trust gives an alert; the guard-rails apply.
    """

    name = "refinement.temporary_exception"
    version = "1.0"
    needs = frozenset({Input.REPORTS})
    kinds = frozenset({ProposalKind.TEMPORARY_EXCEPTION, ProposalKind.ALERT})

    def __init__(self, settings: TemporaryExceptionSettings | None = None) -> None:
        self.settings = settings or TemporaryExceptionSettings()

    def propose(self, findings: Sequence[Finding], tmrset: TMRSet, context: RecommendContext) -> list[Proposal]:
        reports = sorted(
            (r for r in context.reports if r.outcome.kind is OutcomeKind.FALSE_POSITIVE),
            key=lambda r: (r.outcome.observed_at, r.outcome.id),
        )
        replay = Replay(tmrset, context.flows, context.now, context.impact_window)
        proposals = [p for r in reports if (p := self._one(r, tmrset, context, replay)) is not None]
        if not proposals:
            return []
        # an added allow never newly blocks: the blast radius has nothing to count, so the guard-rails (never-block
        # judges denies, the rate cap counts proposals) need no flows
        guard = GuardContext(tmrset, context.now, (), findings, context.recent_proposals)
        return merge_proposals(context.guard_rails.apply(merge_proposals(proposals), guard))

    def exception_rule(self, reported: ReportedOutcome, tmrset: TMRSet) -> TMR | None:
        """The allow that lifts the reported deny until its expiry, or None when nothing is to be lifted."""
        deny = reported.proposal.rule
        if deny is None or deny.action is not Action.DENY:
            return None
        in_force = next((t for t in tmrset.tmrs if t.id == deny.id), deny)
        return TMR(
            id=stable_id("tmr", "exception", deny.id),
            priority=in_force.priority - 1,
            src=deny.src,
            dst=deny.dst,
            protocol=deny.protocol,
            ports=deny.ports,
            action=Action.ALLOW,
            expires_at=reported.outcome.observed_at + self.settings.duration,
            origin=Origin.PROPOSAL,
            comment=f"false positive reported by {reported.outcome.actor}: {reported.outcome.detail}"[:200],
        )

    def _one(
        self, reported: ReportedOutcome, tmrset: TMRSet, context: RecommendContext, replay: Replay
    ) -> Proposal | None:
        rule = self.exception_rule(reported, tmrset)
        if rule is None or rule.expires_at is None or rule.expires_at <= context.now:
            return None
        try:
            tmrset.without(rule.id).with_tmr(rule)
        except ValueError:
            return None  # the deny names a VMN or group this TMRSet no longer knows
        outcome, denied = reported.outcome, reported.proposal
        proposal = Proposal(
            id=stable_id("prop", ProposalKind.TEMPORARY_EXCEPTION, denied.id),
            kind=ProposalKind.TEMPORARY_EXCEPTION,
            state=ProposalState.PROPOSED,
            recommender=self.name,
            recommender_version=self.version,
            score=1.0,
            trust=context.trust,
            created_at=context.now,
            summary=(
                f"{rule.describe()} until {rule.expires_at.isoformat()}: {outcome.actor} reported "
                f"{denied.id} as a false positive ({outcome.detail})"
            ),
            rule=rule,
            evidence=Evidence(
                finding_ids=denied.evidence.finding_ids,
                community_ids=denied.evidence.community_ids,
                measured={
                    "reported_proposal": denied.id,
                    "outcome": outcome.id,
                    "reported_by": outcome.actor,
                    "reason": outcome.detail,
                },
            ),
            impact=replay.impact(rule),
            conflicts=tuple(c.tag for c in conflicts_of(rule, tmrset, context.now)),
        )
        if context.trust < self.settings.min_trust:
            return as_alert(proposal, f"recommender trust {context.trust:.2f} is below {self.settings.min_trust}")
        return proposal
