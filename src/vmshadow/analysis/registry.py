"""The registry of detectors, keyed by their dotted, stable names (e.g. ``hunting.port_scan``)."""

from __future__ import annotations

from typing import Any, TypeVar

from vmshadow.analysis.detector import Detector, DetectorContext

_REGISTRY: dict[str, type[Detector[Any]]] = {}

D = TypeVar("D", bound=type[Detector[Any]])


def register(cls: D) -> D:
    """Class decorator: make a detector available by its name."""
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing is not cls:
        raise ValueError(f"detector name {cls.name!r} is already taken by {existing.__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


def detector_types() -> dict[str, type[Detector[Any]]]:
    """Every registered detector, by name. Importing the built-in detectors registers them."""
    from vmshadow.analysis import builtin  # noqa: F401  (registers the built-ins)

    return dict(sorted(_REGISTRY.items()))


def build_detectors(context: DetectorContext | None = None, names: list[str] | None = None) -> list[Detector[Any]]:
    """Instantiate detectors with default settings; `names` selects some (unknown names are an error)."""
    types = detector_types()
    chosen = names if names is not None else list(types)
    unknown = [n for n in chosen if n not in types]
    if unknown:
        raise KeyError(f"unknown detector(s): {', '.join(unknown)}; known: {', '.join(types)}")
    return [types[n](None, context) for n in chosen]
