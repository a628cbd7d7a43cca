"""The SAE cannot reach the enforcer: beyond the import-linter contract (which reads the source), a fresh interpreter
that loads every SAE module, builds every detector and recommender and runs them over real flows ends up with no
enforcement, adapter, kernel or composition-root module loaded, and the built objects hold no enforcer."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.datadir import REPO_ROOT, shared_data

FORBIDDEN = (
    "vmshadow.enforcement",
    "vmshadow.ports.enforcer",
    "vmshadow.adapters",
    "vmshadow.app",
    "vmshadow.cli",
    "vmshadow.capture",
    "vmshadow.lab",
    "nftables",
    "pyroute2",
    "nats",
)  # not sqlalchemy: river's stream helpers import it themselves; vmshadow.adapters (our only user) is checked

PROBE = """
import gc, importlib, json, pkgutil, sys
import vmshadow
from datetime import UTC, datetime
for package in ("analysis", "refinement", "review", "feedback", "intel", "stages"):
    pkg = importlib.import_module(f"vmshadow.{package}")
    for info in pkgutil.walk_packages(pkg.__path__, f"vmshadow.{package}."):
        importlib.import_module(info.name)
from vmshadow.analysis.registry import build_detectors
from vmshadow.domain.tmr import TMRSet
from vmshadow.refinement.recommender import RecommendContext, recommender_types
from vmshadow.stages.analyze import run_analyze
from vmshadow.stages.recommend import run_recommend
from vmshadow.flows.pcap import PcapSource
detectors = build_detectors()
recommenders = [cls() for cls in recommender_types().values()]
flows, findings = [], []
for flow, found in run_analyze(PcapSource([sys.argv[1]]), detectors):
    flows.append(flow)
    findings.extend(found)
proposals = run_recommend(findings, TMRSet(), recommenders, RecommendContext(now=datetime.now(UTC), flows=flows))
seen, stack, holders = set(), [*detectors, *recommenders], []
while stack:  # everything the SAE's objects reach
    obj = stack.pop()
    if id(obj) in seen or isinstance(obj, type):
        continue
    seen.add(id(obj))
    module = type(obj).__module__
    if module.startswith(("vmshadow.enforcement", "vmshadow.ports.enforcer", "vmshadow.app")):
        holders.append(f"{module}.{type(obj).__qualname__}")
    stack.extend(gc.get_referents(obj))
print(json.dumps({"modules": sorted(sys.modules), "findings": len(findings), "proposals": len(proposals),
                  "holders": holders}))
"""


def test_the_sae_runs_without_ever_loading_or_holding_an_enforcer() -> None:
    capture = shared_data() / "ndpi/pcap/synscan.pcap"
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(capture)],
        capture_output=True, text=True, timeout=300, check=False, cwd=REPO_ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["findings"] > 0, "the probe really ran the SAE"
    assert report["proposals"] > 0
    loaded = [m for m in report["modules"] if m.startswith(FORBIDDEN)]
    assert loaded == []
    assert report["holders"] == []
