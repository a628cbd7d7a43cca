"""The settings file's `intel` section: source trust and decay, the live refresh, TAXII collections and feed URLs.

::

    intel:
      refresh_s: 30              # the running service loads indicators stored since its last look this often
      full_reload_s: 3600        # and rebuilds its index from the store this often (deleted/expired ones leave)
      retro_hunt_hours: 24       # archived flows checked against newly arrived indicators
      ongoing_hours: 1           # a contact this recent looks ongoing: the recommenders are asked for a proposal
      min_confidence: 0          # a match whose effective confidence is below this counts as none
      default: {trust: 1.0}      # sources not named below
      sources:
        - {source: "ipsum*", trust: 0.6, half_life_days: 7}   # "name" or "prefix*"; first match wins
      state_dir: var/intel       # TAXII cursors, MISP feed positions
      taxii:
        - {name: cti, url: "https://taxii.example/api/collections/<id>/", every_s: 3600,
           user: vmshadow, password_env: TAXII_PASSWORD, verify: true}
      feeds:
        - {name: blocklist, url: "https://lists.example/level3.txt", format: list, every_s: 86400}
        - {name: circl, url: "https://www.circl.lu/doc/misp/feed-osint/", format: misp-feed, every_s: 3600}

Feed formats: `list` (plain/CSV lines), `stix` (one bundle), `misp` (one event), `misp-feed` (a MISP feed
directory: its `manifest.json`, then each event changed since the last pull, `<uuid>.json`).

A TAXII password is never written in the file: `password_env` names the environment variable holding it. The
`name` of a collection or feed is the source of its indicators. Read by `config.settings`, which reports every
problem with line and field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from pathlib import Path as FilePath
from typing import Any

from vmshadow.config.yaml_source import FieldReader, Path, describe
from vmshadow.intel.lifecycle import IntelPolicy, SourcePolicy

INTEL_KEYS = (
    "refresh_s",
    "full_reload_s",
    "retro_hunt_hours",
    "ongoing_hours",
    "min_confidence",
    "default",
    "sources",
    "state_dir",
    "taxii",
    "feeds",
)
POLICY_KEYS = ("trust", "half_life_days")
SOURCE_KEYS = ("source", *POLICY_KEYS)
TAXII_KEYS = ("name", "url", "every_s", "user", "password_env", "verify")
FEED_KEYS = ("name", "url", "format", "every_s")
DEFAULT_STATE_DIR = FilePath("var/intel")
MAX_EVERY_S = 30 * 86400.0
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_URL = re.compile(r"^https?://[^/\s]+")


class FeedFormat(StrEnum):
    """What a feed URL serves."""

    LIST = "list"
    STIX = "stix"
    MISP = "misp"
    MISP_FEED = "misp-feed"  # a MISP feed directory: manifest.json, then each changed <uuid>.json


@dataclass(frozen=True, slots=True)
class TAXIICollectionSettings:
    name: str
    url: str
    every_s: float = 3600.0
    user: str | None = None
    password_env: str | None = None
    password: str | None = field(default=None, repr=False)  # from the environment at load
    verify: bool = True


@dataclass(frozen=True, slots=True)
class FeedURLSettings:
    name: str
    url: str
    format: FeedFormat = FeedFormat.LIST
    every_s: float = 3600.0


@dataclass(frozen=True, slots=True)
class IntelSettings:
    policy: IntelPolicy = IntelPolicy()  # noqa: RUF009 - frozen, safely shared
    refresh_s: float = 30.0
    full_reload_s: float = 3600.0
    retro_hunt: timedelta = timedelta(hours=24)
    ongoing: timedelta = timedelta(hours=1)
    state_dir: FilePath = DEFAULT_STATE_DIR
    taxii: tuple[TAXIICollectionSettings, ...] = ()
    feeds: tuple[FeedURLSettings, ...] = ()


class IntelReader:
    """Reads the `intel` section into `IntelSettings`, reporting to `reader`; None when anything was wrong."""

    def __init__(self, reader: FieldReader, environ: Mapping[str, str], base: FilePath, *, secrets: bool) -> None:
        self.reader = reader
        self.environ = environ
        self.base = base
        self.secrets = secrets

    def read(self, value: object) -> IntelSettings | None:
        path: Path = ("intel",)
        if value is None:
            return IntelSettings(state_dir=(self.base / DEFAULT_STATE_DIR).resolve())
        reader = self.reader
        before = len(reader.issues)
        fields = reader.mapping(path, value, INTEL_KEYS)
        if fields is None:
            return None
        d = IntelSettings()
        refresh = self._number((*path, "refresh_s"), fields.get("refresh_s", d.refresh_s), 0.1, MAX_EVERY_S)
        full = self._number((*path, "full_reload_s"), fields.get("full_reload_s", d.full_reload_s), 1.0, MAX_EVERY_S)
        hunt = self._number((*path, "retro_hunt_hours"), fields.get("retro_hunt_hours", 24), 0.0, 24 * 366)
        ongoing = self._number((*path, "ongoing_hours"), fields.get("ongoing_hours", 1), 0.0, 24 * 366)
        minimum = reader.integer((*path, "min_confidence"), fields.get("min_confidence", 0), 0, 100)
        default = self._policy((*path, "default"), fields["default"]) if "default" in fields else SourcePolicy()
        sources = [self._source(p, v) for p, v in reader.items((*path, "sources"), fields.get("sources", []))]
        state = self._path((*path, "state_dir"), fields.get("state_dir", str(DEFAULT_STATE_DIR)))
        taxii = [self._taxii(p, v) for p, v in reader.items((*path, "taxii"), fields.get("taxii", []))]
        feeds = [self._feed(p, v) for p, v in reader.items((*path, "feeds"), fields.get("feeds", []))]
        self._unique_names([*taxii, *feeds], path)
        if len(reader.issues) > before:
            return None
        assert refresh is not None
        assert full is not None
        assert hunt is not None
        assert ongoing is not None
        assert minimum is not None
        assert default is not None
        assert state is not None
        return IntelSettings(
            policy=IntelPolicy(sources=tuple(s for s in sources if s), default=default, min_confidence=minimum),
            refresh_s=refresh,
            full_reload_s=full,
            retro_hunt=timedelta(hours=hunt),
            ongoing=timedelta(hours=ongoing),
            state_dir=state,
            taxii=tuple(t for t in taxii if t),
            feeds=tuple(f for f in feeds if f),
        )

    def _policy(self, path: Path, value: object, keys: tuple[str, ...] = POLICY_KEYS) -> SourcePolicy | None:
        fields = self.reader.mapping(path, value, keys)
        if fields is None:
            return None
        trust = self._number((*path, "trust"), fields.get("trust", 1.0), 0.0, 1.0)
        half_life: timedelta | None = None
        if "half_life_days" in fields:
            days = self._number((*path, "half_life_days"), fields["half_life_days"], 0.001, 36600.0)
            if days is None:
                return None
            half_life = timedelta(days=days)
        return None if trust is None else SourcePolicy(trust=trust, half_life=half_life)

    def _source(self, path: Path, value: object) -> tuple[str, SourcePolicy] | None:
        fields = self.reader.mapping(path, value, SOURCE_KEYS, ("source",))
        if fields is None or "source" not in fields:
            return None
        name = self._name((*path, "source"), fields["source"])
        policy = self._policy(path, {k: v for k, v in fields.items() if k != "source"})
        return None if name is None or policy is None else (name, policy)

    def _taxii(self, path: Path, value: object) -> TAXIICollectionSettings | None:
        reader = self.reader
        fields = reader.mapping(path, value, TAXII_KEYS, ("name", "url"))
        if fields is None or "name" not in fields or "url" not in fields:
            return None
        name = self._name((*path, "name"), fields["name"])
        url = self._url((*path, "url"), fields["url"])
        every = self._number((*path, "every_s"), fields.get("every_s", 3600.0), 1.0, MAX_EVERY_S)
        user = reader.text((*path, "user"), fields["user"]) if "user" in fields else None
        verify = fields.get("verify", True)
        if not isinstance(verify, bool):
            reader.report((*path, "verify"), f"expected true or false, found {describe(verify)}")
            return None
        password_env, password = None, None
        if "password_env" in fields:
            password_env = self._env((*path, "password_env"), fields["password_env"])
            if password_env is None:
                return None
            password = self.environ.get(password_env) if self.secrets else None
        if name is None or url is None or every is None or ("user" in fields and user is None):
            return None
        return TAXIICollectionSettings(name, url, every, user, password_env, password, verify)

    def _feed(self, path: Path, value: object) -> FeedURLSettings | None:
        reader = self.reader
        fields = reader.mapping(path, value, FEED_KEYS, ("name", "url"))
        if fields is None or "name" not in fields or "url" not in fields:
            return None
        name = self._name((*path, "name"), fields["name"])
        url = self._url((*path, "url"), fields["url"])
        fmt = reader.choice((*path, "format"), fields.get("format", "list"), FeedFormat, "feed format")
        every = self._number((*path, "every_s"), fields.get("every_s", 3600.0), 1.0, MAX_EVERY_S)
        if name is None or url is None or fmt is None or every is None:
            return None
        return FeedURLSettings(name, url, fmt, every)

    def _unique_names(self, found: list[Any], path: Path) -> None:
        seen: set[str] = set()
        for item in found:
            if item is None:
                continue
            if item.name in seen:
                self.reader.report(path, f"the name {item.name!r} is used twice; each collection and feed is a source")
            seen.add(item.name)

    def _name(self, path: Path, value: object) -> str | None:
        text = self.reader.text(path, value)
        if text is not None and not text.strip():
            self.reader.report(path, "empty name")
            return None
        return text

    def _url(self, path: Path, value: object) -> str | None:
        text = self.reader.text(path, value)
        if text is not None and not _URL.match(text):
            self.reader.report(path, f"{text!r} is not an http:// or https:// URL")
            return None
        return text

    def _env(self, path: Path, value: object) -> str | None:
        name = self.reader.text(path, value)
        if name is None:
            return None
        if not _ENV_NAME.match(name):
            self.reader.report(path, f"{name!r} is not an environment variable name (the password never goes here)")
            return None
        if self.secrets and not self.environ.get(name):
            self.reader.report(path, f"environment variable {name} is not set or empty; it must hold the password")
            return None
        return name

    def _number(self, path: Path, value: object, low: float, high: float) -> float | None:
        return self.reader.number(path, value, low, high)

    def _path(self, path: Path, value: object) -> FilePath | None:
        text = self.reader.text(path, value)
        if text is None:
            return None
        if not text.strip():
            self.reader.report(path, "empty path")
            return None
        return (self.base / FilePath(text).expanduser()).resolve()
