"""Read YAML into plain data while keeping the line of every mapping key and list item.

The text is composed with PyYAML's safe composer (nothing is constructed from tags) and converted here,
so that:

- the YAML 1.2 core schema applies, not PyYAML's YAML 1.1 default: ``yes``/``no``/``on``/``off`` stay
  text, integers are decimal (``010`` is ten; ``22:80`` and ``0x50`` are text, not 1360 and 80),
  timestamps stay text for the caller to parse;
- mapping keys are always text, exactly as written (``80:`` is the key ``"80"``);
- a duplicate key is an error, reported at the second occurrence;
- anchors and aliases work (lines inside an alias are the anchor's); merge keys (``<<``) are not supported and
  arrive as an ordinary key, which the caller reports as unknown.

`load_yaml` raises `InputError` only when the text is not YAML at all; every other problem is collected in
`YamlDocument.issues` so that a caller can report it alongside its own. `FieldReader` gives typed access to
the data and turns every mismatch into an `Issue` at the right line.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path as FilePath
from typing import Any, TypeVar

import yaml

from vmshadow.domain.errors import InputError, Issue

PathItem = str | int
Path = tuple[PathItem, ...]
"""Where a value is: mapping keys (text) and list indexes (int) from the document's root."""

MAX_NODES = 100_000
"""Upper bound on values once aliases are expanded, so that an alias bomb fails fast, not out of memory."""

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"


class _CoreSchemaLoader(yaml.SafeLoader):
    """SafeLoader whose implicit typing is the YAML 1.2 core schema (decimal integers only)."""

    yaml_implicit_resolvers: dict[Any, Any] = {}  # noqa: RUF012 - PyYAML's per-class registry, this class's own


