"""The layering of TMR elements (`nft_layers`) against its plain definition, computed pair by pair."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from vmshadow.enforcement.nft_layers import (
    Block,
    Box,
    apart_on_one_side,
    assign_layers,
    blocks_meet,
    boxes_meet,
    range_blocks,
)


@given(first=st.integers(0, 300), width=st.integers(0, 300))
def test_range_blocks_cover_the_range_exactly(first: int, width: int) -> None:
    last = first + width
    covered: list[int] = []
    for shift, key in range_blocks(first, last):
        covered.extend(range(key << shift, (key + 1) << shift))
    assert sorted(covered) == list(range(first, last + 1))  # every value once, nothing outside


def test_blocks_meet_when_one_holds_the_other() -> None:
    assert blocks_meet((8, 1), (0, 300))  # 256..511 holds 300
    assert not blocks_meet((8, 1), (0, 200))
    assert blocks_meet((0, 5), (0, 5))
    assert not blocks_meet((2, 1), (2, 2))


def _block(draw: st.DrawFn) -> Block:
    shift = draw(st.sampled_from((0, 0, 1, 3)))
    return shift, draw(st.integers(0, 15)) >> shift


@st.composite
def boxes(draw: st.DrawFn) -> Box:
    def side() -> tuple[str, Block] | None:
        if draw(st.booleans()):
            return None
        return draw(st.sampled_from(("ip", "ip", "mac", "if"))), _block(draw)

    l4 = None if draw(st.booleans()) else tuple(_block(draw) for _ in range(draw(st.integers(1, 2))))
    return Box(draw(st.sampled_from((4, 6))), side(), side(), l4)


def _reference(tmr_boxes: list[list[Box]]) -> list[int]:
    """layer(T) = 1 + the highest layer of an earlier TMR with a box meeting one of T's, pair by pair."""
    layers: list[int] = []
    for i, own in enumerate(tmr_boxes):
        below = [layers[j] for j in range(i) if any(boxes_meet(a, b) for a in own for b in tmr_boxes[j])]
        layers.append(max(below, default=-1) + 1)
    return layers


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(boxes(), min_size=1, max_size=3), max_size=25))
def test_layers_are_the_plain_definition(tmr_boxes: list[list[Box]]) -> None:
    assert assign_layers(tmr_boxes) == _reference(tmr_boxes)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(boxes(), min_size=1, max_size=3), max_size=25))
def test_no_two_tmrs_of_one_layer_overlap(tmr_boxes: list[list[Box]]) -> None:
    layers = assign_layers(tmr_boxes)
    for i in range(len(tmr_boxes)):
        for j in range(i):
            if layers[i] == layers[j]:
                assert not any(boxes_meet(a, b) for a in tmr_boxes[i] for b in tmr_boxes[j])


def test_different_identifiers_of_one_side_overlap() -> None:
    """A packet carries a MAC and an address at once: a MAC side and an address side can both match it."""
    by_mac = Box(4, ("mac", (0, 1)), None, None)
    by_address = Box(4, ("ip", (0, 7)), None, None)
    assert boxes_meet(by_mac, by_address)
    assert assign_layers([[by_mac], [by_address]]) == [0, 1]
    assert assign_layers([[by_address], [Box(4, ("ip", (0, 8)), None, None)]]) == [0, 0]
    assert assign_layers([[by_address], [Box(6, ("ip", (0, 7)), None, None)]]) == [0, 0], "other family"


def test_a_network_above_its_addresses_and_a_blocklist_in_one_layer() -> None:
    addresses = [[Box(4, ("ip", (0, n)), None, ((0, 6 << 16 | 22),))] for n in range(1000)]
    network = [Box(4, ("ip", (8, 1)), None, None)]  # 256..511: holds 256 of the addresses
    allow_after = [Box(4, ("ip", (0, 5000)), None, None)]
    layers = assign_layers([*addresses, network, allow_after])
    assert layers[:1000] == [0] * 1000
    assert layers[1000:] == [1, 0]


def test_boxes_that_share_a_path_under_their_kind_are_filed_once_and_still_found() -> None:
    """A group's members (several MACs, one port) are one path under "mac" alone; a later TMR of another kind meets
    it there, and one on another port does not."""
    group = [Box(4, ("mac", (0, member)), None, ((0, 80),)) for member in (1, 2, 3)]
    by_address = [Box(4, ("ip", (0, 9)), None, ((0, 80),))]
    other_port = [Box(4, ("ip", (0, 9)), None, ((0, 81),))]
    same_port_later = [Box(4, ("mac", (0, 7)), None, ((0, 80),))]
    tmr_boxes = [group, by_address, other_port, same_port_later]
    assert assign_layers(tmr_boxes) == _reference(tmr_boxes) == [0, 1, 0, 2]


@st.composite
def nearly_apart(draw: st.DrawFn) -> list[list[Box]]:
    """TMRs whose destinations are single blocks of one kind and size, mostly each its own (the shortcut's case),
    sometimes one shared or of another size or kind (not its case); sources and ports anything."""
    n = draw(st.integers(1, 25))
    keys = draw(st.lists(st.integers(0, 40), min_size=n, max_size=n, unique=draw(st.booleans())))
    odd = draw(st.sampled_from((None, None, ("ip", 1), ("mac", 0))))  # one box of another size or kind, or none
    odd_at = draw(st.integers(0, n - 1))
    tmrs = []
    for at, key in enumerate(keys):
        own = []
        for b in range(draw(st.integers(1, 3))):
            kind, shift = odd if odd is not None and at == odd_at and b == 0 else ("ip", 0)
            src = None if draw(st.booleans()) else (draw(st.sampled_from(("ip", "mac", "if"))), _block(draw))
            l4 = None if draw(st.booleans()) else (_block(draw),)
            own.append(Box(draw(st.sampled_from((4, 4, 6))), src, (kind, (shift, key >> shift)), l4))
        tmrs.append(own)
    return tmrs


@settings(max_examples=400, deadline=None)
@given(nearly_apart())
def test_the_shortcut_for_tmrs_apart_on_one_side_gives_the_plain_definition(tmr_boxes: list[list[Box]]) -> None:
    assert assign_layers(tmr_boxes) == _reference(tmr_boxes)
    if apart_on_one_side(tmr_boxes):
        assert _reference(tmr_boxes) == [0] * len(tmr_boxes)


def test_a_vmn_denied_single_addresses_is_one_layer_by_the_shortcut() -> None:
    vmn_sides = [("if", (0, 3)), ("mac", (0, 0x0200C6120001)), ("ip", (0, 0xC6120001))]
    tmrs = [[Box(4, side, ("ip", (0, 0xC6130000 + i)), ((0, 6 << 16 | 10_000 + i // 2),)) for side in vmn_sides]
            for i in range(1000)]  # fmt: skip
    assert apart_on_one_side(tmrs)
    assert assign_layers(tmrs) == [0] * 1000
    shared = [*tmrs, [Box(4, ("ip", (0, 0xC6120001)), ("ip", (0, 0xC6130000)), None)]]  # meets the first TMR
    assert not apart_on_one_side(shared)
    assert assign_layers(shared) == [0] * 1000 + [1]
    other_kind = [*tmrs, [Box(4, None, ("mac", (0, 7)), None)]]  # a MAC side meets every address side
    assert not apart_on_one_side(other_kind)
    assert assign_layers(other_kind) == [0] * 1000 + [1]
