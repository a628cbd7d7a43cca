"""DNS tunnelling and DGA detection from the query names of flows."""

from __future__ import annotations

import ipaddress
import itertools
import math
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from vmshadow.analysis.detector import Detector, DetectorSettings
from vmshadow.analysis.hunting.episodes import MAX_EVIDENCE, EpisodeTracker, RecentByKey
from vmshadow.analysis.registry import register
from vmshadow.domain.finding import SHARED_RESOLVERS, Finding, FindingKind, Severity
from vmshadow.domain.flow import TCP, UDP, Flow
from vmshadow.domain.ids import stable_id
from vmshadow.domain.net import address_text

# Public suffixes with more than one label, so that `a.b.example.co.uk` has the parent `example.co.uk`. This is an
# approximation of the Public Suffix List (eTLD+1): a name under a multi-label suffix missing here gets the suffix
# itself as its parent (e.g. `example.gov.xx` -> `gov.xx`), which merges the sites under it into one parent.
MULTI_LABEL_SUFFIXES: frozenset[str] = frozenset(
    {"co.uk", "org.uk", "ac.uk", "gov.uk", "net.uk", "me.uk", "ltd.uk", "plc.uk", "com.au", "net.au", "org.au",
     "edu.au", "gov.au", "co.nz", "org.nz", "net.nz", "co.jp", "ne.jp", "or.jp", "ac.jp", "go.jp", "co.kr",
     "or.kr", "com.br", "net.br", "org.br", "gov.br", "com.cn", "net.cn", "org.cn", "gov.cn", "edu.cn", "com.tw",
     "com.hk", "com.sg", "com.my", "co.in", "net.in", "org.in", "co.za", "org.za", "com.mx", "com.ar", "com.tr",
     "com.ua", "co.il", "co.id", "or.id", "com.pl", "net.pl", "com.ru", "com.es", "co.th", "in.th", "com.vn",
     "com.ng", "co.ke", "com.eg", "com.sa", "com.pk", "com.ph", "com.co", "com.pe", "co.at", "or.at"}
)  # fmt: skip
REVERSE_ZONES: tuple[str, ...] = ("in-addr.arpa", "ip6.arpa")
HEX_DIGITS = frozenset("0123456789abcdef")


def split_name(name: str) -> tuple[str, str]:
    """(subdomain, parent) of a DNS name: the parent is the registered domain (approximate eTLD+1).

    >>> split_name("a1b2.tunnel.example.co.uk")
    ('a1b2.tunnel', 'example.co.uk')
    >>> split_name("www.example.com")
    ('www', 'example.com')
    """
    labels = [label for label in name.lower().rstrip(".").split(".") if label]
    if labels and not (labels[-1].isalpha() or labels[-1].startswith("xn--")):
        return ".".join(labels[:-1]), labels[-1]  # not a top-level domain: the last label is the parent
    if len(labels) <= 2:
        return "", ".".join(labels)
    width = 3 if ".".join(labels[-2:]) in MULTI_LABEL_SUFFIXES else 2
    return ".".join(labels[:-width]), ".".join(labels[-width:])


def entropy(text: str) -> float:
    """Shannon entropy in bits per character."""
    if not text:
        return 0.0
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


def looks_encoded(label: str) -> bool:
    """A label that carries data: long hex (dnscat2, exfiltration tools) or long base32/base64-like text."""
    if len(label) >= 16 and set(label) <= HEX_DIGITS and any(c.isdigit() for c in label):
        return True
    return len(label) >= 24 and sum(c.isdigit() for c in label) >= 2 and entropy(label) >= 3.5


def looks_generated(label: str) -> bool:
    """A registered-domain label that looks machine-made (DGA): hex-like (``db54a845``), or letters and digits
    switching at least three times with high entropy (``6gyip7tqim7sieb``). Pronounceable DGAs (word lists)
    are not recognised."""
    digits = sum(c.isdigit() for c in label)
    letters = sum(c.isalpha() for c in label)
    if len(label) >= 8 and set(label) <= HEX_DIGITS and digits >= 2 and letters >= 2:
        return True
    switches = sum(1 for a, b in itertools.pairwise(label) if a.isdigit() != b.isdigit())
    return len(label) >= 10 and switches >= 3 and entropy(label) >= 3.0


