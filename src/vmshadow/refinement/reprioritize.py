"""`ReprioritizeRecommender`: move a TMR that does not decide what it was written for ahead of the TMR that does."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from vmshadow.domain.finding import Finding
from vmshadow.domain.flow import Flow
from vmshadow.domain.ids import stable_id
from vmshadow.domain.proposal import Evidence, Proposal, ProposalKind, ProposalState
from vmshadow.domain.tmr import TMR, Action, TMRSet
from vmshadow.refinement.conflicts import ConflictKind, analyze_tmrset, conflicts_of
from vmshadow.refinement.guardrails import GuardContext
from vmshadow.refinement.impact import Replay, in_window
from vmshadow.refinement.merge import MAX_EVIDENCE_FLOWS, merge_proposals
from vmshadow.refinement.recommender import Input, RecommendContext, Recommender, as_alert, register


@dataclass(frozen=True, slots=True)
class ReprioritizeSettings:
    never_decides_score: float = 0.5  # a TMR that never decides, without findings: structural evidence only
    min_trust: float = 0.2  # a recommender trusted less than this only raises alerts


@dataclass(slots=True)
class _Case:
    """Why one TMR should move: the TMRs that decide before it, and the findings and flows that show it."""

    blockers: set[str] = field(default_factory=set)
    finding_ids: dict[str, None] = field(default_factory=dict)  # ordered set
    community_ids: dict[str, None] = field(default_factory=dict)
    flagged: list[Flow] = field(default_factory=list)
    score: float = 0.0


def _flagged_through(
    findings: Sequence[Finding], tmrset: TMRSet, context: RecommendContext, cases: dict[str, _Case]
) -> None:
    """Denies that match flagged flows (flows a finding cites) an earlier allow lets through."""
    cited: dict[str, list[Finding]] = {}
    for f in findings:
        for cid in f.community_ids:
            cited.setdefault(cid, []).append(f)
    if not cited:
        return
    flows, _ = in_window(context.flows, context.now, context.impact_window)
    active = tmrset.active(context.now)
    for flow in flows:
        by = cited.get(flow.community_id)
        if not by:
            continue
        verdict = tmrset.evaluate(flow, context.now)
        if verdict.action is not Action.ALLOW or verdict.tmr_id is None:
            continue
        position = next(i for i, t in enumerate(active) if t.id == verdict.tmr_id)
        deny = next((t for t in active[position + 1 :] if t.action is Action.DENY and tmrset.matches(t, flow)), None)
        if deny is None:
            continue
        case = cases.setdefault(deny.id, _Case())
        case.blockers.add(verdict.tmr_id)
        case.finding_ids.update(dict.fromkeys(f.id for f in by))
        case.community_ids[flow.community_id] = None
        case.flagged.append(flow)
        case.score = max(case.score, *(f.score for f in by))


def _never_decides(tmrset: TMRSet, context: RecommendContext, score: float, cases: dict[str, _Case]) -> None:
    """TMRs an earlier TMR with the opposite action covers entirely: moving them changes verdicts. (One covered
    by a TMR with the same action is dead weight, but moving it would change nothing.)"""
    by_id = {t.id: t for t in tmrset.tmrs}
    for c in analyze_tmrset(tmrset, context.now):
        if by_id[c.tmr_id].action is not by_id[c.other_id].action:
            case = cases.setdefault(c.tmr_id, _Case())
            case.blockers.add(c.other_id)
            case.score = max(case.score, score)


def _placed(tmr: TMR, case: _Case, tmrset: TMRSet, context: RecommendContext) -> TMR:
    """`tmr` with a priority ahead of every TMR that keeps it from deciding its flagged flows or shadows it.
    Bounded: each step moves it ahead of one more TMR."""
    by_id = {t.id: t for t in tmrset.tmrs}
    priority = min(by_id[b].priority for b in case.blockers) - 1
    for _ in range(len(tmrset.tmrs)):
        moved = replace(tmr, priority=priority)
        placed = tmrset.without(tmr.id).with_tmr(moved)
        still = [
            v.tmr_id
            for v in (placed.evaluate(f, context.now) for f in case.flagged)
            if v.tmr_id is not None and v.tmr_id != tmr.id and v.action is not tmr.action
        ]
        still += [
            c.other_id
            for c in conflicts_of(moved, tmrset, context.now)
            if c.kind is ConflictKind.SHADOWED and by_id[c.other_id].action is not tmr.action
        ]
        if not still:
            return moved
        priority = min(by_id[b].priority for b in still) - 1
    return replace(tmr, priority=priority)


@register
class ReprioritizeRecommender(Recommender):
    """Proposes `reprioritize`: a new priority for a TMR of the TMRSet, so that it decides what it was written for.

    Two triggers. (1) A deny that matches flows findings cite (flagged traffic) while an earlier allow lets them
    through: the deny moves ahead of that allow (score: the strongest finding's). (2) A TMR that never decides
    because an earlier TMR with the opposite action matches everything it matches (`conflicts.analyze_tmrset`):
    it moves ahead of that TMR (score `never_decides_score`, structural evidence only). A TMR shadowed by one with
    the same action is left alone: moving it changes no verdict. The proposed rule is the TMR with the same id and
    match and origin (an administrator's TMR stays the administrator's), a lower priority (just ahead of every TMR
    in its way); applying it replaces the TMR. Impact replays the window with the TMR replaced; low trust gives
    an alert; the guard-rails apply.
    """

    name = "refinement.reprioritize"
    version = "1.0"
    needs = frozenset({Input.TMRS})
    kinds = frozenset({ProposalKind.REPRIORITIZE, ProposalKind.ALERT})

    def __init__(self, settings: ReprioritizeSettings | None = None) -> None:
        self.settings = settings or ReprioritizeSettings()

    def propose(self, findings: Sequence[Finding], tmrset: TMRSet, context: RecommendContext) -> list[Proposal]:
        cases: dict[str, _Case] = {}
        _flagged_through(findings, tmrset, context, cases)
        _never_decides(tmrset, context, self.settings.never_decides_score, cases)
        by_id = {t.id: t for t in tmrset.tmrs}
        replay = Replay(tmrset, context.flows, context.now, context.impact_window)
        proposals = [self._one(by_id[tmr_id], case, tmrset, context, replay) for tmr_id, case in cases.items()]
        proposals = merge_proposals(proposals)
        guard = GuardContext(tmrset, context.now, context.flows, findings, context.recent_proposals)
        return merge_proposals(context.guard_rails.apply(proposals, guard))

    def _one(self, tmr: TMR, case: _Case, tmrset: TMRSet, context: RecommendContext, replay: Replay) -> Proposal:
        moved = _placed(tmr, case, tmrset, context)  # same origin: moving a TMR does not change who wrote it
        blockers = ", ".join(sorted(case.blockers))
        why = (
            f"{len(case.flagged)} flagged flows match it but {blockers} lets them through first"
            if case.flagged
            else f"it never decides: {blockers} matches everything it matches first"
        )
        proposal = Proposal(
            id=stable_id("prop", ProposalKind.REPRIORITIZE, tmr.id, moved.priority),
            kind=ProposalKind.REPRIORITIZE,
            state=ProposalState.PROPOSED,
            recommender=self.name,
            recommender_version=self.version,
            score=case.score,
            trust=context.trust,
            created_at=context.now,
            summary=f"move {tmr.id} ({tmr.describe()}) from priority {tmr.priority} to {moved.priority}: {why}",
            rule=moved,
            evidence=Evidence(
                finding_ids=tuple(case.finding_ids),
                community_ids=tuple(case.community_ids)[:MAX_EVIDENCE_FLOWS],
                measured={
                    "tmr": tmr.id,
                    "from_priority": tmr.priority,
                    "to_priority": moved.priority,
                    "decided_first_by": blockers,
                    "flagged_flows": len(case.flagged),
                },
            ),
            impact=replay.impact(moved),
            conflicts=tuple(c.tag for c in conflicts_of(moved, tmrset, context.now)),
        )
        if context.trust < self.settings.min_trust:
            return as_alert(proposal, f"recommender trust {context.trust:.2f} is below {self.settings.min_trust}")
        return proposal
