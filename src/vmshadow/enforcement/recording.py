"""`RecordingEnforcer`: an in-memory enforcer that records every applied TMRSet, for review-flow tests.

It behaves like a real enforcer (numbered versions, rollback as a new version, counters per TMR that reset on
replace, staged rules kept with their counts until an apply names other ones) without a kernel.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from vmshadow.domain.errors import EnforcementError
from vmshadow.domain.tmr import TMRSet
from vmshadow.ports.enforcer import AppliedVersion, StagedRule


class RecordingEnforcer:
    def __init__(self) -> None:
        self.history: list[AppliedVersion] = []
        self.hits: dict[str, int] = {}
        self.staged_hits: dict[str, int] = {}

    def apply(self, tmrset: TMRSet, at: datetime, staged: Sequence[StagedRule] | None = None) -> AppliedVersion:
        before = self.current()
        kept = before.staged if before is not None else ()
        now_staged = kept if staged is None else tuple(staged)
        applied = AppliedVersion(version=len(self.history) + 1, applied_at=at, tmrset=tmrset, staged=now_staged)
        self.history.append(applied)
        self.hits = {t.id: 0 for t in tmrset.tmrs}  # counters reset on replace, as in nftables
        same = {s.proposal_id: s.rule for s in kept}
        # staged counts are carried over while the same rule stays staged, as NftEnforcer carries them
        self.staged_hits = {
            s.proposal_id: self.staged_hits.get(s.proposal_id, 0) if same.get(s.proposal_id) == s.rule else 0
            for s in now_staged
        }
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

    def staged_counters(self) -> dict[str, int]:
        return dict(self.staged_hits)

    def record_hit(self, tmr_id: str, packets: int = 1) -> None:
        """Test hook: pretend the kernel matched `packets` packets on a TMR of the current version."""
        if tmr_id not in self.hits:
            raise EnforcementError(f"TMR {tmr_id!r} is not in force")
        self.hits[tmr_id] += packets

    def record_staged_hit(self, proposal_id: str, packets: int = 1) -> None:
        """Test hook: pretend the kernel counted `packets` packets on a staged proposal's rule."""
        if proposal_id not in self.staged_hits:
            raise EnforcementError(f"proposal {proposal_id!r} is not staged")
        self.staged_hits[proposal_id] += packets
