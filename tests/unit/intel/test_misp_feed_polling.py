"""A MISP feed directory on loopback: manifest, the changed events only, position kept, bad events reported."""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.datadir import shared_data
from tests.httpserve import serving
from tests.unit.intel.test_refresh import Clock
from vmshadow.adapters.sql import SqlStore, open_store
from vmshadow.analysis.registry import build_detectors
from vmshadow.app.intel_refresh import MISPFeedPolling, intel_duties
from vmshadow.config.intel_settings import FeedFormat, FeedURLSettings, IntelSettings
from vmshadow.config.settings import parse_settings_text
from vmshadow.domain.errors import BackendUnavailableError, InputError
from vmshadow.intel.misp import parse_misp_event

SEDNIT = "5a3c2fcd-8328-42bb-a95e-4f4402de0b81"  # pymisp's existing_event.json
XORIST = "57c4445b-c548-4654-af0b-4be3950d210f"  # no network attribute vmshadow keeps
BROKEN = "0b3a1a2e-1111-4c4c-8888-000000000001"


def sednit_indicators() -> int:
    """Distinct network indicators of the event, as the parser reads the file (31 attributes, 29 distinct)."""
    event = parse_misp_event((shared_data() / "intel" / "misp-pymisp" / "existing_event.json").read_bytes(), "circl")
    return len({(i.type, i.value) for i in event.indicators})


class Quiet(SimpleHTTPRequestHandler):
    requested: list[str] = []  # noqa: RUF012 - one server per test, reset by the fixture

    def do_GET(self) -> None:
        Quiet.requested.append(self.path)
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def feed_dir(tmp_path: Path) -> Path:
    root = tmp_path / "feed"
    root.mkdir()
    samples = shared_data() / "intel" / "misp-pymisp"
    shutil.copy(samples / "existing_event.json", root / f"{SEDNIT}.json")  # a small file, copied to a temp dir
    shutil.copy(samples / f"{XORIST}.json", root / f"{XORIST}.json")
    write_manifest(root, {XORIST: 1472541011, SEDNIT: 1513948642})
    return root


def write_manifest(root: Path, events: dict[str, int]) -> None:
    manifest = {uid: {"info": f"event {uid[:4]}", "timestamp": str(ts)} for uid, ts in events.items()}
    (root / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture
def feed_url(feed_dir: Path) -> Iterator[str]:
    Quiet.requested = []
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(feed_dir)))) as port:
        yield f"http://127.0.0.1:{port}/"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    with open_store(f"sqlite:///{tmp_path / 'store.db'}") as s:
        yield s


def polling(url: str, store: SqlStore, state: Path) -> MISPFeedPolling:
    return MISPFeedPolling(FeedURLSettings("circl", url, FeedFormat.MISP_FEED), store, state, Clock())


def test_a_pull_stores_the_events_and_the_next_pull_fetches_only_what_changed(
    store: SqlStore, feed_url: str, feed_dir: Path, tmp_path: Path
) -> None:
    assert sednit_indicators() > 20  # the comparisons below mean something
    pull = polling(feed_url, store, tmp_path / "state")
    assert pull() == sednit_indicators()
    assert len(store.indicators(source="circl")) == sednit_indicators()
    assert Quiet.requested == ["/manifest.json", f"/{XORIST}.json", f"/{SEDNIT}.json"], "oldest first"

    Quiet.requested = []
    assert pull() == 0
    assert Quiet.requested == ["/manifest.json"], "nothing changed: no event fetched again"

    # a restarted service (a new duty object) resumes from the position file, not from the start
    write_manifest(feed_dir, {XORIST: 1472541011, SEDNIT: 1600000000})
    Quiet.requested = []
    assert polling(feed_url, store, tmp_path / "state")() == sednit_indicators()
    assert Quiet.requested == ["/manifest.json", f"/{SEDNIT}.json"]


def test_a_bad_event_stores_nothing_of_itself_is_reported_once_and_the_rest_is_kept(
    store: SqlStore, feed_url: str, feed_dir: Path, tmp_path: Path
) -> None:
    (feed_dir / f"{BROKEN}.json").write_text('{"Event": {"info": "x", "Attribute": [{"type": "ip-dst"}]}}')
    write_manifest(feed_dir, {BROKEN: 1400000000, SEDNIT: 1513948642})
    pull = polling(feed_url, store, tmp_path / "state")
    with pytest.raises(InputError) as caught:
        pull()
    assert f"{BROKEN}.json" in str(caught.value), "the error names the event file"
    assert len(store.indicators(source="circl")) == sednit_indicators(), "the good event is kept"
    pull.backoff.succeeded()  # the next turn, not skipped by the backoff
    Quiet.requested = []
    assert pull() == 0
    assert Quiet.requested == ["/manifest.json"], "reported once: the position moved past it"


def test_a_bad_manifest_or_an_unreachable_event_stores_nothing_more(
    store: SqlStore, feed_url: str, feed_dir: Path, tmp_path: Path
) -> None:
    (feed_dir / "manifest.json").write_text('{"not-a-uuid": {"info": "x"}}')
    with pytest.raises(InputError, match="not-a-uuid"):
        polling(feed_url, store, tmp_path / "state")()
    assert store.indicators(source="circl") == []

    write_manifest(feed_dir, {SEDNIT: 1513948642, BROKEN: 1700000000})  # BROKEN.json does not exist: 404
    pull = polling(feed_url, store, tmp_path / "state")
    with pytest.raises(BackendUnavailableError, match="404"):
        pull()
    assert len(store.indicators(source="circl")) == sednit_indicators(), "what came before the failure is stored"
    position = json.loads((tmp_path / "state" / "misp-circl.json").read_text())
    assert position["timestamp"].startswith("2017-12-22"), "the position stops before the event that failed"


def test_the_settings_make_a_misp_feed_a_polling_duty(store: SqlStore, tmp_path: Path) -> None:
    feeds = (FeedURLSettings("circl", "http://127.0.0.1:9/", FeedFormat.MISP_FEED),)
    names = [d.name for d in intel_duties(store, build_detectors(), IntelSettings(feeds=feeds), clock=Clock())]
    assert names == ["intel.refresh", "intel.feed.circl"]
    duty = intel_duties(store, build_detectors(), IntelSettings(feeds=feeds), clock=Clock())[1]
    assert getattr(duty.run, "__self__", None).__class__ is MISPFeedPolling


def test_the_settings_file_accepts_misp_feed_and_names_the_choices_otherwise() -> None:
    settings = parse_settings_text(
        "intel:\n  feeds:\n    - {name: circl, url: 'http://127.0.0.1:9/', format: misp-feed}\n", "s.yaml"
    )
    assert settings.intel.feeds[0].format is FeedFormat.MISP_FEED
    with pytest.raises(InputError, match="misp-feed"):
        parse_settings_text(
            "intel:\n  feeds:\n    - {name: x, url: 'http://127.0.0.1:9/', format: mispfeed}\n", "s.yaml"
        )
