"""nDPI's expected results (`ndpiReader` `.out` files) and how vmshadow's flows compare with them.

A flow line of an `.out` file looks like (tab-indented, one per flow)::

    \t1\tTCP 192.168.1.192:63158 <-> 192.168.1.20:443 [proto: 91.126/TLS.Google][IP: 0/Unknown][Encrypted]
        [Confidence: DPI]...[Hostname/SNI: www.google-analytics.com]...

(one line in the file). The label is `Master.App` (``TLS.Google``) or a single name (``DNS``); an encapsulated
flow is prefixed (``[proto: VXLAN:91.119/TLS.Facebook]``) and its endpoints are the inner ones. `Confidence` tells
how nDPI got the label: ``DPI`` (payload), ``Match by port`` (guessed from the port), ``Unknown`` (no label), ...

The comparison is used by tests/integration/test_dpi_agreement.py and bench/dpi_agreement.py.
"""

from __future__ import annotations

import ipaddress
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from vmshadow.domain.flow import Flow

L4_NUMBERS = {"ICMP": 1, "IGMP": 2, "TCP": 6, "UDP": 17, "GRE": 47, "ICMPV6": 58, "SCTP": 132}

_FLOW_LINE = re.compile(r"^\t(?P<n>\d+)\t(?P<l4>\S+) (?P<a>\S+) (?P<dir><->|->) (?P<b>\S+) (?P<rest>\[.*)$")
_PROTO = re.compile(r"\[proto: (?:(?P<encap>[A-Za-z0-9_]+):)?(?P<ids>[0-9.]+)/(?P<label>[^\]]+)\]")
_CONFIDENCE = re.compile(r"\[Confidence: (?P<c>[^\]]*)\]")
_HOSTNAME = re.compile(r"\[Hostname/SNI: (?P<h>[^\]]*)\]")
_ENDPOINT = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<v4>[0-9.]+)):(?P<port>\d+)$")

# masters whose name vmshadow.flows.pcap.to_flow keeps (as sni, http_host or dns_query); nDPI names more
NAMED_MASTERS = frozenset({"DNS", "HTTP", "TLS", "QUIC"})

Endpoint = tuple[str, int]  # (normalised address, port)
FlowKey = tuple[int, frozenset[Endpoint]]


@dataclass(frozen=True, slots=True)
class ExpectedFlow:
    """One flow line of an `.out` file."""

    capture: str
    number: int
    l4: str
    protocol: int | None  # IP protocol number; None for an L4 name not in `L4_NUMBERS`
    a: Endpoint
    b: Endpoint
    bidirectional: bool
    label: str  # e.g. "TLS.Google", "DNS", "Unknown"
    encapsulation: str  # e.g. "VXLAN", or "" for a plain flow
    confidence: str  # e.g. "DPI", "Match by port", "Unknown"; "" when absent
    hostname: str  # [Hostname/SNI: ...], "" when absent

    @property
    def guessed(self) -> bool:
        """nDPI labelled it without payload evidence (from the port or an IP list), or not at all."""
        return self.confidence not in ("DPI", "DPI (cache)", "DPI (partial)", "DPI (partial cache)", "DPI (aggressive)")

    @property
    def master(self) -> str:
        return self.label.split(".", 1)[0]

    @property
    def key(self) -> FlowKey:
        return (self.protocol if self.protocol is not None else -1, frozenset((self.a, self.b)))


def _endpoint(text: str) -> Endpoint:
    m = _ENDPOINT.match(text)
    if m is None:
        raise ValueError(f"not an ip:port endpoint: {text!r}")
    address = ipaddress.ip_address(m["v6"] or m["v4"])
    return (str(address), int(m["port"]))


def parse_line(line: str, capture: str = "") -> ExpectedFlow | None:
    """The flow on one `.out` line, or None when the line is not a flow line."""
    m = _FLOW_LINE.match(line.rstrip("\n"))
    if m is None:
        return None
    rest = m["rest"]
    proto = _PROTO.search(rest)
    if proto is None:  # e.g. the per-host JA3 table, whose lines also start with "\t<n>\t"
        return None
    confidence = _CONFIDENCE.search(rest)
    hostname = _HOSTNAME.search(rest)
    l4 = m["l4"]
    return ExpectedFlow(
        capture=capture,
        number=int(m["n"]),
        l4=l4,
        protocol=L4_NUMBERS.get(l4.upper()),
        a=_endpoint(m["a"]),
        b=_endpoint(m["b"]),
        bidirectional=m["dir"] == "<->",
        label=proto["label"],
        encapsulation=proto["encap"] or "",
        confidence=confidence["c"] if confidence else "",
        hostname=hostname["h"] if hostname else "",
    )


def parse_text(text: str, capture: str = "") -> list[ExpectedFlow]:
    return [f for line in text.splitlines() if (f := parse_line(line, capture)) is not None]


