"""The TMR file reader: what a valid file becomes and how a bad one is reported (golden cases hold more)."""

from __future__ import annotations

import ipaddress
import textwrap
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmshadow.config.tmr_file import load_tmr_file, parse_network, parse_tmr_text
from vmshadow.domain.errors import InputError, Issue
from vmshadow.domain.net import IPAddress, PortRange, Protocol, normalize_ports
from vmshadow.domain.tmr import Action, Endpoint, TMRSet

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "tmrs.yaml"
AT = datetime(2026, 1, 1, tzinfo=UTC)


def _parse(text: str) -> TMRSet:
    return parse_tmr_text(textwrap.dedent(text), "input.yaml")


def _issues(text: str) -> list[str]:
    with pytest.raises(InputError) as caught:
        _parse(text)
    return [str(issue) for issue in caught.value.issues]


def _one_tmr(**fields: str) -> str:
    body = {"id": "r", "priority": "10", "src": "any", "dst": "any", "action": "deny", **fields}
    return "tmrs:\n  - " + "\n    ".join(f"{k}: {v}" for k, v in body.items()) + "\n"


@dataclass(frozen=True)
class Key:
    src_ip: IPAddress
    dst_ip: IPAddress
    protocol: int
    dst_port: int
    src_vmn: str | None = None
    dst_vmn: str | None = None


def _key(src: str, dst: str, protocol: int, port: int) -> Key:
    return Key(ipaddress.ip_address(src), ipaddress.ip_address(dst), protocol, port)


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "---\n", "null\n", "vmns:\ngroups:\ndefaults:\ntmrs:\n"])
def test_an_empty_file_is_an_empty_set_that_allows(text: str) -> None:
    assert parse_tmr_text(text, "input.yaml") == TMRSet()
    assert TMRSet().default_action is Action.ALLOW


def test_the_operator_example_from_the_brief() -> None:
    assert _issues(_one_tmr(ports="70000", protocol="tcp")) == [
        "input.yaml:7: tmrs[0].ports: port 70000 is outside 0-65535"
    ]


def test_endpoints_resolve_to_their_kinds() -> None:
    s = _parse("""
        vmns:
          vm1: {addresses: [198.18.0.11]}
        groups:
          web: [vm1]
        tmrs:
          - {id: a, priority: 1, src: any, dst: vm1, action: allow}
          - {id: b, priority: 2, src: web, dst: 198.18.0.12, action: allow}
          - {id: c, priority: 3, src: 10.0.0.0/8, dst: vm1, action: allow}
          - {id: d, priority: 4, src: "2001:db8::/32", dst: "2001:db8::1", action: allow}
        """)
    assert [(t.src, t.dst) for t in s.tmrs] == [
        (Endpoint.any(), Endpoint.vmn("vm1")),
        (Endpoint.group("web"), Endpoint.network("198.18.0.12/32")),
        (Endpoint.network("10.0.0.0/8"), Endpoint.vmn("vm1")),
        (Endpoint.network("2001:db8::/32"), Endpoint.network("2001:db8::1/128")),
    ]


def test_a_v4_source_and_v6_destination_cannot_match() -> None:
    issues = _issues(_one_tmr(src="198.18.0.0/24", dst='"2001:db8::1"'))
    assert issues == ["input.yaml:5: tmrs[0].dst: dst is an IPv6 network but src is IPv4; this TMR can never match"]


def test_priority_orders_the_set_and_ties_keep_file_order() -> None:
    s = _parse("""
        tmrs:
          - {id: late, priority: 50, src: any, dst: any, action: deny}
          - {id: first-tie, priority: 10, src: any, dst: any, action: deny}
          - {id: second-tie, priority: 10, src: any, dst: any, action: allow}
        """)
    assert [t.id for t in s.tmrs] == ["first-tie", "second-tie", "late"]


def test_expires_at_is_stored_in_utc() -> None:
    s = _parse(_one_tmr(expires_at="2026-12-01T02:00:00+02:00"))
    assert s.tmrs[0].expires_at == datetime(2026, 12, 1, tzinfo=UTC)
    assert s.tmrs[0].expires_at.utcoffset() == timedelta(0)
    assert s.tmrs[0].expires_at.tzinfo is UTC
    assert s.tmrs[0].expires_at == datetime(2026, 12, 1, 2, tzinfo=timezone(timedelta(hours=2)))


