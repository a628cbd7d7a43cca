"""Golden tests of the nftables compiler, `nft -c` over every expected document, and a differential oracle.

nft/<case>/input.yaml is a TMR file; expected.json is what `compile_tmrset` makes of it at a fixed moment,
version and port list (scripts/regen_golden_nft.py). After an intended change run
`python scripts/regen_golden_nft.py` and review the diff. `nft -c -j -f` (run as root in a throw-away network
namespace) checks every expected document against the real nft and kernel without applying it.

The oracle runs compiled documents through a small interpreter of the nftables expressions the compiler writes and
compares its verdict, packet by packet, with `TMRSet.evaluate` on random TMRSets: the kernel must decide what the
evaluator (and so the impact replay) decides.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.golden.scripts import load_script
from tests.integration import netlab
from vmshadow.config.tmr_file import parse_tmr_text
from vmshadow.domain.codec import tmrset_from_json, tmrset_to_json
from vmshadow.domain.errors import InputError
from vmshadow.domain.net import IPAddress, PortRange, Protocol
from vmshadow.domain.tmr import TMR, Action, Endpoint, EndpointKind, TMRSet
from vmshadow.domain.vmn import VMN, Group
from vmshadow.enforcement import nft_compiler as compiler
from vmshadow.enforcement.nft_compiler import compile_tmrset
from vmshadow.ports.enforcer import StagedRule

ROOT = Path(__file__).resolve().parents[2]


regen = load_script("regen_golden_nft")
CASES = regen.case_dirs()


def _ids(case: Path) -> str:
    return case.name


def _case_document(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((regen.CASES / name / regen.EXPECTED).read_text(encoding="utf-8"))
    return document


def _tmr_comments(document: dict[str, Any]) -> list[str]:
    return [c for c in compiler.comments_of(document) if c.startswith(compiler.TMR_PREFIX)]


@pytest.fixture(scope="module")
def nft_namespace() -> Iterator[str]:
    with netlab.namespace("c") as name:
        yield name


# --- golden cases ---


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_case_compiles_to_the_expected_document(case: Path) -> None:
    assert regen.render_case(case) == (case / regen.EXPECTED).read_text(encoding="utf-8")


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_nft_accepts_the_expected_document(case: Path, nft_namespace: str) -> None:
    result = subprocess.run(
        ["ip", "netns", "exec", nft_namespace, "nft", "-c", "-j", "-f", str(case / regen.EXPECTED)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_nft_check_does_refuse_a_broken_document(nft_namespace: str, tmp_path: Path) -> None:
    """The check above can fail: a document with a port out of range is refused."""
    text = (regen.CASES / "ports" / regen.EXPECTED).read_text(encoding="utf-8")
    assert '"tcp", 443]' in text
    (tmp_path / "broken.json").write_text(text.replace('"tcp", 443]', '"tcp", 70000]'), encoding="utf-8")
    result = subprocess.run(
        ["ip", "netns", "exec", nft_namespace, "nft", "-c", "-j", "-f", str(tmp_path / "broken.json")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert "out of range" in result.stderr


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_case_directory_holds_input_and_expected_only(case: Path) -> None:
    optional = [regen.STAGED] if (case / regen.STAGED).exists() else []
    assert sorted(p.name for p in case.iterdir()) == sorted([regen.INPUT, regen.EXPECTED, *optional])


def test_regen_check_reports_nothing_stale(capsys: pytest.CaptureFixture[str]) -> None:
    assert regen.main(["--check"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_the_cases_cover_the_features() -> None:
    names = {case.name for case in CASES}
    assert {"groups", "vmns", "networks", "ports", "protocols", "vmn_defaults", "temporary", "priorities"} <= names
    assert "repeats" in names
    assert "staged" in names


@dataclass(frozen=True)
class Element:
    map: str
    layer: int
    timed: bool
    value: Any
    comment: str
    timeout: int | None
    verdict: str


def _elements(document: dict[str, Any]) -> list[Element]:
    """Every TMR element of a document, set by set in the order they are looked up, with the set's verdict."""
    verdicts = {
        r["expr"][0]["match"]["right"][1:]: "allow" if "jump" in r["expr"][-1] else "deny"
        for r in compiler.rules_of(document)
        if r.get("comment", "").startswith(compiler.TMRS_COMMENT_PREFIX)
    }
    out = []
    for name, found in compiler.tmr_maps(document).items():
        if name in compiler.SHADOWED_MAPS:
            continue  # never looked up
        timed = "timeout" in found.get("flags", [])
        for key in found["elem"]:
            body = key["elem"]
            out.append(
                Element(name, int(name.split("_")[1]), timed, body["val"], body["comment"], body.get("timeout"),
                        verdicts[name])
            )  # fmt: skip
    return out


