"""Plain threat-intel lists: one indicator per line, type detected from the value.

Accepted, per line: an IPv4 or IPv6 address, a CIDR network, a domain, a URL (with a scheme), or a JA4 fingerprint
(its shape is unambiguous; JA3 lists are plain MD5 hex and need ``indicator_type=IndicatorType.JA3``). Around the
value:

- blank lines and comment lines (``#`` or ``;``) are skipped, as is a comment after the value
  (``1.10.16.0/20 ; SBL256894``, the Spamhaus DROP style);
- ``value<TAB>anything`` (the IPsum style ``IP<TAB>count``) and CSV lines (``value,anything``; Suricata's
  ``ip,category,score`` reputation lists are such) use the first column; a CSV's first line may be a header;
- ``value count`` with spaces is accepted for IPsum files that lost their tabs; other words after the value are an
  error, so a hosts file (``0.0.0.0 evil.com``) never turns into a list of ``0.0.0.0``.

Values are normalized: addresses and networks in `ipaddress` form, domains lower-case IDNA A-labels without the
trailing dot, URLs with lower-case scheme and host. A value listed twice is kept once.

A file is parsed whole or not at all: every bad line is reported (file:line) in one `InputError`. Files that are
not plain lists (binary data, JSON such as STIX bundles, Suricata rules, dataset files with base64 values) are
named as such in the error.
"""

from __future__ import annotations

import base64
import binascii
import csv
import ipaddress
import json
import re
import socket
from pathlib import Path

from vmshadow.domain.errors import InputError, Issue
from vmshadow.domain.indicator import Indicator, IndicatorType
from vmshadow.intel.bulk import collector_paused
from vmshadow.intel.index import address_int, normalize_domain, normalize_fingerprint, normalize_url

_INLINE_COMMENT = re.compile(r"\s+[#;]")
_URL_START = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# JA4 (TLS/QUIC/DTLS client): t13d1516h2_8daaf6152771_b186095e22b6
_JA4 = re.compile(r"[tqd][0-9a-z]{2}[di]\d{4}[0-9a-z]{2}_[0-9a-f]{12}_[0-9a-f]{12}")
_JA3 = re.compile(r"[0-9a-f]{32}")
_ADDRESS_CHARS = re.compile(r"[0-9A-Fa-f:.]+")
_HEADER_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_ -]*")
_SURICATA_RULE = re.compile(r"(alert|drop|pass|reject\w*)\s.*\(", re.IGNORECASE)
_BASE64 = re.compile(r"[A-Za-z0-9+/]{6,}={0,2}")
_HOSTS_ADDRESSES = {"0.0.0.0", "127.0.0.1", "::", "::1"}  # noqa: S104 - a string to recognize, not a bind


def load_plain_list(
    path: str | Path,
    *,
    source: str | None = None,
    default_confidence: int = 70,
    indicator_type: IndicatorType | None = None,
) -> list[Indicator]:
    """Read a plain list file; indicators get `source` (default: the file name), issues name the path."""
    path = Path(path)
    where = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(Issue(source=where, message=f"cannot read the list: {exc.strerror or exc}")) from None
    if b"\x00" in data:
        raise InputError(Issue(source=where, message="binary data, not a text list (a capture or an archive?)"))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(Issue(source=where, line=line, message="not UTF-8 text")) from None
    return _parse(text, source or path.name, where, default_confidence, indicator_type)


def parse_plain_list(
    text: str,
    source: str,
    *,
    default_confidence: int = 70,
    indicator_type: IndicatorType | None = None,
) -> list[Indicator]:
    """Parse a plain list held in memory; `source` is both the indicators' source and the issues' location.

    `indicator_type` forces one type for every line instead of detecting it (needed for JA3 lists).
    """
    return _parse(text, source, source, default_confidence, indicator_type)


