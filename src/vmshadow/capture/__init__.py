"""Capture: shadow ports (tc clsact + u32 + mirred mirror per VMN, through pyroute2) and VMN discovery.

Infrastructure: the SAE, refinement, review and the domain never import this package (import-linter contract).
"""

from vmshadow.capture.discovery import discover_vmns
from vmshadow.capture.shadow_port import (
    Direction,
    MirrorCounters,
    ShadowPort,
    attach,
    detach,
    find_attached,
    mirror_counters,
    refresh,
    shadow_interface_name,
)

__all__ = [
    "Direction",
    "MirrorCounters",
    "ShadowPort",
    "attach",
    "detach",
    "discover_vmns",
    "find_attached",
    "mirror_counters",
    "refresh",
    "shadow_interface_name",
]
