"""The enforcer: the only interface through which a TMRSet reaches the kernel.

Implementations live in `vmshadow.enforcement` (`NftEnforcer`, real; `RecordingEnforcer`, the shipped fake for
review-flow tests). Analysis, refinement and review never hold one (import-linter contract).

What an enforcer puts in force is a version: a `TMRSet` (the rules that decide) plus the **staged** rules beside it
(`StagedRule`: a proposal's rule compiled to count the packets it would decide, taking no verdict). Staged rules
belong to the review, not to the TMR history: an apply that does not name them keeps those in force, with their
counts, and a rollback to an earlier version keeps the staged rules of now.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from vmshadow.domain.tmr import TMR, TMRSet


@dataclass(frozen=True, slots=True)
class StagedRule:
    """A staged proposal's rule, enforced as counting-only: the packets it would decide if it were applied (no
    earlier TMR decides them) are counted, and every packet goes on to the TMRs in force as if it were not there."""

    proposal_id: str
    rule: TMR


@dataclass(frozen=True, slots=True)
class AppliedVersion:
    """A TMRSet in force: its version number, when it was applied, and the staged rules counting beside it."""

    version: int
    applied_at: datetime
    tmrset: TMRSet
    staged: tuple[StagedRule, ...] = ()


class Enforcer(Protocol):
    def apply(self, tmrset: TMRSet, at: datetime, staged: Sequence[StagedRule] | None = None) -> AppliedVersion:
        """Put `tmrset` (and `staged`, counting only) in force atomically; on failure the previous version stays
        (EnforcementError). `staged=None` keeps the staged rules in force, with their counts."""
        ...

    def current(self) -> AppliedVersion | None: ...

    def rollback(self, version: int, at: datetime) -> AppliedVersion:
        """Put an earlier version's TMRSet back in force, as a new version (the staged rules of now stay)."""
        ...

    def counters(self) -> dict[str, int]:
        """Packets matched per TMR id since the current version was applied."""
        ...

    def staged_counters(self) -> dict[str, int]:
        """Packets counted per staged proposal id since it was staged (carried over from version to version)."""
        ...
