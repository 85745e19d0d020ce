"""One pass, two digests: the same as hashlib's, at every chunk boundary."""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from station.ipsw.digest import DualDigest, file_digests


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 5 * 4096 + 17])
def test_matches_hashlib_across_ring_reuse(size: int) -> None:
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    stream = io.BytesIO(data)
    with DualDigest(chunk_size=4096, depth=2) as digest:
        assert digest.feed(stream.readinto) == size
        result = digest.result()
    assert (result.size, result.sha1, result.sha256) == (
        size, hashlib.sha1(data).hexdigest(), hashlib.sha256(data).hexdigest())


def test_two_feeds_and_a_sink_see_every_byte_once() -> None:
    first, second = b"a" * 10_000, b"b" * 7_000
    seen = bytearray()
    with DualDigest(chunk_size=1024, depth=3) as digest:
        digest.feed(io.BytesIO(first).readinto)
        digest.feed(io.BytesIO(second).readinto, sink=seen.extend)
        result = digest.result()
    assert bytes(seen) == second
    assert result.sha256 == hashlib.sha256(first + second).hexdigest()


def test_file_digests_report_progress(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 3_000_000)
    done: list[int] = []
    assert file_digests(path, done.append).sha1 == hashlib.sha1(b"x" * 3_000_000).hexdigest()
    assert done[-1] == 3_000_000


def test_a_failing_sink_stops_the_threads() -> None:
    def sink(_: memoryview) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError), DualDigest(chunk_size=1024, depth=2) as digest:
        digest.feed(io.BytesIO(b"x" * 10_000).readinto, sink=sink)
