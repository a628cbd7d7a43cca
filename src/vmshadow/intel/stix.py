"""STIX 2.1 bundles → network `Indicator`s, every error located (``objects[3].pattern: indicator--…: …``).

Each object of the bundle is validated on its own with the `stix2` library (``allow_custom=True``: STIX lets
producers add ``x_`` properties and ``x-`` objects, and consumers must accept them), so one bad object does not
hide the next: every malformed object is one error naming its index, id and field. Only ``indicator`` objects
with ``pattern_type: stix`` yield indicators.

What a pattern yields, read from the `stix2` pattern tree:

- comparisons with ``=`` (or ``IN (...)``, one indicator per member) on ``ipv4-addr:value``, ``ipv6-addr:value``
  (a network such as ``'223.166.0.0/15'`` gives a CIDR indicator), ``domain-name:value``, ``url:value``,
  ``network-traffic:dst_ref.value`` / ``src_ref.value`` (an address, or a name), and ``ISSUBSET`` on an address
  (a CIDR indicator);
- JA3/JA4: STIX 2.1 has no fingerprint property, so any property named ``ja3``, ``ja3s``, ``ja3_hash``, ``ja4``
  or ``ja4_hash`` (an ``x_`` or ``x-`` prefix allowed; e.g. ``network-traffic:extensions.'x-tls'.ja3`` or
  ``network-traffic:x_ja4``), and the ``value`` or ``hash`` of custom ``x-ja3`` / ``x-ja4`` objects; JA3S is
  kept as a JA3 indicator (same MD5 form, the index matches client and server fingerprints alike);
- ``OR`` (inside an observation or between observations): one indicator per matchable observable, each
  alternative being enough to match; unmatchable alternatives are reported as skipped;
- ``AND`` inside an observation: when exactly one side names an address, name or fingerprint, that value is the
  indicator and the other sides (``dst_ref.type = 'ipv4-addr'``, ports, certificate fields) only narrowed it; an
  ``AND`` of several values is skipped;
- observations joined by ``AND`` or ``FOLLOWEDBY`` only match together and are skipped; qualifiers (``REPEATS``,
  ``WITHIN``, ``START/STOP``) are dropped, the observable alone is the indicator.

Skipped, with the reason (never an error): patterns on files, hashes, e-mail, certificates and other
non-network objects, negated comparisons, ``LIKE``/``MATCHES``, non-STIX pattern types (snort, yara, sigma), and
observed objects (``ipv4-addr``, ``domain-name``, ... SCOs) that are not indicators. Errors: a document that is
not a JSON bundle, an object that `stix2` rejects (missing or invalid property, bad pattern syntax, ``valid_until``
not after ``valid_from``), and a value that is not what its property says (``ipv4-addr:value = 'x'``).

Each indicator keeps the object's confidence (else `default_confidence`), ``valid_from``/``valid_until``,
``indicator_types`` and ``labels`` as labels, kill-chain phases as ``kill_chain_name:phase_name``, ``revoked``,
and the object id as `Indicator.external_id`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import stix2
import stix2.exceptions
from stix2.pattern_visitor import create_pattern_object

from vmshadow.domain.errors import Issue
from vmshadow.domain.indicator import Indicator, IndicatorType
from vmshadow.intel.result import IntelImport, json_kind, json_object, normalize_observable, unique

_SIMPLE_PATHS = {
    ("ipv4-addr", "value"): IndicatorType.IPV4,
    ("ipv6-addr", "value"): IndicatorType.IPV6,
    ("domain-name", "value"): IndicatorType.DOMAIN,
    ("url", "value"): IndicatorType.URL,
}
_REF_PATHS = {("dst_ref", "value"), ("src_ref", "value")}
_FINGERPRINT_PROPERTIES = {
    "ja3": IndicatorType.JA3,
    "ja3_hash": IndicatorType.JA3,
    "ja3s": IndicatorType.JA3,
    "ja3s_hash": IndicatorType.JA3,
    "ja4": IndicatorType.JA4,
    "ja4_hash": IndicatorType.JA4,
}
_FINGERPRINT_OBJECTS = {"x-ja3": IndicatorType.JA3, "x-ja3s": IndicatorType.JA3, "x-ja4": IndicatorType.JA4}
_OBSERVED_NETWORK_TYPES = {"ipv4-addr", "ipv6-addr", "domain-name", "url", "network-traffic"}


@dataclass(frozen=True, slots=True)
class _Term:
    """One matchable comparison: its declared kind (None: an address or a name, from a network-traffic ref)."""

    kind: IndicatorType | None
    value: Any  # the constant as the pattern holds it; a string when usable
    text: str  # the comparison as written, for messages


@dataclass(frozen=True, slots=True)
class _Feed:
    source: str  # the indicators' source
    where: str  # where issues are located
    default_confidence: int


@dataclass(slots=True)
class _Reading:
    terms: list[_Term]
    unsupported: list[str]


def parse_stix_bundle(
    data: bytes | str | Mapping[str, Any],
    source: str,
    *,
    default_confidence: int = 50,
    location: str | None = None,
) -> IntelImport:
    """Read a STIX 2.1 bundle (JSON bytes or text, or the decoded dict).

    `source` is the indicators' source, and where issues say they are unless `location` (a file name, a TAXII
    page) is given.

    >>> bundle = {"type": "bundle", "id": "bundle--44af6c39-c09b-49c5-9de2-394224b04982", "objects": [{
    ...     "type": "indicator", "spec_version": "2.1", "id": "indicator--33fe3b22-0201-47cf-85d0-97c02164528d",
    ...     "created": "2026-01-01T00:00:00Z", "modified": "2026-01-01T00:00:00Z", "pattern_type": "stix",
    ...     "pattern": "[domain-name:value = 'evil.example' OR ipv4-addr:value = '203.0.113.9']",
    ...     "valid_from": "2026-01-01T00:00:00Z"}]}
    >>> [(i.type.value, i.value) for i in parse_stix_bundle(bundle, "demo").indicators]
    [('domain', 'evil.example'), ('ipv4', '203.0.113.9')]
    """
    if not 0 <= default_confidence <= 100:
        raise ValueError(f"default_confidence must be in 0..100, got {default_confidence}")
    result = IntelImport()
    where = location or source
    document = json_object(data, where, result, expected="a STIX bundle is a JSON object")
    if document is None:
        return result
    objects = _bundle_objects(document, where, result)
    for index, obj in enumerate(objects):
        _read_object(index, obj, _Feed(source, where, default_confidence), result)
    return result


def _bundle_objects(document: Mapping[str, Any], source: str, result: IntelImport) -> list[Any]:
    kind = document.get("type")
    if kind != "bundle":
        hint = " (a single STIX object: wrap it in a bundle)" if isinstance(kind, str) and "--" not in kind else ""
        result.errors.append(Issue(source=source, field="type", message=f"expected 'bundle', found {kind!r}{hint}"))
        return []
    bundle_id = document.get("id")
    if not _is_identifier(bundle_id, "bundle"):
        result.errors.append(
            Issue(source=source, field="id", message=f"expected 'bundle--<uuid>', found {bundle_id!r}")
        )
    objects = document.get("objects", [])
    if not isinstance(objects, list):
        result.errors.append(
            Issue(source=source, field="objects", message=f"expected a list, found {json_kind(objects)}")
        )
        return []
    return objects


def _read_object(index: int, obj: Any, feed: _Feed, result: IntelImport) -> None:
    source = feed.where
    where = f"objects[{index}]"
    if not isinstance(obj, dict):
        result.errors.append(
            Issue(source=source, field=where, message=f"expected a STIX object, found {json_kind(obj)}")
        )
        return
    object_id = obj.get("id")
    name = object_id if isinstance(object_id, str) else "(no id)"
    kind = obj.get("type")
    if not isinstance(kind, str) or not kind:
        result.errors.append(Issue(source=source, field=f"{where}.type", message=f"{name}: missing or not a string"))
        return
    if not _is_identifier(object_id, kind):
        result.errors.append(
            Issue(source=source, field=f"{where}.id", message=f"{name}: expected '{kind}--<uuid>', found {object_id!r}")
        )
        return
    nulls = [key for key, value in obj.items() if value is None]
    if nulls:  # STIX 2.1 section 3.1: a property without a value is left out, never null
        for key in nulls:
            result.errors.append(
                Issue(source=source, field=f"{where}.{key}", message=f"{name}: null is not a value (leave it out)")
            )
        return
    try:
        parsed = stix2.parse(obj, allow_custom=True, version="2.1")
    except Exception as exc:  # stix2 raises STIXError, ValueError, TypeError and worse on odd input
        for prop, message in _explain(exc):
            field = f"{where}.{prop}" if prop else where
            result.errors.append(Issue(source=source, field=field, message=f"{name}: {message}"))
        return
    if kind in _OBSERVED_NETWORK_TYPES:
        result.skipped.append(
            Issue(
                source=source,
                field=where,
                message=f"{name}: an observed object (SCO), not an indicator; only indicator objects are imported",
            )
        )
        return
    if kind == "indicator":
        _read_indicator(where, name, obj, parsed, feed, result)


def _read_indicator(
    where: str,
    name: str,
    obj: Mapping[str, Any],
    parsed: Any,
    feed: _Feed,
    result: IntelImport,
) -> None:
    source = feed.where
    pattern_type = obj.get("pattern_type")
    if pattern_type != "stix":
        result.skipped.append(
            Issue(
                source=source,
                field=f"{where}.pattern_type",
                message=f"{name}: {pattern_type!r} patterns are not read, only 'stix'",
            )
        )
        return
    pattern_field = f"{where}.pattern"
    try:
        reading = _read_pattern(str(obj["pattern"]))
    except Exception as exc:  # stix2 validated the syntax; its tree builder may still refuse an odd pattern
        result.errors.append(Issue(source=source, field=pattern_field, message=f"{name}: cannot be read: {exc}"))
        return
    for reason in reading.unsupported:
        result.skipped.append(Issue(source=source, field=pattern_field, message=f"{name}: {reason}"))
    if not reading.terms:
        if not reading.unsupported:  # pragma: no cover - every pattern yields a term or a reason
            result.skipped.append(Issue(source=source, field=pattern_field, message=f"{name}: nothing to match"))
        return

    labels = unique([*obj.get("indicator_types", ()), *obj.get("labels", ())])
    phases = unique(f"{p['kill_chain_name']}:{p['phase_name']}" for p in obj.get("kill_chain_phases", ()))
    confidence = obj.get("confidence", feed.default_confidence)
    if isinstance(confidence, bool) or not isinstance(confidence, int) or not 0 <= confidence <= 100:
        # STIX 2.1 section 3.2: an integer 0..100 (stix2 3.0 does not check it)
        result.errors.append(
            Issue(source=source, field=f"{where}.confidence", message=f"{name}: expected 0..100, found {confidence!r}")
        )
        return
    valid_from = _plain_datetime(parsed.get("valid_from"))
    valid_until = _plain_datetime(parsed.get("valid_until"))
    seen: set[tuple[IndicatorType, str]] = set()
    for term in reading.terms:
        try:
            kind, value = _term_value(term)
        except ValueError as exc:
            result.errors.append(Issue(source=source, field=pattern_field, message=f"{name}: {term.text}: {exc}"))
            continue
        if (kind, value) in seen:
            continue
        seen.add((kind, value))
        result.indicators.append(
            Indicator(
                type=kind,
                value=value,
                source=feed.source,
                confidence=confidence,
                valid_from=valid_from,
                valid_until=valid_until,
                labels=labels,
                kill_chain_phases=phases,
                revoked=bool(obj.get("revoked", False)),
                external_id=name,
            )
        )


def _term_value(term: _Term) -> tuple[IndicatorType, str]:
    if not isinstance(term.value, str):
        raise ValueError(f"expected a string, found {term.value!r}")
    if term.kind is not None:
        return normalize_observable(term.kind, term.value)
    # a network-traffic ref: an address (or network), else a name
    try:
        return normalize_observable(IndicatorType.CIDR, term.value)
    except ValueError:
        pass
    try:
        return normalize_observable(IndicatorType.DOMAIN, term.value)
    except ValueError as exc:
        raise ValueError(f"neither an IP address nor a domain name: {exc}") from None


# --- the pattern tree ------------------------------------------------------------------------------------------


def _read_pattern(pattern: str) -> _Reading:
    tree = create_pattern_object(pattern, version="2.1")
    return _observation(tree)


def _observation(node: Any) -> _Reading:
    name = type(node).__name__
    if name == "ObservationExpression":
        return _comparison(node.operand)
    if name == "OrObservationExpression":
        return _merge(_observation(operand) for operand in node.operands)
    if name == "QualifiedObservationExpression":
        return _observation(node.observation_expression)
    if name == "ParentheticalExpression":
        return _observation(node.expression)
    if name in ("AndObservationExpression", "FollowedByObservationExpression"):
        return _Reading(
            [], [f"observations joined by {node.operator} match only together; vmshadow matches one at a time"]
        )
    return _Reading([], [f"unsupported pattern element {name}"])  # pragma: no cover - the grammar is closed


def _comparison(node: Any) -> _Reading:
    name = type(node).__name__
    if name == "OrBooleanExpression":
        return _merge(_comparison(operand) for operand in node.operands)
    if name == "ParentheticalExpression":
        return _comparison(node.expression)
    if name == "AndBooleanExpression":
        readings = [_comparison(operand) for operand in node.operands]
        with_terms = [reading for reading in readings if reading.terms]
        if len(with_terms) > 1:
            text = " AND ".join(term.text for reading in with_terms for term in reading.terms)
            return _Reading([], [f"{text}: a conjunction of several values cannot be matched one by one"])
        # the other sides only narrow the one value; their own "unsupported" notes do not matter then
        if with_terms:
            return with_terms[0]
        return _Reading([], [reason for reading in readings for reason in reading.unsupported][:1])
    return _leaf(node)


def _leaf(node: Any) -> _Reading:
    text = str(node)
    path = node.lhs
    kind = _path_kind(path)
    if kind is _UNSUPPORTED:
        return _Reading([], [f"{text}: {path.object_type_name} objects are not matched on the network"])
    if node.negated:
        return _Reading([], [f"{text}: negated comparisons are not matched"])
    operator = node.operator
    if operator == "=":
        return _Reading([_Term(kind, getattr(node.rhs, "value", None), text)], [])
    if operator == "IN":
        return _Reading([_Term(kind, getattr(item, "value", None), text) for item in node.rhs.value], [])
    if operator == "ISSUBSET" and kind in (IndicatorType.IPV4, IndicatorType.IPV6, None):
        return _Reading([_Term(kind, getattr(node.rhs, "value", None), text)], [])
    return _Reading([], [f"{text}: operator {operator} is not matched (only =, IN and ISSUBSET)"])


_UNSUPPORTED: Any = object()


def _path_kind(path: Any) -> Any:
    """The indicator kind a path names, None for a network-traffic ref (address or name), else _UNSUPPORTED."""
    object_type = str(path.object_type_name)
    properties = [str(component.property_name) for component in path.property_path]
    simple = _SIMPLE_PATHS.get((object_type, properties[0])) if len(properties) == 1 else None
    if simple is not None:
        return simple
    if object_type == "network-traffic" and tuple(properties) in _REF_PATHS:
        return None
    if object_type in _FINGERPRINT_OBJECTS and properties in (["value"], ["hash"]):
        return _FINGERPRINT_OBJECTS[object_type]
    for prop in properties:
        key = prop.lower().replace("-", "_").removeprefix("x_")
        if key in _FINGERPRINT_PROPERTIES:
            return _FINGERPRINT_PROPERTIES[key]
    return _UNSUPPORTED


def _merge(readings: Iterable[_Reading]) -> _Reading:
    merged = _Reading([], [])
    for reading in readings:
        merged.terms.extend(reading.terms)
        merged.unsupported.extend(reading.unsupported)
    return merged


# --- small helpers ---------------------------------------------------------------------------------------------


def _explain(exc: Exception) -> list[tuple[str | None, str]]:
    """(property, message) pairs for a `stix2` validation error."""
    if isinstance(exc, stix2.exceptions.InvalidValueError | stix2.exceptions.InvalidObjRefError):
        return [(str(exc.prop_name), str(exc.reason))]
    if isinstance(exc, stix2.exceptions.MissingPropertiesError):
        return [(str(prop), "required property is missing") for prop in exc.properties]
    if isinstance(exc, stix2.exceptions.ExtraPropertiesError):
        return [(str(prop), "not a property of this object") for prop in exc.properties]
    if isinstance(exc, stix2.exceptions.DependentPropertiesError):
        return [(str(dependent), f"requires {needed}") for needed, dependent in exc.dependencies]
    if isinstance(exc, stix2.exceptions.MutuallyExclusivePropertiesError | stix2.exceptions.AtLeastOnePropertyError):
        return [(",".join(exc.properties), str(exc))]
    message = str(exc)
    if "valid_until" in message:
        return [("valid_until", "must be later than valid_from")]
    return [(None, f"not a valid STIX 2.1 object: {message}")]


def _is_identifier(value: Any, kind: str) -> bool:
    if not isinstance(value, str) or not value.startswith(f"{kind}--"):
        return False
    try:
        uuid.UUID(value[len(kind) + 2 :])
    except ValueError:
        return False
    return True


def _plain_datetime(value: Any) -> datetime | None:
    """A `stix2` timestamp as a plain, timezone-aware UTC `datetime`."""
    if value is None:
        return None
    stamp: datetime = value
    return datetime(
        stamp.year, stamp.month, stamp.day, stamp.hour, stamp.minute, stamp.second, stamp.microsecond, tzinfo=UTC
    )