def test_temporary_tmrs_get_kernel_timeouts_and_expired_ones_are_left_out() -> None:
    elements = _elements(_case_document("temporary"))
    timeouts = {e.comment: (e.timed, e.timeout) for e in elements}
    assert timeouts == {  # 90 s left; 1.9 s rounds down to 1; 0.5 s left and expired: left out
        "tmr exception-90s": (True, 90),
        "tmr ends-in-1.9s": (True, 1),
    }
    # permanent, alone in its sets, is a rule; a temporary TMR never is (a rule cannot expire in the kernel)
    rules = [c for c in compiler.comments_of(_case_document("temporary")) if c.startswith(compiler.TMR_PREFIX)]
    assert rules == ["tmr permanent"]
    assert set(compiler.temporary_maps(_case_document("temporary"))) == {e.map for e in elements if e.timed}


def test_overlapping_tmrs_are_looked_up_in_priority_order_the_rest_share_a_layer() -> None:
    elements = _elements(_case_document("priorities"))
    layers = {e.comment: e.layer for e in elements}
    # second-a and second-b name the same destination: second-b (equal priority, later in the file) comes after,
    # in layer 1; a TMR that would be alone in its set (first, second-b) is a rule instead
    assert layers == {"tmr second-a": 0, "tmr third": 0}
    lookups = [
        (r["comment"], r["expr"][0]["match"]["right"], next(iter(r["expr"][-1])))
        for r in compiler.rules_of(_case_document("priorities"))
        if r.get("comment", "").startswith((compiler.TMRS_COMMENT_PREFIX, compiler.TMR_PREFIX))
    ]
    assert lookups == [  # layer 0: the deny set, the allow as a rule; then layer 1
        ("vmshadow tmrs 0", "@tmrs_0_1", "drop"),
        ("tmr first", "198.18.0.1", "jump"),
        ("tmr second-b", "198.18.0.2", "jump"),
    ]


def test_a_tmr_alone_in_its_sets_is_rules_over_the_endpoints_named_sets() -> None:
    document = _case_document("vmns")
    rules = {r["comment"]: r for r in compiler.rules_of(document) if r["comment"].startswith(compiler.TMR_PREFIX)}
    assert rules, "the vmns case has TMRs alone in their layer"
    for rule in rules.values():
        assert rule["expr"][-2] == {"counter": None}, "the rule counts for its TMR (by its comment)"
    sets = compiler.sets_of(document)
    named = {
        m["match"]["right"][1:] for r in rules.values() for m in r["expr"] if "match" in m
        if isinstance(m["match"]["right"], str) and m["match"]["right"].startswith("@")
    }  # fmt: skip
    assert named
    assert named <= set(sets)
    assert all(n.startswith(("vmn_", "grp_", compiler.PORT_LIST_PREFIX, compiler.IP_FAMILIES_SET)) for n in named)
    inline = [m for r in rules.values() for m in r["expr"] if "match" in m and isinstance(m["match"]["right"], dict)]
    assert not [m for m in inline if "set" in m["match"]["right"]], "no inline sets: each is a kernel set object"


def test_staged_rules_count_in_chains_of_their_own_at_their_place_in_priority_order() -> None:
    document = _case_document("staged")
    staged = compiler.staged_maps(document)
    elements = [(e["elem"]["comment"], name, e["elem"].get("timeout")) for name, m in staged.items() for e in m["elem"]]
    assert sorted(elements) == [  # stage-early: one element per identifier of vm1 (address, MAC), two sets
        ("staged prop-stage-early", "staged_1_1", None),
        ("staged prop-stage-early", "staged_1_2", None),
        ("staged prop-stage-exception", "staged_2_1", 30),  # a kernel timeout: 30 s left
        ("staged prop-stage-late", "staged_3_1", None),
    ]
    assert "staged prop-stage-early" not in compiler.tmr_element_comments(document)
    lookups = [
        (r["comment"], r["expr"])
        for r in compiler.rules_of(document)
        if r["comment"].startswith(("vmshadow ", compiler.TMR_PREFIX))
    ][9:]  # after unmanaged ports, arp, nd and the six reply rules
    assert [(c, next(iter(e[-1]))) for c, e in lookups] == [
        ("vmshadow staged 0", "jump"),  # stage-early: before the allow it overlaps, it counts all it matches
        ("tmr allow-ssh", "jump"),  # layer 1, alone: a rule
        ("vmshadow staged 2", "jump"),  # stage-exception
        ("tmr deny-web", "drop"),  # layer 3, a layer above the staged exception it overlaps
        ("vmshadow staged 4", "jump"),  # stage-late: only what allow-ssh and deny-web leave undecided
    ]
    # a staged jump takes no verdict of its own; its chain's lookups return on the first element found
    assert [e for c, e in lookups if "staged" in c] == [[{"jump": {"target": f"staged_{n}"}}] for n in (1, 2, 3)]
    for n in (1, 2, 3):
        assert all(r["expr"][-1] == {"return": None} for r in compiler.rules_of(document, f"staged_{n}"))
    assert all(m["stmt"] == [{"counter": None}] for m in staged.values())
    assert compiler.staged_id_of("staged prop-1") == "prop-1"
    assert compiler.staged_id_of("tmr prop-1") is None


