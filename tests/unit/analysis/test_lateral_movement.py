"""Lateral movement: after its learning window, a VMN's new (peer, port) uses and new administrative ports are
found; what it used while learning, ordinary outside traffic and servers' replies are not."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from typing import Any

import pytest

from tests.factories import at, make_flow
from vmshadow.analysis.hunting.lateral_movement import LateralMovementDetector, LateralMovementSettings
from vmshadow.domain.finding import Finding, FindingKind, Severity
from vmshadow.domain.flow import UDP, Flow

WEB = ipaddress.ip_address("198.18.1.10")
DB = ipaddress.ip_address("198.18.1.20")
RESOLVER = ipaddress.ip_address("198.18.1.1")
OUTSIDE = ipaddress.ip_address("192.0.2.80")
DAY = 86_400
counter = iter(range(10**9))


def run(detector: LateralMovementDetector, flows: Iterable[Flow]) -> list[Finding]:
    return [f for flow in flows for f in detector.observe(flow)]


def connect(at_s: float, dst: Any, port: int, **overrides: Any) -> Flow:
    n = next(counter)
    values: dict[str, Any] = {"src_ip": WEB, "dst_ip": dst, "dst_port": port, "first_seen_at": at(at_s),
                              "last_seen_at": at(at_s + 1), "src_port": 40000 + n % 20000}  # fmt: skip
    values.update(overrides)
    return make_flow(n, **values)


def learned_day() -> list[Flow]:
    """A web VMN's day: its database (5432), its resolver (53/udp), an admin SSHing out to a jump host."""
    flows = []
    for i in range(48):
        t = i * 1800
        flows += [connect(t, DB, 5432, dst_vmn="db-1"), connect(t + 1, RESOLVER, 53, protocol=UDP),
                  connect(t + 2, OUTSIDE, 443)]  # fmt: skip
    flows.append(connect(3600, OUTSIDE, 22))
    return flows


def test_a_new_admin_port_on_a_peer_after_learning_is_found() -> None:
    found = run(LateralMovementDetector(), [*learned_day(), connect(DAY + 60, DB, 22, dst_vmn="db-1")])
    assert len(found) == 1
    f = found[0]
    assert f.kind is FindingKind.LATERAL_MOVEMENT
    assert f.attack_technique == "T1021.004"
    assert (f.dst_ips, f.dst_ports) == ((DB,), (22,))
    assert f.score == 0.7
    assert f.severity is Severity.HIGH
    assert f.measured["new_uses"] == 1
    assert f.measured["new_admin_uses"] == 1


def test_what_was_used_while_learning_stays_quiet() -> None:
    later = [connect(DAY + 60 * i, DB, 5432, dst_vmn="db-1") for i in range(10)]
    later += [connect(DAY + 5, RESOLVER, 53, protocol=UDP), connect(DAY + 7, OUTSIDE, 22), connect(DAY + 9, OUTSIDE,
              443)]  # fmt: skip
    assert run(LateralMovementDetector(), learned_day() + later) == []


def test_ordinary_ports_outside_are_not_lateral_movement() -> None:
    new_site = [connect(DAY + i, ipaddress.ip_address(f"192.0.2.{100 + i}"), 443) for i in range(20)]
    assert run(LateralMovementDetector(), learned_day() + new_site) == []


def test_a_new_peer_on_an_ordinary_port_and_an_admin_port_outside_score_lower() -> None:
    peer = run(LateralMovementDetector(), [*learned_day(), connect(DAY + 60, ipaddress.ip_address("10.1.2.3"), 8080)])
    admin = run(LateralMovementDetector(), [*learned_day(), connect(DAY + 60, ipaddress.ip_address("192.0.2.9"), 3389)])
    assert [f.score for f in peer] == [0.4]
    assert [(f.score, f.attack_technique) for f in admin] == [(0.5, "T1021.001")]


def test_nothing_is_raised_while_learning() -> None:
    early = [connect(600, DB, 445, dst_vmn="db-1"), connect(700, ipaddress.ip_address("198.18.1.30"), 3389)]
    assert run(LateralMovementDetector(), learned_day()[:10] + early) == []


