"""The enforcer: the only interface through which a TMRSet reaches the kernel.

Implementations live in `vmshadow.enforcement` (`NftEnforcer`, real; `RecordingEnforcer`, the shipped fake for
review-flow tests). Analysis, refinement and review never hold one (import-linter contract).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from vmshadow.domain.tmr import TMRSet


@dataclass(frozen=True, slots=True)
class AppliedVersion:
    """A TMRSet in force: its version number and when it was applied."""

    version: int
    applied_at: datetime
    tmrset: TMRSet


class Enforcer(Protocol):
    def apply(self, tmrset: TMRSet, at: datetime) -> AppliedVersion:
        """Put `tmrset` in force atomically; on failure the previous version stays (EnforcementError)."""
        ...

    def current(self) -> AppliedVersion | None: ...

    def rollback(self, version: int, at: datetime) -> AppliedVersion:
        """Put an earlier version back in force, as a new version."""
        ...

    def counters(self) -> dict[str, int]:
        """Packets matched per TMR id since the current version was applied."""
        ...
