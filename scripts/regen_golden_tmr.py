"""Rewrite the expected output of the TMR file golden cases, so that a change shows up in review as a diff.

    python scripts/regen_golden_tmr.py          # rewrite every expected.txt / expected.json that changed
    python scripts/regen_golden_tmr.py --check  # only list the stale ones; exit 1 if there are any

tests/golden/tmr_errors/<case>/input.yaml must fail to parse: expected.txt holds its issues, one per line, in
the form `input.yaml:LINE: FIELD: MESSAGE`. tests/golden/tmr_valid/<case>/input.yaml must parse: expected.json
holds `codec.tmrset_to_json` of the result. tests/golden/test_tmr_errors.py compares both with this rendering.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from golden_sync import arguments, sync

from vmshadow.config.tmr_file import parse_tmr_text
from vmshadow.domain.codec import tmrset_to_json
from vmshadow.domain.errors import InputError

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "golden"
ERROR_CASES = GOLDEN / "tmr_errors"
VALID_CASES = GOLDEN / "tmr_valid"
INPUT = "input.yaml"
EXPECTED_ERRORS = "expected.txt"
EXPECTED_JSON = "expected.json"


class CaseError(Exception):
    """A case is in the wrong directory: an error case that parses, or a valid case that does not."""


def case_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir())


def _input(case: Path) -> str:
    return (case / INPUT).read_text(encoding="utf-8")


def render_error_case(case: Path) -> str:
    """The issues `input.yaml` of an error case produces, one per line."""
    try:
        parse_tmr_text(_input(case), INPUT)
    except InputError as error:
        return "".join(f"{issue}\n" for issue in error.issues)
    raise CaseError(f"{case.name}: {INPUT} parses without errors; it belongs in {VALID_CASES.name}/")


def render_valid_case(case: Path) -> str:
    """The JSON form of the TMRSet `input.yaml` of a valid case parses to."""
    try:
        tmrset = parse_tmr_text(_input(case), INPUT)
    except InputError as error:
        raise CaseError(f"{case.name}: {INPUT} does not parse:\n{error}") from None
    return json.dumps(tmrset_to_json(tmrset), indent=2) + "\n"


def rendered() -> list[tuple[Path, str]]:
    """Every expected file with the text it should hold."""
    out = [(case / EXPECTED_ERRORS, render_error_case(case)) for case in case_dirs(ERROR_CASES)]
    out += [(case / EXPECTED_JSON, render_valid_case(case)) for case in case_dirs(VALID_CASES)]
    return out


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, argv)
    try:
        files = rendered()
    except CaseError as error:
        print(error, file=sys.stderr)
        return 2
    return sync(files, relative_to=GOLDEN.parent.parent, check=args.check)


if __name__ == "__main__":
    sys.exit(main())
