"""Threat intelligence: indicator lists and feeds read at the edge, and the index detectors match flows against."""
