"""`IndicatorIndex`: answers "is this address, name or fingerprint listed, and by which indicator?".

Addresses and networks sit in two `pytricia` tries (IPv4, IPv6) for longest-prefix match; a listed domain covers
its subdomains (a walk over labels from the right); URLs and JA3/JA4 fingerprints are exact. An indicator that is
not valid at the asked time (`Indicator.is_valid`) is passed over, so a less specific valid one can still answer.
Pure: no I/O.

The `normalize_*` functions define the canonical spelling the index matches on; list parsers use them too.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from encodings import idna
from urllib.parse import urlsplit, urlunsplit

import pytricia

from vmshadow.domain.errors import InputError, Issue
from vmshadow.domain.indicator import Indicator, IndicatorType
from vmshadow.domain.net import IPAddress

_ADDRESS_TYPES = (IndicatorType.IPV4, IndicatorType.IPV6, IndicatorType.CIDR)
_FINGERPRINT_TYPES = (IndicatorType.JA3, IndicatorType.JA4)

# RFC 1035 LDH label; underscores are allowed because DNS carries them (SRV, DMARC and many real hostnames)
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_MAX_NAME = 253


def normalize_domain(name: str) -> str:
    """The canonical form of a domain indicator: lower-case IDNA A-labels, no trailing dot.

    Raises ValueError saying what is wrong: empty or over-long labels, characters outside letters, digits, `-`
    and `_`, a leading or trailing `-`, an invalid IDN, a single label, or an all-numeric top-level label.
    """
    text = name.strip()
    if text.endswith("."):
        text = text[:-1]
    if not text:
        raise ValueError("empty domain name")
    if text.startswith("*."):
        raise ValueError("wildcards are not needed: a listed domain already covers its subdomains")
    labels = []
    for label in text.split("."):
        if not label:
            raise ValueError("empty label (two dots in a row, or a leading dot)")
        labels.append(_normalize_label(label))
    if len(labels) < 2:
        raise ValueError("a single label is not a domain indicator (it would cover a whole top-level domain)")
    if labels[-1].isdigit():
        raise ValueError("the top-level label is all digits (a malformed IP address?)")
    result = ".".join(labels)
    if len(result) > _MAX_NAME:
        raise ValueError(f"name is {len(result)} characters long, more than {_MAX_NAME}")
    return result


def _normalize_label(label: str) -> str:
    if not label.isascii():
        try:
            # IDNA 2003 nameprep + punycode; DNS queries, SNI and Host headers carry this A-label form
            return idna.ToASCII(label).decode("ascii").lower()
        except UnicodeError as exc:
            raise ValueError(f"label {label!r} is not a valid internationalized name: {exc}") from None
    lowered = label.lower()
    if len(lowered) > 63:
        raise ValueError(f"label {label!r} is {len(lowered)} characters long, more than 63")
    if not _LABEL.fullmatch(lowered):
        raise ValueError(
            f"label {label!r} may only hold letters, digits, '-' and '_', and may not start or end with '-'"
        )
    if lowered.startswith("xn--"):
        try:
            idna.ToUnicode(lowered)
        except UnicodeError:
            raise ValueError(f"label {label!r} is not valid punycode") from None
    return lowered


def normalize_url(url: str) -> str:
    """The canonical form of a URL indicator: scheme and host lower-cased, the fragment dropped.

    Raises ValueError when there is no scheme or host, the host is not a domain or address, or the port is bad.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a URL: {exc}") from None
    if not parts.scheme or not re.fullmatch(r"[a-z][a-z0-9+.-]*", parts.scheme.lower()):
        raise ValueError("a URL needs a scheme such as http://")
    host = parts.hostname
    if not host:
        raise ValueError("the URL has no host")
    try:
        netloc = _url_host(host)
    except ValueError as exc:
        raise ValueError(f"URL host: {exc}") from None
    if port is not None:
        netloc = f"{netloc}:{port}"
    if parts.username is not None:
        # keep credentials as written: they are part of what the feed listed
        userinfo = parts.netloc.rsplit("@", 1)[0]
        netloc = f"{userinfo}@{netloc}"
    return urlunsplit((parts.scheme.lower(), netloc, parts.path, parts.query, ""))


def _url_host(host: str) -> str:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return normalize_domain(host)
    return f"[{address}]" if address.version == 6 else str(address)


def normalize_fingerprint(value: str) -> str:
    """JA3 (MD5 hex) and JA4 fingerprints compare lower-case, without surrounding space."""
    return value.strip().lower()


def _lookup_name(name: str) -> list[str]:
    """Labels of a name seen on the wire, right to left; lenient, because flows carry whatever clients sent."""
    text = name.strip().lower().rstrip(".")
    if not text.isascii():
        # a name IDNA cannot encode can only match an identical raw label, so keep it as it is
        with contextlib.suppress(UnicodeError):
            text = text.encode("idna").decode("ascii")
    return text.split(".")[::-1]


@dataclass(slots=True)
class _DomainNode:
    children: dict[str, _DomainNode] = field(default_factory=dict)
    indicators: list[Indicator] = field(default_factory=list)


def _preference(indicator: Indicator) -> tuple[int, str, str]:
    # among indicators for the same key: the most confident first, then a stable order
    return (-indicator.confidence, indicator.source, indicator.value)


