"""anomaly.hst: a VMN's own history sets its threshold; outliers after calibration are found, its ordinary flows
stay within the false-alarm budget, and snapshots carry the models safely."""

from __future__ import annotations

import base64
import doctest
import ipaddress
import json
import pickle
import random
import zlib
from collections.abc import Iterable
from typing import Any

import pytest

from tests.factories import at, make_flow
from vmshadow.analysis.anomaly import features, hst
from vmshadow.analysis.anomaly.features import extract_features, port_class
from vmshadow.analysis.anomaly.hst import HSTDetector, HSTSettings, quantile, threat_score
from vmshadow.analysis.anomaly.model_codec import ModelStateError
from vmshadow.domain.finding import Finding, FindingKind, Severity
from vmshadow.domain.flow import TCP, UDP, Flow

CALIBRATED = HSTSettings().warmup_flows + HSTSettings().calibration_flows


def run(detector: HSTDetector, flows: Iterable[Flow]) -> list[Finding]:
    return [f for flow in flows for f in detector.observe(flow)]


def ordinary(n: int, seed: int = 1, start: int = 0, **overrides: Any) -> list[Flow]:
    """Browsing from one VMN: HTTPS requests of a few kB with larger answers, and DNS lookups (one in ten)."""
    rng = random.Random(seed)
    flows = []
    for i in range(start, start + n):
        dns = rng.random() < 0.1
        up = 80 if dns else int(rng.lognormvariate(7.5, 0.4))
        down = 200 if dns else int(rng.lognormvariate(10, 0.8))
        duration = 0.01 if dns else rng.uniform(0.3, 4)
        values: dict[str, Any] = {
            "dst_ip": ipaddress.ip_address("198.18.0.1" if dns else f"192.0.2.{rng.randint(1, 30)}"),
            "dst_port": 53 if dns else 443, "protocol": UDP if dns else TCP, "src_port": 40000 + i % 20000,
            "first_seen_at": at(10 * i), "last_seen_at": at(10 * i + duration), "src2dst_bytes": up,
            "dst2src_bytes": down, "src2dst_packets": 1 if dns else 4 + up // 1200,
            "dst2src_packets": 1 if dns else 4 + down // 1200,
        }  # fmt: skip
        values.update(overrides)
        flows.append(make_flow(i, **values))
    return flows


def outlier(i: int, **overrides: Any) -> Flow:
    """A 2 GB upload over ten minutes to a high port: nothing like the VMN's browsing."""
    values: dict[str, Any] = {"dst_ip": ipaddress.ip_address("203.0.113.9"), "dst_port": 51515,
                              "first_seen_at": at(10 * i), "last_seen_at": at(10 * i + 600),
                              "src2dst_bytes": 2_000_000_000, "src2dst_packets": 1_400_000, "dst2src_bytes": 300,
                              "dst2src_packets": 3}  # fmt: skip
    values.update(overrides)
    return make_flow(i, **values)


def test_an_outlier_after_calibration_is_found() -> None:
    detector = HSTDetector()
    assert run(detector, ordinary(CALIBRATED + 100)) == []
    found = run(detector, [outlier(CALIBRATED + 100)])
    assert len(found) == 1
    f = found[0]
    assert f.kind is FindingKind.ANOMALY
    assert f.attack_technique is None
    assert f.src_vmn == "web-1"
    assert (f.dst_ips, f.dst_ports, f.community_ids) == (
        (ipaddress.ip_address("203.0.113.9"),), (51515,), (f"1:flow{CALIBRATED + 100}=",),
    )  # fmt: skip
    assert float(f.measured["anomaly_score"]) > float(f.measured["threshold"])
    assert 0.2 <= f.score <= 0.8
    assert f.severity in (Severity.MEDIUM, Severity.HIGH)
    assert f.measured["false_alarm_budget"] == 0.01


def test_nothing_is_scored_before_warm_up_and_calibration_end() -> None:
    flows = ordinary(CALIBRATED - 20)
    flows[150] = outlier(150)
    flows[300] = outlier(300)
    detector = HSTDetector()
    assert run(detector, flows) == []
    ((_, state),) = detector.snapshot()["vmns"]
    assert state["threshold"] is None
    assert len(state["scores"]) == HSTSettings().calibration_flows - 20


@pytest.mark.parametrize("seed", range(3))
def test_ordinary_flows_stay_within_the_false_alarm_budget(seed: int) -> None:
    detector = HSTDetector(HSTSettings(repeat_after_s=0))
    run(detector, ordinary(CALIBRATED, seed=seed))
    alarms = run(detector, ordinary(2000, seed=seed + 100, start=CALIBRATED))
    # without the quiet period every flow over the threshold is a finding: at most the budget (1 %) of them
    assert len(alarms) <= HSTSettings().false_alarm_budget * 2000


def test_a_larger_budget_lowers_the_threshold() -> None:
    thresholds = []
    for budget in (0.001, 0.05, 0.2):
        detector = HSTDetector(HSTSettings(false_alarm_budget=budget))
        run(detector, ordinary(CALIBRATED))
        ((_, state),) = detector.snapshot()["vmns"]
        thresholds.append(state["threshold"])
    assert thresholds[0] >= thresholds[1] > thresholds[2]


def test_findings_repeat_only_after_the_quiet_period() -> None:
    detector = HSTDetector()
    run(detector, ordinary(CALIBRATED))
    burst = [outlier(CALIBRATED + i) for i in range(5)]  # 10 s apart
    assert len(run(detector, burst)) == 1
    assert len(run(detector, [outlier(CALIBRATED + 40)])) == 1, "400 s later"