def test_a_staged_rule_naming_a_vmn_the_set_lacks_counts_nothing() -> None:
    staged = [StagedRule("prop-gone", TMR("x", 1, Endpoint.vmn("gone"), Endpoint.any(), Action.DENY))]
    document = compile_tmrset(TMRSet(vmns=VMNS), ports=PORTS_MANAGED, at=AT, version=1, staged=staged)
    assert compiler.staged_maps(document) == {}
    assert not [c for c in compiler.comments_of(document) if c.startswith(compiler.STAGED_COMMENT_PREFIX)]


def test_without_staged_rules_the_document_is_unchanged() -> None:
    tmrset = parse_tmr_text((regen.CASES / "staged" / regen.INPUT).read_text(encoding="utf-8"), "input.yaml")
    assert compile_tmrset(tmrset, ports=["p"], at=AT, version=1, staged=()) == compile_tmrset(
        tmrset, ports=["p"], at=AT, version=1
    )
    assert compiler.staged_maps(compile_tmrset(tmrset, ports=["p"], at=AT, version=1)) == {}


def test_vmn_defaults_come_after_tmrs_sources_before_destinations() -> None:
    comments = compiler.comments_of(_case_document("vmn_defaults"))
    tail = [c for c in comments if not c.startswith(("vmshadow", compiler.TMR_PREFIX))]
    # locked has a port and an address, open a MAC and an address: two rules each per side
    assert tail == [
        *["vmn-default locked src"] * 2,
        *["vmn-default open src"] * 2,
        *["vmn-default locked dst"] * 2,
        *["vmn-default open dst"] * 2,
        "default",
    ]
    tmrs = [i for i, c in enumerate(comments) if c.startswith((compiler.TMRS_COMMENT_PREFIX, compiler.TMR_PREFIX))]
    assert tmrs
    assert max(tmrs) < comments.index("vmn-default locked src")


def test_port_lists_become_one_element_per_range() -> None:
    elements = _elements(_case_document("ports"))
    values = {}
    for e in elements:
        values.setdefault(e.comment, []).append(tuple(e.value["concat"]))
    assert values["tmr port-list"] == [
        (family, "tcp", port) for family in ("ip", "ip6") for port in (23, 2323, {"range": [6660, 6669]})
    ]
    assert values["tmr merged"] == [  # 8000-8080 and 8050-8090 merged
        (family, "udp", port) for family in ("ip", "ip6") for port in (53, 5353, {"range": [8000, 8090]})
    ]
    assert values["tmr one-port"] == [("ip", "tcp", 443), ("ip6", "tcp", 443)]


def test_repeats_take_no_layer_and_sit_in_never_looked_up_sets_with_their_timeout() -> None:
    document = _case_document("repeats")
    assert compiler.shadowed_ids(document) == ["ssh-allow-again", "dns-deny-again", "ssh-deny-for-a-while"]
    looked_up = json.dumps(compiler.rules_of(document))
    assert all(f"@{name}" not in looked_up for name in compiler.SHADOWED_MAPS)
    assert "tmr ssh-allow-again" not in looked_up
    assert "tmr dns-deny" in looked_up, "dns-deny outlives the exception before it"
    (temporary,) = compiler.map_elements(compiler.tmr_maps(document)["tmrs_shadowed_t"])
    assert temporary["timeout"] == 600
    # the same set without its repeats compiles to the same layers and rules
    tmrset = parse_tmr_text((regen.CASES / "repeats" / regen.INPUT).read_text(encoding="utf-8"), regen.INPUT)
    kept = replace(tmrset, tmrs=tuple(t for t in tmrset.tmrs if t.id not in compiler.shadowed_ids(document)))
    alone = compile_tmrset(kept, ports=regen.PORTS, at=regen.AT, version=regen.VERSION)
    assert compiler.rules_of(alone) == compiler.rules_of(document)


