"""The human gate end to end: a deny proposal is listed, refused where the lifecycle forbids, approved, applied by
the TM on a real bridge (the scanner's traffic stops), and every move is audited."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from tests.factories import make_finding, make_proposal
from tests.integration import netlab
from vmshadow.adapters.sql import open_store
from vmshadow.cli.main import app
from vmshadow.config.tmr_file import load_tmr_file
from vmshadow.domain.flow import TCP
from vmshadow.domain.proposal import ProposalKind
from vmshadow.refinement.recommender import RecommendContext
from vmshadow.refinement.scoped_deny import ScopedDenyRecommender

SERVICE = netlab.PORTS[0]
BLOCKED_S = 0.3


def vmshadow(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def net() -> Iterator[netlab.Lab]:
    with netlab.lab(vmns=2) as lab:
        yield lab


def seed(net: netlab.Lab, tmp_path: Path, db: Path, proposed_ago: timedelta = timedelta(0)) -> tuple[str, list[str]]:
    """TMRs in force (allow all) and a scan proposal from vm1 against vm2 in the store (made `proposed_ago`); its
    id."""
    vm1, vm2 = net.vmns
    rules = tmp_path / "tmrs.yaml"
    rules.write_text(
        f"vmns:\n  vm1: {{addresses: [{vm1.address}]}}\n  vm2: {{addresses: [{vm2.address}]}}\n"
        "tmrs:\n  - {id: allow-all, priority: 100, src: any, dst: any, action: allow}\n"
    )
    tm = ["--db", str(db), "--bridge", net.bridge, "--netns", net.host_ns]
    assert vmshadow("tmrs", "apply", rules, *tm).exit_code == 0
    finding = make_finding(
        src_ip=ipaddress.ip_address(vm1.address), src_vmn="vm1", dst_ips=(ipaddress.ip_address(vm2.address),),
        dst_ports=tuple(range(1, 100)), protocol=TCP, score=0.9,
    )  # fmt: skip
    (proposal,) = ScopedDenyRecommender().propose(
        [finding], load_tmr_file(rules), RecommendContext(now=datetime.now(UTC) - proposed_ago)
    )
    store = open_store(f"sqlite:///{db}")
    store.save_batch(proposals=[proposal])
    store.close()
    return proposal.id, tm


def test_approve_then_apply_blocks_the_scanner_and_is_audited(net: netlab.Lab, tmp_path: Path) -> None:
    vm1, vm2 = net.vmns
    db = tmp_path / "v.db"
    # proposed 2 hours ago: its 1-hour temporary deny must count from the apply, not from the proposal
    pid, tm = seed(net, tmp_path, db, proposed_ago=timedelta(hours=2))
    try:
        assert vm1.connect(vm2.address, SERVICE), "before: vm1 reaches vm2"
        listed = vmshadow("proposals", "list", "--db", db, "--json")
        assert [p["id"] for p in json.loads(listed.stdout)] == [pid]

        early = vmshadow("proposals", "apply", pid, *tm)
        assert early.exit_code == 2
        assert "cannot go from proposed to applied" in early.stderr
        assert vm1.connect(vm2.address, SERVICE), "nothing was enforced by the refused apply"

        assert vmshadow("proposals", "approve", pid, "--db", db, "--actor", "alice").exit_code == 0
        before_apply = datetime.now(UTC)
        applied = vmshadow("proposals", "apply", pid, *tm, "--actor", "alice", "--json")
        assert applied.exit_code == 0, applied.stderr
        assert json.loads(applied.stdout)["applied"]["version"] == 2
        assert not vm1.connect(vm2.address, SERVICE, timeout=BLOCKED_S), "after: the scanner is blocked"
        expires = datetime.fromisoformat(
            json.loads(vmshadow("proposals", "show", pid, "--db", db, "--json").stdout)["rule"]["expires_at"]
        )
        assert before_apply + timedelta(hours=1) <= expires <= datetime.now(UTC) + timedelta(hours=1)
        assert vm2.connect(vm1.address, SERVICE), "the deny is scoped to the scanner's direction"

        shown = json.loads(vmshadow("proposals", "show", pid, "--db", db, "--json").stdout)
        assert shown["state"] == "applied"
        assert [(d["from"], d["to"], d["actor"]) for d in shown["decisions"]] == [
            ("proposed", "approved", "alice"),
            ("approved", "applied", "alice"),
        ]
        history = json.loads(vmshadow("tmrs", "history", *tm, "--json").stdout)
        assert history["in_force"] == 2

        no_reason = vmshadow("proposals", "rollback", pid, *tm)
        assert no_reason.exit_code == 2
        assert "a rollback needs a reason" in no_reason.stderr
        assert not vm1.connect(vm2.address, SERVICE, timeout=BLOCKED_S), "a refused rollback changes nothing"
        rolled = vmshadow("proposals", "rollback", pid, *tm, "--reason", "was a backup", "--actor", "bob", "--json")
        assert rolled.exit_code == 0, rolled.stderr
        assert json.loads(rolled.stdout)["applied"]["version"] == 3
        assert vm1.connect(vm2.address, SERVICE), "after the rollback vm1 reaches vm2 again"
        shown = json.loads(vmshadow("proposals", "show", pid, "--db", db, "--json").stdout)
        assert (shown["state"], shown["decisions"][-1]["actor"]) == ("rolled_back", "bob")
    finally:
        netlab.run("ip", "netns", "exec", net.host_ns, "nft", "delete", "table", "bridge", "vmshadow", check=False)


def test_illegal_moves_are_refused_and_change_nothing(net: netlab.Lab, tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    pid, _ = seed(net, tmp_path, db)
    try:
        no_reason = vmshadow("proposals", "reject", pid, "--db", db)
        assert no_reason.exit_code == 2
        assert "a rejection needs a reason" in no_reason.stderr
        assert vmshadow("proposals", "reject", pid, "--db", db, "--reason", "lab noise").exit_code == 0
        again = vmshadow("proposals", "approve", pid, "--db", db)
        assert again.exit_code == 2
        assert "cannot go from rejected to approved" in again.stderr
        back = vmshadow("proposals", "rollback", pid, "--db", db, "--bridge", net.bridge, "--netns", net.host_ns,
                        "--reason", "x")  # fmt: skip
        assert back.exit_code == 2
        assert "cannot go from rejected to rolled_back" in back.stderr
        shown = json.loads(vmshadow("proposals", "show", pid, "--db", db, "--json").stdout)
        assert shown["state"] == "rejected"
        assert len(shown["decisions"]) == 1
        assert vmshadow("proposals", "show", "prop-nope", "--db", db).exit_code == 2
    finally:
        netlab.run("ip", "netns", "exec", net.host_ns, "nft", "delete", "table", "bridge", "vmshadow", check=False)


def test_edit_changes_the_rule_and_keeps_before_and_after(net: netlab.Lab, tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    pid, _ = seed(net, tmp_path, db)
    try:
        edited = vmshadow("proposals", "edit", pid, "--db", db, "--ports", "22,80", "--priority", "5", "--json")
        assert edited.exit_code == 0, edited.stderr
        rule = json.loads(edited.stdout)["rule"]
        assert (rule["ports"], rule["priority"]) == (["22", "80"], 5)
        bad = vmshadow("proposals", "edit", pid, "--db", db, "--ports", "70000")
        assert bad.exit_code == 2
        shown = json.loads(vmshadow("proposals", "show", pid, "--db", db, "--json").stdout)
        (decision,) = shown["decisions"]
        assert decision["before"]["ports"] == []
        assert decision["after"]["ports"] == ["22", "80"]
    finally:
        netlab.run("ip", "netns", "exec", net.host_ns, "nft", "delete", "table", "bridge", "vmshadow", check=False)


def test_rolling_the_tmrs_back_takes_back_the_proposals_applied_since(net: netlab.Lab, tmp_path: Path) -> None:
    vm1, vm2 = net.vmns
    db = tmp_path / "v.db"
    pid, tm = seed(net, tmp_path, db)
    try:
        assert vmshadow("proposals", "approve", pid, "--db", db).exit_code == 0
        assert vmshadow("proposals", "apply", pid, *tm).exit_code == 0
        assert not vm1.connect(vm2.address, SERVICE, timeout=BLOCKED_S)
        back = vmshadow("tmrs", "rollback", "1", *tm, "--actor", "carol", "--json")
        assert back.exit_code == 0, back.stderr
        answer = json.loads(back.stdout)
        assert (answer["version"], answer["rolled_back_proposals"]) == (3, [pid])
        assert vm1.connect(vm2.address, SERVICE), "version 1 (allow all) is in force again"
        shown = json.loads(vmshadow("proposals", "show", pid, "--db", db, "--json").stdout)
        assert (shown["state"], shown["decisions"][-1]["actor"]) == ("rolled_back", "carol")
        again = json.loads(vmshadow("tmrs", "rollback", "1", *tm, "--json").stdout)
        assert again["rolled_back_proposals"] == [], "nothing left to take back"
    finally:
        netlab.run("ip", "netns", "exec", net.host_ns, "nft", "delete", "table", "bridge", "vmshadow", check=False)


def test_a_reprioritize_proposal_moves_the_tmr_in_force(net: netlab.Lab, tmp_path: Path) -> None:
    vm1, vm2 = net.vmns
    db = tmp_path / "v.db"
    rules = tmp_path / "tmrs.yaml"
    rules.write_text(
        f"vmns:\n  vm1: {{addresses: [{vm1.address}]}}\n  vm2: {{addresses: [{vm2.address}]}}\n"
        "tmrs:\n  - {id: allow-all, priority: 100, src: any, dst: any, action: allow}\n"
        f"  - {{id: deny-service, priority: 200, src: vm1, dst: vm2, protocol: tcp, ports: [{SERVICE}],"
        " action: deny}\n"
    )
    tm = ["--db", str(db), "--bridge", net.bridge, "--netns", net.host_ns]
    try:
        assert vmshadow("tmrs", "apply", rules, *tm).exit_code == 0
        assert vm1.connect(vm2.address, SERVICE), "the deny is shadowed by the earlier allow"
        shadowed = next(t for t in load_tmr_file(rules).tmrs if t.id == "deny-service")
        moved = make_proposal(
            1, kind=ProposalKind.REPRIORITIZE, rule=replace(shadowed, priority=50), summary="move deny-service"
        )
        stray = make_proposal(2, kind=ProposalKind.REPRIORITIZE, rule=replace(shadowed, id="nope", priority=50))
        with open_store(f"sqlite:///{db}") as store:
            store.save_batch(proposals=[moved, stray])
        for pid in (moved.id, stray.id):
            assert vmshadow("proposals", "approve", pid, "--db", db).exit_code == 0
        missing = vmshadow("proposals", "apply", stray.id, *tm)
        assert missing.exit_code == 2
        assert "TMR nope is not in force" in missing.stderr
        applied = vmshadow("proposals", "apply", moved.id, *tm, "--json")
        assert applied.exit_code == 0, applied.stderr
        assert not vm1.connect(vm2.address, SERVICE, timeout=BLOCKED_S), "moved ahead of the allow, the deny decides"
        in_force = json.loads(vmshadow("tmrs", "history", *tm, "--json").stdout)
        assert in_force["in_force"] == 2
    finally:
        netlab.run("ip", "netns", "exec", net.host_ns, "nft", "delete", "table", "bridge", "vmshadow", check=False)


def _staged_hits(db: Path, tm: list[str], pid: str) -> tuple[str, dict[str, object]]:
    shown = vmshadow("proposals", "show", pid, *tm, "--json")
    assert shown.exit_code == 0, shown.stderr
    data = json.loads(shown.stdout)
    return data["state"], data["staged_hits"]


def _table(net: netlab.Lab) -> str:
    return netlab.run("ip", "netns", "exec", net.host_ns, "nft", "-t", "list", "table", "bridge", "vmshadow").stdout


def test_a_staged_deny_counts_without_blocking_then_blocks_once_applied(net: netlab.Lab, tmp_path: Path) -> None:
    vm1, vm2 = net.vmns
    db = tmp_path / "v.db"
    pid, tm = seed(net, tmp_path, db)
    try:
        assert _staged_hits(db, tm, pid) == ("proposed", None), "never staged: no staged hits"
        staged = vmshadow("proposals", "stage", pid, *tm, "--actor", "alice", "--json")
        assert staged.exit_code == 0, staged.stderr
        answer = json.loads(staged.stdout)["applied"]
        assert (answer["version"], answer["staged"]) == (2, 1)
        assert "chain staged_1" in _table(net)
        assert _staged_hits(db, tm, pid) == ("staged", {"packets": 0, "counting": True, "error": None})

        assert vm1.connect(vm2.address, SERVICE), "a staged deny blocks nothing"
        _, hits = _staged_hits(db, tm, pid)
        first = int(hits["packets"])  # type: ignore[call-overload]
        assert first > 0, "the staged rule counted vm1's packets to vm2"
        assert vm2.connect(vm1.address, SERVICE), "the other direction is not the rule's"
        assert _staged_hits(db, tm, pid)[1]["packets"] == first, "vm1's answers to vm2 are replies: not counted"

        refused = vmshadow("proposals", "apply", pid, *tm)
        assert refused.exit_code == 2
        assert "cannot go from staged to applied" in refused.stderr
        assert vmshadow("proposals", "approve", pid, "--db", db, "--actor", "alice").exit_code == 0
        # another version (the same TMRs applied again) keeps the staged rule and carries its count over
        assert vmshadow("tmrs", "apply", tmp_path / "tmrs.yaml", *tm).exit_code == 0
        assert vm1.connect(vm2.address, SERVICE), "approved but not applied: still counting only"
        state, hits = _staged_hits(db, tm, pid)
        later = int(hits["packets"])  # type: ignore[call-overload]
        assert (state, hits["counting"]) == ("approved", True)
        assert later > first, "the count went on across versions"

        applied = vmshadow("proposals", "apply", pid, *tm, "--actor", "alice", "--json")
        assert applied.exit_code == 0, applied.stderr
        assert json.loads(applied.stdout)["applied"]["staged"] == 0
        assert not vm1.connect(vm2.address, SERVICE, timeout=BLOCKED_S), "applied: the deny blocks"
        assert "staged" not in _table(net), "the counting rule went out with the apply"
        state, hits = _staged_hits(db, tm, pid)
        assert state == "applied"
        assert hits is not None
        assert hits["counting"] is False
        assert int(hits["packets"]) >= later  # type: ignore[call-overload]
        shown = json.loads(vmshadow("proposals", "show", pid, "--db", db, "--json").stdout)
        assert shown["evidence"]["measured"]["staged_hits"] == hits["packets"]
        reason = shown["decisions"][-1]["reason"]
        assert reason.startswith(f"version 4; {hits['packets']} staged hits; expires "), reason  # a temporary deny
    finally:
        netlab.run("ip", "netns", "exec", net.host_ns, "nft", "delete", "table", "bridge", "vmshadow", check=False)


def test_rejecting_a_staged_proposal_takes_its_counting_rule_out(net: netlab.Lab, tmp_path: Path) -> None:
    vm1, vm2 = net.vmns
    db = tmp_path / "v.db"
    pid, tm = seed(net, tmp_path, db)
    alert = make_proposal(5, kind=ProposalKind.ALERT, rule=None, summary="alert only")
    with open_store(f"sqlite:///{db}") as store:
        store.save_batch(proposals=[alert])
    try:
        refused = vmshadow("proposals", "stage", alert.id, *tm)
        assert refused.exit_code == 2
        assert "cannot be staged" in refused.stderr
        assert vmshadow("proposals", "stage", pid, *tm).exit_code == 0
        assert vm1.connect(vm2.address, SERVICE)
        no_reason = vmshadow("proposals", "reject", pid, *tm)
        assert no_reason.exit_code == 2, "a rejection needs a reason"
        assert "chain staged_1" in _table(net), "a refused rejection leaves the rule counting"
        rejected = vmshadow("proposals", "reject", pid, *tm, "--reason", "lab noise", "--json")
        assert rejected.exit_code == 0, rejected.stderr
        assert "staged" not in _table(net)
        state, hits = _staged_hits(db, tm, pid)
        assert state == "rejected"
        assert hits is not None
        assert hits["counting"] is False
        assert int(hits["packets"]) > 0  # type: ignore[call-overload]
        again = vmshadow("proposals", "stage", pid, *tm)
        assert again.exit_code == 2
        assert "cannot go from rejected to staged" in again.stderr
        history = json.loads(vmshadow("tmrs", "history", *tm, "--json").stdout)
        assert history["in_force"] == 3, "stage and unstage were one version each; refusals made none"
    finally:
        netlab.run("ip", "netns", "exec", net.host_ns, "nft", "delete", "table", "bridge", "vmshadow", check=False)
