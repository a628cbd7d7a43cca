"""Threat hunting: detectors for scans, brute force and other attacker behaviour, from flows."""
