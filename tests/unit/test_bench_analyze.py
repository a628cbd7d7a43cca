"""bench/analyze.py end to end on a small capture: every measure is there and agrees with the others."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator

import pytest
from bench import analyze

from tests.datadir import shared_data


@pytest.fixture(autouse=True)
def _collector_thresholds_restored() -> Iterator[None]:
    # the benchmark raises them as the SAE does; the rest of the test process keeps CPython's
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_a_short_run_reports_every_measure(capsys: pytest.CaptureFixture[str]) -> None:
    capture = shared_data() / "ndpi/pcap/synscan.pcap"
    assert analyze.main(["--repeat", "2", "--json", str(capture)]) == 0
    result = json.loads(capsys.readouterr().out)
    a, b, c = result["metering"], result["metering_and_detectors"], result["detectors_only"]
    assert a["flows"] == b["flows"] == c["flows"] == 1994
    assert b["findings"] == c["findings"] > 0  # the SYN scan is found, with and without metering
    assert len(result["round_ratios"]) == 2
    assert all(r > 0 for r in result["round_ratios"])
    assert set(result["per_detector"]) == set(result["detectors"])
