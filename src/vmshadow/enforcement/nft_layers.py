"""Layers of TMRs: which TMRs may share one nftables set lookup without changing what first-match-by-priority says.

A TMR compiles to *elements* of named sets; each element is a box in packet space (`Box`): an address family, a
source and a destination (an identifier kind — bridge port, MAC or IP — and an aligned block of its values, or any)
and a transport part (aligned blocks of ``protocol << 16 | port``, or any). A set lookup finds at most one element
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
wider than stored blocks (a network over single addresses) finds the stored keys inside it by bisection.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any, NamedTuple

Block = tuple[int, int]  # (shift, key): the values v with v >> shift == key
Side = tuple[str, Block]  # (identifier kind: "if" | "mac" | "ip", block)

_ENUMERATE_BITS = 4  # enumerate at most 2**4 sub-blocks of a query block; else scan the level's keys
QUERY_BUDGET = 4096  # branches one TMR's query may visit before it settles for a subtree's highest layer


class Box(NamedTuple):
    """The packets one set element matches. ``None`` on a side or the transport part means any. (A named tuple:
    the compiler makes one per element, tens of thousands per apply.)"""

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
    """One dimension of the trie. Children are the next level's `_Level`; at the last level, the highest layer.
    Exact children are filed by (kind, shift), then key; `tops` holds the highest layer of each such group and
    `keys` its keys in order, so that a wider query block finds the keys it holds by bisection."""

    __slots__ = ("exact", "keys", "kinds", "none", "top", "tops")

    def __init__(self) -> None:
        self.top = -1
        self.exact: dict[tuple[str, int], dict[int, Any]] = {}
        self.keys: dict[tuple[str, int], list[int]] = {}
        self.tops: dict[tuple[str, int], int] = {}
        self.kinds: dict[str, Any] = {}
        self.none: Any = None


# A trie path is (src, dst, l4); the l4 "kind" is always "" and its blocks may be several.
_Value = tuple[str, tuple[Block, ...]] | None
_LAST = 2


def _insert(level: _Level, values: tuple[_Value, ...], depth: int, layer: int, done: set[Any]) -> None:
    """File one box's path under `level` at `layer`. `done` holds the kind branches this TMR has filed already:
    its boxes differ in their blocks, so their paths under a kind alone repeat (a group's ten MACs are one path
    under "mac"), and filing the same path at the same layer again changes nothing."""
    if layer > level.top:
        level.top = layer
    if depth == _LAST:
        _insert_leaf(level, values[depth], layer)
        return
    value = values[depth]
    if value is None:
        if level.none is None:
            level.none = _Level()
        _insert(level.none, values, depth + 1, layer, done)
        return
    kind, blocks = value
    for shift, key in blocks:
        group, found = _filed(level, kind, shift, key, layer)
        if found is None:
            found = group[key] = _Level()
        _insert(found, values, depth + 1, layer, done)
    by_kind = level.kinds.get(kind)
    if by_kind is None:
        by_kind = level.kinds[kind] = _Level()
    branch = (id(by_kind), values[depth + 1 :])
    if branch not in done:
        done.add(branch)
        _insert(by_kind, values, depth + 1, layer, done)


def _filed(level: _Level, kind: str, shift: int, key: int, layer: int) -> tuple[dict[int, Any], Any]:
    """The children filed under (kind, shift), made if new, with `layer` counted in their highest, and the child
    at `key` (None when new: the caller files it; its key is listed already)."""
    at = (kind, shift)
    group = level.exact.get(at)
    if group is None:
        group = level.exact[at] = {}
        level.keys[at] = []
        level.tops[at] = layer
    elif layer > level.tops[at]:
        level.tops[at] = layer
    found = group.get(key)
    if found is None:
        bisect.insort(level.keys[at], key)
    return group, found


def _insert_leaf(level: _Level, value: _Value, layer: int) -> None:
    """The last dimension: the children are layers (a stored block's highest)."""
    if value is None:
        if level.none is None or layer > level.none:
            level.none = layer
        return
    kind, blocks = value
    for shift, key in blocks:
        group, found = _filed(level, kind, shift, key, layer)
        if found is None or layer > found:
            group[key] = layer
    by_kind = level.kinds.get(kind)
    if by_kind is None or layer > by_kind:
        level.kinds[kind] = layer


def _highest(level: _Level, values: Sequence[_Value], depth: int, best: int, budget: list[int]) -> int:
    """The highest layer of a stored box overlapping `values` that beats `best` (else `best`). When the query has
    visited `QUERY_BUDGET` branches, the highest layer of a whole subtree stands in for the rest of it: never lower
    than the truth, so the order stays right, at the price of a layer more than needed."""
    if level.top <= best:
        return best
    if budget[0] <= 0:
        return level.top
    for child in _matching(level, values[depth], best, budget):
        if isinstance(child, int):  # a leaf, or a stand-in for branches too many to visit
            if child > best:
                best = child
        elif child.top > best:
            best = _highest(child, values, depth + 1, best, budget)
    return best


def _matching(level: _Level, value: _Value, best: int, budget: list[int]) -> list[Any]:
    """The children whose boxes overlap `value` on this dimension (or the highest layer among some of them)."""
    out: list[Any] = [] if level.none is None else [level.none]
    if value is None:  # any value: every stored box, whatever its kind
        out.extend(level.kinds.values())
        budget[0] -= len(out)
        return out
    kind, blocks = value
    if len(level.kinds) > 1 or kind not in level.kinds:
        out.extend(child for other, child in level.kinds.items() if other != kind)
    for (stored_kind, stored), group in level.exact.items():
        if stored_kind != kind or level.tops[(kind, stored)] <= best:
            continue
        for shift, key in blocks:
            if stored >= shift:
                found = group.get(key >> (stored - shift))
                if found is not None:
                    out.append(found)
            elif shift - stored <= _ENUMERATE_BITS:
                base = key << (shift - stored)
                found_all = (group.get(sub) for sub in range(base, base + (1 << (shift - stored))))
                out.extend(found for found in found_all if found is not None)
            else:
                width = shift - stored
                keys = level.keys[(kind, stored)]
                first, last = bisect.bisect_left(keys, key << width), bisect.bisect_left(keys, (key + 1) << width)
                if last - first > budget[0]:
                    out.append(level.tops[(kind, stored)])  # too many to look at: the highest of them all
                else:
                    budget[0] -= last - first
                    out.extend(group[sub] for sub in keys[first:last])
    budget[0] -= len(out)
    return out


def _values(box: Box) -> tuple[_Value, _Value, _Value]:
    return (
        None if box.src is None else (box.src[0], (box.src[1],)),
        None if box.dst is None else (box.dst[0], (box.dst[1],)),
        None if box.l4 is None else ("", box.l4),
    )


def apart_on_one_side(tmr_boxes: Sequence[Sequence[Box]]) -> bool:
    """Whether no two TMRs can overlap, seen on one side alone: on it every box names the same identifier kind with
    blocks of one size, and no TMR's block is another's. Blocks of one size meet only when they are the same block,
    so boxes of two TMRs then never meet. (A blocklist of addresses, or a VMN denied a list of single addresses.)"""
    return _apart_on("dst", tmr_boxes) or _apart_on("src", tmr_boxes)


def _apart_on(side: str, tmr_boxes: Sequence[Sequence[Box]]) -> bool:
    shape: tuple[str, int] | None = None
    owners: dict[tuple[int, int], int] = {}
    for i, own in enumerate(tmr_boxes):
        for box in own:
            named = box.dst if side == "dst" else box.src
            if named is None:
                return False  # any identifier on this side: it meets every other TMR's
            kind, (shift, key) = named
            if shape is None:
                shape = (kind, shift)
            elif shape != (kind, shift):
                return False
            if owners.setdefault((box.family, key), i) != i:
                return False  # another TMR's block
    return True


def assign_layers(tmr_boxes: Sequence[Sequence[Box]]) -> list[int]:
    """The layer of each TMR, given in priority order as the boxes of its elements (see the module docstring)."""
    if apart_on_one_side(tmr_boxes):
        return [0] * len(tmr_boxes)  # nothing overlaps anything: the trie would find the same, 30 times slower
    tries: dict[int, _Level] = {}
    layers: list[int] = []
    for own in tmr_boxes:
        paths = [(box.family, _values(box)) for box in own]
        best = -1
        budget = [QUERY_BUDGET]
        for family, values in paths:
            trie = tries.get(family)
            if trie is not None:
                best = _highest(trie, values, 0, best, budget)
        layer = best + 1
        layers.append(layer)
        done: set[Any] = set()
        for family, values in paths:
            trie = tries.get(family)
            if trie is None:
                trie = tries[family] = _Level()
            _insert(trie, values, 0, layer, done)
    return layers
