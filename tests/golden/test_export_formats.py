"""Golden tests of the SIEM formatters: ECS JSON, RFC 5424 syslog and CEF.

export/<case>/event.json is an export event (the form `event_to_json` writes); expected.ecs.json,
expected.5424.txt and expected.cef.txt are what the formatters make of it. Cases cover every event kind and
hostile field content (newlines, `=`, `|`, `\\`, `]`, `"`, non-ASCII, very long strings). After an intended change
run `VMSHADOW_REGEN_GOLDEN=1 pytest tests/golden/test_export_formats.py` and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from vmshadow.export.cef import CUSTOM_MAX, MSG_MAX, NAME_MAX, format_cef, parse_cef
from vmshadow.export.ecs import to_ecs, to_ecs_json
from vmshadow.export.event import ExportEvent, event_from_json, event_to_json
from vmshadow.export.syslog5424 import TEXT_MAX, SyslogFormat, format_5424, parse_5424, structured_params

HERE = Path(__file__).parent / "export"
CASES = sorted(p for p in HERE.iterdir() if (p / "event.json").is_file())
REGEN = os.environ.get("VMSHADOW_REGEN_GOLDEN") == "1"
FMT = SyslogFormat(hostname="host.example", procid="4242")


def load(case: Path) -> ExportEvent:
    return event_from_json(json.loads((case / "event.json").read_text(encoding="utf-8")))


def outputs(event: ExportEvent) -> dict[str, str]:
    return {
        "expected.ecs.json": json.dumps(to_ecs(event), ensure_ascii=False, sort_keys=True, indent=2) + "\n",
        "expected.5424.txt": format_5424(event, FMT) + "\n",
        "expected.cef.txt": format_cef(event, product_version="0.1.0") + "\n",
    }


def test_there_are_cases() -> None:
    assert len(CASES) >= 7
    assert {"hostile", "finding_intel_ipv4", "proposal_add_deny", "decision_applied", "outcome_rolled_back"} <= {
        c.name for c in CASES
    }


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_formats_match_golden(case: Path) -> None:
    event = load(case)
    for name, text in outputs(event).items():
        path = case / name
        if REGEN:
            path.write_bytes(text.encode())
        assert path.read_bytes().decode() == text, f"{case.name}/{name} differs"


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_event_json_round_trips(case: Path) -> None:
    raw = json.loads((case / "event.json").read_text(encoding="utf-8"))
    assert event_to_json(event_from_json(raw)) == raw


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_formats_parse_back(case: Path) -> None:
    """What a receiver parses out of each format is what the event said (cut where the format bounds length)."""
    event = load(case)
    assert json.loads(to_ecs_json(event)) == to_ecs(event)
    assert "\n" not in to_ecs_json(event)

    message = parse_5424(format_5424(event, FMT))
    assert message.msgid == str(event.kind)
    assert message.structured_data["vmshadow@32473"] == dict(structured_params(event))
    assert message.structured_data["vmshadow@32473"]["id"] == event.id
    if len(event.summary) <= TEXT_MAX:
        assert message.msg == event.summary

    cef_line = format_cef(event)
    assert "\n" not in cef_line
    assert "\r" not in cef_line
    record = parse_cef(cef_line)
    assert record.header[0] == "CEF:0"
    assert record.header[4] == f"{event.kind}.{event.action}"
    assert record.extensions["externalId"] == event.id
    assert record.extensions["act"] == event.action
    if len(event.summary) <= MSG_MAX:
        assert record.extensions["msg"] == event.summary
    if len(event.summary) <= NAME_MAX and "\n" not in event.summary and "\r" not in event.summary:
        assert record.header[5] == (event.summary or f"{event.kind} {event.action}")
    if event.rule_id and len(event.rule_id) <= CUSTOM_MAX:
        assert record.extensions["cs1"] == event.rule_id


def test_hostile_case_is_hostile() -> None:
    event = load(HERE / "hostile")
    for needle in ("\n", "\r", "=", "|", "\\", "]", '"', "ü", "日"):
        assert needle in event.summary, needle
        assert needle in (event.src_vmn or ""), needle
    assert len(event.summary) > 5000
    cef_line = (HERE / "hostile" / "expected.cef.txt").read_bytes().decode()
    assert cef_line.count("\n") == 1  # one line: newlines are escaped (extensions) or replaced (header)
    assert "\\=" in cef_line
    assert "\\|" in cef_line
    syslog = (HERE / "hostile" / "expected.5424.txt").read_bytes().decode()
    assert '\\"' in syslog
    assert "\\]" in syslog
