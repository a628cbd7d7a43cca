"""Impact: replay recorded flows through the current TMRSet and the TMRSet with a proposal applied."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from vmshadow.domain.flow import Flow
from vmshadow.domain.proposal import Impact
from vmshadow.domain.tmr import TMR, Action, TMRSet

MAX_EXAMPLES = 10


def replay_impact(
    current: TMRSet, proposed: TMRSet, flows: Sequence[Flow], at: datetime, *, added: TMR | None = None
) -> Impact:
    """Count flows whose verdict changes, as if `proposed` were in force at `at` instead of `current`.

    `added`: when `proposed` is `current` plus this one TMR, only flows it matches can change, so the others
    are not evaluated (same result, much less work on large archives).
    """
    blocked = allowed = 0
    vmns: set[str] = set()
    examples: list[str] = []
    for flow in flows:
        if added is not None and not proposed.matches(added, flow):
            continue
        before = current.evaluate(flow, at).action
        after = proposed.evaluate(flow, at).action
        if before is after:
            continue
        if after is Action.DENY:
            blocked += 1
        else:
            allowed += 1
        vmns.update(v for v in (flow.src_vmn, flow.dst_vmn) if v is not None)
        if len(examples) < MAX_EXAMPLES:
            examples.append(flow.community_id)
    return Impact(
        flows_replayed=len(flows),
        newly_blocked_flows=blocked,
        newly_allowed_flows=allowed,
        vmns_affected=tuple(sorted(vmns)),
        examples=tuple(examples),
    )
