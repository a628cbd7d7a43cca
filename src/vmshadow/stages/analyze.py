"""`run_analyze`: flows in, findings out, through every detector."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from vmshadow.analysis.detector import Detector
from vmshadow.domain.finding import Finding
from vmshadow.domain.flow import Flow


def run_analyze(flows: Iterable[Flow], detectors: Sequence[Detector[Any]]) -> Iterator[tuple[Flow, list[Finding]]]:
    """Each flow with the findings it completed (often none), in input order."""
    for flow in flows:
        findings: list[Finding] = []
        for detector in detectors:
            found = detector.observe(flow)
            if found:  # usually not
                findings.extend(found)
        yield flow, findings
