"""Threat-intel indicators."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class IndicatorType(StrEnum):
    IPV4 = "ipv4"
    IPV6 = "ipv6"
    CIDR = "cidr"
    DOMAIN = "domain"
    URL = "url"
    JA3 = "ja3"
    JA4 = "ja4"


@dataclass(frozen=True, slots=True)
class Indicator:
    """One threat-intel item. A domain covers its subdomains; a CIDR covers its addresses.

    `kill_chain_phases` are ``kill_chain_name:phase_name`` (STIX spelling). `revoked` is the producer withdrawing the
    indicator (STIX ``revoked``); a revoked indicator is never valid. `external_id` is the producer's id for the
    object it came from (a STIX ``indicator--…`` id, a MISP attribute uuid), so a later update or revocation can
    find it.
    """

    type: IndicatorType
    value: str
    source: str
    confidence: int = 50  # 0..100
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    labels: tuple[str, ...] = ()
    kill_chain_phases: tuple[str, ...] = ()
    revoked: bool = False
    external_id: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.confidence <= 100:
            raise ValueError(f"indicator confidence must be in 0..100, got {self.confidence}")

    def is_valid(self, at: datetime) -> bool:
        if self.revoked:
            return False
        if self.valid_from is not None and at < self.valid_from:
            return False
        return self.valid_until is None or at < self.valid_until
