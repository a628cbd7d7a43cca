"""The lab's HTTP sink reads whole uploads, however the client frames them, so scenarios push what they claim."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.httpserve import serving
from vmshadow.lab.scenarios.servers import _Handler, _NamespaceHTTPServer

UPLOAD_BYTES = 300_000  # several of the sink's 64 KiB reads, and more than socket buffers hold


@pytest.fixture
def sink() -> Iterator[str]:
    with serving(_NamespaceHTTPServer(("127.0.0.1", 0), _Handler)) as port:
        yield f"http://127.0.0.1:{port}/drop"


def uploaded(argv: list[str]) -> tuple[int, str]:
    """curl's own count of the body bytes it sent, and the answer's body."""
    done = subprocess.run(
        [*argv, "-s", "-m", "20", "-w", "\n%{size_upload}"],
        input=b"x" * UPLOAD_BYTES, capture_output=True, check=True, timeout=30,
    )  # fmt: skip
    answer, _, size = done.stdout.decode().rpartition("\n")
    return int(float(size)), answer


# curl is a Debian package the scenarios need (scripts/install puts it in); without it there is nothing to drive.
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize(
    "framing",
    [["-T", "-"], ["--data-binary", "@-"], ["-H", "Expect:", "-T", "-"]],
    ids=["chunked", "content-length", "chunked-no-expect"],
)
def test_the_sink_reads_the_whole_upload_before_answering(sink: str, framing: list[str]) -> None:
    sent, answer = uploaded(["curl", *framing, sink])
    assert answer.strip() == "ok"
    assert sent >= UPLOAD_BYTES  # chunked framing adds a few bytes of chunk headers
