"""RFC 5424 syslog messages for export events. Pure: no I/O.

    <PRI>1 TIMESTAMP HOSTNAME vmshadow PROCID MSGID [vmshadow@32473 key="value" ...] MSG

- PRI = facility x 8 + severity; severity maps critical->2 (crit), high->3 (err), medium->4 (warning),
  low->5 (notice), info->6 (informational). The facility defaults to local0 (16).
- TIMESTAMP is RFC 3339 in UTC with microseconds; MSGID is the event kind (finding/proposal/decision/outcome).
- Structured data uses the private-enterprise SD-ID `vmshadow@32473` (32473 is the example enterprise number of
  RFC 5612; set `sd_id` to your own). PARAM-VALUEs are UTF-8; `"`, `\\` and `]` are escaped with a backslash
  (RFC 5424 §6.3.3) and nothing else is: a newline stays a newline. That is safe here because every transport
  vmshadow uses frames messages by length (UDP datagram, RFC 6587 octet counting), never by newline.
- MSG is the summary (or the CEF line) as plain UTF-8 without a BOM (RFC 5424's MSG-ANY), which is what rsyslog,
  syslog-ng and most SIEM parsers expect; `utf8_bom=True` writes the BOM of MSG-UTF8 for strict receivers (and a
  text that itself starts with U+FEFF always gets one, or a receiver would take its first character for a BOM).
- Free text is cut to 1024 characters (SD values and MSG) with a mark, so one message stays under the 8 KiB most
  receivers accept by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum, StrEnum

from vmshadow.domain.finding import Severity
from vmshadow.export.cef import format_cef, truncate
from vmshadow.export.event import ExportEvent

BOM = "\ufeff"
NILVALUE = "-"
SD_ID = "vmshadow@32473"
TEXT_MAX = 1024


class Facility(IntEnum):
    USER = 1
    DAEMON = 3
    AUTH = 4
    AUTHPRIV = 10
    LOCAL0 = 16
    LOCAL1 = 17
    LOCAL2 = 18
    LOCAL3 = 19
    LOCAL4 = 20
    LOCAL5 = 21
    LOCAL6 = 22
    LOCAL7 = 23


SYSLOG_SEVERITY = {
    Severity.CRITICAL: 2,
    Severity.HIGH: 3,
    Severity.MEDIUM: 4,
    Severity.LOW: 5,
    Severity.INFO: 6,
}


class MessageFormat(StrEnum):
    TEXT = "text"  # MSG is the event summary
    CEF = "cef"  # MSG is the CEF line of the event


@dataclass(frozen=True, slots=True)
class SyslogFormat:
    """How events become syslog messages. `hostname` and `procid` are the sender's (NILVALUE when empty)."""

    hostname: str = ""
    procid: str = ""
    facility: Facility = Facility.LOCAL0
    app_name: str = "vmshadow"
    msg: MessageFormat = MessageFormat.TEXT
    utf8_bom: bool = False
    sd_id: str = SD_ID


def _header_token(text: str, limit: int) -> str:
    """A header field: printable US-ASCII without spaces, at most `limit` characters, or NILVALUE."""
    token = "".join(c for c in text if 33 <= ord(c) <= 126)[:limit]
    return token or NILVALUE


def escape_param_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def timestamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def structured_params(e: ExportEvent) -> list[tuple[str, str]]:
    """The SD-PARAMs of an event, in a fixed order, empty values left out."""
    params = [
        ("id", e.id),
        ("kind", str(e.kind)),
        ("action", e.action),
        ("severity", str(e.severity)),
        ("subject", e.subject_id),
        ("rule", e.rule_id),
        ("rule_version", e.rule_version),
        ("score", "" if e.score is None else f"{e.score:.4f}"),
        ("src_ip", e.src_ip or ""),
        ("src_port", "" if e.src_port is None else str(e.src_port)),
        ("src_vmn", e.src_vmn or ""),
        ("dst_ip", ",".join(e.dst_ips)),
        ("dst_port", ",".join(str(p) for p in e.dst_ports)),
        ("protocol", "" if e.protocol is None else str(e.protocol)),
        ("app_protocol", e.app_protocol or ""),
        ("community_id", ",".join(e.community_ids)),
        ("indicator", e.indicator or ""),
        ("indicator_type", e.indicator_type or ""),
        ("attack_technique", e.attack_technique or ""),
    ]
    return [(k, truncate(v, TEXT_MAX)) for k, v in params if v]


