"""The exception tree, grouped by who must react.

    VmshadowError
     ├── InputError                 the caller gave bad input; nothing was stored
     │    ├── CaptureError          a capture file cannot be read
     │    ├── NotFoundError         the named object does not exist
     │    └── IllegalTransitionError  a proposal cannot move to the requested state
     ├── EnforcementError           the kernel refused or lost a change
     └── BackendUnavailableError    a store, bus or tool is not reachable or not installed

Every `InputError` carries `issues`: each one names where the problem is (file, line, field).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem in an input, with its location."""

    source: str
    message: str
    line: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = self.source
        if self.line is not None:
            where += f":{self.line}"
        if self.field:
            return f"{where}: {self.field}: {self.message}"
        return f"{where}: {self.message}"


class VmshadowError(Exception):
    """Root of every error vmshadow raises on purpose."""


class InputError(VmshadowError):
    """Bad input. Carries every issue found, not only the first."""

    def __init__(self, issues: list[Issue] | tuple[Issue, ...] | Issue | str) -> None:
        if isinstance(issues, str):
            issues = (Issue(source="input", message=issues),)
        elif isinstance(issues, Issue):
            issues = (issues,)
        self.issues: tuple[Issue, ...] = tuple(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


class CaptureError(InputError):
    """A capture file is missing, truncated, or not a capture."""


class NotFoundError(InputError):
    """The proposal, finding or version asked for does not exist."""


class IllegalTransitionError(InputError):
    """A proposal was asked to move along an edge the transition table does not have."""


class EnforcementError(VmshadowError):
    """The enforcement backend refused a change or could not confirm it."""


class BackendUnavailableError(VmshadowError):
    """A required backend (database, bus, kernel feature, tool) is not available here."""
