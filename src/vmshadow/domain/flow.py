"""Flow records: one bidirectional 5-tuple conversation with counters, timings and DPI fields."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from vmshadow.domain.net import IPAddress

TCP = 6
UDP = 17


@dataclass(frozen=True, slots=True)
class Flow:
    """A bidirectional flow as seen on a shadow port or in a capture.

    `src` is the side that sent the first packet. Byte counters are link-layer bytes as captured. DPI fields are
    empty strings when nDPI did not see them; `application_is_guessed` marks labels nDPI inferred from ports.
    """

    id: str
    community_id: str
    src_ip: IPAddress
    src_port: int
    dst_ip: IPAddress
    dst_port: int
    protocol: int
    first_seen_at: datetime
    last_seen_at: datetime
    src2dst_packets: int
    src2dst_bytes: int
    dst2src_packets: int
    dst2src_bytes: int
    src_mac: str = ""
    dst_mac: str = ""
    src_vmn: str | None = None
    dst_vmn: str | None = None
    syn_packets: int = 0
    rst_packets: int = 0
    psh_packets: int = 0
    fin_packets: int = 0
    application: str = ""
    category: str = ""
    application_is_guessed: bool = False
    sni: str = ""
    dns_query: str = ""
    http_host: str = ""
    host_name: str = ""  # whatever name DPI found, any protocol (also NetBIOS, SMTP EHLO, ...)
    user_agent: str = ""
    client_fingerprint: str = ""  # JA4 for TLS/QUIC, HASSH for SSH (nDPI 5 has no client JA3)
    server_fingerprint: str = ""  # JA3S for TLS
    source: str = ""  # the capture or shadow port it came from

    @property
    def packets(self) -> int:
        return self.src2dst_packets + self.dst2src_packets

    @property
    def bytes(self) -> int:
        return self.src2dst_bytes + self.dst2src_bytes

    @property
    def duration_s(self) -> float:
        return (self.last_seen_at - self.first_seen_at).total_seconds()

    @property
    def answered(self) -> bool:
        return self.dst2src_packets > 0

    @property
    def carried_data(self) -> bool:
        """Whether application data was exchanged (a TCP segment with PSH; any answered UDP exchange)."""
        if self.protocol == TCP:
            return self.psh_packets > 0
        return self.answered

    @property
    def server_name(self) -> str:
        """The name the client asked for: SNI, HTTP host or DNS query, else any name DPI found."""
        return self.sni or self.http_host or self.dns_query or self.host_name
