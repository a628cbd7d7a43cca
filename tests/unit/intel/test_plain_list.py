from __future__ import annotations

import ipaddress
import itertools
from pathlib import Path

import pytest

from tests.datadir import shared_data
from vmshadow.domain.errors import InputError
from vmshadow.domain.indicator import Indicator, IndicatorType
from vmshadow.intel.plain_list import load_plain_list, parse_plain_list

IPSUM = shared_data() / "intel" / "ipsum"
IPREP = shared_data() / "suricata-verify" / "issue-4280-iprep"
DATAREP = shared_data() / "suricata-verify" / "datarep-01"


def issues_of(exc: pytest.ExceptionInfo[InputError]) -> list[tuple[int | None, str]]:
    return [(issue.line, issue.message) for issue in exc.value.issues]


# --- the real samples ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "count"),
    [
        ("level3.txt", 14217),
        ("level4.txt", 5354),
        ("level5.txt", 1413),
        ("level6.txt", 318),
        ("level7.txt", 70),
        ("level8.txt", 23),
    ],
)
def test_ipsum_level_files_give_one_ipv4_indicator_per_line(name: str, count: int) -> None:
    indicators = load_plain_list(IPSUM / name)

    assert len(indicators) == count  # the line counts in SOURCE.md
    assert {i.type for i in indicators} == {IndicatorType.IPV4}
    assert {i.source for i in indicators} == {name}
    assert {i.confidence for i in indicators} == {70}
    assert len({i.value for i in indicators}) == count


def test_ipsum_levels_nest_as_the_source_says() -> None:
    levels = [{i.value for i in load_plain_list(IPSUM / f"level{n}.txt")} for n in range(3, 9)]
    for lower, higher in itertools.pairwise(levels):
        assert higher < lower


def test_ipsum_full_feed_format_skips_the_header_and_ignores_the_count() -> None:
    indicators = load_plain_list(IPSUM / "ipsum_top50.txt", source="ipsum", default_confidence=90)

    assert len(indicators) == 53  # 60 lines, 7 of them the commented header
    assert indicators[0] == Indicator(IndicatorType.IPV4, "77.90.185.20", "ipsum", confidence=90)
    assert indicators[-1].value == "113.20.8.90"
    assert all("\t" not in i.value for i in indicators)


def test_suricata_iprep_list_uses_the_first_csv_column() -> None:
    path = IPREP / "scirius-iprep.list"
    # independent oracle: the distinct networks in the first column of uncommented lines
    expected = {
        ipaddress.ip_network(line.split(",")[0])
        for line in path.read_text().splitlines()
        if line and not line.startswith("#")
    }

    indicators = load_plain_list(path)

    assert {ipaddress.ip_network(i.value) for i in indicators} == expected
    assert len(indicators) == len(expected)
    values = {i.value for i in indicators}
    # line 1 comments 8.8.8.8 out, the last line lists it again: the comment must not hide the real entry
    assert indicators[0].value == "4.4.4.4"
    assert indicators[-1].value == "8.8.8.8"
    assert "196.15.64.0/18" in values
    # zero-padded IPv6 in the file, canonical spelling in the indicator
    assert "2a01:4f8:120:4023::110" in values
    assert {i.type for i in indicators} == {IndicatorType.IPV4, IndicatorType.IPV6, IndicatorType.CIDR}


def test_suricata_datarep_file_is_rejected_as_not_a_plain_list() -> None:
    with pytest.raises(InputError) as exc:
        load_plain_list(DATAREP / "dns_string.rep")

    [issue] = exc.value.issues
    assert issue.source == str(DATAREP / "dns_string.rep")
    assert issue.line == 1
    assert "base64 for 'google.com'" in issue.message
    assert "Suricata dataset/datarep" in issue.message