def _parse(
    text: str, source: str, where: str, default_confidence: int, indicator_type: IndicatorType | None
) -> list[Indicator]:
    if not 0 <= default_confidence <= 100:
        raise ValueError(f"default_confidence must be in 0..100, got {default_confidence}")
    if "\x00" in text:
        raise InputError(Issue(source=where, message="binary data, not a text list (a capture or an archive?)"))
    json_issue = _json_document(text, where)
    if json_issue is not None:
        raise InputError(json_issue)
    with collector_paused():
        return _parse_lines(text, source, where, default_confidence, indicator_type)


def _parse_lines(
    text: str, source: str, where: str, default_confidence: int, indicator_type: IndicatorType | None
) -> list[Indicator]:

    indicators: list[Indicator] = []
    issues: list[Issue] = []
    seen: set[tuple[IndicatorType, str]] = set()
    first_data_line = True
    for number, raw in enumerate(text.lstrip("\ufeff").splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        line = _INLINE_COMMENT.split(line, maxsplit=1)[0]
        is_first, first_data_line = first_data_line, False
        if _SURICATA_RULE.match(line):
            issues.append(Issue(source=where, line=number, message="a Suricata rule, not a list entry"))
            continue
        columns, delimited = _columns(line)
        value = columns[0].strip()
        if not delimited and len(columns) > 1:
            problem = _extra_words(value, columns)
            if problem is not None:
                issues.append(Issue(source=where, line=number, message=problem))
                continue
        try:
            kind, normalized = _classify(value, indicator_type)
        except ValueError as exc:
            if is_first and delimited and _HEADER_WORD.fullmatch(value) and "." not in value:
                continue  # a CSV/TSV header such as "ip,count"
            issues.append(Issue(source=where, line=number, message=_explain(value, columns, str(exc))))
            continue
        if (kind, normalized) in seen:
            continue
        seen.add((kind, normalized))
        indicators.append(Indicator(type=kind, value=normalized, source=source, confidence=default_confidence))
    if issues:
        raise InputError(issues)
    return indicators


def _json_document(text: str, where: str) -> Issue | None:
    stripped = text.lstrip("\ufeff \t\r\n")
    if not stripped.startswith(("{", "[")):
        return None
    try:
        document = json.loads(stripped)
    except ValueError:
        return None
    if not isinstance(document, dict | list):
        return None
    line = text[: len(text) - len(stripped)].count("\n") + 1
    return Issue(
        source=where,
        line=line,
        message="a JSON document, not a plain list (a STIX bundle or a MISP event? use the STIX or MISP reader)",
    )


def _columns(line: str) -> tuple[list[str], bool]:
    """The line's columns, and whether they were delimited (tab, comma) rather than separated by spaces."""
    if "\t" in line:
        return line.split("\t"), True
    # a URL keeps its commas; a CSV whose first column is a URL must quote it
    if "," in line and not _URL_START.match(line):
        return next(csv.reader([line])), True
    return line.split(), False


def _extra_words(value: str, columns: list[str]) -> str | None:
    if len(columns) == 2 and columns[1].isdigit():
        return None  # IPsum's "IP count" with the tab turned into spaces
    if value in _HOSTS_ADDRESSES:
        return f"a hosts-file line ({' '.join(columns)!r}), not a plain list: list the names alone, one per line"
    return f"expected one value per line, found {len(columns)} words: {' '.join(columns)!r}"


def _classify(value: str, forced: IndicatorType | None) -> tuple[IndicatorType, str]:
    """The indicator type and normalized value, or ValueError saying why the value is none of them."""
    if not value:
        raise ValueError("empty value")
    if forced is not None:
        return forced, _as_type(value, forced)
    if "://" in value:
        return IndicatorType.URL, normalize_url(value)
    if "/" in value:
        return IndicatorType.CIDR, _as_type(value, IndicatorType.CIDR)
    if "%" in value:
        raise ValueError("a scoped (%zone) address is meaningless outside its host")
    fast = _canonical_address(value)
    if fast is not None:
        return fast
    if _ADDRESS_CHARS.fullmatch(value):  # names are not parsed as addresses (an exception each is costly)
        try:
            address = ipaddress.ip_address(value)
        except ValueError as exc:
            if re.fullmatch(r"[0-9.]+", value):
                raise ValueError(f"not a valid IPv4 address: {exc}") from None
            if value.count(":") >= 2:
                raise ValueError(f"not a valid IPv6 address: {exc}") from None
        else:
            kind = IndicatorType.IPV4 if address.version == 4 else IndicatorType.IPV6
            return kind, str(address)
    lowered = value.lower()
    if _JA4.fullmatch(lowered):
        return IndicatorType.JA4, lowered
    try:
        return IndicatorType.DOMAIN, normalize_domain(value)
    except ValueError as exc:
        raise ValueError(f"not an address, network, URL or valid domain: {exc}") from None


def _canonical_address(value: str) -> tuple[IndicatorType, str] | None:
    """An address already in its canonical text form, recognised without `ipaddress` (C inet_pton/ntop round trip);
    None for anything else, which `ipaddress` then reads or explains."""
    found = address_int(value)
    if found is None:
        return None
    version, number = found
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    text = socket.inet_ntop(family, number.to_bytes(4 if version == 4 else 16, "big"))
    if text != value or (version == 6 and "." in text):
        return None  # not canonical, or an embedded IPv4 form ipaddress spells differently
    return (IndicatorType.IPV4 if version == 4 else IndicatorType.IPV6), text


def _as_type(value: str, kind: IndicatorType) -> str:
    if kind in (IndicatorType.IPV4, IndicatorType.IPV6):
        if "%" in value:
            raise ValueError("a scoped (%zone) address is meaningless outside its host")
        address = ipaddress.ip_address(value)
        if (address.version == 4) != (kind is IndicatorType.IPV4):
            raise ValueError(f"an IPv{address.version} address in a list of {kind}")
        return str(address)
    if kind is IndicatorType.CIDR:
        if "%" in value:
            raise ValueError("a scoped (%zone) address is meaningless outside its host")
        try:
            return str(ipaddress.ip_network(value))
        except ValueError as exc:
            if "host bits set" in str(exc):
                suggestion = ipaddress.ip_network(value, strict=False)
                raise ValueError(f"{value} has host bits set; did you mean {suggestion}?") from None
            raise ValueError(f"not a valid network: {exc}") from None
    if kind is IndicatorType.DOMAIN:
        return normalize_domain(value)
    if kind is IndicatorType.URL:
        return normalize_url(value)
    fingerprint = normalize_fingerprint(value)
    pattern = _JA3 if kind is IndicatorType.JA3 else _JA4
    if not pattern.fullmatch(fingerprint):
        shape = "32 hex digits (MD5)" if kind is IndicatorType.JA3 else "like t13d1516h2_8daaf6152771_b186095e22b6"
        raise ValueError(f"not a {kind} fingerprint: expected {shape}")
    return fingerprint


def _explain(value: str, columns: list[str], reason: str) -> str:
    """The error for a line that holds no indicator, naming the format it seems to come from."""
    decoded = _base64_text(value)
    if decoded is not None:
        return (
            f"{value!r} is base64 for {decoded!r}: this looks like a Suricata dataset/datarep file (values are "
            "base64-encoded and their type is set by the rule that loads them), not a plain list; decode the "
            "values into a list with one per line"
        )
    if value.isdigit() and len(columns) >= 3:
        return (
            f"{value!r} is a number, not an indicator (a Suricata reputation categories file, "
            "'id,short name,description'? the addresses are in the .list file)"
        )
    return f"{value!r}: {reason}"


def _base64_text(value: str) -> str | None:
    if len(value) % 4 or not _BASE64.fullmatch(value):
        return None
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded if decoded.isprintable() and decoded.strip() else None
