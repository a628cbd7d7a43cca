"""How far vmshadow's flows (PcapSource: nfstream + nDPI) agree with nDPI's own expected results.

For every capture of the nDPI regression set (``<data>/ndpi/pcap``, expected ``ndpiReader`` output in
``<data>/ndpi/result``) it matches each vmshadow flow to nDPI's flow by (L4 protocol, unordered endpoints) and compares
the application label and the hostname/SNI. Prints a per-capture table, the totals and every disagreement.

Run from the repository root:  .venv/bin/python -m bench.dpi_agreement [--data DIR] [--json] [CAPTURE_NAME ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from tests.datadir import shared_data
from tests.integration.ndpi_expected import NAMED_MASTERS, Comparison, Pair, compare_capture, ndpi_captures


def _pct(agreed: int, total: int) -> str:
    return f"{100 * agreed / total:.1f}" if total else "-"


def label_reason(pair: Pair) -> str:
    """A first guess at why the labels differ (docs/dpi.md gives the reasons found by reading the captures)."""
    if pair.expected.confidence.startswith("DPI"):
        return "payload label differs"
    if pair.expected.confidence == "Unknown":
        return "nDPI: no label; vmshadow: guessed" if pair.flow.application_is_guessed else "nDPI: no label"
    return f"nDPI guessed ({pair.expected.confidence})"


def hostname_reason(pair: Pair) -> str:
    if pair.expected.master not in NAMED_MASTERS:
        return f"to_flow keeps no name for {pair.expected.master}"
    return "name differs"


def totals(cmp: Comparison) -> dict[str, Any]:
    certain = cmp.certain
    named = cmp.with_hostname
    in_scope = cmp.with_hostname_in_scope
    return {
        "expected_flows": cmp.expected,
        "vmshadow_flows": cmp.flows,
        "matched": cmp.matched,
        "unmatched_expected": len(cmp.unmatched_expected),
        "split_flows": len(cmp.split_flows),
        "unmatched_flows": len(cmp.unmatched_flows),
        "label_agreed": cmp.label_agreed,
        "label_rate": Comparison.rate(cmp.label_agreed, cmp.matched),
        "master_agreed": sum(p.master_agrees for p in cmp.pairs),
        "certain": len(certain),
        "certain_agreed": sum(p.label_agrees for p in certain),
        "certain_rate": Comparison.rate(sum(p.label_agrees for p in certain), len(certain)),
        "hostname": len(named),
        "hostname_agreed": cmp.hostname_agreed,
        "hostname_rate": Comparison.rate(cmp.hostname_agreed, len(named)),
        "hostname_in_scope": len(in_scope),
        "hostname_in_scope_agreed": sum(p.hostname_agrees for p in in_scope),
        "hostname_in_scope_rate": Comparison.rate(sum(p.hostname_agrees for p in in_scope), len(in_scope)),
    }


def _disagreement(capture: str, pair: Pair) -> dict[str, Any]:
    e, f = pair.expected, pair.flow
    return {
        "capture": capture,
        "flow": e.number,
        "l4": e.l4,
        "endpoints": f"{e.a[0]}:{e.a[1]} {'<->' if e.bidirectional else '->'} {e.b[0]}:{e.b[1]}",
        "expected_label": e.label,
        "expected_confidence": e.confidence,
        "label": f.application,
        "label_guessed": f.application_is_guessed,
        "label_reason": "" if pair.label_agrees else label_reason(pair),
        "expected_hostname": e.hostname,
        "server_name": f.server_name,
        "hostname_reason": hostname_reason(pair) if pair.has_hostname and not pair.hostname_agrees else "",
    }


def run(ndpi_dir: Path, names: list[str]) -> dict[str, Any]:
    captures = ndpi_captures(ndpi_dir)
    if names:
        captures = [(p, out) for p, out in captures if p.name in names]
    all_flows = Comparison()
    rows: list[dict[str, Any]] = []
    disagreements: list[dict[str, Any]] = []
    unmatched: list[dict[str, Any]] = []
    start = time.perf_counter()
    for capture, out in captures:
        cmp = compare_capture(capture, out)
        all_flows.extend(cmp)
        rows.append({"capture": capture.name, **totals(cmp)})
        disagreements += [_disagreement(capture.name, p) for p in cmp.disagreements]
        unmatched += [
            {"capture": capture.name, "side": "nDPI", "l4": e.l4, "endpoints": f"{e.a} {e.b}", "label": e.label}
            for e in cmp.unmatched_expected
        ]
        unmatched += [
            {
                "capture": capture.name,
                "side": side,
                "l4": str(f.protocol),
                "label": f.application,
                "endpoints": f"{f.src_ip}:{f.src_port} -> {f.dst_ip}:{f.dst_port}",
            }
            for side, flows in (("vmshadow (split)", cmp.split_flows), ("vmshadow", cmp.unmatched_flows))
            for f in flows
        ]
    return {
        "captures": rows,
        "total": {"captures": len(rows), **totals(all_flows)},
        "disagreements": disagreements,
        "unmatched": unmatched,
        "seconds": round(time.perf_counter() - start, 2),
    }


_COLUMNS = (
    ("capture", 34),
    ("expected", 8),
    ("flows", 6),
    ("matched", 7),
    ("label %", 7),
    ("certain %", 9),
    ("name %", 7),
    ("name* %", 7),
)


def _row(r: dict[str, Any], name: str) -> list[str]:
    return [
        name,
        str(r["expected_flows"]),
        str(r["vmshadow_flows"]),
        str(r["matched"]),
        _pct(r["label_agreed"], r["matched"]),
        _pct(r["certain_agreed"], r["certain"]),
        _pct(r["hostname_agreed"], r["hostname"]),
        _pct(r["hostname_in_scope_agreed"], r["hostname_in_scope"]),
    ]


def print_table(result: dict[str, Any]) -> None:
    def line(cells: list[str]) -> None:
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, (_, w)) in enumerate(zip(cells, _COLUMNS, strict=True))
            )
        )

    line([c for c, _ in _COLUMNS])
    for r in result["captures"]:
        line(_row(r, r["capture"]))
    t = result["total"]
    line(_row(t, f"TOTAL ({t['captures']} captures)"))
    print()
    for title, agreed, total in (
        ("label agreement", "label_agreed", "matched"),
        ("  nDPI certain (DPI)", "certain_agreed", "certain"),
        ("  master only", "master_agreed", "matched"),
        ("hostname/SNI", "hostname_agreed", "hostname"),
        ("  name* (DNS/HTTP/TLS/QUIC)", "hostname_in_scope_agreed", "hostname_in_scope"),
    ):
        print(f"{title:<28} {t[agreed]}/{t[total]} = {_pct(t[agreed], t[total])} %")
    print(
        f"matched {t['matched']} of {t['expected_flows']} nDPI flows and {t['vmshadow_flows']} vmshadow flows; "
        f"{t['unmatched_expected']} nDPI flows unmatched, {t['split_flows']} vmshadow flows split by timeouts, "
        f"{t['unmatched_flows']} vmshadow flows with no nDPI counterpart ({result['seconds']} s)"
    )
    print("\ndisagreements:")
    for d in result["disagreements"]:
        what = []
        if d["label_reason"]:
            expected = f"{d['expected_label']!r} [{d['expected_confidence']}]"
            what.append(f"label {expected} vs {d['label']!r}: {d['label_reason']}")
        if d["hostname_reason"]:
            what.append(f"name {d['expected_hostname']!r} vs {d['server_name']!r}: {d['hostname_reason']}")
        print(f"  {d['capture']} #{d['flow']} {d['l4']} {d['endpoints']}: {'; '.join(what)}")
    print("\nunmatched:")
    for u in result["unmatched"]:
        print(f"  {u['capture']} {u['side']}: {u['l4']} {u['endpoints']} {u['label']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("captures", nargs="*", help="capture file names to compare (default: all)")
    parser.add_argument("--data", type=Path, help="shared data directory (default: $VMSHADOW_DATA or ../shared/data)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    data: Path = args.data or shared_data()
    result = run(data / "ndpi", args.captures)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
