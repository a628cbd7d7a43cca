"""The TMR file: VMNs, groups, default actions and TMRs, read into a validated `TMRSet`.

::

    version: 1
    vmns:
      vm1: {addresses: [198.18.0.11], macs: ["02:00:00:00:00:01"]}
    groups:
      web: {vmns: [vm1], networks: [198.18.10.0/24]}
      resolvers: [198.18.0.2, vm2]
    defaults:
      action: allow
      vmns: {vm1: deny}
    tmrs:
      - id: allow-dns
        priority: 100
        src: web
        dst: resolvers
        protocol: udp
        ports: 53
        action: allow

`parse_tmr_text` and `load_tmr_file` find every problem in one pass (unknown or missing keys, wrong types, bad
addresses and ports, unknown names, duplicates, ...) and raise one `InputError` listing them all with line and
field, e.g. ``tmrs.yaml:7: tmrs[0].ports: port 70000 is outside 0-65535``. They never return a partial set.
The format is documented in docs/tmr-format.md.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path as FilePath

from vmshadow.config.vmn_file import (
    NAME_PATTERN,
    VMNSection,
    check_name,
    read_root,
    read_vmn_section,
)
from vmshadow.config.yaml_source import FieldReader, Path, describe, load_yaml, read_text, suggest
from vmshadow.domain.net import IPNetwork, PortRange, Protocol, normalize_ports
from vmshadow.domain.tmr import TMR, Action, Endpoint, EndpointKind, TMRSet
from vmshadow.domain.vmn import Group

TOP_KEYS = ("version", "vmns", "groups", "defaults", "tmrs")
GROUP_KEYS = ("vmns", "networks")
DEFAULTS_KEYS = ("action", "vmns")
TMR_KEYS = ("id", "priority", "src", "dst", "protocol", "ports", "action", "expires_at", "comment")
TMR_REQUIRED = ("id", "priority", "src", "dst", "action")

MAX_PRIORITY = 2**31 - 1
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_PORTS = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def parse_tmr_text(text: str, source: str) -> TMRSet:
    """Read a TMR file's text into a `TMRSet`; raises `InputError` with every issue, naming `source`.

    An empty file (or one with only comments) is an empty set whose default action is allow.
    """
    reader = FieldReader(load_yaml(text, source))
    return _TMRFileReader(reader).read()


def load_tmr_file(path: str | FilePath, source: str | None = None) -> TMRSet:
    """Read a TMR file. `source` names the file in errors (default: `path` as given)."""
    name = str(path) if source is None else source
    return parse_tmr_text(read_text(path, name), name)


def looks_like_address(text: str) -> bool:
    """True when `text` is written as an address or network rather than a name (names start with a letter)."""
    return text[:1].isdigit() or ":" in text or "/" in text


def parse_network(text: str) -> IPNetwork | str:
    """An address (as a one-address network) or a CIDR network; otherwise the reason, for an operator."""
    text = text.strip()
    try:
        return ipaddress.ip_network(text)
    except ValueError:
        pass
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        address, slash, prefix = text.partition("/")
        try:
            version = ipaddress.ip_address(address).version
        except ValueError:
            return f"{text!r} is not an IP address or CIDR network"
        longest = 32 if version == 4 else 128
        if slash and prefix.isdigit() and int(prefix) > longest:
            return f"prefix length /{prefix} is too long for IPv{version} (at most /{longest})"
        return f"{text!r} is not a valid CIDR network"
    return f"{text} has host bits set; did you mean {network}?"


@dataclass(slots=True)
class _Names:
    vmns: frozenset[str]
    groups: frozenset[str]
    complete: bool  # False: a section could not be read, so an unknown name may be fine


class _TMRFileReader:
    def __init__(self, reader: FieldReader) -> None:
        self.reader = reader
        self.names = _Names(frozenset(), frozenset(), complete=True)

    def read(self) -> TMRSet:
        reader = self.reader
        root = read_root(reader, TOP_KEYS)
        section = read_vmn_section(reader, ("vmns",), root.get("vmns"))
        group_names, groups_complete = self._group_names(root.get("groups"))
        self.names = _Names(section.names, group_names, section.complete and groups_complete)
        groups = self._groups(root.get("groups"))
        default_action, vmn_defaults = self._defaults(root.get("defaults"))
        tmrs = self._tmrs(root.get("tmrs"))
        reader.raise_if_any()
        return self._build(section, groups, default_action, vmn_defaults, tmrs)

    def _build(
        self,
        section: VMNSection,
        groups: list[Group],
        default_action: Action,
        vmn_defaults: dict[str, Action],
        tmrs: list[TMR],
    ) -> TMRSet:
        try:
            return TMRSet(
                tmrs=tuple(tmrs),
                vmns=section.vmns,
                groups=tuple(groups),
                default_action=default_action,
                vmn_defaults=vmn_defaults,
            )
        except ValueError as error:  # pragma: no cover - every rule TMRSet checks is checked above with lines
            self.reader.report((), str(error))
            self.reader.raise_if_any()
            raise

    # groups

    def _group_names(self, value: object) -> tuple[frozenset[str], bool]:
        if value is None:
            return frozenset(), True
        if not isinstance(value, dict):
            return frozenset(), False
        return frozenset(value), True

    def _groups(self, value: object) -> list[Group]:
        reader = self.reader
        if value is None:
            return []
        if not isinstance(value, dict):
            reader.report(("groups",), f"expected a mapping of group names to members; found {describe(value)}")
            return []
        groups: list[Group] = []
        for name, body in value.items():
            path: Path = ("groups", name)
            valid = check_name(reader, path, name, "group")
            if name in self.names.vmns:
                reader.report(path, f"{name!r} names both a VMN and a group; give them different names")
                valid = False
            group = self._group(path, name, body)
            if group is not None and valid:
                groups.append(group)
        return groups

    def _group(self, path: Path, name: str, body: object) -> Group | None:
        reader = self.reader
        vmns: list[str] = []
        networks: list[IPNetwork] = []
        ok = True
        if isinstance(body, dict):
            fields = reader.mapping(path, body, GROUP_KEYS)
            assert fields is not None
            for item_path, item in reader.items((*path, "vmns"), fields.get("vmns", [])):
                member = self._member_vmn(item_path, item)
                ok = ok and member is not None
                if member is not None and member not in vmns:
                    vmns.append(member)
            for item_path, item in reader.items((*path, "networks"), fields.get("networks", [])):
                network = self._network(item_path, item)
                ok = ok and network is not None
                if network is not None and network not in networks:
                    networks.append(network)
        elif body is not None:
            for item_path, item in reader.items(path, body):
                if isinstance(item, str) and looks_like_address(item):
                    network = self._network(item_path, item)
                    ok = ok and network is not None
                    if network is not None and network not in networks:
                        networks.append(network)
                else:
                    member = self._member_vmn(item_path, item)
                    ok = ok and member is not None
                    if member is not None and member not in vmns:
                        vmns.append(member)
        misspelt = isinstance(body, dict) and any(key not in GROUP_KEYS for key in body)
        if ok and not misspelt and not (vmns or networks):
            reader.report(path, "the group has no members; list VMNs and/or networks")
            return None
        return Group(name=name, vmns=tuple(vmns), networks=tuple(networks)) if ok else None

    def _member_vmn(self, path: Path, value: object) -> str | None:
        reader = self.reader
        name = reader.text(path, value)
        if name is None:
            return None
        if name in self.names.vmns:
            return name
        if name in self.names.groups:
            reader.report(path, f"{name!r} is a group; a group lists VMNs and networks, not other groups")
        elif self.names.complete:
            reader.report(path, f"unknown VMN {name!r}{self._did_you_mean(name, self.names.vmns)}")
        return None

    # defaults

    def _defaults(self, value: object) -> tuple[Action, dict[str, Action]]:
        reader = self.reader
        if value is None:
            return Action.ALLOW, {}
        fields = reader.mapping(("defaults",), value, DEFAULTS_KEYS)
        if fields is None:
            return Action.ALLOW, {}
        action = Action.ALLOW
        if "action" in fields:
            action = reader.choice(("defaults", "action"), fields["action"], Action, "action") or Action.ALLOW
        per_vmn: dict[str, Action] = {}
        vmns = fields.get("vmns")
        if vmns is None:
            return action, per_vmn
        if not isinstance(vmns, dict):
            reader.report(("defaults", "vmns"), f"expected a mapping of VMN names to actions; found {describe(vmns)}")
            return action, per_vmn
        for name, raw in vmns.items():
            path: Path = ("defaults", "vmns", name)
            chosen = reader.choice(path, raw, Action, "action")
            if name in self.names.vmns:
                if chosen is not None:
                    per_vmn[name] = chosen
            elif name in self.names.groups:
                reader.report(path, f"{name!r} is a group; per-VMN defaults name VMNs")
            elif self.names.complete:
                reader.report(path, f"default for unknown VMN {name!r}{self._did_you_mean(name, self.names.vmns)}")
        return action, per_vmn

    # TMRs

    def _tmrs(self, value: object) -> list[TMR]:
        reader = self.reader
        if value is None:
            return []
        if not isinstance(value, list):
            reader.report(("tmrs",), f"expected a list of TMRs; found {describe(value)}")
            return []
        tmrs: list[TMR] = []
        first_ids: dict[str, int | None] = {}
        for index, item in enumerate(value):
            tmr = self._tmr(("tmrs", index), item, first_ids)
            if tmr is not None:
                tmrs.append(tmr)
        return tmrs

    def _tmr(self, path: Path, item: object, first_ids: dict[str, int | None]) -> TMR | None:
        reader = self.reader
        before = len(reader.issues)
        fields = reader.mapping(path, item, TMR_KEYS, TMR_REQUIRED)
        if fields is None:
            return None
        tmr_id = self._id((*path, "id"), fields.get("id"), first_ids) if "id" in fields else None
        priority = (
            reader.integer((*path, "priority"), fields["priority"], 0, MAX_PRIORITY) if "priority" in fields else None
        )
        src = self._endpoint((*path, "src"), fields["src"]) if "src" in fields else None
        dst = self._endpoint((*path, "dst"), fields["dst"]) if "dst" in fields else None
        protocol: Protocol | None = Protocol.ANY
        if "protocol" in fields:
            protocol = reader.choice((*path, "protocol"), fields["protocol"], Protocol, "protocol")
        ports: tuple[PortRange, ...] = ()
        if "ports" in fields:
            ports = self._ports((*path, "ports"), fields["ports"], protocol, "protocol" in fields)
        action = reader.choice((*path, "action"), fields["action"], Action, "action") if "action" in fields else None
        expires_at = self._expires_at((*path, "expires_at"), fields["expires_at"]) if "expires_at" in fields else None
        comment = reader.text((*path, "comment"), fields["comment"]) if "comment" in fields else ""
        if src is not None and dst is not None:
            self._check_families(path, src, dst)
        if len(reader.issues) > before:
            return None
        if tmr_id is None or priority is None or src is None or dst is None:
            return None  # an endpoint that cannot be resolved because its section has errors, reported there
        if protocol is None or action is None or comment is None:  # pragma: no cover - reported above
            return None
        try:
            return TMR(
                id=tmr_id,
                priority=priority,
                src=src,
                dst=dst,
                action=action,
                protocol=protocol,
                ports=ports,
                expires_at=expires_at,
                comment=comment,
            )
        except ValueError as error:  # pragma: no cover - TMR's checks are made above with lines
            reader.report(path, str(error))
            return None

    def _id(self, path: Path, value: object, first_ids: dict[str, int | None]) -> str | None:
        reader = self.reader
        tmr_id = reader.text(path, value)
        if tmr_id is None:
            return None
        if not ID_PATTERN.match(tmr_id):
            reader.report(
                path,
                f"{tmr_id!r} is not a valid TMR id: start with a letter or digit, then use letters, digits, "
                "'_', '.' or '-' (at most 64 characters)",
            )
            return None
        if tmr_id in first_ids:
            first = first_ids[tmr_id]
            reader.report(path, f"duplicate TMR id {tmr_id!r}; first used at line {first}")
            return None
        first_ids[tmr_id] = reader.line(path)
        return tmr_id

    def _endpoint(self, path: Path, value: object) -> Endpoint | None:
        reader = self.reader
        if isinstance(value, list | dict):
            reader.report(
                path,
                f"expected one endpoint (any, a VMN or group name, or an address); found {describe(value)}; "
                "name a group to match several",
            )
            return None
        text = reader.text(path, value)
        if text is None:
            return None
        if text == "any":
            return Endpoint.any()
        if looks_like_address(text):
            network = self._network(path, text)
            return None if network is None else Endpoint.network(network)
        is_vmn, is_group = text in self.names.vmns, text in self.names.groups
        if is_vmn and is_group:
            reader.report(path, f"{text!r} is ambiguous: it names both a VMN and a group")
            return None
        if is_vmn:
            return Endpoint.vmn(text)
        if is_group:
            return Endpoint.group(text)
        if not NAME_PATTERN.match(text):
            reader.report(path, f"{text!r} is not any, a VMN or group name, or an IP address or CIDR network")
        elif self.names.complete:
            hint = (
                "; write any in lower case"
                if text.lower() == "any"
                else self._did_you_mean(text, self.names.vmns | self.names.groups)
            )
            reader.report(path, f"unknown name {text!r}: no VMN or group has it{hint}")
        # Otherwise the vmns or groups section could not be read, and its error is reported already.
        return None

    def _network(self, path: Path, value: object) -> IPNetwork | None:
        text = self.reader.text(path, value)
        if text is None:
            return None
        network = parse_network(text)
        if isinstance(network, str):
            self.reader.report(path, network)
            return None
        return network

    def _check_families(self, path: Path, src: Endpoint, dst: Endpoint) -> None:
        if src.kind is not EndpointKind.NETWORK or dst.kind is not EndpointKind.NETWORK:
            return
        src_version, dst_version = src.as_network.version, dst.as_network.version
        if src_version != dst_version:
            self.reader.report(
                (*path, "dst"),
                f"dst is an IPv{dst_version} network but src is IPv{src_version}; this TMR can never match",
            )

    def _ports(
        self, path: Path, value: object, protocol: Protocol | None, protocol_given: bool
    ) -> tuple[PortRange, ...]:
        reader = self.reader
        if value == []:
            reader.report(path, "empty list of ports; leave ports out to match every port")
            return ()
        ranges: list[PortRange] = []
        for item_path, item in reader.items(path, value):
            port_range = self._port_range(item_path, item)
            if port_range is not None:
                ranges.append(port_range)
        if protocol is not None and not protocol.has_ports:
            written = f"this TMR's protocol is {protocol}" if protocol_given else "protocol is left out (any)"
            reader.report(path, f"ports need protocol tcp or udp; {written}")
            return ()
        return normalize_ports(ranges)

    def _port_range(self, path: Path, value: object) -> PortRange | None:
        reader = self.reader
        if isinstance(value, bool) or not isinstance(value, int | str):
            reader.report(path, f"expected a port number or a range like 8000-8080; found {describe(value)}")
            return None
        if isinstance(value, int):
            first = last = value
        else:
            match = _PORTS.match(value)
            if match is None:
                reader.report(path, f"{value!r} is not a port or a range; write a range as first-last, e.g. 8000-8080")
                return None
            first = int(match.group(1))
            last = int(match.group(2) or first)
        for port in (first, last):
            if not 0 <= port <= 65535:
                reader.report(path, f"port {port} is outside 0-65535")
                return None
        if first > last:
            reader.report(path, f"range {first}-{last} is reversed; write {last}-{first}")
            return None
        return PortRange(first, last)

    def _expires_at(self, path: Path, value: object) -> datetime | None:
        reader = self.reader
        text = reader.text(path, value)
        if text is None:
            return None
        try:
            moment = datetime.fromisoformat(text.strip())
        except ValueError:
            reader.report(path, f"{text!r} is not an ISO 8601 date and time, e.g. 2026-12-01T00:00:00Z")
            return None
        if moment.tzinfo is None:
            reader.report(path, f"{text} has no timezone; add Z for UTC or an offset such as +01:00")
            return None
        return moment.astimezone(UTC)

    @staticmethod
    def _did_you_mean(name: str, candidates: frozenset[str]) -> str:
        guess = suggest(name, sorted(candidates))
        return f"; did you mean {guess!r}?" if guess is not None else ""
