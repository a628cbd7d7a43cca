"""Bounded, windowed state shared by the hunting detectors.

An *episode* is a run of activity by one offender key (e.g. a source address probing targets). Items seen in
the last `window_s` of flow time count; an episode ends when all its items have aged out. Findings are raised
when the count reaches a threshold and again at each `growth`-fold milestone, so a long scan yields a handful
of findings (each with fresher evidence) rather than one per flow.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

MAX_EVIDENCE = 50


@dataclass(slots=True)
class Episode:
    started_ms: int
    items: OrderedDict[str, int] = field(default_factory=OrderedDict)  # item -> last seen, ms, oldest first
    next_milestone: int = 0
    evidence: deque[str] = field(default_factory=lambda: deque(maxlen=MAX_EVIDENCE))
    latest_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "started_ms": self.started_ms,
            "items": list(self.items.items()),
            "next_milestone": self.next_milestone,
            "evidence": list(self.evidence),
            "latest_ms": self.latest_ms,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Episode:
        ep = cls(started_ms=int(d["started_ms"]), next_milestone=int(d["next_milestone"]))
        ep.items = OrderedDict((str(k), int(v)) for k, v in d["items"])
        ep.evidence.extend(d["evidence"])
        ep.latest_ms = int(d["latest_ms"])
        return ep


class EpisodeTracker:
    """Per-key windowed item sets with bounded memory (keys and items are capped, oldest evicted)."""

    def __init__(self, *, window_s: float, threshold: int, growth: int, max_keys: int, max_items: int) -> None:
        self.window_ms = int(window_s * 1000)
        self.threshold = threshold
        self.growth = growth
        self.max_keys = max_keys
        self.max_items = max_items
        self.episodes: OrderedDict[str, Episode] = OrderedDict()

    def add(self, key: str, item: str, at_ms: int, evidence: str) -> tuple[Episode, bool]:
        """Record `item` for `key` at flow time `at_ms`; return the episode and whether a milestone was reached."""
        self._forget_stale(at_ms)
        ep = self.episodes.get(key)
        if ep is not None:
            self.episodes.move_to_end(key)
            self._expire(ep, max(ep.latest_ms, at_ms))
            if not ep.items:
                ep = None
        if ep is None:
            ep = Episode(started_ms=at_ms, next_milestone=self.threshold)
            self.episodes[key] = ep
            if len(self.episodes) > self.max_keys:
                self.episodes.popitem(last=False)
        ep.latest_ms = max(ep.latest_ms, at_ms)
        ep.started_ms = min(ep.started_ms, at_ms)
        previous = ep.items.pop(item, None)
        ep.items[item] = max(at_ms, previous or at_ms)
        if len(ep.items) > self.max_items:
            ep.items.popitem(last=False)
        ep.evidence.append(evidence)
        reached = len(ep.items) >= ep.next_milestone
        if reached:
            ep.next_milestone = max(ep.next_milestone, len(ep.items)) * self.growth
        return ep, reached

    def _forget_stale(self, now_ms: int) -> None:
        """Drop least recently touched episodes that have gone quiet: state follows activity, not history
        (a spoofed flood would otherwise fill the table up to `max_keys`). Two per call keeps it O(1)."""
        for _ in range(2):
            if not self.episodes:
                return
            oldest_key = next(iter(self.episodes))
            if self.episodes[oldest_key].latest_ms >= now_ms - self.window_ms:
                return
            del self.episodes[oldest_key]

    def _expire(self, ep: Episode, now_ms: int) -> None:
        horizon = now_ms - self.window_ms
        # Items are appended in arrival order, so the oldest are in front: O(1) amortised per flow. A late
        # (out-of-order) flow sits behind newer items and ages out a little late, never early.
        while ep.items:
            first_key, first_seen = next(iter(ep.items.items()))
            if first_seen >= horizon:
                break
            del ep.items[first_key]

    def snapshot(self) -> dict[str, Any]:
        return {"episodes": [[k, ep.to_json()] for k, ep in self.episodes.items()]}

    def restore(self, state: dict[str, Any]) -> None:
        self.episodes = OrderedDict((str(k), Episode.from_json(v)) for k, v in state["episodes"])
