"""`NftEnforcer`: the TM on real nftables, with the versions kept in the store.

`apply` puts a TMRSet in force in five steps; a failure at any of them raises `EnforcementError` with nft's own
message and leaves the previous ruleset in force::

    compile   nft_compiler.compile_tmrset -> one JSON document (the version number is the store's next one)
    check     nft -c -j -f -     the kernel validates the batch without committing it (optional, off by default)
    commit    nft -j -f -        one transaction: the previous table or the new one, never both, never none
    verify    read back: rule comments in order (the version among them), the chain ``allowed``, every set with
              its flags, every element of the temporary TMR sets with a timeout, and every TMR element (by
              comment, set by set) when there are at most `FULL_VERIFY_ELEMENTS`; on a mismatch the previous
              version is put back before the error is raised (or the table removed if nothing was in force)
    record    Store.save_tmr_version(codec.tmrset_to_json(tmrset) + the staged rules, author=<OS user>, ...)

**Staged rules** (`StagedRule`: a staged proposal's rule, counting only) are part of what is applied. They are kept
in the stored version beside the TMRSet (``"staged": [{"proposal", "rule", "hits", "since"}]``; the codec reads
the TMRSet and ignores them) and compiled into chains that count and return (`nft_compiler`). An apply that names
no staged rules (``staged=None``: `vmshadow tmrs apply`, `run`, a rollback) keeps those in force. Because counters
reset when a version replaces another, the staged elements' counters are read just before the commit and added to
the ``hits`` carried in the new version (packets counted between that read and the commit are lost), so
`staged_counters` is what each staged rule counted since it was staged, across versions and restarts.

Reading elements back is what costs: nft 1.0.6 lists about 20,000 elements a second (with their counters and
comments), and any listing of rules loads every element of the table first. So the version in force and the
structure are read from ``nft -t -j list ruleset bridge`` (terse: no elements, milliseconds), the elements of a
large set only where they can be wrong without nft saying so (timeouts: nft makes an element with a fractional
timeout permanent), and all of them for small sets. ``verify_elements=True`` reads every element whatever the size.

The check is the same kernel validation the commit does, run once more without committing: a refused commit leaves
the previous ruleset just as well (both are tested), so it is off by default (``check=True`` turns it on; it costs
about as much as the commit; see bench/nft_apply.py and docs/enforcement.md).

The kernel is the truth about what is in force: `current` reads the version from the table (a new enforcer after a
restart sees what the previous process applied), the store says what that version holds. Counters are the rules'
and the TMR elements' own (``counter``) and reset when a version replaces another: read `counters` before `apply`
to keep them.

Run inside a network namespace with ``netns=`` (``ip netns exec``), as the integration tests do.
"""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from vmshadow.domain.codec import tmr_from_json, tmr_to_json, tmrset_from_json, tmrset_to_json
from vmshadow.domain.decision import TMRVersion
from vmshadow.domain.errors import BackendUnavailableError, EnforcementError, InputError, Issue, VmshadowError
from vmshadow.domain.tmr import TMRSet
from vmshadow.enforcement import nft_compiler as compiler
from vmshadow.ports.enforcer import AppliedVersion, StagedRule
from vmshadow.ports.store import Store

JSON = dict[str, Any]

DEFAULT_TIMEOUT_S = 120.0
FULL_VERIFY_ELEMENTS = 2_000  # read every TMR element back up to this many (about 0.1 s); above, see the docstring


@dataclass(frozen=True, slots=True)
class ApplyReport:
    """What the last `NftEnforcer.apply` put in force, and how long each step took (seconds)."""

    version: int
    rules: int  # rules in the base chain, vmshadow's own included
    tmr_rules: int  # set elements that carry a TMR
    tmrs: int  # TMRs in the set
    tmrs_in_force: int  # TMRs with at least one element (expired and never-matching TMRs have none)
    ports: tuple[str, ...]
    tmr_maps: int = 0  # TMR sets: lookups a packet meets at most on its way through the TMRs
    layers: int = 0
    rule_tmrs: int = 0  # TMRs alone in their layer, compiled as rules over the endpoints' named sets
    staged: int = 0  # staged rules counting (with at least one element)
    shadowed: tuple[str, ...] = ()  # TMRs an earlier TMR with the same match always decides first (nft_compiler)
    timings_s: dict[str, float] = field(default_factory=dict)


