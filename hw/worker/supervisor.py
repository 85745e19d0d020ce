"""Run one restore in a worker process and turn its report lines into the station's reports.

The station awaits ``run_restore`` in the port's task. It returns when the worker reports
"done" and raises ``WorkerError`` (a ``hw.phones.RestoreError``) on "failed", on a malformed
line, when the worker dies, and on timeout. Cancelling the task stops the worker: SIGTERM,
then SIGKILL after ``TERM_GRACE``; either way it is reaped and both descriptors are closed.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable

from hw.phones import RestoreError, RestoreProgress, RestoreReport, TrustRequest
from hw.worker.launcher import ForkServer, WorkerHandle, WorkerStartError, default_server
from hw.worker.messages import Done, Failed, Kind, MalformedMessage, Phase, Status, Trust, decode
from hw.worker.request import RestoreRequest

log = logging.getLogger(__name__)

TERM_GRACE = 3.0  # s between SIGTERM and SIGKILL
EXIT_WAIT = 5.0  # s for a worker to exit after its last line, or for the server to report a kill
MAX_LINE = 1 << 16


class WorkerError(RestoreError):
    """A failed restore with the worker's classification (``kind``) beside ``retryable``."""

    def __init__(self, reason: str, retryable: bool, kind: Kind) -> None:
        super().__init__(reason, retryable)
        self.kind = kind


async def run_restore(request: RestoreRequest, report: Callable[[RestoreReport], None], *,
                      server: ForkServer | None = None) -> None:
    try:
        worker = await (server or default_server()).spawn(request)
    except WorkerStartError as error:
        raise WorkerError(f"cannot start the restore worker: {error}", False, Kind.INTERNAL) from None
    log.info("%s: worker %d started", request.label, worker.pid)
    try:
        async with asyncio.timeout(request.timeout):
            await _follow(worker, request.label, report)
    except TimeoutError:
        raise WorkerError(f"restore timed out after {request.timeout:g} s", True, Kind.TIMEOUT) from None
    finally:
        await _stop(worker, request.label)


async def _follow(worker: WorkerHandle, label: str, report: Callable[[RestoreReport], None]) -> None:
    lines = _LineReader(worker.report_fd)
    while True:
        line = await lines.readline()
        if line is None:
            code = await _exit_code(worker)
            raise WorkerError(f"restore worker died ({_describe(code)})", code < 0, Kind.INTERNAL)
        try:
            message = decode(line)
        except MalformedMessage as error:
            raise WorkerError(f"restore worker protocol error: {error}", False, Kind.INTERNAL) from None
        match message:
            case Phase(phase, percent):
                report(RestoreProgress(phase, percent))
            case Trust(reason):
                report(TrustRequest(reason))
            case Status(text, code):
                log.info("%s: %s%s", label, text, "" if code is None else f" (status {code})")
            case Done():
                code = await _exit_code(worker)
                if code != 0:
                    log.warning("%s: worker reported done but exited with %s", label, _describe(code))
                return
            case Failed(reason, kind, retryable):
                raise WorkerError(reason, retryable, kind)


async def _exit_code(worker: WorkerHandle) -> int:
    try:
        return await _wait(worker, EXIT_WAIT)
    except TimeoutError:  # it closed its pipe but lingers: the stop that follows kills it
        return -signal.SIGKILL


async def _wait(worker: WorkerHandle, seconds: float) -> int:
    # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel (CPython gh-86296).
    async with asyncio.timeout(seconds):
        return await worker.wait()


async def _stop(worker: WorkerHandle, label: str) -> None:
    try:
        if worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
            try:
                await _wait(worker, TERM_GRACE)
            except TimeoutError:
                log.warning("%s: worker %d ignored SIGTERM; killing it", label, worker.pid)
                worker.send_signal(signal.SIGKILL)
                await _wait(worker, EXIT_WAIT)
            log.info("%s: worker %d stopped (%s)", label, worker.pid, _describe(worker.returncode or 0))
    except BaseException:
        # Cancelled again (or the server is stuck): no more waiting. Closing our end makes the
        # server kill the worker and reap it; there is no zombie either way.
        worker.send_signal(signal.SIGKILL)
        raise
    finally:
        worker.close()


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class _LineReader:
    """Lines from a pipe without blocking the loop; None at EOF (a partial last line is dropped)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = bytearray()
        os.set_blocking(fd, False)

    async def readline(self) -> bytes | None:
        while (end := self._buffer.find(b"\n")) < 0:
            if len(self._buffer) > MAX_LINE:
                raise WorkerError(f"restore worker protocol error: line longer than {MAX_LINE} bytes",
                                  False, Kind.INTERNAL)
            data = await self._read()
            if not data:
                return None
            self._buffer += data
        line = bytes(self._buffer[:end])
        del self._buffer[:end + 1]
        return line

    async def _read(self) -> bytes:
        try:
            return os.read(self._fd, MAX_LINE)
        except BlockingIOError:
            pass
        loop = asyncio.get_running_loop()
        readable = loop.create_future()
        loop.add_reader(self._fd, lambda: readable.done() or readable.set_result(None))
        try:
            await readable
        finally:
            loop.remove_reader(self._fd)
        return os.read(self._fd, MAX_LINE)
