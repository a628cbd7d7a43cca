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
    <key> @tmrs_<layer>_<n> jump allowed | drop   (one per set, layer by layer)   "vmshadow tmrs <layer>"
    jump staged_<n>                      (one per staged rule, in its layer)      "vmshadow staged <layer>"
    <every VMN with a default as source, then as destination> counter jump allowed | drop
                                                              "vmn-default <name> src|dst"
    counter jump allowed | drop                               "default"

and the chain ``allowed``, where every accepted packet goes::

    counter                                                   "vmshadow version N"
    <record the reverse tuple in reply4 / reply4n / reply6 / reply6n>
    accept

* **TMRs are set elements, not rules.** A rule is walked by every packet, so 10,000 one-rule TMRs cost every
  packet 10,000 tests. Here each TMR becomes elements of named sets, one set per layer, key shape, expiry and
  action, each looked up by one rule that drops or jumps to ``allowed``. The keys concatenate the fields the TMR
  names: its source and destination identifiers (``meta iifname`` / ``oifname``,
  ``ether saddr`` / ``daddr``, ``ip`` / ``ip6 saddr`` / ``daddr``; a side that is *any* is left out of the key),
  ``meta protocol`` when no address field fixes the family, ``meta l4proto`` unless the protocol is any, and
  ``th dport`` when the TMR has ports. Elements carry the comment ``tmr <id>`` and a counter (the sets' ``counter``
  flag), so hits are still counted per TMR; networks and port ranges make interval sets, the rest hash sets.
  A lookup costs about the same whatever the number of elements. (Not verdict maps: deleting a map in a
  transaction deactivates each of its elements for the next generation, and a packet that entered the old rules
  just before the commit then misses its element and falls through to the default; in a flood test 11-18 of
  ~550,000 denied datagrams got through ~160 replaces with maps, none with sets.)
* **First match by priority** is kept by layers (`nft_layers`): a TMR goes one layer above every earlier TMR it
  overlaps (some packet matches both), so overlapping TMRs are looked up in priority order and the elements of one
  layer never overlap; one layer is one set per key shape and action. TMRs that overlap nothing earlier share layer 0.
* **Shadowed TMRs** (`TMRSet.repeats`: the same source, destination, protocol and ports as an earlier TMR that
  lasts at least as long) can never decide a packet: the earlier one always matches first. They take no part in
  the layering (a rule set grown by hand or by approved proposals often repeats itself, and each repeat of an
  overlapping TMR would add a layer and rules); each is one element, with its comment and a counter that stays at
  zero, in the set ``tmrs_shadowed`` (``tmrs_shadowed_t`` with its timeout when temporary) that no rule looks up.
  So it is still in force, read back and counted like any TMR (`shadowed_ids` lists them).
* **VMNs and groups** are matched by *any* of their identifiers, as in the evaluator (`TMRSet.endpoint_matches`:
  the VMN identified by MAC, or one of its addresses), plus the bridge port, which only the kernel sees and which a
  guest cannot forge: one element per identifier (a group: its members' ports, MACs and addresses and its networks,
  overlaps merged). An element whose families disagree (an IPv4 network to an IPv6-only VMN) is not written, so a
  TMR that can never match has no element. The per-VMN defaults stay rules, over the named sets
  ``vmn_<name>_if`` / ``_mac`` / ``_ip4`` / ``_ip6`` of the VMNs that have one.
* **Staged rules** (`StagedRule`: a staged proposal's rule) count the packets they would decide and decide none:
  their elements (comment ``staged <proposal id>``) live in sets ``staged_<n>_<m>`` of a chain ``staged_<n>`` per
  rule, whose lookups ``return`` on the first element found (so a packet that carries several of a VMN's
  identifiers counts once); the base chain jumps there at the rule's place in the layering (its priority, after TMRs
  of equal priority), so earlier TMRs it overlaps decide first, and the packet comes back and goes on.
* **Version.** nft 1.0.6 neither reads nor writes table comments in JSON (and ``add table`` does not change the
  comment of an existing table), so the version is the comment of the first rule of ``allowed`` (`version_of`).
* **Scope.** The first rule lets every frame through that did not enter on a port of a managed bridge, so vmshadow
  never touches other bridges. It matches the ingress port (``iifname``) against the set ``bridge_ports``, not the
  bridge (``meta ibrname``): ``meta ibrname`` needs CONFIG_NFT_BRIDGE_META, which kernels may lack (the 6.x
  kernel this was built on does). The enforcer fills ``bridge_ports`` at apply time with the managed bridges' ports and
  the interfaces the VMNs declare; a port added later is outside vmshadow until the next apply.
