"""The Store contract: every test runs on SQLite and on PostgreSQL (see conftest.py)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError

from tests.factories import (
    CET,
    at,
    make_alert,
    make_decision,
    make_finding,
    make_flow,
    make_proposal,
    make_rule,
    make_tmr_document,
)
from vmshadow.adapters.sql import SqlStore, open_store
from vmshadow.adapters.sql.store import alembic_config, make_engine, upgrade
from vmshadow.adapters.sql.tables import metadata
from vmshadow.domain.errors import BackendUnavailableError
from vmshadow.domain.flow import Flow
from vmshadow.domain.indicator import Indicator, IndicatorType
from vmshadow.domain.outcome import Outcome, OutcomeKind, TrustSnapshot
from vmshadow.domain.proposal import ProposalState

from .conftest import FreshUrl

S = ProposalState
TABLES = {"flows", "findings", "proposals", "decisions", "tmr_versions", "outcomes", "trust_history"}


# --- schema and migrations ---


def test_fresh_database_is_migrated_on_open_and_reopening_keeps_data(fresh_url: FreshUrl) -> None:
    url = fresh_url()
    with open_store(url) as first:
        first.save_batch(flows=[make_flow(1)])
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            assert set(inspect(conn).get_table_names()) >= TABLES
            head = ScriptDirectory.from_config(alembic_config()).get_current_head()
            assert MigrationContext.configure(conn).get_current_revision() == head
    finally:
        engine.dispose()
    with open_store(url) as second:  # already at head: nothing to do, nothing lost
        assert second.flows() == [make_flow(1)]


def test_migrations_build_exactly_the_schema_in_tables_py(fresh_url: FreshUrl) -> None:
    url = fresh_url()
    open_store(url).close()
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    finally:
        engine.dispose()


def test_the_initial_migration_downgrades_cleanly(fresh_url: FreshUrl) -> None:
    url = fresh_url()
    open_store(url).close()
    engine = make_engine(url)
    config = alembic_config()
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "base")
        with engine.connect() as conn:
            assert not TABLES & set(inspect(conn).get_table_names())
    finally:
        engine.dispose()
    with open_store(url) as again:
        assert again.count_flows() == 0


def test_foreign_keys_are_enforced(fresh_url: FreshUrl) -> None:
    url = fresh_url()
    open_store(url).close()
    engine = make_engine(url)  # SQLite checks foreign keys only when the connection asks it to
    row = {
        "id": "dec-x",
        "proposal_id": "no-such-proposal",
        "from_state": "proposed",
        "to_state": "approved",
        "actor": "alice",
        "decided_at": at(0),
        "reason": "",
    }
    try:
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(metadata.tables["decisions"].insert(), row)
    finally:
        engine.dispose()


# --- round trips ---


def test_flows_round_trip_exactly(store: SqlStore) -> None:
    flows = [
        make_flow(1),
        make_flow(2, src_ip=make_flow().dst_ip, src_vmn=None, dst_vmn="db-1", application_is_guessed=False),
        make_flow(3, src_ip=ip_address("10.1.2.3"), protocol=17, sni=""),
    ]
    store.save_batch(flows=flows)
    assert store.flows() == flows
    assert store.count_flows() == 3


def test_findings_round_trip_exactly(store: SqlStore) -> None:
    findings = [make_finding(1), make_finding(2, indicator="198.51.100.7", attack_technique=None, measured={})]
    store.save_batch(findings=findings)
    assert store.findings() == findings
    got = store.finding("find-1")
    assert got == findings[0]
    assert got is not None
    assert got.measured == {"distinct_ports": 120, "rate_per_s": 41.5, "window": "60s"}
    assert store.finding("nope") is None


def test_proposals_round_trip_exactly(store: SqlStore) -> None:
    proposals = [make_proposal(1), make_alert(2), make_proposal(3, rule=make_rule(3, expires_at=None, ports=()))]
    store.save_batch(proposals=proposals)
    assert store.proposals() == proposals
    assert store.proposal("prop-2") == proposals[1]
    assert store.proposal("nope") is None


def test_decisions_round_trip_exactly(store: SqlStore) -> None:
    p = make_proposal(1)
    with_rules = make_decision(1, p.id, S.PROPOSED, S.EDITED)
    without = make_decision(2, p.id, S.EDITED, S.APPROVED, before=None, after=None, reason="")
    store.record_decision(with_rules, replace(p, state=S.EDITED))
    store.record_decision(without, replace(p, state=S.APPROVED))
    assert store.decisions() == [with_rules, without]


def test_tmr_versions_round_trip_exactly(store: SqlStore) -> None:
    document = make_tmr_document()
    saved = store.save_tmr_version(document, author="alice", comment="first ✓", created_at=at(0))
    assert saved.document == document
    assert store.tmr_version(1) == saved
    assert store.tmr_versions() == [saved]


def test_times_come_back_in_utc_whatever_zone_went_in(store: SqlStore) -> None:
    local = at(0).astimezone(CET)
    flow = make_flow(1, first_seen_at=local, last_seen_at=local + timedelta(seconds=2))
    finding = make_finding(1, first_seen_at=local, observed_at=local)
    proposal = make_proposal(1, created_at=local, rule=make_rule(1, expires_at=local))
    decision = make_decision(1, proposal.id, S.PROPOSED, S.APPROVED, decided_at=local)
    store.save_batch(flows=[flow], findings=[finding], proposals=[proposal])
    store.record_decision(decision, replace(proposal, state=S.APPROVED))
    version = store.save_tmr_version({}, author="a", comment="", created_at=local)

    got_flow, got_finding = store.flows()[0], store.findings()[0]
    got_proposal, got_decision = store.proposal(proposal.id), store.decisions()[0]
    assert got_proposal is not None
    assert got_proposal.rule is not None
    times = [
        (got_flow.first_seen_at, flow.first_seen_at),
        (got_flow.last_seen_at, flow.last_seen_at),
        (got_finding.observed_at, finding.observed_at),
        (got_proposal.created_at, proposal.created_at),
        (got_proposal.rule.expires_at, local),
        (got_decision.decided_at, decision.decided_at),
        (version.created_at, local),
        (store.tmr_versions()[0].created_at, local),
    ]
    for got, given in times:
        assert got == given
        assert got is not None
        assert got.tzinfo is UTC


def test_naive_times_are_refused_and_nothing_is_stored(store: SqlStore) -> None:
    naive = datetime(2025, 3, 1, 12, 0)  # no tzinfo: what the store must refuse
    with pytest.raises(ValueError, match="naive"):
        store.save_batch(flows=[make_flow(1)], findings=[make_finding(1, observed_at=naive)])
    with pytest.raises(ValueError, match="naive"):
        store.save_tmr_version({}, author="a", comment="", created_at=naive)
    assert store.count_flows() == 0
    assert store.findings() == []
    assert store.tmr_versions() == []


# --- idempotence and upserts ---


def test_saving_the_same_batch_twice_stores_it_once(store: SqlStore) -> None:
    flows, findings = [make_flow(1), make_flow(2)], [make_finding(1)]
    store.save_batch(flows=flows, findings=findings, proposals=[make_proposal(1)])
    store.save_batch(flows=flows, findings=findings, proposals=[make_proposal(1)])
    store.save_batch(flows=[*flows, flows[0]], findings=[*findings, *findings])  # duplicates within a batch
    assert store.count_flows() == 2
    assert store.flows() == flows
    assert store.findings() == findings
    assert store.proposals() == [make_proposal(1)]


def test_existing_flows_and_findings_are_kept_not_overwritten(store: SqlStore) -> None:
    store.save_batch(flows=[make_flow(1)], findings=[make_finding(1)])
    store.save_batch(flows=[make_flow(1, application="changed")], findings=[make_finding(1, summary="changed")])
    assert store.flows() == [make_flow(1)]
    assert store.findings() == [make_finding(1)]


def test_proposals_are_upserted_by_id(store: SqlStore) -> None:
    store.save_batch(proposals=[make_proposal(1), make_proposal(2)])
    staged = make_proposal(1, state=S.STAGED, summary="now staged")
    store.save_batch(proposals=[staged])
    assert store.proposal("prop-1") == staged
    assert store.proposals(state=S.STAGED) == [staged]
    assert store.proposals(state=S.PROPOSED) == [make_proposal(2)]
    assert len(store.proposals()) == 2


def test_the_last_of_several_versions_of_a_proposal_in_one_batch_wins(store: SqlStore) -> None:
    store.save_batch(proposals=[make_proposal(1), make_proposal(1, state=S.EDITED)])
    assert store.proposals() == [make_proposal(1, state=S.EDITED)]


def test_empty_batch_is_a_no_op(store: SqlStore) -> None:
    store.save_batch()
    assert store.count_flows() == 0


# --- decisions ---


def test_decisions_are_appended_in_order_and_update_the_proposal(store: SqlStore) -> None:
    p, q = make_proposal(1), make_alert(2)
    steps = [
        (make_decision(1, p.id, S.PROPOSED, S.STAGED, decided_at=at(300)), replace(p, state=S.STAGED)),
        (make_decision(2, q.id, S.PROPOSED, S.REJECTED, decided_at=at(100)), replace(q, state=S.REJECTED)),
        (make_decision(3, p.id, S.STAGED, S.APPROVED, decided_at=at(200)), replace(p, state=S.APPROVED)),
    ]
    for decision, proposal in steps:
        store.record_decision(decision, proposal)
    # Recording order, not decided_at order: the audit trail is the sequence in which things happened here.
    assert [d.id for d in store.decisions()] == ["dec-1", "dec-2", "dec-3"]
    assert [d.id for d in store.decisions(p.id)] == ["dec-1", "dec-3"]
    assert store.decisions("nope") == []
    assert store.proposal(p.id) == replace(p, state=S.APPROVED)
    assert store.proposal(q.id) == replace(q, state=S.REJECTED)


def test_a_redelivered_decision_changes_nothing(store: SqlStore) -> None:
    p = make_proposal(1)
    first = make_decision(1, p.id, S.PROPOSED, S.STAGED)
    store.record_decision(first, replace(p, state=S.STAGED))
    store.record_decision(make_decision(2, p.id, S.STAGED, S.APPROVED), replace(p, state=S.APPROVED))
    # The same decision again (even altered) neither duplicates nor rewrites history, nor reverts the proposal.
    store.record_decision(replace(first, reason="again"), replace(p, state=S.STAGED))
    assert [d.id for d in store.decisions()] == ["dec-1", "dec-2"]
    assert store.decisions()[0] == first
    assert store.proposal(p.id) == replace(p, state=S.APPROVED)


def test_decisions_after_a_sequence_number_page_through_the_log_in_order(store: SqlStore) -> None:
    p = make_proposal(1)
    for n, (a, b) in enumerate([(S.PROPOSED, S.STAGED), (S.STAGED, S.APPROVED), (S.APPROVED, S.APPLIED)], 1):
        store.record_decision(make_decision(n, p.id, a, b, decided_at=at(10 - n)), replace(p, state=b))
    everything = store.decisions_after(0)
    assert [d.id for _, d in everything] == ["dec-1", "dec-2", "dec-3"]
    assert [d for _, d in everything] == store.decisions()
    seqs = [seq for seq, _ in everything]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 3
    assert [d.id for _, d in store.decisions_after(seqs[0], limit=1)] == ["dec-2"]
    assert store.decisions_after(seqs[-1]) == []


def test_finding_counts_are_per_detector(store: SqlStore) -> None:
    assert store.finding_counts() == {}
    findings = [make_finding(1), make_finding(2), make_finding(3, detector="intel.match")]
    store.save_batch(findings=findings)
    expected: dict[str, int] = {}
    for f in findings:
        expected[f.detector] = expected.get(f.detector, 0) + 1
    assert store.finding_counts() == expected


def test_a_decision_about_another_proposal_is_refused(store: SqlStore) -> None:
    with pytest.raises(ValueError, match="not proposal"):
        store.record_decision(make_decision(1, "prop-9", S.PROPOSED, S.STAGED), make_proposal(1))
    assert store.decisions() == []
    assert store.proposals() == []


# --- TMR versions ---


def test_tmr_versions_are_numbered_1_2_3(store: SqlStore) -> None:
    saved = [
        store.save_tmr_version(make_tmr_document(n), author="alice", comment=f"v{n}", created_at=at(n))
        for n in range(3)
    ]
    assert [v.version for v in saved] == [1, 2, 3]
    assert store.tmr_versions() == saved
    assert store.tmr_version(2) == saved[1]
    assert store.tmr_version(4) is None


def test_concurrent_tmr_versions_get_distinct_consecutive_numbers(store: SqlStore) -> None:
    def save(n: int) -> int:
        return store.save_tmr_version({"n": n}, author="w", comment="", created_at=at(n)).version

    with ThreadPoolExecutor(max_workers=4) as pool:
        numbers = sorted(pool.map(save, range(20)))
    assert numbers == list(range(1, 21))
    assert sorted(v.document["n"] for v in store.tmr_versions()) == list(range(20))


# --- queries ---


def test_flows_filter_by_time_and_vmn_oldest_first(store: SqlStore) -> None:
    flows = [
        make_flow(5, src_vmn="web-1", dst_vmn=None),
        make_flow(1, src_vmn="db-1", dst_vmn="web-1"),
        make_flow(3, src_vmn="db-1", dst_vmn=None),
        make_flow(2, src_vmn=None, dst_vmn=None),
        make_flow(4, src_vmn="web-2", dst_vmn="db-1"),
    ]
    store.save_batch(flows=flows)
    by_id = {f.id: f for f in flows}

    def ids(found: list[Flow]) -> list[str]:
        return [f.id for f in found]

    assert ids(store.flows()) == ["flow-1", "flow-2", "flow-3", "flow-4", "flow-5"]
    assert ids(store.flows(since=at(2))) == ["flow-2", "flow-3", "flow-4", "flow-5"]  # since is inclusive
    assert ids(store.flows(until=at(3))) == ["flow-1", "flow-2"]  # until is exclusive
    assert ids(store.flows(since=at(2), until=at(4))) == ["flow-2", "flow-3"]
    assert ids(store.flows(since=at(2).astimezone(CET), until=at(4).astimezone(CET))) == ["flow-2", "flow-3"]
    assert ids(store.flows(vmn="web-1")) == ["flow-1", "flow-5"]  # either side
    assert ids(store.flows(vmn="db-1", since=at(2))) == ["flow-3", "flow-4"]
    assert ids(store.flows(vmn="nobody")) == []
    assert ids(store.flows(limit=2)) == ["flow-1", "flow-2"]
    assert ids(store.flows(vmn="db-1", limit=1)) == ["flow-1"]
    assert store.flows(since=at(5)) == [by_id["flow-5"]]


def test_findings_filter_by_time(store: SqlStore) -> None:
    findings = [make_finding(3), make_finding(1), make_finding(2)]  # observed at 33, 31, 32 s
    store.save_batch(findings=findings)
    assert [f.id for f in store.findings()] == ["find-1", "find-2", "find-3"]
    assert [f.id for f in store.findings(since=at(32))] == ["find-2", "find-3"]


# --- atomicity ---


def test_a_batch_the_database_rejects_stores_nothing(store: SqlStore) -> None:
    store.save_batch(flows=[make_flow(0)], proposals=[make_proposal(0)])
    broken = make_finding(2)
    object.__setattr__(broken, "detector", None)  # NOT NULL: the database refuses it after the flows went in
    with pytest.raises(IntegrityError):
        store.save_batch(
            flows=[make_flow(1), make_flow(2)],
            findings=[make_finding(1), broken],
            proposals=[make_proposal(0, state=S.STAGED), make_proposal(3)],
        )
    assert store.flows() == [make_flow(0)]
    assert store.findings() == []
    assert store.proposals() == [make_proposal(0)]


def test_a_decision_the_database_rejects_leaves_the_proposal_as_it_was(store: SqlStore) -> None:
    p = make_proposal(1)
    store.save_batch(proposals=[p])
    broken = make_decision(1, p.id, S.PROPOSED, S.APPROVED)
    object.__setattr__(broken, "actor", None)
    with pytest.raises(IntegrityError):
        store.record_decision(broken, replace(p, state=S.APPROVED))
    assert store.decisions() == []
    assert store.proposal(p.id) == p


# --- opening ---


def test_an_in_memory_sqlite_store_works() -> None:
    with open_store("sqlite://") as s:
        s.save_batch(flows=[make_flow(1)])
        assert s.flows() == [make_flow(1)]


def test_sqlite_uses_wal_and_creates_missing_directories(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "store.db"
    with open_store(f"sqlite:///{path}") as s:
        s.save_batch(flows=[make_flow(1)])
    assert path.exists()
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()


def test_an_unreachable_postgres_is_a_backend_error() -> None:
    with pytest.raises(BackendUnavailableError, match="not reachable"):
        open_store("postgresql://postgres@127.0.0.1:1/test?connect_timeout=2")


def test_an_unsupported_database_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported database"):
        SqlStore("mysql://root@localhost/test")


# --- outcomes and trust history ---


def make_outcome(n: int, proposal_id: str = "prop-1", **overrides: object) -> Outcome:
    values: dict[str, object] = {
        "id": f"out-{n}",
        "proposal_id": proposal_id,
        "recommender": "deny_scanner",
        "kind": OutcomeKind.HITS,
        "observed_at": at(200 + n),
        "value": 42.0 + n,
        "weight": 1.0,
        "actor": "vmshadow",
        "detail": f"TMR tmr-{n} ✓",
    }
    values.update(overrides)
    return Outcome(**values)  # type: ignore[arg-type]


def make_snapshot(n: int, recommender: str = "deny_scanner", **overrides: object) -> TrustSnapshot:
    values: dict[str, object] = {
        "recommender": recommender,
        "trust": 0.1 + n / 10 + 1 / 3,
        "alpha": 1.0 + n * 0.7071067811865476,
        "beta": 1.5,
        "at": at(1000 + n),
        "outcomes": n,
    }
    values.update(overrides)
    return TrustSnapshot(**values)  # type: ignore[arg-type]


def test_outcomes_round_trip_exactly_in_recording_order(store: SqlStore) -> None:
    store.save_batch(proposals=[make_proposal(1), make_proposal(2, recommender="allow_least")])
    outcomes = [
        make_outcome(3),
        make_outcome(
            1, "prop-2", recommender="allow_least", kind=OutcomeKind.FALSE_POSITIVE, value=0.0, weight=2.0,
            actor="alice", detail="",
        ),
        make_outcome(2, kind=OutcomeKind.ROLLED_BACK, observed_at=at(5).astimezone(CET)),
    ]  # fmt: skip
    assert [store.record_outcome(o) for o in outcomes] == [True, True, True]
    got = store.outcomes()
    assert got == [*outcomes[:2], replace(outcomes[2], observed_at=at(5))]
    assert all(o.observed_at.tzinfo is UTC for o in got)


def test_outcomes_filter_by_recommender_and_proposal(store: SqlStore) -> None:
    store.save_batch(proposals=[make_proposal(1), make_proposal(2, recommender="allow_least")])
    store.record_outcome(make_outcome(1))
    store.record_outcome(make_outcome(2, "prop-2", recommender="allow_least"))
    store.record_outcome(make_outcome(3, kind=OutcomeKind.EXPIRED))
    assert [o.id for o in store.outcomes(recommender="deny_scanner")] == ["out-1", "out-3"]
    assert [o.id for o in store.outcomes(proposal_id="prop-2")] == ["out-2"]
    assert [o.id for o in store.outcomes(recommender="deny_scanner", proposal_id="prop-2")] == []
    assert store.outcomes(recommender="nobody") == []


def test_outcomes_after_a_sequence_number_page_in_recording_order(store: SqlStore) -> None:
    store.save_batch(proposals=[make_proposal(1)])
    for n in (3, 1, 2):
        store.record_outcome(make_outcome(n))
    everything = store.outcomes_after(0)
    assert [o.id for _, o in everything] == ["out-3", "out-1", "out-2"]
    first_seq = everything[0][0]
    assert [o.id for _, o in store.outcomes_after(first_seq)] == ["out-1", "out-2"]
    assert [o.id for _, o in store.outcomes_after(first_seq, limit=1)] == ["out-1"]
    assert store.outcomes_after(everything[-1][0]) == []


def test_a_recorded_outcome_is_never_duplicated_nor_rewritten(store: SqlStore) -> None:
    store.save_batch(proposals=[make_proposal(1)])
    first = make_outcome(1)
    assert store.record_outcome(first) is True
    assert store.record_outcome(replace(first, value=999.0, detail="again")) is False
    assert store.outcomes() == [first]


def test_an_outcome_about_an_unknown_proposal_is_refused(store: SqlStore) -> None:
    with pytest.raises(IntegrityError):
        store.record_outcome(make_outcome(1, "no-such-proposal"))
    assert store.outcomes() == []


def test_an_outcome_with_a_naive_time_is_refused(store: SqlStore) -> None:
    store.save_batch(proposals=[make_proposal(1)])
    broken = make_outcome(1)
    object.__setattr__(broken, "observed_at", datetime(2025, 3, 1, 12, 0))
    with pytest.raises(ValueError, match="naive"):
        store.record_outcome(broken)
    assert store.outcomes() == []


def test_trust_history_round_trips_oldest_first_and_filters(store: SqlStore) -> None:
    snapshots = [
        make_snapshot(2),
        make_snapshot(1, "allow_least"),
        make_snapshot(0, at=at(1000).astimezone(CET)),
        make_snapshot(3, "allow_least", trust=0.5, alpha=1.0, beta=1.0, outcomes=0),
    ]
    for s in snapshots:
        store.record_trust(s)
    got = store.trust_history()
    assert [(s.recommender, s.at) for s in got] == [
        ("deny_scanner", at(1000)),
        ("allow_least", at(1001)),
        ("deny_scanner", at(1002)),
        ("allow_least", at(1003)),
    ]
    assert got[0] == replace(snapshots[2], at=at(1000))
    assert got[1:] == [snapshots[1], snapshots[0], snapshots[3]]
    assert all(s.at.tzinfo is UTC for s in got)
    assert store.trust_history("deny_scanner") == [got[0], got[2]]
    assert store.trust_history("nobody") == []


def test_a_second_snapshot_for_the_same_recommender_and_moment_is_ignored(store: SqlStore) -> None:
    store.record_trust(make_snapshot(1))
    store.record_trust(make_snapshot(1, trust=0.99))
    store.record_trust(make_snapshot(1, "allow_least"))  # another recommender at the same moment is its own
    assert store.trust_history() == [make_snapshot(1), make_snapshot(1, "allow_least")]


def test_a_database_at_the_initial_schema_is_upgraded_with_its_data(fresh_url: FreshUrl) -> None:
    url = fresh_url()
    engine = make_engine(url)
    try:
        upgrade(engine, "0001")
        with engine.connect() as conn:
            assert not {"outcomes", "trust_history"} & set(inspect(conn).get_table_names())
    finally:
        engine.dispose()
    with SqlStore(url) as old:
        old.save_batch(proposals=[make_proposal(1)])
    with open_store(url) as upgraded:
        assert upgraded.proposals() == [make_proposal(1)]
        assert upgraded.record_outcome(make_outcome(1)) is True
        assert upgraded.outcomes() == [make_outcome(1)]


# --- indicators ---


def _indicator(value: str, **overrides: object) -> Indicator:
    values: dict[str, object] = {"type": IndicatorType.IPV4, "value": value, "source": "feed-a", "confidence": 80}
    values.update(overrides)
    return Indicator(**values)  # type: ignore[arg-type]


def test_indicators_round_trip_upsert_and_validity(store: SqlStore) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    full = _indicator(
        "198.51.100.7",
        valid_from=now - timedelta(days=1),
        valid_until=now + timedelta(days=1),
        labels=("c2",),
        kill_chain_phases=("mitre-attack:command-and-control",),
        external_id="indicator--1",
    )
    assert store.save_indicators([full, _indicator("198.51.100.8", revoked=True)], at=now) == 2
    assert store.indicators(source="feed-a")[0] == full
    assert [i.value for i in store.indicators(at=now)] == ["198.51.100.7"], "revoked ones are never valid"
    assert store.indicators(at=now + timedelta(days=2)) == []
    # the same (type, value, source) again updates the row instead of adding one
    store.save_indicators([replace(full, confidence=20)], at=now)
    assert [i.confidence for i in store.indicators(source="feed-a") if i.value == full.value] == [20]
    assert len(store.indicators()) == 2


def test_expire_removes_revoked_and_past_indicators_only(store: SqlStore) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    store.save_indicators(
        [
            _indicator("198.51.100.1", valid_until=now - timedelta(seconds=1)),
            _indicator("198.51.100.2", revoked=True),
            _indicator("198.51.100.3", valid_until=now + timedelta(hours=1)),
            _indicator("198.51.100.4"),
        ],
        at=now,
    )
    assert store.expire_indicators(now) == 2
    assert sorted(i.value for i in store.indicators()) == ["198.51.100.3", "198.51.100.4"]


def test_a_bad_indicator_stores_nothing(store: SqlStore) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    naive = _indicator("198.51.100.9", valid_until=datetime(2026, 2, 1))
    with pytest.raises(ValueError, match="naive"):
        store.save_indicators([_indicator("198.51.100.10"), naive], at=now)
    assert store.indicators() == []


def test_recent_proposals_and_outcomes_of_one_kind_are_read_without_the_rest(store: SqlStore) -> None:
    store.save_batch(proposals=[make_proposal(n, created_at=at(10 * n)) for n in (1, 2, 3)])
    assert [p.id for p in store.proposals(since=at(10))] == ["prop-2", "prop-3"], "created after `since`"
    assert [p.id for p in store.proposals(since=at(5))] == ["prop-1", "prop-2", "prop-3"]
    assert [p.id for p in store.proposals(state=ProposalState.PROPOSED, since=at(25))] == ["prop-3"]
    fp = OutcomeKind.FALSE_POSITIVE
    for outcome in (
        make_outcome(1, observed_at=at(100), kind=fp),
        make_outcome(2, observed_at=at(200), kind=fp),
        make_outcome(3, observed_at=at(300)),
        make_outcome(4, "prop-2", observed_at=at(400), kind=fp),
    ):
        store.record_outcome(outcome)
    assert [o.id for o in store.outcomes(kind=fp, since=at(100))] == ["out-2", "out-4"]
    assert [o.id for o in store.outcomes(kind=fp)] == ["out-1", "out-2", "out-4"]
    assert [o.id for o in store.outcomes(since=at(250))] == ["out-3", "out-4"]
    assert [o.id for o in store.outcomes(kind=fp, proposal_id="prop-2")] == ["out-4"]