def test_suricata_reputation_categories_file_is_named_in_every_error() -> None:
    with pytest.raises(InputError) as exc:
        load_plain_list(IPREP / "scirius-categories.txt")

    assert [line for line, _ in issues_of(exc)] == list(range(1, 11))
    assert all("reputation categories file" in message for _, message in issues_of(exc))


def test_suricata_rules_are_not_list_entries() -> None:
    with pytest.raises(InputError) as exc:
        load_plain_list(IPREP / "iprep.rules")

    assert issues_of(exc) == [(1, "a Suricata rule, not a list entry"), (2, "a Suricata rule, not a list entry")]


def test_capture_file_is_rejected_as_binary() -> None:
    with pytest.raises(InputError, match="binary data, not a text list"):
        load_plain_list(DATAREP / "input.pcap")


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(InputError) as exc:
        load_plain_list(tmp_path / "absent.txt")

    assert str(exc.value) == f"{tmp_path / 'absent.txt'}: cannot read the list: No such file or directory"


def test_non_utf8_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"1.2.3.4\nevil.com\nb\xfccher.de\n")

    with pytest.raises(InputError) as exc:
        load_plain_list(path)

    assert issues_of(exc) == [(3, "not UTF-8 text")]


# --- detection and normalization ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "kind", "value"),
    [
        ("192.0.2.7", IndicatorType.IPV4, "192.0.2.7"),
        ("2001:DB8:0000::0001", IndicatorType.IPV6, "2001:db8::1"),
        ("198.51.100.0/24", IndicatorType.CIDR, "198.51.100.0/24"),
        ("2001:db8::/32", IndicatorType.CIDR, "2001:db8::/32"),
        ("Evil.Example.COM.", IndicatorType.DOMAIN, "evil.example.com"),
        ("bücher.de", IndicatorType.DOMAIN, "xn--bcher-kva.de"),
        ("xn--bcher-kva.de", IndicatorType.DOMAIN, "xn--bcher-kva.de"),
        ("_dmarc.example.org", IndicatorType.DOMAIN, "_dmarc.example.org"),
        ("HTTP://Evil.COM:8080/Path/x.exe?a=1#frag", IndicatorType.URL, "http://evil.com:8080/Path/x.exe?a=1"),
        ("http://198.51.100.9/a,b", IndicatorType.URL, "http://198.51.100.9/a,b"),
        ("https://[2001:db8::1]/x", IndicatorType.URL, "https://[2001:db8::1]/x"),
        ("T13D1516H2_8daaf6152771_b186095e22b6", IndicatorType.JA4, "t13d1516h2_8daaf6152771_b186095e22b6"),
    ],
)
def test_type_is_detected_and_value_normalized(line: str, kind: IndicatorType, value: str) -> None:
    [indicator] = parse_plain_list(line + "\n", "feed")

    assert (indicator.type, indicator.value, indicator.source) == (kind, value, "feed")


def test_comments_blank_lines_separators_and_line_endings() -> None:
    text = (
        "\ufeff# a header comment\r\n"
        "; Spamhaus DROP style comment\r\n"
        "\r\n"
        "   \r\n"
        "1.10.16.0/20 ; SBL256894\r\n"
        "192.0.2.1\t12\r\n"
        "192.0.2.2 7\r\n"
        "evil.com # trailing comment\r\n"
        '"quoted.example",high,2024-01-01\r\n'
    )

    values = [i.value for i in parse_plain_list(text, "feed")]

    assert values == ["1.10.16.0/20", "192.0.2.1", "192.0.2.2", "evil.com", "quoted.example"]


def test_csv_header_on_the_first_data_line_is_skipped() -> None:
    text = "# exported\nip_address,first_seen\n192.0.2.1,2024-01-01\n"

    assert [i.value for i in parse_plain_list(text, "feed")] == ["192.0.2.1"]


def test_a_header_word_after_the_first_data_line_is_an_error() -> None:
    with pytest.raises(InputError) as exc:
        parse_plain_list("192.0.2.1,x\nip,count\n", "feed")

    assert [line for line, _ in issues_of(exc)] == [2]


