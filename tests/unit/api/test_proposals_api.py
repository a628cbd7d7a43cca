"""The approval queue over HTTP: roles, lifecycle refusals, located errors, and no state change on bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.factories import make_proposal
from vmshadow.adapters.sql import open_store
from vmshadow.api.app import create_app
from vmshadow.api.auth import Principal, Role, Tokens, load_tokens, token_digest
from vmshadow.app.tm import TMSettings
from vmshadow.domain.errors import InputError
from vmshadow.domain.proposal import ProposalState
from vmshadow.review.lifecycle import decide

TOKENS = {"v-token": ("vic", Role.VIEWER), "a-token": ("ann", Role.APPROVER), "f-token": ("feed", Role.INTEL_FEED)}


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'v.db'}"
    store = open_store(url)
    store.save_batch(proposals=[make_proposal(1), make_proposal(2)])
    store.close()
    return url


@pytest.fixture
def client(db: str) -> TestClient:
    tokens = Tokens({token_digest(t): Principal(name, role) for t, (name, role) in TOKENS.items()})
    # a bridge that does not exist: any attempt to reach the kernel would fail loudly (503)
    return TestClient(create_app(db, TMSettings(db_url=db, bridges=("vmsnobridge",)), tokens))


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def decisions(db: str, pid: str) -> int:
    store = open_store(db)
    try:
        return len(store.decisions(pid))
    finally:
        store.close()


def test_tokens_and_roles(client: TestClient) -> None:
    assert client.get("/proposals").status_code == 401
    assert client.get("/proposals", headers=auth("nope")).status_code == 401
    assert client.get("/proposals", headers=auth("v-token")).status_code == 200
    refused = client.post("/proposals/prop-1/approve", json={}, headers=auth("v-token"))
    assert refused.status_code == 403
    assert client.get("/proposals", headers=auth("f-token")).status_code == 403, "intel-feed may only add intel"


def test_approve_records_the_token_holder(client: TestClient, db: str) -> None:
    answer = client.post("/proposals/prop-1/approve", json={"reason": "seen it"}, headers=auth("a-token"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["state"] == "approved"
    shown = client.get("/proposals/prop-1", headers=auth("v-token")).json()
    assert [(d["to"], d["actor"], d["reason"]) for d in shown["decisions"]] == [("approved", "ann", "seen it")]


def test_lifecycle_refusals(client: TestClient, db: str) -> None:
    no_reason = client.post("/proposals/prop-2/reject", json={}, headers=auth("a-token"))
    assert no_reason.status_code == 400
    assert no_reason.json()["issues"][0]["field"] == "reason"
    assert client.post("/proposals/prop-2/reject", json={"reason": "noise"}, headers=auth("a-token")).status_code == 200
    again = client.post("/proposals/prop-2/approve", json={}, headers=auth("a-token"))
    assert again.status_code == 409
    assert "cannot go from rejected to approved" in again.json()["issues"][0]["message"]
    early = client.post("/proposals/prop-1/apply", headers=auth("a-token"))
    assert early.status_code == 409, "an unapproved proposal never reaches the TM"
    assert client.get("/proposals/prop-404", headers=auth("v-token")).status_code == 404


def test_bad_bodies_are_located_and_store_nothing(client: TestClient, db: str) -> None:
    unknown = client.post("/proposals/prop-1/edit", json={"prioriti": 3}, headers=auth("a-token"))
    assert unknown.status_code == 422
    assert unknown.json()["detail"][0]["loc"] == ["body", "prioriti"]
    bad_ports = client.post("/proposals/prop-1/edit", json={"ports": ["22", "99999"]}, headers=auth("a-token"))
    assert bad_ports.status_code == 400
    assert bad_ports.json()["issues"][0]["field"] == "ports[1]"
    assert decisions(db, "prop-1") == 0
    ok = client.post("/proposals/prop-1/edit", json={"ports": ["22"], "priority": 7}, headers=auth("a-token"))
    assert ok.status_code == 200, ok.text
    assert (ok.json()["rule"]["ports"], ok.json()["rule"]["priority"]) == (["22"], 7)
    assert decisions(db, "prop-1") == 1


def test_openapi_schema_lists_the_queue(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/proposals", "/proposals/{proposal_id}", "/proposals/{proposal_id}/approve"} <= set(paths)


def test_tokens_file_is_validated_with_locations(tmp_path: Path) -> None:
    good = tmp_path / "tokens.yaml"
    good.write_text(f"tokens:\n  - {{name: ann, role: approver, sha256: {token_digest('t')}}}\n")
    assert load_tokens(good).find("t") == Principal("ann", Role.APPROVER)
    bad = tmp_path / "bad.yaml"
    bad.write_text("tokens:\n  - {name: x, role: boss, sha256: abc}\n  - {name: y}\n")
    with pytest.raises(InputError) as caught:
        load_tokens(bad)
    assert [i.field for i in caught.value.issues] == ["tokens[0].role", "tokens[1]"]


def applied(db: str, n: int) -> None:
    """Mark prop-n applied in the store (as the TM would), without the kernel."""
    store = open_store(db)
    try:
        p = store.proposal(f"prop-{n}")
        assert p is not None
        for target in (ProposalState.APPROVED, ProposalState.APPLIED):
            p, d = decide(p, target, actor="ann", at=p.created_at)
            store.record_decision(d, p)
    finally:
        store.close()


def test_false_positive_reports_lower_trust_and_refuse_what_was_never_applied(client: TestClient, db: str) -> None:
    before = {r["recommender"]: r["trust"] for r in client.get("/recommenders", headers=auth("v-token")).json()}
    name = make_proposal(1).recommender
    assert before[name] == 0.5
    never = client.post("/proposals/prop-2/false-positive", json={"reason": "x"}, headers=auth("a-token"))
    assert never.status_code == 400, "a proposal never applied cannot be a false positive"
    applied(db, 1)
    assert (
        client.post("/proposals/prop-1/false-positive", json={"reason": "x"}, headers=auth("v-token")).status_code
        == 403
    )
    reported = client.post(
        "/proposals/prop-1/false-positive", json={"reason": "the nightly backup"}, headers=auth("a-token")
    )
    assert reported.status_code == 200, reported.text
    assert (reported.json()["kind"], reported.json()["actor"]) == ("false_positive", "ann")
    after = {r["recommender"]: r["trust"] for r in client.get("/recommenders", headers=auth("v-token")).json()}
    assert after[name] < 0.5
    listed = client.get("/outcomes", params={"proposal": "prop-1"}, headers=auth("v-token")).json()
    assert [o["kind"] for o in listed] == ["false_positive"]


def test_rollback_needs_a_reason_and_an_applied_proposal_and_changes_nothing_otherwise(
    client: TestClient, db: str
) -> None:
    no_reason = client.post("/proposals/prop-1/rollback", json={}, headers=auth("a-token"))
    assert no_reason.status_code == 400
    assert no_reason.json()["issues"][0]["field"] == "reason"
    unapplied = client.post("/proposals/prop-1/rollback", json={"reason": "wrong"}, headers=auth("a-token"))
    assert unapplied.status_code == 409
    assert "cannot go from proposed to rolled_back" in unapplied.json()["issues"][0]["message"]
    assert client.post("/proposals/prop-1/rollback", json={"reason": "x"}, headers=auth("v-token")).status_code == 403
    assert decisions(db, "prop-1") == 0
