"""What the analysis costs next to flow metering, on the same capture files in the same run.

Measured, each repeated N times (median reported):

(a) metering: `PcapSource` iteration (nfstream + nDPI) producing `Flow` objects, nothing else;
(b) metering + every registered detector: `build_detectors()` then `stages.analyze.run_analyze` over the same source;
(c) detectors only: `run_analyze` over flows already materialised in a list (fresh detectors each time), in total and
    per detector.

The ratio (b)/(a) is the cost of analysis relative to metering (target: at most 1.5). Wall time is the headline;
nfstream meters in a child process, so the CPU seconds of this process and of its children are reported as well.
Flows per CPU second (flows / CPU seconds of this process and its children, i.e. per core kept busy) is the
throughput target: full analysis at least 10,000 flows/s per core.
Memory of the detectors' state is measured with tracemalloc in a separate, untimed pass of (c): the Python memory
the detectors still hold after the run and the peak during it (the flows themselves are allocated before tracing
starts, so they are not counted), also scaled to 100,000 flows. The process's ru_maxrss (whole process: nfstream,
flows, detectors) is also shown.

Run from the repository root:  .venv/bin/python -m bench.analyze [--repeat N] [--json] [CAPTURE ...]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.datadir import shared_data

from vmshadow.analysis.detector import Detector, DetectorContext
from vmshadow.analysis.registry import build_detectors
from vmshadow.domain.flow import Flow
from vmshadow.domain.indicator import Indicator
from vmshadow.flows.pcap import PcapSource
from vmshadow.intel.plain_list import load_plain_list
from vmshadow.stages.analyze import run_analyze
from vmshadow.stages.collector import tune_for_analysis

TARGET_RATIO = 1.5
TARGET_FLOWS_PER_CORE = 10_000
DEFAULT_CAPTURE = Path("stopddos") / "pkt.TCP.synflood.spoofed.pcap"
DEFAULT_INTEL = Path("intel") / "ipsum" / "level3.txt"


@dataclass(frozen=True, slots=True)
class Run:
    wall_s: float
    cpu_s: float  # this process
    child_cpu_s: float  # reaped children (nfstream's meter process)
    flows: int
    findings: int


def timed(work: Callable[[], tuple[int, int]], *, no_gc: bool = False) -> Run:
    """Run `work` (returning flows, findings) and measure wall and CPU time around it.

    `no_gc` turns Python's cyclic garbage collector off during the run, to show what its scans of the detectors'
    growing state cost (reference counting still frees everything else).
    """
    gc.collect()
    if no_gc:
        gc.disable()
    before = os.times()
    start = time.perf_counter()
    try:
        flows, findings = work()
    finally:
        wall = time.perf_counter() - start
        after = os.times()
        gc.enable()
    cpu = (after.user - before.user) + (after.system - before.system)
    child = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return Run(wall, cpu, child, flows, findings)


def consume(pairs: Iterable[tuple[Flow, list[Any]]]) -> tuple[int, int]:
    flows = findings = 0
    for _, found in pairs:
        flows += 1
        findings += len(found)
    return flows, findings


def meter(paths: list[Path]) -> tuple[int, int]:
    return sum(1 for _ in PcapSource(paths)), 0


def summary(runs: list[Run]) -> dict[str, Any]:
    wall = statistics.median(r.wall_s for r in runs)
    flows = runs[0].flows
    cpu = statistics.median(r.cpu_s for r in runs)
    cpu_all = statistics.median(r.cpu_s + r.child_cpu_s for r in runs)
    return {
        "runs": len(runs),
        "wall_s": [round(r.wall_s, 4) for r in runs],
        "median_s": round(wall, 4),
        "flows": flows,
        "findings": runs[0].findings,
        "flows_per_s": round(flows / wall, 1) if wall else None,
        "cpu_s": round(cpu, 3),
        "child_cpu_s": round(statistics.median(r.child_cpu_s for r in runs), 3),
        # per core kept busy; os.times() ticks are 10 ms, so very short runs have none
        "flows_per_cpu_s": round(flows / cpu_all, 1) if cpu_all else None,
        "flows_per_process_cpu_s": round(flows / cpu, 1) if cpu else None,
    }


def _traced(
    flows: list[Flow], context: DetectorContext, names: list[str] | None
) -> tuple[list[Detector[Any]], int, int, int]:
    """One detectors-only pass under tracemalloc: (detectors, bytes after building, after the run, peak)."""
    gc.collect()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        detectors = build_detectors(context, names)
        built, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        consume(run_analyze(flows, detectors))
        gc.collect()
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return detectors, built - base, after - base, peak - base


def detector_memory(flows: list[Flow], context: DetectorContext, names: list[str] | None) -> dict[str, Any]:
    """What the detectors hold after a detectors-only pass, and the peak during it (all together, then each alone)."""
    detectors, built, after, peak = _traced(flows, context, names)
    per_detector: dict[str, dict[str, int]] = {}
    for d in detectors:
        _, d_built, d_after, _ = _traced(flows, context, [d.name])
        per_detector[d.name] = {
            "after_build_bytes": d_built,
            "learned_state_bytes": d_after - d_built,
            "snapshot_json_bytes": len(json.dumps(d.snapshot(), default=str)),
        }
    return {
        "method": "tracemalloc (Python allocations only)",
        "after_build_bytes": built,  # settings and the intel index, before any flow
        "after_run_bytes": after,  # held by the detectors after the run (the learned state included)
        "learned_state_bytes": after - built,
        "peak_during_run_bytes": peak,
        "per_detector": per_detector,
    }


def bench(
    paths: list[Path], repeat: int, context: DetectorContext, names: list[str] | None = None, *, no_gc: bool = False
) -> dict[str, Any]:
    """Measure (a), (b) and (c) with the detectors `names` (default: all registered)."""

    def analyse() -> tuple[int, int]:
        return consume(run_analyze(PcapSource(paths), build_detectors(context, names)))

    # interleaved, so that a change in the machine's load affects (a) and (b) alike
    metering: list[Run] = []
    analysis: list[Run] = []
    for _ in range(repeat):
        metering.append(timed(lambda: meter(paths), no_gc=no_gc))
        analysis.append(timed(analyse, no_gc=no_gc))

    flows = list(PcapSource(paths))

    def detectors_only(chosen: list[str] | None) -> Callable[[], tuple[int, int]]:
        def work() -> tuple[int, int]:
            detectors: list[Detector[Any]] = build_detectors(context, chosen)
            return consume(run_analyze(flows, detectors))

        return work

    only = [timed(detectors_only(names), no_gc=no_gc) for _ in range(repeat)]
    per_detector = {
        d.name: summary([timed(detectors_only([d.name]), no_gc=no_gc) for _ in range(repeat)])
        for d in build_detectors(context, names)
    }
    a, b, c = summary(metering), summary(analysis), summary(only)
    max_rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB; before tracemalloc's overhead
    memory = detector_memory(flows, context, names)
    return {
        "metering": a,
        "metering_and_detectors": b,
        "detectors_only": c,
        "per_detector": per_detector,
        "ratio": round(b["median_s"] / a["median_s"], 3),
        # each (b) against the (a) run just before it: a machine that speeds up or slows down during the benchmark
        # moves both runs of a pair alike, and the ratio of the two medians can pair runs minutes apart
        "round_ratios": [round(rb.wall_s / ra.wall_s, 3) for ra, rb in zip(metering, analysis, strict=True)],
        "round_cpu_ratios": [
            round((rb.cpu_s + rb.child_cpu_s) / (ra.cpu_s + ra.child_cpu_s), 3)
            for ra, rb in zip(metering, analysis, strict=True)
            if ra.cpu_s + ra.child_cpu_s > 0
        ],
        # the same ratio in CPU seconds of this process and its children (less sensitive to other load on the machine)
        "cpu_ratio": round((b["cpu_s"] + b["child_cpu_s"]) / (a["cpu_s"] + a["child_cpu_s"]), 3),
        "target_ratio": TARGET_RATIO,
        "target_flows_per_core": TARGET_FLOWS_PER_CORE,
        "detectors_only_us_per_flow": round(1e6 * c["median_s"] / c["flows"], 2) if c["flows"] else None,
        "memory": memory,
        "max_rss_kib": max_rss_kib,
    }


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "cpu": model or platform.processor(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _kib(n: int) -> str:
    return f"{n / 1024:,.1f} KiB"


def print_report(result: dict[str, Any]) -> None:
    m = result["machine"]
    load = "/".join(f"{x:.2f}" for x in m["loadavg"])
    print(f"{result['date']}  {m['nproc']} CPUs, {m['cpu']}, Python {m['python']}, load average {load} at start")
    print(f"captures: {', '.join(result['captures'])}")
    print(
        f"detectors: {', '.join(result['detectors'])}; indicators: {result['indicators']}; repeat: {result['repeat']}; "
        f"cyclic GC {'on' if result['gc'] else 'OFF'} during the timed runs (thresholds {result['gc_thresholds']})"
    )
    print()
    header = (
        f"{'measure':<32}{'median s':>10}{'flows':>9}{'flows/s':>11}{'findings':>10}{'cpu s':>8}{'child cpu s':>13}"
    )
    print(header)
    print("-" * len(header))
    rows = [
        ("(a) metering", result["metering"]),
        ("(b) metering + detectors", result["metering_and_detectors"]),
        ("(c) detectors only", result["detectors_only"]),
        *((f"    {name}", s) for name, s in result["per_detector"].items()),
    ]
    for title, s in rows:
        print(
            f"{title:<32}{s['median_s']:>10.3f}{s['flows']:>9}{s['flows_per_s']:>11,.0f}{s['findings']:>10}"
            f"{s['cpu_s']:>8.2f}{s['child_cpu_s']:>13.2f}"
        )
    print()
    verdict = "meets" if result["ratio"] <= result["target_ratio"] else "MISSES"
    print(f"ratio (b)/(a) wall time: {result['ratio']:.3f} ({verdict} the target <= {result['target_ratio']})")
    print(f"ratio (b)/(a) CPU time (this process + children): {result['cpu_ratio']:.3f}")
    for what, ratios in (("wall", result["round_ratios"]), ("CPU", result["round_cpu_ratios"])):
        if ratios:
            spread = f"{min(ratios):.3f}-{max(ratios):.3f}"
            print(
                f"  (b)/(a) {what} per round, each (b) against the (a) just before it: median "
                f"{statistics.median(ratios):.3f}, {spread}, {sum(r <= result['target_ratio'] for r in ratios)} "
                f"of {len(ratios)} rounds within the target"
            )
    b = result["metering_and_detectors"]
    verdict = "meets" if b["flows_per_cpu_s"] >= result["target_flows_per_core"] else "MISSES"
    print(
        f"(b) flows per CPU second (process + children, i.e. per core): {b['flows_per_cpu_s']:,.0f} ({verdict} the "
        f"target >= {result['target_flows_per_core']:,}); this process alone: {b['flows_per_process_cpu_s']:,.0f}; "
        f"(a) {result['metering']['flows_per_cpu_s']:,.0f}"
    )
    print(f"detectors only: {result['detectors_only_us_per_flow']} us per flow")
    mem = result["memory"]
    print(f"detector memory ({mem['method']}):")
    print(f"  after building (settings, intel index): {_kib(mem['after_build_bytes'])}")
    print(f"  held after the run:                     {_kib(mem['after_run_bytes'])}")
    print(f"    of which learned state:               {_kib(mem['learned_state_bytes'])}")
    print(f"  peak during the run:                    {_kib(mem['peak_during_run_bytes'])}")
    flows = result["detectors_only"]["flows"]
    if flows:
        per_100k = mem["learned_state_bytes"] * 100_000 / flows
        print(f"  learned state per 100k flows (scaled):  {per_100k / 2**20:,.1f} MiB ({flows:,} flows here)")
    for name, d in mem["per_detector"].items():
        print(
            f"    {name:<24} alone: built {_kib(d['after_build_bytes'])}, learned {_kib(d['learned_state_bytes'])}, "
            f"snapshot() as JSON {_kib(d['snapshot_json_bytes'])}"
        )
    rss = result["max_rss_kib"] / 1024
    print(f"process ru_maxrss after the timed runs (whole process, all flows held in a list): {rss:,.1f} MiB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("captures", nargs="*", type=Path, help=f"capture files (default: <data>/{DEFAULT_CAPTURE})")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement; the median is reported")
    parser.add_argument(
        "--intel", type=Path, action="append", help=f"plain indicator list (default: <data>/{DEFAULT_INTEL})"
    )
    parser.add_argument("--no-intel", action="store_true", help="run intel.match without indicators")
    parser.add_argument(
        "--detector", action="append", dest="detectors", metavar="NAME", help="only this detector (repeatable)"
    )
    parser.add_argument("--no-gc", action="store_true", help="cyclic garbage collector off during the timed runs")
    parser.add_argument(
        "--default-gc",
        action="store_true",
        help="keep CPython's collector thresholds instead of the SAE's (stages.collector.tune_for_analysis)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    paths: list[Path] = args.captures or [shared_data() / DEFAULT_CAPTURE]
    intel: list[Path] = [] if args.no_intel else (args.intel or [shared_data() / DEFAULT_INTEL])
    indicators: list[Indicator] = [i for path in intel for i in load_plain_list(path)]
    context = DetectorContext(indicators=tuple(indicators))
    # The SAE's processes raise the collector's young threshold before they analyse (vmshadow run and analyze
    # do); (a) and (b) run under the same thresholds, so the ratio compares like with like.
    if not args.default_gc:
        tune_for_analysis()
    thresholds = gc.get_threshold()
    try:
        chosen = [d.name for d in build_detectors(context, args.detectors)]
    except KeyError as exc:
        parser.error(str(exc.args[0]))
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "captures": [str(p) for p in paths],
        "detectors": chosen,
        "indicators": len(indicators),
        "intel": [str(p) for p in intel],
        "repeat": args.repeat,
        "gc": not args.no_gc,
        "gc_thresholds": list(thresholds),
        **bench(paths, args.repeat, context, args.detectors, no_gc=args.no_gc),
    }
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        print_report(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