* **Protocols**: ``meta l4proto`` (tcp, udp, icmp, ipv6-icmp). A TMR for any protocol matches IPv4 and IPv6 only;
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
* **Temporary TMRs** stop matching at expiry even while vmshadow is down: their elements live in sets of their own
  (flag ``timeout``) and carry a kernel timeout of the whole seconds left at `at`, rounded down (a TMR may stop up
  to a second early, never late; nft 1.0.6 JSON takes only whole seconds, and silently makes an element permanent
  when given a fraction). The kernel removes the elements when they expire. TMRs already expired at `at`, or with
  less than a second left, are left out.
"""

from __future__ import annotations

import gc
import ipaddress
import math
import re
import socket
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from vmshadow.domain.errors import InputError, Issue
from vmshadow.domain.net import IPNetwork, PortRange, Protocol, normalize_ports
from vmshadow.domain.tmr import TMR, Action, Endpoint, EndpointKind, TMRSet
from vmshadow.domain.vmn import VMN, Group
from vmshadow.enforcement.nft_layers import Block, Box, Side, assign_layers, range_blocks
from vmshadow.ports.enforcer import StagedRule

JSON = dict[str, Any]

FAMILY = "bridge"
TABLE = "vmshadow"
CHAIN = "forward"
ALLOWED_CHAIN = "allowed"
PORTS_SET = "bridge_ports"
PORT_LIST_PREFIX = "ports_"  # named sets of the port lists of TMRs compiled as rules
IP_FAMILIES_SET = "ip_families"  # {ip, ip6}: named, since an inline set is a kernel set object of each rule's own
TMR_MAP_PREFIX = "tmrs_"
SHADOWED_MAPS = (f"{TMR_MAP_PREFIX}shadowed", f"{TMR_MAP_PREFIX}shadowed_t")  # permanent, temporary; never looked up
STAGED_MAP_PREFIX = "staged_"
REPLY_SETS = {4: ("reply4", "reply4n"), 6: ("reply6", "reply6n")}
REPLY_TIMEOUT_S = 300
REPLY_SET_SIZE = 65536
MAX_COMMENT_BYTES = 128  # libnftnl's limit for a rule or element comment

VERSION_PREFIX = "vmshadow version "
TMR_PREFIX = "tmr "
TMRS_COMMENT_PREFIX = "vmshadow tmrs "
STAGED_PREFIX = "staged "
STAGED_COMMENT_PREFIX = "vmshadow staged "
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
    """The TMR id a rule or element comment names, or None for vmshadow's own rules."""
    return comment[len(TMR_PREFIX) :] if comment.startswith(TMR_PREFIX) else None


def staged_comment(proposal_id: str) -> str:
    return f"{STAGED_PREFIX}{proposal_id}"


def staged_id_of(comment: str) -> str | None:
    """The proposal id a staged element's comment names, or None."""
    return comment[len(STAGED_PREFIX) :] if comment.startswith(STAGED_PREFIX) else None


def compile_tmrset(
    tmrset: TMRSet, *, ports: Sequence[str], at: datetime, version: int, staged: Sequence[StagedRule] = ()
) -> JSON:
    """The nftables JSON document that puts `tmrset` in force as `version`, for the moment `at`, with the `staged`
    proposals' rules counting only.

    `ports` are the bridge ports vmshadow manages (frames entering elsewhere are let through untouched). The result
    depends only on the arguments. Raises `InputError` when a name or id cannot be carried into nftables.
    """
    return compile_counted(tmrset, ports=ports, at=at, version=version, staged=staged)[0]


def compile_counted(
    tmrset: TMRSet, *, ports: Sequence[str], at: datetime, version: int, staged: Sequence[StagedRule] = ()
) -> tuple[JSON, int]:
    """`compile_tmrset`, and the number of layers the TMRs (and staged rules) took."""
    if at.tzinfo is None:
        raise ValueError("at must be timezone-aware")
    with without_gc():
        compiler = _Compiler(tmrset, ports, at, version, staged)
        return compiler.document(), compiler.layers


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


def _objects(document: JSON, kind: str) -> Iterator[JSON]:
    """The objects of `kind` (rule, set, map) of the table, from a document to apply (``add``) or a listing."""
    for item in document.get("nftables", []):
        found = item.get(kind) or item.get("add", {}).get(kind)
        if found is not None and found.get("table") == TABLE:
            yield found


def rules_of(document: JSON, chain: str = CHAIN) -> list[JSON]:
    """The rules of `chain` in a document to apply (``add rule``) or in a listing (``rule``), in order."""
    return [rule for rule in _objects(document, "rule") if rule.get("chain") == chain]


def rules_of_table(document: JSON) -> list[JSON]:
    """Every rule of the table, whatever its chain, in order."""
    return list(_objects(document, "rule"))


def comments_of(document: JSON, chain: str = CHAIN) -> list[str]:
    return [rule.get("comment", "") for rule in rules_of(document, chain)]


def has_chain(document: JSON, name: str) -> bool:
    return any(chain.get("name") == name for chain in _objects(document, "chain"))