def _first_valid(candidates: list[Indicator], at: datetime) -> Indicator | None:
    for indicator in candidates:
        if indicator.is_valid(at):
            return indicator
    return None


class IndicatorIndex:
    """Indicators indexed for matching flows. Build once; match many times.

    >>> from datetime import UTC, datetime
    >>> index = IndicatorIndex([Indicator(IndicatorType.DOMAIN, "evil.com", "demo")])
    >>> index.match_domain("a.b.evil.com", datetime(2026, 1, 1, tzinfo=UTC)).value
    'evil.com'
    >>> index.match_domain("notevil.com", datetime(2026, 1, 1, tzinfo=UTC)) is None
    True

    Raises InputError listing every indicator whose value cannot be indexed for its type.
    """

    def __init__(self, indicators: Iterable[Indicator]) -> None:
        self._v4 = pytricia.PyTricia(32)
        self._v6 = pytricia.PyTricia(128)
        self._domains = _DomainNode()
        self._urls: dict[str, list[Indicator]] = {}
        self._fingerprints: dict[str, list[Indicator]] = {}
        self._count = 0
        issues: list[Issue] = []
        # added in preference order, so every bucket is already sorted
        for indicator in sorted(indicators, key=_preference):
            try:
                self._add(indicator)
            except ValueError as exc:
                issues.append(
                    Issue(
                        source=indicator.source,
                        field="value",
                        message=f"{indicator.type} {indicator.value!r}: {exc}",
                    )
                )
        if issues:
            raise InputError(issues)

    def _add(self, indicator: Indicator) -> None:
        kind = indicator.type
        if kind in _ADDRESS_TYPES:
            network = _network(indicator)
            trie = self._v4 if network.version == 4 else self._v6
            key = str(network)
            # has_key is exact; `trie[key]` would answer with a covering, less specific prefix
            if trie.has_key(key):
                trie[key].append(indicator)
            else:
                trie[key] = [indicator]
        elif kind is IndicatorType.DOMAIN:
            node = self._domains
            for label in normalize_domain(indicator.value).split(".")[::-1]:
                node = node.children.setdefault(label, _DomainNode())
            node.indicators.append(indicator)
        elif kind is IndicatorType.URL:
            self._urls.setdefault(normalize_url(indicator.value), []).append(indicator)
        elif kind in _FINGERPRINT_TYPES:
            value = normalize_fingerprint(indicator.value)
            if not value:
                raise ValueError("empty fingerprint")
            self._fingerprints.setdefault(value, []).append(indicator)
        else:  # pragma: no cover - a new IndicatorType must be given a place here
            raise ValueError(f"indicator type {kind} cannot be indexed")
        self._count += 1

    def __len__(self) -> int:
        return self._count

    def match_ip(self, address: IPAddress | str, at: datetime) -> Indicator | None:
        """The indicator of the most specific listed address or network holding `address`, valid at `at`."""
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
            ip = ipaddress.IPv6Address(int(ip))  # the zone does not change which host it is
        if ip.version == 4:
            return _longest_valid(self._v4, str(ip), at)
        found = _longest_valid(self._v6, str(ip), at)
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        if found is None and mapped is not None:
            # ::ffff:a.b.c.d is the IPv4 host a.b.c.d as a dual-stack socket reports it
            found = _longest_valid(self._v4, str(mapped), at)
        return found

    def match_domain(self, name: str, at: datetime) -> Indicator | None:
        """The indicator of the longest listed domain equal to `name` or a parent of it, valid at `at`."""
        node = self._domains
        deepest: list[list[Indicator]] = []
        for label in _lookup_name(name):
            child = node.children.get(label)
            if child is None:
                break
            node = child
            if node.indicators:
                deepest.append(node.indicators)
        for candidates in reversed(deepest):
            found = _first_valid(candidates, at)
            if found is not None:
                return found
        return None

    def match_url(self, url: str, at: datetime) -> Indicator | None:
        """The indicator listing exactly `url` (after normalization), valid at `at`."""
        try:
            key = normalize_url(url)
        except ValueError:
            return None
        return _first_valid(self._urls.get(key, []), at)

    def match_fingerprint(self, value: str, at: datetime) -> Indicator | None:
        """The JA3/JA4 indicator equal to `value`, valid at `at`."""
        return _first_valid(self._fingerprints.get(normalize_fingerprint(value), []), at)


def _network(indicator: Indicator) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if "%" in indicator.value:
        raise ValueError("a scoped (%zone) address is meaningless outside its host")
    if indicator.type is IndicatorType.CIDR:
        # lenient on host bits: feeds other than plain lists (STIX, MISP) do write 10.0.0.1/8 for 10.0.0.0/8
        return ipaddress.ip_network(indicator.value.strip(), strict=False)
    address = ipaddress.ip_address(indicator.value.strip())
    expected = 4 if indicator.type is IndicatorType.IPV4 else 6
    if address.version != expected:
        raise ValueError(f"an IPv{address.version} address, not {indicator.type}")
    return ipaddress.ip_network(address)


def _longest_valid(trie: pytricia.PyTricia, key: str, at: datetime) -> Indicator | None:
    prefix: str | None = trie.get_key(key)
    while prefix is not None:
        found = _first_valid(trie[prefix], at)
        if found is not None:
            return found
        prefix = trie.parent(prefix)
    return None
