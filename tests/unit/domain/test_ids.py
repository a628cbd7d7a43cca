"""`flow_id` is `stable_id("flow", ...)`, only cheaper."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vmshadow.domain.ids import flow_id, stable_id


@given(st.text(), st.integers(min_value=0, max_value=2**63), st.text())
def test_flow_id_is_the_stable_id_of_a_flow(community_id: str, first_seen_ms: int, source: str) -> None:
    assert flow_id(community_id, first_seen_ms, source) == stable_id("flow", community_id, first_seen_ms, source)


def test_a_different_part_gives_a_different_id() -> None:
    assert flow_id("1:a", 1, "x.pcap") != flow_id("1:a", 2, "x.pcap") != flow_id("1:b", 2, "x.pcap")