def test_a_tmr_that_can_never_match_has_no_rule() -> None:
    assert "tmr deny-v4-to-v6only" not in {e.comment for e in _elements(_case_document("networks"))}


def test_overlapping_group_networks_are_merged() -> None:
    # deny-web-out is alone in its layer: rules over the group's named sets, whose networks are merged
    sets = compiler.sets_of(_case_document("groups"))
    # 198.18.10.0/24 holds 198.18.10.128/25 and vm1's 198.18.10.5
    assert sets["grp_web_ip4"]["elem"] == [{"prefix": {"addr": "198.18.10.0", "len": 24}}]
    assert sets["grp_web_ip6"]["elem"] == ["2001:db8::5", {"prefix": {"addr": "2001:db8:1::", "len": 48}}]
    # adjacent addresses collapse too: .2 and .3 are 198.18.0.2/31
    assert {"prefix": {"addr": "198.18.0.2", "len": 31}} in sets["grp_resolvers_ip4"]["elem"]
    assert all("interval" in sets[n]["flags"] for n in ("grp_web_ip4", "grp_web_ip6", "grp_resolvers_ip4"))


# --- the compiler's own contract ---

AT = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def test_same_input_same_document_whatever_the_order_of_ports() -> None:
    tmrset = parse_tmr_text((regen.CASES / "vmns" / regen.INPUT).read_text(encoding="utf-8"), "input.yaml")
    one = compile_tmrset(tmrset, ports=["b", "a"], at=AT, version=3)
    two = compile_tmrset(tmrset, ports=["a", "b", "a"], at=AT, version=3)
    assert json.dumps(one) == json.dumps(two)
    assert compiler.version_of(one) == 3
    assert compiler.sets_of(one)[compiler.PORTS_SET]["elem"] == ["a", "b"]


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        compile_tmrset(TMRSet(), ports=[], at=datetime(2026, 1, 1), version=1)


def test_names_and_ids_nftables_cannot_carry_are_input_errors() -> None:
    # The TMR file cannot hold these; a TMRSet built from JSON (the store, the API) can.
    tmrset = TMRSet(
        tmrs=(TMR("x" * 130, 1, Endpoint.any(), Endpoint.any(), Action.DENY),),
        vmns=(VMN("bad name", addresses=(ipaddress.ip_address("198.18.0.1"),)),),
    )
    with pytest.raises(InputError) as caught:
        compile_tmrset(tmrset, ports=[], at=AT, version=1)
    fields = {issue.field for issue in caught.value.issues}
    assert fields == {"vmns.bad name", f"tmrs.{'x' * 130}"}


def test_a_network_that_is_not_one_is_an_input_error() -> None:
    network = Endpoint(EndpointKind.NETWORK, "198.18.0.9/24")  # as the codec reads it, unchecked
    tmrset = TMRSet(tmrs=(TMR("t", 1, network, Endpoint.any(), Action.DENY),))
    with pytest.raises(InputError, match="host bits set"):
        compile_tmrset(tmrset, ports=[], at=AT, version=1)


def test_counters_are_summed_per_comment() -> None:
    listing = {
        "nftables": [
            {"rule": {"table": "vmshadow", "chain": "forward", "comment": "tmr a", "expr": [
                {"counter": {"packets": 2, "bytes": 100}}, {"drop": None}]}},
            {"rule": {"table": "vmshadow", "chain": "forward", "comment": "tmr a", "expr": [
                {"counter": {"packets": 3, "bytes": 50}}, {"drop": None}]}},
            {"rule": {"table": "vmshadow", "chain": "forward", "comment": "default", "expr": [
                {"counter": {"packets": 1, "bytes": 60}}, {"accept": None}]}},
            {"rule": {"table": "other", "chain": "forward", "comment": "tmr a", "expr": [
                {"counter": {"packets": 9, "bytes": 9}}]}},
        ]
    }  # fmt: skip
    assert compiler.counters_of(listing) == {"tmr a": (5, 150), "default": (1, 60)}
    assert compiler.tmr_id_of("tmr a") == "a"
    assert compiler.tmr_id_of("default") is None


# --- differential oracle: the compiled rules decide what the evaluator decides ---


