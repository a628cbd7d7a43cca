"""The settings file wired through: findings and proposals reach a sink through the exporter, `vmshadow export
test` reports what a sink did, `/metrics` shows the queues, and never-block guard-rails reach the recommenders."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.datadir import REPO_ROOT, shared_data
from tests.integration.labkit import wait_for
from tests.unit.export.receivers import WebhookReceiver
from vmshadow.adapters.sql import open_store
from vmshadow.analysis.detector import DetectorContext
from vmshadow.analysis.registry import build_detectors
from vmshadow.api.app import create_app
from vmshadow.api.auth import Principal, Role, Tokens, token_digest
from vmshadow.app.embedded import EmbeddedService, Periodic
from vmshadow.app.export_audit import AuditExport
from vmshadow.app.exporting import Exporter, events_of
from vmshadow.app.offline import analyze_captures
from vmshadow.app.tm import TMSettings
from vmshadow.config.settings import load_settings, parse_settings_text
from vmshadow.config.tmr_file import load_tmr_file
from vmshadow.domain.finding import Finding
from vmshadow.domain.flow import Flow
from vmshadow.domain.proposal import Proposal
from vmshadow.export.event import EventKind, sample_event
from vmshadow.export.sinks import SIGNATURE_HEADER, verify_signature
from vmshadow.flows.pcap import PcapSource
from vmshadow.refinement.recommender import recommender_types

EXAMPLE_RULES = REPO_ROOT / "examples" / "tmrs.yaml"
SSH_GUESS = "zeek/traces/ssh/sshguess.pcap"
SYNSCAN = "ndpi/pcap/synscan.pcap"
SECRET_ENV = "VMSHADOW_TEST_HOOK_SECRET"


def vmshadow(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vmshadow", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )


def file_sink_settings(tmp_path: Path, *, extra: str = "") -> Path:
    path = tmp_path / "settings.yaml"
    path.write_text(
        textwrap.dedent(f"""\
            export:
              queue_dir: {tmp_path / "queues"}
              sinks:
                - name: jsonl
                  type: file
                  file: {{path: {tmp_path / "events.jsonl"}}}
            """)
        + extra
    )
    return path


def ecs_ids(path: Path) -> list[str]:
    return [json.loads(line)["event"]["id"] for line in path.read_text().splitlines()]


def test_findings_and_proposals_of_a_capture_reach_a_file_sink(tmp_path: Path) -> None:
    settings = load_settings(file_sink_settings(tmp_path))
    report = analyze_captures(
        [shared_data() / SSH_GUESS], load_tmr_file(EXAMPLE_RULES), now=datetime.now(UTC), guard_rails=None
    )
    assert report.findings
    assert report.proposals
    expected = [e.id for e in events_of(report.findings, report.proposals)]
    with Exporter(settings.export) as exporter:
        assert exporter.publish_stored(report.findings, report.proposals) == {"jsonl": len(expected)}
        assert exporter.stats()["jsonl"].depth == len(expected)  # stored before anything is delivered
        reports = exporter.drain(timeout_s=10)
        assert reports["jsonl"].delivered == len(expected)
        stats = exporter.stats()["jsonl"]
    assert (stats.depth, stats.delivered, stats.failures, stats.duplicates) == (0, len(expected), 0, 0)
    assert ecs_ids(tmp_path / "events.jsonl") == expected
    assert (tmp_path / "queues" / "jsonl.db").is_file()


def test_the_delivery_thread_drains_what_is_published_and_filters_apply(tmp_path: Path) -> None:
    text = textwrap.dedent(f"""\
        export:
          queue_dir: {tmp_path / "queues"}
          sinks:
            - name: findings
              type: file
              filter: {{kinds: [finding]}}
              file: {{path: {tmp_path / "findings.jsonl"}}}
            - name: proposals
              type: file
              filter: {{kinds: [proposal], min_severity: medium}}
              file: {{path: {tmp_path / "proposals.jsonl"}}}
            - name: high
              type: file
              filter: {{min_severity: high}}
              file: {{path: {tmp_path / "high.jsonl"}}}
        """)
    settings = parse_settings_text(text, "settings.yaml")
    report = analyze_captures([shared_data() / SSH_GUESS], load_tmr_file(EXAMPLE_RULES), now=datetime.now(UTC))
    events = events_of(report.findings, report.proposals)
    findings = [e.id for e in events if e.kind is EventKind.FINDING]
    proposals = [e.id for e in events if e.kind is EventKind.PROPOSAL]
    assert findings
    assert proposals
    assert all(e.severity.rank < 3 for e in events)  # nothing here is high: the third sink takes nothing
    exporter = Exporter(settings.export)
    try:
        exporter.start()
        assert exporter.publish(events) == {"findings": len(findings), "proposals": len(proposals), "high": 0}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(s.delivered < s.enqueued for s in exporter.stats().values()):
            time.sleep(0.05)
        stats = exporter.stats()
    finally:
        exporter.close()
    assert {name: (s.depth, s.delivered) for name, s in stats.items()} == {
        "findings": (0, len(findings)),
        "proposals": (0, len(proposals)),
        "high": (0, 0),
    }
    assert ecs_ids(tmp_path / "findings.jsonl") == findings
    assert ecs_ids(tmp_path / "proposals.jsonl") == proposals
    assert not (tmp_path / "high.jsonl").exists()


def test_analyze_with_settings_exports_what_it_found(tmp_path: Path) -> None:
    settings = file_sink_settings(tmp_path)
    result = vmshadow("analyze", shared_data() / SSH_GUESS, "--rules", EXAMPLE_RULES, "--settings", settings, "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["export"]["jsonl"]["depth"] == 0
    ids = ecs_ids(tmp_path / "events.jsonl")
    assert len(ids) == out["export"]["jsonl"]["delivered"] == len(out["findings"]) + len(out["proposals"])


def test_export_test_through_a_file_sink(tmp_path: Path) -> None:
    settings = file_sink_settings(tmp_path)
    result = vmshadow("export", "test", "jsonl", "--settings", settings, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["delivered"] is True
    assert report["error"] is None
    (line,) = (tmp_path / "events.jsonl").read_text().splitlines()
    document = json.loads(line)
    assert document["event"]["id"] == report["event_id"]
    assert document["rule"]["id"] == "export.test"
    assert not (tmp_path / "queues").exists()  # straight through the sink, no queue


def test_export_test_against_a_webhook_answering_500_is_a_retryable_failure(tmp_path: Path) -> None:
    with WebhookReceiver(statuses=[500] * 10) as receiver:
        settings = tmp_path / "settings.yaml"
        settings.write_text(
            textwrap.dedent(f"""\
                export:
                  queue_dir: {tmp_path / "queues"}
                  sinks:
                    - name: hook
                      type: webhook
                      webhook: {{url: "{receiver.url}", secret_env: {SECRET_ENV}, timeout_s: 2, retries: 1}}
                """)
        )
        result = vmshadow("export", "test", "hook", "--settings", settings, "--json", env={SECRET_ENV: "k"})
        requests = len(receiver.requests)
    assert result.returncode == 3, result.stderr
    report = json.loads(result.stdout)
    assert report["delivered"] is False
    assert report["retryable"] is True
    assert "HTTP 500" in report["error"]
    assert requests == 2  # one retry, as configured

    human = vmshadow("export", "test", "hook", "--settings", settings, env={SECRET_ENV: "k"})
    assert human.returncode == 3
    assert "not delivered (retryable" in human.stderr


def test_export_test_names_the_problem_in_the_settings(tmp_path: Path) -> None:
    settings = file_sink_settings(tmp_path)
    unknown = vmshadow("export", "test", "nope", "--settings", settings)
    assert unknown.returncode == 2
    assert "no sink named 'nope'; sinks: jsonl" in unknown.stderr
    hook = tmp_path / "hook.yaml"
    hook.write_text(
        "export:\n  sinks:\n    - {name: h, type: webhook, webhook: {url: 'http://127.0.0.1:9', secret_env: UNSET_Q}}\n"
    )
    missing = vmshadow("export", "test", "h", "--settings", hook, env={"UNSET_Q": ""})
    assert missing.returncode == 2
    assert f"{hook}:3: export.sinks[0].webhook.secret_env: environment variable UNSET_Q is not set" in missing.stderr


def test_a_deny_that_would_hit_a_never_block_network_becomes_an_alert_with_the_reason(tmp_path: Path) -> None:
    plain = vmshadow("analyze", shared_data() / SYNSCAN, "--rules", EXAMPLE_RULES, "--json")
    assert plain.returncode == 0, plain.stderr
    # the scan's deny (an anomaly alert on one of its flows may stand beside it)
    assert [p["kind"] for p in json.loads(plain.stdout)["proposals"] if p["kind"] != "alert"] == ["add_deny"]
    settings = tmp_path / "settings.yaml"
    settings.write_text("guard_rails:\n  never_block:\n    - {network: 64.13.134.52/32, label: scanme}\n")
    guarded = vmshadow("analyze", shared_data() / SYNSCAN, "--rules", EXAMPLE_RULES, "--settings", settings, "--json")
    assert guarded.returncode == 0, guarded.stderr
    proposals = json.loads(guarded.stdout)["proposals"]
    assert [p["kind"] for p in proposals if p["kind"] != "alert"] == []
    (alert,) = [p for p in proposals if "refused by guard-rails" in p["summary"]]
    assert alert["rule"] is None
    assert "refused by guard-rails (never_block:" in alert["summary"]
    assert "64.13.134.52/32 (scanme)" in alert["summary"]


def test_bad_settings_stop_analyze_before_anything_runs(tmp_path: Path) -> None:
    settings = tmp_path / "settings.yaml"
    settings.write_text("guard_rails:\n  never_block: [198.18.0.2/33]\n")
    result = vmshadow("analyze", shared_data() / SSH_GUESS, "--rules", EXAMPLE_RULES, "--settings", settings)
    assert result.returncode == 2
    assert f"{settings}:2: guard_rails.never_block[0]: prefix length /33 is too long" in result.stderr


def test_metrics_show_export_queue_depth_and_failures_per_sink(tmp_path: Path) -> None:
    settings = load_settings(file_sink_settings(tmp_path))
    report = analyze_captures([shared_data() / SSH_GUESS], load_tmr_file(EXAMPLE_RULES), now=datetime.now(UTC))
    with Exporter(settings.export) as exporter:
        queued = exporter.publish_stored(report.findings, report.proposals)["jsonl"]
    db = f"sqlite:///{tmp_path / 'v.db'}"
    tokens = Tokens({token_digest("t"): Principal("prom", Role.VIEWER)})
    (sink,) = settings.export.sinks
    export = replace(settings.export, sinks=(sink, replace(sink, name="unused")))  # a queue not created yet
    app = create_app(db, TMSettings(db_url=db), tokens, status_path=tmp_path / "none.json", export=export)
    text = TestClient(app).get("/metrics", headers={"Authorization": "Bearer t"}).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("vmshadow_export_queue_depth", (("sink", "jsonl"),))] == queued > 0
    assert samples[("vmshadow_export_failures_total", (("sink", "jsonl"),))] == 0
    assert samples[("vmshadow_export_delivered_total", (("sink", "jsonl"),))] == 0
    assert samples[("vmshadow_export_queue_depth", (("sink", "unused"),))] == 0
    assert not (tmp_path / "queues" / "unused.db").exists()  # reading the metrics creates nothing


class ReplaySource:
    """A stand-in for `LiveSource`: the flows of a capture once, then nothing."""

    def __init__(self, capture: Path) -> None:
        self.pending = list(PcapSource([capture]))
        self.health: dict[str, object] = {}

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def flows(self, timeout: float | None = None) -> Iterator[Flow]:
        pending, self.pending = self.pending, []
        yield from pending

    def batches(self, timeout: float | None = None) -> Iterator[list[Flow]]:
        pending, self.pending = self.pending, []
        if pending:
            yield pending


def test_the_embedded_service_exports_what_it_stores_and_applies_the_guard_rails(tmp_path: Path) -> None:
    settings = parse_settings_text(
        textwrap.dedent(f"""\
            guard_rails:
              never_block: [{{network: 192.168.56.1/32, label: the guesser}}]
            export:
              queue_dir: {tmp_path / "queues"}
              sinks:
                - {{name: jsonl, type: file, file: {{path: {tmp_path / "events.jsonl"}}}}}
            """),
        "settings.yaml",
    )
    store = open_store(f"sqlite:///{tmp_path / 'v.db'}")
    exporter = Exporter(settings.export)
    stored: list[tuple[int, int]] = []

    def on_stored(findings: Sequence[Finding], proposals: Sequence[Proposal]) -> None:
        stored.append((len(findings), len(proposals)))
        exporter.publish_stored(findings, proposals)

    service = EmbeddedService(
        source=ReplaySource(shared_data() / SSH_GUESS),  # type: ignore[arg-type]
        store=store,
        tmrset=load_tmr_file(EXAMPLE_RULES),
        detectors=build_detectors(DetectorContext()),
        recommenders=[cls() for cls in recommender_types().values()],
        status_path=tmp_path / "status.json",
        on_stored=on_stored,
        guard_rails=settings.guard_rails,
    )
    stop = threading.Event()
    timer = threading.Timer(1.5, stop.set)
    timer.start()
    try:
        exporter.start()
        service.run(stop)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and exporter.stats()["jsonl"].depth:
            time.sleep(0.05)
    finally:
        timer.cancel()
        exporter.close()
        store.close()
    assert sum(f for f, _ in stored) >= 1
    lines = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert {d["event"]["dataset"] for d in lines} == {"vmshadow.finding", "vmshadow.proposal"}
    alerts = [d for d in lines if d["event"]["dataset"] == "vmshadow.proposal"]
    assert alerts
    assert all("refused by guard-rails (never_block:" in d["message"] for d in alerts)


def test_the_delivery_thread_retries_a_webhook_answering_500_and_the_signature_verifies(tmp_path: Path) -> None:
    with WebhookReceiver(statuses=[500, 500]) as receiver:
        text = textwrap.dedent(f"""\
            export:
              queue_dir: {tmp_path / "queues"}
              sinks:
                - name: hook
                  type: webhook
                  webhook: {{url: "{receiver.url}", secret_env: {SECRET_ENV}, timeout_s: 2, retries: 0}}
            """)
        settings = parse_settings_text(text, "settings.yaml", environ={SECRET_ENV: "shared"})
        event = sample_event(datetime.now(UTC), sink="hook")
        exporter = Exporter(settings.export)
        try:
            exporter.start()
            exporter.publish([event])
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and exporter.stats()["hook"].depth:
                time.sleep(0.05)
            stats = exporter.stats()["hook"]
        finally:
            exporter.close()
        requests = list(receiver.requests)
    assert (stats.depth, stats.delivered, stats.failures) == (0, 1, 2)
    assert stats.duplicates == 1  # the 500s reached the receiver: the event may have been seen before
    assert len(requests) == 3
    for headers, body in requests:
        assert verify_signature(b"shared", body, headers[SIGNATURE_HEADER])
        assert json.loads(body)["events"][0]["event"]["id"] == event.id


def test_close_ends_a_backoff_at_once_and_keeps_the_events(tmp_path: Path) -> None:
    text = textwrap.dedent(f"""\
        export:
          queue_dir: {tmp_path / "queues"}
          sinks:
            - {{name: away, type: syslog, syslog: {{host: 127.0.0.1, port: {free_port()}, transport: tcp}}}}
        """)
    settings = parse_settings_text(text, "settings.yaml")
    exporter = Exporter(settings.export)
    exporter.start()
    exporter.publish([sample_event(datetime.now(UTC), sink="away")])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not exporter.stats()["away"].failures:
        time.sleep(0.05)
    started = time.monotonic()
    stats = exporter.stats()["away"]
    exporter.close()
    assert time.monotonic() - started < 3
    assert stats.failures >= 1
    assert stats.last_error is not None
    assert "cannot connect" in stats.last_error
    with Exporter(settings.export) as again:  # a restart finds the event still queued
        assert again.stats()["away"].depth == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_run_refuses_bad_settings_before_it_watches_anything(tmp_path: Path) -> None:
    settings = tmp_path / "settings.yaml"
    settings.write_text(
        "export:\n  sinks:\n    - {name: s, type: syslog, syslog: {host: h, transport: carrier-pigeon}}\n"
    )
    result = vmshadow("run", "--settings", settings, "--status", tmp_path / "status.json", "--db", tmp_path / "v.db")
    assert result.returncode == 2
    assert f"{settings}:3: export.sinks[0].syslog.transport: unknown transport 'carrier-pigeon'" in result.stderr
    assert not (tmp_path / "status.json").exists()


def test_a_decision_made_in_another_process_while_the_service_runs_reaches_the_sink(tmp_path: Path) -> None:
    settings = load_settings(file_sink_settings(tmp_path))
    db = tmp_path / "v.db"
    store = open_store(f"sqlite:///{db}")
    exporter = Exporter(settings.export)
    audit = AuditExport(store, exporter.publish, tmp_path / "queues" / "audit-position.json")
    service = EmbeddedService(
        source=ReplaySource(shared_data() / SSH_GUESS),  # type: ignore[arg-type]
        store=store,
        tmrset=load_tmr_file(EXAMPLE_RULES),
        detectors=build_detectors(DetectorContext()),
        recommenders=[cls() for cls in recommender_types().values()],
        status_path=tmp_path / "status.json",
        on_stored=exporter.publish_stored,
        periodic=[Periodic("export.audit", 0.2, audit.run)],
    )
    stop = threading.Event()
    found: dict[str, object] = {}

    def decision_lines() -> list[dict[str, Any]]:
        path = tmp_path / "events.jsonl"
        lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        return [d for d in lines if d["event"]["dataset"] == "vmshadow.decision"]

    def administrator() -> None:  # the service publishes from its own thread (the queue's), as `vmshadow run` does
        try:
            proposals = wait_for(lambda: store.proposals(), timeout_s=30)
            found["approve"] = vmshadow(
                "proposals", "approve", proposals[0].id, "--reason", "seen it", "--db", db, "--actor", "eve"
            )
            found["decisions"] = wait_for(decision_lines, timeout_s=20)
        finally:
            stop.set()

    admin = threading.Thread(target=administrator)
    exporter.start()
    admin.start()
    try:
        service.run(stop)
    finally:
        stop.set()
        admin.join(timeout=60)
        exporter.close()
        store.close()
    approved = found["approve"]
    assert isinstance(approved, subprocess.CompletedProcess)
    assert approved.returncode == 0, approved.stderr
    decisions = found.get("decisions")
    assert isinstance(decisions, list), "no decision event reached the sink"
    assert len(decisions) == 1
    assert decisions[0]["event"]["action"] == "approved"
    assert "eve moved proposal" in str(decisions[0]["message"])
    assert "seen it" in str(decisions[0]["message"])
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["periodic"][0]["name"] == "export.audit"
    assert status["periodic"][0]["error"] is None


def test_export_status_shows_each_queue_and_the_audit_position(tmp_path: Path) -> None:
    settings_path = file_sink_settings(tmp_path)
    before = vmshadow("export", "status", "--settings", settings_path, "--json")
    assert before.returncode == 0, before.stderr
    document = json.loads(before.stdout)
    assert [(r["sink"], r["started"], r["depth"]) for r in document["sinks"]] == [("jsonl", False, 0)]
    assert document["audit_exported_upto"] == {"decisions": 0, "outcomes": 0}

    settings = load_settings(settings_path)
    events = [sample_event(datetime.now(UTC)), replace(sample_event(datetime.now(UTC)), id="evt-2")]
    with Exporter(settings.export) as exporter:
        exporter.publish(events)
        waiting = json.loads(vmshadow("export", "status", "--settings", settings_path, "--json").stdout)["sinks"][0]
        exporter.drain(timeout_s=10)
    sent = json.loads(vmshadow("export", "status", "--settings", settings_path, "--json").stdout)["sinks"][0]
    assert (waiting["started"], waiting["depth"], waiting["delivered"]) == (True, 2, 0)
    assert waiting["oldest_age_s"] is not None
    assert (sent["depth"], sent["delivered"], sent["failures"], sent["target"]) == (
        0,
        2,
        0,
        str(tmp_path / "events.jsonl"),
    )
    table = vmshadow("export", "status", "--settings", settings_path)
    assert table.returncode == 0
    assert "jsonl" in table.stdout
    assert "audit log exported up to decision 0, outcome 0" in table.stdout


def test_export_status_names_a_bad_settings_file(tmp_path: Path) -> None:
    bad = tmp_path / "settings.yaml"
    bad.write_text("export:\n  sinks:\n    - name: x\n      type: carrier-pigeon\n")
    result = vmshadow("export", "status", "--settings", bad)
    assert result.returncode == 2
    assert "settings.yaml:4" in result.stderr
