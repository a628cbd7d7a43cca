"""`vmshadow` as a user runs it: a real process, real captures, exit codes, stdout JSON and stderr messages."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.datadir import REPO_ROOT, shared_data

EXAMPLE_RULES = REPO_ROOT / "examples" / "tmrs.yaml"


def vmshadow(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vmshadow", *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return {t: conn.execute(f"select count(*) from {t}").fetchone()[0] for t in ("flows", "findings", "proposals")}


def test_analyze_json_follows_the_documented_schema() -> None:
    result = vmshadow("analyze", shared_data() / "ndpi/pcap/synscan.pcap", "--rules", EXAMPLE_RULES, "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert set(out) == {"flows", "findings", "proposals"}
    assert out["flows"] == 1994  # flows in nDPI's expected output for this capture (ndpi/SOURCE.md)
    (deny,) = [p for p in out["proposals"] if p["kind"] == "add_deny"]
    assert {"id", "kind", "state", "rule", "recommender", "score", "evidence", "impact"} <= set(deny)
    assert deny["state"] == "proposed"
    assert deny["rule"]["src"] == "network:172.16.0.8/32"
    assert deny["rule"]["action"] == "deny"
    assert set(deny["rule"]) >= {"src", "dst", "protocol", "ports", "action", "priority", "expires_at"}
    assert set(deny["evidence"]["finding_ids"]) <= {f["id"] for f in out["findings"]}
    assert deny["impact"]["newly_blocked_flows"] > 0


def test_human_summary_names_the_proposal() -> None:
    result = vmshadow("analyze", shared_data() / "zeek/traces/ssh/sshguess.pcap", "--rules", EXAMPLE_RULES)
    assert result.returncode == 0, result.stderr
    assert "add_deny" in result.stdout
    assert "192.168.56.1" in result.stdout


def test_db_is_filled_once_and_rerun_merges(tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    capture = shared_data() / "zeek/traces/ssh/sshguess.pcap"
    assert vmshadow("analyze", capture, "--rules", EXAMPLE_RULES, "--db", db, "--json").returncode == 0
    first = counts(db)
    assert first["flows"] == 11
    assert first["proposals"] >= 1
    assert vmshadow("analyze", capture, "--rules", EXAMPLE_RULES, "--db", db, "--json").returncode == 0
    assert counts(db) == first, "a re-run stores nothing twice"


def test_bad_capture_exits_2_names_the_file_and_stores_nothing(tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    good = shared_data() / "zeek/traces/ssh/sshguess.pcap"
    assert vmshadow("analyze", good, "--rules", EXAMPLE_RULES, "--db", db).returncode == 0
    before = counts(db)
    whole = (shared_data() / "ndpi/pcap/synscan.pcap").read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(whole[:5000])
    result = vmshadow("analyze", good, cut, "--rules", EXAMPLE_RULES, "--db", db, "--json")
    assert result.returncode == 2
    assert "cut.pcap: truncated" in result.stderr
    assert result.stdout == ""
    assert counts(db) == before


def test_bad_rules_exit_2_with_every_location(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("tmrs:\n  - id: a\n    priority: x\n    src: any\n    dst: any\n    action: maybe\n")
    result = vmshadow("analyze", shared_data() / "ndpi/pcap/dns.pcap", "--rules", rules)
    assert result.returncode == 2
    assert "rules.yaml:3" in result.stderr
    assert "rules.yaml:6" in result.stderr


@pytest.mark.parametrize(("content", "code"), [("defaults: {action: deny}\n", 0), ("tmrs: 3\n", 2)])
def test_tmrs_check(tmp_path: Path, content: str, code: int) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(content)
    result = vmshadow("tmrs", "check", rules)
    assert result.returncode == code, result.stderr
    assert ("ok" in result.stdout) == (code == 0)


def test_tmrs_check_names_a_tmr_that_repeats_an_earlier_one(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    tmr = "    src: any\n    dst: 198.18.0.5\n    protocol: tcp\n    ports: [22]\n"
    rules.write_text(
        f"tmrs:\n  - id: deny-ssh\n    priority: 10\n{tmr}    action: deny\n"
        f"  - id: allow-ssh\n    priority: 20\n{tmr}    action: allow\n"
    )
    result = vmshadow("tmrs", "check", rules)
    assert result.returncode == 0, result.stderr
    assert "TMR allow-ssh never matches: deny-ssh comes first" in " ".join(result.stdout.split())


def test_example_rules_check_clean() -> None:
    result = vmshadow("tmrs", "check", EXAMPLE_RULES)
    assert result.returncode == 0, result.stderr


def test_intel_list_and_vmn_map_shape_the_proposals(tmp_path: Path) -> None:
    listed = tmp_path / "bad.txt"
    listed.write_text("# scanme, for this test\n64.13.134.52\n")
    vmns = tmp_path / "vmns.yaml"
    vmns.write_text("vmns:\n  scanner-vm: {addresses: [172.16.0.8]}\n")
    capture = shared_data() / "ndpi/pcap/synscan.pcap"
    result = vmshadow("analyze", capture, "--rules", EXAMPLE_RULES, "--vmns", vmns, "--intel", listed, "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    intel = [f for f in out["findings"] if f["kind"] == "intel_match"]
    assert intel
    assert {f["indicator"] for f in intel} == {"64.13.134.52"}
    assert {f["src_vmn"] for f in out["findings"]} == {"scanner-vm"}
    rules = {(p["rule"]["src"], p["rule"]["dst"]) for p in out["proposals"] if p["kind"] == "add_deny"}
    assert ("vmn:scanner-vm", "network:64.13.134.52/32") in rules


def test_bad_intel_list_names_the_line(tmp_path: Path) -> None:
    listed = tmp_path / "bad.txt"
    listed.write_text("198.18.0.1\nnot an indicator!\n")
    result = vmshadow("analyze", shared_data() / "ndpi/pcap/dns.pcap", "--rules", EXAMPLE_RULES, "--intel", listed)
    assert result.returncode == 2
    assert "bad.txt:2" in result.stderr
