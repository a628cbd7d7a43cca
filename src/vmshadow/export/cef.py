"""ArcSight Common Event Format (CEF:0) for export events. Pure: no I/O.

    CEF:0|vmshadow|vmshadow|<version>|<signature id>|<name>|<severity 0-10>|<extensions>

Escaping follows the CEF implementation standard: in header fields `\\` and `|` are escaped with a backslash (a
newline cannot appear there and is replaced by a space); in extension values `\\` and `=` are escaped with a
backslash and a newline is written `\\n` (`\\r` for a carriage return). The signature id is `<kind>.<action>`
(`finding.port_scan`, `proposal.add_deny`, `decision.approved`), stable and few; the detector or recommender is in
`cs1`. Free text is cut to the lengths the standard gives (name 512, msg 1023, custom strings 4000) with a mark.
CEF usually travels as the MSG of a syslog message: see `syslog5424.SyslogFormat(msg=MessageFormat.CEF)`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from vmshadow import __version__
from vmshadow.export.event import SEVERITY_0_10, ExportEvent

TRUNCATED = "…[truncated]"
NAME_MAX = 512
MSG_MAX = 1023
CUSTOM_MAX = 4000
_PROTO = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "IPv6-ICMP", 132: "SCTP"}


def truncate(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, the cut marked (always before escaping, never inside an escape)."""
    if len(text) <= limit:
        return text
    return text[: limit - len(TRUNCATED)] + TRUNCATED


def escape_header(text: str) -> str:
    text = text.replace("\\", "\\\\").replace("|", "\\|")
    return text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")


def escape_extension(text: str) -> str:
    text = text.replace("\\", "\\\\").replace("=", "\\=")
    return text.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\r")


def unescape_extension(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            out.append({"n": "\n", "r": "\r"}.get(nxt, nxt))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _extensions(e: ExportEvent) -> list[tuple[str, str]]:
    ext: list[tuple[str, str]] = [
        ("rt", str(int(e.occurred_at.timestamp() * 1000))),
        ("externalId", e.id),
        ("cat", str(e.kind)),
        ("act", e.action),
        ("msg", truncate(e.summary, MSG_MAX)),
    ]

    def address(value: str | None, v4_key: str, v6_key: str) -> None:
        if not value:
            return
        if ipaddress.ip_address(value).version == 4:
            ext.append((v4_key, value))
        else:
            ext.extend([(v6_key, value), (f"{v6_key}Label", "Source IPv6" if v6_key == "c6a2" else "Destination IPv6")])

    address(e.src_ip, "src", "c6a2")
    address(e.dst_ip, "dst", "c6a3")
    if e.src_port is not None:
        ext.append(("spt", str(e.src_port)))
    if e.dst_port is not None:
        ext.append(("dpt", str(e.dst_port)))
    if e.protocol is not None:
        ext.append(("proto", _PROTO.get(e.protocol, str(e.protocol))))
    custom = [
        ("rule", e.rule_id),
        ("ruleVersion", e.rule_version),
        ("communityId", ",".join(e.community_ids)),
        ("vmn", e.src_vmn or ""),
        ("indicator", e.indicator or ""),
        ("attackTechnique", e.attack_technique or ""),
    ]
    for n, (label, value) in enumerate(custom, start=1):
        if value:
            ext.extend([(f"cs{n}", truncate(value, CUSTOM_MAX)), (f"cs{n}Label", label)])
    if e.score is not None:
        ext.extend([("cfp1", f"{e.score:.4f}"), ("cfp1Label", "score")])
    return ext


def format_cef(e: ExportEvent, *, product_version: str = __version__) -> str:
    """The CEF line of one event (no trailing newline)."""
    header = [
        "CEF:0",
        "vmshadow",
        "vmshadow",
        escape_header(product_version),
        escape_header(f"{e.kind}.{e.action}"),
        escape_header(truncate(e.summary or f"{e.kind} {e.action}", NAME_MAX)),
        str(SEVERITY_0_10[e.severity]),
    ]
    extensions = " ".join(f"{key}={escape_extension(value)}" for key, value in _extensions(e))
    return "|".join(header) + "|" + extensions


@dataclass(frozen=True, slots=True)
class CEFRecord:
    """A parsed CEF line: the seven header fields (unescaped) and the extensions (unescaped values)."""

    header: tuple[str, ...]
    extensions: dict[str, str]


def _split_header(line: str) -> tuple[list[str], str]:
    fields: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(line) and len(fields) < 7:
        c = line[i]
        if c == "\\" and i + 1 < len(line):
            current.append(line[i + 1])
            i += 2
            continue
        if c == "|":
            fields.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    if len(fields) < 7:
        raise ValueError("not a CEF line: fewer than 7 header fields")
    return fields, line[i:]


def parse_cef(line: str) -> CEFRecord:
    """Parse a CEF line written by `format_cef` (or any conforming producer)."""
    start = line.find("CEF:")
    if start < 0:
        raise ValueError("not a CEF line: no 'CEF:' prefix")
    header, rest = _split_header(line[start:])
    # positions of unescaped '=': each is preceded by a key that starts after the last space
    equals: list[int] = []
    i = 0
    while i < len(rest):
        if rest[i] == "\\":
            i += 2
            continue
        if rest[i] == "=":
            equals.append(i)
        i += 1
    extensions: dict[str, str] = {}
    key_starts = [rest.rfind(" ", 0, pos) + 1 for pos in equals]
    for n, pos in enumerate(equals):
        key = rest[key_starts[n] : pos]
        end = key_starts[n + 1] - 1 if n + 1 < len(equals) else len(rest)
        extensions[key] = unescape_extension(rest[pos + 1 : end])
    return CEFRecord(header=tuple(header), extensions=extensions)
