"""MISP events and feed manifests → network `Indicator`s, every error located (``Object[2].Attribute[0].type``).

An event is read wrapped (``{"Event": {...}}``, the feed and API shape) or bare (``{"info": ..., "Attribute":
[...]}``). Each attribute, at the top level and inside objects, is validated on its own with PyMISP's
`MISPAttribute` (known type, a value present, well-formed timestamps), so one bad attribute does not hide the
next. Attributes of these types become indicators:

| MISP type | indicator |
|---|---|
| ``ip-src``, ``ip-dst`` (an address or a network) | IPv4 / IPv6 / CIDR |
| ``ip-src|port``, ``ip-dst|port`` | the address (the port is dropped) |
| ``domain``, ``hostname``, ``hostname|port`` | domain (covers its subdomains) |
| ``domain|ip`` | the domain and the address, two indicators |
| ``url`` | URL |
| ``ja3-fingerprint-md5`` | JA3 |

Skipped, each with the reason (never an error): attributes without ``to_ids`` (MISP's own "not for detection"
flag), deleted attributes, and every other type (hashes, file names, text, links to reports).
Errors: a document that is not a MISP event, an attribute PyMISP rejects, a value that is not what its type says.

Each indicator keeps: the event's and the attribute's tag names as labels (and the object's name, as
``misp-object:<name>``); the confidence from an ``osint:certainty="NN"`` tag (the attribute's, else the event's),
else `default_confidence`; the attribute's timestamp (else the event's) as ``valid_from``; no ``valid_until``
(MISP has none: expiry is vmshadow's per-source decay); the attribute uuid as `Indicator.external_id`.

A feed manifest (``manifest.json``: event uuid → info, timestamp, tags) is read by `parse_misp_manifest`, whose
`MISPFeedManifest.changed_since` tells which event files to fetch on an incremental pull. Fetching is the caller's:
this module does no I/O.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from pymisp import MISPAttribute

from vmshadow.domain.errors import Issue
from vmshadow.domain.indicator import Indicator, IndicatorType
from vmshadow.intel.result import IntelImport, json_kind, json_object, normalize_observable, unique

_ADDRESS = "address"  # an IPv4/IPv6 address or network
_TYPES: dict[str, tuple[str, ...]] = {
    "ip-src": (_ADDRESS,),
    "ip-dst": (_ADDRESS,),
    "ip-src|port": (_ADDRESS, ""),
    "ip-dst|port": (_ADDRESS, ""),
    "domain": (IndicatorType.DOMAIN,),
    "hostname": (IndicatorType.DOMAIN,),
    "hostname|port": (IndicatorType.DOMAIN, ""),
    "domain|ip": (IndicatorType.DOMAIN, _ADDRESS),
    "url": (IndicatorType.URL,),
    "ja3-fingerprint-md5": (IndicatorType.JA3,),
}
_CERTAINTY = re.compile(r'osint:certainty\s*=\s*"?(\d{1,3})"?')


def parse_misp_event(
    data: bytes | str | Mapping[str, Any], source: str, *, default_confidence: int = 50
) -> IntelImport:
    """Read one MISP event (JSON bytes or text, or the decoded dict); `source` names the feed in every issue.

    >>> event = {"Event": {"info": "demo", "timestamp": "1700000000", "Attribute": [
    ...     {"type": "ip-dst|port", "value": "203.0.113.9|443", "to_ids": True, "timestamp": "1700000000"},
    ...     {"type": "domain", "value": "Evil.Example", "to_ids": False}]}}
    >>> result = parse_misp_event(event, "demo")
    >>> [(i.type.value, i.value) for i in result.indicators], len(result.skipped)
    ([('ipv4', '203.0.113.9')], 1)
    """
    if not 0 <= default_confidence <= 100:
        raise ValueError(f"default_confidence must be in 0..100, got {default_confidence}")
    result = IntelImport()
    document = json_object(data, source, result, expected="expected a JSON object")
    if document is None:
        return result
    if "Event" in document:
        event = document["Event"]
        prefix = "Event."
        if not isinstance(event, dict):
            result.errors.append(
                Issue(source=source, field="Event", message=f"expected an object, found {json_kind(event)}")
            )
            return result
    elif "info" in document or "Attribute" in document or "Object" in document:
        event, prefix = document, ""
    else:
        result.errors.append(
            Issue(source=source, message="not a MISP event: expected {'Event': {...}} or an event with 'Attribute'")
        )
        return result
    _read_event(event, prefix, source, default_confidence, result)
    return result


def _read_event(
    event: Mapping[str, Any], prefix: str, source: str, default_confidence: int, result: IntelImport
) -> None:
    info = event.get("info")
    if not isinstance(info, str) or not info.strip():
        result.errors.append(Issue(source=source, field=f"{prefix}info", message="required: the event's title"))
    event_tags = _tags(event.get("Tag", []), f"{prefix}Tag", source, result)
    event_time = _timestamp(event.get("timestamp"), f"{prefix}timestamp", source, result)
    context = _Context(source, default_confidence, event_tags, event_time)

    attributes = _list(event, "Attribute", prefix, source, result)
    for index, attribute in enumerate(attributes):
        _read_attribute(attribute, f"{prefix}Attribute[{index}]", (), context, result)
    objects = _list(event, "Object", prefix, source, result)
    for number, obj in enumerate(objects):
        where = f"{prefix}Object[{number}]"
        if not isinstance(obj, dict):
            result.errors.append(
                Issue(source=source, field=where, message=f"expected an object, found {json_kind(obj)}")
            )
            continue
        if obj.get("deleted") is True:
            continue
        name = obj.get("name")
        object_labels = (f"misp-object:{name}",) if isinstance(name, str) and name else ()
        for index, attribute in enumerate(_list(obj, "Attribute", f"{where}.", source, result)):
            _read_attribute(attribute, f"{where}.Attribute[{index}]", object_labels, context, result)


@dataclass(frozen=True, slots=True)
class _Context:
    source: str
    default_confidence: int
    tags: tuple[str, ...]
    timestamp: datetime | None


def _read_attribute(
    raw: Any, where: str, extra_labels: tuple[str, ...], context: _Context, result: IntelImport
) -> None:
    source = context.source
    if not isinstance(raw, dict):
        result.errors.append(
            Issue(source=source, field=where, message=f"expected an attribute, found {json_kind(raw)}")
        )
        return
    name = str(raw.get("uuid") or "(no uuid)")
    before = len(result.errors)
    stamp = _timestamp(raw.get("timestamp"), f"{where}.timestamp", source, result)
    if len(result.errors) > before:
        result.errors[-1] = replace(result.errors[-1], message=f"{name}: {result.errors[-1].message}")
        return
    attribute = MISPAttribute()
    try:
        attribute.from_dict(**raw)
    except Exception as exc:  # PyMISPError, and ValueError/OSError/... from its conversions on odd input
        message = str(exc)
        if "type has to be in" in message:  # PyMISP lists every known type: too long to be read
            message = f"{raw.get('type')!r} is not a MISP attribute type"
        result.errors.append(Issue(source=source, field=_field_of(where, raw, exc), message=f"{name}: {message}"))
        return
    kind = str(attribute.type)
    if getattr(attribute, "deleted", False) is True:
        result.skipped.append(Issue(source=source, field=where, message=f"{name}: deleted"))
        return
    parts = _TYPES.get(kind)
    if parts is None:
        result.skipped.append(
            Issue(source=source, field=f"{where}.type", message=f"{name}: {kind} is not a network type")
        )
        return
    if not attribute.to_ids:
        result.skipped.append(
            Issue(
                source=source, field=f"{where}.to_ids", message=f"{name}: {kind} is not marked for detection (to_ids)"
            )
        )
        return
    value = str(attribute.value)
    pieces = value.split("|") if len(parts) > 1 else [value]
    if len(pieces) != len(parts):
        result.errors.append(
            Issue(
                source=source,
                field=f"{where}.value",
                message=f"{name}: {kind} expects {len(parts)} parts, got {value!r}",
            )
        )
        return
    before = len(result.errors)
    own_tags = _tags(raw.get("Tag", []), f"{where}.Tag", source, result)
    if len(result.errors) > before:
        return
    tags = unique([*context.tags, *own_tags, *extra_labels])
    confidence = _certainty(tags, context.default_confidence)
    valid_from = stamp or context.timestamp
    for part, piece in zip(parts, pieces, strict=True):
        if not part:
            continue  # a port
        try:
            if part == _ADDRESS:
                indicator_type, normalized = normalize_observable(IndicatorType.CIDR, piece)
            else:
                indicator_type, normalized = normalize_observable(IndicatorType(part), piece)
        except ValueError as exc:
            result.errors.append(
                Issue(source=source, field=f"{where}.value", message=f"{name}: {kind} {piece!r}: {exc}")
            )
            continue
        result.indicators.append(
            Indicator(
                type=indicator_type,
                value=normalized,
                source=source,
                confidence=confidence,
                valid_from=valid_from,
                labels=tags,
                external_id=None if name == "(no uuid)" else name,
            )
        )


# --- feed manifests --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MISPFeedEvent:
    """One entry of a MISP feed's manifest.json: the event file ``<uuid>.json`` and what the feed says of it."""

    uuid: str
    info: str
    timestamp: datetime | None
    tags: tuple[str, ...] = ()
    org: str | None = None
    threat_level_id: str | None = None


