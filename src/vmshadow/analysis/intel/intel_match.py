"""`IntelMatchDetector`: flows that touch an address, name or fingerprint a threat-intel feed lists."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from vmshadow.analysis.detector import Detector, DetectorContext, DetectorSettings
from vmshadow.analysis.registry import register
from vmshadow.domain.errors import InputError
from vmshadow.domain.finding import Finding, FindingKind, Severity
from vmshadow.domain.flow import TCP, UDP, Flow
from vmshadow.domain.ids import stable_id
from vmshadow.domain.indicator import Indicator
from vmshadow.domain.net import IPAddress
from vmshadow.intel.index import IndicatorIndex
from vmshadow.intel.lifecycle import IntelPolicy

_SNAPSHOT_VERSION = 1
# Application Layer Protocol: contacting a listed host or name is how command-and-control traffic looks
_C2_TECHNIQUE = "T1071"

_FINGERPRINT_WORDS = {"client_fingerprint": "client fingerprint", "server_fingerprint": "server fingerprint"}


@dataclass(frozen=True, slots=True)
class IntelMatchSettings(DetectorSettings):
    """`repeat_after_s`: flow time before the same (local side, indicator) pair is reported again.
    `max_pairs`: how many reported pairs are remembered; the oldest is forgotten first."""

    repeat_after_s: float = 3600.0
    max_pairs: int = 50_000

    def __post_init__(self) -> None:
        if self.repeat_after_s < 0:
            raise ValueError(f"repeat_after_s must be >= 0, got {self.repeat_after_s}")
        if self.max_pairs < 1:
            raise ValueError(f"max_pairs must be >= 1, got {self.max_pairs}")


@dataclass(frozen=True, slots=True)
class _Match:
    field: str  # the flow field that matched: dst_ip, src_ip, dns_query, sni, http_host, *_fingerprint
    value: str  # what the flow carried there
    indicator: Indicator
    listed_side: str | None  # "dst" or "src": the side the indicator names; None when it names no address


@register
class IntelMatchDetector(Detector[IntelMatchSettings]):
    """Flows to or from a listed address, or naming a listed domain or fingerprint.

    Checks, at the flow's `last_seen_at`, the destination and the source address (longest-prefix match over
    listed addresses and CIDRs: an outside listed address contacting a VMN counts too), the DNS query, TLS SNI
    and HTTP Host (a listed domain covers its subdomains), and the client (JA4) and server (JA3S) fingerprints
    (exact). Indicators outside their validity window are ignored.

    The finding's `src_ip` is the local side (the VMN, or the side that is not listed); `dst_ips` holds the
    listed address (empty for a DNS query, whose destination is only the resolver) and `indicator` the matched
    indicator value. Score is the indicator's effective confidence / 100: its listed confidence under the policy
    given with `use_policy` (per-source trust and decay, `intel.lifecycle`; by default the listed one), at the
    flow's time; a match below the policy's `min_confidence` counts as none. `measured` carries the indicator's
    valid_until, so a TMR proposed from the finding expires with it. One finding per indicator per flow, and each
    (local side, indicator) pair at most once per `repeat_after_s` of flow time.

    Parameters: `repeat_after_s` (default 3600), `max_pairs` (default 50,000 remembered pairs).

    Source: the indicators given in `DetectorContext.indicators` (plain lists, STIX, MISP); matching follows
    Zeek's Intel framework (Intel::ADDR, Intel::SUBNET, Intel::DOMAIN seen in DNS, SNI and Host) and Suricata's
    IP reputation, with the domain-covers-subdomains rule of vmshadow's indicator model.
    """

    name: ClassVar[str] = "intel.match"
    version: ClassVar[str] = "1.0"
    settings_type: ClassVar[type[DetectorSettings]] = IntelMatchSettings

    def __init__(self, settings: IntelMatchSettings | None = None, context: DetectorContext | None = None) -> None:
        super().__init__(settings, context)
        self._index = IndicatorIndex(self.context.indicators)
        self._policy = IntelPolicy()
        # (local address, indicator type, value, source) -> flow time (epoch s) it was last reported; oldest first
        self._reported: OrderedDict[tuple[str, str, str, str], float] = OrderedDict()

    @property
    def index(self) -> IndicatorIndex:
        return self._index

    def use_policy(self, policy: IntelPolicy) -> None:
        """Per-source trust and confidence decay (`intel.lifecycle`), applied at each flow's time from now on."""
        self._policy = policy

    def reload(self, indicators: Sequence[Indicator]) -> int:
        """Match exactly these from now on (a full reload: indicators deleted or expired meanwhile leave). The new
        index is built aside and swapped in, so a bad indicator changes nothing."""
        index = IndicatorIndex(indicators)
        self._index = index
        return len(index)

    def add_indicators(self, indicators: Sequence[Indicator]) -> int:
        """Match these too from now on (live refresh); an indicator re-sent by its source (same type, value and
        source) replaces the one held, so a revocation or a new valid_until takes effect. All or nothing."""
        return self._index.add(indicators)

    def observe(self, flow: Flow) -> list[Finding]:
        if len(self._index) == 0:
            return []
        matches = self._matches(flow)
        if not matches:  # nearly every flow: nothing more to build
            return []
        findings: list[Finding] = []
        reported_here: set[Indicator] = set()
        for match in matches:
            if match.indicator in reported_here:
                continue  # e.g. the same listed domain in both SNI and Host
            reported_here.add(match.indicator)
            confidence = self._policy.confidence(match.indicator, flow.last_seen_at)
            if confidence < self._policy.min_confidence:
                continue  # trusted too little, or decayed: not worth a finding
            finding = self._finding(flow, match, confidence)
            if self._is_new(finding.src_ip, match.indicator, flow.last_seen_at):
                findings.append(finding)
        return findings

    def _matches(self, flow: Flow) -> list[_Match]:
        at = flow.last_seen_at
        index = self._index
        found: list[_Match] = []
        for side, address in (("dst", flow.dst_ip), ("src", flow.src_ip)):
            indicator = index.match_ip(address, at)
            if indicator is not None:
                found.append(_Match(f"{side}_ip", str(address), indicator, side))
        if not (flow.dns_query or flow.sni or flow.http_host or flow.server_fingerprint or flow.client_fingerprint):
            return found  # no name and no fingerprint (every probe of a scan or flood)
        for field_name, name in (("dns_query", flow.dns_query), ("sni", flow.sni), ("http_host", flow.http_host)):
            if name:
                indicator = index.match_domain(name, at)
                if indicator is not None:
                    # a DNS query names the domain, not its resolver; SNI and Host name the server contacted
                    found.append(_Match(field_name, name, indicator, None if field_name == "dns_query" else "dst"))
        if flow.server_fingerprint:
            indicator = index.match_fingerprint(flow.server_fingerprint, at)
            if indicator is not None:
                found.append(_Match("server_fingerprint", flow.server_fingerprint, indicator, "dst"))
        if flow.client_fingerprint:
            indicator = index.match_fingerprint(flow.client_fingerprint, at)
            if indicator is not None:
                # listed client software: the offender is the client unless the client is the VMN, in which case
                # it is the peer it talks to (a C2 server) that traffic should be cut from
                inbound = flow.dst_vmn is not None and flow.src_vmn is None
                found.append(
                    _Match("client_fingerprint", flow.client_fingerprint, indicator, "src" if inbound else "dst")
                )
        return found

    def _finding(self, flow: Flow, match: _Match, confidence: int) -> Finding:
        indicator = match.indicator
        if match.listed_side == "src":
            local_ip, local_vmn = flow.dst_ip, flow.dst_vmn
            dst_ips: tuple[IPAddress, ...] = (flow.src_ip,)
            dst_ports: tuple[int, ...] = ()  # the listed side's port is ephemeral: every port is the target
        else:
            local_ip, local_vmn = flow.src_ip, flow.src_vmn
            dst_ips = (flow.dst_ip,) if match.listed_side == "dst" else ()
            has_ports = match.listed_side == "dst" and flow.protocol in (TCP, UDP)
            dst_ports = (flow.dst_port,) if has_ports else ()
        score = confidence / 100
        measured: dict[str, float | int | str] = {
            "indicator_type": str(indicator.type),
            "indicator_source": indicator.source,
            "confidence": confidence,
            "matched_field": match.field,
            "matched_value": match.value,
        }
        if confidence != indicator.confidence:
            measured["listed_confidence"] = indicator.confidence  # before trust and decay
        if indicator.valid_until is not None:
            # a TMR proposed from this finding expires with the indicator (refinement.scoped_deny)
            measured["indicator_valid_until"] = indicator.valid_until.isoformat()
        if indicator.external_id is not None:
            measured["indicator_id"] = indicator.external_id
        return Finding(
            id=stable_id("finding", self.name, flow.id, indicator.type, indicator.value, indicator.source),
            kind=FindingKind.INTEL_MATCH,
            severity=Severity.from_score(score),
            score=score,
            detector=self.name,
            detector_version=self.version,
            first_seen_at=flow.first_seen_at,
            observed_at=flow.last_seen_at,
            src_ip=local_ip,
            src_vmn=local_vmn,
            protocol=flow.protocol,
            summary=_summary(flow, match, local_ip, local_vmn, confidence),
            dst_ips=dst_ips,
            dst_ports=dst_ports,
            community_ids=(flow.community_id,),
            measured=measured,
            # an inbound contact from a listed address says nothing about command and control
            attack_technique=None if match.listed_side == "src" else _C2_TECHNIQUE,
            indicator=indicator.value,
        )

    def _is_new(self, local_ip: IPAddress, indicator: Indicator, at: datetime) -> bool:
        key = (str(local_ip), str(indicator.type), indicator.value, indicator.source)
        now = at.timestamp()
        last = self._reported.get(key)
        if last is not None and now - last < self.settings.repeat_after_s:
            return False
        self._reported[key] = now
        self._reported.move_to_end(key)
        while len(self._reported) > self.settings.max_pairs:
            self._reported.popitem(last=False)
        return True

    def snapshot(self) -> dict[str, Any]:
        return {
            "version": _SNAPSHOT_VERSION,
            "reported": [[*key, at] for key, at in self._reported.items()],
        }

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("version") != _SNAPSHOT_VERSION:
            raise InputError(f"{self.name}: snapshot version {state.get('version')!r} is not {_SNAPSHOT_VERSION}")
        reported: OrderedDict[tuple[str, str, str, str], float] = OrderedDict()
        try:
            for local, kind, value, source, at in state["reported"]:
                reported[(str(local), str(kind), str(value), str(source))] = float(at)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{self.name}: malformed snapshot: {exc}") from None
        while len(reported) > self.settings.max_pairs:
            reported.popitem(last=False)
        self._reported = reported


def _summary(flow: Flow, match: _Match, local_ip: IPAddress, local_vmn: str | None, confidence: int) -> str:
    indicator = match.indicator
    local = str(local_ip) if local_vmn is None else f"{local_ip} ({local_vmn})"
    listing = f"listed by {indicator.source} as {indicator.type} {indicator.value}, confidence {confidence}"
    if match.field == "dst_ip":
        return f"{local} contacted {flow.dst_ip} port {flow.dst_port}, {listing}"
    if match.field == "src_ip":
        return f"{flow.src_ip}, {listing}, contacted {local} port {flow.dst_port}"
    if match.field == "dns_query":
        return f"{local} asked DNS for {match.value}, {listing}"
    if match.field in ("sni", "http_host"):
        how = "TLS server name" if match.field == "sni" else "HTTP Host"
        return f"{local} contacted {flow.dst_ip} with {how} {match.value}, {listing}"
    words = _FINGERPRINT_WORDS[match.field]
    return f"{flow.src_ip} → {flow.dst_ip} port {flow.dst_port} with {words} {match.value}, {listing}"