def version_of(document: JSON) -> int | None:
    """The version named by the first rule of the chain ``allowed``, or None when there is none."""
    comments = comments_of(document, ALLOWED_CHAIN)
    if not comments or not comments[0].startswith(VERSION_PREFIX):
        return None
    number = comments[0][len(VERSION_PREFIX) :]
    return int(number) if number.isdigit() else None


def sets_of(document: JSON) -> dict[str, JSON]:
    """The sets and maps of the table in a document to apply or in a listing, by name."""
    return {found["name"]: found for kind in ("set", "map") for found in _objects(document, kind)}


def tmr_maps(document: JSON) -> dict[str, JSON]:
    """The sets that hold the TMRs' elements, by name."""
    return {found["name"]: found for found in _objects(document, "set") if found["name"].startswith(TMR_MAP_PREFIX)}


def shadowed_ids(document: JSON) -> list[str]:
    """The TMRs compiled as shadowed (see the module doc), in priority order within each of the two sets."""
    maps = tmr_maps(document)
    comments = [e.get("comment", "") for name in SHADOWED_MAPS for e in map_elements(maps.get(name, {}))]
    return [tmr_id for tmr_id in map(tmr_id_of, comments) if tmr_id is not None]


def temporary_maps(document: JSON) -> dict[str, JSON]:
    """The TMR sets whose elements expire in the kernel (flag ``timeout``)."""
    return {name: m for name, m in tmr_maps(document).items() if "timeout" in m.get("flags", [])}


def staged_maps(document: JSON) -> dict[str, JSON]:
    """The sets that hold the staged (counting-only) rules' elements, by name."""
    return {found["name"]: found for found in _objects(document, "set") if found["name"].startswith(STAGED_MAP_PREFIX)}


def map_elements(found: JSON) -> list[JSON]:
    """The ``elem`` objects (val, comment, timeout, counter) of a TMR set in a document or a listing."""
    out: list[JSON] = []
    for entry in found.get("elem", []):
        key = entry[0] if isinstance(entry, list) else entry
        out.append(key["elem"] if isinstance(key, dict) and "elem" in key else {"val": key})
    return out


def tmr_element_comments(document: JSON) -> list[str]:
    """The comment (``tmr <id>``) of every TMR element, set by set."""
    return [e.get("comment", "") for m in tmr_maps(document).values() for e in map_elements(m)]


def counters_of(listing: JSON) -> dict[str, tuple[int, int]]:
    """(packets, bytes) per comment: the rules' counters of the base chain and the TMR and staged elements'
    counters (``tmr <id>``, ``staged <proposal id>``), summed over the rules or elements that share a comment."""
    out: dict[str, tuple[int, int]] = {}

    def add(comment: str, counter: JSON) -> None:
        packets, octets = out.get(comment, (0, 0))
        out[comment] = (packets + int(counter["packets"]), octets + int(counter["bytes"]))

    for rule in rules_of(listing):
        for expr in rule.get("expr", []):
            counter = expr.get("counter") if isinstance(expr, dict) else None
            if isinstance(counter, dict):
                add(rule.get("comment", ""), counter)
    for found in [*tmr_maps(listing).values(), *staged_maps(listing).values()]:
        for element in map_elements(found):
            if isinstance(element.get("counter"), dict):
                add(element.get("comment", ""), element["counter"])
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


def _verdict(action: Action | None) -> JSON:
    return {"jump": {"target": ALLOWED_CHAIN}} if action is Action.ALLOW else {"drop": None}


def _network_value(network: IPNetwork) -> Any:
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return {"prefix": {"addr": str(network.network_address), "len": network.prefixlen}}


def _port_value(r: PortRange) -> Any:
    return r.first if r.first == r.last else {"range": [r.first, r.last]}


def _ip(family: int) -> str:
    return "ip" if family == 4 else "ip6"


# --- key fields -----------------------------------------------------------------------------------------------

# A key field: its expression and its nftables type. Codes name them in a TMR set's shape.
_FIELDS: dict[str, tuple[JSON, str]] = {
    "iif": (_meta("iifname"), "ifname"),
    "oif": (_meta("oifname"), "ifname"),
    "smac": (_payload("ether", "saddr"), "ether_addr"),
    "dmac": (_payload("ether", "daddr"), "ether_addr"),
    "sip4": (_payload("ip", "saddr"), "ipv4_addr"),
    "dip4": (_payload("ip", "daddr"), "ipv4_addr"),
    "sip6": (_payload("ip6", "saddr"), "ipv6_addr"),
    "dip6": (_payload("ip6", "daddr"), "ipv6_addr"),
    "protocol": (_meta("protocol"), "ether_type"),
    "l4proto": (_meta("l4proto"), "inet_proto"),
    "dport": (_payload("th", "dport"), "inet_service"),
}
_SIDE_CODES = {("src", "if"): "iif", ("dst", "if"): "oif", ("src", "mac"): "smac", ("dst", "mac"): "dmac"}
# the transport part of a key: codes, values, blocks for the layering (None: any protocol), interval
_Transport = tuple[tuple[str, ...], tuple[Any, ...], tuple[Block, ...] | None, bool]


