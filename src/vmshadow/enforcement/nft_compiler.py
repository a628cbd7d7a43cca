"""Compile a `TMRSet` into one nftables JSON document (libnftables-json) for ``nft -j -f``: pure and deterministic.

The document replaces the bridge table ``vmshadow`` in one transaction: ``add table`` (so that the delete cannot
fail), ``delete table``, ``add table``, then every set, chain and rule. nftables commits a batch whole or not at
all, so the kernel holds either the previous ruleset or the new one, never a mixture and never none. (Deleting
rather than flushing the table is deliberate: a flush keeps the old sets, so a set whose type or flags changed
makes the whole batch fail with "File exists", and the sets of removed VMNs would linger.)

The base chain ``forward`` (hook forward, priority 0, policy accept) holds, in order::

    iifname != @bridge_ports accept                           "vmshadow unmanaged ports"
    meta protocol arp accept                                  "vmshadow arp"
    icmpv6 type {nd-neighbor-solicit, nd-neighbor-advert} accept   "vmshadow nd"
    <tuple> @reply4 | @reply4n | @reply6 | @reply6n counter accept  "vmshadow replies" (6 rules)
    <rules of each TMR in priority order> counter jump allowed | drop   "tmr <id>"
    <every VMN with a default as source, then as destination> counter jump allowed | drop
                                                              "vmn-default <name> src|dst"
    counter jump allowed | drop                               "default"

and the chain ``allowed``, where every accepted packet goes::

    counter                                                   "vmshadow version N"
    <record the reverse tuple in reply4 / reply4n / reply6 / reply6n>
    accept

* **Version.** nft 1.0.6 neither reads nor writes table comments in JSON (and ``add table`` does not change the
  comment of an existing table), so the version is the comment of the first rule of ``allowed``: a small chain,
  so ``nft list chain`` reads it in milliseconds however many TMRs there are (`version_of`).
* **Scope.** The first rule lets every frame through that did not enter on a port of a managed bridge, so vmshadow
  never touches other bridges. It matches the ingress port (``iifname``) against the set ``bridge_ports``, not the
  bridge (``meta ibrname``): ``meta ibrname`` needs CONFIG_NFT_BRIDGE_META, which kernels may lack (the 6.x
  kernel this was built on does). The enforcer fills ``bridge_ports`` at apply time with the managed bridges' ports and
  the interfaces the VMNs declare; a port added later is outside vmshadow until the next apply.
* **VMNs and groups** become named sets: ``vmn_<name>_if`` (bridge ports, ``ifname``), ``_mac`` (``ether_addr``),
  ``_ip4`` / ``_ip6`` (addresses); a group's ``grp_<name>_*`` sets hold its members' identifiers and its networks
  (interval sets, overlaps merged). An endpoint matches when *any* of its identifiers does, as in the evaluator
  (`TMRSet.endpoint_matches`: the VMN identified by MAC, or one of its addresses), plus the bridge port, which only
  the kernel sees and which a guest cannot forge. One rule cannot OR different fields, so a TMR becomes one rule per
  pair of identifier kinds (source x destination) whose address families agree; all of them carry the TMR's
  comment and follow each other, so first-match order is kept. A TMR that can never match (an IPv4 network to an
  IPv6-only VMN) has no rule.
* **Protocols and ports**: ``tcp dport`` / ``udp dport`` with a port, a range, or a named interval set
  ``dports_<n>`` shared by every TMR with the same list (thousands of anonymous sets load many times slower),
  ``meta l4proto`` (tcp, udp, icmp, ipv6-icmp) without ports. A TMR for any protocol matches IPv4 and IPv6 only;
  ARP and neighbour discovery are always let through (without them no IP traffic works), and other non-IP frames
  meet only the defaults.
* **Replies.** Bridge connection tracking (CONFIG_NF_CONNTRACK_BRIDGE) is missing on some kernels (this one), so
  the table keeps its own: every accepted packet jumps to ``allowed``, which records the reverse tuple (addresses,
  protocol and, for TCP/UDP, ports) in the dynamic sets ``reply4`` / ``reply6`` (with ports) or ``reply4n`` /
  ``reply6n`` (without) for `REPLY_TIMEOUT_S`, then accepts. A packet whose tuple is there answers an allowed flow
  and is accepted before any TMR, so a flow is judged by the packets of the side that opened it, as the evaluator
  judges flows. For ICMP only answers and errors count as replies (echo-reply, destination-unreachable, ...): a
  host that was pinged may not ping back on the strength of it. Each packet the opener sends refreshes the record,
  and a new version starts with empty sets: a flow the new version denies loses its replies at once, one it allows
  gets them back with its opener's next packet. When a set is full the record is skipped and the packet accepted
  all the same.
* **Temporary TMRs** stop matching at expiry even while vmshadow is down: each one's rules start with
  ``meta protocol @gate_<n>``, a set of ether types {ip, ip6} whose elements carry a kernel timeout of the whole
  seconds left at `at`, rounded down (a TMR may stop up to a second early, never late; nft 1.0.6 JSON takes only
  whole seconds, and silently drops a fractional timeout). When the elements expire, the rules match nothing.
  TMRs already expired at `at`, or with less than a second left, are left out.
"""

