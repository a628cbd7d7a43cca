"""Rewrite the expected output of the nftables compiler golden cases, so that a change shows up in review as a diff.

    python scripts/regen_golden_nft.py          # rewrite every expected.json that changed
    python scripts/regen_golden_nft.py --check  # only list the stale ones; exit 1 if there are any

tests/golden/nft/<case>/input.yaml is a TMR file; expected.json is the document `compile_tmrset` makes of it with
the fixed `AT`, `VERSION` and `PORTS` below (a timeout in expected.json is counted from `AT`).
tests/golden/test_nft_compiler.py compares both and has `nft -c` check every expected.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from vmshadow.config.tmr_file import parse_tmr_text
from vmshadow.enforcement.nft_compiler import compile_tmrset

CASES = Path(__file__).resolve().parent.parent / "tests" / "golden" / "nft"
INPUT = "input.yaml"
EXPECTED = "expected.json"
AT = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
VERSION = 7
PORTS = ("vnet1", "vnet2", "vnet3", "vmsbr0p1")


def case_dirs(root: Path = CASES) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir())


def render_case(case: Path) -> str:
    """The compiled document of a case's input, as expected.json holds it."""
    tmrset = parse_tmr_text((case / INPUT).read_text(encoding="utf-8"), INPUT)
    document = compile_tmrset(tmrset, ports=PORTS, at=AT, version=VERSION)
    return dump(document)


def dump(document: dict[str, list[dict[str, object]]]) -> str:
    """JSON with one nftables command per line, so that a diff shows which commands changed."""
    lines = ",\n".join(json.dumps(item, separators=(", ", ": ")) for item in document["nftables"])
    return '{"nftables": [\n' + lines + "\n]}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="list stale expected files, write nothing")
    args = parser.parse_args(argv)
    files = [(case / EXPECTED, render_case(case)) for case in case_dirs()]
    stale = [(path, text) for path, text in files if not path.exists() or path.read_text(encoding="utf-8") != text]
    for path, text in stale:
        name = path.relative_to(CASES.parent.parent.parent)
        if args.check:
            print(f"stale: {name}")
        else:
            path.write_text(text, encoding="utf-8")
            print(f"updated: {name}")
    if not stale:
        print(f"all {len(files)} expected files are up to date")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
