"""Conflicts with proposals waiting for review: what a rule does to, or suffers from, rules not yet in force.

`conflicts.conflicts_of` judges a rule against the TMRSet in force. A proposal waiting for review (proposed,
staged, edited or approved) is not in force yet, but may be tomorrow: an approved allow that is not applied yet
shadows a fresh deny for the same traffic once it is, and two pending proposals may allow and deny the same flows.
So each rule proposal is also judged against every pending proposal's rule, **pairwise**: the TMRSet in force with
that one pending rule applied (a `reprioritize` moves its TMR, any other kind adds it) and this rule placed as
`conflicts_of` places it. A pair gives at most one of `pending_shadowed`, `pending_shadows`, `pending_redundant`
(the first that holds, in that order), plus `pending_contradicts` when the actions differ, or `pending_same_tmr`
alone. The tag is `kind:proposal_id` (`Conflict.tag`), e.g. `pending_shadowed:prop-1a2b`.

Pairs whose rules share no traffic give nothing (a rule that matches nothing is reported against the TMRSet
already), and neither does a pending rule expired at `at` or naming a VMN or group the TMRSet in force no longer
knows (it cannot be applied as it is). Pure: the caller reads the pending proposals from its store.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime

from vmshadow.domain.proposal import Proposal, ProposalState
from vmshadow.domain.tmr import TMR, TMRSet
from vmshadow.refinement.conflicts import Conflict, ConflictKind, covers, label, outlives, overlaps

PENDING_STATES = frozenset({ProposalState.PROPOSED, ProposalState.STAGED, ProposalState.EDITED, ProposalState.APPROVED})
"""States of a proposal whose rule may still go into force (waiting for review, or approved and not applied)."""

_PENDING_KINDS = frozenset(k for k in ConflictKind if str(k).startswith("pending_"))


def _ordered(tmrset: TMRSet, pending: TMR, tmr: TMR, at: datetime | None) -> tuple[TMR, ...]:
    """The evaluation order of the TMRSet in force (TMRs active at `at`) with the pending rule applied and `tmr`
    placed, each after the TMRs of equal priority: what `without(...).with_tmr(...)` gives, without building and
    checking a TMRSet per pair (`tmrset.tmrs` is already in priority order)."""
    ordered = [t for t in tmrset.tmrs if t.id not in (pending.id, tmr.id) and (at is None or t.is_active(at))]
    for new in (pending, tmr):
        ordered.insert(bisect_right([t.priority for t in ordered], new.priority), new)
    return tuple(ordered)


def _who(proposal: Proposal, rule: TMR) -> str:
    return f"the {proposal.state} {proposal.kind} proposal {proposal.id} ({label(rule)})"


def conflicts_with_pending(
    tmr: TMR, tmrset: TMRSet, pending: Iterable[Proposal], at: datetime | None = None, *, own_id: str | None = None
) -> list[Conflict]:
    """Conflicts of `tmr` with the rules of `pending` proposals (alerts, proposals not in `PENDING_STATES` and
    the proposal `own_id` itself are skipped), in the order of `pending`."""
    found: list[Conflict] = []
    for proposal in pending:
        rule = proposal.rule
        if rule is None or proposal.state not in PENDING_STATES or proposal.id == own_id:
            continue
        if at is not None and not rule.is_active(at):
            continue
        found.extend(_pair(tmr, tmrset, proposal, rule, at))
    return found


def _pair(tmr: TMR, tmrset: TMRSet, proposal: Proposal, rule: TMR, at: datetime | None) -> list[Conflict]:
    who = _who(proposal, rule)
    if rule.id == tmr.id:
        said = f"{label(tmr)} and {who} both write TMR {tmr.id}: applying one, then the other, keeps only the last"
        return [Conflict(ConflictKind.PENDING_SAME_TMR, tmr.id, proposal.id, said)]
    try:
        if not overlaps(tmrset, tmr, rule):
            return []
    except ValueError:  # the pending rule names a VMN or group the set does not know: it cannot be applied
        return []
    ordered = _ordered(tmrset, rule, tmr, at)
    mine = next(i for i, t in enumerate(ordered) if t.id == tmr.id)
    theirs = next(i for i, t in enumerate(ordered) if t.id == rule.id)
    same = tmr.action is rule.action
    found: list[Conflict] = []
    if theirs < mine and outlives(rule, tmr) and covers(tmrset, rule, tmr):
        how = "with the same action" if same else f"and {rule.action}s it"
        said = f"once {who} is applied, {label(tmr)} never decides: that rule matches everything it matches {how}"
        found.append(Conflict(ConflictKind.PENDING_SHADOWED, tmr.id, proposal.id, said))
    if mine < theirs and outlives(tmr, rule) and covers(tmrset, tmr, rule):
        how = "with the same action" if same else f"and {tmr.action}s it"
        said = f"once {label(tmr)} is applied, {who} never decides: this rule matches everything it matches {how}"
        found.append(Conflict(ConflictKind.PENDING_SHADOWS, tmr.id, proposal.id, said))
    if (
        same
        and mine < theirs
        and outlives(rule, tmr)
        and covers(tmrset, rule, tmr)
        and not any(t.action is not tmr.action and overlaps(tmrset, t, tmr) for t in ordered[mine + 1 : theirs])
    ):
        said = (
            f"once {who} is applied, {label(tmr)} is redundant: that rule {rule.action}s everything it matches "
            "and no TMR in between decides otherwise"
        )
        found.append(Conflict(ConflictKind.PENDING_REDUNDANT, tmr.id, proposal.id, said))
    if not same:
        first, then = (tmr, rule) if mine < theirs else (rule, tmr)
        said = (
            f"{label(tmr)} and {who} {tmr.action} and {rule.action} some of the same traffic; with both applied, "
            f"{first.id} decides it ({first.action}) before {then.id}"
        )
        found.append(Conflict(ConflictKind.PENDING_CONTRADICTS, tmr.id, proposal.id, said))
    return found


def is_pending_tag(tag: str) -> bool:
    """Whether a stored conflict tag is about a pending proposal (`pending_*:proposal_id`)."""
    return tag.partition(":")[0] in _PENDING_KINDS


def with_pending_conflicts(
    batch: Sequence[Proposal], tmrset: TMRSet, stored_pending: Sequence[Proposal], at: datetime | None = None
) -> list[Proposal]:
    """Each proposal of `batch` that may still go into force (state in `PENDING_STATES`, with a rule) with its
    conflicts against the other pending proposals: the stored ones (`stored_pending`, a batch proposal replacing
    a stored one with its id) and the rest of the batch. Its conflicts against the TMRSet stay first; `pending_*`
    tags it carried from an earlier analysis are replaced by the fresh ones. Other proposals are returned as given.
    """
    in_batch = {p.id for p in batch}
    others = [*(p for p in stored_pending if p.id not in in_batch), *batch]
    out: list[Proposal] = []
    for p in batch:
        if p.rule is None or p.state not in PENDING_STATES:
            out.append(p)
            continue
        found = conflicts_with_pending(p.rule, tmrset, others, at, own_id=p.id)
        kept = tuple(t for t in p.conflicts if not is_pending_tag(t))
        out.append(replace(p, conflicts=tuple(dict.fromkeys((*kept, *(c.tag for c in found))))))
    return out
