"""Detector-major batches give the same findings, in the same order, as flow by flow (stages/analyze.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.datadir import shared_data
from vmshadow.analysis.detector import DetectorContext
from vmshadow.analysis.registry import build_detectors
from vmshadow.domain.codec import finding_to_json
from vmshadow.domain.flow import Flow
from vmshadow.flows.pcap import PcapSource
from vmshadow.intel.plain_list import load_plain_list
from vmshadow.stages.analyze import analyze_batch, run_analyze

CAPTURES = ("ndpi/pcap/synscan.pcap", "zeek/traces/ssh/sshguess.pcap", "esnet-scanners/nmap_80_all.pcap",
            "ndpi/pcap/dns-tunnel-iodine.pcap")  # fmt: skip


@pytest.fixture(scope="module")
def flows() -> list[Flow]:
    return list(PcapSource([shared_data() / c for c in CAPTURES]))


def analysed(pairs: Any) -> list[tuple[str, list[Any]]]:
    return [(flow.id, [finding_to_json(f) for f in found]) for flow, found in pairs]


def fresh() -> Any:
    # every registered detector, with indicators so that intel.match finds something too
    indicators = tuple(load_plain_list(shared_data() / "intel/ipsum/level3.txt"))
    return build_detectors(DetectorContext(indicators=indicators))


@pytest.mark.slow
@pytest.mark.parametrize("batch", [2, 7, 256, 100_000])
def test_batches_find_what_flow_by_flow_finds(flows: list[Flow], batch: int) -> None:
    one_by_one = analysed(run_analyze(flows, fresh(), batch=1))
    assert sum(len(found) for _, found in one_by_one) >= 5, "the captures give findings to compare"
    assert analysed(run_analyze(flows, fresh(), batch=batch)) == one_by_one


def test_a_batch_keeps_each_flows_findings_in_detector_order(flows: list[Flow]) -> None:
    detectors = fresh()
    pairs = analyze_batch(flows[:500], detectors)
    assert [flow.id for flow, _ in pairs] == [flow.id for flow in flows[:500]]
    reference = fresh()
    for flow, found in pairs:
        expected = [f for d in reference for f in d.observe(flow)]
        assert [finding_to_json(f) for f in found] == [finding_to_json(f) for f in expected]
