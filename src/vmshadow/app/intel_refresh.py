"""Threat intel in the running service: duties `EmbeddedService` runs between batches (`Periodic` tasks).

- `IntelRefresh`: loads the indicators stored since its last look (by the API, the CLI, the feeds below), adds
  them to the running `intel.match` detector, and retro-hunts the archived flows with them; every
  `full_reload_s` it rebuilds the detector's index from the store, so deleted and expired indicators leave.
- `TAXIIPolling`: polls one configured TAXII 2.1 collection from where it stopped (cursor file in `state_dir`).
- `FeedFetching`: fetches one list/STIX/MISP URL (conditional GET: ETag / Last-Modified).
- `MISPFeedPolling`: pulls a MISP feed directory (manifest, then the events changed since its last pull).

Each duty raises on failure (the service shows the error in its status file and runs it again at its next turn);
a feed or collection that keeps failing is asked less often: after n failures in a row, 2**n - 1 turns are
skipped (at most `MAX_SKIPPED_TURNS`). Feeds store nothing from a document with any error; a TAXII poll stores the
valid objects of what it read (its cursor has moved past the bad ones, which are reported once).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from vmshadow.analysis.detector import Detector
from vmshadow.analysis.intel.intel_match import IntelMatchDetector
from vmshadow.app.embedded import OnStored, Periodic
from vmshadow.app.intel import RetroHunt, retro_hunt_in
from vmshadow.app.intel_revocation import Rereview, rereview_revoked
from vmshadow.app.paths import write_json_atomically
from vmshadow.config.intel_settings import FeedFormat, FeedURLSettings, IntelSettings, TAXIICollectionSettings
from vmshadow.domain.codec import indicator_id
from vmshadow.domain.errors import BackendUnavailableError, InputError, Issue
from vmshadow.domain.indicator import Indicator
from vmshadow.domain.tmr import TMRSet
from vmshadow.intel.misp import parse_misp_event, parse_misp_manifest
from vmshadow.intel.plain_list import parse_plain_list
from vmshadow.intel.result import IntelImport
from vmshadow.intel.stix import parse_stix_bundle
from vmshadow.intel.taxii import TAXIICursor, TAXIIPoller
from vmshadow.ports.store import Store

Clock = Callable[[], datetime]
# Indicators stored up to this long before a look may commit after it (their writer read its clock first): each
# look reaches back this far, and what it already loaded is recognised and skipped.
OVERLAP = timedelta(seconds=10)
MAX_SKIPPED_TURNS = 63
FETCH_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class RefreshReport:
    loaded: int  # new or changed indicators added to the detector
    reloaded: int | None  # indicators in the rebuilt index, when this look was a full reload
    hunt: RetroHunt
    rereview: Rereview = field(default_factory=Rereview)  # proposals that rested only on what was revoked


class IntelRefresh:
    """Keeps the running `intel.match` detector in step with the store, and retro-hunts with what arrives."""

    def __init__(
        self,
        store: Store,
        detectors: Sequence[Detector[Any]],
        settings: IntelSettings,
        *,
        clock: Clock,
        tmrset: Callable[[], TMRSet] = TMRSet,
        trust: Callable[[], dict[str, float]] = dict,
        on_stored: OnStored = lambda findings, proposals: None,
    ) -> None:
        found = [d for d in detectors if isinstance(d, IntelMatchDetector)]
        if not found:
            raise InputError(Issue("intel refresh", "the service runs no intel.match detector to refresh"))
        self.detector = found[0]
        self.detector.use_policy(settings.policy)
        self.store = store
        self.settings = settings
        self.clock = clock
        self.tmrset = tmrset
        self.trust = trust
        self.on_stored = on_stored
        now = clock()
        self._since = now  # the service loaded everything valid at its start
        self._last_full = now
        self._seen: dict[str, Indicator] = {}  # loaded within the overlap, by stored id

    def periodic(self) -> Periodic:
        return Periodic("intel.refresh", self.settings.refresh_s, self.__call__)

    def __call__(self) -> RefreshReport:
        now = self.clock()
        candidates = self.store.indicators(updated_since=self._since - OVERLAP)
        fresh = [i for i in candidates if self._seen.get(indicator_id(i)) != i]
        reloaded: int | None = None
        if (now - self._last_full).total_seconds() >= self.settings.full_reload_s:
            reloaded = self.detector.reload(live_indicators(self.store, now))
            self._last_full = now
        elif fresh:
            self.detector.add_indicators(fresh)
        self._seen = {indicator_id(i): i for i in candidates}
        self._since = now
        # revoked or already ended ones only leave the index; the others are hunted with
        oldest = now - self.settings.retro_hunt
        hunted = [i for i in fresh if not i.revoked and (i.valid_until is None or i.valid_until > oldest)]
        hunt = retro_hunt_in(
            self.store,
            hunted,
            now=now,
            window=self.settings.retro_hunt,
            ongoing=self.settings.ongoing,
            tmrset=self.tmrset(),
            trust=self.trust(),
            policy=self.settings.policy,
        )
        if hunt.findings or hunt.proposals:
            self.on_stored(hunt.findings, hunt.proposals)
        rereview = rereview_revoked(self.store, [i for i in fresh if i.revoked], now)
        if rereview.alerts:
            self.on_stored([], rereview.alerts)
        return RefreshReport(len(fresh), reloaded, hunt, rereview)


def live_indicators(store: Store, now: datetime) -> list[Indicator]:
    """What a running detector should hold: every stored indicator not revoked and not ended by `now` (ones whose
    valid_from is still ahead are held too: the index passes over them until then)."""
    return [i for i in store.indicators() if not i.revoked and (i.valid_until is None or i.valid_until > now)]


@dataclass
class _Backoff:
    """Turns to skip after failures in a row: 1, 3, 7, ... (2**n - 1), at most MAX_SKIPPED_TURNS."""

    failures: int = 0
    skip: int = 0

    def run(self, pull: Callable[[], int]) -> int:
        """`pull()` unless this turn is skipped (then 0); a failure counts toward the backoff and is raised."""
        if self.should_skip():
            return 0
        try:
            done = pull()
        except Exception:
            self.failed()
            raise
        self.succeeded()
        return done

    def should_skip(self) -> bool:
        if self.skip > 0:
            self.skip -= 1
            return True
        return False

    def failed(self) -> None:
        self.failures += 1
        self.skip = min(2**self.failures - 1, MAX_SKIPPED_TURNS)

    def succeeded(self) -> None:
        self.failures, self.skip = 0, 0


@dataclass
class TAXIIPolling:
    """Polls one TAXII collection incrementally; its cursor is kept in `<state_dir>/taxii-<name>.json`."""

    collection: TAXIICollectionSettings
    store: Store
    state_dir: Path
    clock: Clock
    poller_options: dict[str, Any] = field(default_factory=dict)  # passed to TAXIIPoller (tests: retries, sleep)
    backoff: _Backoff = field(default_factory=_Backoff)
    last: IntelImport | None = None

    def periodic(self) -> Periodic:
        return Periodic(f"intel.taxii.{self.collection.name}", self.collection.every_s, self.__call__)

    @property
    def cursor_path(self) -> Path:
        return self.state_dir / f"taxii-{self.collection.name}.json"

    def __call__(self) -> int:
        if self.backoff.should_skip():
            return 0
        c = self.collection
        poller = TAXIIPoller(
            c.url,
            source=c.name,
            user=c.user,
            password=c.password,
            verify=c.verify,
            cursor=self._cursor(),
            **self.poller_options,
        )
        try:
            result = poller.poll()
        except Exception:
            self.backoff.failed()
            raise
        finally:
            poller.close()
        self.backoff.succeeded()
        stored = self.store.save_indicators(result.indicators, at=self.clock())
        # the cursor moves only once what it covers is stored: a crash in between reads the same objects again
        write_json_atomically(self.cursor_path, poller.cursor.to_dict())
        self.last = result
        if result.errors:
            raise InputError(result.errors)  # reported once: the cursor is past them
        return stored

    def _cursor(self) -> TAXIICursor | None:
        try:
            data = json.loads(self.cursor_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise InputError(Issue(str(self.cursor_path), f"unreadable TAXII cursor: {exc}")) from None
        cursor = TAXIICursor.from_dict(data)
        if cursor.collection_url.rstrip("/") != self.collection.url.rstrip("/"):
            return None  # the collection's URL changed in the settings: start over
        return cursor


@dataclass
class FeedFetching:
    """Fetches one feed URL and stores its indicators, all or nothing; unchanged documents are not read again."""

    feed: FeedURLSettings
    store: Store
    clock: Clock
    session: requests.Session = field(default_factory=requests.Session)
    timeout_s: float = FETCH_TIMEOUT_S
    backoff: _Backoff = field(default_factory=_Backoff)
    _validators: dict[str, str] = field(default_factory=dict)

    def periodic(self) -> Periodic:
        return Periodic(f"intel.feed.{self.feed.name}", self.feed.every_s, self.__call__)

    def __call__(self) -> int:
        return self.backoff.run(self._fetch)

    def _fetch(self) -> int:
        f = self.feed
        try:
            response = self.session.get(f.url, headers=self._validators, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise BackendUnavailableError(f"feed {f.name}: {f.url} not reachable: {exc}") from None
        if response.status_code == 304:
            return 0
        if response.status_code != 200:
            raise BackendUnavailableError(f"feed {f.name}: {f.url} answered {response.status_code}")
        result = _parse(f, response.content)
        indicators = result.accepted()  # raises InputError listing every error: nothing is stored
        stored = self.store.save_indicators(indicators, at=self.clock())
        self._validators = {
            header: response.headers[name]
            for name, header in (("ETag", "If-None-Match"), ("Last-Modified", "If-Modified-Since"))
            if name in response.headers
        }
        return stored


@dataclass
class MISPFeedPolling:
    """Pulls a MISP feed directory: its `manifest.json`, then each event changed since the last pull, oldest first.

    The position (the newest event timestamp stored) is kept in `<state_dir>/misp-<name>.json` and written after
    each event's indicators are stored, so a failure part-way (an event not reachable) resumes at that event. Each
    event is a document of its own: one with any error stores nothing and is reported once (the position moves
    past it, as a TAXII cursor does; fetching it again would not repair it). A manifest with any error stores
    nothing at all.
    """

    feed: FeedURLSettings
    store: Store
    state_dir: Path
    clock: Clock
    session: requests.Session = field(default_factory=requests.Session)
    timeout_s: float = FETCH_TIMEOUT_S
    backoff: _Backoff = field(default_factory=_Backoff)

    def periodic(self) -> Periodic:
        return Periodic(f"intel.feed.{self.feed.name}", self.feed.every_s, self.__call__)

    @property
    def position_path(self) -> Path:
        return self.state_dir / f"misp-{self.feed.name}.json"

    def __call__(self) -> int:
        return self.backoff.run(self._pull)

    def _get(self, url: str) -> bytes:
        try:
            response = self.session.get(url, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise BackendUnavailableError(f"feed {self.feed.name}: {url} not reachable: {exc}") from None
        if response.status_code != 200:
            raise BackendUnavailableError(f"feed {self.feed.name}: {url} answered {response.status_code}")
        return response.content

    def _pull(self) -> int:
        base = self.feed.url if self.feed.url.endswith("/") else self.feed.url + "/"
        manifest_url = base + "manifest.json"
        manifest = parse_misp_manifest(self._get(manifest_url), manifest_url)
        if manifest.errors:
            raise InputError(manifest.errors)
        stored, bad = 0, list[Issue]()
        position = self._position()  # read once a pull; written after each event's indicators are stored
        for event in manifest.changed_since(position):
            event_url = f"{base}{event.uuid}.json"
            result = parse_misp_event(self._get(event_url), self.feed.name)
            if result.errors:
                bad.extend(replace(e, source=event_url) for e in result.errors)
            else:
                stored += self.store.save_indicators(result.indicators, at=self.clock())
            if event.timestamp is not None and (position is None or event.timestamp > position):
                self._advance(event.timestamp)  # only once what it covers is stored
                position = event.timestamp
        if bad:
            raise InputError(bad)
        return stored

    def _position(self) -> datetime | None:
        try:
            return datetime.fromisoformat(json.loads(self.position_path.read_text())["timestamp"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(Issue(str(self.position_path), f"unreadable MISP feed position: {exc}")) from None

    def _advance(self, timestamp: datetime) -> None:
        write_json_atomically(self.position_path, {"url": self.feed.url, "timestamp": timestamp.isoformat()})


def _parse(feed: FeedURLSettings, content: bytes) -> IntelImport:
    if feed.format is FeedFormat.STIX:
        return parse_stix_bundle(content, feed.name, location=feed.url)
    if feed.format is FeedFormat.MISP:
        return parse_misp_event(content, feed.name)
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(Issue(feed.url, "not UTF-8 text")) from None
    return IntelImport(indicators=parse_plain_list(text, feed.name))


def intel_duties(
    store: Store,
    detectors: Sequence[Detector[Any]],
    settings: IntelSettings,
    *,
    clock: Clock,
    tmrset: Callable[[], TMRSet] = TMRSet,
    trust: Callable[[], dict[str, float]] = dict,
    on_stored: OnStored = lambda findings, proposals: None,
) -> list[Periodic]:
    """Every intel duty the settings ask for, as `Periodic` tasks for `EmbeddedService(periodic=...)`."""
    refresh = IntelRefresh(store, detectors, settings, clock=clock, tmrset=tmrset, trust=trust, on_stored=on_stored)
    duties = [refresh.periodic()]
    duties += [TAXIIPolling(c, store, settings.state_dir, clock).periodic() for c in settings.taxii]
    for f in settings.feeds:
        if f.format is FeedFormat.MISP_FEED:
            duties.append(MISPFeedPolling(f, store, settings.state_dir, clock).periodic())
        else:
            duties.append(FeedFetching(f, store, clock).periodic())
    return duties