class _NoMatchError(Exception):
    """An expression does not apply to the packet (nftables' NFT_BREAK): the rule does not match."""


@dataclass(frozen=True)
class Packet:
    """A packet as the bridge forward hook sees it; also a `PacketKey` for the evaluator."""

    iif: str
    oif: str
    src_mac: str
    dst_mac: str
    src_ip: IPAddress
    dst_ip: IPAddress
    protocol: int
    dst_port: int
    src_vmn: str | None
    dst_vmn: str | None


_L4_NAMES = {6: "tcp", 17: "udp", 1: "icmp", 58: "ipv6-icmp"}


class Kernel:
    """Runs a packet through the base chain of a compiled document (first match wins, no flow open yet)."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.sets = compiler.sets_of(document)
        self.rules = compiler.rules_of(document)

    def decide(self, packet: Packet) -> tuple[str, str]:
        """The verdict and the comment of what decided: a rule's, or the TMR element's for a map lookup."""
        verdict, comment, _ = self.run(packet)
        return verdict, comment

    def run(self, packet: Packet) -> tuple[str, str, list[str]]:
        """`decide`, and the comments of the staged elements that counted the packet on its way."""
        counted: list[str] = []
        for rule in self.rules:
            if rule.get("comment") == compiler.REPLIES_COMMENT:
                continue  # the reply sets are empty: no flow is open
            if rule.get("comment", "").startswith(compiler.STAGED_COMMENT_PREFIX):
                assert len(rule["expr"]) == 1, "a staged lookup takes no verdict"
                counted += self._staged(rule["expr"][0]["jump"]["target"], packet)
                continue
            decided = self._rule(rule["expr"], packet)
            if decided is not None:
                verdict, comment = decided
                return verdict, comment if comment is not None else rule.get("comment", ""), counted
        return "accept", "policy", counted

    def _rule(self, exprs: list[dict[str, Any]], packet: Packet) -> tuple[str, str | None] | None:
        element: str | None = None  # the comment of the TMR element a set lookup found
        for expr in exprs:
            if "match" in expr and str(expr["match"]["right"]).startswith(f"@{compiler.TMR_MAP_PREFIX}"):
                try:
                    element = self._lookup(expr["match"], packet)
                except _NoMatchError:
                    return None
                if element is None:
                    return None  # no element: the rule does not match, the next one is tried
            elif "match" in expr:
                try:
                    if not self._match(expr["match"], packet):
                        return None
                except _NoMatchError:
                    return None
            elif "counter" in expr:
                continue
            elif "jump" in expr or "drop" in expr or "accept" in expr:
                return self._verdict(expr), element
            else:  # pragma: no cover - the compiler writes nothing else
                raise AssertionError(expr)
        return None

    def _staged(self, chain: str, packet: Packet) -> list[str]:
        """A staged rule's chain: lookups that return on the first element found (counted once)."""
        for rule in compiler.rules_of(self.document, chain):
            assert [next(iter(e)) for e in rule["expr"]] == ["match", "return"], rule
            try:
                element = self._lookup(rule["expr"][0]["match"], packet)
            except _NoMatchError:
                continue
            if element is not None:
                return [element]
        return []

    @staticmethod
    def _verdict(expr: dict[str, Any]) -> str:
        if "jump" in expr:
            assert expr["jump"]["target"] == compiler.ALLOWED_CHAIN
            return "allow"
        return "deny" if "drop" in expr else "accept"

    def _lookup(self, match: dict[str, Any], packet: Packet) -> str | None:
        """A TMR set lookup: the elements whose every key part holds the packet's field. The compiler promises at
        most one (elements of a set never overlap); more than one is a failure of the layering."""
        key = match["left"]
        fields = key.get("concat", [key])
        values = [self._left(f, packet) for f in fields]
        hits = []
        for element in self.sets[match["right"][1:]].get("elem", []):
            parts = element["elem"]["val"]
            parts = parts["concat"] if isinstance(parts, dict) and "concat" in parts else [parts]
            if all(self._equal(part, value) for part, value in zip(parts, values, strict=True)):
                hits.append(element["elem"]["comment"])
        assert len(hits) <= 1, f"overlapping elements in {match['right']}: {hits}"
        return hits[0] if hits else None

    def _match(self, match: dict[str, Any], packet: Packet) -> bool:
        found = self._contains(match["right"], self._left(match["left"], packet))
        return found if match["op"] == "==" else not found

    def _left(self, left: dict[str, Any], p: Packet) -> Any:
        if "meta" in left:
            key = left["meta"]["key"]
            if key == "l4proto":
                return _L4_NAMES.get(p.protocol, p.protocol)
            return {"iifname": p.iif, "oifname": p.oif, "protocol": "ip" if p.src_ip.version == 4 else "ip6"}[key]
        protocol, field = left["payload"]["protocol"], left["payload"]["field"]
        if protocol == "th" and field == "dport":  # the transport header's bytes 2-3, whatever the protocol
            if p.protocol not in (6, 17):
                raise _NoMatchError  # the oracle's other packets carry no port (an ICMP checksum is not one)
            return p.dst_port
        if protocol == "ether":
            return p.src_mac if field == "saddr" else p.dst_mac
        if protocol in ("ip", "ip6"):
            if p.src_ip.version != (4 if protocol == "ip" else 6):
                raise _NoMatchError
            return p.src_ip if field == "saddr" else p.dst_ip
        if protocol in ("tcp", "udp") and field == "dport":
            if _L4_NAMES.get(p.protocol) != protocol:
                raise _NoMatchError
            return p.dst_port
        if protocol in ("icmp", "icmpv6") and field == "type":
            if p.protocol != (1 if protocol == "icmp" else 58):
                raise _NoMatchError
            return "echo-request"  # the oracle's ICMP packets are echo requests
        raise AssertionError(left)  # pragma: no cover

    def _contains(self, right: Any, value: Any) -> bool:
        if isinstance(right, str) and right.startswith("@"):
            elements = self.sets[right[1:]].get("elem", [])
            return any(self._equal(e["elem"]["val"] if isinstance(e, dict) and "elem" in e else e, value)
                       for e in elements)  # fmt: skip
        if isinstance(right, dict) and "set" in right:
            return any(self._equal(item, value) for item in right["set"])
        return self._equal(right, value)

    @staticmethod
    def _equal(item: Any, value: Any) -> bool:
        if isinstance(item, dict) and "range" in item:
            first, last = item["range"]
            return isinstance(value, int) and first <= value <= last
        if isinstance(item, dict) and "prefix" in item:
            network = ipaddress.ip_network(f"{item['prefix']['addr']}/{item['prefix']['len']}")
            return isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address) and value in network
        if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return isinstance(item, str) and ipaddress.ip_address(item) == value
        return bool(item == value)


