"""Detection on labelled public captures: attackers found or missed, findings per detector, anomaly ROC/PR.

Offline part of the evaluation harness (issue 5, 5a). Every registered detector runs with its default settings and no
threat-intel feed over each labelled capture in ../shared/data (ground truth: each set's SOURCE.md); a labelled
attacker is *found* when some finding names it as the offender (`src_ip`), and found *as expected* when a finding
of the expected kind does.

The anomaly model is also scored flow by flow. The captures are seconds long and hold no history of their hosts,
so per-host models never warm up on them; instead one model stands for a network segment: it learns the ordinary
nDPI protocol samples (every flow relabelled as one VMN), then sees the rest of them interleaved with one labelled
capture (a fixed shuffle). Flows to or from the labelled attacker are positives. Two scores per flow: as deployed
(the model scores each flow, then learns it, so a long attack soon looks normal) and frozen (the model that learned
only the ordinary flows scores it: novelty against the segment's history). The segment has only a few
hundred ordinary flows, so the model's warm-up, calibration and reference window are scaled down for this run
(EVAL_SETTINGS). Reported per capture: ROC-AUC, PR-AUC (average precision), and at the calibrated threshold the
attack flows alarmed and the share of ordinary flows alarmed.

Run from the repository root:  .venv/bin/python -m bench.detection [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.datadir import shared_data

from vmshadow.analysis.anomaly.hst import HSTDetector, HSTSettings
from vmshadow.analysis.registry import build_detectors
from vmshadow.domain.flow import Flow
from vmshadow.flows.pcap import PcapSource

# nDPI captures of attacks or abuse (ndpi/SOURCE.md, "Notable ground truth"); the rest are protocol samples. The
# same list as tests/integration/test_public_captures.py.
NOT_ORDINARY = {
    "synscan.pcap", "tcp_scan.pcapng", "dns-tunnel-iodine.pcap", "bad-dns-traffic.pcap", "dns_exfiltration.pcap",
    "dns-exf.pcap", "dns2tcp_tunnel.pcap", "icmp-tunnel.pcap", "malware.pcap", "emotet.pcap", "trickbot.pcap",
    "mining.pcapng", "monero.pcap", "WebattackRCE.pcap", "WebattackSQLinj.pcap", "sql_injection.pcap", "xss.pcap",
    "log4j-webapp-exploit.pcap", "shell.pcap", "dotenv.pcap", "exe_download.pcap", "exe_download_as_png.pcap",
    "elf.pcap", "portable_executable.pcap", "bot.pcap", "tls_malicious_sha1.pcapng", "dhcp-fuzz.pcapng",
    "crynet.pcap", "tor.pcap",
}  # fmt: skip

SEGMENT = "segment"
EVAL_SETTINGS = HSTSettings(window_size=50, warmup_flows=100, calibration_flows=100, recalibrate_every=10,
                            repeat_after_s=0)  # fmt: skip
TRAIN_SHARE = 0.6


@dataclass(frozen=True, slots=True)
class Labelled:
    path: str
    attacker: str
    expected: str  # the finding kind that should name the attacker
    what: str


LA = "pcap-attack/Lateral_Movement__"
LABELLED = [
    Labelled("ndpi/pcap/synscan.pcap", "172.16.0.8", "port_scan", "SYN scan, 1000 ports"),
    Labelled("ndpi/pcap/tcp_scan.pcapng", "192.168.1.178", "port_scan", "connect scan"),
    Labelled("esnet-scanners/tcp_0_1000_20190821.pcap", "172.31.15.102", "port_scan", "masscan TCP"),
    Labelled("esnet-scanners/udp_0_1000_20190821.pcap", "172.31.15.102", "port_scan", "masscan UDP"),
    Labelled("zeek/traces/nmap-vsn.pcap", "192.168.1.71", "port_scan", "nmap discovery + probes"),
    Labelled("zeek/traces/ssh/sshguess.pcap", "192.168.56.1", "brute_force", "SSH guessing"),
    Labelled("zeek/traces/ftp/bruteforce.pcap", "192.168.56.1", "brute_force", "FTP brute force"),
    Labelled(
        "pcap-attack/CredAccess__CA_kerbrute_passwordspray_kerberos_AS-REQ.pcapng",
        "172.16.66.1",
        "brute_force",
        "Kerberos password spray",
    ),
    Labelled("ndpi/pcap/dns-tunnel-iodine.pcap", "10.0.2.30", "dns_tunnel", "iodine"),
    Labelled("ndpi/pcap/bad-dns-traffic.pcap", "192.168.43.91", "dns_tunnel", "dnscat2"),
    Labelled("ndpi/pcap/dns_exfiltration.pcap", "192.168.220.56", "dns_tunnel", "DNS exfiltration"),
    Labelled(
        "pcap-attack/Command_and_Control__cmds_over_dns_txt_queries_and_reponses.pcap",
        "192.168.100.121",
        "dns_tunnel",
        "C2 over DNS TXT",
    ),
    Labelled("pcap-attack/Command_and_Control__C2_Foudre_Backdoor_DGA.pcapng", "10.0.2.15", "dga", "Foudre DGA C2"),
    Labelled("zeek/traces/http/ctu-62604-80.pcap", "192.168.1.108", "exfiltration", "Agent Tesla POST"),
    Labelled("zeek/traces/http/putty-upload.pcap", "127.0.0.1", "exfiltration", "HTTP upload of putty.exe"),
    Labelled(LA + "LM_psexec_smb_dcerpc_epm_svcctl.pcapng", "172.16.66.1", "lateral_movement", "PsExec"),
    Labelled(LA + "LM_smbexec_smb_dcerpc_svcctl_epm.pcapng", "172.16.66.1", "lateral_movement", "smbexec"),
    Labelled(LA + "LM_WMI_ProcessCallCreate.pcapng", "172.16.66.1", "lateral_movement", "WMI process create"),
    Labelled(LA + "LM_dcom_mmc20.application_dcerpc.pcapng", "172.16.66.1", "lateral_movement", "DCOM MMC20"),
    Labelled(LA + "LM_rdp_sharprdp.pcapng", "192.168.56.1", "lateral_movement", "SharpRDP"),
    Labelled(
        "suricata-verify/smb2-07/20171220_smb_psexec_add_user.pcap",
        "192.168.10.31",
        "lateral_movement",
        "PsExec adding a user",
    ),
    Labelled(
        LA + "CVE-2020-1472_Zerologon_RPC_NetLogon_NullChallenge_SecChan_6_from_nonDC_to_DC.pcapng",
        "172.16.66.37",
        "lateral_movement",
        "Zerologon",
    ),
]


def ordinary_captures(data: Path) -> list[Path]:
    return [p for p in sorted((data / "ndpi/pcap").iterdir()) if p.name not in NOT_ORDINARY]


def hunt(flows: list[Flow], item: Labelled) -> dict[str, Any]:
    """Every registered detector, fresh, over one capture's flows."""
    detectors = build_detectors()
    findings = [f for flow in flows for d in detectors for f in d.observe(flow)]
    by_attacker = [f for f in findings if str(f.src_ip) == item.attacker]
    return {
        "capture": item.path,
        "what": item.what,
        "attacker": item.attacker,
        "flows": len(flows),
        "expected": item.expected,
        "found": bool(by_attacker),
        "found_as_expected": any(f.kind == item.expected for f in by_attacker),
        "attacker_kinds": sorted({str(f.kind) for f in by_attacker}),
        "findings_per_detector": dict(sorted(Counter(f.detector for f in findings).items())),
    }


