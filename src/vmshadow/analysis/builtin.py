"""Imports every built-in detector so that the registry knows them."""

from vmshadow.analysis.hunting import brute_force, port_scan
from vmshadow.analysis.intel import intel_match

__all__ = ["brute_force", "intel_match", "port_scan"]
