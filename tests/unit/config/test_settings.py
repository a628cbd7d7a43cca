"""The settings file: every problem located (file:line:field) and reported at once; a valid file compiles."""

from __future__ import annotations

import ipaddress
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from tests.datadir import REPO_ROOT
from vmshadow.config.settings import (
    FileSinkSettings,
    Settings,
    SinkType,
    SyslogMessage,
    SyslogSinkSettings,
    WebhookSinkSettings,
    load_settings,
    parse_settings_text,
)
from vmshadow.domain.errors import InputError
from vmshadow.domain.finding import Severity
from vmshadow.export.event import EventFilter, EventKind
from vmshadow.export.sinks import Transport
from vmshadow.refinement.guardrails import GuardRails, NeverBlock

ENV = {"SIEM_HOOK_SECRET": "s3cret"}


def parse(text: str, tmp_path: Path, env: dict[str, str] | None = None) -> Settings:
    return parse_settings_text(
        textwrap.dedent(text), "settings.yaml", environ=ENV if env is None else env, base=tmp_path
    )


def problems(text: str, tmp_path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(InputError) as caught:
        parse(text, tmp_path, env)
    return [str(issue) for issue in caught.value.issues]


def test_a_full_valid_file_compiles(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not read until the sink is built")
    settings = parse(
        """\
        version: 1
        guard_rails:
          never_block:
            - {network: 198.18.0.2/32, label: lab dns}
            - 10.0.0.0/8
          max_blocked_share: 0.1
          max_proposals: 7
          rate_window_s: 600
        export:
          queue_dir: q
          sinks:
            - name: jsonl
              type: file
              filter: {kinds: [finding, proposal], min_severity: medium}
              file: {path: out/events.jsonl, max_bytes: 1000, backups: 2}
            - name: rsyslog
              type: syslog
              syslog:
                host: 127.0.0.1
                transport: tls
                format: cef
                tls: {ca_file: ca.pem, server_name: siem.example}
            - name: hook
              type: webhook
              filter: {kinds: decision}
              webhook: {url: "http://127.0.0.1:9/hook", secret_env: SIEM_HOOK_SECRET, timeout_s: 2, retries: 1}
        """,
        tmp_path,
    )
    assert settings.guard_rails == GuardRails(
        never_block=(NeverBlock.of("198.18.0.2/32", "lab dns"), NeverBlock(ipaddress.ip_network("10.0.0.0/8"))),
        max_blocked_share=0.1,
        max_proposals=7,
        rate_window=timedelta(seconds=600),
    )
    export = settings.export
    assert export.queue_dir == tmp_path / "q"
    assert [s.name for s in export.sinks] == ["jsonl", "rsyslog", "hook"]
    jsonl, rsyslog, hook = export.sinks
    assert jsonl.type is SinkType.FILE
    assert jsonl.target == FileSinkSettings(tmp_path / "out" / "events.jsonl", 1000, 2)
    assert jsonl.filter == EventFilter(frozenset({EventKind.FINDING, EventKind.PROPOSAL}), Severity.MEDIUM)
    assert jsonl.line == 12
    assert export.queue_path("jsonl") == tmp_path / "q" / "jsonl.db"
    assert isinstance(rsyslog.target, SyslogSinkSettings)
    assert rsyslog.target.port == 6514  # the RFC 5425 port when transport is tls
    assert rsyslog.target.transport is Transport.TLS
    assert rsyslog.target.format is SyslogMessage.CEF
    assert rsyslog.target.tls is not None
    assert rsyslog.target.tls.ca_file == tmp_path / "ca.pem"
    assert rsyslog.target.tls.server_name == "siem.example"
    assert rsyslog.filter == EventFilter()
    assert isinstance(hook.target, WebhookSinkSettings)
    assert hook.target.secret == b"s3cret"
    assert "s3cret" not in repr(settings)  # the secret is read from the environment and never shown
    assert hook.target.retries == 1
    assert hook.filter.kinds == frozenset({EventKind.DECISION})


def test_an_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    settings = parse("# nothing yet\n", tmp_path)
    assert settings.guard_rails == GuardRails()
    assert settings.export.sinks == ()


def test_the_lab_example_compiles() -> None:
    settings = load_settings(REPO_ROOT / "examples" / "settings.yaml")
    networks = {str(n.network) for n in settings.guard_rails.never_block}
    assert networks == {"198.18.0.2/32", "198.18.0.3/32"}
    (sink,) = settings.export.sinks
    assert isinstance(sink.target, FileSinkSettings)
    assert sink.target.path.parts[-3:] == ("var", "export", "events.jsonl")


def test_every_problem_is_reported_at_once_with_its_line_and_field(tmp_path: Path) -> None:
    found = problems(
        """\
        version: 2
        guard_rails:
          never_block:
            - {network: 198.18.0.2/33, label: dns}
            - {netwrk: 1.2.3.4}
          max_blocked_share: 1.5
          rate_window_s: soon
        export:
          sinks:
            - name: a
              type: file
              file: {path: x.jsonl, max_bytes: 0}
              syslog: {host: h}
            - name: a
              type: kafka
            - name: s
              type: syslog
              filter: {kinds: [findings], min_severity: urgent}
              syslog: {host: h, port: 70000, transport: udp, tls: {ca_file: ca.pem}}
            - name: w
              type: webhook
              webhook: {url: "ftp://x", secret_env: NOT_SET, retries: 99, extra: 1}
            - name: f
              type: file
        colour: blue
        """,
        tmp_path,
    )
    expected = [
        "settings.yaml:1: version: unsupported settings version 2; this vmshadow reads version 1",
        "settings.yaml:4: guard_rails.never_block[0].network: prefix length /33 is too long for IPv4 (at most /32)",
        "settings.yaml:5: guard_rails.never_block[1].netwrk: unknown key; did you mean 'network'?",
        "settings.yaml:6: guard_rails.max_blocked_share: 1.5 is outside 0-1",
        "settings.yaml:7: guard_rails.rate_window_s: expected a number, found text ('soon')",
        "settings.yaml:12: export.sinks[0].file.max_bytes: 0 is outside 1-1099511627776",
        "settings.yaml:13: export.sinks[0].syslog: a syslog section in a sink of type file; remove it",
        "settings.yaml:14: export.sinks[1].name: duplicate sink name 'a'; first used at line 10",
        "settings.yaml:15: export.sinks[1].type: unknown sink type 'kafka'; expected one of: file, syslog, webhook",
        "settings.yaml:18: export.sinks[2].filter.kinds[0]: unknown event kind 'findings'; "
        "expected one of: finding, proposal, decision, outcome",
        "settings.yaml:18: export.sinks[2].filter.min_severity: unknown severity 'urgent'; "
        "expected one of: info, low, medium, high, critical",
        "settings.yaml:19: export.sinks[2].syslog.port: 70000 is outside 1-65535",
        "settings.yaml:19: export.sinks[2].syslog.tls: tls options need transport tls; this sink's transport is udp",
        "settings.yaml:22: export.sinks[3].webhook.extra: unknown key; expected one of: url, secret_env, timeout_s, "
        "retries",
        "settings.yaml:22: export.sinks[3].webhook.url: 'ftp://x' is not an http:// or https:// URL",
        "settings.yaml:22: export.sinks[3].webhook.secret_env: environment variable NOT_SET is not set or empty; "
        "it must hold the HMAC secret",
        "settings.yaml:22: export.sinks[3].webhook.retries: 99 is outside 0-20",
        "settings.yaml:23: export.sinks[4].file: required field is missing: a sink of type file needs a file section",
        "settings.yaml:25: colour: unknown key; expected one of: version, guard_rails, refinement, export, intel",
    ]
    assert found == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "export: {sinks: [{name: ../x, type: file, file: {path: a}}]}\n",
            "export.sinks[0].name: '../x' is not a valid sink name",
        ),
        ("export: {sinks: {name: x}}\n", "export.sinks: expected a list of sinks; found a mapping"),
        (
            "export:\n  sinks:\n    - {name: t, type: syslog,\n"
            "       syslog: {host: h, transport: tls, tls: {ca_file: missing.pem}}}\n",
            "export.sinks[0].syslog.tls.ca_file: ",
        ),
        (
            "export:\n  sinks:\n    - {name: t, type: syslog,\n"
            "       syslog: {host: h, transport: tls, tls: {key_file: k.pem}}}\n",
            "export.sinks[0].syslog.tls.key_file: a key_file needs the cert_file it belongs to",
        ),
        (
            "export:\n  sinks:\n    - {name: w, type: webhook, webhook: {url: 'http://h', secret_env: 'my secret'}}\n",
            "secret_env: 'my secret' is not an environment variable name",
        ),
        ("export:\n  sinks:\n    - {name: f, type: file, filter: {kinds: []}, file: {path: a}}\n", "kinds: empty list"),
        ("guard_rails: {max_proposals: -1}\n", "guard_rails.max_proposals: -1 is outside 0-1000000"),
        ("guard_rails: [1]\n", "guard_rails: expected a mapping"),
        ("export:\n  sinks:\n    - {type: file, file: {path: a}}\n", "export.sinks[0].name: required field is missing"),
    ],
)
def test_bad_values_are_located(tmp_path: Path, text: str, message: str) -> None:
    found = problems(text, tmp_path)
    assert any(message in line for line in found), found
    assert all(line.startswith("settings.yaml:") for line in found)


