"""Feedback's composition root: outcomes measured and reported into the store, trust per recommender out of it.

    measure("sqlite:///var/vmshadow.db", enforcer.counters())       # hits, findings after the apply, rollbacks
    report_false_positive(db, "prop-…", actor="alice", reason="backup job, not a scan")
    record_tmrs_rollback(store, before, after, actor="alice", version=3)  # inside `vmshadow tmrs rollback 3`
    context = with_records(store, RecommendContext(now))           # reports, past and recent proposals for the batch
    recompute_trust(db)                                               # one stored snapshot per recommender
    ScopedDenyRecommender().propose(findings, tmrset, RecommendContext(now, trust=current_trust(db, "deny")))

Outcomes are idempotent by id, so measuring twice, or a redelivered report, records nothing new.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from vmshadow.app.stores import opened
from vmshadow.domain.errors import InputError, Issue
from vmshadow.domain.outcome import Outcome, OutcomeKind, TrustSnapshot
from vmshadow.domain.proposal import Proposal, ProposalState
from vmshadow.domain.tmr import TMRSet
from vmshadow.feedback.measure import (
    DEFAULT_QUIET,
    false_positive,
    outcomes_from_counters,
    outcomes_from_decisions,
    outcomes_from_findings,
)
from vmshadow.feedback.rollback import undone_by_rollback
from vmshadow.feedback.trust import DEFAULT_HALF_LIFE, trust_by_recommender, trust_from_outcomes
from vmshadow.ports.store import Store
from vmshadow.refinement.recommender import RecommendContext, ReportedOutcome
from vmshadow.review.lifecycle import decide


@dataclass(frozen=True, slots=True)
class RecommenderTrust:
    """A recommender's trust now (computed from every outcome on record) and the snapshots stored before."""

    current: TrustSnapshot
    history: tuple[TrustSnapshot, ...]


