"""`/proposals`: the approval queue over HTTP."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from vmshadow.api.auth import Principal, Role, Tokens, requires
from vmshadow.app.feedback import report_false_positive
from vmshadow.app.review import (
    apply_proposal,
    decide_proposal,
    edit_proposal,
    list_proposals,
    rollback_proposal,
    show_proposal,
    stage_proposal,
)
from vmshadow.app.tm import TMSettings
from vmshadow.domain.codec import proposal_to_json
from vmshadow.domain.net import parse_ports
from vmshadow.domain.outcome import outcome_to_json
from vmshadow.domain.proposal import ProposalState


class Reason(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="", max_length=2000)


class Edit(BaseModel):
    """Only the fields given change; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")
    priority: int | None = Field(default=None, ge=-1_000_000, le=1_000_000)
    ports: list[str] | None = Field(default=None, description='e.g. ["22", "8000-8080"]; [] means every port')
    expires_at: datetime | None = None
    comment: str | None = Field(default=None, max_length=200)
    reason: str = Field(default="", max_length=2000)


def router(db_url: str, tm: TMSettings, tokens: Tokens) -> APIRouter:
    r = APIRouter(prefix="/proposals", tags=["proposals"])
    viewer = Depends(requires(tokens, Role.VIEWER))
    approver = Depends(requires(tokens, Role.APPROVER))
    analyst = Depends(requires(tokens, Role.ANALYST))

    @r.get("")
    def list_all(state: ProposalState | None = None, who: Principal = viewer) -> list[dict[str, Any]]:
        found = sorted(list_proposals(db_url, state), key=lambda p: (-p.score, p.created_at))
        return [proposal_to_json(p) for p in found]

    @r.get("/{proposal_id}")
    def show(proposal_id: str, who: Principal = viewer) -> dict[str, Any]:
        reviewed = show_proposal(db_url, proposal_id, tm)
        data = proposal_to_json(reviewed.proposal)
        data["staged_hits"] = None if reviewed.staged_hits is None else reviewed.staged_hits.to_json()
        data["decisions"] = [
            {"from": str(d.from_state), "to": str(d.to_state), "actor": d.actor, "at": d.decided_at.isoformat(),
             "reason": d.reason, "before": d.before, "after": d.after}
            for d in reviewed.decisions
        ]  # fmt: skip
        return data

    @r.post("/{proposal_id}/approve")
    def approve(proposal_id: str, body: Reason, who: Principal = approver) -> dict[str, Any]:
        moved = decide_proposal(db_url, proposal_id, ProposalState.APPROVED, actor=who.name, reason=body.reason)
        return proposal_to_json(moved)

    @r.post("/{proposal_id}/reject")
    def reject(proposal_id: str, body: Reason, who: Principal = approver) -> dict[str, Any]:
        moved = decide_proposal(db_url, proposal_id, ProposalState.REJECTED, actor=who.name, reason=body.reason, tm=tm)
        return proposal_to_json(moved)

    @r.post("/{proposal_id}/stage")
    def stage(proposal_id: str, who: Principal = analyst) -> dict[str, Any]:
        """The rule counts beside the TMRs in force (a new version), deciding nothing."""
        moved, result = stage_proposal(tm, proposal_id, actor=who.name)
        return {"proposal": proposal_to_json(moved), "applied": result.to_json()}

    @r.post("/{proposal_id}/edit")
    def edit(proposal_id: str, body: Edit, who: Principal = approver) -> dict[str, Any]:
        moved = edit_proposal(
            db_url,
            proposal_id,
            actor=who.name,
            reason=body.reason,
            priority=body.priority,
            ports=None if body.ports is None else parse_ports(body.ports, "body"),
            expires_at=body.expires_at,
            comment=body.comment,
            tm=tm,
        )
        return proposal_to_json(moved)

    @r.post("/{proposal_id}/apply")
    def apply(proposal_id: str, who: Principal = approver) -> dict[str, Any]:
        moved, result = apply_proposal(tm, proposal_id, actor=who.name)
        return {"proposal": proposal_to_json(moved), "applied": result.to_json()}

    @r.post("/{proposal_id}/rollback")
    def rollback(proposal_id: str, body: Reason, who: Principal = approver) -> dict[str, Any]:
        moved, result = rollback_proposal(tm, proposal_id, actor=who.name, reason=body.reason)
        return {"proposal": proposal_to_json(moved), "applied": result.to_json()}

    @r.post("/{proposal_id}/false-positive")
    def false_positive(proposal_id: str, body: Reason, who: Principal = analyst) -> dict[str, Any]:
        return outcome_to_json(report_false_positive(db_url, proposal_id, actor=who.name, reason=body.reason))

    return r
