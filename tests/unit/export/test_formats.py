"""Formatter properties: escaping round-trips for any text, PRI and severity mapping, bounds and options."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.factories import make_finding
from vmshadow.domain.finding import Severity
from vmshadow.export.cef import (
    MSG_MAX,
    TRUNCATED,
    escape_extension,
    escape_header,
    format_cef,
    parse_cef,
    unescape_extension,
)
from vmshadow.export.ecs import to_ecs
from vmshadow.export.event import SEVERITY_0_10, ExportEvent, from_finding
from vmshadow.export.syslog5424 import (
    BOM,
    Facility,
    MessageFormat,
    SyslogFormat,
    escape_param_value,
    format_5424,
    parse_5424,
    structured_params,
)

EVENT = from_finding(make_finding(1))
text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200)


@settings(max_examples=200, deadline=None)
@given(value=text)
def test_cef_extension_escaping_round_trips(value: str) -> None:
    escaped = escape_extension(value)
    assert "\n" not in escaped
    assert "\r" not in escaped
    expected = value.replace("\r\n", "\n")
    assert unescape_extension(escaped) == expected


@settings(max_examples=200, deadline=None)
@given(summary=text, vmn=text)
def test_cef_line_parses_back_for_any_text(summary: str, vmn: str) -> None:
    event = replace(EVENT, summary=summary, src_vmn=vmn or None)
    record = parse_cef(format_cef(event))
    assert record.extensions["msg"] == summary.replace("\r\n", "\n")
    if vmn:
        assert record.extensions["cs4"] == vmn.replace("\r\n", "\n")
    assert len(record.header) == 7
    assert record.header[6] == str(SEVERITY_0_10[event.severity])


@settings(max_examples=200, deadline=None)
@given(summary=text, vmn=text)
def test_syslog_structured_data_parses_back_for_any_text(summary: str, vmn: str) -> None:
    event = replace(EVENT, summary=summary, src_vmn=vmn or None)
    message = parse_5424(format_5424(event))
    assert message.structured_data["vmshadow@32473"] == dict(structured_params(event))
    assert message.msg == summary


def test_param_value_escapes_only_the_three_characters() -> None:
    assert escape_param_value('a"b\\c]d=e|f\n') == 'a\\"b\\\\c\\]d=e|f\n'
    assert escape_header("a|b\\c\nd") == "a\\|b\\\\c d"


def test_pri_from_facility_and_severity() -> None:
    expected = {Severity.CRITICAL: 2, Severity.HIGH: 3, Severity.MEDIUM: 4, Severity.LOW: 5, Severity.INFO: 6}
    for severity, code in expected.items():
        line = format_5424(replace(EVENT, severity=severity), SyslogFormat(facility=Facility.AUTH))
        message = parse_5424(line)
        assert (message.facility, message.severity) == (4, code)
    assert format_5424(EVENT).startswith("<131>1 ")  # local0, high


def test_header_fields_are_tokens_or_nil() -> None:
    line = format_5424(EVENT, SyslogFormat(hostname="my host\n", procid=""))
    message = parse_5424(line)
    assert (message.hostname, message.procid, message.app_name) == ("myhost", "-", "vmshadow")
    assert message.timestamp == "2025-03-01T12:00:31.123456Z"


def test_bom_is_optional_and_cef_can_be_the_msg() -> None:
    assert BOM not in format_5424(EVENT)
    with_bom = format_5424(EVENT, SyslogFormat(utf8_bom=True))
    assert f"] {BOM}" in with_bom
    assert parse_5424(with_bom).msg == EVENT.summary
    starts_with_feff = replace(EVENT, summary=BOM + "x")
    assert parse_5424(format_5424(starts_with_feff)).msg == BOM + "x"
    cef_msg = parse_5424(format_5424(EVENT, SyslogFormat(msg=MessageFormat.CEF))).msg
    assert parse_cef(cef_msg).extensions["externalId"] == EVENT.id


def test_long_text_is_cut_with_a_mark() -> None:
    event = replace(EVENT, summary="x" * 10_000)
    record = parse_cef(format_cef(event))
    assert len(record.extensions["msg"]) == MSG_MAX
    assert record.extensions["msg"].endswith(TRUNCATED)
    assert len(parse_5424(format_5424(event)).msg) == 1024
    assert to_ecs(event)["message"] == event.summary  # JSON keeps everything


def test_cef_ipv6_addresses_use_the_ipv6_custom_fields() -> None:
    event: ExportEvent = replace(EVENT, dst_ips=("2001:db8::5",), dst_ports=(443,))
    ext = parse_cef(format_cef(event)).extensions
    assert ext["c6a2"] == "2001:db8::66"
    assert ext["c6a3"] == "2001:db8::5"
    assert ext["dpt"] == "443"
    assert "src" not in ext
    v4 = parse_cef(format_cef(replace(event, src_ip="192.0.2.1"))).extensions
    assert v4["src"] == "192.0.2.1"


def test_ecs_field_choices() -> None:
    doc = to_ecs(EVENT)
    assert doc["event"]["kind"] == "alert"
    assert doc["event"]["category"] == ["network", "intrusion_detection"]
    assert doc["rule"]["id"] == "hunting.port_scan"
    assert doc["network"]["community_id"] == ["1:abc=", "1:def="]
    assert doc["network"]["transport"] == "tcp"
    assert "destination" not in doc  # two destinations
    assert doc["vmshadow"]["dst_ips"] == ["10.0.0.5", "2001:db8::5"]
    assert "threat" in doc  # ATT&CK technique
    assert "indicator" not in doc["threat"]


def test_parsers_refuse_what_is_not_theirs() -> None:
    for bad in ("hello", "<13>2 x", '<13>1 - - - - - [a b="unterminated', "<13>1 - - - - - [a b=c]"):
        with pytest.raises(ValueError, match=r"RFC 5424|not quoted"):
            parse_5424(bad)
    for bad in ("nothing here", "CEF:0|a|b"):
        with pytest.raises(ValueError, match="CEF"):
            parse_cef(bad)
