"""bench/mirror_overhead.py part 1b's arithmetic: per-pair ratios, exclusions and the verdict against the target."""

from __future__ import annotations

from typing import Any

from bench import mirror_overhead as mo


def _pair(i: int, tcp: tuple[float, float], udp: tuple[float, float], **extra: Any) -> dict[str, Any]:
    """A pair whose no-mirror arm measured tcp[0]/udp[0] and whose SAE arm tcp[1]/udp[1]."""
    return {
        "pair": i,
        "no_mirror": {"tcp": {"value": tcp[0]}, "udp64": {"value": udp[0]}},
        "sae": {"tcp": {"value": tcp[1]}, "udp64": {"value": udp[1]}},
        **extra,
    }


def test_each_pair_is_judged_against_its_own_baseline_whatever_the_drift() -> None:
    # the machine drifts from 10 to 20 between pairs; the SAE costs 2 % within each pair
    runs = [_pair(i, (10.0 + i, (10.0 + i) * 0.98), (100.0, 99.0)) for i in range(11)]
    runs[3] = _pair(3, (20.0, 19.6), (100.0, 99.0))  # a fast moment: the ratios still see 0.98
    runs.append({"sae": {"processed": 5}})
    summary = mo.summarize_pairs(runs)
    assert summary["pairs"] == 11
    assert summary["sae"] == {"processed": 5}
    assert round(summary["tcp"]["median_pair_ratio"], 6) == 0.98
    assert round(summary["udp64"]["median_pair_ratio"], 6) == 0.99
    assert summary["tcp"]["ratio_of_medians"] is not None


def test_excluded_pairs_and_failed_tests_are_left_out() -> None:
    runs = [
        _pair(0, (10.0, 9.0), (100.0, 90.0)),
        _pair(1, (10.0, 1.0), (100.0, 10.0), excluded=True),
        _pair(2, (10.0, 9.0), (100.0, 90.0)),
    ]
    runs[2]["sae"]["udp64"] = {"error": "iperf3 udp64: exit 1"}
    summary = mo.summarize_pairs(runs)
    assert summary["pairs"] == 2
    assert summary["tcp"]["pair_ratios"] == [0.9, 0.9]
    assert summary["udp64"]["pair_ratios"] == [0.9]


def test_the_verdict_compares_the_median_pair_ratio_with_the_target() -> None:
    met = [_pair(i, (10.0, 9.8), (100.0, 96.0)) for i in range(5)]
    lines = mo.verdicts({"paired": {"summary": mo.summarize_pairs(met)}})
    assert lines[0].startswith("sae tcp, 5 pairs: 0.980 of no-mirror")
    assert "(target >= 0.97: met)" in lines[0]
    assert lines[1].startswith("sae udp64, 5 pairs: 0.960")
    assert "(target >= 0.97: MISSED)" in lines[1]
