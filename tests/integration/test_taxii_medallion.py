"""TAXII 2.1 polling against a real server: medallion on 127.0.0.1, its memory backend loaded with OASIS samples.

The server is started by the fixture on a free loopback port and stopped at the end; every wait is bounded.
Incremental polling: a first poll reads the collection, objects added afterwards come back alone on the next poll
(``added_after`` = the server's ``X-TAXII-Date-Added-Last``), and a poll with nothing new returns nothing.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from taxii2client.v21 import Collection

from tests.datadir import shared_data
from vmshadow.domain.errors import BackendUnavailableError, InputError
from vmshadow.domain.indicator import IndicatorType
from vmshadow.intel.taxii import TAXIICursor, TAXIIPoller

STIX = shared_data() / "intel" / "stix2-oasis"
API_ROOT = "vmshadow"
COLLECTION_ID = "91a7b528-80eb-42ed-a74d-c6fbd5a26116"
USER, PASSWORD = "feed-reader", "s3cret-for-tests"
LOADED_AT = "2020-01-01T00:00:00.000000Z"
STARTUP_S = 20.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _objects(name: str) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = json.loads((STIX / name).read_text(encoding="utf-8"))["objects"]
    return objects


def _server_data(base: str) -> dict[str, Any]:
    # SDOs and SROs only: medallion versions an object by modified/created, which SCOs do not have
    samples = _objects("indicator-for-c2-ip-address.json") + _objects("threat-reports__apt1.json")
    objects = [o for o in samples if "created" in o]
    manifest = [
        {
            "id": o["id"],
            "date_added": LOADED_AT,
            "version": o.get("modified", o.get("created")),
            "media_type": "application/stix+json;version=2.1",
        }
        for o in objects
    ]
    return {
        "/discovery": {
            "title": "vmshadow test TAXII",
            "default": f"{base}/{API_ROOT}/",
            "api_roots": [f"{base}/{API_ROOT}/"],
        },
        API_ROOT: {
            "information": {
                "title": "test root",
                "versions": ["application/taxii+json;version=2.1"],
                "max_content_length": 9765625,
            },
            "status": [],
            "collections": [
                {
                    "id": COLLECTION_ID,
                    "title": "OASIS samples",
                    "can_read": True,
                    "can_write": True,
                    "media_types": ["application/stix+json;version=2.1"],
                    "objects": objects,
                    "manifest": manifest,
                }
            ],
        },
    }


def _wait_for_port(port: int, process: subprocess.Popen[bytes], deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"medallion exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            time.sleep(0.1)
        else:
            return
    raise RuntimeError(f"medallion did not listen on 127.0.0.1:{port} within {deadline_s} s")


@pytest.fixture
def taxii_server(tmp_path: Path) -> Iterator[str]:
    """The collection URL of a medallion server started for this test."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    data = tmp_path / "data.json"
    data.write_text(json.dumps(_server_data(base)), encoding="utf-8")
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "backend": {
                    "module": "medallion.backends.memory_backend",
                    "module_class": "MemoryBackend",
                    "filename": str(data),
                },
                "users": {USER: PASSWORD},
                "taxii": {"max_page_size": 100},
            }
        ),
        encoding="utf-8",
    )
    medallion = Path(sys.executable).with_name("medallion")
    log = (tmp_path / "medallion.log").open("wb")
    process = subprocess.Popen(
        [str(medallion), "--host", "127.0.0.1", "--port", str(port), "--log-level", "WARN", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for_port(port, process, STARTUP_S)
        yield f"{base}/{API_ROOT}/collections/{COLLECTION_ID}/"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def _add(collection_url: str, objects: list[dict[str, Any]]) -> None:
    collection = Collection(collection_url, user=USER, password=PASSWORD)
    try:
        envelope = {"objects": objects}
        status = collection.add_objects(json.dumps(envelope))
        assert status.status == "complete", status
        assert status.success_count == len(objects)
    finally:
        collection.close()


@pytest.mark.timeout(60)
def test_incremental_polling_returns_only_what_was_added(taxii_server: str) -> None:
    poller = TAXIIPoller(taxii_server, source="oasis-taxii", user=USER, password=PASSWORD, page_size=20, timeout_s=10)
    try:
        first = poller.poll()
        assert first.errors == []
        # 1 from the C2 sample + 7 from APT1 (4 CIDRs, 3 domains); APT1's 3 hashes and 2 certificates skipped
        assert len(first.indicators) == 8
        assert len(first.skipped) == 5
        assert {i.source for i in first.indicators} == {"oasis-taxii"}
        assert {"223.166.0.0/15", "hugesoft.org", "10.0.0.0"} <= {i.value for i in first.indicators}
        assert poller.cursor.added_after == LOADED_AT  # the server's X-TAXII-Date-Added-Last, kept verbatim

        saved = poller.cursor.to_dict()
        new = _objects("indicators-for-C2-with-COA.json")
        _add(taxii_server, new)

        # a new poller from the persisted cursor, as a restarted service would build it
        resumed = TAXIIPoller(
            taxii_server, user=USER, password=PASSWORD, cursor=TAXIICursor.from_dict(saved), timeout_s=10
        )
        try:
            second = resumed.poll()
            assert second.errors == []
            assert [(i.type, i.value, i.external_id) for i in second.indicators] == [
                (IndicatorType.IPV4, "10.0.0.0", "indicator--53fe3b22-0201-47cf-85d0-97c02164528d")
            ]
            assert len(second.skipped) == 1  # the SHA-256 file indicator
            assert resumed.cursor.added_after != saved["added_after"]

            third = resumed.poll()
            assert (third.indicators, third.errors, third.skipped) == ([], [], [])
        finally:
            resumed.close()
    finally:
        poller.close()


@pytest.mark.timeout(30)
def test_wrong_password_is_an_input_error_naming_the_credentials(taxii_server: str) -> None:
    sleeps: list[float] = []
    poller = TAXIIPoller(taxii_server, user=USER, password="wrong", sleep=sleeps.append, timeout_s=10)
    with pytest.raises(InputError) as raised:
        poller.poll()
    poller.close()
    assert raised.value.issues[0].field == "credentials"
    assert sleeps == []  # a refusal is not retried


@pytest.mark.timeout(30)
def test_unreachable_server_is_retried_with_backoff_then_unavailable() -> None:
    port = _free_port()  # nothing listens there
    sleeps: list[float] = []
    poller = TAXIIPoller(
        f"http://127.0.0.1:{port}/{API_ROOT}/collections/{COLLECTION_ID}/",
        retries=3,
        backoff_s=0.5,
        max_backoff_s=1.5,
        sleep=sleeps.append,
        timeout_s=2,
    )
    with pytest.raises(BackendUnavailableError, match="cannot reach the TAXII server"):
        poller.poll()
    poller.close()
    assert sleeps == [0.5, 1.0, 1.5]


class _Flaky(BaseHTTPRequestHandler):
    """Answers 503 to the first requests, then a TAXII collection and an empty envelope."""

    failures_left = 2

    def do_GET(self) -> None:
        if _Flaky.failures_left > 0:
            _Flaky.failures_left -= 1
            self.send_response(503)
            self.end_headers()
            return
        if self.path.split("?")[0].endswith("/objects/"):
            body: dict[str, Any] = {"more": False, "objects": []}
        else:
            body = {"id": COLLECTION_ID, "title": "flaky", "can_read": True, "can_write": False}
        payload = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/taxii+json;version=2.1")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return


@pytest.mark.timeout(30)
def test_5xx_answers_are_retried() -> None:
    _Flaky.failures_left = 2
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        sleeps: list[float] = []
        url = f"http://127.0.0.1:{server.server_address[1]}/{API_ROOT}/collections/{COLLECTION_ID}/"
        poller = TAXIIPoller(url, retries=3, backoff_s=0.25, sleep=sleeps.append, timeout_s=5)
        result = poller.poll()
        poller.close()
        assert (result.indicators, result.errors) == ([], [])
        assert sleeps == [0.25, 0.5]
        assert poller.cursor.added_after is None  # no X-TAXII-Date-Added-Last: the cursor stays
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_cursor_round_trips_and_rejects_bad_input() -> None:
    cursor = TAXIICursor("http://127.0.0.1:1/r/collections/c/", "2026-01-01T00:00:00.000000Z")
    assert TAXIICursor.from_dict(cursor.to_dict()) == cursor
    with pytest.raises(InputError, match="collection_url: required"):
        TAXIICursor.from_dict({"added_after": None})
    with pytest.raises(InputError, match="added_after: expected a timestamp string"):
        TAXIICursor.from_dict({"collection_url": "http://x/", "added_after": 5})
    with pytest.raises(ValueError, match="the cursor is for"):
        TAXIIPoller("http://127.0.0.1:1/r/collections/other/", cursor=cursor)


def test_poller_repr_never_shows_the_password() -> None:
    poller = TAXIIPoller("http://127.0.0.1:1/r/collections/c", user=USER, password=PASSWORD)
    assert PASSWORD not in repr(poller)
    assert poller.collection_url.endswith("/c/")


@pytest.mark.timeout(60)
def test_scheduled_polling_stores_what_is_new_and_keeps_its_cursor_across_restarts(
    taxii_server: str, tmp_path: Path
) -> None:
    from datetime import UTC, datetime

    from vmshadow.adapters.sql import open_store
    from vmshadow.app.intel_refresh import TAXIIPolling
    from vmshadow.config.intel_settings import TAXIICollectionSettings

    settings = TAXIICollectionSettings("oasis", taxii_server, every_s=60, user=USER, password=PASSWORD)
    clock = lambda: datetime(2026, 5, 1, tzinfo=UTC)  # noqa: E731
    state = tmp_path / "state"
    with open_store(f"sqlite:///{tmp_path / 'store.db'}") as store:
        polling = TAXIIPolling(settings, store, state, clock, poller_options={"timeout_s": 10})
        assert polling() == 8
        assert polling.periodic().name == "intel.taxii.oasis"
        assert {i.source for i in store.indicators()} == {"oasis"}
        assert polling.cursor_path.is_file()

        _add(taxii_server, _objects("indicators-for-C2-with-COA.json"))
        restarted = TAXIIPolling(settings, store, state, clock, poller_options={"timeout_s": 10})
        assert restarted() == 1, "only what was added since the persisted cursor"
        assert restarted() == 0

        down = TAXIIPolling(
            TAXIICollectionSettings("oasis", "http://127.0.0.1:9/api/collections/x/", user=USER, password=PASSWORD),
            store,
            state,
            clock,
            poller_options={"timeout_s": 1, "retries": 0},
        )
        with pytest.raises(BackendUnavailableError):
            down()
        assert down() == 0, "after a failure the next turn is skipped"
