"""The running service's intel duties: refresh from the store with a retro-hunt, and scheduled feed URLs."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from tests.factories import make_flow
from tests.httpserve import serving
from vmshadow.adapters.sql import SqlStore, open_store
from vmshadow.analysis.registry import build_detectors
from vmshadow.app.intel_refresh import FeedFetching, IntelRefresh, intel_duties
from vmshadow.config.intel_settings import FeedFormat, FeedURLSettings, IntelSettings
from vmshadow.domain.errors import BackendUnavailableError, InputError
from vmshadow.domain.finding import Finding
from vmshadow.domain.indicator import Indicator, IndicatorType
from vmshadow.domain.proposal import Proposal

T0 = datetime(2026, 5, 1, 12, tzinfo=UTC)
C2 = "203.0.113.9"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    with open_store(f"sqlite:///{tmp_path / 'store.db'}") as s:
        yield s


def c2(**kw: object) -> Indicator:
    return Indicator(IndicatorType.IPV4, C2, "feed", confidence=90, **kw)  # type: ignore[arg-type]


def contact(n: int, at: datetime) -> object:
    return make_flow(
        n,
        src_vmn="vm1",
        dst_ip=ipaddress.ip_address(C2),
        first_seen_at=at - timedelta(seconds=1),
        last_seen_at=at,
    )


def test_new_indicators_reach_the_detector_and_hunt_the_archive(store: SqlStore) -> None:
    clock = Clock()
    detectors = build_detectors()
    handed: list[tuple[list[Finding], list[Proposal]]] = []
    refresh = IntelRefresh(
        store, detectors, IntelSettings(), clock=clock, on_stored=lambda f, p: handed.append((list(f), list(p)))
    )
    store.save_batch(flows=[contact(1, T0 - timedelta(minutes=20))])  # contacted before anyone knew
    assert refresh().loaded == 0

    clock.now = T0 + timedelta(seconds=30)
    store.save_indicators([c2()], at=clock.now)
    report = refresh()
    assert report.loaded == 1
    (finding,) = report.hunt.findings
    assert finding.measured["retro_hunt"] == 1
    assert finding.observed_at == T0 - timedelta(minutes=20), "back-dated to the contact"
    assert store.finding(finding.id) is not None
    assert any(p.rule is not None for p in report.hunt.proposals), "a contact 20 minutes ago looks ongoing"
    assert handed == [(list(report.hunt.findings), list(report.hunt.proposals))]

    match = next(d for d in detectors if d.name == "intel.match")
    assert match.observe(contact(2, clock.now)), "the running detector knows the indicator now"

    clock.now += timedelta(seconds=30)
    again = refresh()
    assert again.loaded == 0, "what was loaded is not loaded (and hunted) twice"
    assert again.hunt.findings == ()


def test_a_revocation_reaches_the_running_detector(store: SqlStore) -> None:
    clock = Clock()
    store.save_indicators([c2()], at=T0 - timedelta(hours=1))
    detectors = build_detectors()
    refresh = IntelRefresh(store, detectors, IntelSettings(), clock=clock)
    refresh.detector.reload(store.indicators(at=T0))  # as the service does at start
    assert refresh.detector.observe(contact(1, T0))
    clock.now = T0 + timedelta(seconds=30)
    store.save_indicators([c2(revoked=True)], at=clock.now)
    assert refresh().loaded == 1
    assert refresh.detector.observe(contact(2, clock.now + timedelta(hours=2))) == []


def test_a_full_reload_drops_what_left_the_store(store: SqlStore) -> None:
    clock = Clock()
    store.save_indicators([c2(valid_until=T0 + timedelta(minutes=5))], at=T0)
    refresh = IntelRefresh(store, build_detectors(), IntelSettings(full_reload_s=60), clock=clock)
    refresh.detector.reload(store.indicators(at=T0))
    clock.now = T0 + timedelta(minutes=10)
    store.expire_indicators(clock.now)
    assert refresh().reloaded == 0
    assert len(refresh.detector.index) == 0


def test_a_service_without_intel_match_is_told_so(store: SqlStore) -> None:
    with pytest.raises(InputError, match=r"no intel\.match"):
        IntelRefresh(store, build_detectors(names=["hunting.port_scan"]), IntelSettings(), clock=Clock())


def test_duties_follow_the_settings(store: SqlStore) -> None:
    settings = IntelSettings(feeds=(FeedURLSettings("block", "http://127.0.0.1:9/l.txt", every_s=600),))
    duties = intel_duties(store, build_detectors(), settings, clock=Clock())
    assert [(d.name, d.every_s) for d in duties] == [("intel.refresh", 30.0), ("intel.feed.block", 600)]


# --- feed URLs, served on loopback ---


class Served:
    body = b""
    status = 200
    requests: ClassVar[list[dict[str, str]]] = []


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        Served.requests.append(dict(self.headers))
        if self.headers.get("If-None-Match") == '"v1"' and Served.status == 200:
            self.send_response(304)
            self.end_headers()
            return
        self.send_response(Served.status)
        self.send_header("ETag", '"v1"')
        self.send_header("Content-Length", str(len(Served.body)))
        self.end_headers()
        self.wfile.write(Served.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def feed_url() -> Iterator[str]:
    Served.body, Served.status, Served.requests = b"", 200, []
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), _Handler)) as port:
        yield f"http://127.0.0.1:{port}/list.txt"


def test_a_feed_url_is_stored_and_not_read_again_while_unchanged(store: SqlStore, feed_url: str) -> None:
    Served.body = b"# list\n203.0.113.9\nevil.example\n198.51.100.0/24\n"
    fetch = FeedFetching(FeedURLSettings("block", feed_url, FeedFormat.LIST), store, Clock())
    assert fetch() == 3
    assert sorted(i.value for i in store.indicators(source="block")) == [
        "198.51.100.0/24",
        "203.0.113.9",
        "evil.example",
    ]
    assert fetch() == 0, "304 Not Modified"
    assert Served.requests[-1].get("If-None-Match") == '"v1"'


def test_a_bad_feed_document_stores_nothing_and_a_failing_feed_is_asked_less_often(
    store: SqlStore, feed_url: str
) -> None:
    Served.body = b"203.0.113.9\nnot a value at all\n"
    fetch = FeedFetching(FeedURLSettings("block", feed_url, FeedFormat.LIST), store, Clock())
    with pytest.raises(InputError, match="block:2: expected one value per line"):
        fetch()
    assert store.indicators() == []
    Served.status = 500
    fetch.backoff.succeeded()
    asked = len(Served.requests)
    outcomes = []
    for _ in range(5):
        try:
            outcomes.append(fetch())
        except BackendUnavailableError:
            outcomes.append("failed")
    # fail, skip 1, fail, skip 3
    assert outcomes == ["failed", 0, "failed", 0, 0]
    assert len(Served.requests) - asked == 2
