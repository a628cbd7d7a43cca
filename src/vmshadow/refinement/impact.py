"""Impact: replay recorded flows through the current TMRSet and the TMRSet with a proposal applied.

The replay covers an explicit window of the archive (`DEFAULT_WINDOW`, 24 h): flows that ended before the window
started are left out. The window ends at `at` (the recommender's now), or at the newest recorded flow when that is
earlier, so replaying an old capture looks at its last 24 h rather than at nothing. Both TMRSets are evaluated in
full priority order (`TMRSet.evaluate`) at `at`, so TMRs that expired by then decide nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from vmshadow.domain.flow import Flow
from vmshadow.domain.net import ports_contain
from vmshadow.domain.proposal import Impact, VMNImpact
from vmshadow.domain.tmr import TMR, Action, TMRSet, Verdict

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

    def changes() -> Iterable[tuple[Flow, Action]]:
        for flow in replayed:
            if added is not None and not (
                proposed.matches(added, flow) or (old is not None and current.matches(old, flow))
            ):
                continue
            after = proposed.evaluate(flow, at).action
            if current.evaluate(flow, at).action is not after:
                yield flow, after

    return _impact(len(replayed), since, changes())


def _impact(replayed: int, since: datetime | None, changes: Iterable[tuple[Flow, Action]]) -> Impact:
    total = _Tally()
    per_vmn: dict[str, _Tally] = {}
    for flow, after in changes:
        total.add(after, flow.community_id)
        for vmn in sorted({v for v in (flow.src_vmn, flow.dst_vmn) if v is not None}):
            per_vmn.setdefault(vmn, _Tally()).add(after, flow.community_id)
    return Impact(
        flows_replayed=replayed,
        newly_blocked_flows=total.blocked,
        newly_allowed_flows=total.allowed,
        vmns_affected=tuple(sorted(per_vmn)),
        examples=tuple(total.examples),
        since=since,
        per_vmn=tuple(VMNImpact(vmn, t.blocked, t.allowed, tuple(t.examples)) for vmn, t in sorted(per_vmn.items())),
    )


class Replay:
    """The archive window replayed through one TMRSet at one moment, for the impact of many rules: the current
    TMRSet's verdict on a flow is computed once, when a rule first matches the flow, and shared by every rule a
    recommender proposes in the batch.

    A rule new to the TMRSet goes after the TMRs of equal priority (`TMRSet.with_tmr`), so on a flow it matches it
    decides exactly when the current verdict came from the default or from a TMR of higher priority number: no
    second evaluation is needed. A rule replacing a TMR (same id) is evaluated in the TMRSet with it replaced.
    """

    def __init__(self, tmrset: TMRSet, flows: Sequence[Flow], at: datetime, window: timedelta | None) -> None:
        self.tmrset = tmrset
        self.at = at
        self.flows, self.since = in_window(flows, at, window)
        self._verdicts: list[Verdict | None] = [None] * len(self.flows)
        self._priority = {t.id: t.priority for t in tmrset.tmrs}
        # flows by protocol and destination port: a rule only looks at the flows its protocol and ports admit
        self._by_port: dict[tuple[int, int], list[int]] = {}
        for i, flow in enumerate(self.flows):
            self._by_port.setdefault((flow.protocol, flow.dst_port), []).append(i)

    def verdict(self, i: int) -> Verdict:
        found = self._verdicts[i]
        if found is None:
            found = self._verdicts[i] = self.tmrset.evaluate(self.flows[i], self.at)
        return found

    def impact(self, rule: TMR) -> Impact:
        """The impact of putting `rule` into the TMRSet: added, or replacing the TMR with its id (a new priority).
        `ValueError` when the rule names a VMN or group the TMRSet does not know."""
        proposed = self.tmrset.without(rule.id).with_tmr(rule)
        old = next((t for t in self.tmrset.tmrs if t.id == rule.id), None)
        return _impact(len(self.flows), self.since, self._changes(rule, old, proposed))

    def _candidates(self, tmr: TMR) -> set[int]:
        """Indices of the flows `tmr`'s protocol and ports admit (its endpoints are left to `TMRSet.matches`)."""
        return {
            i
            for (protocol, port), indices in self._by_port.items()
            if tmr.protocol.matches(protocol) and (not tmr.ports or ports_contain(tmr.ports, port))
            for i in indices
        }

    def _changes(self, rule: TMR, old: TMR | None, proposed: TMRSet) -> Iterable[tuple[Flow, Action]]:
        active = rule.is_active(self.at)
        candidates = self._candidates(rule) if old is None else self._candidates(rule) | self._candidates(old)
        for i in sorted(candidates):  # in recorded order, so the examples are the first changed flows
            flow = self.flows[i]
            if old is None:
                if not active or not proposed.matches(rule, flow):
                    continue
                before = self.verdict(i)
                decides = before.tmr_id is None or rule.priority < self._priority[before.tmr_id]
                after = rule.action if decides else before.action
            elif proposed.matches(rule, flow) or self.tmrset.matches(old, flow):
                before = self.verdict(i)
                after = proposed.evaluate(flow, self.at).action
            else:
                continue
            if after is not before.action:
                yield flow, after


def rule_impact(tmrset: TMRSet, rule: TMR, flows: Sequence[Flow], at: datetime, window: timedelta | None) -> Impact:
    """The impact of putting `rule` into `tmrset`: added, or replacing the TMR with its id (a new priority). For
    many rules over the same flows, make one `Replay` and ask it for each."""
    return Replay(tmrset, flows, at, window).impact(rule)