def test_models_are_per_vmn_and_small_talkers_get_none() -> None:
    detector = HSTDetector()
    run(detector, ordinary(CALIBRATED))
    quiet = outlier(CALIBRATED, src_vmn="db-1", src_ip=ipaddress.ip_address("198.18.1.2"))
    assert run(detector, [quiet]) == [], "db-1 has no history"
    vmns = dict(detector.snapshot()["vmns"])
    assert vmns["db-1"]["model"] is None
    assert len(vmns["db-1"]["pending"]) == 1


def test_runs_repeat_exactly_and_the_seed_matters() -> None:
    flows = [*ordinary(CALIBRATED + 50), outlier(CALIBRATED + 50)]
    first = run(HSTDetector(), flows)
    assert first == run(HSTDetector(), flows)
    other = run(HSTDetector(HSTSettings(seed=7)), flows)
    assert [f.measured["threshold"] for f in first] != [f.measured["threshold"] for f in other]


@pytest.mark.parametrize("cut", [10, 150, 350, CALIBRATED + 20])
def test_snapshot_is_plain_json_and_continues_exactly(cut: int) -> None:
    flows = [*ordinary(CALIBRATED + 50), outlier(CALIBRATED + 50), *ordinary(20, start=CALIBRATED + 51)]
    whole = HSTDetector()
    run(whole, flows[:cut])
    expected = run(whole, flows[cut:])
    assert expected
    first = HSTDetector()
    run(first, flows[:cut])
    second = HSTDetector()
    second.restore(json.loads(json.dumps(first.snapshot())))
    assert run(second, flows[cut:]) == expected


def test_a_snapshot_cannot_smuggle_code_and_a_bad_one_changes_nothing() -> None:
    detector = HSTDetector()
    run(detector, ordinary(CALIBRATED))
    good = detector.snapshot()

    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (print, ("owned",))

    evil = json.loads(json.dumps(good))
    evil["vmns"][0][1]["model"] = base64.b64encode(zlib.compress(pickle.dumps(Evil()))).decode()
    with pytest.raises(ModelStateError, match=r"vmns\['web-1'\].*builtins\.print"):
        detector.restore(evil)
    garbage = json.loads(json.dumps(good))
    garbage["vmns"][0][1]["model"] = "not base64!"
    with pytest.raises(ModelStateError, match=r"vmns\['web-1'\].*base64"):
        detector.restore(garbage)
    with pytest.raises(ModelStateError, match=r"river '0\.1'"):
        detector.restore({**good, "river": "0.1"})
    assert detector.snapshot() == good


def test_state_is_capped() -> None:
    detector = HSTDetector(HSTSettings(max_vmns=3))
    flows = [f for v in range(6) for f in ordinary(20, seed=v, src_vmn=f"v{v}")]
    run(detector, flows)
    assert [k for k, _ in detector.snapshot()["vmns"]] == ["v3", "v4", "v5"]


def test_features_and_helpers() -> None:
    x = extract_features(make_flow(0))
    assert set(x) == set(features.FEATURE_NAMES)
    assert (x["tcp"], x["udp"], x["answered"], x["port_class"]) == (1.0, 0.0, 1.0, 0.0)
    assert x["out_share"] == pytest.approx(1500 / 10500)
    silent = extract_features(make_flow(0, src2dst_bytes=0, dst2src_bytes=0, src2dst_packets=0, dst2src_packets=0))
    assert silent["bytes_per_packet"] == silent["out_share"] == 0.0
    assert [port_class(p) for p in (0, 1023, 1024, 49151, 49152)] == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert quantile([0.3, 0.1, 0.2], 0.99) == 0.3
    assert quantile([0.3, 0.1, 0.2], 0.5) == 0.2
    assert threat_score(0.95, 0.9) == pytest.approx(0.5)
    assert threat_score(0.8, 0.9) == 0.2


@pytest.mark.parametrize("module", [features, hst])
def test_doctests(module: Any) -> None:
    assert doctest.testmod(module).failed == 0


def test_judge_gives_every_score_and_alarms_inside_the_quiet_period() -> None:
    detector = HSTDetector()
    early = [detector.judge(f)[0] for f in ordinary(CALIBRATED)]
    assert all(j.score is None for j in early[: HSTSettings().warmup_flows])
    assert all(j.score is not None and not j.alarm for j in early[HSTSettings().warmup_flows :])
    first, found = detector.judge(outlier(CALIBRATED))
    held, none = detector.judge(outlier(CALIBRATED + 1))
    assert (first.alarm, len(found), held.alarm, none) == (True, 1, True, [])
    assert first.score is not None
    assert first.score > 0.9


def test_score_learns_nothing() -> None:
    detector = HSTDetector()
    assert detector.score(outlier(0)) is None
    run(detector, ordinary(CALIBRATED))
    before = detector.snapshot()
    scores = {detector.score(outlier(CALIBRATED + i)) for i in range(20)}
    assert len(scores) == 1
    assert scores.pop() > 0.9  # type: ignore[operator]
    assert detector.snapshot() == before


def test_unanswered_flows_from_unknown_sources_leave_no_state() -> None:
    detector = HSTDetector()
    silent = {"dst2src_packets": 0, "dst2src_bytes": 0, "src_vmn": None}
    flood = [outlier(i, src_ip=ipaddress.ip_address(f"198.18.{i // 250}.{i % 250}"), **silent) for i in range(500)]
    assert run(detector, flood) == []
    assert detector.snapshot()["vmns"] == []
    run(detector, ordinary(1))
    run(detector, [outlier(2, **{**silent, "src_vmn": "web-1"})])
    assert len(dict(detector.snapshot()["vmns"])["web-1"]["pending"]) == 2, "a known VMN's unanswered flows count"