def test_optional_fields_default() -> None:
    tmr = _parse(_one_tmr()).tmrs[0]
    assert (tmr.protocol, tmr.ports, tmr.expires_at, tmr.comment) == (Protocol.ANY, (), None, "")


def test_defaults_are_read() -> None:
    s = _parse("""
        vmns:
          vm1: {addresses: [198.18.0.11]}
        defaults: {action: deny, vmns: {vm1: allow}}
        """)
    assert s.default_action is Action.DENY
    assert dict(s.vmn_defaults) == {"vm1": Action.ALLOW}


def test_one_bad_tmr_among_good_ones_returns_nothing() -> None:
    text = _one_tmr() + "  - {id: bad, priority: 20, src: any, dst: any, action: maybe}\n"
    assert _issues(text) == [
        "input.yaml:7: tmrs[1].action: unknown action 'maybe'; expected one of: allow, deny",
    ]


def test_a_misspelt_required_key_is_reported_once() -> None:
    text = "tmrs:\n  - {id: r, prio: 10, src: any, dst: any, action: deny}\n"
    assert _issues(text) == ["input.yaml:2: tmrs[0].prio: unknown key; did you mean 'priority'?"]


def test_group_vmn_references_and_defaults_are_not_reported_when_vmns_is_unreadable() -> None:
    issues = _issues("""
        vmns: vm1
        groups:
          web: [vm1]
        defaults: {vmns: {vm1: deny}}
        tmrs:
          - {id: r, priority: 1, src: vm1, dst: web, action: deny}
        """)
    assert issues == [
        "input.yaml:2: vmns: expected a mapping of VMN names to definitions; found text ('vm1')",
    ]


def test_a_vmn_with_errors_is_still_a_known_name() -> None:
    issues = _issues("""
        vmns:
          vm1: {addresses: [not-an-ip]}
        tmrs:
          - {id: r, priority: 1, src: vm1, dst: any, action: deny}
        """)
    assert issues == ["input.yaml:3: vmns.vm1.addresses[0]: 'not-an-ip' is not an IP address"]


# ports


def _written(r: PortRange, draw_style: int) -> str:
    """One port range as an operator may write it."""
    if r.first == r.last:
        return [str(r.first), f'"{r.first}"', f'"{r.first}-{r.first}"'][draw_style % 3]
    return [f'"{r.first}-{r.last}"', f"{r.first}-{r.last}", f'"{r.first} - {r.last}"'][draw_style % 3]


port_ranges = st.tuples(st.integers(0, 65535), st.integers(0, 65535)).map(lambda p: PortRange(min(p), max(p)))


@given(st.lists(st.tuples(port_ranges, st.integers(0, 2)), min_size=1, max_size=8), st.booleans())
def test_any_port_list_parses_to_the_normalised_ranges(items: list[tuple[PortRange, int]], as_list: bool) -> None:
    written = [_written(r, style) for r, style in items]
    ports = f"[{', '.join(written)}]" if as_list or len(written) > 1 else written[0]
    tmr = _parse(_one_tmr(protocol="tcp", ports=ports)).tmrs[0]
    assert tmr.ports == normalize_ports([r for r, _ in items])


@given(st.one_of(st.integers(max_value=-1), st.integers(min_value=65536)))
def test_any_port_outside_the_range_is_reported(port: int) -> None:
    assert _issues(_one_tmr(ports=str(port), protocol="udp")) == [
        f"input.yaml:7: tmrs[0].ports: port {port} is outside 0-65535"
    ]


@pytest.mark.parametrize("protocol", ["any", "icmp", "icmpv6"])
def test_ports_need_tcp_or_udp(protocol: str) -> None:
    assert _issues(_one_tmr(ports="22", protocol=protocol)) == [
        f"input.yaml:7: tmrs[0].ports: ports need protocol tcp or udp; this TMR's protocol is {protocol}"
    ]


# networks