def format_5424(e: ExportEvent, options: SyslogFormat | None = None) -> str:
    """The syslog message of one event (no trailing newline, no transport framing)."""
    o = options or SyslogFormat()
    pri = int(o.facility) * 8 + SYSLOG_SEVERITY[e.severity]
    sd_id = _header_token(o.sd_id.replace("=", "").replace("]", "").replace('"', ""), 32)
    params = " ".join(f'{k}="{escape_param_value(v)}"' for k, v in structured_params(e))
    sd = f"[{sd_id} {params}]"
    msg = format_cef(e) if o.msg is MessageFormat.CEF else truncate(e.summary, TEXT_MAX)
    if o.utf8_bom or msg.startswith(BOM):
        msg = BOM + msg  # a text that starts with U+FEFF gets a real BOM in front, so receivers strip only that
    header = " ".join(
        [
            f"<{pri}>1",
            timestamp(e.occurred_at),
            _header_token(o.hostname, 255),
            _header_token(o.app_name, 48),
            _header_token(o.procid, 128),
            _header_token(str(e.kind), 32),
        ]
    )
    return f"{header} {sd} {msg}" if msg else f"{header} {sd}"


@dataclass(frozen=True, slots=True)
class Syslog5424Message:
    """A parsed RFC 5424 message (what a receiver sees)."""

    pri: int
    timestamp: str
    hostname: str
    app_name: str
    procid: str
    msgid: str
    structured_data: dict[str, dict[str, str]]
    msg: str

    @property
    def facility(self) -> int:
        return self.pri // 8

    @property
    def severity(self) -> int:
        return self.pri % 8


def _parse_sd(text: str) -> tuple[dict[str, dict[str, str]], str]:
    """Structured data at the start of `text`, and what follows it."""
    if text.startswith(NILVALUE):
        return {}, text[1:]
    elements: dict[str, dict[str, str]] = {}
    i = 0
    while i < len(text) and text[i] == "[":
        end_id = i + 1
        while end_id < len(text) and text[end_id] not in " ]":
            end_id += 1
        sd_id = text[i + 1 : end_id]
        params: dict[str, str] = {}
        i = end_id
        while i < len(text) and text[i] == " ":
            eq = text.index("=", i)
            name = text[i + 1 : eq]
            if text[eq + 1] != '"':
                raise ValueError(f"SD-PARAM {name}: value is not quoted")
            j = eq + 2
            value: list[str] = []
            while text[j] != '"':
                if text[j] == "\\" and text[j + 1] in '"\\]':
                    value.append(text[j + 1])
                    j += 2
                else:
                    value.append(text[j])
                    j += 1
            params[name] = "".join(value)
            i = j + 1
        if i >= len(text) or text[i] != "]":
            raise ValueError(f"SD-ELEMENT {sd_id}: missing ']'")
        elements[sd_id] = params
        i += 1
    return elements, text[i:]


def parse_5424(line: str) -> Syslog5424Message:
    """Parse one RFC 5424 message (without framing). Raises ValueError on anything else."""
    if not line.startswith("<"):
        raise ValueError("not RFC 5424: no PRI")
    close = line.index(">")
    pri = int(line[1:close])
    parts = line[close + 1 :].split(" ", 6)
    if len(parts) < 7 or parts[0] != "1":
        raise ValueError("not RFC 5424: version is not 1 or the header is short")
    _version, ts, host, app, procid, msgid, rest = parts
    try:
        sd, after = _parse_sd(rest)
    except IndexError as exc:
        raise ValueError("not RFC 5424: structured data ends early") from exc
    msg = after[1:] if after.startswith(" ") else after
    if msg.startswith(BOM):
        msg = msg[1:]
    return Syslog5424Message(pri, ts, host, app, procid, msgid, sd, msg)
