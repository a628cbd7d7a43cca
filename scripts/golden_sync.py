"""Shared by the regen_golden_* scripts: write the expected files that are stale, or only list them (--check)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path


def arguments(doc: str | None, argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="list stale expected files, write nothing")
    return parser.parse_args(argv)


def sync(files: Sequence[tuple[Path, str]], *, relative_to: Path, check: bool) -> int:
    """Exit status: 1 when `check` found stale files, else 0 (stale files were rewritten)."""
    stale = [(path, text) for path, text in files if not path.exists() or path.read_text(encoding="utf-8") != text]
    for path, text in stale:
        name = path.relative_to(relative_to)
        if check:
            print(f"stale: {name}")
        else:
            path.write_text(text, encoding="utf-8")
            print(f"updated: {name}")
    if not stale:
        print(f"all {len(files)} expected files are up to date")
    return 1 if stale and check else 0
