"""Behavioural anomaly detection: per-VMN online models over flow features."""
