"""Detectors that match flows against threat-intel indicators."""
