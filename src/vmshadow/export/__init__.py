"""SIEM export: events built from findings, proposals, decisions and outcomes, written as ECS JSON, RFC 5424
syslog or CEF (pure formatters), and delivered at least once through a disk-backed queue per sink (file, syslog
over UDP/TCP/TLS, webhook). See docs/export.md."""

from vmshadow.export.delivery import Deliverer, DeliveryReport
from vmshadow.export.event import (
    EventFilter,
    EventKind,
    ExportEvent,
    event_from_json,
    event_to_json,
    from_decision,
    from_finding,
    from_outcome,
    from_outcome_record,
    from_proposal,
    sample_event,
)
from vmshadow.export.queue import DiskQueue, QueueStats
from vmshadow.export.sinks import FileSink, Sink, SinkError, SyslogSink, TLSOptions, Transport, WebhookSink

__all__ = [
    "Deliverer",
    "DeliveryReport",
    "DiskQueue",
    "EventFilter",
    "EventKind",
    "ExportEvent",
    "FileSink",
    "QueueStats",
    "Sink",
    "SinkError",
    "SyslogSink",
    "TLSOptions",
    "Transport",
    "WebhookSink",
    "event_from_json",
    "event_to_json",
    "from_decision",
    "from_finding",
    "from_outcome",
    "from_outcome_record",
    "from_proposal",
    "sample_event",
]