def parse_file(path: Path) -> list[ExpectedFlow]:
    """The flows of `result/<capture>.out`; `capture` is the file name without `.out`."""
    return parse_text(path.read_text(encoding="utf-8", errors="replace"), path.name.removesuffix(".out"))


def flow_key(flow: Flow) -> FlowKey:
    ends = frozenset(((str(flow.src_ip), flow.src_port), (str(flow.dst_ip), flow.dst_port)))
    return (flow.protocol, ends)


@dataclass(frozen=True, slots=True)
class Pair:
    """A vmshadow flow matched to nDPI's expected flow."""

    expected: ExpectedFlow
    flow: Flow

    @property
    def label_agrees(self) -> bool:
        return self.flow.application == self.expected.label

    @property
    def master_agrees(self) -> bool:
        return self.flow.application.split(".", 1)[0] == self.expected.label.split(".", 1)[0]

    @property
    def has_hostname(self) -> bool:
        return bool(self.expected.hostname)

    @property
    def hostname_agrees(self) -> bool:
        return self.flow.server_name == self.expected.hostname


@dataclass(slots=True)
class Comparison:
    """vmshadow's flows of one or more captures against nDPI's expected flows."""

    pairs: list[Pair] = field(default_factory=list)
    unmatched_expected: list[ExpectedFlow] = field(default_factory=list)
    # flows whose key nDPI also has, already matched: nfstream expired the conversation (idle 120 s / active 1800 s
    # timeouts) and started a new flow where ndpiReader kept one
    split_flows: list[Flow] = field(default_factory=list)
    unmatched_flows: list[Flow] = field(default_factory=list)  # no expected flow has their key

    def extend(self, other: Comparison) -> None:
        self.pairs.extend(other.pairs)
        self.unmatched_expected.extend(other.unmatched_expected)
        self.split_flows.extend(other.split_flows)
        self.unmatched_flows.extend(other.unmatched_flows)

    @property
    def matched(self) -> int:
        return len(self.pairs)

    @property
    def label_agreed(self) -> int:
        return sum(p.label_agrees for p in self.pairs)

    @property
    def flows(self) -> int:
        return len(self.pairs) + len(self.split_flows) + len(self.unmatched_flows)

    @property
    def expected(self) -> int:
        return len(self.pairs) + len(self.unmatched_expected)

    @property
    def certain(self) -> list[Pair]:
        """Pairs whose nDPI label came from payload inspection."""
        return [p for p in self.pairs if not p.expected.guessed]

    @property
    def with_hostname(self) -> list[Pair]:
        return [p for p in self.pairs if p.has_hostname]

    @property
    def hostname_agreed(self) -> int:
        return sum(p.hostname_agrees for p in self.with_hostname)

    @property
    def with_hostname_in_scope(self) -> list[Pair]:
        """Pairs with an expected name whose nDPI master protocol is one `Flow` keeps a name for."""
        return [p for p in self.with_hostname if p.expected.master in NAMED_MASTERS]

    @property
    def disagreements(self) -> list[Pair]:
        return [p for p in self.pairs if not p.label_agrees or (p.has_hostname and not p.hostname_agrees)]

    @staticmethod
    def rate(agreed: int, total: int) -> float:
        return agreed / total if total else 0.0


def compare(expected: Iterable[ExpectedFlow], flows: Iterable[Flow]) -> Comparison:
    """Match flows to expected flows by (L4 protocol, unordered endpoints).

    Where a key repeats, flows are taken by start time and expected flows in the file's order, so the first
    segment of a conversation nfstream split by its timeouts is the one matched.
    """
    waiting: dict[FlowKey, list[ExpectedFlow]] = defaultdict(list)
    for e in expected:
        waiting[e.key].append(e)
    result = Comparison()
    for flow in sorted(flows, key=lambda f: f.first_seen_at):
        key = flow_key(flow)
        candidates = waiting.get(key)
        if candidates:
            result.pairs.append(Pair(candidates.pop(0), flow))
        elif key in waiting:
            result.split_flows.append(flow)
        else:
            result.unmatched_flows.append(flow)
    result.unmatched_expected = [e for es in waiting.values() for e in es]
    return result


def ndpi_captures(ndpi_dir: Path) -> list[tuple[Path, Path]]:
    """(capture, expected output) for every capture of the nDPI set that has an expected output, by name."""
    pairs = [(p, ndpi_dir / "result" / f"{p.name}.out") for p in sorted((ndpi_dir / "pcap").iterdir())]
    return [(p, out) for p, out in pairs if out.is_file()]


def compare_capture(capture: Path, expected_out: Path) -> Comparison:
    """Meter `capture` with vmshadow's PcapSource and compare its flows with nDPI's expected output."""
    from vmshadow.flows.pcap import PcapSource  # nfstream is only needed here

    return compare(parse_file(expected_out), PcapSource([capture]))
