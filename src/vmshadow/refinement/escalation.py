"""Escalating durations for repeat offenders' temporary denies: 1 h, then 4 h, then 24 h (capped).

Pure: the caller passes the proposals on record and its own now. An offender's earlier temporary denies count when
they went into force (applied or expired; a rejected or rolled-back deny was a mistake, not a strike, and an approved
one not yet applied has not stopped anything), were made within `lookback`, and deny traffic from the same source
endpoint. `refinement.scoped_deny` uses it for scans and brute force (docs/refinement.md).

>>> from datetime import UTC, datetime
>>> from vmshadow.domain.tmr import Endpoint
>>> deny_duration(Endpoint.vmn("vm1"), [], datetime(2026, 1, 1, tzinfo=UTC))
datetime.timedelta(seconds=3600)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from vmshadow.domain.proposal import Proposal, ProposalKind, ProposalState
from vmshadow.domain.tmr import Action, Endpoint

_STRIKES = frozenset({ProposalState.APPLIED, ProposalState.EXPIRED})


@dataclass(frozen=True, slots=True)
class EscalationLadder:
    """`steps[n]` is the duration after `n` earlier strikes; beyond the last step the last one holds, and no
    duration exceeds `cap`."""

    steps: tuple[timedelta, ...] = (timedelta(hours=1), timedelta(hours=4), timedelta(hours=24))
    cap: timedelta = timedelta(hours=24)
    lookback: timedelta = timedelta(days=7)

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError("an escalation ladder needs at least one step")
        if any(s <= timedelta(0) for s in self.steps) or self.cap <= timedelta(0) or self.lookback <= timedelta(0):
            raise ValueError("escalation steps, cap and lookback must be positive")
        if list(self.steps) != sorted(self.steps):
            raise ValueError(f"escalation steps must not get shorter: {[str(s) for s in self.steps]}")

    def duration(self, earlier_strikes: int) -> timedelta:
        """The step for an offender with `earlier_strikes`, capped."""
        return min(self.steps[min(earlier_strikes, len(self.steps) - 1)], self.cap)


def strikes(offender: Endpoint, past: Sequence[Proposal], now: datetime, lookback: timedelta) -> int:
    """How many distinct temporary denies of `offender`'s traffic went into force within `lookback` before `now`."""
    ids = {
        p.id
        for p in past
        if p.kind is ProposalKind.ADD_DENY
        and p.rule is not None
        and p.rule.action is Action.DENY
        and p.rule.expires_at is not None
        and p.rule.src == offender
        and p.state in _STRIKES
        and now - lookback < p.created_at <= now
    }
    return len(ids)


def deny_duration(
    offender: Endpoint, past: Sequence[Proposal], now: datetime, ladder: EscalationLadder | None = None
) -> timedelta:
    """How long the next temporary deny of `offender` should last: the ladder's step for its strikes, capped."""
    ladder = ladder or EscalationLadder()
    return ladder.duration(strikes(offender, past, now, ladder.lookback))