def _record(store: Store, outcomes: list[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if store.record_outcome(o)]


def _lifecycle(store: Store) -> list[Outcome]:
    """Rollbacks and expiries from the review log, recorded once each. Only proposals in those (final) states
    can have such a decision, so only they are read."""
    proposals = {p.id: p for s in (ProposalState.ROLLED_BACK, ProposalState.EXPIRED) for p in store.proposals(state=s)}
    return _record(store, outcomes_from_decisions(proposals, store.decisions()))


def report_false_positive(
    db_url: str, proposal_id: str, *, actor: str, reason: str, at: datetime | None = None
) -> Outcome:
    """Record an administrator's false-positive report. `InputError` for an unknown or never-applied proposal,
    or without a reason; nothing is stored then. Reporting the same proposal again (same actor) changes nothing."""
    with opened(db_url) as store:
        proposal = store.proposal(proposal_id)
        if proposal is None:
            raise InputError(Issue(source="proposals", field="id", message=f"no proposal {proposal_id!r}"))
        outcome = false_positive(
            proposal, store.decisions(proposal_id), actor=actor, reason=reason, at=at or datetime.now(UTC)
        )
        store.record_outcome(outcome)
        return outcome


def _applied_at(store: Store, proposal: Proposal) -> datetime | None:
    applied = [d.decided_at for d in store.decisions(proposal.id) if d.to_state is ProposalState.APPLIED]
    return max(applied) if applied else None


def measure(
    db_url: str,
    counters: Mapping[str, int],
    *,
    before: Mapping[str, int] | None = None,
    at: datetime | None = None,
    quiet: timedelta = DEFAULT_QUIET,
) -> list[Outcome]:
    """Record what is known about applied proposals now; returns the outcomes that were new.

    `counters` are packets per TMR id from `Enforcer.counters()` (`before`: an earlier reading of the same
    version, default none); findings after each apply say whether its offender stopped; the review log gives
    rollbacks and expiries.
    """
    now = at or datetime.now(UTC)
    with opened(db_url) as store:
        applied = store.proposals(state=ProposalState.APPLIED)
        found = outcomes_from_counters(applied, before or {}, counters, now)
        applied_at = {p.id: t for p in applied if (t := _applied_at(store, p)) is not None}
        if applied_at:
            # bounded: the findings observed since the oldest apply (a later one means the offender went on), and
            # each proposal's own evidence by id (it is older than the apply)
            findings = store.findings(since=min(applied_at.values()))
            known = {f.id for f in findings}
            wanted = dict.fromkeys(i for p in applied if p.id in applied_at for i in p.evidence.finding_ids)
            findings += [f for i in wanted if i not in known and (f := store.finding(i)) is not None]
            for p in applied:
                if p.id in applied_at:
                    found += outcomes_from_findings(p, findings, applied_at=applied_at[p.id], at=now, quiet=quiet)
        return _record(store, found) + _lifecycle(store)


def recompute_trust(
    db_url: str, at: datetime | None = None, half_life: timedelta = DEFAULT_HALF_LIFE
) -> dict[str, TrustSnapshot]:
    """Trust at `at` for every recommender with a proposal or an outcome on record, each stored as a snapshot."""
    now = at or datetime.now(UTC)
    with opened(db_url) as store:
        _lifecycle(store)
        names = {p.recommender for p in store.proposals()}
        snapshots = trust_by_recommender(store.outcomes(), now, half_life, recommenders=names)
        for snapshot in snapshots.values():
            store.record_trust(snapshot)
        return snapshots


def current_trust(
    db_url: str, recommender: str, at: datetime | None = None, half_life: timedelta = DEFAULT_HALF_LIFE
) -> float:
    """The recommender's trust now, for `RecommendContext.trust`: 0.5 for one without outcomes."""
    with opened(db_url) as store:
        return trust_in(store, recommender, at, half_life)


def trust_in(
    store: Store, recommender: str, at: datetime | None = None, half_life: timedelta = DEFAULT_HALF_LIFE
) -> float:
    """`current_trust` over a store the caller already holds (the service asks on every batch of findings)."""
    outcomes = store.outcomes(recommender=recommender)
    return trust_from_outcomes(outcomes, at or datetime.now(UTC), half_life, recommender=recommender).trust


def recommender_trust(
    db_url: str, at: datetime | None = None, half_life: timedelta = DEFAULT_HALF_LIFE
) -> dict[str, RecommenderTrust]:
    """Every known recommender's trust now (not stored) with its stored history."""
    now = at or datetime.now(UTC)
    with opened(db_url) as store:
        history = store.trust_history()
        names = {p.recommender for p in store.proposals()} | {s.recommender for s in history}
        current = trust_by_recommender(store.outcomes(), now, half_life, recommenders=names)
    return {
        name: RecommenderTrust(snapshot, tuple(s for s in history if s.recommender == name))
        for name, snapshot in current.items()
    }


def list_outcomes(db_url: str, *, recommender: str | None = None, proposal_id: str | None = None) -> list[Outcome]:
    with opened(db_url) as store:
        return store.outcomes(recommender=recommender, proposal_id=proposal_id)


def record_tmrs_rollback(
    store: Store, before: TMRSet, after: TMRSet, *, actor: str, version: int, at: datetime | None = None
) -> list[Proposal]:
    """After the TMRSet was rolled back from `before` to `after` (the version `version`), every applied proposal
    whose rule that took back becomes `rolled_back` (audited, `actor`) and its recommender gets a rolled-back
    outcome at once, lowering its trust. Returns the proposals as moved. Running it again finds none left."""
    now = at or datetime.now(UTC)
    moved: list[Proposal] = []
    for proposal in undone_by_rollback(before, after, store.proposals(state=ProposalState.APPLIED)):
        done, decision = decide(
            proposal, ProposalState.ROLLED_BACK, actor=actor, at=now, reason=f"TMRSet rolled back to version {version}"
        )
        store.record_decision(decision, done)
        _record(store, outcomes_from_decisions({done.id: done}, [decision]))
        moved.append(done)
    return moved


RECORDS_LOOKBACK = timedelta(days=7)
"""How far back `with_records` reads reports and proposals (the escalation ladder's default lookback)."""


def with_records(
    store: Store, context: RecommendContext, *, lookback: timedelta = RECORDS_LOOKBACK
) -> RecommendContext:
    """`context` with what the store knows for the next batch: administrators' false-positive reports with the
    proposals they are about (`temporary_exception`), the proposals made within `lookback` (repeat offenders'
    escalation) and those within the guard-rails' rate window (the rate cap counts them)."""
    since = context.now - lookback
    proposals = [p for p in store.proposals(since=since) if p.created_at <= context.now]
    reports: list[ReportedOutcome] = []
    for o in store.outcomes(kind=OutcomeKind.FALSE_POSITIVE, since=since):
        if o.observed_at <= context.now:
            about = store.proposal(o.proposal_id)
            if about is not None:
                reports.append(ReportedOutcome(o, about))
    rate_since = context.now - context.guard_rails.rate_window
    return replace(
        context,
        reports=tuple(reports),
        past_proposals=tuple(proposals),
        recent_proposals=tuple(p for p in proposals if rate_since < p.created_at),
    )
