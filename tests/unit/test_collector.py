"""The analysing process's collector thresholds."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from vmshadow.stages.collector import YOUNG_THRESHOLD, tune_for_analysis


@pytest.fixture
def thresholds() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_raises_the_young_threshold_and_keeps_the_others(thresholds: None) -> None:
    gc.set_threshold(700, 11, 12)
    assert tune_for_analysis() == (700, 11, 12)
    assert gc.get_threshold() == (YOUNG_THRESHOLD, 11, 12)


def test_never_lowers_a_larger_threshold(thresholds: None) -> None:
    gc.set_threshold(YOUNG_THRESHOLD * 3, 10, 10)
    tune_for_analysis()
    assert gc.get_threshold() == (YOUNG_THRESHOLD * 3, 10, 10)
