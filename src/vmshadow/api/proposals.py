"""`/proposals`: the approval queue over HTTP."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from vmshadow.api.auth import Principal, Role, Tokens, requires
from vmshadow.app.review import apply_proposal, decide_proposal, list_proposals, show_proposal
from vmshadow.app.tm import TMSettings
from vmshadow.domain.codec import proposal_to_json
from vmshadow.domain.errors import InputError, Issue
from vmshadow.domain.net import PortRange, normalize_ports
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


def _ports(values: list[str]) -> tuple[PortRange, ...]:
    ranges = []
    issues = []
    for i, text in enumerate(values):
        first, _, last = text.partition("-")
        try:
            ranges.append(PortRange(int(first), int(last or first)))
        except ValueError:
            issues.append(Issue(source="body", field=f"ports[{i}]", message=f"{text!r} is not a port or range"))
    if issues:
        raise InputError(issues)
    return normalize_ports(ranges)


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
        reviewed = show_proposal(db_url, proposal_id)
        data = proposal_to_json(reviewed.proposal)
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
        moved = decide_proposal(db_url, proposal_id, ProposalState.REJECTED, actor=who.name, reason=body.reason)
        return proposal_to_json(moved)

    @r.post("/{proposal_id}/stage")
    def stage(proposal_id: str, who: Principal = analyst) -> dict[str, Any]:
        return proposal_to_json(decide_proposal(db_url, proposal_id, ProposalState.STAGED, actor=who.name))

    @r.post("/{proposal_id}/edit")
    def edit(proposal_id: str, body: Edit, who: Principal = approver) -> dict[str, Any]:
        current = show_proposal(db_url, proposal_id).proposal
        if current.rule is None:
            raise InputError(Issue(source=f"proposal {proposal_id}", field="rule", message="an alert has no rule"))
        changes: dict[str, Any] = {}
        if body.priority is not None:
            changes["priority"] = body.priority
        if body.ports is not None:
            changes["ports"] = _ports(body.ports)
        if body.expires_at is not None:
            changes["expires_at"] = body.expires_at
        if body.comment is not None:
            changes["comment"] = body.comment
        if not changes:
            raise InputError(Issue(source="body", message="nothing to change"))
        try:
            edited = replace(current.rule, **changes)
        except ValueError as exc:
            raise InputError(Issue(source="body", field="rule", message=str(exc))) from None
        moved = decide_proposal(
            db_url, proposal_id, ProposalState.EDITED, actor=who.name, reason=body.reason, edited_rule=edited
        )
        return proposal_to_json(moved)

    @r.post("/{proposal_id}/apply")
    def apply(proposal_id: str, who: Principal = approver) -> dict[str, Any]:
        moved, result = apply_proposal(tm, proposal_id, actor=who.name)
        return {"proposal": proposal_to_json(moved), "applied": result.to_json()}

    return r
