"""The TM's composition root: an `NftEnforcer` over the SQL store, and the operations `vmshadow tmrs` offers.

Each operation opens the store, does its work and closes it again, so the CLI never holds adapters itself::

    settings = TMSettings(db_url="sqlite:///var/vmshadow.db", bridges=("vmsbr0",))
    result = apply_tmrset(settings, load_tmr_file("tmrs.yaml"), comment="weekly review")
    diff_tmrset(settings, load_tmr_file("tmrs.yaml")).empty    # True: the file is what is in force
    rollback_tmrs(settings, result.version - 1)

`diff_tmrsets` is pure: it compares the JSON forms (`codec.tmrset_to_json`) of two sets, never nftables text.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from vmshadow.adapters.sql import open_store
from vmshadow.app.tm_lock import tm_locked
from vmshadow.domain.codec import tmrset_to_json
from vmshadow.domain.errors import BackendUnavailableError, EnforcementError
from vmshadow.domain.tmr import TMRSet
from vmshadow.enforcement.nft import ApplyReport, NftEnforcer
from vmshadow.ports.store import Store

DEFAULT_DB = "var/vmshadow.db"
DEFAULT_BRIDGE = "vmsbr0"

JSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class TMSettings:
    """Where the versions are kept and what the TM enforces on."""

    db_url: str
    bridges: tuple[str, ...] = (DEFAULT_BRIDGE,)
    netns: str | None = None  # run nft inside this network namespace (ip netns exec)
    nft: str = "nft"
    check: bool = False  # run `nft -c` before the transaction (a refused commit changes nothing either)


@dataclass(frozen=True, slots=True)
class ApplyResult:
    version: int
    applied_at: datetime
    report: ApplyReport

    def to_json(self) -> JSON:
        r = self.report
        return {
            "version": self.version,
            "applied_at": self.applied_at.isoformat(),
            "rules": r.rules,
            "tmr_rules": r.tmr_rules,
            "tmr_maps": r.tmr_maps,
            "layers": r.layers,
            "rule_tmrs": r.rule_tmrs,
            "staged": r.staged,
            "shadowed": list(r.shadowed),
            "tmrs": r.tmrs,
            "tmrs_in_force": r.tmrs_in_force,
            "ports": list(r.ports),
            "timings_s": dict(r.timings_s),
        }


@dataclass(frozen=True, slots=True)
class TMRChange:
    id: str
    before: JSON
    after: JSON

    @property
    def fields(self) -> list[str]:
        return [k for k in sorted({*self.before, *self.after}) if self.before.get(k) != self.after.get(k)]


@dataclass(frozen=True, slots=True)
class TMRSetDiff:
    """What putting a set in force would change, TMR by TMR and for the rest of the set."""

    in_force: int | None  # the version compared with; None when nothing is in force
    added: tuple[JSON, ...] = ()
    removed: tuple[JSON, ...] = ()
    changed: tuple[TMRChange, ...] = ()
    other: tuple[str, ...] = ()  # defaults, VMNs, groups, order of equal priorities

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.other)

    def to_json(self) -> JSON:
        return {
            "in_force": self.in_force,
            "added": list(self.added),
            "removed": list(self.removed),
            "changed": [{"id": c.id, "fields": c.fields, "before": c.before, "after": c.after} for c in self.changed],
            "other": list(self.other),
        }


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    version: int
    created_at: datetime
    author: str
    comment: str
    tmrs: int
    in_force: bool

    def to_json(self) -> JSON:
        return {
            "version": self.version,
            "created_at": self.created_at.isoformat(),
            "author": self.author,
            "comment": self.comment,
            "tmrs": self.tmrs,
            "in_force": self.in_force,
        }


@dataclass(frozen=True, slots=True)
class History:
    entries: tuple[HistoryEntry, ...]
    in_force: int | None
    kernel_error: str | None = None  # why the version in force is unknown (not root, no namespace, ...)

    def to_json(self) -> JSON:
        return {
            "in_force": self.in_force,
            "kernel_error": self.kernel_error,
            "versions": [e.to_json() for e in self.entries],
        }


@contextmanager
def open_enforcer(settings: TMSettings) -> Iterator[NftEnforcer]:
    """An `NftEnforcer` over the store at `settings.db_url`, under the TM lock of its network namespace (one TM
    change at a time, app/tm_lock.py); the store is closed and the lock released when the block ends."""
    with tm_locked(settings.netns):
        store: Store = open_store(settings.db_url)
        try:
            yield NftEnforcer(
                store, bridges=settings.bridges, netns=settings.netns, nft=settings.nft, check=settings.check
            )
        finally:
            store.close()


def apply_tmrset(settings: TMSettings, tmrset: TMRSet, *, comment: str = "", at: datetime | None = None) -> ApplyResult:
    with open_enforcer(settings) as enforcer:
        applied = enforcer.apply(tmrset, at or datetime.now(UTC), comment=comment)
        assert enforcer.last_report is not None
        return ApplyResult(applied.version, applied.applied_at, enforcer.last_report)


def rollback_tmrs(settings: TMSettings, version: int, *, at: datetime | None = None) -> ApplyResult:
    with open_enforcer(settings) as enforcer:
        applied = enforcer.rollback(version, at or datetime.now(UTC))
        assert enforcer.last_report is not None
        return ApplyResult(applied.version, applied.applied_at, enforcer.last_report)


def diff_tmrset(settings: TMSettings, tmrset: TMRSet) -> TMRSetDiff:
    """What `tmrset` changes relative to the version the kernel holds."""
    with open_enforcer(settings) as enforcer:
        current = enforcer.current()
    if current is None:
        return diff_tmrsets(None, tmrset)
    return diff_tmrsets(current.tmrset, tmrset, in_force=current.version)


def tmr_history(settings: TMSettings) -> History:
    """Every stored version, oldest first, marking the one the kernel holds (if the kernel can be asked)."""
    with open_enforcer(settings) as enforcer:
        versions = enforcer.store.tmr_versions()
        kernel_error = None
        try:
            in_force = enforcer.current_version()
        except (EnforcementError, BackendUnavailableError) as error:
            in_force, kernel_error = None, str(error)
    entries = tuple(
        HistoryEntry(
            version=v.version,
            created_at=v.created_at,
            author=v.author,
            comment=v.comment,
            tmrs=len(v.document.get("tmrs", [])),
            in_force=v.version == in_force,
        )
        for v in versions
    )
    return History(entries=entries, in_force=in_force, kernel_error=kernel_error)


def diff_tmrsets(before: TMRSet | None, after: TMRSet, *, in_force: int | None = None) -> TMRSetDiff:
    """Compare two sets by their JSON forms: TMRs by id, then defaults, VMNs, groups and the order of ties."""
    old = tmrset_to_json(before) if before is not None else tmrset_to_json(TMRSet())
    new = tmrset_to_json(after)
    old_tmrs = {t["id"]: t for t in old["tmrs"]}
    new_tmrs = {t["id"]: t for t in new["tmrs"]}
    added = tuple(t for i, t in new_tmrs.items() if i not in old_tmrs)
    removed = tuple(t for i, t in old_tmrs.items() if i not in new_tmrs)
    changed = tuple(TMRChange(i, old_tmrs[i], t) for i, t in new_tmrs.items() if i in old_tmrs and old_tmrs[i] != t)
    other: list[str] = []
    if before is not None and old["default_action"] != new["default_action"]:
        other.append(f"default action: {old['default_action']} -> {new['default_action']}")
    if before is None and new["default_action"] != "allow":
        other.append(f"default action: {new['default_action']}")
    for name in sorted({*old["vmn_defaults"], *new["vmn_defaults"]}):
        a, b = old["vmn_defaults"].get(name, "-"), new["vmn_defaults"].get(name, "-")
        if a != b:
            other.append(f"default for VMN {name}: {a} -> {b}")
    for what, key in (("VMN", "vmns"), ("group", "groups")):
        a_items = {x["name"]: x for x in old[key]}
        b_items = {x["name"]: x for x in new[key]}
        for name in sorted({*a_items, *b_items}):
            if name not in a_items:
                other.append(f"{what} {name} added")
            elif name not in b_items:
                other.append(f"{what} {name} removed")
            elif a_items[name] != b_items[name]:
                other.append(f"{what} {name} changed")
    moved = {c.id for c in changed if "priority" in c.fields}
    kept = [t["id"] for t in old["tmrs"] if t["id"] in new_tmrs and t["id"] not in moved]
    kept_now = [t["id"] for t in new["tmrs"] if t["id"] in old_tmrs and t["id"] not in moved]
    if kept != kept_now:
        other.append("order of TMRs with equal priority changed")
    return TMRSetDiff(in_force=in_force, added=added, removed=removed, changed=changed, other=tuple(other))