def test_nothing_is_half_loaded_and_a_missing_file_says_why(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read the file"):
        load_settings(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("guard_rails: {never_block: [198.18.0.2]}\nexport: {sinks: [{name: x, type: nope}]}\n")
    with pytest.raises(InputError) as caught:
        load_settings(bad)
    assert [i.line for i in caught.value.issues] == [2]


def test_secrets_can_be_left_unread_for_stats_readers(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "export:\n  sinks:\n    - {name: w, type: webhook, webhook: {url: 'http://h', secret_env: UNSET_X}}\n"
    )
    with pytest.raises(InputError, match="UNSET_X is not set"):
        load_settings(path, environ={})
    settings = load_settings(path, resolve_secrets=False)
    (sink,) = settings.export.sinks
    assert isinstance(sink.target, WebhookSinkSettings)
    assert sink.target.secret is None


def test_the_impact_window_defaults_to_a_day_and_can_be_set(tmp_path: Path) -> None:
    assert parse("# nothing\n", tmp_path).refinement.impact_window == timedelta(hours=24)
    settings = parse("refinement: {impact_window_s: 3600}\n", tmp_path)
    assert settings.refinement.impact_window == timedelta(hours=1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("refinement: {impact_window_s: 0}\n", "refinement.impact_window_s: 0 is outside 1-"),
        ("refinement: {impact_window_s: a day}\n", "refinement.impact_window_s: expected a number"),
        ("refinement: {impact_window: 3600}\n", "refinement"),
        ("refinement: [1]\n", "refinement: expected a mapping"),
    ],
)
def test_a_bad_refinement_section_is_located(tmp_path: Path, text: str, message: str) -> None:
    found = problems(text, tmp_path)
    assert any(message in line for line in found), found
    assert all(line.startswith("settings.yaml:1:") for line in found)


# --- intel ---


def test_the_intel_section_compiles_with_policy_refresh_taxii_and_feeds(tmp_path: Path) -> None:
    text = """\
intel:
  refresh_s: 5
  retro_hunt_hours: 48
  min_confidence: 20
  default: {trust: 0.9}
  sources:
    - {source: "ipsum*", trust: 0.5, half_life_days: 7}
  state_dir: state
  taxii:
    - {name: cti, url: "http://127.0.0.1:5000/api/collections/x/", user: u, password_env: TAXII_PW, every_s: 60}
  feeds:
    - {name: block, url: "http://127.0.0.1:8000/list.txt", format: list, every_s: 600}
"""
    settings = parse_settings_text(text, "settings.yaml", environ={"TAXII_PW": "pw"}, base=tmp_path)
    intel = settings.intel
    assert intel.refresh_s == 5
    assert intel.retro_hunt == timedelta(hours=48)
    assert intel.policy.min_confidence == 20
    assert intel.policy.for_source("ipsum/level3.txt").trust == 0.5
    assert intel.policy.for_source("ipsum/level3.txt").half_life == timedelta(days=7)
    assert intel.policy.for_source("other").trust == 0.9
    assert intel.state_dir == tmp_path / "state"
    (taxii,) = intel.taxii
    assert (taxii.name, taxii.user, taxii.password, taxii.every_s) == ("cti", "u", "pw", 60)
    (feed,) = intel.feeds
    assert (feed.name, str(feed.format), feed.every_s) == ("block", "list", 600)


def test_no_intel_section_gives_a_neutral_policy() -> None:
    settings = parse_settings_text("version: 1\n", "settings.yaml")
    assert settings.intel.policy.is_neutral
    assert settings.intel.taxii == ()


def test_every_intel_problem_is_located() -> None:
    text = """\
intel:
  refresh_s: 0
  sources:
    - {source: x, trust: 2}
  taxii:
    - {name: a, url: "ftp://x", password_env: MISSING_PW}
  feeds:
    - {name: a, url: "http://x/l.txt", format: csv}
"""
    with pytest.raises(InputError) as caught:
        parse_settings_text(text, "settings.yaml", environ={})
    found = str(caught.value)
    for expected in (
        "settings.yaml:2: intel.refresh_s: 0 is outside 0.1-",
        "settings.yaml:4: intel.sources[0].trust: 2 is outside 0-1",
        "intel.taxii[0].url: 'ftp://x' is not an http:// or https:// URL",
        "intel.taxii[0].password_env: environment variable MISSING_PW is not set",
        "intel.feeds[0].format: unknown feed format 'csv'",
    ):
        assert expected in found, f"{expected!r} not in {found}"
