"""The retro-hunt's prefilter never drops a flow the detector would report (the detector is the oracle)."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.factories import make_flow
from vmshadow.analysis.detector import DetectorContext
from vmshadow.analysis.intel.intel_match import IntelMatchDetector, IntelMatchSettings
from vmshadow.domain.flow import Flow
from vmshadow.domain.indicator import Indicator, IndicatorType
from vmshadow.intel.index import IndicatorIndex
from vmshadow.intel.retro_hunt import touching
from vmshadow.ports.store import FlowKeys

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ADDRESSES = ["198.51.100.1", "198.51.100.2", "203.0.113.5", "2001:db8::1", "2001:db8::2", "::ffff:198.51.100.2"]
NAMES = ["", "a.evil.example", "evil.example", "good.example", "x.y.evil.example"]
PRINTS = ["", "t13d1516h2_8daaf6152771_b186095e22b6", "abcdefabcdefabcdefabcdefabcdefab"]


def keys_of(flow: Flow) -> FlowKeys:
    return (
        flow.id,
        str(flow.src_ip),
        str(flow.dst_ip),
        flow.dns_query,
        flow.sni,
        flow.http_host,
        flow.client_fingerprint,
        flow.server_fingerprint,
    )


indicators = st.lists(
    st.one_of(
        st.builds(lambda a: Indicator(IndicatorType.IPV4, a, "f"), st.sampled_from(ADDRESSES[:3])),
        st.builds(lambda a: Indicator(IndicatorType.IPV6, a, "f"), st.sampled_from(ADDRESSES[3:5])),
        st.just(Indicator(IndicatorType.CIDR, "198.51.100.0/30", "g")),
        st.builds(lambda n: Indicator(IndicatorType.DOMAIN, n, "f"), st.sampled_from(NAMES[2:4])),
        st.builds(lambda p: Indicator(IndicatorType.JA4, p, "f"), st.just(PRINTS[1])),
        st.builds(lambda p: Indicator(IndicatorType.JA3, p, "f"), st.just(PRINTS[2])),
    ).flatmap(
        lambda i: st.sampled_from(
            [i, replace(i, valid_until=T0), replace(i, valid_from=T0 + timedelta(days=9)), replace(i, revoked=True)]
        )
    ),
    min_size=1,
    max_size=6,
)

flows = st.lists(
    st.builds(
        lambda n, src, dst, dns, sni, host, cfp, sfp: make_flow(
            n,
            src_ip=ipaddress.ip_address(src),
            dst_ip=ipaddress.ip_address(dst),
            dns_query=dns,
            sni=sni,
            http_host=host,
            client_fingerprint=cfp,
            server_fingerprint=sfp,
        ),
        st.integers(0, 10_000),
        *(st.sampled_from(ADDRESSES) for _ in range(2)),
        *(st.sampled_from(NAMES) for _ in range(3)),
        *(st.sampled_from(PRINTS) for _ in range(2)),
    ),
    max_size=12,
    unique_by=lambda f: f.id,
)


@settings(max_examples=300, deadline=None)
@given(listed=indicators, archived=flows)
def test_touching_keeps_every_flow_the_detector_reports(listed: list[Indicator], archived: list[Flow]) -> None:
    chosen = set(touching(IndicatorIndex(listed), [keys_of(f) for f in archived]))
    for flow in archived:
        detector = IntelMatchDetector(IntelMatchSettings(repeat_after_s=0), DetectorContext(indicators=tuple(listed)))
        if detector.observe(flow):
            assert flow.id in chosen, f"prefilter dropped {flow}"


def test_touching_passes_over_flows_no_indicator_lists() -> None:
    index = IndicatorIndex([Indicator(IndicatorType.DOMAIN, "evil.example", "f")])
    listed = make_flow(1, sni="www.evil.example", dns_query="", http_host="")
    clean = make_flow(2, sni="good.example", dns_query="", http_host="", client_fingerprint="", server_fingerprint="")
    assert list(touching(index, [keys_of(listed), keys_of(clean)])) == [listed.id]