def _ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text)


VMNS = (
    VMN("a", macs=("02:00:00:00:00:01",), addresses=(_ip("198.18.0.1"), _ip("2001:db8::1")), interfaces=("vnet1",)),
    VMN("b", macs=("02:00:00:00:00:02",), addresses=(_ip("198.18.0.2"),)),
    VMN("c", addresses=(_ip("2001:db8::3"),)),
    VMN("d", macs=("02:00:00:00:00:04",)),
    VMN("e", interfaces=("vnet5",)),
)
GROUPS = (
    Group("g1", vmns=("a", "d"), networks=(ipaddress.ip_network("198.18.1.0/24"),)),
    Group("g2", vmns=("c",), networks=(ipaddress.ip_network("2001:db8:1::/64"), ipaddress.ip_network("198.18.2.0/25"))),
)
ENDPOINTS = (
    Endpoint.any(),
    *(Endpoint.vmn(v.name) for v in VMNS),
    *(Endpoint.group(g.name) for g in GROUPS),
    Endpoint.network("198.18.0.0/24"),
    Endpoint.network("198.18.1.0/24"),
    Endpoint.network("198.18.0.2/32"),
    Endpoint.network("2001:db8::/64"),
)
OUTSIDE = {4: ("198.18.1.7", "198.18.2.9", "198.18.9.9"), 6: ("2001:db8::99", "2001:db8:1::5", "2001:db8:9::9")}
PORT_POOL = (22, 53, 80, 443, 8080)
PORTS_MANAGED = ("vnet1", "vnet5", "vnet7", "vnet8")


@st.composite
def tmrs(draw: st.DrawFn, index: int) -> TMR:
    protocol = draw(st.sampled_from(list(Protocol)))
    ports: tuple[PortRange, ...] = ()
    if protocol.has_ports and draw(st.booleans()):
        chosen = draw(st.lists(st.sampled_from(PORT_POOL), min_size=1, max_size=3, unique=True))
        ports = tuple(sorted(PortRange(p, p + draw(st.sampled_from((0, 0, 10)))) for p in chosen))
    expires = draw(st.sampled_from((None, None, -3600.0, 30.0)))
    return TMR(
        id=f"t{index}",
        priority=draw(st.integers(1, 4)),
        src=draw(st.sampled_from(ENDPOINTS)),
        dst=draw(st.sampled_from(ENDPOINTS)),
        action=draw(st.sampled_from(list(Action))),
        protocol=protocol,
        ports=ports,
        expires_at=None if expires is None else AT + timedelta(seconds=expires),
    )


