"""Staging over HTTP without a kernel to reach: refusals come first, a TM that cannot be reached changes nothing,
and the proposal body says what its staged rule counted (or why that could not be read)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.factories import T0, make_proposal
from vmshadow.adapters.sql import open_store
from vmshadow.api.app import create_app
from vmshadow.api.auth import Principal, Role, Tokens, token_digest
from vmshadow.app.review import STAGED_HITS
from vmshadow.app.tm import TMSettings
from vmshadow.domain.proposal import Evidence, ProposalKind, ProposalState
from vmshadow.review.lifecycle import decide

TOKENS = {"v-token": ("vic", Role.VIEWER), "a-token": ("ann", Role.APPROVER), "n-token": ("nat", Role.ANALYST)}


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'v.db'}"
    staged, decision = decide(make_proposal(3), ProposalState.STAGED, actor="ann", at=T0)
    counted = make_proposal(4, state=ProposalState.REJECTED, evidence=Evidence(measured={STAGED_HITS: 17}))
    alert = make_proposal(5, kind=ProposalKind.ALERT, rule=None)
    with open_store(url) as store:
        store.save_batch(proposals=[make_proposal(1), make_proposal(2, state=ProposalState.REJECTED), counted, alert])
        store.save_batch(proposals=[make_proposal(3)])
        store.record_decision(decision, staged)
    return url


@pytest.fixture
def client(db: str) -> TestClient:
    tokens = Tokens({token_digest(t): Principal(name, role) for t, (name, role) in TOKENS.items()})
    # a namespace that does not exist: every attempt to reach the kernel fails, and nothing in it can change
    return TestClient(create_app(db, TMSettings(db_url=db, bridges=("vmsnobridge",), netns="vmsnonamespace"), tokens))


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def state_and_decisions(db: str, pid: str) -> tuple[str, int]:
    with open_store(db) as store:
        found = store.proposal(pid)
        assert found is not None
        return str(found.state), len(store.decisions(pid))


def test_refusals_come_before_the_kernel(client: TestClient, db: str) -> None:
    rejected = client.post("/proposals/prop-2/stage", headers=auth("n-token"))
    assert rejected.status_code == 409
    assert "cannot go from rejected to staged" in rejected.json()["issues"][0]["message"]
    alert = client.post("/proposals/prop-5/stage", headers=auth("n-token"))
    assert alert.status_code == 409
    assert "cannot be staged" in alert.json()["issues"][0]["message"]
    assert client.post("/proposals/prop-1/stage", headers=auth("v-token")).status_code == 403
    assert client.post("/proposals/prop-3/reject", json={}, headers=auth("a-token")).status_code == 400
    assert state_and_decisions(db, "prop-3") == ("staged", 1)


def test_a_tm_that_cannot_be_reached_changes_nothing(client: TestClient, db: str) -> None:
    stage = client.post("/proposals/prop-1/stage", headers=auth("n-token"))
    assert stage.status_code >= 500, stage.text
    assert state_and_decisions(db, "prop-1") == ("proposed", 0)
    unstage = client.post("/proposals/prop-3/reject", json={"reason": "noise"}, headers=auth("a-token"))
    assert unstage.status_code >= 500, unstage.text
    assert state_and_decisions(db, "prop-3") == ("staged", 1), "the counting rule could not be taken out"
    approve = client.post("/proposals/prop-3/approve", json={}, headers=auth("a-token"))
    assert approve.status_code == 200, "approving keeps the rule counting: no kernel needed"


def test_the_body_says_what_was_counted(client: TestClient) -> None:
    never = client.get("/proposals/prop-1", headers=auth("v-token")).json()
    assert never["staged_hits"] is None
    kept = client.get("/proposals/prop-4", headers=auth("v-token")).json()
    assert kept["staged_hits"] == {"packets": 17, "counting": False, "error": None}
    live = client.get("/proposals/prop-3", headers=auth("v-token")).json()["staged_hits"]
    assert (live["packets"], live["counting"]) == (0, True)
    assert "vmsnonamespace" in live["error"]


def test_an_approved_staged_proposal_still_counts_one_approved_straight_away_never_did(
    db: str, client: TestClient
) -> None:
    assert client.post("/proposals/prop-3/approve", json={}, headers=auth("a-token")).status_code == 200
    body = client.get("/proposals/prop-3", headers=auth("v-token")).json()
    assert body["state"] == "approved"
    assert body["staged_hits"]["counting"] is True
    with open_store(db) as store:
        approved = store.proposal("prop-1")
        assert approved is not None
        moved, decision = decide(approved, ProposalState.APPROVED, actor="ann", at=T0)
        store.record_decision(decision, moved)
    assert client.get("/proposals/prop-1", headers=auth("v-token")).json()["staged_hits"] is None
