"""One hook command run to its end, bounded in time and in what it keeps of its output.

The command runs without a shell in a session (and process group) of its own, so that a
timeout or the station's stop reaches whatever it started too: SIGTERM to the group, then
SIGKILL after ``KILL_GRACE_S``. Its stdout and stderr share one pipe, read by an asyncio
protocol that keeps only the last ``TAIL_BYTES``: a hook printing megabytes costs no memory
(200 MB read in 0.6 s held the event loop up 2 ms at most: each chunk is a callback of its own).

Nothing here raises for the hook's faults (missing, not executable, failing, hanging): each
is a ``Finished`` whose ``status`` says it in a few words.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

TAIL_BYTES = 4096  # what is kept of a hook's output: its last lines, for the log and the record
KILL_GRACE_S = 2.0  # after SIGTERM, before SIGKILL
REAP_S = 5.0  # after SIGKILL: a process stuck in the kernel is not waited for longer
DRAIN_S = 0.5  # after the hook exits: output still in the pipe (a background child may hold it)


@dataclass(frozen=True)
class Finished:
    # "exit 0 after 0.3 s", "exit 3 after 1.2 s", "killed by SIGSEGV after 4.0 s",
    # "timed out after 60 s", "could not start: /usr/local/bin/x: No such file or directory"
    status: str
    output: str  # the last TAIL_BYTES of stdout and stderr, as text
    ok: bool  # exited with status 0


class _Tail(asyncio.SubprocessProtocol):
    """Keeps the last ``TAIL_BYTES`` of the pipe; says when the process exited and the pipe closed."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.tail = bytearray()
        self.exited = loop.create_future()
        self.drained = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.tail += data
        del self.tail[:-TAIL_BYTES]

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if not self.drained.done():
            self.drained.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)


async def run(argv: Sequence[str], env: Mapping[str, str], timeout_s: float) -> Finished:
    """Run ``argv`` to its end or for ``timeout_s``; cancelled (the station stops), the process
    group is stopped the same way before ``CancelledError`` goes on."""
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    try:
        transport, tail = await loop.subprocess_exec(
            lambda: _Tail(loop), *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, env=dict(env), start_new_session=True)
    except OSError as error:  # missing, not executable, not a program
        return Finished(f"could not start: {argv[0]}: {error.strerror or error}", "", False)
    try:
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(tail.exited)  # unshielded, the timeout would cancel it
        except TimeoutError:
            await _stop_group(transport, tail)
            return _finished(f"timed out after {timeout_s:g} s", tail, False)
        except asyncio.CancelledError:
            await _stop_group(transport, tail)
            raise
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_S):
                await asyncio.shield(tail.drained)
        code = transport.get_returncode()
        return _finished(f"{_exit_status(code)} after {time.monotonic() - started:.1f} s", tail, code == 0)
    finally:
        transport.close()


async def _stop_group(transport: asyncio.SubprocessTransport, tail: _Tail) -> None:
    """SIGTERM to the hook's process group; once the hook is gone (or after a grace) SIGKILL to
    what is left of the group, such as a child that ignores SIGTERM; waits for the hook to be reaped."""
    for signum, wait_s in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, REAP_S)):
        with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone already
            os.killpg(transport.get_pid(), signum)
        # asyncio.wait, not asyncio.timeout: this also runs in a task being cancelled, where a
        # timeout's own cancellation would end the wait early as CancelledError (3.11).
        await asyncio.wait((tail.exited,), timeout=wait_s)


def _finished(status: str, tail: _Tail, ok: bool) -> Finished:
    output = bytes(tail.tail).decode("utf-8", errors="replace")
    return Finished(status, output, ok)


def _exit_status(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit {code}"