@st.composite
def tmrsets(draw: st.DrawFn, most: int = 8) -> TMRSet:
    count = draw(st.integers(0, most))
    defaults = draw(st.dictionaries(st.sampled_from([v.name for v in VMNS]), st.sampled_from(list(Action))))
    return TMRSet(
        tmrs=tuple(draw(tmrs(i)) for i in range(count)),
        vmns=VMNS,
        groups=GROUPS,
        default_action=draw(st.sampled_from(list(Action))),
        vmn_defaults=defaults,
    )


@st.composite
def packets(draw: st.DrawFn) -> Packet:
    """A packet between VMNs and/or outside hosts, each side showing its own identifiers (port, MAC, address)."""
    family = draw(st.sampled_from((4, 6)))
    protocol = draw(st.sampled_from((6, 17, 1, 47) if family == 4 else (6, 17, 58, 47)))

    def side(vmn: VMN | None) -> tuple[str, str, IPAddress]:
        port = vmn.interfaces[0] if vmn and vmn.interfaces else draw(st.sampled_from(("vnet7", "vnet8")))
        mac = vmn.macs[0] if vmn and vmn.macs else "02:00:00:00:00:99"
        mine = [a for a in (vmn.addresses if vmn else ()) if a.version == family]
        address = mine[0] if mine else _ip(draw(st.sampled_from(OUTSIDE[family])))
        return port, mac, address

    src_vmn = draw(st.sampled_from((None, *VMNS)))
    dst_vmn = draw(st.sampled_from((None, *VMNS)))
    iif, src_mac, src_ip = side(src_vmn)
    oif, dst_mac, dst_ip = side(dst_vmn)
    return Packet(
        iif=iif,
        oif=oif,
        src_mac=src_mac,
        dst_mac=dst_mac,
        src_ip=src_ip,
        dst_ip=dst_ip,
        protocol=protocol,
        dst_port=draw(st.sampled_from((*PORT_POOL, 85, 9999))) if protocol in (6, 17) else 0,
        src_vmn=_identified(iif, src_mac, src_ip),
        dst_vmn=_identified(oif, dst_mac, dst_ip),
    )


def _identified(port: str, mac: str, address: IPAddress) -> str | None:
    """The VMN the evaluator is told about: by bridge port (the kernel sees ports, a capture does not), else as
    `VMNMap.identify` does (MAC first, then address)."""
    for vmn in VMNS:
        if port in vmn.interfaces:
            return vmn.name
    return TMRSet(vmns=VMNS).vmn_map.identify(mac, address)


@settings(max_examples=300, deadline=None)
@given(tmrset=tmrsets(), batch=st.lists(packets(), min_size=1, max_size=20))
def test_compiled_rules_decide_as_the_evaluator(tmrset: TMRSet, batch: list[Packet]) -> None:
    kernel = Kernel(compile_tmrset(tmrset, ports=PORTS_MANAGED, at=AT, version=1))
    for packet in batch:
        verdict, comment = kernel.decide(packet)
        expected = tmrset.evaluate(packet, AT)
        assert verdict == str(expected.action), (packet, comment, expected)
        assert compiler.tmr_id_of(comment) == expected.tmr_id, (packet, comment, expected)


@settings(max_examples=40, deadline=None)
@given(tmrset=tmrsets(most=40), batch=st.lists(packets(), min_size=20, max_size=60))
def test_many_tmrs_in_few_layers_decide_as_the_evaluator(tmrset: TMRSet, batch: list[Packet]) -> None:
    """Larger sets: many TMRs share layers and maps; still the first TMR in priority order decides (and so its
    element is the one whose counter counts)."""
    document = compile_tmrset(tmrset, ports=PORTS_MANAGED, at=AT, version=1)
    kernel = Kernel(document)
    for packet in batch:
        verdict, comment = kernel.decide(packet)
        expected = tmrset.evaluate(packet, AT)
        assert (verdict, compiler.tmr_id_of(comment)) == (str(expected.action), expected.tmr_id), packet


