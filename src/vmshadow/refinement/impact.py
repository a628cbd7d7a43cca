"""Impact: replay recorded flows through the current TMRSet and the TMRSet with a proposal applied.

The replay covers an explicit window of the archive (`DEFAULT_WINDOW`, 24 h): flows that ended before the window
started are left out. The window ends at `at` (the recommender's now), or at the newest recorded flow when that is
earlier, so replaying an old capture looks at its last 24 h rather than at nothing. Both TMRSets are evaluated in
full priority order (`TMRSet.evaluate`) at `at`, so TMRs that expired by then decide nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from vmshadow.domain.flow import Flow
from vmshadow.domain.proposal import Impact, VMNImpact
from vmshadow.domain.tmr import TMR, Action, TMRSet

MAX_EXAMPLES = 10
DEFAULT_WINDOW = timedelta(hours=24)


def window_start(flows: Sequence[Flow], at: datetime, window: timedelta | None) -> datetime | None:
    """The start of the replayed window: `window` before `at` or before the newest flow, whichever is earlier;
    None (every flow) without a window. `ValueError` for a window that is not positive."""
    if window is None:
        return None
    if window <= timedelta(0):
        raise ValueError(f"the impact window must be positive, not {window}")
    newest = max((f.last_seen_at for f in flows), default=at)
    return min(at, newest) - window


def in_window(flows: Sequence[Flow], at: datetime, window: timedelta | None) -> tuple[Sequence[Flow], datetime | None]:
    """The flows the replay covers (those still seen at or after the window start) and the start."""
    since = window_start(flows, at, window)
    if since is None:
        return flows, None
    return [f for f in flows if f.last_seen_at >= since], since


@dataclass(slots=True)
class _Tally:
    blocked: int = 0
    allowed: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, after: Action, community_id: str) -> None:
        if after is Action.DENY:
            self.blocked += 1
        else:
            self.allowed += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(community_id)


def replay_impact(
    current: TMRSet,
    proposed: TMRSet,
    flows: Sequence[Flow],
    at: datetime,
    *,
    added: TMR | None = None,
    window: timedelta | None = DEFAULT_WINDOW,
) -> Impact:
    """Count flows whose verdict changes, as if `proposed` were in force at `at` instead of `current`, over the
    flows of `window` (None: every flow given). Per VMN: the flows naming it as source or destination.

    `added`: when `proposed` differs from `current` only by this TMR (added, or replacing the TMR with its id),
    only flows it matches can change, so the others are not evaluated (same result, much less work). A replaced
    TMR's own flows can change too, so they are evaluated as well.
    """
    replayed, since = in_window(flows, at, window)
    old = next((t for t in current.tmrs if added is not None and t.id == added.id), None)
    total = _Tally()
    per_vmn: dict[str, _Tally] = {}
    for flow in replayed:
        if added is not None and not (
            proposed.matches(added, flow) or (old is not None and current.matches(old, flow))
        ):
            continue
        before = current.evaluate(flow, at).action
        after = proposed.evaluate(flow, at).action
        if before is after:
            continue
        total.add(after, flow.community_id)
        for vmn in sorted({v for v in (flow.src_vmn, flow.dst_vmn) if v is not None}):
            per_vmn.setdefault(vmn, _Tally()).add(after, flow.community_id)
    return Impact(
        flows_replayed=len(replayed),
        newly_blocked_flows=total.blocked,
        newly_allowed_flows=total.allowed,
        vmns_affected=tuple(sorted(per_vmn)),
        examples=tuple(total.examples),
        since=since,
        per_vmn=tuple(VMNImpact(vmn, t.blocked, t.allowed, tuple(t.examples)) for vmn, t in sorted(per_vmn.items())),
    )


def rule_impact(tmrset: TMRSet, rule: TMR, flows: Sequence[Flow], at: datetime, window: timedelta | None) -> Impact:
    """The impact of putting `rule` into `tmrset`: added, or replacing the TMR with its id (a new priority)."""
    proposed = tmrset.without(rule.id).with_tmr(rule)
    return replay_impact(tmrset, proposed, flows, at, added=rule, window=window)
