"""Composition roots: the only place that chooses adapters and wires stages together."""
