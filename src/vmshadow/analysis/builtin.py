"""Imports every built-in detector so that the registry knows them."""

from vmshadow.analysis.hunting import brute_force, port_scan

__all__ = ["brute_force", "port_scan"]
