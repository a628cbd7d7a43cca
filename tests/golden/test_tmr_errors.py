"""Golden tests for the TMR file: every case directory is an input beside the exact output it must produce.

tmr_errors/<case>/input.yaml must fail with the issues in expected.txt (one `input.yaml:LINE: FIELD: MESSAGE`
per line); tmr_valid/<case>/input.yaml must parse to the TMRSet whose JSON form is expected.json. After an
intended change, run `python scripts/regen_golden_tmr.py` and review the diff of the expected files.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.golden.scripts import load_script
from vmshadow.config.tmr_file import parse_tmr_text
from vmshadow.domain.codec import tmrset_from_json
from vmshadow.domain.errors import InputError

ROOT = Path(__file__).resolve().parents[2]


regen = load_script("regen_golden_tmr")
ERROR_CASES = regen.case_dirs(regen.ERROR_CASES)
VALID_CASES = regen.case_dirs(regen.VALID_CASES)
ISSUE_LINE = re.compile(r"^input\.yaml:[1-9][0-9]*: \S.*$")


def _ids(case: Path) -> str:
    return case.name


@pytest.mark.parametrize("case", ERROR_CASES, ids=_ids)
def test_error_case_reports_exactly_the_expected_issues(case: Path) -> None:
    expected = (case / regen.EXPECTED_ERRORS).read_text(encoding="utf-8")
    assert regen.render_error_case(case) == expected


@pytest.mark.parametrize("case", ERROR_CASES, ids=_ids)
def test_every_expected_issue_names_file_and_line(case: Path) -> None:
    lines = (case / regen.EXPECTED_ERRORS).read_text(encoding="utf-8").splitlines()
    assert lines
    for line in lines:
        assert ISSUE_LINE.match(line), line


@pytest.mark.parametrize("case", VALID_CASES, ids=_ids)
def test_valid_case_parses_to_the_expected_set(case: Path) -> None:
    expected = (case / regen.EXPECTED_JSON).read_text(encoding="utf-8")
    assert regen.render_valid_case(case) == expected


@pytest.mark.parametrize("case", VALID_CASES, ids=_ids)
def test_expected_json_reads_back_to_the_parsed_set(case: Path) -> None:
    parsed = parse_tmr_text((case / regen.INPUT).read_text(encoding="utf-8"), regen.INPUT)
    stored = json.loads((case / regen.EXPECTED_JSON).read_text(encoding="utf-8"))
    assert tmrset_from_json(stored) == parsed


def test_the_suite_has_enough_cases_and_one_with_many_errors() -> None:
    assert len(ERROR_CASES) >= 12
    assert len(VALID_CASES) >= 3
    counts = [len((case / regen.EXPECTED_ERRORS).read_text(encoding="utf-8").splitlines()) for case in ERROR_CASES]
    assert max(counts) >= 5


@pytest.mark.parametrize("case", [*ERROR_CASES, *VALID_CASES], ids=_ids)
def test_case_directory_holds_input_and_expected_only(case: Path) -> None:
    expected = regen.EXPECTED_ERRORS if case.parent == regen.ERROR_CASES else regen.EXPECTED_JSON
    assert sorted(p.name for p in case.iterdir()) == sorted([regen.INPUT, expected])


def test_render_refuses_an_error_case_that_parses(tmp_path: Path) -> None:
    (tmp_path / regen.INPUT).write_text("tmrs: []\n", encoding="utf-8")
    with pytest.raises(regen.CaseError, match="parses without errors"):
        regen.render_error_case(tmp_path)


def test_render_refuses_a_valid_case_that_does_not_parse(tmp_path: Path) -> None:
    (tmp_path / regen.INPUT).write_text("tmrs: 5\n", encoding="utf-8")
    with pytest.raises(regen.CaseError, match="does not parse"):
        regen.render_valid_case(tmp_path)


def test_regen_check_reports_nothing_stale(capsys: pytest.CaptureFixture[str]) -> None:
    assert regen.main(["--check"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_error_cases_raise_input_error_not_something_else() -> None:
    for case in ERROR_CASES:
        with pytest.raises(InputError):
            parse_tmr_text((case / regen.INPUT).read_text(encoding="utf-8"), regen.INPUT)
