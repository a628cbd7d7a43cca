"""A real rsyslog (Debian's rsyslogd) receives vmshadow's syslog export over UDP, TCP and TLS.

The test writes rsyslog's configuration into tmp_path (its own work dir, no system config), listens on loopback
ports chosen free at run time, makes a test CA, a server certificate and a client certificate (the TLS input
requires a client certificate signed by the CA: x509/certvalid), and writes what each input receives to its own
file with the raw message. The messages are parsed back and every field compared with what was sent.
rsyslog escapes control characters on reception (a newline arrives as `#012`): that is checked too.
"""

from __future__ import annotations

import ipaddress
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vmshadow.domain.finding import Severity
from vmshadow.export.cef import parse_cef
from vmshadow.export.event import EventKind, ExportEvent
from vmshadow.export.sinks import SinkError, SyslogSink, TLSOptions, Transport
from vmshadow.export.syslog5424 import (
    SYSLOG_SEVERITY,
    MessageFormat,
    SyslogFormat,
    parse_5424,
    structured_params,
    timestamp,
)

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------------------------ test PKI


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


@dataclass(frozen=True)
class PKI:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_pki(d: Path) -> PKI:
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("vmshadow test CA"))
        .issuer_name(_name("vmshadow test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, server: bool) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        usage = x509.ExtendedKeyUsageOID.SERVER_AUTH if server else x509.ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        return builder.sign(ca_key, hashes.SHA256()), key

    d.mkdir(parents=True, exist_ok=True)
    pki = PKI(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key")
    pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    for cert_path, key_path, server in (
        (pki.server_cert, pki.server_key, True),
        (pki.client_cert, pki.client_key, False),
    ):
        cert, key = leaf("localhost" if server else "vmshadow-client", server)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, key_path)
    return pki


# ------------------------------------------------------------------------------------------------- rsyslog


@dataclass
class Rsyslog:
    udp_port: int
    tcp_port: int
    tls_port: int
    out: Path
    pki: PKI

    def received(self, transport: str) -> list[str]:
        path = self.out / f"{transport}.log"
        return path.read_text(encoding="utf-8").splitlines() if path.exists() else []

    def wait_for(self, transport: str, tag: str, count: int, timeout_s: float = 10.0) -> list[str]:
        """The lines of events made by `make_events(tag)`, once `count` of them arrived (or the timeout passed)."""
        deadline = time.monotonic() + timeout_s
        while True:
            lines = [line for line in self.received(transport) if f'id="evt-{tag}-' in line]
            if len(lines) >= count or time.monotonic() >= deadline:
                return lines
            time.sleep(0.05)


CONFIG = """
global(
  workDirectory="{work}"
  maxMessageSize="64k"
  defaultNetstreamDriverCAFile="{pki.ca}"
  defaultNetstreamDriverCertFile="{pki.server_cert}"
  defaultNetstreamDriverKeyFile="{pki.server_key}"
)
module(load="imudp")
module(load="imtcp" maxSessions="100")
template(name="raw" type="string" string="%rawmsg%\\n")
ruleset(name="udp") {{ action(type="omfile" file="{out}/udp.log" template="raw") }}
ruleset(name="tcp") {{ action(type="omfile" file="{out}/tcp.log" template="raw") }}
ruleset(name="tls") {{ action(type="omfile" file="{out}/tls.log" template="raw") }}
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="udp")
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="tcp")
input(type="imtcp" address="127.0.0.1" port="{tls}" ruleset="tls"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="x509/certvalid")
"""


@pytest.fixture(scope="module")
def rsyslog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rsyslog]:
    base = tmp_path_factory.mktemp("rsyslog")
    work, out = base / "work", base / "out"
    work.mkdir()
    out.mkdir()
    pki = make_pki(base / "pki")
    r = Rsyslog(free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM), out, pki)
    conf = base / "rsyslog.conf"
    conf.write_text(CONFIG.format(work=work, out=out, pki=pki, udp=r.udp_port, tcp=r.tcp_port, tls=r.tls_port))
    check = subprocess.run([RSYSLOGD, "-N1", "-f", str(conf)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr + check.stdout
    log = (base / "rsyslogd.out").open("w")
    proc = subprocess.Popen([RSYSLOGD, "-n", "-f", str(conf), "-i", str(base / "rsyslogd.pid")], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 15
        ready = False
        while time.monotonic() < deadline and not ready:
            assert proc.poll() is None, (base / "rsyslogd.out").read_text()
            try:
                for port in (r.tcp_port, r.tls_port):
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                ready = True
            except OSError:
                time.sleep(0.05)
        assert ready, "rsyslogd did not listen in time"
        yield r
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


# ------------------------------------------------------------------------------------------------- events

HOSTILE = 'quote " backslash \\ bracket ] equals = pipe | ünïcödé ✓ 日本'


def make_events(tag: str, n: int = 5) -> list[ExportEvent]:
    events = []
    for i in range(n):
        events.append(
            ExportEvent(
                id=f"evt-{tag}-{i}",
                kind=EventKind.FINDING,
                action="port_scan",
                severity=list(Severity)[i % 5],
                occurred_at=T0 + timedelta(seconds=i),
                summary=f"{tag} scan {i}: {HOSTILE}",
                subject_id=f"find-{i}",
                rule_id="hunting.port_scan",
                rule_version="1.2.0",
                score=0.8125,
                src_ip="192.0.2.7" if i % 2 else "2001:db8::66",
                src_vmn=f"web-{i} {HOSTILE}",
                dst_ips=("198.51.100.1",),
                dst_ports=(22, 80),
                protocol=6,
                community_ids=("1:abc=",),
                indicator=HOSTILE if i == 3 else None,
            )
        )
    return events


def check_round_trip(lines: list[str], events: list[ExportEvent], fmt: SyslogFormat) -> None:
    by_id = {}
    for line in lines:
        message = parse_5424(line)
        by_id[message.structured_data[fmt.sd_id]["id"]] = message
    assert sorted(by_id) == sorted(e.id for e in events)
    for e in events:
        m = by_id[e.id]
        assert m.pri == 16 * 8 + SYSLOG_SEVERITY[e.severity]
        assert m.timestamp == timestamp(e.occurred_at)
        assert (m.hostname, m.app_name, m.procid, m.msgid) == ("vmshadow-test", "vmshadow", "4242", str(e.kind))
        assert m.structured_data[fmt.sd_id] == dict(structured_params(e))
        if fmt.msg is MessageFormat.CEF:
            record = parse_cef(m.msg)
            assert record.header[4] == f"{e.kind}.{e.action}"
            assert record.header[5] == e.summary
            assert record.extensions["externalId"] == e.id
            assert record.extensions["msg"] == e.summary
            assert record.extensions["cs1"] == e.rule_id
            assert record.extensions["cs4"] == e.src_vmn
        else:
            assert m.msg == e.summary


FMT = SyslogFormat(hostname="vmshadow-test", procid="4242")


def test_udp_round_trip(rsyslog: Rsyslog) -> None:
    events = make_events("udp")
    sink = SyslogSink("127.0.0.1", rsyslog.udp_port, Transport.UDP, FMT)
    try:
        sink.send(events)
    finally:
        sink.close()
    check_round_trip(rsyslog.wait_for("udp", "udp", len(events)), events, FMT)


def test_tcp_octet_counted_round_trip_with_cef_msg(rsyslog: Rsyslog) -> None:
    events = make_events("tcp")
    fmt = replace(FMT, msg=MessageFormat.CEF)
    SyslogSink("127.0.0.1", rsyslog.tcp_port, Transport.TCP, fmt).send(events)
    # confirmed by the receiver's close: rsyslog has read them all by now
    check_round_trip(rsyslog.wait_for("tcp", "tcp", len(events)), events, fmt)


def test_tls_with_ca_and_client_certificate_round_trip(rsyslog: Rsyslog) -> None:
    events = make_events("tls")
    pki = rsyslog.pki
    tls = TLSOptions(ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key, server_name="localhost")
    SyslogSink("127.0.0.1", rsyslog.tls_port, Transport.TLS, FMT, tls=tls).send(events)
    check_round_trip(rsyslog.wait_for("tls", "tls", len(events)), events, FMT)


def test_newline_arrives_escaped_by_rsyslog(rsyslog: Rsyslog) -> None:
    (event,) = make_events("newline", 1)
    event = replace(event, summary="line one\nline two")
    SyslogSink("127.0.0.1", rsyslog.tcp_port, Transport.TCP, FMT).send([event])
    lines = rsyslog.wait_for("tcp", "newline", 1)
    # one message, one line: octet counting kept the newline inside the message; rsyslog escaped it on reception
    assert len(lines) == 1
    assert parse_5424(lines[0]).msg == "line one#012line two"


def test_tls_without_client_certificate_is_not_confirmed(rsyslog: Rsyslog) -> None:
    """The TLS input requires a client certificate: without one nothing arrives and the batch is not confirmed."""
    events = make_events("nocert", 2)
    tls = TLSOptions(ca_file=rsyslog.pki.ca, server_name="localhost")
    with pytest.raises(SinkError) as err:
        SyslogSink("127.0.0.1", rsyslog.tls_port, Transport.TLS, FMT, tls=tls, timeout_s=3).send(events)
    assert err.value.retryable
    time.sleep(0.2)
    assert not [line for line in rsyslog.received("tls") if "nocert" in line]


def test_tls_with_an_unknown_ca_is_refused(rsyslog: Rsyslog, tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other")
    tls = TLSOptions(ca_file=other.ca, cert_file=other.client_cert, key_file=other.client_key)
    with pytest.raises(SinkError, match="certificate"):
        SyslogSink("127.0.0.1", rsyslog.tls_port, Transport.TLS, FMT, tls=tls, timeout_s=3).send(make_events("x", 1))
