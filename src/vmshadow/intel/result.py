"""`IntelImport`: what reading one feed document (a STIX bundle, a MISP event, a TAXII poll) produced.

Three lists, each item located:

- `indicators`: the network indicators found, normalized the way `IndicatorIndex` matches them;
- `errors`: what is malformed (an object that is not valid STIX, a pattern that does not parse, an address that is
  not an address), each naming the object (index and id) and the field;
- `skipped`: what is well-formed but not something vmshadow can match on the wire (file hashes, e-mail patterns,
  MISP attributes without ``to_ids``), each with the reason.

The policy for errors is the caller's, and vmshadow's is: the REST API and the default CLI import are all or
nothing (`IntelImport.accepted` raises `InputError` listing every error, and nothing is stored); the CLI's
``--partial`` stores `indicators` and prints the errors. Skipped items never fail an import.

`normalize_observable` is the one place a feed's raw value becomes an indicator value; the STIX and MISP readers
both use it.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vmshadow.domain.errors import InputError, Issue
from vmshadow.domain.indicator import Indicator, IndicatorType
from vmshadow.intel.index import normalize_domain, normalize_fingerprint, normalize_url

# JA4 (TLS/QUIC/DTLS client): t13d1516h2_8daaf6152771_b186095e22b6; JA3/JA3S are MD5 hex
_JA4 = re.compile(r"[tqd][0-9a-z]{2}[di]\d{4}[0-9a-z]{2}_[0-9a-f]{12}_[0-9a-f]{12}")
_JA3 = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True, slots=True)
class IntelImport:
    """The indicators one feed document yields, with every error and every skipped item located."""

    indicators: list[Indicator] = field(default_factory=list)
    errors: list[Issue] = field(default_factory=list)
    skipped: list[Issue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing was malformed (skipped items do not count)."""
        return not self.errors

    def accepted(self) -> list[Indicator]:
        """The indicators of an import without errors; otherwise `InputError` listing every error.

        This is the all-or-nothing policy of the REST API and the default CLI import: a document with one bad
        object stores nothing.
        """
        if self.errors:
            raise InputError(self.errors)
        return list(self.indicators)

    def extend(self, other: IntelImport) -> None:
        """Add another import's items to this one (a TAXII poll made of several pages)."""
        self.indicators.extend(other.indicators)
        self.errors.extend(other.errors)
        self.skipped.extend(other.skipped)


def normalize_observable(kind: IndicatorType, raw: str) -> tuple[IndicatorType, str]:
    """The indicator type and canonical value for a feed value declared as `kind`.

    An IPv4/IPv6 value may be written as a network (STIX allows ``ipv4-addr:value = '10.0.0.0/8'``): it becomes a
    CIDR indicator, or an address when the prefix is the full length. Host bits under the prefix are cleared, as
    `IndicatorIndex` does. Raises ValueError saying what is wrong.
    """
    value = raw.strip()
    if not value:
        raise ValueError("empty value")
    if kind in (IndicatorType.IPV4, IndicatorType.IPV6, IndicatorType.CIDR):
        return _address(kind, value)
    if kind is IndicatorType.DOMAIN:
        return kind, normalize_domain(value)
    if kind is IndicatorType.URL:
        return kind, normalize_url(value)
    fingerprint = normalize_fingerprint(value)
    pattern = _JA3 if kind is IndicatorType.JA3 else _JA4
    if not pattern.fullmatch(fingerprint):
        shape = "32 hex digits (MD5)" if kind is IndicatorType.JA3 else "like t13d1516h2_8daaf6152771_b186095e22b6"
        raise ValueError(f"{value!r} is not a {kind} fingerprint: expected {shape}")
    return kind, fingerprint


def _address(kind: IndicatorType, value: str) -> tuple[IndicatorType, str]:
    if "%" in value:
        raise ValueError("a scoped (%zone) address is meaningless outside its host")
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address or network") from None
    if kind is IndicatorType.IPV4 and network.version != 4:
        raise ValueError(f"{value!r} is an IPv6 address where an IPv4 one is expected")
    if kind is IndicatorType.IPV6 and network.version != 6:
        raise ValueError(f"{value!r} is an IPv4 address where an IPv6 one is expected")
    if network.prefixlen == network.max_prefixlen:
        address = network.network_address
        return (IndicatorType.IPV4 if address.version == 4 else IndicatorType.IPV6), str(address)
    return IndicatorType.CIDR, str(network)


def json_kind(value: Any) -> str:
    """How an error names what it found instead of what it expected."""
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def unique(items: Iterable[object]) -> tuple[str, ...]:
    """The items as strings, first occurrence kept, order kept."""
    return tuple(dict.fromkeys(str(item) for item in items))


def json_object(
    data: bytes | str | Mapping[str, Any], source: str, result: IntelImport, *, expected: str = "a JSON object"
) -> Mapping[str, Any] | None:
    """A feed document as a decoded JSON object; otherwise None, with the problem (and its line) in `result`."""
    if isinstance(data, Mapping):
        return data
    if isinstance(data, bytes):
        raw = data
        try:
            data = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            result.errors.append(Issue(source=source, line=line, message="not UTF-8 text"))
            return None
    try:
        document = json.loads(data)
    except json.JSONDecodeError as exc:
        result.errors.append(Issue(source=source, line=exc.lineno, message=f"not JSON: {exc.msg} (column {exc.colno})"))
        return None
    if not isinstance(document, dict):
        result.errors.append(Issue(source=source, message=f"{expected}, found {json_kind(document)}"))
        return None
    return document
