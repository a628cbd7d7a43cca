"""Layers of TMRs: which TMRs may share one nftables map lookup without changing what first-match-by-priority says.

A TMR compiles to *elements* of verdict maps; each element is a box in packet space (`Box`): an address family, a
source and a destination (an identifier kind — bridge port, MAC or IP — and an aligned block of its values, or any)
and a transport part (aligned blocks of ``protocol << 16 | port``, or any). A map lookup finds at most one element
when its elements do not overlap, and the kernel refuses some overlapping interval elements anyway. So:

    layer(T) = 1 + max(layer(U) for every earlier U with a box that overlaps one of T's boxes), 0 when there is none

Every TMR that overlaps T and comes before it is then looked up in an earlier layer, so the first matching TMR in
priority order is the one whose element a packet hits first, for the verdict and for the element's counter; TMRs in
one layer never overlap. Boxes with different identifier kinds on one side always overlap (a packet carries a MAC,
a port and an address at once). TMRs that overlap nothing earlier, whatever their action, share layer 0: 10,000
blocklist entries and one allow after them are two layers, not 10,001 rules.

The earlier boxes are kept in a trie per address family, one level per dimension (source, destination, transport),
each box filed under its own block and under its kind alone (or under "any"), so that a query visits only the
branches that overlap it and reads the highest layer below them; no pair of boxes is ever compared. A query block
wider than stored blocks (a network over single addresses) scans the stored keys of that level.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

Block = tuple[int, int]  # (shift, key): the values v with v >> shift == key
Side = tuple[str, Block]  # (identifier kind: "if" | "mac" | "ip", block)

_ENUMERATE_BITS = 6  # enumerate at most 2**6 sub-blocks of a query block; else scan the level's keys


@dataclass(frozen=True, slots=True)
class Box:
    """The packets one map element matches. ``None`` on a side or the transport part means any."""

    family: int
    src: Side | None
    dst: Side | None
    l4: tuple[Block, ...] | None


def blocks_meet(a: Block, b: Block) -> bool:
    """Aligned blocks intersect exactly when the larger one contains the smaller."""
    if a[0] >= b[0]:
        return b[1] >> (a[0] - b[0]) == a[1]
    return a[1] >> (b[0] - a[0]) == b[1]


def boxes_meet(a: Box, b: Box) -> bool:
    """Whether some packet lies in both boxes (the plain definition the trie answers for; used by the tests)."""

    def sides(x: Side | None, y: Side | None) -> bool:
        return x is None or y is None or x[0] != y[0] or blocks_meet(x[1], y[1])

    if a.family != b.family or not sides(a.src, b.src) or not sides(a.dst, b.dst):
        return False
    return a.l4 is None or b.l4 is None or any(blocks_meet(x, y) for x in a.l4 for y in b.l4)


def range_blocks(first: int, last: int) -> tuple[Block, ...]:
    """The aligned blocks that make up the inclusive range [first, last] (at most two per bit of the width)."""
    out: list[Block] = []
    while first <= last:
        shift = 0
        while first % (1 << (shift + 1)) == 0 and first + (1 << (shift + 1)) - 1 <= last:
            shift += 1
        out.append((shift, first >> shift))
        first += 1 << shift
    return tuple(out)


class _Level:
    """One dimension of the trie. Children are the next level's `_Level`, or ints (highest layer) at the last."""

    __slots__ = ("exact", "kinds", "none", "shifts", "top")

    def __init__(self) -> None:
        self.top = -1
        self.exact: dict[tuple[str, int, int], _Level | list[int]] = {}
        self.shifts: dict[str, set[int]] = {}
        self.kinds: dict[str, _Level | list[int]] = {}
        self.none: _Level | list[int] | None = None


# A trie path is (src, dst, l4); the l4 "kind" is always "" and its blocks may be several.
_Value = tuple[str, tuple[Block, ...]] | None


def _child(last: bool) -> _Level | list[int]:
    return [-1] if last else _Level()


def _insert(level: _Level, values: Sequence[_Value], layer: int) -> None:
    if layer > level.top:
        level.top = layer
    value, rest = values[0], values[1:]
    last = not rest
    targets: list[_Level | list[int]] = []
    if value is None:
        if level.none is None:
            level.none = _child(last)
        targets.append(level.none)
    else:
        kind, blocks = value
        for shift, key in blocks:
            found = level.exact.get((kind, shift, key))
            if found is None:
                found = level.exact[(kind, shift, key)] = _child(last)
                level.shifts.setdefault(kind, set()).add(shift)
            targets.append(found)
        by_kind = level.kinds.get(kind)
        if by_kind is None:
            by_kind = level.kinds[kind] = _child(last)
        targets.append(by_kind)
    for target in targets:
        if isinstance(target, list):
            if layer > target[0]:
                target[0] = layer
        else:
            _insert(target, rest, layer)


def _highest(level: _Level, values: Sequence[_Value], best: int) -> int:
    """The highest layer of a stored box overlapping `values` that beats `best` (else `best`)."""
    if level.top <= best:
        return best
    value, rest = values[0], values[1:]
    for child in _matching(level, value):
        if isinstance(child, list):
            best = max(best, child[0])
        elif child.top > best:
            best = _highest(child, rest, best)
    return best


def _matching(level: _Level, value: _Value) -> list[_Level | list[int]]:
    """The children whose boxes overlap `value` on this dimension."""
    out: list[_Level | list[int]] = [] if level.none is None else [level.none]
    if value is None:  # any value: every stored box, whatever its kind
        out.extend(level.kinds.values())
        return out
    kind, blocks = value
    out.extend(child for other, child in level.kinds.items() if other != kind)
    for stored in level.shifts.get(kind, ()):
        for shift, key in blocks:
            if stored >= shift:
                found = level.exact.get((kind, stored, key >> (stored - shift)))
                if found is not None:
                    out.append(found)
            elif shift - stored <= _ENUMERATE_BITS:
                base = key << (shift - stored)
                for sub in range(base, base + (1 << (shift - stored))):
                    found = level.exact.get((kind, stored, sub))
                    if found is not None:
                        out.append(found)
            else:
                width = shift - stored
                out.extend(
                    child
                    for (k, s, sub), child in level.exact.items()
                    if k == kind and s == stored and sub >> width == key
                )
    return out


def _values(box: Box) -> tuple[_Value, _Value, _Value]:
    return (
        None if box.src is None else (box.src[0], (box.src[1],)),
        None if box.dst is None else (box.dst[0], (box.dst[1],)),
        None if box.l4 is None else ("", box.l4),
    )


def assign_layers(tmr_boxes: Sequence[Sequence[Box]]) -> list[int]:
    """The layer of each TMR, given in priority order as the boxes of its elements (see the module docstring)."""
    tries: dict[int, _Level] = {}
    layers: list[int] = []
    for own in tmr_boxes:
        paths = [(box.family, _values(box)) for box in own]
        best = -1
        for family, values in paths:
            trie = tries.get(family)
            if trie is not None:
                best = _highest(trie, values, best)
        layer = best + 1
        layers.append(layer)
        for family, values in paths:
            trie = tries.get(family)
            if trie is None:
                trie = tries[family] = _Level()
            _insert(trie, values, layer)
    return layers
