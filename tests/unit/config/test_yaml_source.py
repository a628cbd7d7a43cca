"""The YAML reader: core-schema values, text keys, lines of keys and items, duplicate keys, syntax errors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vmshadow.config.yaml_source import (
    MAX_NODES,
    FieldReader,
    describe,
    field_name,
    load_yaml,
    read_text,
    suggest,
)
from vmshadow.domain.errors import InputError, Issue
from vmshadow.domain.net import Protocol


def _value(text: str) -> Any:
    doc = load_yaml(f"v: {text}\n", "t.yaml")
    assert doc.issues == ()
    return doc.data["v"]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("yes", "yes"),
        ("no", "no"),
        ("on", "on"),
        ("off", "off"),
        ("y", "y"),
        ("true", True),
        ("False", False),
        ("TRUE", True),
        ("~", None),
        ("null", None),
        ("", None),
        ("010", 10),
        ("-7", -7),
        ("+7", 7),
        ("22:80", "22:80"),
        ("0x50", "0x50"),
        ("0o17", "0o17"),
        ("1_000", "1_000"),
        ("1.5", 1.5),
        ("1e3", 1000.0),
        (".inf", math.inf),
        ("-.inf", -math.inf),
        ("2026-12-01", "2026-12-01"),
        ("2026-12-01T00:00:00Z", "2026-12-01T00:00:00Z"),
        ("02:00:00:00:00:01", "02:00:00:00:00:01"),
        ('"5"', "5"),
        ("'true'", "true"),
        ("!!str 5", "5"),
        ("!!int '42'", 42),
    ],
)
def test_scalars_follow_the_yaml_1_2_core_schema(text: str, value: object) -> None:
    got = _value(text)
    assert got == value
    assert type(got) is type(value)


def test_nan_is_a_float() -> None:
    assert math.isnan(_value(".nan"))


def test_keys_are_the_text_written() -> None:
    doc = load_yaml("80: a\ntrue: b\n~: c\n'q': d\n1.5: e\n", "t.yaml")
    assert doc.data == {"80": "a", "true": "b", "~": "c", "q": "d", "1.5": "e"}


def test_lines_of_keys_and_items() -> None:
    text = "# comment\ntmrs:\n  - id: a\n    ports:\n      - 53\n      - 80\n  - id: b\n"
    doc = load_yaml(text, "t.yaml")
    assert doc.line(()) == 2
    assert doc.line(("tmrs",)) == 2
    assert doc.line(("tmrs", 0)) == 3
    assert doc.line(("tmrs", 0, "ports")) == 4
    assert doc.line(("tmrs", 0, "ports", 1)) == 6
    assert doc.line(("tmrs", 1, "id")) == 7


def test_a_missing_key_is_at_its_mapping() -> None:
    doc = load_yaml("tmrs:\n  - id: a\n  - id: b\n", "t.yaml")
    assert doc.line(("tmrs", 1, "action")) == 3
    assert doc.issue(("tmrs", 1, "action"), "required field is missing") == Issue(
        "t.yaml", "required field is missing", line=3, field="tmrs[1].action"
    )


def test_an_issue_at_the_root_has_no_field() -> None:
    doc = load_yaml("a: 1\n", "t.yaml")
    assert str(doc.issue((), "boom")) == "t.yaml:1: boom"


def test_duplicate_keys_are_issues_and_the_first_value_stays() -> None:
    doc = load_yaml("a: 1\nb:\n  c: 2\n  c: 3\na: 4\n", "t.yaml")
    assert doc.data == {"a": 1, "b": {"c": 2}}
    assert [str(i) for i in doc.issues] == [
        "t.yaml:4: b.c: duplicate key; first written at line 3",
        "t.yaml:5: a: duplicate key; first written at line 1",
    ]


def test_quoted_and_plain_spellings_of_a_key_are_the_same_key() -> None:
    doc = load_yaml("a: 1\n'a': 2\n", "t.yaml")
    assert len(doc.issues) == 1


def test_aliases_expand_and_keep_the_anchor_lines() -> None:
    doc = load_yaml("base: &p [80, 443]\nweb:\n  ports: *p\n", "t.yaml")
    assert doc.data == {"base": [80, 443], "web": {"ports": [80, 443]}}
    assert doc.line(("web", "ports", 1)) == 1


def test_a_recursive_alias_is_an_issue_not_a_hang() -> None:
    doc = load_yaml("a: &x [1, *x]\n", "t.yaml")
    assert doc.data == {"a": [1, None]}
    assert [i.message for i in doc.issues] == ["an alias refers to the list or mapping that contains it"]


def test_an_alias_bomb_stops_at_the_node_budget() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{n}: &a{n} [*a{n - 1}, *a{n - 1}, *a{n - 1}, *a{n - 1}, *a{n - 1}]" for n in range(1, 9)]
    with pytest.raises(InputError, match=f"more than {MAX_NODES} values"):
        load_yaml("\n".join(lines) + "\n", "bomb.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: !!binary aGk=\n", "unsupported YAML tag tag:yaml.org,2002:binary"),
        ("a: !custom x\n", "unsupported YAML tag !custom"),
        ("a: !!set {x}\n", "unsupported YAML tag tag:yaml.org,2002:set"),
        ("a: !!int 'x'\n", "'x' is not a valid int"),
        ("? [a, b]\n: c\n", "a mapping key must be plain text, not a list or mapping"),
    ],
)
def test_unsupported_constructs_are_issues(text: str, message: str) -> None:
    doc = load_yaml(text, "t.yaml")
    assert [i.message for i in doc.issues] == [message]
    assert doc.issues[0].line == 1


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n", "null\n"])
def test_an_empty_document_has_no_data(text: str) -> None:
    doc = load_yaml(text, "t.yaml")
    assert doc.data is None
    assert doc.issues == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: b: c\n", "t.yaml:1: YAML syntax error at column 5: mapping values are not allowed here"),
        (
            "a: 1\n---\nb: 2\n",
            "t.yaml:2: YAML syntax error at column 1: "
            "a second YAML document starts here; the file must hold exactly one",
        ),
        ("a: *nope\n", "t.yaml:1: YAML syntax error at column 4: found undefined alias 'nope'"),
        (
            "a:\n\tb: 1\n",
            "t.yaml:2: YAML syntax error at column 1: found character '\\t' that cannot start any token"
            " (while scanning for the next token); indent with spaces, not tabs",
        ),
        (
            "a: 1\nb: \x01\n",
            "t.yaml:2: character U+0001 is not allowed in YAML (special characters are not allowed)",
        ),
    ],
)
def test_text_that_is_not_yaml_raises_with_line_and_column(text: str, expected: str) -> None:
    with pytest.raises(InputError) as caught:
        load_yaml(text, "t.yaml")
    assert [str(i) for i in caught.value.issues] == [expected]


def test_deep_nesting_is_an_input_error() -> None:
    with pytest.raises(InputError, match="nested too deeply"):
        load_yaml("[" * 5000 + "]" * 5000, "t.yaml")


@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(st.characters(categories=("L", "N", "P", "S", "Zs")), max_size=20),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(st.characters(categories=("L", "N")), max_size=10), children, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_json_reads_as_the_same_data(data: Any) -> None:
    doc = load_yaml(json.dumps({"v": data}, ensure_ascii=False), "t.json")
    assert doc.issues == ()
    assert doc.data == {"v": data}


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ((), ""),
        (("tmrs", 0, "ports", 1), "tmrs[0].ports[1]"),
        (("vmns", "web.prod", "addresses", 0), 'vmns["web.prod"].addresses[0]'),
        (("defaults", "vmns", "vm-1"), "defaults.vmns.vm-1"),
    ],
)
def test_field_names(path: tuple[str | int, ...], name: str) -> None:
    assert field_name(path) == name


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "nothing (null)"),
        (True, "a boolean (true)"),
        (3, "an integer (3)"),
        (1.5, "a number (1.5)"),
        ("x", "text ('x')"),
        ("y" * 50, "text ('" + "y" * 37 + "...')"),
        ([1], "a list"),
        ({"a": 1}, "a mapping"),
    ],
)
def test_describe(value: object, text: str) -> None:
    assert describe(value) == text


def test_suggest_finds_a_close_word_only() -> None:
    assert suggest("prioriy", ["id", "priority"]) == "priority"
    assert suggest("zzz", ["id", "priority"]) is None


def test_read_text_strips_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_bytes(b"\xef\xbb\xbftmrs: []\n")
    assert read_text(path) == "tmrs: []\n"


def test_read_text_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        read_text(tmp_path / "nope.yaml", "rules.yaml")
    assert str(caught.value) == "rules.yaml: cannot read the file: No such file or directory"


def test_read_text_reports_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"a: 1\ncomment: caf\xe9\n")
    with pytest.raises(InputError) as caught:
        read_text(path)
    assert caught.value.issues == (Issue(str(path), "the file is not UTF-8 text", line=2),)


def _reader(text: str) -> FieldReader:
    return FieldReader(load_yaml(text, "t.yaml"))


def test_mapping_reports_unknown_and_missing_keys() -> None:
    reader = _reader("x:\n  idd: 1\n  colour: red\n")
    reader.mapping(("x",), reader.document.data["x"], ("id", "name"), required=("id", "name"))
    assert [str(i) for i in reader.issues] == [
        "t.yaml:2: x.idd: unknown key; did you mean 'id'?",
        "t.yaml:3: x.colour: unknown key; expected one of: id, name",
        "t.yaml:1: x.name: required field is missing",
    ]


def test_raise_if_any_orders_issues_by_line_and_keeps_loader_issues() -> None:
    reader = _reader("a: 1\nb: 2\na: 3\n")
    reader.report(("b",), "second")
    with pytest.raises(InputError) as caught:
        reader.raise_if_any()
    assert [i.line for i in caught.value.issues] == [2, 3]


def test_raise_if_any_is_quiet_without_issues() -> None:
    _reader("a: 1\n").raise_if_any()


def test_typed_accessors() -> None:
    reader = _reader("a: 1\n")
    assert reader.text(("a",), "x") == "x"
    assert reader.integer(("a",), 5, 0, 10) == 5
    assert reader.choice(("a",), "udp", Protocol, "protocol") is Protocol.UDP
    assert reader.items(("a",), [1, 2]) == [(("a", 0), 1), (("a", 1), 2)]
    assert reader.items(("a",), 7) == [(("a",), 7)]
    assert reader.issues == []
    assert reader.integer(("a",), True, 0, 10) is None
    assert reader.integer(("a",), 11, 0, 10) is None
    assert reader.text(("a",), 1.5) is None
    assert reader.items(("a",), {"k": 1}) == []
    assert [i.message for i in reader.issues] == [
        "expected an integer, found a boolean (true)",
        "11 is outside 0-10",
        "expected text, found a number (1.5); put it in quotes",
        "expected a list or a single value; found a mapping",
    ]
