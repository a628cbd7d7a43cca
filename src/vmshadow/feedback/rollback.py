"""Which applied proposals a TMRSet rollback takes back.

Rolling the TMRSet back to an earlier version (`vmshadow tmrs rollback N`) removes, or puts back at their old
priority, the rules of proposals applied after version N. Those proposals were taken back as surely as by a
proposal rollback, so they move to `rolled_back` and their recommenders get a rolled-back outcome. A proposal's
rule was taken back when the TMRSet in force before the rollback holds it as the proposal wrote it (same id and
match, priority, action, expiry) and the TMRSet put back does not. Pure: the caller passes both TMRSets.
"""

from __future__ import annotations

from collections.abc import Iterable

from vmshadow.domain.proposal import Proposal, ProposalState
from vmshadow.domain.tmr import TMR, TMRSet


def _key(t: TMR) -> tuple[object, ...]:
    # origin and comment are left out: a stored proposal's rule is read back with origin `proposal`
    return (t.id, t.priority, t.src, t.dst, t.protocol, t.ports, t.action, t.expires_at)


def undone_by_rollback(before: TMRSet, after: TMRSet, proposals: Iterable[Proposal]) -> list[Proposal]:
    """The `applied` proposals whose rule is in force in `before` and not in `after`, in the given order."""
    had = {_key(t) for t in before.tmrs}
    has = {_key(t) for t in after.tmrs}
    return [
        p
        for p in proposals
        if p.state is ProposalState.APPLIED and p.rule is not None and _key(p.rule) in had and _key(p.rule) not in has
    ]