class _Alt(NamedTuple):
    """One identifier an endpoint matches by: its key field on each side, its nftables value, its address family
    (None: either), whether it is an interval, and its (kind, block) for the layering."""

    src_code: str
    dst_code: str
    value: Any
    family: int | None
    interval: bool
    side: Side


def _alt(kind: str, value: Any, block: Block, family: int | None, interval: bool = False) -> _Alt:
    if kind == "ip":
        return _Alt(f"sip{family}", f"dip{family}", value, family, interval, (kind, block))
    return _Alt(_SIDE_CODES[("src", kind)], _SIDE_CODES[("dst", kind)], value, family, interval, (kind, block))


def _ip_alt(address: str, prefix: int, family: int) -> _Alt | None:
    """The alternative of a canonical ``address/prefix``, read with `socket.inet_pton` (several times faster than
    `ipaddress`, which shows at 10,000 TMRs); None when it is not canonical."""
    try:
        packed = socket.inet_pton(socket.AF_INET6 if family == 6 else socket.AF_INET, address)
    except OSError:
        return None
    bits = len(packed) * 8
    if not 0 <= prefix <= bits:
        return None
    number, shift = int.from_bytes(packed, "big"), bits - prefix
    if number & ((1 << shift) - 1):
        return None
    value: Any = address if shift == 0 else {"prefix": {"addr": address, "len": prefix}}
    return _alt("ip", value, (shift, number >> shift), family, interval=shift > 0)


def _network_alt(network: IPNetwork) -> _Alt:
    shift = network.max_prefixlen - network.prefixlen
    block = (shift, int(network.network_address) >> shift)
    return _alt("ip", _network_value(network), block, network.version, interval=shift > 0)


def _mac_alt(mac: str) -> _Alt:
    return _alt("mac", mac, (0, int(mac.replace(":", ""), 16)), None)


def _if_alt(name: str) -> _Alt:
    return _alt("if", name, (0, int.from_bytes(name.encode(), "big")), None)


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


class _Element(NamedTuple):
    """One element of a TMR set: the shape of its key, its value, its box, whether it is an interval."""

    shape: tuple[str, ...]
    value: Any
    box: Box
    interval: bool


@dataclass(slots=True)
class _Map:
    """One TMR set: the elements of one layer, key shape, expiry and action (the rule that looks it up drops or
    jumps to ``allowed``; no action: a staged set, whose rule only counts)."""

    name: str
    shape: tuple[str, ...]
    layer: int
    timeout: bool
    action: Action | None
    entries: list[Any]
    interval: bool = False


@dataclass(slots=True)
class _StagedChain:
    """A staged rule: its chain (looked up in its layer by a jump), its comment and its sets, one per key shape."""

    name: str
    layer: int
    comment: str
    sets: list[_Map]


_KINDS = ("if", "mac", "ip4", "ip6")
_SET_TYPES = {"if": "ifname", "mac": "ether_addr", "ip4": "ipv4_addr", "ip6": "ipv6_addr"}


