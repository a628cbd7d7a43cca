"""Imports every built-in detector so that the registry knows them."""

from vmshadow.analysis.anomaly import hst
from vmshadow.analysis.hunting import beaconing, brute_force, dns_tunnel, exfiltration, lateral_movement, port_scan
from vmshadow.analysis.intel import intel_match

__all__ = [
    "beaconing",
    "brute_force",
    "dns_tunnel",
    "exfiltration",
    "hst",
    "intel_match",
    "lateral_movement",
    "port_scan",
]