@dataclass(frozen=True, slots=True)
class MISPFeedManifest:
    """A feed manifest read whole: its events and every error, located."""

    events: list[MISPFeedEvent] = field(default_factory=list)
    errors: list[Issue] = field(default_factory=list)

    def changed_since(self, since: datetime | None) -> list[MISPFeedEvent]:
        """The events to fetch on an incremental pull: changed after `since` (all when None), oldest first."""
        chosen = [event for event in self.events if since is None or event.timestamp is None or event.timestamp > since]
        return sorted(chosen, key=lambda event: (event.timestamp or datetime.min.replace(tzinfo=UTC), event.uuid))


def parse_misp_manifest(data: bytes | str | Mapping[str, Any], source: str) -> MISPFeedManifest:
    """Read a MISP feed's manifest.json (event uuid → metadata).

    >>> manifest = parse_misp_manifest('{"5a3c2fcd-8328-42bb-a95e-4f4402de0b81": {"info": "Sednit", '
    ...     '"timestamp": "1513948642", "Tag": [{"name": "tlp:white"}], "Orgc": {"name": "CIRCL"}}}', "feed")
    >>> event = manifest.events[0]
    >>> event.info, event.timestamp.year, event.tags, event.org
    ('Sednit', 2017, ('tlp:white',), 'CIRCL')
    """
    result = IntelImport()  # collects the document-level errors
    document = json_object(data, source, result, expected="expected a JSON object")
    manifest = MISPFeedManifest(errors=result.errors)
    if document is None:
        return manifest
    for key, entry in document.items():
        where = str(key)
        try:
            uuid.UUID(str(key))
        except ValueError:
            manifest.errors.append(Issue(source=source, field=where, message="expected an event uuid as the key"))
            continue
        if not isinstance(entry, dict):
            manifest.errors.append(
                Issue(source=source, field=where, message=f"expected an object, found {json_kind(entry)}")
            )
            continue
        info = entry.get("info")
        if not isinstance(info, str):
            manifest.errors.append(Issue(source=source, field=f"{where}.info", message="required: the event's title"))
            continue
        before = len(result.errors)
        stamp = _timestamp(entry.get("timestamp"), f"{where}.timestamp", source, result)
        tags = _tags(entry.get("Tag", []), f"{where}.Tag", source, result)
        if len(result.errors) > before:
            continue
        orgc = entry.get("Orgc")
        org = orgc.get("name") if isinstance(orgc, dict) and isinstance(orgc.get("name"), str) else None
        threat = entry.get("threat_level_id")
        manifest.events.append(
            MISPFeedEvent(
                uuid=str(key).lower(),
                info=info,
                timestamp=stamp,
                tags=tags,
                org=org,
                threat_level_id=None if threat is None else str(threat),
            )
        )
    return manifest