@settings(max_examples=200, deadline=None)
@given(
    tmrset=tmrsets(most=12),
    staged_rules=st.lists(st.integers(0, 99).flatmap(tmrs), max_size=3),
    batch=st.lists(packets(), min_size=1, max_size=30),
)
def test_staged_rules_count_what_they_would_decide_and_decide_nothing(
    tmrset: TMRSet, staged_rules: list[TMR], batch: list[Packet]
) -> None:
    """A staged rule never changes a verdict, and counts a packet exactly when, added to the TMRs in force, it
    would be the TMR that decides it (each staged rule on its own: staged rules do not hide each other)."""
    staged = [StagedRule(f"prop-{i}", rule) for i, rule in enumerate(staged_rules)]
    kernel = Kernel(compile_tmrset(tmrset, ports=PORTS_MANAGED, at=AT, version=1, staged=staged))
    for packet in batch:
        verdict, comment, counted = kernel.run(packet)
        expected = tmrset.evaluate(packet, AT)
        assert (verdict, compiler.tmr_id_of(comment)) == (str(expected.action), expected.tmr_id), packet
        would = [
            compiler.staged_comment(s.proposal_id)
            for s in staged
            if tmrset.with_tmr(replace(s.rule, id="~staged")).evaluate(packet, AT).tmr_id == "~staged"
        ]
        assert sorted(counted) == sorted(would), (packet, counted, would)


def test_the_staged_oracle_can_tell_a_rule_that_decides() -> None:
    """The interpreter notices a staged lookup that takes a verdict."""
    staged = [StagedRule("prop-x", TMR("x", 1, Endpoint.vmn("a"), Endpoint.any(), Action.DENY))]
    document = compile_tmrset(TMRSet(vmns=VMNS), ports=PORTS_MANAGED, at=AT, version=1, staged=staged)
    packet = Packet("vnet1", "vnet7", "02:00:00:00:00:01", "02:00:00:00:00:99", _ip("198.18.0.1"),
                    _ip("198.18.9.9"), 6, 80, "a", None)  # fmt: skip
    assert Kernel(document).run(packet) == ("allow", "default", ["staged prop-x"])
    for rule in compiler.rules_of(document, "staged_1"):
        rule["expr"][-1] = {"drop": None}
    with pytest.raises(AssertionError, match="drop"):
        Kernel(document).run(packet)


def test_the_oracle_can_tell_a_wrong_order() -> None:
    """The interpreter is not trivially agreeable: swapping two overlapping TMRs changes its answer."""
    allow = TMR("allow", 1, Endpoint.vmn("a"), Endpoint.any(), Action.ALLOW)
    deny = TMR("deny", 1, Endpoint.vmn("a"), Endpoint.any(), Action.DENY)  # equal priority: order decides
    packet = Packet("vnet1", "vnet7", "02:00:00:00:00:01", "02:00:00:00:00:99", _ip("198.18.0.1"),
                    _ip("198.18.9.9"), 6, 80, "a", None)  # fmt: skip
    first = Kernel(compile_tmrset(TMRSet(tmrs=(allow, deny), vmns=VMNS), ports=PORTS_MANAGED, at=AT, version=1))
    second = Kernel(compile_tmrset(TMRSet(tmrs=(deny, allow), vmns=VMNS), ports=PORTS_MANAGED, at=AT, version=1))
    assert first.decide(packet) == ("allow", "tmr allow")
    assert second.decide(packet) == ("deny", "tmr deny")


def test_frames_from_unmanaged_ports_are_left_alone() -> None:
    deny_all = TMRSet(tmrs=(TMR("all", 1, Endpoint.any(), Endpoint.any(), Action.DENY),), default_action=Action.DENY)
    kernel = Kernel(compile_tmrset(deny_all, ports=["vnet1"], at=AT, version=1))
    outside = Packet("eth0", "eth1", "02:00:00:00:00:98", "02:00:00:00:00:99", _ip("198.18.9.1"),
                     _ip("198.18.9.2"), 6, 80, None, None)  # fmt: skip
    assert kernel.decide(outside) == ("accept", compiler.UNMANAGED_COMMENT)
    assert kernel.decide(replace(outside, iif="vnet1")) == ("deny", "tmr all")


def test_documents_round_trip_through_the_stored_form() -> None:
    """What the store keeps (codec JSON) compiles to the same document as the set it came from."""
    tmrset = parse_tmr_text((regen.CASES / "vmns" / regen.INPUT).read_text(encoding="utf-8"), "input.yaml")
    again = tmrset_from_json(json.loads(json.dumps(tmrset_to_json(tmrset))))
    assert compile_tmrset(again, ports=["p"], at=AT, version=2) == compile_tmrset(tmrset, ports=["p"], at=AT, version=2)
