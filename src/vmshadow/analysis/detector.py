"""The detector contract.

A detector sees flows one at a time and returns findings. Rules of the contract (checked by the conformance
suite in tests/contract/test_detectors.py for every registered detector):

- time comes only from flows (`flow.last_seen_at`), never from a clock; no I/O;
- the same flows in the same order give the same findings; the input is never mutated;
- memory is bounded: every cap on state is a setting named `max_*`, and state stops growing at the caps;
- it works before it has learned anything and tolerates missing DPI fields;
- `snapshot()` returns plain JSON data and `restore()` of it continues exactly where the snapshot was taken.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from vmshadow.domain.finding import Finding
from vmshadow.domain.flow import Flow
from vmshadow.domain.indicator import Indicator


@dataclass(frozen=True, slots=True)
class DetectorSettings:
    """Base of every detector's typed settings."""


@dataclass(frozen=True, slots=True)
class DetectorContext:
    """What detectors may be given besides their settings: configuration, never handles to the outside."""

    indicators: tuple[Indicator, ...] = field(default=())


S = TypeVar("S", bound=DetectorSettings)


class Detector(ABC, Generic[S]):
    """Base class of every detector. Subclasses set `name`, `version` and `settings_type`."""

    name: ClassVar[str]
    version: ClassVar[str]
    settings_type: ClassVar[type[DetectorSettings]]

    def __init__(self, settings: S | None = None, context: DetectorContext | None = None) -> None:
        self.settings: S = settings if settings is not None else self.settings_type()  # type: ignore[assignment]
        self.context = context or DetectorContext()

    @abstractmethod
    def observe(self, flow: Flow) -> list[Finding]:
        """Account for one flow; return the findings it completes (usually none)."""

    @abstractmethod
    def snapshot(self) -> dict[str, Any]:
        """The learned state as plain JSON data."""

    @abstractmethod
    def restore(self, state: dict[str, Any]) -> None:
        """Replace the learned state with a snapshot's."""
