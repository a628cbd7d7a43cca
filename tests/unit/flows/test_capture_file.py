"""Capture integrity: truncated, garbage, empty and missing files give a clear error naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.datadir import shared_data
from vmshadow.domain.errors import CaptureError
from vmshadow.flows.capture_file import check_capture
from vmshadow.flows.pcap import PcapSource

SYNSCAN = "ndpi/pcap/synscan.pcap"
PCAPNG = "ndpi/pcap/http.pcapng"  # a real pcapng (tcp_scan.pcapng is classic pcap inside)


def test_complete_captures_pass() -> None:
    info = check_capture(shared_data() / SYNSCAN)
    assert (info.format, info.records) == ("pcap", 2011)  # tcpdump -r count in ndpi/SOURCE.md
    assert check_capture(shared_data() / PCAPNG).format == "pcapng"


@pytest.mark.parametrize("name", [SYNSCAN, PCAPNG])
def test_truncated_capture_is_refused_with_the_place(tmp_path: Path, name: str) -> None:
    whole = (shared_data() / name).read_bytes()
    cut = tmp_path / "cut.cap"
    cut.write_bytes(whole[: len(whole) - 7])
    with pytest.raises(CaptureError, match=r"cut\.cap: truncated: .* at byte \d+"):
        check_capture(cut)
    with pytest.raises(CaptureError):
        list(PcapSource([cut]))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file, not a capture"),
        (b"GET / HTTP/1.1\r\n\r\n", "not a pcap or pcapng capture"),
        (b"\xd4\xc3\xb2\xa1\x02\x00", "truncated pcap header"),
    ],
)
def test_non_captures_are_refused(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.pcap"
    path.write_bytes(content)
    with pytest.raises(CaptureError, match=message):
        check_capture(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="no such file"):
        check_capture(tmp_path / "nope.pcap")
    with pytest.raises(CaptureError, match="is a directory"):
        check_capture(tmp_path)


def test_pcap_source_checks_every_file_before_producing_flows(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"junk")
    with pytest.raises(CaptureError, match=r"bad\.pcap"):
        PcapSource([shared_data() / SYNSCAN, bad])
