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
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from encodings import idna
from urllib.parse import urlsplit, urlunsplit

import pytricia

from vmshadow.domain.errors import InputError, Issue
from vmshadow.domain.indicator import Indicator, IndicatorType
from vmshadow.domain.net import IPAddress, IPNetwork
from vmshadow.intel.bulk import collector_paused

_HOST_TYPES = (IndicatorType.IPV4, IndicatorType.IPV6)
_LEVELS4 = (0, 8, 16, 24)  # prefix lengths the network covers are cut to (`IndicatorIndex._cover`)
_LEVELS6 = (0, 16, 32, 48, 64)
_FINGERPRINT_TYPES = (IndicatorType.JA3, IndicatorType.JA4)

# RFC 1035 LDH label; underscores are allowed because DNS carries them (SRV, DMARC and many real hostnames)
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_MAX_NAME = 253
# the common case in one regex: an all-ASCII name of valid labels (checked label by label only when this fails)
_PLAIN_NAME = re.compile(r"(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)+[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")


def normalize_domain(name: str) -> str:
    """The canonical form of a domain indicator: lower-case IDNA A-labels, no trailing dot.

    Raises ValueError saying what is wrong: empty or over-long labels, characters outside letters, digits, `-`
    and `_`, a leading or trailing `-`, an invalid IDN, a single label, or an all-numeric top-level label.
    """
    text = name.strip()
    if text.endswith("."):
        text = text[:-1]
    if text.isascii():
        lowered = text.lower()
        if (
            len(lowered) <= _MAX_NAME
            and _PLAIN_NAME.fullmatch(lowered)
            and "xn--" not in lowered
            and not lowered.rpartition(".")[2].isdigit()
        ):
            return lowered
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


def _same_listing(a: Indicator, b: Indicator) -> bool:
    return a.source == b.source and a.type == b.type and a.value == b.value