from __future__ import annotations

import gc
import ipaddress
import math
import re
import socket
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from vmshadow.domain.errors import InputError, Issue
from vmshadow.domain.net import IPNetwork, PortRange, Protocol, normalize_ports
from vmshadow.domain.tmr import TMR, Action, Endpoint, EndpointKind, TMRSet
from vmshadow.domain.vmn import VMN, Group

JSON = dict[str, Any]

FAMILY = "bridge"
TABLE = "vmshadow"
CHAIN = "forward"
ALLOWED_CHAIN = "allowed"
PORTS_SET = "bridge_ports"
REPLY_SETS = {4: ("reply4", "reply4n"), 6: ("reply6", "reply6n")}
REPLY_TIMEOUT_S = 300
REPLY_SET_SIZE = 65536
MAX_COMMENT_BYTES = 128  # libnftnl's limit for a rule comment

VERSION_PREFIX = "vmshadow version "
TMR_PREFIX = "tmr "
DEFAULT_COMMENT = "default"
REPLIES_COMMENT = "vmshadow replies"
UNMANAGED_COMMENT = "vmshadow unmanaged ports"

_SET_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$")
_L4PROTO = {Protocol.TCP: "tcp", Protocol.UDP: "udp", Protocol.ICMP: "icmp", Protocol.ICMPV6: "ipv6-icmp"}
_PROTOCOL_FAMILY = {Protocol.ICMP: 4, Protocol.ICMPV6: 6}
_ICMP_PROTOCOL = {4: Protocol.ICMP, 6: Protocol.ICMPV6}
_ICMP = {4: "icmp", 6: "icmpv6"}
_ICMP_ANSWERS = {
    4: ("echo-reply", "destination-unreachable", "time-exceeded", "parameter-problem"),
    6: ("echo-reply", "destination-unreachable", "packet-too-big", "time-exceeded", "parameter-problem"),
}
_ADDRESS_FIELD = {"src": "saddr", "dst": "daddr"}
_PORT_KEY = {"src": "iifname", "dst": "oifname"}


def version_comment(version: int) -> str:
    return f"{VERSION_PREFIX}{version}"


def tmr_comment(tmr_id: str) -> str:
    return f"{TMR_PREFIX}{tmr_id}"


def tmr_id_of(comment: str) -> str | None:
    """The TMR id a rule comment names, or None for vmshadow's own rules."""
    return comment[len(TMR_PREFIX) :] if comment.startswith(TMR_PREFIX) else None


def compile_tmrset(tmrset: TMRSet, *, ports: Sequence[str], at: datetime, version: int) -> JSON:
    """The nftables JSON document that puts `tmrset` in force as `version`, for the moment `at`.

    `ports` are the bridge ports vmshadow manages (frames entering elsewhere are let through untouched). The result
    depends only on the arguments. Raises `InputError` when a name or id cannot be carried into nftables.
    """
    if at.tzinfo is None:
        raise ValueError("at must be timezone-aware")
    with without_gc():
        return _Compiler(tmrset, ports, at, version).document()