class _Compiler:
    def __init__(
        self, tmrset: TMRSet, ports: Sequence[str], at: datetime, version: int, staged: Sequence[StagedRule] = ()
    ) -> None:
        self.tmrset = tmrset
        self.staged = tuple(staged)
        self.ports = sorted(set(ports))
        self.at = at
        self.version = version
        self.items: list[JSON] = []
        self.alternatives: dict[tuple[EndpointKind, str], list[_Alt]] = {}
        self.default_sets: dict[str, tuple[tuple[str, str], ...]] = {}  # VMN -> (kind, set name)
        self.networks: dict[str, list[_Alt]] = {}
        self.transports: dict[tuple[Protocol, tuple[PortRange, ...]], list[_Transport]] = {}
        self.issues: list[Issue] = []
        self.rule_tmrs: list[tuple[int, TMR]] = []  # TMRs compiled as rules: (layer, TMR)
        self.layers = 0
        self.endpoint_sets: set[str] = set()
        self.port_sets: dict[str, str] = {}  # port list (repr) -> its set's name

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
            self._vmn(vmn)
        for group in self.tmrset.groups:
            self._group(group)
        self._reply_sets()
        self._allowed_chain()  # before the maps: their elements jump to it
        maps, staged = self._tmr_maps()
        self._staged_chains(staged)  # before the base chain's rules: they jump to them
        rules = self._rules(maps, staged)
        if self.issues:
            raise InputError(self.issues)
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

    def _valid_name(self, name: str, what: str) -> bool:
        if not _SET_NAME.match(name):
            self.issues.append(
                Issue(source="tmrset", field=f"{what}.{name}", message="this name cannot name an nftables set")
            )
            return False
        return True

    def _vmn(self, vmn: VMN) -> None:
        """The VMN's alternatives for TMR elements, and the named sets of a VMN with a default action."""
        if not self._valid_name(vmn.name, "vmns"):
            return
        interfaces, macs = sorted(set(vmn.interfaces)), sorted(set(vmn.macs))
        addresses = {f: sorted({a for a in vmn.addresses if a.version == f}, key=int) for f in (4, 6)}
        alts = [_if_alt(i) for i in interfaces] + [_mac_alt(m) for m in macs]
        alts += [_network_alt(ipaddress.ip_network(a)) for f in (4, 6) for a in addresses[f]]
        self.alternatives[(EndpointKind.VMN, vmn.name)] = alts
        if vmn.name not in self.tmrset.vmn_defaults:
            return
        members: dict[str, list[Any]] = {
            "if": interfaces,
            "mac": macs,
            "ip4": [str(a) for a in addresses[4]],
            "ip6": [str(a) for a in addresses[6]],
        }
        sets: list[tuple[str, str]] = []
        for kind in _KINDS:
            if members[kind]:
                name = f"vmn_{vmn.name}_{kind}"
                self._set(name, _SET_TYPES[kind], members[kind])
                self.endpoint_sets.add(name)  # TMRs compiled as rules use it too
                sets.append((kind, name))
        self.default_sets[vmn.name] = tuple(sets)

    def _group(self, group: Group) -> None:
        if not self._valid_name(group.name, "groups"):
            return
        members = [v for v in (self.tmrset.vmn(n) for n in group.vmns) if v is not None]
        networks = [*group.networks, *(ipaddress.ip_network(a) for v in members for a in v.addresses)]
        alts = [_if_alt(i) for i in sorted({i for v in members for i in v.interfaces})]
        alts += [_mac_alt(m) for m in sorted({m for v in members for m in v.macs})]
        # merged: elements of one TMR must not overlap each other
        v4 = [n for n in networks if isinstance(n, ipaddress.IPv4Network)]
        v6 = [n for n in networks if isinstance(n, ipaddress.IPv6Network)]
        alts += [_network_alt(n) for n in ipaddress.collapse_addresses(v4)]
        alts += [_network_alt(n) for n in ipaddress.collapse_addresses(v6)]
        self.alternatives[(EndpointKind.GROUP, group.name)] = alts

    def _reply_sets(self) -> None:
        for family, (ports_set, plain_set) in REPLY_SETS.items():
            address = "ipv4_addr" if family == 4 else "ipv6_addr"
            dynamic = {"flags": ["timeout"], "timeout": REPLY_TIMEOUT_S, "size": REPLY_SET_SIZE}
            self._set(ports_set, [address, address, "inet_proto", "inet_service", "inet_service"], (), **dynamic)
            self._set(plain_set, [address, address, "inet_proto"], (), **dynamic)

    # TMR maps

    def _tmr_maps(self) -> tuple[list[_Map], list[_StagedChain]]:
        """Every TMR's elements, in maps by layer, key shape and expiry; the maps added to the document. Staged rules
        take their place in priority order (after the TMRs of equal priority, as `TMRSet.with_tmr` puts them) and
        their elements go to counting-only sets of their own."""
        ordered_rules = sorted(
            [(t.priority, 0, i, t, tmr_comment(t.id), None) for i, t in enumerate(self.tmrset.tmrs)]
            + [(s.rule.priority, 1, i, s.rule, staged_comment(s.proposal_id), s) for i, s in enumerate(self.staged)],
            key=lambda item: item[:3],
        )
        kept: list[tuple[TMR, str, int | None, list[_Element], bool]] = []
        made: dict[tuple[Endpoint, Endpoint, Protocol, tuple[PortRange, ...]], list[_Element]] = {}
        for _, _, _, tmr, comment, staged_rule in ordered_rules:
            if len(comment.encode()) > MAX_COMMENT_BYTES:
                what = "tmrs" if staged_rule is None else "staged"
                name = tmr.id if staged_rule is None else staged_rule.proposal_id
                limit = MAX_COMMENT_BYTES - len(comment) + len(name)
                self.issues.append(
                    Issue(
                        source="tmrset",
                        field=f"{what}.{name}",
                        message=f"the id is too long for an nftables comment (at most {limit} bytes)",
                    )
                )
                continue
            timeout = self._timeout_s(tmr)
            if timeout == 0:
                continue
            match = (tmr.src, tmr.dst, tmr.protocol, tmr.ports)
            elements = made.get(match)
            if elements is None:  # repeats (`TMRSet.repeats`) and staged copies of a TMR share its elements
                elements = made[match] = self._elements(tmr)
            if elements:
                kept.append((tmr, comment, timeout, elements, staged_rule is not None))
        shadowed = self._shadowed(kept)
        kept = [k for i, k in enumerate(kept) if i not in shadowed]
        layers = assign_layers([[e.box for e in elements] for _, _, _, elements, _ in kept])
        self.layers = max(layers, default=-1) + 1
        # a permanent TMR that would be alone in every set it has elements in (a chain of overlapping TMRs gives
        # one per layer) becomes rules over the endpoints' named sets: thousands of one-TMR sets cost nft and the
        # kernel far more than rules do, and a packet makes as many tests either way
        keys = [
            {(layer, e.shape, tmr.action) for e in elements} if timeout is None and not counting else set()
            for (tmr, _, timeout, elements, counting), layer in zip(kept, layers, strict=True)
        ]
        sharing = Counter(key for own_keys in keys for key in own_keys)
        maps: dict[tuple[int, bool, tuple[str, ...], str], _Map] = {}
        staged: list[tuple[int, str, dict[tuple[bool, tuple[str, ...]], _Map]]] = []
        for (tmr, comment, timeout, elements, counting), layer, own_keys in zip(kept, layers, keys, strict=True):
            if own_keys and all(sharing[key] == 1 for key in own_keys):
                self.rule_tmrs.append((layer, tmr))
                continue
            own: dict[tuple[bool, tuple[str, ...]], _Map] = {}
            if counting:
                staged.append((layer, comment, own))
            for element in elements:
                found = own.get((timeout is not None, element.shape)) if counting else None
                if not counting:
                    found = maps.get((layer, timeout is not None, element.shape, tmr.action))
                if found is None:
                    action = None if counting else tmr.action
                    found = _Map("", element.shape, layer, timeout is not None, action, [])
                    if counting:
                        own[(timeout is not None, element.shape)] = found
                    else:
                        maps[(layer, timeout is not None, element.shape, tmr.action)] = found
                body: JSON = {"val": element.value, "comment": comment}
                if timeout is not None:
                    body["timeout"] = timeout
                found.entries.append({"elem": body})
                found.interval = found.interval or element.interval
        ordered = [maps[key] for key in sorted(maps)]
        counts: dict[int, int] = {}
        for found in ordered:
            counts[found.layer] = counts.get(found.layer, 0) + 1
            found.name = f"{TMR_MAP_PREFIX}{found.layer}_{counts[found.layer]}"
            self._tmr_set(found)
        chains: list[_StagedChain] = []
        for number, (layer, comment, own) in enumerate(sorted(staged, key=lambda item: item[0]), 1):
            chain = _StagedChain(f"{STAGED_MAP_PREFIX}{number}", layer, comment, [own[k] for k in sorted(own)])
            for n, found in enumerate(chain.sets, 1):
                found.name = f"{chain.name}_{n}"
                self._tmr_set(found)
            chains.append(chain)
        return ordered, chains

    def _shadowed(self, kept: Sequence[tuple[TMR, str, int | None, list[_Element], bool]]) -> set[int]:
        """The positions in `kept` of the TMRs that repeat an earlier one (`TMRSet.repeats`); their elements go
        to the sets `SHADOWED_MAPS`."""
        repeats = self.tmrset.repeats(self.at)
        out: set[int] = set()
        entries: dict[bool, list[JSON]] = {False: [], True: []}
        for i, (tmr, comment, timeout, _, counting) in enumerate(kept):
            if counting or tmr.id not in repeats:
                continue  # a staged rule decides nothing and is counted where it stands
            out.add(i)
            body: JSON = {"val": len(entries[timeout is not None]) + 1, "comment": comment}
            if timeout is not None:
                body["timeout"] = timeout
            entries[timeout is not None].append({"elem": body})
        for name, temporary in zip(SHADOWED_MAPS, (False, True), strict=True):
            if entries[temporary]:
                flags = {"flags": ["timeout"]} if temporary else {}
                self._set(name, "mark", entries[temporary], **flags, stmt=[_counter()])
        return out

    def _tmr_set(self, found: _Map) -> None:
        types = [_FIELDS[code][1] for code in found.shape]
        flags = [f for f, on in (("interval", found.interval), ("timeout", found.timeout)) if on]
        body = {
            "family": FAMILY,
            "table": TABLE,
            "name": found.name,
            "type": types[0] if len(types) == 1 else types,
            **({"flags": flags} if flags else {}),
            "stmt": [_counter()],
            "elem": found.entries,
        }
        self.items.append({"add": {"set": body}})

    def _staged_chains(self, chains: Sequence[_StagedChain]) -> None:
        """One chain per staged rule: a lookup per key shape that returns on the first element found, so that its
        counter counts the packet once however many of the rule's identifiers it carries."""
        for chain in chains:
            self.items.append({"add": {"chain": {"family": FAMILY, "table": TABLE, "name": chain.name}}})
            for found in chain.sets:
                fields = [_FIELDS[code][0] for code in found.shape]
                key = fields[0] if len(fields) == 1 else {"concat": fields}
                self._rule(chain.name, [_match(key, f"@{found.name}"), {"return": None}], chain.comment)

    def _timeout_s(self, tmr: TMR) -> int | None:
        """Whole seconds left at `at` (None: no expiry); 0 means leave the TMR out."""
        if tmr.expires_at is None:
            return None
        left = (tmr.expires_at - self.at).total_seconds()
        return max(0, math.floor(left))

    def _side(self, endpoint: Endpoint) -> list[_Alt] | None:
        """The alternatives of one side; None for any (the side is left out of the key)."""
        if endpoint.kind is EndpointKind.ANY:
            return None
        if endpoint.kind is EndpointKind.NETWORK:
            known = self.networks.get(endpoint.value)
            if known is not None:
                return known
            address, _, length = endpoint.value.partition("/")
            family = 6 if ":" in address else 4
            alt = _ip_alt(address, int(length), family) if length.isdigit() else None
            if alt is None:
                try:
                    alt = _network_alt(endpoint.as_network)
                except ValueError as error:  # only a set built from unchecked JSON gets here; a TMR file cannot
                    self.issues.append(Issue(source="tmrset", field="network", message=str(error)))
                    return []
            known = self.networks[endpoint.value] = [alt]
            return known
        return self.alternatives.get((endpoint.kind, endpoint.value), [])  # a bad name is reported already

    def _transport(self, protocol: Protocol, ports: tuple[PortRange, ...]) -> list[_Transport]:
        """The transport part of the key (codes, values), its blocks for the layering and whether it is an
        interval: one per port range, merged first."""
        known = self.transports.get((protocol, ports))
        if known is not None:
            return known
        number = protocol.number
        out: list[_Transport] = []
        if number is None:
            out.append(((), (), None, False))
        elif ports:
            for r in normalize_ports(ports):
                blocks = range_blocks(number << 16 | r.first, number << 16 | r.last)
                out.append((("l4proto", "dport"), (_L4PROTO[protocol], _port_value(r)), blocks, r.first != r.last))
        else:
            out.append((("l4proto",), (_L4PROTO[protocol],), ((16, number),), False))
        self.transports[(protocol, ports)] = out
        return out

    def _elements(self, tmr: TMR) -> list[_Element]:
        srcs, dsts = self._side(tmr.src), self._side(tmr.dst)
        protocol_family = _PROTOCOL_FAMILY.get(tmr.protocol)
        transports = self._transport(tmr.protocol, tmr.ports)
        out: list[_Element] = []
        for src in srcs if srcs is not None else (None,):
            for dst in dsts if dsts is not None else (None,):
                agree, family = _agree(src.family if src else None, dst.family if dst else None, protocol_family)
                if not agree:
                    continue
                codes: tuple[str, ...] = ()
                values: tuple[Any, ...] = ()
                interval = False
                if src is not None:
                    codes, values, interval = (src.src_code,), (src.value,), src.interval
                if dst is not None:
                    codes, values, interval = (*codes, dst.dst_code), (*values, dst.value), interval or dst.interval
                # an address field fixes the family; without one, meta protocol does
                has_address = (src is not None and src.side[0] == "ip") or (dst is not None and dst.side[0] == "ip")
                src_side = None if src is None else src.side
                dst_side = None if dst is None else dst.side
                for f in (family,) if family is not None else (4, 6):
                    if has_address:
                        head_codes, head_values = codes, values
                    else:
                        head_codes, head_values = (*codes, "protocol"), (*values, _ip(f))
                    for l4_codes, l4_values, l4_box, l4_interval in transports:
                        all_values = (*head_values, *l4_values)
                        value = all_values[0] if len(all_values) == 1 else {"concat": list(all_values)}
                        box = Box(f, src_side, dst_side, l4_box)
                        out.append(_Element((*head_codes, *l4_codes), value, box, interval or l4_interval))
        return out

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

    def _rules(self, maps: Sequence[_Map], staged: Sequence[_StagedChain]) -> list[tuple[str, list[JSON]]]:
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
        lookups: list[tuple[int, int, str, list[JSON]]] = []
        for found in maps:
            fields = [_FIELDS[code][0] for code in found.shape]
            key = fields[0] if len(fields) == 1 else {"concat": fields}
            lookups.append(
                (found.layer, 0, f"{TMRS_COMMENT_PREFIX}{found.layer}", [_match(key, f"@{found.name}"),
                                                                          _verdict(found.action)])
            )  # fmt: skip
        for layer, tmr in self.rule_tmrs:
            lookups += [(layer, 0, tmr_comment(tmr.id), [*exprs, _counter(), _verdict(tmr.action)])
                        for exprs in self._tmr_rule_matches(tmr)]  # fmt: skip
        for chain in staged:  # counts in its own chain and comes back: the packet goes on
            lookups.append(
                (chain.layer, 1, f"{STAGED_COMMENT_PREFIX}{chain.layer}", [{"jump": {"target": chain.name}}])
            )
        lookups.sort(key=lambda item: item[:2])  # stable: the sets of a layer keep their order
        rules += [(comment, exprs) for _, _, comment, exprs in lookups]
        for side in ("src", "dst"):
            for name, action in self.tmrset.vmn_defaults.items():
                for expr in self._default_matches(name, side):
                    rules.append((f"vmn-default {name} {side}", [*expr, _counter(), _verdict(action)]))
        rules.append((DEFAULT_COMMENT, [_counter(), _verdict(self.tmrset.default_action)]))
        return rules

    def _tmr_rule_matches(self, tmr: TMR) -> list[list[JSON]]:
        """A TMR as rules: one per pair of identifier kinds whose families agree (the same packets its elements
        would match), each matching a side by the endpoint's named set of that kind (a network: inline)."""
        srcs = self._side_matches(tmr.src, "src")
        dsts = self._side_matches(tmr.dst, "dst")
        protocol_family = _PROTOCOL_FAMILY.get(tmr.protocol)
        number = tmr.protocol.number
        transport: list[JSON] = []
        if number is not None:
            transport.append(_match(_meta("l4proto"), _L4PROTO[tmr.protocol]))
            if tmr.ports:
                values = [_port_value(r) for r in normalize_ports(tmr.ports)]
                ports = values[0] if len(values) == 1 else self._ports(values)
                transport.append(_match(_payload("th", "dport"), ports))
        out: list[list[JSON]] = []
        for src in srcs if srcs is not None else [None]:
            for dst in dsts if dsts is not None else [None]:
                agree, family = _agree(src[1] if src else None, dst[1] if dst else None, protocol_family)
                if not agree:
                    continue
                exprs = [m[0] for m in (src, dst) if m is not None]
                if not any(m[2] for m in (src, dst) if m is not None):  # no address field fixes the family
                    exprs.append(_match(_meta("protocol"), _ip(family) if family else self._ip_families()))
                out.append([*exprs, *transport])
        return out

    def _ports(self, values: list[Any]) -> str:
        """A named set per list of ports (``ports_<n>``), shared by the rules that list the same ports: as
        `_ip_families`, an inline set would be a kernel set object of each rule's own."""
        key = repr(values)
        name = self.port_sets.get(key)
        if name is None:
            name = self.port_sets[key] = f"{PORT_LIST_PREFIX}{len(self.port_sets) + 1}"
            flags = {"flags": ["interval"]} if any(isinstance(v, dict) for v in values) else {}
            self._set(name, "inet_service", values, **flags)
        return f"@{name}"

    def _ip_families(self) -> str:
        """The named set {ip, ip6}, added the first time a rule needs it: 4,000 rules with an inline set each
        took nft 1.0.6 ~20 s to commit (bench/nft_apply.py `distinct`)."""
        if IP_FAMILIES_SET not in self.endpoint_sets:
            self.endpoint_sets.add(IP_FAMILIES_SET)
            self._set(IP_FAMILIES_SET, "ether_type", ["ip", "ip6"])
        return f"@{IP_FAMILIES_SET}"

    def _side_matches(self, endpoint: Endpoint, side: str) -> list[tuple[JSON, int | None, bool]] | None:
        """One match per identifier kind of an endpoint: (expression, family, whether it is an address field);
        None for any."""
        alts = self._side(endpoint)
        if alts is None:
            return None
        by_kind: dict[tuple[str, int | None], list[_Alt]] = {}
        for alt in alts:
            by_kind.setdefault((alt.side[0], alt.family), []).append(alt)
        out: list[tuple[JSON, int | None, bool]] = []
        for (kind, family), found in by_kind.items():
            code = found[0].src_code if side == "src" else found[0].dst_code
            left = _FIELDS[code][0]
            if endpoint.kind is EndpointKind.NETWORK:
                right: Any = found[0].value
            else:
                owner = "vmn" if endpoint.kind is EndpointKind.VMN else "grp"
                name = f"{owner}_{endpoint.value}_{kind if kind != 'ip' else f'ip{family}'}"
                if name not in self.endpoint_sets:
                    self.endpoint_sets.add(name)
                    flags = {"flags": ["interval"]} if any(a.interval for a in found) else {}
                    self._set(name, _FIELDS[code][1], [a.value for a in found], **flags)
                right = f"@{name}"
            out.append((_match(left, right), family, kind == "ip"))
        return out

    def _default_matches(self, name: str, side: str) -> Iterable[list[JSON]]:
        """One match per identifier kind of a VMN with a default (a rule cannot OR different fields)."""
        for kind, set_name in self.default_sets.get(name, ()):
            if kind == "if":
                yield [_match(_meta(_PORT_KEY[side]), f"@{set_name}")]
            elif kind == "mac":
                yield [_match(_payload("ether", _ADDRESS_FIELD[side]), f"@{set_name}")]
            else:
                yield [_match(_payload(_ip(4 if kind == "ip4" else 6), _ADDRESS_FIELD[side]), f"@{set_name}")]
