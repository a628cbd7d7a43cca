"""Impact replay: the explicit window, per-VMN counts, replacement of a TMR, and agreement with a brute-force count."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.factories import T0, make_flow, make_proposal
from vmshadow.domain.codec import proposal_from_json, proposal_to_json
from vmshadow.domain.flow import TCP, UDP, Flow
from vmshadow.domain.net import PortRange, Protocol
from vmshadow.domain.tmr import TMR, Action, Endpoint, TMRSet
from vmshadow.domain.vmn import VMN
from vmshadow.refinement.impact import (
    DEFAULT_WINDOW,
    MAX_EXAMPLES,
    Replay,
    replay_impact,
    rule_impact,
    window_start,
)

A = ipaddress.ip_address
VMNS = (VMN("vm1", addresses=(A("198.18.0.11"),)), VMN("vm2", addresses=(A("198.18.0.12"),)))
BASE = TMRSet(tmrs=(TMR("allow-all", 100, Endpoint.any(), Endpoint.any(), Action.ALLOW),), vmns=VMNS)
DENY_VM1 = TMR("deny-vm1", 50, Endpoint.vmn("vm1"), Endpoint.any(), Action.DENY)


def flow(n: int, age: timedelta, *, src: str = "198.18.0.11", dst: str = "198.18.0.12", port: int = 80) -> Flow:
    names = {"198.18.0.11": "vm1", "198.18.0.12": "vm2"}
    end = T0 - age
    return make_flow(
        n, src_ip=A(src), dst_ip=A(dst), dst_port=port, src_vmn=names.get(src), dst_vmn=names.get(dst),
        first_seen_at=end - timedelta(seconds=1), last_seen_at=end,
    )  # fmt: skip


def test_flows_that_ended_before_the_window_are_left_out() -> None:
    recent = [flow(i, timedelta(hours=i)) for i in range(5)]  # ended 0..4 h ago
    old = [flow(10 + i, timedelta(hours=25 + i)) for i in range(3)]  # ended more than a day ago
    impact = rule_impact(BASE, DENY_VM1, [*recent, *old], T0, DEFAULT_WINDOW)
    assert impact.flows_replayed == 5
    assert impact.newly_blocked_flows == 5
    assert impact.since == T0 - timedelta(hours=24)
    assert not set(impact.examples) & {f.community_id for f in old}


def test_the_window_is_configurable_and_none_replays_everything() -> None:
    flows = [flow(i, timedelta(hours=i)) for i in range(10)]
    assert rule_impact(BASE, DENY_VM1, flows, T0, timedelta(hours=3)).newly_blocked_flows == 4  # 0, 1, 2, 3 h
    everything = rule_impact(BASE, DENY_VM1, flows, T0, None)
    assert (everything.flows_replayed, everything.newly_blocked_flows, everything.since) == (10, 10, None)


def test_an_old_archive_is_replayed_up_to_its_newest_flow() -> None:
    # replaying last year's capture now: the window ends at its newest flow, not at an empty today
    flows = [flow(i, timedelta(days=365, hours=i)) for i in range(30)]
    impact = rule_impact(BASE, DENY_VM1, flows, T0, DEFAULT_WINDOW)
    assert impact.flows_replayed == 25  # ended 0..24 h before the newest flow
    assert window_start(flows, T0, DEFAULT_WINDOW) == T0 - timedelta(days=366)


@pytest.mark.parametrize("bad", [timedelta(0), timedelta(seconds=-1)])
def test_a_window_that_is_not_positive_is_refused(bad: timedelta) -> None:
    with pytest.raises(ValueError, match="impact window must be positive"):
        rule_impact(BASE, DENY_VM1, [flow(0, timedelta(0))], T0, bad)


def test_per_vmn_counts_a_flow_for_both_of_its_vmns_with_examples() -> None:
    between = [flow(i, timedelta(minutes=i)) for i in range(12)]  # vm1 -> vm2
    outside = [flow(20 + i, timedelta(minutes=i), dst="192.0.2.1") for i in range(3)]  # vm1 -> outside
    impact = rule_impact(BASE, DENY_VM1, [*between, *outside], T0, DEFAULT_WINDOW)
    per_vmn = {v.vmn: v for v in impact.per_vmn}
    assert (per_vmn["vm1"].newly_blocked_flows, per_vmn["vm2"].newly_blocked_flows) == (15, 12)
    assert per_vmn["vm1"].newly_allowed_flows == per_vmn["vm2"].newly_allowed_flows == 0
    assert len(per_vmn["vm2"].examples) == MAX_EXAMPLES
    assert set(per_vmn["vm2"].examples) <= {f.community_id for f in between}
    assert impact.vmns_affected == ("vm1", "vm2")


def test_moving_a_tmr_counts_the_flows_it_stops_deciding() -> None:
    # a deny moved behind the allow: its flows become allowed; the shortcut must still look at them
    tmrset = BASE.with_tmr(DENY_VM1)
    moved = TMR("deny-vm1", 150, Endpoint.vmn("vm1"), Endpoint.any(), Action.DENY)
    flows = [flow(i, timedelta(minutes=i)) for i in range(4)]
    impact = rule_impact(tmrset, moved, flows, T0, DEFAULT_WINDOW)
    assert (impact.newly_blocked_flows, impact.newly_allowed_flows) == (0, 4)


ADDRESSES = ["198.18.0.11", "198.18.0.12", "192.0.2.1"]
ENDPOINTS = [Endpoint.any(), Endpoint.vmn("vm1"), Endpoint.vmn("vm2"), Endpoint.network("198.18.0.0/31"),
             Endpoint.network("192.0.2.1")]  # fmt: skip
tmrs_strategy = st.builds(
    lambda i, prio, src, dst, action, proto, port, expired: TMR(
        f"t{i}", prio, src, dst, action, proto, (PortRange(port, port + 5),) if proto.has_ports and port else (),
        expires_at=T0 - timedelta(hours=1) if expired else None,
    ),
    st.integers(0, 5), st.integers(0, 4), st.sampled_from(ENDPOINTS), st.sampled_from(ENDPOINTS),
    st.sampled_from(list(Action)), st.sampled_from([Protocol.ANY, Protocol.TCP, Protocol.UDP]),
    st.integers(0, 85), st.booleans(),
)  # fmt: skip
flows_strategy = st.lists(
    st.builds(
        lambda n, src, dst, port, proto, hours: flow(n, timedelta(hours=hours), src=src, dst=dst, port=port)
        if proto == TCP
        else make_flow(n, protocol=UDP, src_ip=A(src), dst_ip=A(dst), dst_port=port, src_vmn=None, dst_vmn=None,
                       first_seen_at=T0 - timedelta(hours=hours, seconds=1), last_seen_at=T0 - timedelta(hours=hours)),
        st.integers(0, 10_000), st.sampled_from(ADDRESSES), st.sampled_from(ADDRESSES), st.integers(75, 90),
        st.sampled_from([TCP, UDP]), st.integers(0, 30),
    ),
    max_size=25,
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(st.lists(tmrs_strategy, max_size=5, unique_by=lambda t: t.id), tmrs_strategy, tmrs_strategy, flows_strategy,
       st.sampled_from(list(Action)))  # fmt: skip
def test_impact_equals_a_brute_force_count(
    tmrs: list[TMR], rule: TMR, other: TMR, flows: list[Flow], default: Action
) -> None:
    current = TMRSet(tmrs=tuple(tmrs), vmns=VMNS, default_action=default)
    proposed = current.without(rule.id).with_tmr(rule)

    def verdict(tmrset: TMRSet, f: Flow) -> Action:  # first active match by (priority, order), else the default
        for t in tmrset.tmrs:
            if (t.expires_at is None or t.expires_at > T0) and tmrset.matches(t, f):
                return t.action
        return default

    window = [f for f in flows if f.last_seen_at >= min(T0, max(g.last_seen_at for g in flows)) - DEFAULT_WINDOW]
    changed = [verdict(proposed, f) for f in window if verdict(current, f) is not verdict(proposed, f)]
    impact = rule_impact(current, rule, flows, T0, DEFAULT_WINDOW)
    assert impact.flows_replayed == len(window)
    assert impact.newly_blocked_flows == changed.count(Action.DENY)
    assert impact.newly_allowed_flows == changed.count(Action.ALLOW)
    assert impact == replay_impact(current, proposed, flows, T0), "the shortcut changes nothing"
    shared = Replay(current, flows, T0, DEFAULT_WINDOW)  # verdicts cached while asking for another rule first
    assert (shared.impact(other), shared.impact(rule)) == (
        rule_impact(current, other, flows, T0, DEFAULT_WINDOW),
        impact,
    )


def test_the_window_and_per_vmn_counts_survive_the_json_form_and_are_left_out_when_absent() -> None:
    impact = rule_impact(BASE, DENY_VM1, [flow(i, timedelta(minutes=i)) for i in range(3)], T0, DEFAULT_WINDOW)
    proposal = make_proposal(1, impact=impact)
    data = proposal_to_json(proposal)
    assert data["impact"]["since"] == impact.since.isoformat()  # type: ignore[union-attr]
    assert [v["vmn"] for v in data["impact"]["per_vmn"]] == ["vm1", "vm2"]
    assert proposal_from_json(data) == proposal
    bare = proposal_to_json(replace(proposal, impact=replace(impact, since=None, per_vmn=())))
    assert {"since", "per_vmn"}.isdisjoint(bare["impact"]), "proposals without them keep their former JSON"