for _tag, _pattern, _first in (
    (_NULL, r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    (_BOOL, r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
    (_INT, r"^[-+]?[0-9]+$", list("-+0123456789")),
    (
        _FLOAT,
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        list("-+0123456789."),
    ),
):
    _CoreSchemaLoader.add_implicit_resolver(_tag, re.compile(_pattern), _first)


@dataclass(frozen=True, slots=True)
class YamlDocument:
    """Plain data (dict, list, str, int, float, bool, None) with the line of every key and item."""

    source: str
    data: Any
    issues: tuple[Issue, ...] = ()
    lines: Mapping[Path, int] = field(default_factory=dict)

    def line(self, path: Path) -> int | None:
        """The line of `path`, or of its nearest ancestor that has one (a missing key is at its mapping)."""
        for end in range(len(path), -1, -1):
            found = self.lines.get(path[:end])
            if found is not None:
                return found
        return None

    def issue(self, path: Path, message: str) -> Issue:
        return Issue(self.source, message, line=self.line(path), field=field_name(path) or None)


_SIMPLE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def field_name(path: Path) -> str:
    """``("tmrs", 0, "ports", 1)`` -> ``tmrs[0].ports[1]``; keys that are not simple words are quoted."""
    text = ""
    for item in path:
        if isinstance(item, int):
            text += f"[{item}]"
        elif _SIMPLE_KEY.match(item):
            text += f".{item}" if text else item
        else:
            text += f'["{item}"]'
    return text


def describe(value: object) -> str:
    """How a value reads in an error message: its kind, and the value itself when it is short."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"text ({shown!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def suggest(word: str, candidates: Iterable[str]) -> str | None:
    """The closest candidate to a misspelt `word`, if one is close enough."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


class _TooLargeError(Exception):
    pass


class _Converter:
    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: dict[Path, int] = {}
        self.issues: list[Issue] = []
        self._count = 0
        self._open: set[int] = set()

    def _report(self, node: yaml.Node, path: Path, message: str) -> None:
        self.issues.append(Issue(self.source, message, line=node.start_mark.line + 1, field=field_name(path) or None))

    def convert(self, node: yaml.Node, path: Path) -> Any:
        self._count += 1
        if self._count > MAX_NODES:
            raise _TooLargeError
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        if id(node) in self._open:
            self._report(node, path, "an alias refers to the list or mapping that contains it")
            return None
        self._open.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return self._sequence(node, path)
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
        finally:
            self._open.discard(id(node))
        raise AssertionError(f"unexpected YAML node {node!r}")  # pragma: no cover - the composer makes no others

    def _scalar(self, node: yaml.ScalarNode, path: Path) -> Any:
        value: str = node.value
        tag = node.tag
        try:
            if tag == _STR:
                return value
            if tag == _NULL:
                return None
            if tag == _BOOL:
                return value.lower() == "true"
            if tag == _INT:
                return int(value, 10)
            if tag == _FLOAT:
                lowered = value.lower()
                if lowered.endswith(".inf"):
                    return -math.inf if lowered.startswith("-") else math.inf
                if lowered == ".nan":
                    return math.nan
                return float(value)
        except ValueError:
            self._report(node, path, f"{value!r} is not a valid {tag.rsplit(':', 1)[-1]}")
            return None
        self._report(node, path, f"unsupported YAML tag {tag}")
        return None

    def _sequence(self, node: yaml.SequenceNode, path: Path) -> list[Any]:
        if node.tag != _SEQ:
            self._report(node, path, f"unsupported YAML tag {node.tag}")
        items: list[Any] = []
        for index, item in enumerate(node.value):
            item_path = (*path, index)
            self.lines[item_path] = item.start_mark.line + 1
            items.append(self.convert(item, item_path))
        return items

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any]:
        if node.tag != _MAP:
            self._report(node, path, f"unsupported YAML tag {node.tag}")
        result: dict[str, Any] = {}
        first_lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                self._report(key_node, path, "a mapping key must be plain text, not a list or mapping")
                continue
            key: str = key_node.value
            key_path = (*path, key)
            if key in first_lines:
                self._report(key_node, key_path, f"duplicate key; first written at line {first_lines[key]}")
                continue
            first_lines[key] = line
            self.lines[key_path] = line
            result[key] = self.convert(value_node, key_path)
        return result


def _syntax_issue(error: yaml.MarkedYAMLError, source: str) -> Issue:
    mark = error.problem_mark or error.context_mark
    problem = error.problem or "not valid YAML"
    if problem == "but found another document":
        message = "a second YAML document starts here; the file must hold exactly one"
    else:
        message = problem
        if error.context:
            message += f" ({error.context}"
            if error.context_mark is not None and error.context_mark is not mark:
                message += f" at line {error.context_mark.line + 1}"
            message += ")"
        if "'\\t'" in problem:
            message += "; indent with spaces, not tabs"
    if mark is None:
        return Issue(source, f"YAML syntax error: {message}")
    return Issue(source, f"YAML syntax error at column {mark.column + 1}: {message}", line=mark.line + 1)


def load_yaml(text: str, source: str) -> YamlDocument:
    """Compose one YAML document from `text`; an empty document (or only comments) has data None.

    Raises `InputError` when the text is not YAML; other problems are in the returned document's `issues`.
    """
    try:
        root = yaml.compose(text, Loader=_CoreSchemaLoader)
    except yaml.MarkedYAMLError as error:
        raise InputError(_syntax_issue(error, source)) from None
    except yaml.reader.ReaderError as error:
        line = text.count("\n", 0, error.position) + 1
        code = error.character if isinstance(error.character, int) else ord(error.character)
        raise InputError(
            Issue(source, f"character U+{code:04X} is not allowed in YAML ({error.reason})", line=line)
        ) from None
    except RecursionError:
        raise InputError(Issue(source, "lists or mappings are nested too deeply")) from None
    except yaml.YAMLError as error:  # pragma: no cover - every reading error above is more specific
        raise InputError(Issue(source, f"not readable as YAML: {error}")) from None
    if root is None:
        return YamlDocument(source, None)
    converter = _Converter(source)
    converter.lines[()] = root.start_mark.line + 1
    try:
        data = converter.convert(root, ())
    except _TooLargeError:
        raise InputError(
            Issue(source, f"the document has more than {MAX_NODES} values once aliases are expanded")
        ) from None
    except RecursionError:
        raise InputError(Issue(source, "lists or mappings are nested too deeply")) from None
    return YamlDocument(source, data, tuple(converter.issues), converter.lines)


def read_text(path: str | FilePath, source: str | None = None) -> str:
    """The UTF-8 text of a file, or an `InputError` that says why it cannot be read."""
    name = str(path) if source is None else source
    try:
        data = FilePath(path).read_bytes()
    except OSError as error:
        raise InputError(Issue(name, f"cannot read the file: {error.strerror or error}")) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise InputError(Issue(name, "the file is not UTF-8 text", line=line)) from None


E = TypeVar("E", bound=StrEnum)


class FieldReader:
    """Typed access to a document's data. Each method checks one value; a mismatch is an issue at its line.

    Methods return None (or an empty result) for a bad value, so that a caller goes on and finds every other
    problem; the caller builds domain objects only when `issues` is empty.
    """

    def __init__(self, document: YamlDocument) -> None:
        self.document = document
        self.issues: list[Issue] = list(document.issues)

    def report(self, path: Path, message: str) -> None:
        self.issues.append(self.document.issue(path, message))

    def line(self, path: Path) -> int | None:
        return self.document.line(path)

    def number(self, path: Path, value: object, low: float, high: float) -> float | None:
        """A number (not a bool, not NaN) within [low, high]."""
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            self.report(path, f"expected a number, found {describe(value)}")
            return None
        if not low <= value <= high:
            self.report(path, f"{value} is outside {low:g}-{high:g}")
            return None
        return float(value)

    def raise_if_any(self) -> None:
        """Raise one `InputError` with every issue, in the order of their lines."""
        if self.issues:
            raise InputError(sorted(self.issues, key=lambda issue: issue.line or 0))

    def mapping(
        self,
        path: Path,
        value: object,
        allowed: Sequence[str],
        required: Sequence[str] = (),
    ) -> dict[str, Any] | None:
        """A mapping whose keys are all in `allowed` and include `required`."""
        if not isinstance(value, dict):
            self.report(path, f"expected a mapping with keys {', '.join(allowed)}; found {describe(value)}")
            return None
        suggested: set[str] = set()
        for key in value:
            if key in allowed:
                continue
            guess = suggest(key, (k for k in allowed if k not in value))
            if guess is not None:
                suggested.add(guess)
                self.report((*path, key), f"unknown key; did you mean {guess!r}?")
            else:
                self.report((*path, key), f"unknown key; expected one of: {', '.join(allowed)}")
        for key in required:
            if key not in value and key not in suggested:
                self.report((*path, key), "required field is missing")
        return value

    def items(self, path: Path, value: object) -> list[tuple[Path, Any]]:
        """A list, or a single value standing for a list of one; each item with its path."""
        if isinstance(value, dict):
            self.report(path, "expected a list or a single value; found a mapping")
            return []
        if isinstance(value, list):
            return [((*path, index), item) for index, item in enumerate(value)]
        return [(path, value)]

    def text(self, path: Path, value: object) -> str | None:
        if isinstance(value, str):
            return value
        hint = "; put it in quotes" if isinstance(value, int | float) else ""
        self.report(path, f"expected text, found {describe(value)}{hint}")
        return None

    def integer(self, path: Path, value: object, low: int, high: int) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.report(path, f"expected an integer, found {describe(value)}")
            return None
        if not low <= value <= high:
            self.report(path, f"{value} is outside {low}-{high}")
            return None
        return value

    def choice(self, path: Path, value: object, allowed: type[E], what: str) -> E | None:
        """One value of a closed set; the message lists every allowed value."""
        names = ", ".join(str(member) for member in allowed)
        if not isinstance(value, str):
            self.report(path, f"expected {what} ({names}), found {describe(value)}")
            return None
        try:
            return allowed(value)
        except ValueError:
            self.report(path, f"unknown {what} {value!r}; expected one of: {names}")
            return None
