"""STIX 2.1 bundles: the OASIS samples import with the counts measured on them; errors name object and field.

Golden cases live in tests/golden/intel/<case>/: input.json beside expected.txt, the exact rendering of what the
reader produced (indicators, then errors, then skipped items). After an intended change, regenerate with
``.venv/bin/python -c "from tests.unit.intel.test_stix import regenerate; regenerate()"`` and review the diff.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.datadir import REPO_ROOT, shared_data
from vmshadow.domain.errors import InputError
from vmshadow.domain.indicator import IndicatorType
from vmshadow.intel.index import IndicatorIndex
from vmshadow.intel.misp import parse_misp_event
from vmshadow.intel.result import IntelImport
from vmshadow.intel.stix import parse_stix_bundle

STIX = shared_data() / "intel" / "stix2-oasis"
GOLDEN = REPO_ROOT / "tests" / "golden" / "intel"
AT = datetime(2026, 7, 1, tzinfo=UTC)


def read(name: str) -> IntelImport:
    return parse_stix_bundle((STIX / name).read_bytes(), name)


def render(result: IntelImport) -> str:
    lines = []
    for indicator in result.indicators:
        extra = [f"confidence={indicator.confidence}"]
        if indicator.valid_from:
            extra.append(f"valid_from={indicator.valid_from.isoformat()}")
        if indicator.valid_until:
            extra.append(f"valid_until={indicator.valid_until.isoformat()}")
        if indicator.labels:
            extra.append("labels=" + ",".join(indicator.labels))
        if indicator.kill_chain_phases:
            extra.append("phases=" + ",".join(indicator.kill_chain_phases))
        if indicator.revoked:
            extra.append("revoked")
        lines.append(f"indicator: {indicator.type} {indicator.value} {indicator.external_id} " + " ".join(extra))
    lines += [f"error: {issue}" for issue in result.errors]
    lines += [f"skipped: {issue}" for issue in result.skipped]
    return "\n".join(lines) + "\n"


def render_case(case: Path) -> str:
    data = (case / "input.json").read_bytes()
    if case.name.startswith("misp_"):
        return render(parse_misp_event(data, "input.json"))
    return render(parse_stix_bundle(data, "input.json"))


def regenerate() -> None:
    for case in sorted(GOLDEN.iterdir()):
        if (case / "input.json").is_file():
            (case / "expected.txt").write_text(render_case(case), encoding="utf-8")


STIX_CASES = sorted(case for case in GOLDEN.iterdir() if case.name.startswith("stix_"))


# --- the OASIS samples -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "indicators", "distinct", "errors", "skipped"),
    [
        ("indicator-for-c2-ip-address.json", 1, 1, 0, 0),
        ("indicator-to-campaign-relationship.json", 1, 1, 0, 0),
        ("indicators-for-C2-with-COA.json", 1, 1, 0, 1),  # + the SHA-256 file indicator, skipped
        ("infrastructure.json", 0, 0, 0, 2),  # an ipv4-addr and a domain-name SCO: observations, not indicators
        ("malicious-email-indicator-with-attachment.json", 0, 0, 0, 2),  # e-mail patterns
        ("threat-reports__apt1.json", 7, 7, 0, 5),  # 4 CIDRs, 3 domains; 3 md5s and 2 certificates skipped
        ("threat-reports__poisonivy.json", 64, 42, 1, 2),  # 23 indicators with OR patterns, 2 file names
    ],
)
def test_samples_import_with_the_measured_counts(
    name: str, indicators: int, distinct: int, errors: int, skipped: int
) -> None:
    result = read(name)
    assert len(result.indicators) == indicators
    assert len({(i.type, i.value) for i in result.indicators}) == distinct
    assert len(result.errors) == errors
    assert len(result.skipped) == skipped


def test_sample_indicator_keeps_its_fields() -> None:
    (indicator,) = read("indicator-for-c2-ip-address.json").indicators
    assert indicator.type is IndicatorType.IPV4
    assert indicator.value == "10.0.0.0"
    assert indicator.source == "indicator-for-c2-ip-address.json"
    assert indicator.confidence == 50  # no STIX confidence: the default
    assert indicator.labels == ("malicious-activity",)
    assert indicator.external_id == "indicator--33fe3b22-0201-47cf-85d0-97c02164528d"
    assert indicator.valid_from == datetime(2014, 5, 8, 9, 0, tzinfo=UTC)
    assert type(indicator.valid_from) is datetime  # a plain datetime, not stix2's subclass


def test_apt1_networks_and_kill_chain_phases() -> None:
    result = read("threat-reports__apt1.json")
    cidrs = {i.value: i for i in result.indicators if i.type is IndicatorType.CIDR}
    assert set(cidrs) == {"223.166.0.0/15", "58.246.0.0/15", "112.64.0.0/15", "139.226.0.0/15"}
    assert cidrs["223.166.0.0/15"].kill_chain_phases == ("mandiant-attack-lifecycle-model:establish-foothold",)
    domains = {i.value for i in result.indicators if i.type is IndicatorType.DOMAIN}
    assert domains == {"hugesoft.org", "arrowservice.net", "msnhome.org"}
    index = IndicatorIndex(result.indicators)
    assert index.match_ip("223.167.10.1", AT) is cidrs["223.166.0.0/15"]
    found = index.match_domain("www.hugesoft.org", AT)
    assert found is not None
    assert found.value == "hugesoft.org"


def test_poisonivy_or_patterns_give_one_indicator_per_observable() -> None:
    result = read("threat-reports__poisonivy.json")
    from_one = [i for i in result.indicators if i.external_id == "indicator--4e11b23f-732b-418e-b786-4dbf65459d50"]
    assert [(i.type, i.value) for i in from_one] == [
        (IndicatorType.DOMAIN, "nkr.iphone.qpoe.com"),
        (IndicatorType.IPV4, "180.210.206.96"),
        (IndicatorType.IPV4, "101.78.151.179"),
    ]
    assert all(i.labels == ("malicious-activity", "attribution") for i in from_one)


def test_poisonivy_malformed_domain_is_an_error_naming_object_and_field() -> None:
    result = read("threat-reports__poisonivy.json")
    (error,) = result.errors
    assert error.source == "threat-reports__poisonivy.json"
    assert error.field == "objects[42].pattern"
    assert error.message.startswith("indicator--4e4c4ad7-4909-456a-b6fa-e24a6f682a40: domain-name:value = ")
    assert "'domain autuo.xicp.net'" in error.message
    # the other observable of that OR pattern is still read
    assert any(i.value == "60.10.1.115" for i in result.indicators)
    # all or nothing (the API and the default CLI): one error rejects the whole bundle
    with pytest.raises(InputError) as raised:
        result.accepted()
    assert raised.value.issues == (error,)


def test_accepted_returns_every_indicator_of_a_clean_bundle() -> None:
    result = read("threat-reports__apt1.json")
    assert result.ok
    assert result.accepted() == result.indicators


# --- golden malformed and pattern cases ------------------------------------------------------------------------


@pytest.mark.parametrize("case", STIX_CASES, ids=lambda case: case.name)
def test_golden_case(case: Path) -> None:
    assert render_case(case) == (case / "expected.txt").read_text(encoding="utf-8")


def test_golden_cases_exist() -> None:
    assert {case.name for case in STIX_CASES} >= {"stix_mixed_bundle", "stix_patterns", "stix_not_a_bundle"}


def test_mixed_bundle_reports_every_bad_object_and_keeps_the_good_one() -> None:
    result = parse_stix_bundle((GOLDEN / "stix_mixed_bundle" / "input.json").read_bytes(), "bundle.json")
    assert [i.value for i in result.indicators] == ["203.0.113.9"]
    fields = [issue.field for issue in result.errors]
    assert fields == [
        "objects[1].pattern",  # missing
        "objects[2].pattern",  # not an address
        "objects[3].pattern",  # syntax
        "objects[4].valid_until",  # before valid_from
        "objects[5].confidence",  # 140
        "objects[6]",  # a string, not an object
        "objects[7].id",  # not type--uuid
    ]
    with pytest.raises(InputError) as raised:
        result.accepted()
    assert len(raised.value.issues) == 7


# --- documents that are not bundles ----------------------------------------------------------------------------


def _bundle(*objects: Any) -> dict[str, Any]:
    return {"type": "bundle", "id": "bundle--44af6c39-c09b-49c5-9de2-394224b04982", "objects": list(objects)}


def _indicator(pattern: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "indicator",
        "spec_version": "2.1",
        "id": "indicator--33fe3b22-0201-47cf-85d0-97c02164528d",
        "created": "2026-01-01T00:00:00Z",
        "modified": "2026-01-01T00:00:00Z",
        "pattern": pattern,
        "pattern_type": "stix",
        "valid_from": "2026-01-01T00:00:00Z",
        **extra,
    }


def test_bytes_text_and_dict_read_alike() -> None:
    bundle = _bundle(_indicator("[ipv4-addr:value = '203.0.113.9']", confidence=90))
    text = json.dumps(bundle)
    results = [parse_stix_bundle(form, "feed") for form in (bundle, text, text.encode())]
    assert results[0] == results[1] == results[2]
    assert results[0].indicators[0].confidence == 90


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\xff\xfe{", "feed:1: not UTF-8 text"),
        ('{\n  "type": "bundle",\n  oops\n}', "feed:3: not JSON: Expecting property name enclosed in double quotes"),
        ("[1, 2]", "feed: a STIX bundle is a JSON object, found a list"),
        ('{"type": "bundle", "id": "bundle--1", "objects": []}', "feed: id: expected 'bundle--<uuid>'"),
        (
            '{"type": "bundle", "id": "bundle--44af6c39-c09b-49c5-9de2-394224b04982", "objects": {}}',
            "feed: objects: expected a list, found an object",
        ),
    ],
)
def test_documents_that_are_not_bundles(data: str | bytes, expected: str) -> None:
    result = parse_stix_bundle(data, "feed")
    assert not result.indicators
    assert str(result.errors[0]).startswith(expected)


def test_location_names_issues_and_source_names_indicators() -> None:
    bundle = _bundle(
        _indicator("[ipv4-addr:value = '203.0.113.9']"),
        _indicator("[ipv4-addr:value = 'x']") | {"id": "indicator--44fe3b22-0201-47cf-85d0-97c02164528d"},
    )
    result = parse_stix_bundle(bundle, "taxii-feed", location="https://taxii/collections/c/ page 2")
    assert result.indicators[0].source == "taxii-feed"
    assert str(result.errors[0]).startswith("https://taxii/collections/c/ page 2: objects[1].pattern: indicator--44fe")


def test_revoked_indicator_is_kept_revoked_and_never_valid() -> None:
    result = parse_stix_bundle(_bundle(_indicator("[domain-name:value = 'old.evil.example']", revoked=True)), "feed")
    (indicator,) = result.indicators
    assert indicator.revoked
    assert not indicator.is_valid(AT)
    assert IndicatorIndex(result.indicators).match_domain("old.evil.example", AT) is None


def test_valid_until_and_confidence_are_kept() -> None:
    result = parse_stix_bundle(
        _bundle(_indicator("[url:value = 'HTTP://Evil.Example/a']", valid_until="2026-02-01T00:00:00Z", confidence=0)),
        "feed",
    )
    (indicator,) = result.indicators
    assert (indicator.type, indicator.value) == (IndicatorType.URL, "http://evil.example/a")
    assert indicator.valid_until == datetime(2026, 2, 1, tzinfo=UTC)
    assert indicator.confidence == 0


def test_duplicate_observables_in_one_pattern_are_kept_once() -> None:
    result = parse_stix_bundle(
        _bundle(_indicator("[ipv4-addr:value = '203.0.113.9' OR ipv4-addr:value = '203.0.113.9/32']")), "feed"
    )
    assert [i.value for i in result.indicators] == ["203.0.113.9"]


def test_default_confidence_must_be_a_percentage() -> None:
    with pytest.raises(ValueError, match=r"0\.\.100"):
        parse_stix_bundle(_bundle(), "feed", default_confidence=101)


def test_null_properties_and_non_string_values_are_located_errors() -> None:
    result = parse_stix_bundle(
        _bundle(
            _indicator("[ipv4-addr:value = '203.0.113.9']", kill_chain_phases=None),
            _indicator("[network-traffic:dst_ref.value = 5]")
            | {"id": "indicator--44fe3b22-0201-47cf-85d0-97c02164528d"},
        ),
        "feed",
    )
    assert result.indicators == []
    assert [str(issue) for issue in result.errors] == [
        "feed: objects[0].kill_chain_phases: indicator--33fe3b22-0201-47cf-85d0-97c02164528d: null is not a value "
        "(leave it out)",
        "feed: objects[1].pattern: indicator--44fe3b22-0201-47cf-85d0-97c02164528d: "
        "network-traffic:dst_ref.value = 5: expected a string, found 5",
    ]
