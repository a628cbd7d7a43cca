"""How an operator spells a copy budget on the command line, and the errors for what is not one."""

from __future__ import annotations

import pytest

from vmshadow.capture.budget import MAX_PPS, CopyBudget
from vmshadow.domain.errors import InputError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5000", CopyBudget(5000, 500)),
        ("5000/50", CopyBudget(5000, 50)),
        (" 7 ", CopyBudget(7, 1)),  # a tenth of 7 rounds to 0: the burst is at least one packet
        ("off", None),
        ("NONE", None),
    ],
)
def test_a_budget_is_pps_pps_slash_burst_or_off(text: str, expected: CopyBudget | None) -> None:
    assert CopyBudget.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("fast", "is not PPS, PPS/BURST or off"),
        ("5000/", "is not PPS, PPS/BURST or off"),
        ("-5", "is not PPS, PPS/BURST or off"),
        ("0", "outside 1.."),
        (str(MAX_PPS + 1), "outside 1.."),
        ("100/0", "copy burst 0 is outside"),
    ],
)
def test_anything_else_is_an_error_naming_the_option(text: str, said: str) -> None:
    with pytest.raises(InputError) as caught:
        CopyBudget.parse(text, field="--copy-budget")
    assert said in str(caught.value)
    assert [i.field for i in caught.value.issues] == ["--copy-budget"]