def roc_auc(scores: list[float], labels: list[bool]) -> float | None:
    """Area under the ROC curve as the Mann-Whitney U statistic (ties count one half); None without both classes."""
    positives = sum(labels)
    negatives = len(labels) - positives
    if not positives or not negatives:
        return None
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):  # average ranks over runs of equal scores
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = sum(r for r, positive in zip(ranks, labels, strict=True) if positive)
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def average_precision(scores: list[float], labels: list[bool]) -> float | None:
    """PR-AUC as average precision: the sum over distinct score thresholds, highest first, of precision times the
    recall gained (scikit-learn's `average_precision_score`); None without positives."""
    positives = sum(labels)
    if not positives:
        return None
    pairs = sorted(zip(scores, labels, strict=True), key=lambda p: -p[0])
    ap, tp, i = 0.0, 0, 0
    while i < len(pairs):
        j, gained = i, 0
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:  # one threshold takes all equal scores
            gained += pairs[j][1]
            j += 1
        tp += gained
        ap += (tp / j) * gained / positives
        i = j
    return ap


def as_segment(flows: list[Flow]) -> list[Flow]:
    return [dataclasses.replace(f, src_vmn=SEGMENT) for f in flows]


def warmed_segment(ordinary: list[Flow]) -> tuple[dict[str, Any], list[Flow]]:
    """The segment model after learning the first TRAIN_SHARE of the ordinary flows; and the rest of them."""
    cut = int(len(ordinary) * TRAIN_SHARE)
    detector = HSTDetector(EVAL_SETTINGS)
    for flow in ordinary[:cut]:
        detector.judge(flow)
    return detector.snapshot(), ordinary[cut:]