# --- small helpers ---------------------------------------------------------------------------------------------


def _list(container: Mapping[str, Any], key: str, prefix: str, source: str, result: IntelImport) -> list[Any]:
    value = container.get(key, [])
    if value is None:
        return []
    if not isinstance(value, list):
        result.errors.append(
            Issue(source=source, field=f"{prefix}{key}", message=f"expected a list, found {json_kind(value)}")
        )
        return []
    return value


def _tags(value: Any, where: str, source: str, result: IntelImport) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        result.errors.append(Issue(source=source, field=where, message=f"expected a list, found {json_kind(value)}"))
        return ()
    names = []
    for index, tag in enumerate(value):
        name = tag.get("name") if isinstance(tag, dict) else None
        if not isinstance(name, str) or not name:
            result.errors.append(Issue(source=source, field=f"{where}[{index}].name", message="a tag needs a name"))
            continue
        names.append(name)
    return unique(names)


def _timestamp(value: Any, where: str, source: str, result: IntelImport) -> datetime | None:
    """A MISP timestamp (epoch seconds, as a string or a number) as UTC; None when absent."""
    if value is None or value == "":
        return None
    try:
        return datetime.fromtimestamp(int(value), tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        result.errors.append(Issue(source=source, field=where, message=f"expected epoch seconds, found {value!r}"))
        return None


def _certainty(tags: Iterable[str], default: int) -> int:
    """The confidence an ``osint:certainty="NN"`` tag gives (the attribute's tags come last and win)."""
    confidence = default
    for tag in tags:
        match = _CERTAINTY.fullmatch(tag)
        if match and 0 <= int(match.group(1)) <= 100:
            confidence = int(match.group(1))
    return confidence


def _field_of(where: str, raw: Mapping[str, Any], exc: Exception) -> str:
    """The attribute field PyMISP's message is about, when it can be told."""
    message = str(exc).lower()
    if "type" not in raw or "type has to be in" in message:
        return f"{where}.type"
    if "value" not in raw:
        return f"{where}.value"
    for key in ("timestamp", "first_seen", "last_seen", "to_ids", "Tag", "value"):
        if key.lower() in message:
            return f"{where}.{key}"
    return where
