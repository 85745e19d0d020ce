"""The simulated restore engine, run inside a worker in place of pymobiledevice3's ``Restore``.

It walks the real phase sequence (``phases.sequence``); the image phase reads the IPSW's OS
image through the same reader the real restore uses, paced at the simulated USB rate.
Timed phases last their nominal duration divided by ``SimParams.speed``. An injected
failure ends the restore with the kind and retryability the real worker would report, or
(``effect``) kills the worker with SIGKILL, leaves it hanging for the timeout to end, or
pauses it there once.
"""
from __future__ import annotations

import asyncio
import logging
import os
import plistlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import BinaryIO

from hw.ipsw_archive import open_member
from hw.worker import phases
from hw.worker.messages import RETRYABLE, Failed, Kind, Phase, WorkerFailure
from hw.worker.reporter import Reporter
from hw.worker.request import InjectedFailure, RestoreRequest, SimParams

log = logging.getLogger(__name__)

STEPS = 50  # progress points per timed phase
CHUNK = 1 << 20  # bytes per image read, as ASR's payload loop reads in 128 KiB..1 MiB pieces
GRANT = 16 << 20  # most bytes per progress report (and per request to a shared link)
MANIFEST = "BuildManifest.plist"
PAUSE_S = 0.5  # an injected pause, in real seconds: long enough for a busy station to catch up
_paused = False  # one restore per worker process: its pause is taken once


async def run(request: RestoreRequest, reporter: Reporter) -> None:
    params = request.sim or SimParams()
    for phase in phases.sequence(request.mode):
        if phase == phases.RESTORE_IMAGE:
            await _send_image(request.ipsw, params, reporter)
        else:
            await _timed(phase, phases.TYPICAL_SECONDS[phase] / params.speed, params.fail, reporter)


async def _timed(phase: str, seconds: float, fail: InjectedFailure | None, reporter: Reporter) -> None:
    for step in range(STEPS + 1):
        percent = 100.0 * step / STEPS
        reporter.phase(phase, percent)
        await _maybe_fail(fail, phase, percent, reporter)
        if step < STEPS:
            await asyncio.sleep(seconds / STEPS)


async def _send_image(ipsw: str | None, params: SimParams, reporter: Reporter) -> None:
    phase = phases.RESTORE_IMAGE
    with _os_image(ipsw, params.image_bytes) as (image, size):
        reporter.phase(phase, 0.0)
        await _maybe_fail(params.fail, phase, 0.0, reporter)
        async with _link(params, size) as carry:
            sent, step = 0, min(GRANT, max(CHUNK, size // 100))  # about every 1 %
            while sent < size:
                piece = min(step, size - sent)
                for at in range(0, piece, CHUNK):  # read as ASR does, a piece at a time
                    if not image.read(min(CHUNK, piece - at)):
                        raise WorkerFailure(Failed(f"OS image ended at byte {sent + at} of {size}",
                                                   Kind.INTERNAL, False))
                await carry(piece)
                sent += piece
                percent = 100.0 * sent / size
                reporter.phase(phase, percent)
                await _maybe_fail(params.fail, phase, percent, reporter)


@asynccontextmanager
async def _link(params: SimParams, size: int) -> AsyncIterator[Callable[[int], Awaitable[None]]]:
    """What carries the image: the port's shared USB link, or a link of its own at ``usb_rate``."""
    rate = params.usb_rate * params.speed
    if params.link_socket is None:
        log.info("sending %d bytes of OS image at %.1f MB/s", size, rate / 1e6)
        loop = asyncio.get_running_loop()
        start, carried = loop.time(), 0

        async def paced(piece: int) -> None:
            nonlocal carried
            carried += piece
            await asyncio.sleep(max(0.0, start + carried / rate - loop.time()))
        yield paced
        return
    log.info("sending %d bytes of OS image over USB link %s", size, params.link)
    reader, writer = await asyncio.open_unix_connection(params.link_socket)
    queued = 0  # pieces asked for and not yet answered

    async def answered() -> None:
        nonlocal queued
        answer = (await reader.readline()).decode("ascii", "replace").strip()
        queued -= 1
        if answer != "ok":  # the link failed this transfer, or the station went away
            raise WorkerFailure(Failed(answer.removeprefix("fail ") or "the USB link closed", Kind.USB, True))

    async def shared(piece: int) -> None:
        nonlocal queued
        writer.write(f"send {piece}\n".encode())
        queued += 1
        while queued > 1:  # one piece queued behind the one on the wire: the link never waits for us
            await answered()
    try:
        writer.write(f"open {params.link} {size}\n".encode())
        yield shared
        while queued:
            await answered()
    finally:
        writer.close()


async def _maybe_fail(fail: InjectedFailure | None, phase: str, percent: float, reporter: Reporter) -> None:
    global _paused
    if fail is None or fail.phase != phase or percent < fail.percent:
        return
    if fail.effect == "pause":
        if not _paused:
            _paused = True
            reporter.send(Phase(phase, percent))  # this very point, whatever the throttle dropped
            await asyncio.sleep(PAUSE_S)
        return
    if fail.effect == "kill":
        log.warning("simulated SIGKILL in %s at %.0f%%", phase, percent)
        os.kill(os.getpid(), signal.SIGKILL)
    if fail.effect == "hang":
        log.warning("simulated hang in %s at %.0f%%: no report until stopped", phase, percent)
        await asyncio.Event().wait()
    retryable = RETRYABLE[fail.kind] if fail.retryable is None else fail.retryable
    reason = fail.reason or f"simulated {fail.kind.value} failure in {phase} at {percent:.0f}%"
    raise WorkerFailure(Failed(reason, fail.kind, retryable))


class _Zeros:
    """A synthetic OS image: the byte count is what matters to pacing and progress."""

    _block = bytes(CHUNK)

    def read(self, size: int) -> bytes:
        return self._block[:size]


@contextmanager
def _os_image(ipsw: str | None, synthetic_size: int) -> Iterator[tuple[_Zeros | BinaryIO, int]]:
    if ipsw is None:
        yield _Zeros(), synthetic_size
        return
    try:
        member = _os_image_member(ipsw)
        image, size = _open_member(ipsw, member)
    except Exception as error:  # IpswError, OSError, zip and plist errors: all mean an unusable IPSW
        raise WorkerFailure(Failed(f"cannot read the OS image of {os.path.basename(ipsw)}: {error}",
                                   Kind.INTERNAL, False)) from None
    with image:
        yield image, size


def _os_image_member(ipsw: str) -> str:
    """The OS image's member name, from the first build identity (all identities share it)."""
    stream, _ = _open_member(ipsw, MANIFEST)
    with stream:
        manifest = plistlib.loads(stream.read())
    return manifest["BuildIdentities"][0]["Manifest"]["OS"]["Info"]["Path"]


def _open_member(ipsw: str, name: str) -> tuple[BinaryIO, int]:
    """A member and its size, through the IPSW reader (O(1) seeks on stored members)."""
    stream = open_member(ipsw, name)
    size = stream.seek(0, os.SEEK_END)
    stream.seek(0)
    return stream, size