def query_name(name: str) -> str:
    """The name lower-cased, without a trailing dot or a `:port`; empty for IP literals."""
    name = name.strip().lower().rstrip(".")
    if name.startswith("[") or name.count(":") == 1:
        name = name.rsplit(":", 1)[0].strip("[]")
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name
    return ""


def is_dns_query(flow: Flow) -> bool:
    """A client's DNS flow (to port 53, or labelled DNS by nDPI) with a query name; mDNS and LLMNR are not."""
    if flow.protocol not in (TCP, UDP) or not flow.dns_query:
        return False
    return flow.dst_port == 53 or (flow.application.split(".", 1)[0] == "DNS" and flow.src_port != 53)


@dataclass(slots=True)
class ParentActivity:
    """One source's queries under one parent domain within the window."""

    started_ms: int
    latest_ms: int = 0
    next_milestone: float = 1.0
    subdomains: OrderedDict[str, int] = field(default_factory=OrderedDict)  # subdomain -> last seen ms
    events: deque[tuple[int, int, int]] = field(default_factory=deque)  # (ms, queries, bytes), oldest first
    queries: int = 0
    query_bytes: int = 0
    resolvers: list[str] = field(default_factory=list)
    evidence: deque[str] = field(default_factory=lambda: deque(maxlen=MAX_EVIDENCE))

    def to_json(self) -> dict[str, Any]:
        return {
            "started_ms": self.started_ms,
            "latest_ms": self.latest_ms,
            "next_milestone": self.next_milestone,
            "subdomains": list(self.subdomains.items()),
            "events": [list(e) for e in self.events],
            "queries": self.queries,
            "query_bytes": self.query_bytes,
            "resolvers": self.resolvers,
            "evidence": list(self.evidence),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ParentActivity:
        act = cls(
            started_ms=int(d["started_ms"]),
            latest_ms=int(d["latest_ms"]),
            next_milestone=float(d["next_milestone"]),
            queries=int(d["queries"]),
            query_bytes=int(d["query_bytes"]),
            resolvers=[str(r) for r in d["resolvers"]],
        )
        act.subdomains = OrderedDict((str(k), int(v)) for k, v in d["subdomains"])
        act.events = deque((int(ms), int(q), int(b)) for ms, q, b in d["events"])
        act.evidence.extend(str(e) for e in d["evidence"])
        return act

    def expire(self, horizon_ms: int) -> bool:
        """Drop what started before the horizon; True when no query is left."""
        while self.events and self.events[0][0] < horizon_ms:
            _, queries, size = self.events.popleft()
            self.queries -= queries
            self.query_bytes -= size
        while self.subdomains:
            first, seen = next(iter(self.subdomains.items()))
            if seen >= horizon_ms:
                break
            del self.subdomains[first]
        return not self.events


class SharedResolvers:
    """DNS servers seen answering queries under several parent domains (from any source): shared, recursive
    resolvers rather than a tunnel's own endpoint. A deny towards one would cut every lookup of the VMN, so the
    findings name them (`SHARED_RESOLVERS`) and the recommender proposes blocking the domain at the resolver
    instead. Learned for good (a resolver stays one), at most `max_servers` servers (least recently used
    dropped) and `min_parents` parents each."""

    def __init__(self, min_parents: int, max_servers: int) -> None:
        self.min_parents = min_parents
        self.max_servers = max_servers
        self.parents: OrderedDict[str, set[str]] = OrderedDict()

    def note(self, server: str, parent: str) -> None:
        seen = self.parents.get(server)
        if seen is None:
            seen = self.parents[server] = set()
            if len(self.parents) > self.max_servers:
                self.parents.popitem(last=False)
        else:
            self.parents.move_to_end(server)
        if len(seen) < self.min_parents:
            seen.add(parent)

    def is_shared(self, server: str) -> bool:
        return len(self.parents.get(server, ())) >= self.min_parents

    def snapshot(self) -> list[list[Any]]:
        return [[server, sorted(parents)] for server, parents in self.parents.items()]

    def restore(self, state: list[list[Any]]) -> None:
        self.parents = OrderedDict((str(server), {str(p) for p in parents}) for server, parents in state)


@dataclass(frozen=True, slots=True)
class DnsTunnelSettings(DetectorSettings):
    window_s: float = 300.0
    min_queries: int = 40  # queries from one source under one parent in the window
    min_unique_subdomains: int = 16  # distinct names under one parent in the window
    min_dga_domains: int = 1  # distinct machine-looking registered domains from one source in the window
    growth: int = 4  # raise again each time the evidence grows this much
    max_keys: int = 50_000  # (source, parent) pairs, and sources for DGA
    max_subdomains: int = 1024  # per (source, parent); machine-looking domains per source
    max_events: int = 4096  # flows remembered per (source, parent) for the query count
    resolver_min_parents: int = 3  # a DNS server asked under this many parent domains is a shared resolver
    max_servers: int = 4096  # DNS servers remembered for that judgement


@register
class DnsTunnelDetector(Detector[DnsTunnelSettings]):
    """Detects DNS tunnelling (data carried in query names) and domain generation algorithms (DGA).

    Tunnel: per (source, parent domain) — the parent is the registered domain, approximated as the last two
    labels, or three under a listed multi-label public suffix (`MULTI_LABEL_SUFFIXES`) — count the queries
    (each client datagram of a DNS flow is one query; nfstream keeps only the first name of a flow, and tunnel
    tools often keep one source port, so a single flow can hold hundreds of queries) and the distinct subdomains
    within `window_s` of flow time. At `min_queries` queries or `min_unique_subdomains` subdomains a finding is
    raised, again at each `growth`-fold milestone. Score: 0.45, plus up to 0.25 for volume (full at 16 times the
    threshold), plus up to 0.3 for the shape of the names: share of hex/base32/base64-looking labels, mean
    subdomain length (full at 40), Shannon entropy of the leftmost labels (full at 4 bits/char), mean query
    size. Reverse lookups (in-addr.arpa, ip6.arpa), mDNS and LLMNR are ignored. MITRE ATT&CK T1071.004.

    Each finding names the DNS servers it saw that are shared resolvers (`SharedResolvers`: asked under at least
    `resolver_min_parents` parent domains by any source), so that no deny cuts a VMN's resolver: through a
    resolver, the domain is what to block, and a TMR cannot match names.

    DGA: per source, distinct registered domains whose label looks machine-made (`looks_generated`), from DNS
    queries, TLS SNI and HTTP Host; `min_dga_domains` within `window_s` raise a finding; score 0.45 for one
    domain (an alert, not a rule) rising to 1.0 at 16. MITRE ATT&CK T1568.002.

    Sources: the features of Farnham & Atlasis, "Detecting DNS Tunneling" (SANS, 2013), and nDPI's
    "Susp DGA Domain" / "Susp DNS Traffic" risks; the per-parent unique-subdomain count follows RITA's DNS
    tunnelling analysis (activecm/rita, "exploded DNS").
    """

    name = "hunting.dns_tunnel"
    version = "1.1"
    settings_type = DnsTunnelSettings

    def __init__(self, settings: DnsTunnelSettings | None = None, context: Any = None) -> None:
        super().__init__(settings, context)
        s = self.settings
        self._window_ms = int(s.window_s * 1000)
        self._recent: RecentByKey[str, ParentActivity] = RecentByKey(window_ms=self._window_ms, max_keys=s.max_keys)
        self._dga = EpisodeTracker(
            window_s=s.window_s, threshold=s.min_dga_domains, growth=s.growth,
            max_keys=s.max_keys, max_items=s.max_subdomains,
        )  # fmt: skip
        self._servers = SharedResolvers(s.resolver_min_parents, s.max_servers)

    def observe(self, flow: Flow) -> list[Finding]:
        if not (flow.dns_query or flow.sni or flow.http_host):
            return []  # no name to judge (most flows; is_dns_query needs a dns_query too)
        at_ms = int(flow.last_seen_at.timestamp() * 1000)
        findings: list[Finding] = []
        if is_dns_query(flow):
            name = query_name(flow.dns_query)
            if name and not name.endswith(REVERSE_ZONES):
                findings.extend(self._observe_query(flow, name, at_ms))
        findings.extend(self._observe_names(flow, at_ms))
        return findings

    # -- tunnels ---------------------------------------------------------------------------------------------

    def _observe_query(self, flow: Flow, name: str, at_ms: int) -> list[Finding]:
        s = self.settings
        sub, parent = split_name(name)
        key = f"{flow.src_ip}|{parent}"
        act = self._activity(key, at_ms)
        queries = max(1, flow.psh_packets if flow.protocol == TCP else flow.src2dst_packets)
        act.events.append((at_ms, queries, flow.src2dst_bytes))
        act.queries += queries
        act.query_bytes += flow.src2dst_bytes
        if len(act.events) > s.max_events:
            _, old_queries, old_bytes = act.events.popleft()
            act.queries -= old_queries
            act.query_bytes -= old_bytes
        if sub:
            previous = act.subdomains.pop(sub, None)
            act.subdomains[sub] = max(at_ms, previous or at_ms)
            if len(act.subdomains) > s.max_subdomains:
                act.subdomains.popitem(last=False)
        resolver = address_text(flow.dst_ip)
        self._servers.note(resolver, parent)
        if resolver not in act.resolvers and len(act.resolvers) < 8:
            act.resolvers.append(resolver)
        act.evidence.append(flow.community_id)
        strength = max(act.queries / s.min_queries, len(act.subdomains) / s.min_unique_subdomains)
        if strength < act.next_milestone:
            return []
        act.next_milestone = strength * s.growth
        return [self._tunnel_finding(flow, parent, act, strength, name)]

    def _activity(self, key: str, at_ms: int) -> ParentActivity:
        return self._recent.touch(key, at_ms, lambda: ParentActivity(started_ms=at_ms), ParentActivity.expire)

    def _tunnel_finding(self, flow: Flow, parent: str, act: ParentActivity, strength: float, name: str) -> Finding:
        s = self.settings
        subs = list(act.subdomains)
        leftmost = [sub.replace(".", "") for sub in subs]
        mean_length = sum(map(len, leftmost)) / len(leftmost) if leftmost else 0.0
        mean_entropy = sum(map(entropy, leftmost)) / len(leftmost) if leftmost else 0.0
        max_label = max((len(label) for sub in subs for label in sub.split(".")), default=0)
        encoded = sum(1 for sub in subs if any(looks_encoded(label) for label in sub.split(".")))
        encoded_share = encoded / len(subs) if subs else 0.0
        mean_query_bytes = act.query_bytes / act.queries if act.queries else 0.0
        shape = max(
            encoded_share,
            min(1.0, mean_length / 40.0),
            min(1.0, max(0.0, mean_entropy - 2.5) / 1.5),
            min(1.0, max(0.0, mean_query_bytes - 100.0) / 150.0),
        )
        volume = min(1.0, math.log2(max(strength, 1.0)) / 4.0)
        score = min(1.0, 0.45 + 0.25 * volume + 0.3 * shape)
        example = max(subs, key=len, default="")
        return Finding(
            id=stable_id(
                "find", self.name, FindingKind.DNS_TUNNEL, flow.src_ip, parent, act.started_ms, act.queries, len(subs)
            ),
            kind=FindingKind.DNS_TUNNEL,
            severity=Severity.from_score(score),
            score=round(score, 4),
            detector=self.name,
            detector_version=self.version,
            first_seen_at=datetime.fromtimestamp(act.started_ms / 1000, tz=UTC),
            observed_at=flow.last_seen_at,
            src_ip=flow.src_ip,
            src_vmn=flow.src_vmn,
            protocol=flow.protocol,
            dst_ips=tuple(sorted((ipaddress.ip_address(r) for r in act.resolvers), key=str)),
            dst_ports=(flow.dst_port,),
            community_ids=tuple(act.evidence),
            measured={
                "parent": parent,
                "queries": act.queries,
                "unique_subdomains": len(subs),
                "mean_subdomain_length": round(mean_length, 2),
                "max_label_length": max_label,
                "mean_entropy": round(mean_entropy, 3),
                "encoded_share": round(encoded_share, 3),
                "mean_query_bytes": round(mean_query_bytes, 1),
                "example": f"{example}.{parent}"[:120] if example else parent,
                "window_s": s.window_s,
                SHARED_RESOLVERS: self._shared(act.resolvers),
            },
            attack_technique="T1071.004",
            summary=(
                f"{flow.src_ip} sent {act.queries} DNS queries under {parent} ({len(subs)} distinct names seen) within "
                f"{s.window_s:g}s (mean subdomain length {mean_length:.0f}, {encoded_share:.0%} encoded-looking)"
            ),
        )

    # -- DGA -------------------------------------------------------------------------------------------------

    def _observe_names(self, flow: Flow, at_ms: int) -> list[Finding]:
        names = {query_name(n) for n in (flow.dns_query, flow.sni, flow.http_host) if n}
        findings: list[Finding] = []
        for name in sorted(names):
            if not name or name.endswith(REVERSE_ZONES) or name.endswith(".local"):
                continue
            _, parent = split_name(name)
            label = parent.split(".", 1)[0]
            if "." not in parent or not looks_generated(label):
                continue
            ep, reached = self._dga.add(address_text(flow.src_ip), parent, at_ms, flow.community_id)
            if reached:
                findings.append(self._dga_finding(flow, list(ep.items), ep.started_ms, list(ep.evidence)))
        return findings

    def _dga_finding(self, flow: Flow, domains: list[str], started_ms: int, evidence: list[str]) -> Finding:
        s = self.settings
        score = min(1.0, 0.45 + 0.55 * math.log2(len(domains)) / 4.0)
        return Finding(
            id=stable_id("find", self.name, FindingKind.DGA, flow.src_ip, started_ms, len(domains)),
            kind=FindingKind.DGA,
            severity=Severity.from_score(score),
            score=round(score, 4),
            detector=self.name,
            detector_version=self.version,
            first_seen_at=datetime.fromtimestamp(started_ms / 1000, tz=UTC),
            observed_at=flow.last_seen_at,
            src_ip=flow.src_ip,
            src_vmn=flow.src_vmn,
            protocol=flow.protocol,
            dst_ips=(flow.dst_ip,),
            dst_ports=(flow.dst_port,),
            community_ids=tuple(evidence),
            measured={
                "domains": len(domains),
                "examples": ", ".join(domains[-5:])[:200],
                "mean_entropy": round(sum(entropy(d.split(".", 1)[0]) for d in domains) / len(domains), 3),
                "window_s": s.window_s,
                SHARED_RESOLVERS: self._shared([str(flow.dst_ip)]) if is_dns_query(flow) else "",
            },
            attack_technique="T1568.002",
            summary=f"{flow.src_ip} contacted {len(domains)} machine-looking domain(s) within {s.window_s:g}s, "
            f"latest {domains[-1]}",
        )

    def _shared(self, servers: Iterable[str]) -> str:
        return ",".join(sorted(server for server in set(servers) if self._servers.is_shared(server)))

    def snapshot(self) -> dict[str, Any]:
        return {
            "parents": [[k, a.to_json()] for k, a in self._recent.items.items()],
            "dga": self._dga.snapshot(),
            "servers": self._servers.snapshot(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self._recent.items = OrderedDict((str(k), ParentActivity.from_json(v)) for k, v in state["parents"])
        self._dga.restore(state["dga"])
        self._servers.restore(state.get("servers", []))  # absent in snapshots of version 1.0
