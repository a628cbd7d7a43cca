"""Capture: shadow ports (tc clsact + u32 + mirred mirror per VMN, through pyroute2) and VMN discovery.

Infrastructure: the SAE, refinement, review and the domain never import this package (import-linter contract).
"""

from vmshadow.capture.budget import CopyBudget, ShedCounters
from vmshadow.capture.discovery import discover_vmns
from vmshadow.capture.shadow_port import (
    DEFAULT_BUDGET,
    Direction,
    MirrorCounters,
    ShadowPort,
    attach,
    detach,
    find_attached,
    mirror_counters,
    refresh,
    shadow_interface_name,
    shed_counters,
)

__all__ = [
    "DEFAULT_BUDGET",
    "CopyBudget",
    "Direction",
    "MirrorCounters",
    "ShadowPort",
    "ShedCounters",
    "attach",
    "detach",
    "discover_vmns",
    "find_attached",
    "mirror_counters",
    "refresh",
    "shadow_interface_name",
    "shed_counters",
]
