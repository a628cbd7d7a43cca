"""Decisions: one audited move of a proposal through its lifecycle (append-only)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from vmshadow.domain.proposal import ProposalState


@dataclass(frozen=True, slots=True)
class Decision:
    """Who moved which proposal from what state to what state, when and why, with the rule before/after."""

    id: str
    proposal_id: str
    from_state: ProposalState
    to_state: ProposalState
    actor: str
    decided_at: datetime
    reason: str = ""
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class TMRVersion:
    """A numbered, stored TMRSet (the JSON form from `codec.tmrset_to_json`)."""

    version: int
    created_at: datetime
    author: str
    comment: str
    document: dict[str, Any]
