"""SHA-1 and SHA-256 of a stream in one pass, each digest in its own thread.

hashlib releases the GIL while it hashes a large buffer, so the two digests run on
two cores at once and SHA-1 costs almost nothing on top of SHA-256 (a Raspberry
Pi 4 has no SHA instructions: this is most of an 8 GB verify). Data moves
through a small ring of reused buffers: no allocation per chunk, bounded memory.
"""
from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CHUNK_SIZE = 1 << 20
RING_DEPTH = 8

Progress = Callable[[int], None]  # called with the bytes done so far


@dataclass(frozen=True)
class Digests:
    size: int
    sha1: str
    sha256: str


class DualDigest:
    """Feed it with ``feed(readinto)``; use as a context manager so the threads always stop."""

    def __init__(self, chunk_size: int = CHUNK_SIZE, depth: int = RING_DEPTH) -> None:
        self._ring = [bytearray(chunk_size) for _ in range(depth)]
        self._filled = 0  # chunks handed to the hashers so far
        self._waited = 0  # chunks both hashers are known to be done with
        self._size = 0
        self._hashes = (hashlib.sha1(), hashlib.sha256())
        self._todo: list[queue.SimpleQueue[tuple[int, int] | None]] = [queue.SimpleQueue() for _ in self._hashes]
        self._done: list[queue.SimpleQueue[int]] = [queue.SimpleQueue() for _ in self._hashes]
        self._threads = [threading.Thread(target=self._hash, args=(n,), daemon=True, name=f"ipsw-digest-{n}")
                         for n in range(len(self._hashes))]
        for thread in self._threads:
            thread.start()

    def __enter__(self) -> DualDigest:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def feed(self, readinto: Callable[[memoryview], int], sink: Callable[[memoryview], object] | None = None,
             progress: Progress | None = None) -> int:
        """Hash what ``readinto`` yields until it returns 0, also giving each chunk to ``sink``."""
        fed = 0
        while True:
            slot = self._take_slot()
            view = memoryview(self._ring[slot])
            got = readinto(view)
            if not got:
                return fed
            if sink is not None:
                sink(view[:got])
            for todo in self._todo:
                todo.put((slot, got))
            self._filled += 1
            self._size += got
            fed += got
            if progress is not None:
                progress(self._size)

    def result(self) -> Digests:
        self._stop()
        return Digests(self._size, self._hashes[0].hexdigest(), self._hashes[1].hexdigest())

    def _take_slot(self) -> int:
        # The slot last held chunk (filled - depth): wait until both hashers are past it (they work in order).
        while self._waited <= self._filled - len(self._ring):
            for done in self._done:
                done.get()
            self._waited += 1
        return self._filled % len(self._ring)

    def _hash(self, n: int) -> None:
        update, todo, done = self._hashes[n].update, self._todo[n], self._done[n]
        while (job := todo.get()) is not None:
            slot, length = job
            update(memoryview(self._ring[slot])[:length])
            done.put(slot)

    def _stop(self) -> None:
        if self._threads:
            for todo in self._todo:
                todo.put(None)
            for thread in self._threads:
                thread.join()
            self._threads = []


def file_digests(path: Path, progress: Progress | None = None) -> Digests:
    with path.open("rb", buffering=0) as stream, DualDigest() as digest:
        digest.feed(stream.readinto, progress=progress)  # type: ignore[arg-type]
        return digest.result()