class NftEnforcer:
    """The Enforcer port on nftables (bridge table ``vmshadow``); see the module docstring."""

    def __init__(
        self,
        store: Store,
        *,
        bridges: Sequence[str],
        netns: str | None = None,
        nft: str = "nft",
        check: bool = False,
        author: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        verify_elements: bool = False,
    ) -> None:
        if not bridges:
            raise ValueError("name at least one bridge to manage")
        self.store = store
        self.bridges = tuple(bridges)
        self.netns = netns
        self.nft = nft
        self.check = check
        self.author = author or os_user()
        self.timeout_s = timeout_s
        self.verify_elements = verify_elements
        self.last_report: ApplyReport | None = None

    def __repr__(self) -> str:
        where = f", netns={self.netns!r}" if self.netns else ""
        return f"NftEnforcer(bridges={list(self.bridges)!r}{where})"

    # --- the Enforcer port ---

    def apply(
        self, tmrset: TMRSet, at: datetime, staged: Sequence[StagedRule] | None = None, *, comment: str = ""
    ) -> AppliedVersion:
        """Put `tmrset` in force atomically as the store's next version, with `staged` counting beside it (None:
        the staged rules in force stay, with their counts); `at` is now (it sets expiry timeouts)."""
        timings: dict[str, float] = {}
        started = time.perf_counter()
        ports = self.managed_ports(tmrset)
        structure = self.structure()
        # A table without a version (an older layout, or a hand-made one) is replaced like any other.
        in_force = None if structure is None else compiler.version_of(structure)
        previous = self.store.tmr_version(in_force) if in_force is not None else None
        versions = self.store.tmr_versions()
        version = (versions[-1].version if versions else 0) + 1
        held = _staged_entries(previous)
        rules = [_staged_rule(e) for e in held] if staged is None else list(staged)
        _check_staged(rules)
        timings["prepare"] = _lap(started)

        mark = time.perf_counter()
        document, layers = compiler.compile_counted(tmrset, ports=ports, at=at, version=version, staged=rules)
        text = json.dumps(document, separators=(",", ":"))
        timings["compile"] = _lap(mark)

        # read the staged counts last before the commit (it resets them): they go on in the new version
        entries = _carry(held, rules, self._staged_live(structure) if held and structure else {}, at)

        self._commit(text, version, timings)
        mark = time.perf_counter()
        try:
            self._verify(document)
        except EnforcementError as error:
            raise EnforcementError(f"{error}; {self._restore(in_force, previous, at)}") from None
        timings["verify"] = _lap(mark)

        mark = time.perf_counter()
        try:
            with compiler.without_gc():  # the stored form is one large acyclic tree, as the document is
                stored = tmrset_to_json(tmrset) | ({"staged": entries} if entries else {})
                saved = self.store.save_tmr_version(stored, author=self.author, comment=comment, created_at=at)
        except Exception as error:
            restored = self._restore(in_force, previous, at)
            raise EnforcementError(f"could not record version {version}: {error}; {restored}") from error
        if saved.version != version:
            # Another writer took the number meanwhile: label the table with the number the store gave.
            document = compiler.compile_tmrset(tmrset, ports=ports, at=at, version=saved.version, staged=rules)
            self._commit(json.dumps(document, separators=(",", ":")), saved.version, {})
        timings["record"] = _lap(mark)
        timings["total"] = _lap(started)

        tmr_comments = compiler.tmr_element_comments(document)
        rule_tmrs = {c for c in compiler.comments_of(document) if c.startswith(compiler.TMR_PREFIX)}
        maps = {n: m for n, m in compiler.tmr_maps(document).items() if n not in compiler.SHADOWED_MAPS}
        self.last_report = ApplyReport(
            version=saved.version,
            rules=len(compiler.rules_of(document)),
            tmr_rules=len(tmr_comments),
            tmrs=len(tmrset.tmrs),
            tmrs_in_force=len(set(tmr_comments) | rule_tmrs),
            ports=tuple(ports),
            tmr_maps=len(maps),
            layers=layers,
            rule_tmrs=len(rule_tmrs),
            staged=len({e.get("comment") for m in compiler.staged_maps(document).values() for e in m["elem"]}),
            shadowed=tuple(compiler.shadowed_ids(document)),
            timings_s=timings,
        )
        return AppliedVersion(version=saved.version, applied_at=at, tmrset=tmrset, staged=tuple(rules))

    def current(self) -> AppliedVersion | None:
        """The version the kernel holds, with its TMRSet from the store; None when no vmshadow table exists."""
        version = self.current_version()
        if version is None:
            return None
        stored = self.store.tmr_version(version)
        if stored is None:
            raise EnforcementError(
                f"the kernel holds vmshadow version {version}, which this store does not have; "
                "is this the database it was applied with?"
            )
        return AppliedVersion(
            version=version,
            applied_at=stored.created_at,
            tmrset=tmrset_from_json(stored.document),
            staged=tuple(_staged_rule(e) for e in _staged_entries(stored)),
        )

    def rollback(self, version: int, at: datetime) -> AppliedVersion:
        """Put the TMRSet of an earlier version back in force, as a new version; the staged rules of now stay."""
        stored = self.store.tmr_version(version)
        if stored is None:
            known = self.store.tmr_versions()
            have = f"have 1..{known[-1].version}" if known else "none stored"
            raise EnforcementError(f"no version {version} to roll back to ({have})")
        return self.apply(tmrset_from_json(stored.document), at, comment=f"rollback to version {version}")

    def counters(self) -> dict[str, int]:
        """Packets matched per TMR id since the version in force was applied (empty when none is): the counters of
        each TMR's set elements, summed. Reads every element (about 0.5 s at 10,000 TMRs)."""
        out: dict[str, int] = {}
        for comment, (packets, _) in self.rule_counters().items():
            tmr_id = compiler.tmr_id_of(comment)
            if tmr_id is not None:
                out[tmr_id] = packets
        return out

    def staged_counters(self) -> dict[str, int]:
        """Packets each staged rule in force counted since it was staged (carried across versions), by proposal id;
        empty when nothing is staged. Reads only the staged sets' elements (milliseconds)."""
        structure = self.structure()
        in_force = None if structure is None else compiler.version_of(structure)
        stored = self.store.tmr_version(in_force) if in_force is not None else None
        held = _staged_entries(stored)
        if not held or structure is None:
            return {}
        live = self._staged_live(structure)
        return {e["proposal"]: int(e["hits"]) + live.get(e["proposal"], 0) for e in held}

    # --- more than the port ---

    def _staged_live(self, structure: JSON) -> dict[str, int]:
        """Packets per staged proposal id on the staged sets' element counters of the version in force."""
        out: dict[str, int] = {}
        for name in compiler.staged_maps(structure):
            for comment, (packets, _) in compiler.counters_of(self.map_listing(name) or {}).items():
                proposal_id = compiler.staged_id_of(comment)
                if proposal_id is not None:
                    out[proposal_id] = out.get(proposal_id, 0) + packets
        return out

    def current_version(self) -> int | None:
        """The version number the kernel's table carries; None when there is no table (or no chain ``allowed`` in
        it). Cheap: it reads the table without elements (`structure`)."""
        listing = self.structure()
        if listing is None or not compiler.has_chain(listing, compiler.ALLOWED_CHAIN):
            return None
        version = compiler.version_of(listing)
        if version is None:
            raise EnforcementError(
                f"table {compiler.FAMILY} {compiler.TABLE} exists but carries no vmshadow version; "
                "was it written by something else?"
            )
        return version

    def rule_counters(self) -> dict[str, tuple[int, int]]:
        """(packets, bytes) per comment: TMR elements (``tmr <id>``), per-VMN defaults, the default, replies."""
        listing = self.listing()
        return {} if listing is None else compiler.counters_of(listing)

    def remove(self) -> bool:
        """Delete the vmshadow table (no TMR is enforced any more); False when there was none."""
        if self.structure() is None:
            return False
        table = {"family": compiler.FAMILY, "name": compiler.TABLE}
        document = {"nftables": [{"add": {"table": dict(table)}}, {"delete": {"table": dict(table)}}]}
        self._nft(["-j", "-f", "-"], json.dumps(document), "remove the vmshadow table")
        return True

    def listing(self, chain: str | None = None) -> JSON | None:
        """``nft -j list table bridge vmshadow`` (or one of its chains) as JSON, every element included; None when
        the table is absent. Costs about 50 microseconds per element: `structure` is the cheap read."""
        what = ["table", compiler.FAMILY, compiler.TABLE]
        if chain is not None:
            what = ["chain", compiler.FAMILY, compiler.TABLE, chain]
        return self._list(["list", *what])

    def structure(self) -> JSON | None:
        """The table without any set element (``nft -t -j list ruleset bridge``, its objects only): chains, rules,
        sets and maps. Milliseconds however many TMRs there are; None when the table is absent."""
        listing = self._list(["-t", "list", "ruleset", compiler.FAMILY])
        if listing is None:
            return None
        items = listing.get("nftables", [])
        tables = [i["table"] for i in items if "table" in i]
        if not any(t.get("name") == compiler.TABLE for t in tables):
            return None
        return {"nftables": [i for i in items if next(iter(i.values())).get("table") == compiler.TABLE]}

    def map_listing(self, name: str) -> JSON | None:
        """One set of the table with its elements (only its own elements are read)."""
        return self._list(["list", "set", compiler.FAMILY, compiler.TABLE, name])

    def _list(self, args: list[str]) -> JSON | None:
        result = self._run([self.nft, "-j", *args])
        if result.returncode != 0:
            # nft's answer for a missing table; `ip netns exec` says the same of a missing namespace, which is not it
            if "No such file or directory" in result.stderr and "network namespace" not in result.stderr:
                return None
            raise EnforcementError(f"nft could not list the vmshadow table: {_message(result)}")
        try:
            with compiler.without_gc():
                listing: JSON = json.loads(result.stdout)
        except ValueError as error:
            raise EnforcementError(f"nft printed a listing that is not JSON: {error}") from None
        return listing

    def managed_ports(self, tmrset: TMRSet) -> list[str]:
        """The ports of the managed bridges, plus the interfaces the VMNs declare unless another master holds them.

        Raises `EnforcementError` when a managed bridge does not exist (in the namespace)."""
        command = ["ip", "-d", "-j", "link", "show"]
        if self.netns is not None:
            command[1:1] = ["-n", self.netns]
        result = self._exec(command)
        if result.returncode != 0:
            raise EnforcementError(f"could not list the network interfaces: {_message(result)}")
        links: list[JSON] = json.loads(result.stdout or "[]")
        kinds = {link["ifname"]: link.get("linkinfo", {}).get("info_kind") for link in links}
        missing = [b for b in self.bridges if kinds.get(b) != "bridge"]
        if missing:
            where = f" in network namespace {self.netns}" if self.netns else ""
            raise EnforcementError(f"no bridge named {', '.join(missing)}{where}")
        masters = {link["ifname"]: link.get("master") for link in links}
        ports = {name for name, master in masters.items() if master in self.bridges}
        for vmn in tmrset.vmns:
            for interface in vmn.interfaces:
                master = masters.get(interface)
                if master is None or master in self.bridges:
                    ports.add(interface)
        return sorted(ports)

    # --- steps ---

    def _commit(self, text: str, version: int, timings: dict[str, float]) -> None:
        if self.check:
            mark = time.perf_counter()
            self._nft(["-c", "-j", "-f", "-"], text, f"check version {version}")
            timings["check"] = _lap(mark)
        mark = time.perf_counter()
        self._nft(["-j", "-f", "-"], text, f"apply version {version}")
        timings["commit"] = _lap(mark)

    def _verify(self, sent: JSON) -> None:
        """The kernel holds what was sent: rule comments in order (the version among them), the chain ``allowed``,
        every set with its flags, the temporary TMR sets' elements each with a timeout, and every TMR element
        (its comment, set by set) when there are few enough to read quickly or `verify_elements` asks for it."""
        elements = len(compiler.tmr_element_comments(sent))
        full = self.verify_elements or elements <= FULL_VERIFY_ELEMENTS
        listing = self.listing() if full else self.structure()
        if listing is None:
            raise EnforcementError("after the apply the vmshadow table is missing")
        expected, found = compiler.comments_of(sent), compiler.comments_of(listing)
        if expected != found:
            first = next((i for i, (a, b) in enumerate(zip(expected, found, strict=False)) if a != b), None)
            where = f"first difference at rule {first + 1}" if first is not None else "a different number of rules"
            raise EnforcementError(f"the kernel holds {len(found)} rules, {len(expected)} were sent ({where})")
        sent_allowed = compiler.comments_of(sent, compiler.ALLOWED_CHAIN)
        found_allowed = compiler.comments_of(listing, compiler.ALLOWED_CHAIN)
        if sent_allowed != found_allowed:
            raise EnforcementError(
                f"chain allowed holds {found_allowed[:1]} and {len(found_allowed)} rules; "
                f"{sent_allowed[:1]} and {len(sent_allowed)} were sent"
            )
        sent_sets, found_sets = compiler.sets_of(sent), compiler.sets_of(listing)
        for name, declared in sent_sets.items():
            held = found_sets.get(name)
            if held is None or sorted(held.get("flags", [])) != sorted(declared.get("flags", [])):
                raise EnforcementError(f"set {name} is missing or has other flags in the kernel")
        temporary = compiler.temporary_maps(sent)
        for name, declared in compiler.tmr_maps(sent).items():
            if not full and name not in temporary:
                continue
            held = found_sets[name] if full else (compiler.tmr_maps(self.map_listing(name) or {}).get(name) or {})
            _verify_elements(name, declared, held, timed=name in temporary)
        for name, declared in compiler.staged_maps(sent).items():  # few: always read back
            held = found_sets[name] if full else (compiler.staged_maps(self.map_listing(name) or {}).get(name) or {})
            _verify_elements(name, declared, held, timed="timeout" in declared.get("flags", []))
        for chain in {r["chain"] for r in compiler.rules_of_table(sent) if r["chain"].startswith("staged_")}:
            if compiler.comments_of(sent, chain) != compiler.comments_of(listing, chain):
                raise EnforcementError(f"chain {chain} (a staged rule's) differs in the kernel from what was sent")

    def _restore(self, in_force: int | None, previous: TMRVersion | None, at: datetime) -> str:
        """Put back what was in force before a failed verification or record; says what happened."""
        try:
            if in_force is None:
                self.remove()
                return "removed the table again: no version was in force before"
            if previous is None:
                return f"version {in_force} was in force but is not in this store, so it could not be put back"
            tmrset = tmrset_from_json(previous.document)
            staged = [_staged_rule(e) for e in _staged_entries(previous)]  # their counts since the read are lost
            document = compiler.compile_tmrset(
                tmrset, ports=self.managed_ports(tmrset), at=at, version=previous.version, staged=staged
            )
            self._nft(["-j", "-f", "-"], json.dumps(document, separators=(",", ":")), "restore")
        except VmshadowError as error:  # the caller's error matters more; report both
            return f"putting back the previous version failed too: {error}"
        return f"version {previous.version} is back in force"

    # --- processes ---

    def _nft(self, args: list[str], stdin: str, what: str) -> None:
        result = self._run([self.nft, *args], stdin)
        if result.returncode != 0:
            raise EnforcementError(f"nft refused to {what}: {_message(result)}")

    def _run(self, command: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        if self.netns is not None:
            command = ["ip", "netns", "exec", self.netns, *command]
        return self._exec(command, stdin)

    def _exec(self, command: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                command, input=stdin, capture_output=True, text=True, timeout=self.timeout_s, check=False
            )
        except FileNotFoundError as error:
            raise BackendUnavailableError(f"{command[0]} is not installed (needed to enforce TMRs)") from error
        except subprocess.TimeoutExpired as error:
            raise EnforcementError(f"{' '.join(command[:6])} did not finish within {self.timeout_s:g} s") from error


def _verify_elements(name: str, sent: JSON, held: JSON, *, timed: bool) -> None:
    """The set holds the elements sent (compared by comment) and, if temporary, every one with a timeout."""
    wanted = sorted(e.get("comment", "") for e in compiler.map_elements(sent))
    elements = compiler.map_elements(held)
    found = sorted(e.get("comment", "") for e in elements)
    if found != wanted:
        raise EnforcementError(f"set {name} holds {len(found)} TMR elements in the kernel, {len(wanted)} were sent")
    if timed and not all(e.get("timeout") for e in elements):
        raise EnforcementError(f"set {name}: an element of a temporary TMR has no timeout in the kernel")


def _staged_entries(stored: TMRVersion | None) -> list[JSON]:
    """The staged rules a stored version holds: proposal, rule (codec JSON), hits carried, since."""
    return [] if stored is None else list(stored.document.get("staged", []))


def _staged_rule(entry: JSON) -> StagedRule:
    return StagedRule(entry["proposal"], tmr_from_json(entry["rule"]))


def _check_staged(rules: Sequence[StagedRule]) -> None:
    seen: set[str] = set()
    for rule in rules:
        if rule.proposal_id in seen:
            raise InputError(Issue(source="staged", field=rule.proposal_id, message="staged twice"))
        seen.add(rule.proposal_id)


def _carry(held: Sequence[JSON], rules: Sequence[StagedRule], live: dict[str, int], at: datetime) -> list[JSON]:
    """The staged entries of the new version: a rule staged before with the same match keeps its count (carried
    plus what the version in force counted) and its start; any other starts from zero now."""
    before = {e["proposal"]: e for e in held}
    out: list[JSON] = []
    for rule in rules:
        body = tmr_to_json(rule.rule)
        old = before.get(rule.proposal_id)
        if old is not None and old["rule"] == body:
            hits, since = int(old["hits"]) + live.get(rule.proposal_id, 0), old["since"]
        else:
            hits, since = 0, at.isoformat()
        out.append({"proposal": rule.proposal_id, "rule": body, "hits": hits, "since": since})
    return out


def os_user() -> str:
    """The name of the user running vmshadow, for the history of versions."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers) and no LOGNAME/USER
        return f"uid {os.getuid()}"


def _lap(since: float) -> float:
    return round(time.perf_counter() - since, 6)


def _message(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line.strip() for line in (result.stderr or result.stdout).splitlines() if line.strip()]
    # nft repeats the error for the check and prints "internal:0:0-0:" locations for JSON input; keep the gist
    unique = list(dict.fromkeys(line.removeprefix("internal:0:0-0: ") for line in lines))
    return "; ".join(unique) or f"exit status {result.returncode}"
