"""The settings file: guard-rails for the recommenders and the SIEM export sinks, read into frozen `Settings`.

::

    version: 1
    guard_rails:
      never_block:
        - {network: 198.18.0.2/32, label: lab dns}
      max_blocked_share: 0.05
      max_proposals: 50
      rate_window_s: 3600
    refinement:
      impact_window_s: 86400     # impact replays the last day of recorded flows
    export:
      queue_dir: var/export
      sinks:
        - name: siem-file
          type: file
          filter: {kinds: [finding, proposal], min_severity: medium}
          file: {path: var/export/events.jsonl, max_bytes: 10485760, backups: 5}

The `intel` section (source trust and decay, live refresh, TAXII collections, feed URLs) is described in
`config.intel_settings`.

`parse_settings_text` and `load_settings` find every problem in one pass and raise one `InputError` listing them
all with line and field (``settings.yaml:9: export.sinks[0].type: unknown sink type 'kafka'; ...``); they never
return half a configuration. Relative paths are resolved against the current directory when the file is read.
A webhook's HMAC secret is never written in the file: `secret_env` names the environment variable that holds it,
read (and required to be set) when the file is loaded. The format is documented in docs/settings.md.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from pathlib import Path as FilePath
from typing import Any

from vmshadow.config.intel_settings import IntelReader, IntelSettings
from vmshadow.config.tmr_file import parse_network
from vmshadow.config.yaml_source import FieldReader, Path, describe, load_yaml, read_text
from vmshadow.domain.errors import Issue
from vmshadow.domain.finding import Severity
from vmshadow.export.event import EventFilter, EventKind
from vmshadow.export.sinks import TLSOptions, Transport
from vmshadow.refinement.guardrails import GuardRails, NeverBlock
from vmshadow.refinement.impact import DEFAULT_WINDOW

FORMAT_VERSION = 1

TOP_KEYS = ("version", "guard_rails", "refinement", "export", "intel")
GUARD_KEYS = ("never_block", "max_blocked_share", "max_proposals", "rate_window_s")
NEVER_BLOCK_KEYS = ("network", "label")
REFINEMENT_KEYS = ("impact_window_s",)
MAX_IMPACT_WINDOW_S = 366 * 86400.0
EXPORT_KEYS = ("queue_dir", "sinks")
SINK_KEYS = ("name", "type", "filter", "file", "syslog", "webhook")
FILTER_KEYS = ("kinds", "min_severity")
FILE_KEYS = ("path", "max_bytes", "backups")
SYSLOG_KEYS = ("host", "port", "transport", "format", "tls")
TLS_KEYS = ("ca_file", "cert_file", "key_file", "server_name")
WEBHOOK_KEYS = ("url", "secret_env", "timeout_s", "retries")

DEFAULT_QUEUE_DIR = FilePath("var/export")
SINK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
"""Sink names: they name the queue file `<queue_dir>/<name>.db`, so letters, digits, '_', '.', '-' only."""
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_RETRIES = 20
MAX_TIMEOUT_S = 300.0
MAX_BACKUPS = 1000


class SinkType(StrEnum):
    FILE = "file"
    SYSLOG = "syslog"
    WEBHOOK = "webhook"


class SyslogMessage(StrEnum):
    """What a syslog message carries after its structured data: the summary (RFC 5424) or a CEF line."""

    RFC5424 = "rfc5424"
    CEF = "cef"


@dataclass(frozen=True, slots=True)
class FileSinkSettings:
    path: FilePath
    max_bytes: int = 10 * 1024 * 1024
    backups: int = 5


@dataclass(frozen=True, slots=True)
class SyslogSinkSettings:
    host: str
    port: int
    transport: Transport = Transport.TCP
    format: SyslogMessage = SyslogMessage.RFC5424
    tls: TLSOptions | None = None


@dataclass(frozen=True, slots=True)
class WebhookSinkSettings:
    url: str
    secret_env: str
    secret: bytes | None = field(default=None, repr=False)  # from the environment at load; None: not resolved
    timeout_s: float = 5.0
    retries: int = 3


@dataclass(frozen=True, slots=True)
class SinkSettings:
    """One configured sink. `source` and `line` locate it, for errors found when it is built (a bad certificate)."""

    name: str
    type: SinkType
    target: FileSinkSettings | SyslogSinkSettings | WebhookSinkSettings
    filter: EventFilter = EventFilter()  # noqa: RUF009 - frozen, safely shared
    source: str = ""
    line: int | None = None
    index: int = 0

    def issue(self, message: str) -> Issue:
        return Issue(self.source, message, line=self.line, field=f"export.sinks[{self.index}]")


@dataclass(frozen=True, slots=True)
class ExportSettings:
    queue_dir: FilePath = DEFAULT_QUEUE_DIR
    sinks: tuple[SinkSettings, ...] = ()

    def sink(self, name: str) -> SinkSettings | None:
        return next((s for s in self.sinks if s.name == name), None)

    def queue_path(self, name: str) -> FilePath:
        return self.queue_dir / f"{name}.db"


@dataclass(frozen=True, slots=True)
class RefinementSettings:
    """What the recommenders see beyond the guard-rails: `impact_window` is the span of recorded flows an impact
    replays (`RecommendContext.impact_window`)."""

    impact_window: timedelta = DEFAULT_WINDOW


@dataclass(frozen=True, slots=True)
class Settings:
    guard_rails: GuardRails = GuardRails()  # noqa: RUF009 - frozen, safely shared
    refinement: RefinementSettings = RefinementSettings()
    export: ExportSettings = ExportSettings()
    intel: IntelSettings = IntelSettings()  # noqa: RUF009 - frozen, safely shared; see config.intel_settings
    source: str = ""


def parse_settings_text(
    text: str, source: str, *, environ: Mapping[str, str] | None = None, base: FilePath | None = None
) -> Settings:
    """Read a settings file's text; raises `InputError` with every issue, naming `source`.

    `environ` is where webhook secrets are read (`os.environ` by default); `base` is the directory relative paths
    are resolved against (the current directory by default). An empty file gives the defaults.
    """
    reader = FieldReader(load_yaml(text, source))
    return _SettingsReader(reader, os.environ if environ is None else environ, base or FilePath.cwd()).read()


def load_settings(
    path: str | FilePath,
    source: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    resolve_secrets: bool = True,
) -> Settings:
    """Read a settings file. `resolve_secrets=False` leaves webhook secrets unread (for readers of queue stats)."""
    name = str(path) if source is None else source
    env: Mapping[str, str] | None = environ
    if not resolve_secrets:
        env = _NoSecrets()
    return parse_settings_text(read_text(path, name), name, environ=env)


class _NoSecrets(dict[str, str]):
    """An environment that resolves no secret and reports none missing."""


class _SettingsReader:
    def __init__(self, reader: FieldReader, environ: Mapping[str, str], base: FilePath) -> None:
        self.reader = reader
        self.environ = environ
        self.base = base

    def read(self) -> Settings:
        reader = self.reader
        data = reader.document.data
        if data is None:
            reader.raise_if_any()
            return Settings(source=reader.document.source)
        root = reader.mapping((), data, TOP_KEYS)
        if root is None:
            reader.raise_if_any()
            return Settings(source=reader.document.source)  # pragma: no cover - reported above
        if "version" in root:
            version = root["version"]
            if type(version) is not int or version != FORMAT_VERSION:
                shown = str(version) if type(version) is int else describe(version)
                reader.report(("version",), f"unsupported settings version {shown}; this vmshadow reads version 1")
        guard_rails = self._guard_rails(root.get("guard_rails"))
        refinement = self._refinement(root.get("refinement"))
        export = self._export(root.get("export"))
        secrets = not isinstance(self.environ, _NoSecrets)
        intel = IntelReader(reader, self.environ, self.base, secrets=secrets).read(root.get("intel"))
        reader.raise_if_any()
        assert guard_rails is not None
        assert refinement is not None
        assert export is not None
        assert intel is not None
        return Settings(
            guard_rails=guard_rails,
            refinement=refinement,
            export=export,
            intel=intel,
            source=reader.document.source,
        )

    # guard-rails

    def _guard_rails(self, value: object) -> GuardRails | None:
        reader = self.reader
        path: Path = ("guard_rails",)
        if value is None:
            return GuardRails()
        fields = reader.mapping(path, value, GUARD_KEYS)
        if fields is None:
            return None
        defaults = GuardRails()
        never_block: list[NeverBlock] = []
        for item_path, item in reader.items((*path, "never_block"), fields.get("never_block", [])):
            entry = self._never_block(item_path, item)
            if entry is not None:
                never_block.append(entry)
        share = defaults.max_blocked_share
        if "max_blocked_share" in fields:
            share = self._number((*path, "max_blocked_share"), fields["max_blocked_share"], 0.0, 1.0) or 0.0
        max_proposals = defaults.max_proposals
        if "max_proposals" in fields:
            max_proposals = reader.integer((*path, "max_proposals"), fields["max_proposals"], 0, 1_000_000) or 0
        window = defaults.rate_window
        if "rate_window_s" in fields:
            seconds = self._number((*path, "rate_window_s"), fields["rate_window_s"], 1.0, 366 * 86400.0)
            window = timedelta(seconds=seconds or 1.0)
        return GuardRails(
            never_block=tuple(never_block), max_blocked_share=share, max_proposals=max_proposals, rate_window=window
        )

    def _never_block(self, path: Path, value: object) -> NeverBlock | None:
        reader = self.reader
        if isinstance(value, str):
            network, label = value, ""
        else:
            fields = reader.mapping(path, value, NEVER_BLOCK_KEYS, ("network",))
            if fields is None or "network" not in fields:
                return None
            network_value = reader.text((*path, "network"), fields["network"])
            label_value = reader.text((*path, "label"), fields["label"]) if "label" in fields else ""
            if network_value is None or label_value is None:
                return None
            network, label = network_value, label_value
            path = (*path, "network")
        parsed = parse_network(network)
        if isinstance(parsed, str):
            reader.report(path, parsed)
            return None
        return NeverBlock(parsed, label)

    # refinement

    def _refinement(self, value: object) -> RefinementSettings | None:
        path: Path = ("refinement",)
        if value is None:
            return RefinementSettings()
        fields = self.reader.mapping(path, value, REFINEMENT_KEYS)
        if fields is None:
            return None
        window = RefinementSettings().impact_window
        if "impact_window_s" in fields:
            seconds = self._number((*path, "impact_window_s"), fields["impact_window_s"], 1.0, MAX_IMPACT_WINDOW_S)
            if seconds is None:
                return None
            window = timedelta(seconds=seconds)
        return RefinementSettings(impact_window=window)

    # export

    def _export(self, value: object) -> ExportSettings | None:
        reader = self.reader
        path: Path = ("export",)
        if value is None:
            return ExportSettings(queue_dir=self._path((*path, "queue_dir"), str(DEFAULT_QUEUE_DIR)) or FilePath())
        fields = reader.mapping(path, value, EXPORT_KEYS)
        if fields is None:
            return None
        queue_dir = self._path((*path, "queue_dir"), fields.get("queue_dir", str(DEFAULT_QUEUE_DIR)))
        sinks: list[SinkSettings] = []
        first_names: dict[str, int | None] = {}
        raw_sinks = fields.get("sinks", [])
        if raw_sinks is not None and not isinstance(raw_sinks, list):
            reader.report((*path, "sinks"), f"expected a list of sinks; found {describe(raw_sinks)}")
            raw_sinks = []
        for index, item in enumerate(raw_sinks or []):
            sink = self._sink((*path, "sinks", index), index, item, first_names)
            if sink is not None:
                sinks.append(sink)
        if queue_dir is None:
            return None
        return ExportSettings(queue_dir=queue_dir, sinks=tuple(sinks))

    def _sink(self, path: Path, index: int, value: object, first_names: dict[str, int | None]) -> SinkSettings | None:
        reader = self.reader
        before = len(reader.issues)
        fields = reader.mapping(path, value, SINK_KEYS, ("name", "type"))
        if fields is None:
            return None
        name = self._sink_name((*path, "name"), fields["name"], first_names) if "name" in fields else None
        kind = reader.choice((*path, "type"), fields["type"], SinkType, "sink type") if "type" in fields else None
        event_filter = self._filter((*path, "filter"), fields["filter"]) if "filter" in fields else EventFilter()
        target: FileSinkSettings | SyslogSinkSettings | WebhookSinkSettings | None = None
        if kind is not None:
            for other in SinkType:
                if other is not kind and str(other) in fields:
                    reader.report((*path, str(other)), f"a {other} section in a sink of type {kind}; remove it")
            section = (*path, str(kind))
            if str(kind) not in fields:
                reader.report(section, f"required field is missing: a sink of type {kind} needs a {kind} section")
            elif kind is SinkType.FILE:
                target = self._file(section, fields[str(kind)])
            elif kind is SinkType.SYSLOG:
                target = self._syslog(section, fields[str(kind)])
            else:
                target = self._webhook(section, fields[str(kind)])
        if len(reader.issues) > before or name is None or kind is None or target is None or event_filter is None:
            return None
        return SinkSettings(
            name=name,
            type=kind,
            target=target,
            filter=event_filter,
            source=reader.document.source,
            line=reader.line(path),
            index=index,
        )

    def _sink_name(self, path: Path, value: object, first_names: dict[str, int | None]) -> str | None:
        reader = self.reader
        name = reader.text(path, value)
        if name is None:
            return None
        if not SINK_NAME.match(name):
            reader.report(
                path,
                f"{name!r} is not a valid sink name: start with a letter or digit, then use letters, digits, "
                "'_', '.' or '-' (at most 63 characters); it names the sink's queue file",
            )
            return None
        if name in first_names:
            reader.report(path, f"duplicate sink name {name!r}; first used at line {first_names[name]}")
            return None
        first_names[name] = reader.line(path)
        return name

    def _filter(self, path: Path, value: object) -> EventFilter | None:
        reader = self.reader
        fields = reader.mapping(path, value, FILTER_KEYS)
        if fields is None:
            return None
        kinds: set[EventKind] = set()
        ok = True
        if "kinds" in fields:
            if fields["kinds"] == []:
                reader.report((*path, "kinds"), "empty list of kinds; leave kinds out to take every kind")
                ok = False
            for item_path, item in reader.items((*path, "kinds"), fields["kinds"]):
                kind = reader.choice(item_path, item, EventKind, "event kind")
                ok = ok and kind is not None
                if kind is not None:
                    kinds.add(kind)
        severity = Severity.INFO
        if "min_severity" in fields:
            chosen = reader.choice((*path, "min_severity"), fields["min_severity"], Severity, "severity")
            ok = ok and chosen is not None
            severity = chosen or Severity.INFO
        return EventFilter(kinds=frozenset(kinds), min_severity=severity) if ok else None

    def _file(self, path: Path, value: object) -> FileSinkSettings | None:
        reader = self.reader
        fields = reader.mapping(path, value, FILE_KEYS, ("path",))
        if fields is None:
            return None
        file_path = self._path((*path, "path"), fields["path"]) if "path" in fields else None
        defaults = FileSinkSettings(FilePath())
        max_bytes: int | None = defaults.max_bytes
        if "max_bytes" in fields:
            max_bytes = reader.integer((*path, "max_bytes"), fields["max_bytes"], 1, 2**40)
        backups: int | None = defaults.backups
        if "backups" in fields:
            backups = reader.integer((*path, "backups"), fields["backups"], 0, MAX_BACKUPS)
        if file_path is None or max_bytes is None or backups is None:
            return None
        return FileSinkSettings(file_path, max_bytes, backups)

    def _syslog(self, path: Path, value: object) -> SyslogSinkSettings | None:
        reader = self.reader
        fields = reader.mapping(path, value, SYSLOG_KEYS, ("host",))
        if fields is None:
            return None
        host = reader.text((*path, "host"), fields["host"]) if "host" in fields else None
        if host is not None and not host.strip():
            reader.report((*path, "host"), "empty host")
            host = None
        transport: Transport | None = Transport.TCP
        if "transport" in fields:
            transport = reader.choice((*path, "transport"), fields["transport"], Transport, "transport")
        message: SyslogMessage | None = SyslogMessage.RFC5424
        if "format" in fields:
            message = reader.choice((*path, "format"), fields["format"], SyslogMessage, "format")
        default_port = 6514 if transport is Transport.TLS else 514
        port = reader.integer((*path, "port"), fields["port"], 1, 65535) if "port" in fields else default_port
        tls: TLSOptions | None = None
        tls_ok = True
        if "tls" in fields:
            if transport is not None and transport is not Transport.TLS:
                reader.report((*path, "tls"), f"tls options need transport tls; this sink's transport is {transport}")
                tls_ok = False
            else:
                tls = self._tls((*path, "tls"), fields["tls"])
                tls_ok = tls is not None
        if host is None or port is None or transport is None or message is None or not tls_ok:
            return None
        return SyslogSinkSettings(host=host, port=port, transport=transport, format=message, tls=tls)

    def _tls(self, path: Path, value: object) -> TLSOptions | None:
        reader = self.reader
        fields = reader.mapping(path, value, TLS_KEYS)
        if fields is None:
            return None
        files: dict[str, FilePath | None] = {}
        ok = True
        for key in ("ca_file", "cert_file", "key_file"):
            files[key] = None
            if key in fields:
                found = self._path((*path, key), fields[key], must_exist=True)
                ok = ok and found is not None
                files[key] = found
        if "key_file" in fields and "cert_file" not in fields:
            reader.report((*path, "key_file"), "a key_file needs the cert_file it belongs to")
            ok = False
        server_name = reader.text((*path, "server_name"), fields["server_name"]) if "server_name" in fields else ""
        if not ok or server_name is None:
            return None
        return TLSOptions(
            ca_file=files["ca_file"],
            cert_file=files["cert_file"],
            key_file=files["key_file"],
            server_name=server_name or None,
        )

    def _webhook(self, path: Path, value: object) -> WebhookSinkSettings | None:
        reader = self.reader
        fields = reader.mapping(path, value, WEBHOOK_KEYS, ("url", "secret_env"))
        if fields is None:
            return None
        url = reader.text((*path, "url"), fields["url"]) if "url" in fields else None
        if url is not None and not re.match(r"^https?://[^/\s]+", url):
            reader.report((*path, "url"), f"{url!r} is not an http:// or https:// URL")
            url = None
        secret_env = self._secret_env((*path, "secret_env"), fields["secret_env"]) if "secret_env" in fields else None
        timeout: float | None = 5.0
        if "timeout_s" in fields:
            timeout = self._number((*path, "timeout_s"), fields["timeout_s"], 0.001, MAX_TIMEOUT_S)
        retries: int | None = 3
        if "retries" in fields:
            retries = reader.integer((*path, "retries"), fields["retries"], 0, MAX_RETRIES)
        if url is None or secret_env is None or timeout is None or retries is None:
            return None
        secret = None if isinstance(self.environ, _NoSecrets) else self.environ[secret_env].encode()
        return WebhookSinkSettings(url=url, secret_env=secret_env, secret=secret, timeout_s=timeout, retries=retries)

    def _secret_env(self, path: Path, value: object) -> str | None:
        reader = self.reader
        name = reader.text(path, value)
        if name is None:
            return None
        if not ENV_NAME.match(name):
            reader.report(
                path,
                f"{name!r} is not an environment variable name; secret_env names the variable that holds the "
                "secret (the secret itself never goes in this file)",
            )
            return None
        if isinstance(self.environ, _NoSecrets):
            return name
        if not self.environ.get(name):
            reader.report(path, f"environment variable {name} is not set or empty; it must hold the HMAC secret")
            return None
        return name

    # values

    def _number(self, path: Path, value: object, low: float, high: float) -> float | None:
        return self.reader.number(path, value, low, high)

    def _path(self, path: Path, value: Any, *, must_exist: bool = False) -> FilePath | None:
        text = self.reader.text(path, value)
        if text is None:
            return None
        if not text.strip():
            self.reader.report(path, "empty path")
            return None
        resolved = (self.base / FilePath(text).expanduser()).resolve()
        if must_exist and not resolved.is_file():
            self.reader.report(path, f"{resolved} is not a readable file")
            return None
        return resolved
