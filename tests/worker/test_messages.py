from __future__ import annotations

import os

import pytest

from hw.worker.messages import Done, Failed, Kind, MalformedMessage, Phase, Status, Trust, decode, encode
from hw.worker.reporter import Reporter


@pytest.mark.parametrize("message", [
    Phase("restore_image", 42.5), Status("restored: disk failure", 6), Status("waiting"), Trust(),
    Done(), Failed("TSS refused", Kind.NETWORK, True), Failed("status 14", Kind.DEVICE_REJECTED, False),
])
def test_every_message_survives_a_round_trip_as_one_line(message):
    line = encode(message)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode(line) == message


@pytest.mark.parametrize("line", [
    b"", b"{", b"[1]", b'"done"', b'{"type": "nope"}', b'{"phase": "x"}',
    b'{"type": "phase", "phase": "x"}',
    b'{"type": "phase", "phase": "", "percent": 1}',
    b'{"type": "phase", "phase": "x", "percent": 101}',
    b'{"type": "phase", "phase": "x", "percent": true}',
    b'{"type": "phase", "phase": "x", "percent": NaN}',
    b'{"type": "failed", "reason": "r", "kind": "cosmic", "retryable": true}',
    b'{"type": "failed", "reason": "r", "kind": "usb", "retryable": 1}',
    b'{"type": "status", "text": "t", "code": "six"}',
    b"\xff\xfe{}",
])
def test_malformed_lines_raise_one_line_errors(line):
    with pytest.raises(MalformedMessage) as caught:
        decode(line)
    assert "\n" not in str(caught.value)


def read_lines(fd: int) -> list:
    os.set_blocking(fd, False)
    data = b""
    try:
        while chunk := os.read(fd, 65536):
            data += chunk
    except BlockingIOError:
        pass
    return [decode(line) for line in data.splitlines()]


def test_reporter_keeps_percent_growing_within_a_phase_and_throttles():
    read, write = os.pipe()
    now = [0.0]
    reporter = Reporter(write, min_interval=1.0, clock=lambda: now[0])
    reporter.phase("a", 10)
    reporter.phase("a", 5)  # backwards: dropped
    reporter.phase("a", 20)  # too soon: dropped
    now[0] = 2.0
    reporter.phase("a", 30)
    reporter.phase("a", 100)  # completion is never throttled
    reporter.phase("b")
    reporter.done()
    assert read_lines(read) == [Phase("a", 10), Phase("a", 30), Phase("a", 100), Phase("b", 0), Done()]
    os.close(read)
    os.close(write)
