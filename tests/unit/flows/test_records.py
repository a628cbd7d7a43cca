"""nfstream's meter hands over compact `FlowRecord`s to `PcapSource`: the same flows as from whole `NFlow`s."""

from __future__ import annotations

from typing import Any

import nfstream.meter
import nfstream.streamer
import pytest
from nfstream import NFStreamer
from nfstream.flow import NFlow

from tests.datadir import shared_data
from vmshadow.domain.flow import Flow
from vmshadow.flows import pcap, records
from vmshadow.flows.pcap import N_DISSECTIONS, PcapSource, to_flow
from vmshadow.flows.records import FlowRecord, compact_records

# TLS (SNI, JA4), DNS, HTTP (host, user agent), IPv6 and scans: every field `to_flow` reads has values to compare
CAPTURES = (
    "ndpi/pcap/dns-tunnel-iodine.pcap",
    "ndpi/pcap/synscan.pcap",
    "zeek/traces/ssh/sshguess.pcap",
    "ndpi/pcap/tls_malicious_sha1.pcapng",
    "ndpi/pcap/http_ipv6.pcap",
    "ndpi/pcap/http-manipulated.pcap",
)


def whole(path: str) -> list[NFlow]:
    return list(NFStreamer(source=path, n_dissections=N_DISSECTIONS, statistical_analysis=True, n_meters=1))


def test_pcap_source_gives_the_flows_whole_records_give() -> None:
    paths = [shared_data() / c for c in CAPTURES]
    expected = [to_flow(nf, PcapSource(paths).vmn_map, str(path)) for path in paths for nf in whole(str(path))]
    got = list(PcapSource(paths))
    assert got == expected
    assert any(f.sni for f in got)
    assert any(f.dns_query for f in got)
    assert any(f.user_agent for f in got)
    assert any(f.client_fingerprint for f in got)


def test_the_streamer_hands_over_compact_records_and_nfstream_is_left_as_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handed: list[type] = []

    def spy(nf: object, *args: Any) -> Flow:
        handed.append(type(nf))
        return to_flow(nf, *args)

    monkeypatch.setattr(pcap, "to_flow", spy)
    assert len(list(PcapSource([shared_data() / CAPTURES[2]]))) > 10
    assert set(handed) == {FlowRecord}, "the meter pickled compact records"
    assert "__reduce__" not in NFlow.__dict__, "the change is undone once the meter runs"
    assert (NFlow.__init__, NFlow.sync) == (records._nflow_init, records._nflow_sync)
    assert (nfstream.streamer.meter_workflow, nfstream.meter.meter_scan) == (
        records._meter_workflow,
        records._meter_scan,
    )
    assert {type(nf) for nf in whole(str(shared_data() / CAPTURES[2]))} == {NFlow}


def test_a_record_has_every_field_an_nflow_has_by_that_name() -> None:
    assert set(FlowRecord._fields) <= set(NFlow.__slots__)


def test_blocks_in_several_threads_undo_the_change_only_when_the_last_ends() -> None:
    with compact_records():
        with compact_records():
            assert "__reduce__" in NFlow.__dict__
        assert "__reduce__" in NFlow.__dict__, "an outer block still runs"
    assert "__reduce__" not in NFlow.__dict__


class _CountingStreamer(NFStreamer):  # type: ignore[misc]
    """An NFStreamer that notes the type of every item its queue handed over."""

    handed: list[type]

    def __iter__(self) -> Any:
        self.handed = []
        for item in super().__iter__():
            self.handed.append(type(item))
            yield item


def test_the_meter_hands_flows_over_in_batches_and_the_queue_holds_as_many_flows() -> None:
    streamer = _CountingStreamer(
        source=str(shared_data() / "ndpi/pcap/synscan.pcap"),
        n_dissections=N_DISSECTIONS,
        statistical_analysis=True,
        n_meters=1,
    )
    flows = list(records.compact_flows(streamer))
    assert len(flows) > 1000
    assert set(streamer.handed) == {records.FlowBatch}
    assert len(streamer.handed) <= len(flows) / 100, "a queue item per flow again"
    assert all(isinstance(f, FlowRecord) for f in flows)
    queue = streamer._mp_context.Queue(maxsize=32767)  # what nfstream asks for: 32,767 flows' worth of items
    assert queue._maxsize == 256, "at most 65,536 flows of full batches, twice nfstream's bound"


def test_a_streamer_without_the_record_fields_is_refused_before_its_meter_starts() -> None:
    streamer = NFStreamer(source=str(shared_data() / CAPTURES[2]), n_dissections=N_DISSECTIONS, n_meters=1)
    with pytest.raises(ValueError, match="statistical_analysis"):
        next(records.compact_flows(streamer))