def score_anomalies(state: dict[str, Any], held_out: list[Flow], attack: list[Flow], attacker: str) -> dict[str, Any]:
    detector = HSTDetector(EVAL_SETTINGS)
    detector.restore(json.loads(json.dumps(state)))  # every capture starts from the same warmed model
    stream = [(f, False) for f in held_out] + [(f, attacker in (str(f.src_ip), str(f.dst_ip))) for f in attack]
    random.Random(0).shuffle(stream)
    frozen = HSTDetector(EVAL_SETTINGS)
    frozen.restore(json.loads(json.dumps(state)))
    scores, labels, alarms, novelty = [], [], [], []
    for flow, positive in stream:
        untaught = frozen.score(flow)  # the ordinary history alone judges it: novelty
        judgement, _ = detector.judge(flow)  # as deployed: score, then learn
        if judgement.score is not None and untaught is not None:
            scores.append(judgement.score)
            novelty.append(untaught)
            labels.append(positive)
            alarms.append(judgement.alarm)
    positives = sum(labels)
    negatives = len(labels) - positives
    auc, ap = roc_auc(scores, labels), average_precision(scores, labels)
    frozen_auc, frozen_ap = roc_auc(novelty, labels), average_precision(novelty, labels)
    return {
        "scored_attack_flows": positives,
        "scored_ordinary_flows": negatives,
        "roc_auc": None if auc is None else round(auc, 3),
        "pr_auc": None if ap is None else round(ap, 3),
        "frozen_roc_auc": None if frozen_auc is None else round(frozen_auc, 3),
        "frozen_pr_auc": None if frozen_ap is None else round(frozen_ap, 3),
        "attack_flows_alarmed": sum(a for a, p in zip(alarms, labels, strict=True) if p),
        "ordinary_alarm_rate": round(sum(a for a, p in zip(alarms, labels, strict=True) if not p) / negatives, 4)
        if negatives
        else None,
    }


def ordinary_findings(paths: list[Path]) -> dict[str, int]:
    """Findings per detector over the ordinary captures, each with fresh detectors (false alarms, at most)."""
    counts: Counter[str] = Counter()
    for path in paths:
        detectors = build_detectors()
        counts.update(f.detector for flow in PcapSource([path]) for d in detectors for f in d.observe(flow))
    return dict(sorted(counts.items()))


def evaluate() -> dict[str, Any]:
    data = shared_data()
    ordinary = as_segment(list(PcapSource(ordinary_captures(data))))
    state, held_out = warmed_segment(ordinary)
    rows = []
    for item in LABELLED:
        flows = list(PcapSource([data / item.path]))
        row = hunt(flows, item)
        row["anomaly"] = score_anomalies(state, held_out, as_segment(flows), item.attacker)
        rows.append(row)
    return {"ordinary_flows": len(ordinary), "train_flows": len(ordinary) - len(held_out), "captures": rows,
            "ordinary_captures": len(ordinary_captures(data)),
            "ordinary_findings": ordinary_findings(ordinary_captures(data)),
            "eval_settings": dataclasses.asdict(EVAL_SETTINGS)}  # fmt: skip


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| capture | attacker | flows | expected | found | by | ROC-AUC | PR-AUC | frozen ROC-AUC | frozen PR-AUC "
        "| attack flows alarmed |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["captures"]:
        a = r["anomaly"]
        found = "yes" if r["found_as_expected"] else "other kind" if r["found"] else "**no**"
        lines.append(
            f"| `{r['capture']}` ({r['what']}) | {r['attacker']} | {r['flows']} | {r['expected']} | {found} | "
            f"{', '.join(r['attacker_kinds']) or '-'} | {a['roc_auc'] if a['roc_auc'] is not None else '-'} | "
            f"{a['pr_auc'] if a['pr_auc'] is not None else '-'} | "
            f"{a['frozen_roc_auc'] if a['frozen_roc_auc'] is not None else '-'} | "
            f"{a['frozen_pr_auc'] if a['frozen_pr_auc'] is not None else '-'} | "
            f"{a['attack_flows_alarmed']}/{a['scored_attack_flows']} |"
        )
    rates = [r["anomaly"]["ordinary_alarm_rate"] for r in result["captures"]]
    lines.append("")
    lines.append(
        f"Segment model: {result['train_flows']} ordinary flows learned, "
        f"{result['ordinary_flows'] - result['train_flows']} held out; ordinary flows alarmed: "
        f"{min(rates):.1%} to {max(rates):.1%} per run."
    )
    lines.append(
        f"Ordinary captures ({result['ordinary_captures']}, each with fresh detectors): findings per detector "
        f"{result['ordinary_findings'] or 'none'}."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the full result as JSON")
    args = parser.parse_args(argv)
    result = evaluate()
    print(json.dumps(result, indent=2) if args.json else markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