def _first_valid(candidates: list[Indicator], at: datetime | None) -> Indicator | None:
    if at is None:
        return candidates[0] if candidates else None  # validity not asked: any listing (a retro-hunt's prefilter)
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

    Single addresses sit in dicts keyed by the address's integer (one hash lookup, the common case), networks in
    the tries; a host entry is always the most specific, so it is asked first. `add` extends a built index (live
    refresh). Raises InputError listing every indicator whose value cannot be indexed for its type.
    """

    def __init__(self, indicators: Iterable[Indicator] = ()) -> None:
        self._hosts4: dict[int, list[Indicator]] = {}
        self._hosts6: dict[int, list[Indicator]] = {}
        self._v4 = pytricia.PyTricia(32)
        self._v6 = pytricia.PyTricia(128)
        self._networks = [0, 0]  # networks held in the v4 and v6 tries (len() of a PyTricia walks the whole trie)
        # Which tries are worth asking: per level, the leading bits of the listed networks cut to it (a network goes
        # to the longest level not longer than its prefix; level 0 holds all). An address none of them holds is in
        # no listed network, so most misses cost a shift and a set lookup instead of a trie walk.
        self._covers: tuple[dict[int, set[int]], dict[int, set[int]]] = ({}, {})
        self._cover4: tuple[tuple[int, set[int]], ...] = ()
        self._cover6: tuple[tuple[int, set[int]], ...] = ()
        self._domains = _DomainNode()
        self._urls: dict[str, list[Indicator]] = {}
        self._fingerprints: dict[str, list[Indicator]] = {}
        self._count = 0
        self.add(indicators)

    def add(self, indicators: Iterable[Indicator]) -> int:
        """Index more indicators; returns how many. All or nothing: on any bad value, InputError and no change."""
        with collector_paused():
            return self._add(indicators)

    def _add(self, indicators: Iterable[Indicator]) -> int:
        accepted: list[tuple[Indicator, object]] = []
        issues: list[Issue] = []
        for indicator in indicators:
            try:
                accepted.append((indicator, self._key(indicator)))
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
        # buckets with more than one indicator are put in preference order once, after all are added
        crowded: dict[int, list[Indicator]] = {}
        replaced = 0
        for indicator, key in accepted:
            bucket = self._bucket(indicator.type, key)
            if bucket:
                before = len(bucket)
                # the same (type, value, source) sent again replaces what was held: one listing per source
                bucket[:] = [i for i in bucket if not _same_listing(i, indicator)]
                replaced += before - len(bucket)
                crowded[id(bucket)] = bucket
            bucket.append(indicator)
        for bucket in crowded.values():
            bucket.sort(key=_preference)
        self._count += len(accepted) - replaced
        return len(accepted)

    def _key(self, indicator: Indicator) -> object:
        """Where the indicator goes, validated: raises ValueError before anything is changed."""
        kind = indicator.type
        if kind in _HOST_TYPES:
            return _host(indicator)
        if kind is IndicatorType.CIDR:
            network = _network(indicator)
            if network.prefixlen == network.max_prefixlen:
                return network.version, int(network.network_address)  # a /32 or /128 is a host
            return network
        if kind is IndicatorType.DOMAIN:
            return normalize_domain(indicator.value).split(".")[::-1]
        if kind is IndicatorType.URL:
            return normalize_url(indicator.value)
        if kind in _FINGERPRINT_TYPES:
            value = normalize_fingerprint(indicator.value)
            if not value:
                raise ValueError("empty fingerprint")
            return value
        raise ValueError(f"indicator type {kind} cannot be indexed")  # pragma: no cover - a new IndicatorType

    def _bucket(self, kind: IndicatorType, key: object) -> list[Indicator]:
        if isinstance(key, tuple):
            version, number = key
            return (self._hosts4 if version == 4 else self._hosts6).setdefault(number, [])
        if isinstance(key, ipaddress.IPv4Network | ipaddress.IPv6Network):
            trie = self._v4 if key.version == 4 else self._v6
            text = str(key)
            # has_key is exact; `trie[key]` would answer with a covering, less specific prefix
            if not trie.has_key(text):
                trie[text] = []
                self._networks[key.version == 6] += 1
                self._cover(key)
            found: list[Indicator] = trie[text]
            return found
        if isinstance(key, list):
            node = self._domains
            for label in key:
                node = node.children.setdefault(label, _DomainNode())
            return node.indicators
        table = self._urls if kind is IndicatorType.URL else self._fingerprints
        return table.setdefault(str(key), [])

    def _cover(self, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
        bits, levels = (32, _LEVELS4) if network.version == 4 else (128, _LEVELS6)
        level = max(n for n in levels if n <= network.prefixlen)
        covers = self._covers[network.version == 6]
        covers.setdefault(bits - level, set()).add(int(network.network_address) >> (bits - level))
        found = tuple(sorted(covers.items(), reverse=True))  # the widest first
        if network.version == 4:
            self._cover4 = found
        else:
            self._cover6 = found

    def __len__(self) -> int:
        return self._count

    def listed_hosts(self) -> Iterator[IPAddress]:
        """Every listed single address (a /32 or /128 network counts), whatever its validity."""
        yield from (ipaddress.IPv4Address(n) for n in self._hosts4)
        yield from (ipaddress.IPv6Address(n) for n in self._hosts6)

    def listed_networks(self) -> Iterator[IPNetwork]:
        """Every listed network wider than one address, whatever its validity."""
        for trie in (self._v4, self._v6):
            yield from (ipaddress.ip_network(prefix) for prefix in trie)

    def listed_name_suffixes(self) -> set[str]:
        """The last two labels of every listed domain ("evil.example" for "a.evil.example"): a name can only be
        under a listed domain if it ends with one of them (a listed domain has two labels at least)."""
        return {f"{second}.{top}" for top, node in self._domains.children.items() for second in node.children}

    def listed_fingerprints(self) -> set[str]:
        """Every listed JA3/JA4 fingerprint, normalized (`normalize_fingerprint`)."""
        return set(self._fingerprints)

    def match_ip(self, address: IPAddress | str, at: datetime | None) -> Indicator | None:
        """The indicator of the most specific listed address or network holding `address`, valid at `at` (any
        validity when `at` is None). Text is read with inet_pton when it can be (archived flows hold text)."""
        if isinstance(address, str):
            if "%" not in address:
                parsed = address_int(address)
                if parsed is not None:
                    return self._match_int(*parsed, at)
            ip: IPAddress = ipaddress.ip_address(address)
        else:
            ip = address
        if type(ip) is ipaddress.IPv4Address:
            key = int(ip)
            candidates = self._hosts4.get(key)
            if candidates is not None:
                found = _first_valid(candidates, at)
                if found is not None:
                    return found
            for shift, prefixes in self._cover4:
                if key >> shift in prefixes:
                    return _longest_valid(self._v4, key, at)
            return None
        # the integer ignores a zone (%eth0), which does not change which host it is
        return self._match_int(6, int(ip), at)

    def _match_int(self, version: int, number: int, at: datetime | None) -> Indicator | None:
        if version == 6:
            candidates = self._hosts6.get(number)
            found = _first_valid(candidates, at) if candidates is not None else None
            if found is None:
                for shift, prefixes in self._cover6:
                    if number >> shift in prefixes:
                        found = _longest_valid(self._v6, number.to_bytes(16, "big"), at)
                        break
            if found is None and number >> 32 == 0xFFFF:
                # ::ffff:a.b.c.d is the IPv4 host a.b.c.d as a dual-stack socket reports it
                found = self._match_int(4, number & 0xFFFFFFFF, at)
            return found
        candidates = self._hosts4.get(number)
        if candidates is not None:
            found = _first_valid(candidates, at)
            if found is not None:
                return found
        for shift, prefixes in self._cover4:
            if number >> shift in prefixes:
                return _longest_valid(self._v4, number, at)
        return None

    def match_domain(self, name: str, at: datetime | None) -> Indicator | None:
        """The indicator of the longest listed domain equal to `name` or a parent of it, valid at `at`."""
        node = self._domains
        top = name.rpartition(".")[2]
        if top and top.isascii() and top.islower() and top not in node.children:
            return None  # most names seen are under a top-level domain nothing is listed under
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

    def match_url(self, url: str, at: datetime | None) -> Indicator | None:
        """The indicator listing exactly `url` (after normalization), valid at `at`."""
        try:
            key = normalize_url(url)
        except ValueError:
            return None
        return _first_valid(self._urls.get(key, []), at)

    def match_fingerprint(self, value: str, at: datetime | None) -> Indicator | None:
        """The JA3/JA4 indicator equal to `value`, valid at `at`."""
        return _first_valid(self._fingerprints.get(normalize_fingerprint(value), []), at)


def address_int(text: str) -> tuple[int, int] | None:
    """(IP version, integer) of an address written in a form inet_pton reads, else None (ask `ipaddress` why).

    inet_pton is C and ~10x faster than `ipaddress` on the million-line lists feeds send; both refuse leading zeros
    in IPv4 octets and zones, and agree on every value they both read.
    """
    try:
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
    except OSError:
        pass
    try:
        return 6, int.from_bytes(socket.inet_pton(socket.AF_INET6, text), "big")
    except OSError:
        return None


def _host(indicator: Indicator) -> tuple[int, int]:
    text = indicator.value.strip()
    if "%" in text:
        raise ValueError("a scoped (%zone) address is meaningless outside its host")
    found = address_int(text)
    if found is None:
        ipaddress.ip_address(text)  # raises the ValueError saying what is wrong
        raise ValueError(f"{text!r} is not an IP address")  # pragma: no cover - inet_pton and ipaddress agree
    version, _ = found
    expected = 4 if indicator.type is IndicatorType.IPV4 else 6
    if version != expected:
        raise ValueError(f"an IPv{version} address, not {indicator.type}")
    return found


def _network(indicator: Indicator) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if "%" in indicator.value:
        raise ValueError("a scoped (%zone) address is meaningless outside its host")
    # lenient on host bits: feeds other than plain lists (STIX, MISP) do write 10.0.0.1/8 for 10.0.0.0/8
    return ipaddress.ip_network(indicator.value.strip(), strict=False)


def _longest_valid(trie: pytricia.PyTricia, key: int | bytes, at: datetime | None) -> Indicator | None:
    """Longest-prefix match; `key` is an IPv4 address's integer or an IPv6 address's packed bytes (pytricia reads
    both without parsing text)."""
    candidates: list[Indicator] | None = trie.get(key)
    if candidates is None:
        return None
    found = _first_valid(candidates, at)
    if found is not None:
        return found
    # the most specific network's indicators are not valid now: try the networks around it
    prefix: str | None = trie.parent(trie.get_key(key))
    while prefix is not None:
        found = _first_valid(trie[prefix], at)
        if found is not None:
            return found
        prefix = trie.parent(prefix)
    return None