@contextmanager
def without_gc() -> Iterator[None]:
    """Build a large tree of dicts and lists without the cyclic garbage collector: the tree has no cycles, and at
    10,000 TMRs the collector's passes over the growing tree took more than half of the compile time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# --- reading documents and listings -------------------------------------------------------------------------------


def rules_of(document: JSON, chain: str = CHAIN) -> list[JSON]:
    """The rules of `chain` in a document to apply (``add rule``) or in a listing (``rule``), in order."""
    out: list[JSON] = []
    for item in document.get("nftables", []):
        rule = item.get("rule") or item.get("add", {}).get("rule")
        if rule is not None and rule.get("table") == TABLE and rule.get("chain") == chain:
            out.append(rule)
    return out


def comments_of(document: JSON, chain: str = CHAIN) -> list[str]:
    return [rule.get("comment", "") for rule in rules_of(document, chain)]


def version_of(document: JSON) -> int | None:
    """The version named by the first rule of the chain ``allowed``, or None when there is none."""
    comments = comments_of(document, ALLOWED_CHAIN)
    if not comments or not comments[0].startswith(VERSION_PREFIX):
        return None
    number = comments[0][len(VERSION_PREFIX) :]
    return int(number) if number.isdigit() else None


def sets_of(document: JSON) -> dict[str, JSON]:
    """The sets of the table in a document to apply or in a listing, by name."""
    out: dict[str, JSON] = {}
    for item in document.get("nftables", []):
        found = item.get("set") or item.get("add", {}).get("set")
        if found is not None and found.get("table") == TABLE:
            out[found["name"]] = found
    return out


def gate_sets(document: JSON) -> dict[str, JSON]:
    return {name: s for name, s in sets_of(document).items() if name.startswith("gate_")}


def counters_of(listing: JSON) -> dict[str, tuple[int, int]]:
    """(packets, bytes) per rule comment of the base chain, summed over the rules that share a comment."""
    out: dict[str, tuple[int, int]] = {}
    for rule in rules_of(listing):
        for expr in rule.get("expr", []):
            counter = expr.get("counter") if isinstance(expr, dict) else None
            if isinstance(counter, dict):
                packets, octets = out.get(rule.get("comment", ""), (0, 0))
                out[rule.get("comment", "")] = (packets + int(counter["packets"]), octets + int(counter["bytes"]))
    return out


# --- expressions ------------------------------------------------------------------------------------------------


def _meta(key: str) -> JSON:
    return {"meta": {"key": key}}


def _payload(protocol: str, field: str) -> JSON:
    return {"payload": {"protocol": protocol, "field": field}}


def _match(left: JSON, right: Any, op: str = "==") -> JSON:
    return {"match": {"op": op, "left": left, "right": right}}


def _counter() -> JSON:
    return {"counter": None}


def _verdict(action: Action) -> JSON:
    return {"jump": {"target": ALLOWED_CHAIN}} if action is Action.ALLOW else {"drop": None}


def _network_value(network: IPNetwork) -> Any:
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return {"prefix": {"addr": str(network.network_address), "len": network.prefixlen}}


def _port_value(r: PortRange) -> Any:
    return r.first if r.first == r.last else {"range": [r.first, r.last]}


def _network(endpoint: Endpoint) -> tuple[int, Any]:
    """The address family and nftables value of a network endpoint.

    `Endpoint.network` writes networks canonically (``address/length``, host bits zero); those are read with
    `socket.inet_pton`, several times faster than `ipaddress` (it shows at 10,000 TMRs). Anything else goes
    through `ipaddress`."""
    address, _, length = endpoint.value.partition("/")
    family = 6 if ":" in address else 4
    try:
        packed = socket.inet_pton(socket.AF_INET6 if family == 6 else socket.AF_INET, address)
    except OSError:
        packed = b""
    bits = len(packed) * 8
    if packed and length.isdigit() and int(length) <= bits:
        prefix = int(length)
        if int.from_bytes(packed, "big") & ((1 << (bits - prefix)) - 1) == 0:
            return family, address if prefix == bits else {"prefix": {"addr": address, "len": prefix}}
    try:
        network = endpoint.as_network
    except ValueError as error:  # only a set built from unchecked JSON gets here; a TMR file cannot
        raise InputError(Issue(source="tmrset", field="network", message=str(error))) from None
    return network.version, _network_value(network)


def _addresses(vmn: VMN, family: int) -> list[str]:
    return [str(a) for a in sorted({a for a in vmn.addresses if a.version == family}, key=int)]


def _ip(family: int) -> str:
    return "ip" if family == 4 else "ip6"


@dataclass(frozen=True, slots=True)
class _Alternative:
    """One way an endpoint can match: an address family (None: either) and the expression (None: anything)."""

    family: int | None
    expr: JSON | None


@dataclass(frozen=True, slots=True)
class _Identity:
    """The named sets that identify a VMN or a group: kind -> set name, in the order rules are written."""

    sets: tuple[tuple[str, str], ...]  # (kind, set name); kind in if, mac, ip4, ip6


_KINDS = ("if", "mac", "ip4", "ip6")
_SET_TYPES = {"if": "ifname", "mac": "ether_addr", "ip4": "ipv4_addr", "ip6": "ipv6_addr"}


class _Compiler:
    def __init__(self, tmrset: TMRSet, ports: Sequence[str], at: datetime, version: int) -> None:
        self.tmrset = tmrset
        self.ports = sorted(set(ports))
        self.at = at
        self.version = version
        self.items: list[JSON] = []
        self.identities: dict[tuple[EndpointKind, str], _Identity] = {}
        self.port_sets: dict[tuple[PortRange, ...], str] = {}
        self.issues: list[Issue] = []

    def document(self) -> JSON:
        table = {"family": FAMILY, "name": TABLE}
        self.items = [
            {"metainfo": {"json_schema_version": 1}},
            {"add": {"table": dict(table)}},
            {"delete": {"table": dict(table)}},
            {"add": {"table": dict(table)}},
        ]
        self._set(PORTS_SET, "ifname", self.ports)
        for vmn in self.tmrset.vmns:
            self._vmn_sets(vmn)
        for group in self.tmrset.groups:
            self._group_sets(group)
        self._reply_sets()
        rules = self._rules()
        if self.issues:
            raise InputError(self.issues)
        self._allowed_chain()
        self.items.append(
            {
                "add": {
                    "chain": {
                        "family": FAMILY,
                        "table": TABLE,
                        "name": CHAIN,
                        "type": "filter",
                        "hook": "forward",
                        "prio": 0,
                        "policy": "accept",
                    }
                }
            }
        )
        for comment, exprs in rules:
            self._rule(CHAIN, exprs, comment)
        return {"nftables": self.items}

    # sets

    def _set(self, name: str, type_: str | list[str], elements: Sequence[Any], **extra: Any) -> None:
        body: JSON = {"family": FAMILY, "table": TABLE, "name": name, "type": type_, **extra}
        if elements:
            body["elem"] = list(elements)
        self.items.append({"add": {"set": body}})

    def _set_name(self, prefix: str, name: str, what: str) -> str | None:
        if not _SET_NAME.match(name):
            self.issues.append(
                Issue(source="tmrset", field=f"{what}.{name}", message="this name cannot name an nftables set")
            )
            return None
        return f"{prefix}_{name}"

    def _identity_sets(self, base: str, members: Mapping[str, Sequence[Any]], flags: Mapping[str, JSON]) -> _Identity:
        sets: list[tuple[str, str]] = []
        for kind in _KINDS:
            elements = members.get(kind, ())
            if not elements:
                continue
            name = f"{base}_{kind}"
            self._set(name, _SET_TYPES[kind], elements, **flags.get(kind, {}))
            sets.append((kind, name))
        return _Identity(tuple(sets))

    def _vmn_sets(self, vmn: VMN) -> None:
        base = self._set_name("vmn", vmn.name, "vmns")
        if base is None:
            return
        members: dict[str, list[Any]] = {
            "if": sorted(set(vmn.interfaces)),
            "mac": sorted(set(vmn.macs)),
            "ip4": _addresses(vmn, 4),
            "ip6": _addresses(vmn, 6),
        }
        self.identities[(EndpointKind.VMN, vmn.name)] = self._identity_sets(base, members, {})

    def _group_sets(self, group: Group) -> None:
        base = self._set_name("grp", group.name, "groups")
        if base is None:
            return
        members_vmns = [v for v in (self.tmrset.vmn(n) for n in group.vmns) if v is not None]
        networks = [*group.networks, *(ipaddress.ip_network(a) for v in members_vmns for a in v.addresses)]
        v4 = [n for n in networks if isinstance(n, ipaddress.IPv4Network)]
        v6 = [n for n in networks if isinstance(n, ipaddress.IPv6Network)]
        members: dict[str, list[Any]] = {
            "if": sorted({i for v in members_vmns for i in v.interfaces}),
            "mac": sorted({m for v in members_vmns for m in v.macs}),
            # merged and sorted: an interval set refuses overlapping elements
            "ip4": [_network_value(n) for n in ipaddress.collapse_addresses(v4)],
            "ip6": [_network_value(n) for n in ipaddress.collapse_addresses(v6)],
        }
        interval = {"flags": ["interval"]}
        self.identities[(EndpointKind.GROUP, group.name)] = self._identity_sets(
            base, members, {"ip4": interval, "ip6": interval}
        )

    def _reply_sets(self) -> None:
        for family, (ports_set, plain_set) in REPLY_SETS.items():
            address = "ipv4_addr" if family == 4 else "ipv6_addr"
            dynamic = {"flags": ["timeout"], "timeout": REPLY_TIMEOUT_S, "size": REPLY_SET_SIZE}
            self._set(ports_set, [address, address, "inet_proto", "inet_service", "inet_service"], (), **dynamic)
            self._set(plain_set, [address, address, "inet_proto"], (), **dynamic)

    # rules

    def _rule(self, chain: str, exprs: list[JSON], comment: str | None = None) -> None:
        body: JSON = {"family": FAMILY, "table": TABLE, "chain": chain, "expr": exprs}
        if comment is not None:
            body["comment"] = comment
        self.items.append({"add": {"rule": body}})

    def _allowed_chain(self) -> None:
        self.items.append({"add": {"chain": {"family": FAMILY, "table": TABLE, "name": ALLOWED_CHAIN}}})
        self._rule(ALLOWED_CHAIN, [_counter()], version_comment(self.version))
        tcp_udp = {"set": ["tcp", "udp"]}
        for family, (ports_set, plain_set) in REPLY_SETS.items():
            ip = _ip(family)
            address_pair = [_payload(ip, "daddr"), _payload(ip, "saddr"), _meta("l4proto")]
            with_ports = [*address_pair, _payload("th", "dport"), _payload("th", "sport")]
            guard = _match(_meta("protocol"), ip)
            self._rule(
                ALLOWED_CHAIN,
                [
                    guard,
                    _match(_meta("l4proto"), tcp_udp),
                    {"set": {"op": "update", "elem": {"concat": with_ports}, "set": f"@{ports_set}"}},
                ],
            )
            self._rule(
                ALLOWED_CHAIN,
                [
                    guard,
                    _match(_meta("l4proto"), tcp_udp, "!="),
                    {"set": {"op": "update", "elem": {"concat": address_pair}, "set": f"@{plain_set}"}},
                ],
            )
        self._rule(ALLOWED_CHAIN, [{"accept": None}])

    def _rules(self) -> list[tuple[str, list[JSON]]]:
        rules: list[tuple[str, list[JSON]]] = [
            (UNMANAGED_COMMENT, [_match(_meta("iifname"), f"@{PORTS_SET}", "!="), {"accept": None}]),
            ("vmshadow arp", [_match(_meta("protocol"), "arp"), {"accept": None}]),
            (
                "vmshadow nd",
                [
                    _match(_payload("icmpv6", "type"), {"set": ["nd-neighbor-solicit", "nd-neighbor-advert"]}),
                    {"accept": None},
                ],
            ),
        ]
        for family, (ports_set, plain_set) in REPLY_SETS.items():
            ip, icmp = _ip(family), _ICMP[family]
            address_pair = [_payload(ip, "saddr"), _payload(ip, "daddr"), _meta("l4proto")]
            with_ports = [*address_pair, _payload("th", "sport"), _payload("th", "dport")]
            guard = _match(_meta("protocol"), ip)
            accept = [_counter(), {"accept": None}]
            rules += [
                (REPLIES_COMMENT, [guard, _match({"concat": with_ports}, f"@{ports_set}"), *accept]),
                # ICMP: only answers and errors; a request back to the host that pinged is a flow of its own
                (
                    REPLIES_COMMENT,
                    [
                        guard,
                        _match({"concat": address_pair}, f"@{plain_set}"),
                        _match(_payload(icmp, "type"), {"set": list(_ICMP_ANSWERS[family])}),
                        *accept,
                    ],
                ),
                (
                    REPLIES_COMMENT,
                    [
                        guard,
                        _match(_meta("l4proto"), {"set": ["tcp", "udp", _L4PROTO[_ICMP_PROTOCOL[family]]]}, "!="),
                        _match({"concat": address_pair}, f"@{plain_set}"),
                        *accept,
                    ],
                ),
            ]
        for index, tmr in enumerate(self.tmrset.tmrs, start=1):
            rules.extend(self._tmr_rules(index, tmr))
        for side in ("src", "dst"):
            for name, action in self.tmrset.vmn_defaults.items():
                for alternative in self._alternatives(Endpoint.vmn(name), side):
                    exprs = [alternative.expr] if alternative.expr is not None else []
                    rules.append((f"vmn-default {name} {side}", [*exprs, _counter(), _verdict(action)]))
        rules.append((DEFAULT_COMMENT, [_counter(), _verdict(self.tmrset.default_action)]))
        return rules

    def _gate_timeout_s(self, tmr: TMR) -> int | None:
        """Whole seconds left at `at` (None: no expiry); 0 means leave the TMR out."""
        if tmr.expires_at is None:
            return None
        left = (tmr.expires_at - self.at).total_seconds()
        return max(0, math.floor(left))

    def _tmr_rules(self, index: int, tmr: TMR) -> list[tuple[str, list[JSON]]]:
        comment = tmr_comment(tmr.id)
        if len(comment.encode()) > MAX_COMMENT_BYTES:
            self.issues.append(
                Issue(
                    source="tmrset",
                    field=f"tmrs.{tmr.id}",
                    message=f"the id is too long for an nftables comment (at most {MAX_COMMENT_BYTES - 4} bytes)",
                )
            )
            return []
        timeout = self._gate_timeout_s(tmr)
        if timeout == 0:
            return []
        gate: JSON | None = None
        if timeout is not None:
            name = f"gate_{index}"
            self._set(
                name,
                "ether_type",
                [{"elem": {"val": v, "timeout": timeout}} for v in ("ip", "ip6")],
                flags=["timeout"],
            )
            gate = _match(_meta("protocol"), f"@{name}")
        protocol_family = _PROTOCOL_FAMILY.get(tmr.protocol)
        protocol = self._protocol(tmr)
        rules: list[tuple[str, list[JSON]]] = []
        for src in self._alternatives(tmr.src, "src"):
            for dst in self._alternatives(tmr.dst, "dst"):
                agree, family = _agree(src.family, dst.family, protocol_family)
                if not agree:
                    continue
                exprs: list[JSON] = []
                if gate is not None:
                    exprs.append(gate)
                elif family is None and tmr.protocol is Protocol.ANY:
                    exprs.append(_match(_meta("protocol"), {"set": ["ip", "ip6"]}))
                exprs.extend(e for e in (src.expr, dst.expr) if e is not None)
                exprs.extend(protocol)
                exprs.extend((_counter(), _verdict(tmr.action)))
                rules.append((comment, exprs))
        return rules

    def _ports_value(self, ports: tuple[PortRange, ...]) -> Any:
        """One port or range as it is; several as a named set shared by every TMR with the same list (thousands
        of anonymous sets make the transaction many times slower to load)."""
        ports = normalize_ports(ports)
        if len(ports) == 1:
            return _port_value(ports[0])
        name = self.port_sets.get(ports)
        if name is None:
            name = self.port_sets[ports] = f"dports_{len(self.port_sets) + 1}"
            self._set(name, "inet_service", [_port_value(r) for r in ports], flags=["interval"])
        return f"@{name}"

    def _protocol(self, tmr: TMR) -> list[JSON]:
        """The protocol and port matches: ``tcp dport {...}`` (nft adds the ``meta l4proto`` check itself, which is
        cheaper to load than writing it), or ``meta l4proto <name>`` without ports."""
        if tmr.ports:
            return [_match(_payload(_L4PROTO[tmr.protocol], "dport"), self._ports_value(tmr.ports))]
        if tmr.protocol is Protocol.ANY:
            return []
        return [_match(_meta("l4proto"), _L4PROTO[tmr.protocol])]

    def _alternatives(self, endpoint: Endpoint, side: str) -> Iterable[_Alternative]:
        if endpoint.kind is EndpointKind.ANY:
            return [_Alternative(None, None)]
        if endpoint.kind is EndpointKind.NETWORK:
            family, value = _network(endpoint)
            return [_Alternative(family, _match(_payload(_ip(family), _ADDRESS_FIELD[side]), value))]
        identity = self.identities.get((endpoint.kind, endpoint.value))
        if identity is None:
            return []  # a name that could not become a set, reported already
        out: list[_Alternative] = []
        for kind, name in identity.sets:
            if kind == "if":
                out.append(_Alternative(None, _match(_meta(_PORT_KEY[side]), f"@{name}")))
            elif kind == "mac":
                out.append(_Alternative(None, _match(_payload("ether", _ADDRESS_FIELD[side]), f"@{name}")))
            else:
                family = 4 if kind == "ip4" else 6
                out.append(_Alternative(family, _match(_payload(_ip(family), _ADDRESS_FIELD[side]), f"@{name}")))
        return out


def _agree(*families: int | None) -> tuple[bool, int | None]:
    """Whether the address families agree, and the one they allow (None: either)."""
    chosen: int | None = None
    for family in families:
        if family is None:
            continue
        if chosen is not None and chosen != family:
            return False, None
        chosen = family
    return True, chosen
