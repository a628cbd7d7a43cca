"""EpisodeTracker: a key's first item (built whole, on a fast path) counts as any other item does."""

from __future__ import annotations

import pytest

from vmshadow.analysis.hunting.episodes import EpisodeTracker


def tracker(threshold: int, max_items: int = 8) -> EpisodeTracker:
    return EpisodeTracker(window_s=60, threshold=threshold, growth=4, max_keys=100, max_items=max_items)


@pytest.mark.parametrize(("threshold", "first_reached", "then"), [(0, True, 4), (1, True, 4), (2, False, 2)])
def test_a_first_item_meets_the_threshold_like_any_other(threshold: int, first_reached: bool, then: int) -> None:
    t = tracker(threshold)
    ep, reached = t.add("k", "a", 1000, "e1")
    assert reached is first_reached
    assert (ep.next_milestone, ep.items, ep.evidence, ep.started_ms, ep.latest_ms) == (
        then,
        {"a": 1000},
        ("e1",),
        1000,
        1000,
    )
    ep, reached = t.add("k", "b", 2000, "e2")
    assert reached is (threshold == 2)
    assert (ep.items, ep.evidence, ep.latest_ms) == ({"a": 1000, "b": 2000}, ("e1", "e2"), 2000)


def test_a_first_item_of_weight_counts_as_that_many() -> None:
    ep, reached = tracker(3).add("k", "login", 1000, "e1", weight=3)
    assert reached
    assert list(ep.items) == ["login", "login#1", "login#2"]


def test_a_key_whose_items_aged_out_starts_over_on_the_fast_path() -> None:
    t = tracker(2)
    t.add("k", "a", 1000, "e1")
    ep, reached = t.add("k", "b", 1000 + 61_000, "e2")
    assert not reached
    assert (ep.items, ep.started_ms, ep.evidence) == ({"b": 62_000}, 62_000, ("e2",))
