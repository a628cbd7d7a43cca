"""`RecordingEnforcer`: an in-memory enforcer that records every applied TMRSet, for review-flow tests.

It behaves like a real enforcer (numbered versions, rollback as a new version, counters per TMR) without a kernel.
"""

from __future__ import annotations

from datetime import datetime

from vmshadow.domain.errors import EnforcementError
from vmshadow.domain.tmr import TMRSet
from vmshadow.ports.enforcer import AppliedVersion


class RecordingEnforcer:
    def __init__(self) -> None:
        self.history: list[AppliedVersion] = []
        self.hits: dict[str, int] = {}

    def apply(self, tmrset: TMRSet, at: datetime) -> AppliedVersion:
        applied = AppliedVersion(version=len(self.history) + 1, applied_at=at, tmrset=tmrset)
        self.history.append(applied)
        self.hits = {t.id: 0 for t in tmrset.tmrs}  # counters reset on replace, as in nftables
        return applied

    def current(self) -> AppliedVersion | None:
        return self.history[-1] if self.history else None

    def rollback(self, version: int, at: datetime) -> AppliedVersion:
        for applied in self.history:
            if applied.version == version:
                return self.apply(applied.tmrset, at)
        raise EnforcementError(f"no version {version} to roll back to (have 1..{len(self.history)})")

    def counters(self) -> dict[str, int]:
        return dict(self.hits)

    def record_hit(self, tmr_id: str, packets: int = 1) -> None:
        """Test hook: pretend the kernel matched `packets` packets on a TMR of the current version."""
        if tmr_id not in self.hits:
            raise EnforcementError(f"TMR {tmr_id!r} is not in force")
        self.hits[tmr_id] += packets