@pytest.mark.parametrize(
    ("text", "result"),
    [
        ("198.18.0.1", "198.18.0.1/32"),
        (" 198.18.0.0/24 ", "198.18.0.0/24"),
        ("2001:db8::/32", "2001:db8::/32"),
        ("198.18.0.1/24", "198.18.0.1/24 has host bits set; did you mean 198.18.0.0/24?"),
        ("198.18.0.0/33", "prefix length /33 is too long for IPv4 (at most /32)"),
        ("2001:db8::/200", "prefix length /200 is too long for IPv6 (at most /128)"),
        ("198.18.0.0/-1", "'198.18.0.0/-1' is not a valid CIDR network"),
        ("1.2.3", "'1.2.3' is not an IP address or CIDR network"),
    ],
)
def test_parse_network(text: str, result: str) -> None:
    parsed = parse_network(text)
    assert str(parsed) == result


# robustness


def _issues_or_none(text: str) -> tuple[Issue, ...] | None:
    """The issues of `text`, or None when it parses; any other exception fails the test."""
    try:
        parse_tmr_text(text, "input.yaml")
    except InputError as error:
        return error.issues
    return None


@settings(max_examples=200)
@given(st.text(max_size=200))
def test_any_text_gives_a_set_or_an_input_error(text: str) -> None:
    issues = _issues_or_none(text)
    if issues is not None:
        assert issues
        assert all(issue.source == "input.yaml" for issue in issues)


@settings(max_examples=100)
@given(st.data())
def test_a_damaged_example_gives_a_set_or_located_issues(data: st.DataObject) -> None:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    start = data.draw(st.integers(0, len(lines) - 1))
    cut = data.draw(st.integers(1, 3))
    damaged = lines[:start] + lines[start + cut :]
    for issue in _issues_or_none("\n".join(damaged) + "\n") or ():
        assert issue.line is not None
        assert 1 <= issue.line <= len(damaged)


# files


def test_load_tmr_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(_one_tmr(action="permit"), encoding="utf-8")
    with pytest.raises(InputError) as caught:
        load_tmr_file(path)
    assert caught.value.issues[0].source == str(path)
    with pytest.raises(InputError) as caught:
        load_tmr_file(path, source="rules.yaml")
    assert str(caught.value).startswith("rules.yaml:6: tmrs[0].action: unknown action 'permit'")


def test_load_tmr_file_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        load_tmr_file(tmp_path / "missing.yaml", source="missing.yaml")
    assert caught.value.issues == (Issue("missing.yaml", "cannot read the file: No such file or directory"),)


def test_the_example_file_loads_and_decides_as_its_comments_say() -> None:
    s = load_tmr_file(EXAMPLE)
    assert s.default_action is Action.ALLOW
    assert {g.name for g in s.groups} == {"guests", "resolvers"}
    udp, tcp = 17, 6
    cases = [
        (_key("192.168.1.5", "8.8.8.8", udp, 53), Action.ALLOW, "allow-dns-to-resolvers"),
        (_key("192.168.1.5", "203.0.113.9", udp, 53), Action.DENY, "deny-dns-elsewhere"),
        (_key("203.0.113.9", "192.168.1.5", tcp, 23), Action.DENY, "deny-telnet"),
        (_key("10.0.0.5", "10.0.0.6", tcp, 445), Action.ALLOW, "allow-smb-between-guests"),
        (_key("10.0.0.5", "198.51.100.7", tcp, 445), Action.DENY, "deny-smb-outbound"),
        (_key("172.16.3.3", "198.51.100.7", tcp, 6667), Action.DENY, "deny-irc"),
        (_key("172.16.3.3", "198.51.100.7", tcp, 443), Action.ALLOW, None),
    ]
    for key, action, tmr_id in cases:
        verdict = s.evaluate(key, AT)
        assert (verdict.action, verdict.tmr_id) == (action, tmr_id), key


def test_the_example_in_the_format_document_parses() -> None:
    doc = (ROOT / "docs" / "tmr-format.md").read_text(encoding="utf-8")
    example = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    s = parse_tmr_text(example, "tmr-format.md")
    assert [t.id for t in s.tmrs] == ["allow-dns", "deny-telnet"]
    assert s.vmn_defaults == {"vm2": Action.DENY}


def test_the_normalisation_example_in_the_format_document() -> None:
    tmr = _parse(_one_tmr(protocol="tcp", ports='[8081, "8000-8080", 53, 53]')).tmrs[0]
    assert [str(r) for r in tmr.ports] == ["53", "8000-8081"]
