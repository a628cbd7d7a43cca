"""Feeds push STIX bundles: the intel-feed role only, all-or-nothing, every error located."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from tests.datadir import shared_data
from vmshadow.adapters.sql import open_store
from vmshadow.api.app import create_app
from vmshadow.api.auth import Principal, Role, Tokens, token_digest
from vmshadow.app.tm import TMSettings

SAMPLE = "intel/stix2-oasis"


def client_for(db: str) -> TestClient:
    tokens = Tokens(
        {
            token_digest("feed"): Principal("taxii-bridge", Role.INTEL_FEED),
            token_digest("v"): Principal("v", Role.VIEWER),
        }
    )
    return TestClient(create_app(db, TMSettings(db_url=db), tokens))


def stored(db: str) -> list[str]:
    store = open_store(db)
    try:
        return sorted(i.value for i in store.indicators())
    finally:
        store.close()


def apt1() -> dict[str, object]:
    path = next(p for p in (shared_data() / SAMPLE).iterdir() if "apt1" in p.name.lower())
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def test_a_feed_pushes_a_bundle_and_it_is_stored(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'v.db'}"
    client = client_for(db)
    answer = client.post("/intel/stix", json=apt1(), headers={"Authorization": "Bearer feed"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["stored"] == 7  # 4 CIDRs and 3 domains in the APT1 sample (docs/intel.md)
    assert len(stored(db)) == 7


def test_only_the_intel_feed_role_may_push(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'v.db'}"
    answer = client_for(db).post("/intel/stix", json=apt1(), headers={"Authorization": "Bearer v"})
    assert answer.status_code == 403
    assert stored(db) == []


def test_a_bundle_with_a_bad_object_is_refused_whole_with_its_location(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'v.db'}"
    bundle = apt1()
    objects = list(bundle["objects"])  # type: ignore[call-overload]
    bad_index = next(i for i, o in enumerate(objects) if o.get("type") == "indicator")
    objects[bad_index] = {**objects[bad_index], "confidence": 500}
    answer = client_for(db).post(
        "/intel/stix", json={**bundle, "objects": objects}, headers={"Authorization": "Bearer feed"}
    )
    assert answer.status_code == 400
    issues = answer.json()["issues"]
    assert any(f"objects[{bad_index}]" in (i["field"] or "") for i in issues), issues
    assert stored(db) == [], "nothing from a rejected request is stored"
