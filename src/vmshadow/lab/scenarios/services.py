"""The lab's outside services for the scenarios: a resolver (dnsmasq) and a time-like responder on the DNS host,
HTTP on the web and C2 hosts, and an OpenSSH server in one VMN. All started in lab namespaces, all stopped on
exit; files (host key, client key, configs) live in a temporary directory removed on exit."""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from vmshadow.lab.scenarios.base import NamespaceProcesses, outside_host, tcp_open, wait_until
from vmshadow.lab.scenarios.dns import lookup
from vmshadow.lab.scenarios.servers import http_server, udp_responder
from vmshadow.lab.state import LabHost, LabState

HTTP_PORT = 80
UPLOAD_PORT = 8080
TIME_PORT = 123
DNS_PORT = 53
SSH_PORT = 22
TUNNEL_DOMAIN = "t.vmslab.test"  # forwarded by the resolver to iodined (dns_tunnel.py)
TUNNEL_SERVER_PORT = 5353
# Benign names: a few sites under a few parents, as a server's or desktop's working set looks.
BENIGN_NAMES = ("www.shop.test", "api.shop.test", "cdn.news.test", "www.news.test", "repo.mirror.test",
                "backup.corp.test", "time.corp.test")  # fmt: skip
STARTUP_TIMEOUT_S = 10.0


@dataclass
class LabServices:
    """Everything the scenarios talk to; `ssh_target` is the VMN whose sshd hydra and the benign ssh use."""

    lab: LabState
    ssh_target: LabHost
    work_dir: Path = field(init=False)
    client_key: Path = field(init=False)
    _stack: contextlib.ExitStack = field(init=False)

    @property
    def dns(self) -> LabHost:
        return outside_host(self.lab, "dns")

    @property
    def web(self) -> LabHost:
        return outside_host(self.lab, "web")

    @property
    def c2(self) -> LabHost:
        return outside_host(self.lab, "c2")

    def __enter__(self) -> LabServices:
        self._stack = contextlib.ExitStack()
        try:
            self.work_dir = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="vms-scenarios-")))
            procs = self._stack.enter_context(NamespaceProcesses())
            for host in (self.web, self.c2):
                ip = str(host.address.ip)
                self._stack.enter_context(http_server(host.namespace, ip, HTTP_PORT))
                self._stack.enter_context(http_server(host.namespace, ip, UPLOAD_PORT))
            self._stack.enter_context(udp_responder(self.dns.namespace, str(self.dns.address.ip), TIME_PORT))
            self._start_resolver(procs)
            self._start_sshd(procs)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _start_resolver(self, procs: NamespaceProcesses) -> None:
        ip = str(self.dns.address.ip)
        names = [f"--address=/{n}/{self.web.address.ip}" for n in BENIGN_NAMES if not n.startswith("time.")]
        procs.start(self.dns.namespace, [
            "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--no-poll",
            "--bind-interfaces", f"--listen-address={ip}", f"--port={DNS_PORT}", "--user=root", "--pid-file=",
            *names, f"--address=/time.corp.test/{ip}", f"--server=/{TUNNEL_DOMAIN}/127.0.0.1#{TUNNEL_SERVER_PORT}",
        ])  # fmt: skip
        wait_until(  # asked from the DNS host itself (over its loopback): nothing crosses a shadow port
            lambda: lookup(self.dns.namespace, ip, "www.shop.test", timeout_s=0.3) is not None,
            timeout_s=STARTUP_TIMEOUT_S, what="dnsmasq answering in the DNS host",
        )  # fmt: skip

    def _start_sshd(self, procs: NamespaceProcesses) -> None:
        d = self.work_dir
        host_key, self.client_key = d / "ssh_host_ed25519_key", d / "client_ed25519"
        for key in (host_key, self.client_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30)
        (d / "authorized_keys").write_text(self.client_key.with_suffix(".pub").read_text())
        config = d / "sshd_config"
        config.write_text(
            "\n".join([
                f"ListenAddress {self.ssh_target.address.ip}", f"Port {SSH_PORT}", f"HostKey {host_key}",
                "UsePAM no", "PasswordAuthentication yes", "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password", f"AuthorizedKeysFile {d / 'authorized_keys'}",
                "StrictModes no", "MaxStartups 100:30:200", "MaxAuthTries 6", "LogLevel QUIET",
                f"PidFile {d / 'sshd.pid'}",
            ]) + "\n"
        )  # fmt: skip
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
        procs.start(self.ssh_target.namespace, ["/usr/sbin/sshd", "-D", "-e", "-f", str(config)])
        ip = str(self.ssh_target.address.ip)
        wait_until(
            lambda: tcp_open(self.ssh_target.namespace, ip, SSH_PORT),
            timeout_s=STARTUP_TIMEOUT_S, what="sshd listening in the target VMN",
        )  # fmt: skip


@contextlib.contextmanager
def lab_services(lab: LabState, ssh_target: LabHost) -> Iterator[LabServices]:
    with LabServices(lab, ssh_target) as services:
        yield services