def test_a_value_listed_twice_is_kept_once() -> None:
    text = "192.0.2.1\n192.0.2.1\t3\nEVIL.com\nevil.com.\n2001:db8::1\n2001:0db8::0001\n"

    assert [i.value for i in parse_plain_list(text, "feed")] == ["192.0.2.1", "evil.com", "2001:db8::1"]


def test_empty_and_comment_only_lists_are_empty() -> None:
    assert parse_plain_list("", "feed") == []
    assert parse_plain_list("# nothing yet\n\n", "feed") == []


def test_forced_type_reads_ja3_lists() -> None:
    text = "# JA3 fingerprints\nE7D705A3286E19EA42F587B344EE6865\n"

    [indicator] = parse_plain_list(text, "sslbl", indicator_type=IndicatorType.JA3)

    assert (indicator.type, indicator.value) == (IndicatorType.JA3, "e7d705a3286e19ea42f587b344ee6865")


def test_forced_type_rejects_other_types() -> None:
    with pytest.raises(InputError) as exc:
        parse_plain_list("192.0.2.1\n2001:db8::1\nabc\n", "feed", indicator_type=IndicatorType.IPV4)

    lines = issues_of(exc)
    assert [line for line, _ in lines] == [2, 3]
    assert "an IPv6 address in a list of ipv4" in lines[0][1]


def test_default_confidence_must_be_a_percentage() -> None:
    with pytest.raises(ValueError, match=r"0\.\.100"):
        parse_plain_list("192.0.2.1\n", "feed", default_confidence=101)


# --- errors -----------------------------------------------------------------------------------------------------


def test_every_bad_line_is_reported_with_its_number_and_nothing_is_returned() -> None:
    text = "\n".join(
        [
            "192.0.2.1",  # 1 ok
            "# comment",  # 2
            "300.1.2.3",  # 3 octet out of range
            "010.1.1.1",  # 4 leading zero (ambiguous octal)
            "10.0.0.1/8",  # 5 host bits set
            "a..b.com",  # 6 empty label
            "-bad.com",  # 7 leading hyphen
            "localhost",  # 8 single label
            "*.evil.com",  # 9 wildcard
            "ex ample.com",  # 10 two words
            "0.0.0.0 ads.example",  # 11 hosts file
            "1::2::3",  # 12 bad IPv6
            "fe80::1%eth0",  # 13 scoped
            "http://",  # 14 URL without host
            "x" * 64 + ".com",  # 15 label too long
            "evil.com",  # 16 ok
        ]
    )

    with pytest.raises(InputError) as exc:
        parse_plain_list(text, "lists/bad.txt")

    found = issues_of(exc)
    assert [line for line, _ in found] == list(range(3, 16))
    assert all(issue.source == "lists/bad.txt" for issue in exc.value.issues)
    messages = dict(found)
    assert "not a valid IPv4 address" in messages[3]
    assert "did you mean 10.0.0.0/8?" in messages[5]
    assert "empty label" in messages[6]
    assert "may not start or end with '-'" in messages[7]
    assert "single label" in messages[8]
    assert "wildcards are not needed" in messages[9]
    assert "expected one value per line, found 2 words" in messages[10]
    assert "hosts-file line" in messages[11]
    assert "not a valid IPv6 address" in messages[12]
    assert "scoped" in messages[13]
    assert "no host" in messages[14]
    assert "more than 63" in messages[15]
    assert str(exc.value).splitlines()[0].startswith("lists/bad.txt:3: ")


def test_json_documents_are_named() -> None:
    with pytest.raises(InputError) as exc:
        parse_plain_list('\n{"type": "bundle", "id": "bundle--1", "objects": []}\n', "feed.json")

    assert issues_of(exc) == [
        (2, "a JSON document, not a plain list (a STIX bundle or a MISP event? use the STIX or MISP reader)")
    ]