def test_learning_lasts_until_enough_flows_were_seen() -> None:
    sparse = [connect(0, DB, 5432), connect(DAY + 10, DB, 22)]
    assert run(LateralMovementDetector(), sparse) == [], "two flows are not a profile"


def test_an_episode_grows_and_each_new_use_is_reported_once() -> None:
    sweep = [connect(DAY + 60 + i, ipaddress.ip_address(f"198.18.2.{i}"), 445) for i in range(20)]
    repeat = [connect(DAY + 200, ipaddress.ip_address("198.18.2.0"), 445)]
    found = run(LateralMovementDetector(), learned_day() + sweep + repeat)
    assert [f.measured["new_uses"] for f in found] == [1, 4, 16]
    assert [f.attack_technique for f in found] == ["T1021.002"] * 3
    assert found[-1].score == pytest.approx(0.9)
    assert len(found[-1].dst_ips) == 16


def test_servers_replies_and_multicast_are_skipped() -> None:
    odd = [connect(DAY + 1, DB, 50000, src_port=22), connect(DAY + 2, ipaddress.ip_address("239.255.255.250"), 1900,
           protocol=UDP)]  # fmt: skip
    assert run(LateralMovementDetector(), learned_day() + odd) == []


def test_profiles_are_per_vmn() -> None:
    other = [connect(DAY + 60, DB, 22, src_ip=ipaddress.ip_address("198.18.1.11"), src_vmn="web-2")]
    assert run(LateralMovementDetector(), learned_day() + other) == [], "web-2 has not learned yet"


def test_snapshot_is_plain_json_and_continues_exactly() -> None:
    sweep = [connect(DAY + 60 + i, ipaddress.ip_address(f"198.18.2.{i}"), 445) for i in range(20)]
    flows = learned_day() + sweep
    whole = LateralMovementDetector()
    run(whole, flows[:120])
    expected = run(whole, flows[120:])
    assert expected
    first = LateralMovementDetector()
    run(first, flows[:120])
    second = LateralMovementDetector()
    second.restore(json.loads(json.dumps(first.snapshot())))
    assert run(second, flows[120:]) == expected


def test_state_is_capped() -> None:
    detector = LateralMovementDetector(LateralMovementSettings(max_vmns=3, max_uses=5))
    flows = [connect(i, ipaddress.ip_address(f"198.18.3.{i % 60}"), 445, src_vmn=f"v{i % 7}") for i in range(500)]
    run(detector, flows)
    profiles = detector.snapshot()["profiles"]
    assert len(profiles) == 3
    assert all(len(p["known"]) <= 5 for _, p in profiles)


def test_unanswered_attempts_teach_nothing_but_count_after_learning() -> None:
    silent = {"dst2src_packets": 0, "dst2src_bytes": 0, "psh_packets": 0}
    flood = [connect(i, DB, 22, src_ip=ipaddress.ip_address(f"198.18.9.{i}"), src_vmn=None, **silent)
             for i in range(200)]  # fmt: skip
    detector = LateralMovementDetector()
    assert run(detector, flood) == []
    assert detector.snapshot()["profiles"] == []
    tried_while_learning = [connect(600, DB, 445, dst_vmn="db-1", **silent)]
    found = run(LateralMovementDetector(), learned_day()[:5] + tried_while_learning + learned_day()[5:]
                + [connect(DAY + 60, DB, 445, dst_vmn="db-1", **silent)])  # fmt: skip
    assert [(f.dst_ports, f.measured["new_uses"]) for f in found] == [((445,), 1)]


def test_a_bad_snapshot_changes_nothing() -> None:
    detector = LateralMovementDetector()
    run(detector, learned_day())
    good = detector.snapshot()
    broken = json.loads(json.dumps(good))
    broken["profiles"] = []  # readable, so only an all-or-nothing restore keeps the old profiles
    broken["episodes"] = {"episodes": [["web-1", {"started_ms": "soon"}]]}
    with pytest.raises((KeyError, ValueError)):
        detector.restore(broken)
    assert detector.snapshot() == good
