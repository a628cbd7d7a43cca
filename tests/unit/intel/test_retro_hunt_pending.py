"""A retro-hunt's proposals carry their conflicts with the proposals waiting for review, as live ones do."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.factories import make_proposal
from tests.unit.intel.test_refresh import C2, T0, Clock, c2, contact
from vmshadow.adapters.sql import SqlStore, open_store
from vmshadow.analysis.registry import build_detectors
from vmshadow.app.intel_refresh import IntelRefresh
from vmshadow.config.intel_settings import IntelSettings
from vmshadow.domain.proposal import ProposalKind, ProposalState
from vmshadow.domain.tmr import TMR, Action, Endpoint


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    with open_store(f"sqlite:///{tmp_path / 'store.db'}") as s:
        yield s


def test_a_retro_hunt_deny_names_the_waiting_allow_it_contradicts(store: SqlStore) -> None:
    allow = make_proposal(
        1,
        kind=ProposalKind.ADD_ALLOW,
        state=ProposalState.PROPOSED,
        rule=TMR("allow-c2", 50, Endpoint.any(), Endpoint.network(C2), Action.ALLOW, expires_at=None),
    )
    store.save_batch(proposals=[allow])
    clock = Clock()
    refresh = IntelRefresh(store, build_detectors(), IntelSettings(), clock=clock)
    store.save_batch(flows=[contact(1, T0 - timedelta(minutes=20))])
    clock.now = T0 + timedelta(seconds=30)
    store.save_indicators([c2()], at=clock.now)
    denies = [p for p in refresh().hunt.proposals if p.kind is ProposalKind.ADD_DENY]
    assert denies
    tags = [t for p in denies for t in p.conflicts if t.startswith("pending_")]
    assert tags, "the deny and the waiting allow decide the same traffic"
    assert all(t.endswith(f":{allow.id}") for t in tags)
    stored = store.proposal(denies[0].id)
    assert stored is not None
    assert stored.conflicts == denies[0].conflicts, "stored with its conflicts"
