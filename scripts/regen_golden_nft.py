"""Rewrite the expected output of the nftables compiler golden cases, so that a change shows up in review as a diff.

    python scripts/regen_golden_nft.py          # rewrite every expected.json that changed
    python scripts/regen_golden_nft.py --check  # only list the stale ones; exit 1 if there are any

tests/golden/nft/<case>/input.yaml is a TMR file; expected.json is the document `compile_tmrset` makes of it with
the fixed `AT`, `VERSION` and `PORTS` below (a timeout in expected.json is counted from `AT`). An optional
staged.txt names TMRs of input.yaml (one id a line) that are staged instead of in force, as proposal `prop-<id>`.
tests/golden/test_nft_compiler.py compares both and has `nft -c` check every expected.json.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from golden_sync import arguments, sync

from vmshadow.config.tmr_file import parse_tmr_text
from vmshadow.enforcement.nft_compiler import compile_tmrset
from vmshadow.ports.enforcer import StagedRule

CASES = Path(__file__).resolve().parent.parent / "tests" / "golden" / "nft"
INPUT = "input.yaml"
EXPECTED = "expected.json"
STAGED = "staged.txt"
AT = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
VERSION = 7
PORTS = ("vnet1", "vnet2", "vnet3", "vmsbr0p1")


def case_dirs(root: Path = CASES) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir())


def render_case(case: Path) -> str:
    """The compiled document of a case's input, as expected.json holds it."""
    tmrset = parse_tmr_text((case / INPUT).read_text(encoding="utf-8"), INPUT)
    names = (case / STAGED).read_text(encoding="utf-8").split() if (case / STAGED).exists() else []
    staged = [StagedRule(f"prop-{t.id}", t) for t in tmrset.tmrs if t.id in names]
    tmrset = replace(tmrset, tmrs=tuple(t for t in tmrset.tmrs if t.id not in names))
    document = compile_tmrset(tmrset, ports=PORTS, at=AT, version=VERSION, staged=staged)
    return dump(document)


def dump(document: dict[str, list[dict[str, object]]]) -> str:
    """JSON with one nftables command per line, so that a diff shows which commands changed."""
    lines = ",\n".join(json.dumps(item, separators=(", ", ": ")) for item in document["nftables"])
    return '{"nftables": [\n' + lines + "\n]}\n"


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, argv)
    files = [(case / EXPECTED, render_case(case)) for case in case_dirs()]
    return sync(files, relative_to=CASES.parent.parent.parent, check=args.check)


if __name__ == "__main__":
    sys.exit(main())
