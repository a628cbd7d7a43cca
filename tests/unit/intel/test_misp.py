"""MISP events and feed manifests: the PyMISP samples import with the counts SOURCE.md gives; errors are located."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.datadir import REPO_ROOT, shared_data
from tests.unit.intel.test_stix import render_case
from vmshadow.domain.indicator import IndicatorType
from vmshadow.intel.misp import parse_misp_event, parse_misp_manifest

MISP = shared_data() / "intel" / "misp-pymisp"
GOLDEN = REPO_ROOT / "tests" / "golden" / "intel"
MISP_CASES = sorted(case for case in GOLDEN.iterdir() if case.name.startswith("misp_"))


def load(name: str) -> Any:
    return json.loads((MISP / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("name", "types", "skipped"),
    [
        # SOURCE.md: 122 attributes, 19 domain + 12 ip-dst (all to_ids); the other 91 are hashes, text, file names
        ("existing_event.json", {"domain": 19, "ipv4": 12}, 91),
        ("sighting_1.json", {"domain": 4, "url": 1}, 0),  # wrapped {"Event": ...}, with Sighting records
        ("57c4445b-c548-4654-af0b-4be3950d210f.json", {}, 9),  # hashes, file name, registry key, link, text
        ("misp_event.json", {}, 2),  # the url is not to_ids; a text attribute
        ("shadow.json", {}, 3),  # file names and text; ShadowAttribute proposals are not read
    ],
)
def test_samples_import_with_the_expected_counts(name: str, types: dict[str, int], skipped: int) -> None:
    result = parse_misp_event((MISP / name).read_bytes(), name)
    assert result.errors == []
    assert Counter(str(i.type) for i in result.indicators) == Counter(types)
    assert len(result.skipped) == skipped


def test_sednit_indicators_keep_tags_and_times() -> None:
    result = parse_misp_event((MISP / "existing_event.json").read_bytes(), "circl")
    by_value = {i.value: i for i in result.indicators}
    assert {"movieultimate.com", "meteost.com", "faststoragefiles.org"} <= set(by_value)
    indicator = by_value["movieultimate.com"]
    assert indicator.type is IndicatorType.DOMAIN
    assert indicator.source == "circl"
    assert "tlp:white" in indicator.labels  # the event's tags
    assert indicator.valid_from == datetime(2017, 12, 21, 22, 5, 57, tzinfo=UTC)  # the attribute's timestamp
    assert indicator.valid_until is None
    assert indicator.external_id == "5a3c3045-ab0c-4d38-8efe-459002de0b81"


def test_attribute_without_to_ids_is_skipped_with_the_reason() -> None:
    result = parse_misp_event((MISP / "misp_event.json").read_bytes(), "misp_event.json")
    reasons = [str(issue) for issue in result.skipped]
    assert (
        "misp_event.json: Attribute[0].to_ids: 575c8598-f1f0-4c16-a94a-0612c0a83866: url is not marked for "
        in (reasons[0])
    )


def test_bare_and_wrapped_events_read_alike() -> None:
    bare = load("existing_event.json")
    assert "Event" not in bare
    wrapped = {"Event": bare}
    assert parse_misp_event(bare, "x").indicators == parse_misp_event(wrapped, "x").indicators
    assert parse_misp_event(wrapped, "x").skipped[0].field.startswith("Event.")  # type: ignore[union-attr]


@pytest.mark.parametrize("case", MISP_CASES, ids=lambda case: case.name)
def test_golden_case(case: Path) -> None:
    assert render_case(case) == (case / "expected.txt").read_text(encoding="utf-8")


def test_golden_bad_attributes_errors_name_each_attribute_and_field() -> None:
    result = parse_misp_event((GOLDEN / "misp_bad_attributes" / "input.json").read_bytes(), "event.json")
    assert [issue.field for issue in result.errors] == [
        "Event.Attribute[1].value",  # 203.0.113.300
        "Event.Attribute[2].type",  # not-a-type
        "Event.Attribute[3].value",  # missing
        "Event.Attribute[7].value",  # ip-src|port without the port
        "Event.Attribute[8]",  # a string
        "Event.Object[0].Attribute[0].value",  # a bad domain inside an object
    ]
    assert "'not-a-type' is not a MISP attribute type" in result.errors[1].message


def test_certainty_tag_sets_confidence_attribute_tag_wins() -> None:
    event = {
        "info": "certainty",
        "Tag": [{"name": 'osint:certainty="50"'}],
        "Attribute": [
            {"type": "ip-dst", "value": "198.51.100.0/24", "to_ids": True},
            {"type": "hostname", "value": "c2.evil.example", "to_ids": True, "Tag": [{"name": 'osint:certainty="95"'}]},
        ],
    }
    result = parse_misp_event(event, "feed", default_confidence=30)
    assert [(i.type, i.value, i.confidence) for i in result.indicators] == [
        (IndicatorType.CIDR, "198.51.100.0/24", 50),
        (IndicatorType.DOMAIN, "c2.evil.example", 95),
    ]
    assert all(i.external_id is None and i.valid_from is None for i in result.indicators)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("[]", "feed: expected a JSON object, found a list"),
        ("{}", "feed: not a MISP event"),
        ('{"Event": []}', "feed: Event: expected an object, found a list"),
        ('{"Event": {"Attribute": []}}', "feed: Event.info: required"),
        ('{"Event": {"info": "x", "Attribute": {}}}', "feed: Event.Attribute: expected a list, found an object"),
        ('{"Event": {"info": "x", "timestamp": "soon"}}', "feed: Event.timestamp: expected epoch seconds"),
        ('{"Event": {"info": "x", "Tag": [{"colour": "#fff"}]}}', "feed: Event.Tag[0].name: a tag needs a name"),
        ("{\n\n,", "feed:3: not JSON"),
    ],
)
def test_documents_that_are_not_events(data: str, expected: str) -> None:
    result = parse_misp_event(data, "feed")
    assert result.indicators == []
    assert str(result.errors[0]).startswith(expected)


def test_default_confidence_must_be_a_percentage() -> None:
    with pytest.raises(ValueError, match=r"0\.\.100"):
        parse_misp_event({"info": "x"}, "feed", default_confidence=-1)


# --- feed manifests --------------------------------------------------------------------------------------------


def _manifest_from_samples() -> dict[str, Any]:
    manifest = {}
    for name in ("existing_event.json", "sighting_1.json", "57c4445b-c548-4654-af0b-4be3950d210f.json"):
        document = load(name)
        event = document.get("Event", document)
        manifest[event["uuid"]] = {
            "info": event["info"],
            "timestamp": event["timestamp"],
            "date": event.get("date"),
            "threat_level_id": event.get("threat_level_id"),
            "Orgc": event.get("Orgc", {}),
            "Tag": [{"name": tag["name"], "colour": tag.get("colour")} for tag in event.get("Tag", [])],
        }
    return manifest


def test_manifest_lists_events_and_picks_changed_ones(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(_manifest_from_samples()), encoding="utf-8")
    manifest = parse_misp_manifest(path.read_bytes(), "circl-feed")
    assert manifest.errors == []
    assert len(manifest.events) == 3
    by_uuid = {event.uuid: event for event in manifest.events}
    sednit = by_uuid["5a3c2fcd-8328-42bb-a95e-4f4402de0b81"]
    assert sednit.info == "OSINT - Sednit update: How Fancy Bear Spent the Year"
    assert sednit.timestamp == datetime(2017, 12, 22, 13, 17, 22, tzinfo=UTC)
    assert "tlp:white" in sednit.tags
    assert sednit.threat_level_id == "3"
    every = manifest.changed_since(None)
    assert [event.timestamp for event in every] == sorted(event.timestamp for event in every)  # type: ignore[type-var]
    changed = manifest.changed_since(datetime(2018, 1, 1, tzinfo=UTC))
    assert [event.info for event in changed] == ["Ursnif, MALWAREMESSIAGH"]


def test_manifest_errors_are_located() -> None:
    manifest = parse_misp_manifest(
        {
            "not-a-uuid": {"info": "x"},
            "5a3c2fcd-8328-42bb-a95e-4f4402de0b81": {"timestamp": "1"},
            "6a3c2fcd-8328-42bb-a95e-4f4402de0b81": {"info": "bad time", "timestamp": "yesterday"},
            "7a3c2fcd-8328-42bb-a95e-4f4402de0b81": [],
            "8a3c2fcd-8328-42bb-a95e-4f4402de0b81": {"info": "fine", "timestamp": 1700000000},
        },
        "feed",
    )
    assert [str(issue) for issue in manifest.errors] == [
        "feed: not-a-uuid: expected an event uuid as the key",
        "feed: 5a3c2fcd-8328-42bb-a95e-4f4402de0b81.info: required: the event's title",
        "feed: 6a3c2fcd-8328-42bb-a95e-4f4402de0b81.timestamp: expected epoch seconds, found 'yesterday'",
        "feed: 7a3c2fcd-8328-42bb-a95e-4f4402de0b81: expected an object, found a list",
    ]
    assert [event.info for event in manifest.events] == ["fine"]


def test_attribute_tag_without_a_name_and_odd_timestamps_are_located_errors() -> None:
    event = {
        "info": "odd",
        "Attribute": [
            {"uuid": "a1", "type": "domain", "value": "evil.example", "to_ids": True, "Tag": [{}]},
            {"uuid": "a2", "type": "domain", "value": "evil.example", "to_ids": True, "timestamp": "99999999999999999"},
        ],
    }
    result = parse_misp_event(event, "feed")
    assert result.indicators == []
    assert [issue.field for issue in result.errors] == ["Attribute[0].Tag[0].name", "Attribute[1].timestamp"]
