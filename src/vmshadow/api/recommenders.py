"""`/recommenders`: each recommender's trust now (it ranks and gates the queue) and its stored history."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from vmshadow.api.auth import Principal, Role, Tokens, requires
from vmshadow.app.feedback import list_outcomes, recommender_trust
from vmshadow.domain.outcome import outcome_to_json, trust_snapshot_to_json


def router(db_url: str, tokens: Tokens) -> APIRouter:
    r = APIRouter(tags=["feedback"])
    viewer = Depends(requires(tokens, Role.VIEWER))

    @r.get("/recommenders")
    def trust(who: Principal = viewer) -> list[dict[str, Any]]:
        return [
            {**trust_snapshot_to_json(t.current), "history": [trust_snapshot_to_json(s) for s in t.history]}
            for t in recommender_trust(db_url).values()
        ]

    @r.get("/outcomes")
    def outcomes(
        recommender: str | None = None, proposal: str | None = None, who: Principal = viewer
    ) -> list[dict[str, Any]]:
        return [outcome_to_json(o) for o in list_outcomes(db_url, recommender=recommender, proposal_id=proposal)]

    return r
