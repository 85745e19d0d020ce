"""Tells systemd how the station is: ready, alive (the watchdog), a one-line status, stopping.

This is systemd's notification protocol, sd_notify(3), done with the standard library
(the reference client is `sd_pid_notify_with_fds` in systemd's
src/libsystemd/sd-daemon/sd-daemon.c; newer editions of the man page carry a standalone
version of the same few lines):
one datagram of newline-separated `KEY=VALUE` fields, sent to the AF_UNIX socket named
by $NOTIFY_SOCKET. A name starting with `@` is in Linux's abstract namespace (the `@`
becomes a NUL byte). Without $NOTIFY_SOCKET (a laptop, the tests, a shell) every call
is a no-op.

Why the watchdog is fed from a task on the station's own loop: systemd restarts the
service when no `WATCHDOG=1` arrives within $WATCHDOG_USEC, and the loop is what a hung
station loses first (buttons, display and phones all run on it). A thread would keep
feeding a dead loop. We send every half of the period, as sd_watchdog_enabled(3) advises.

systemd stops watching the watchdog as soon as the service leaves the running state
(`service_set_state` in src/core/service.c stops it in every state but start-post,
running and reload); `STOPPING=1` moves it to stop-sigterm, where TimeoutStopSec= runs
instead. A graceful stop that lets restores finish outlasts that timeout only by asking,
from the loop, for more time (`EXTEND_TIMEOUT_USEC=`, honoured beyond the original
TimeoutStopSec=): a station that hangs while stopping is killed when the last extension
runs out, not after the longest restore.

Nothing here raises into the station: a send that fails is logged once (then at debug
level, until one succeeds again), and the socket is non-blocking, so a full queue on
systemd's side never stalls the loop.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping

from station.machine import State
from station.snapshot import Snapshot

log = logging.getLogger("station.systemd")

STATUS_S = 1.0  # how often the status line is checked for a change (sent only when changed)
# While stopping: systemd's stop timeout extended by this much, asked for again this often
# (EXTEND_TIMEOUT_USEC, sd_notify(3)), so only a live loop keeps a graceful stop going.
EXTEND_BY_S = 60.0
EXTEND_EVERY_S = 15.0
_EXTEND = f"EXTEND_TIMEOUT_USEC={int(EXTEND_BY_S * 1e6)}"

# The order states are listed in the status line: what needs a person, then what is busy.
_STATUS_ORDER = (State.NEEDS_CONFIRM, State.NEEDS_TRUST, State.LOCKED, State.REFUSED,
                 State.FAILED, State.RESTORING, State.VERIFYING, State.QUEUED,
                 State.CHECKING_LOCK, State.IDENTIFIED, State.DETECTING, State.DONE)


def status_line(snapshot: Snapshot) -> str:
    """One line for `systemctl status`: "4 ports: 1 restoring, 1 done, 1 locked; NO NETWORK"."""
    counts = {state: 0 for state in _STATUS_ORDER}
    for port in snapshot.ports:
        if port.state in counts:
            counts[port.state] += 1
    busy = [f"{n} {state.value.replace('_', ' ')}" for state, n in counts.items() if n]
    line = f"{len(snapshot.ports)} ports: {', '.join(busy) if busy else 'all empty'}"
    if snapshot.faults:
        line += "; " + ", ".join(snapshot.faults)
    return line


def _address(name: str) -> str | None:
    """The socket address for $NOTIFY_SOCKET, or None for a kind we do not speak."""
    if name.startswith("@") and len(name) > 1:
        return "\0" + name[1:]  # abstract namespace
    if name.startswith("/"):
        return name
    return None  # e.g. systemd 254's "vsock:CID:PORT", for virtual machines: not ours


class Notifier:
    """The station's side of sd_notify; `status` gives the snapshot the status line is made of."""

    def __init__(self, status: Callable[[], Snapshot] | None = None, *,
                 environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._status = status
        self._sent_status: str | None = None
        self._stopping = False
        self._failing = False
        self._address: str | None = None
        name = env.get("NOTIFY_SOCKET", "")
        if name:
            self._address = _address(name)
            if self._address is None:
                log.warning("systemd: NOTIFY_SOCKET=%r is not a path or an abstract socket; "
                            "not notifying", name)
        self.watchdog_s = _watchdog_s(env)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *fields: str) -> bool:
        """Send one datagram of `KEY=VALUE` fields; True when systemd got it (or nobody asked)."""
        if self._address is None or not fields:
            return True
        message = "\n".join(fields).encode("utf-8", "replace")
        try:
            # A socket per message, as sd-daemon.c does: nothing to close, nothing inherited.
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.sendto(message, self._address)
        except OSError as error:
            (log.debug if self._failing else log.warning)(
                "systemd: cannot notify %s: %s", self._address.replace("\0", "@"), error)
            self._failing = True
            return False
        if self._failing:
            log.info("systemd: notifying again")
            self._failing = False
        return True

    def ready(self) -> None:
        """The station is up: its tasks are started and it takes phones."""
        self._sent_status = self._status_line()
        self.notify("READY=1", *self._status_field(self._sent_status))

    def stopping(self) -> None:
        """The station is stopping: systemd's stop timeout (not the watchdog) runs from here."""
        line = self._status_line()
        self._sent_status = "stopping" if line is None else f"stopping; {line}"
        self._stopping = True
        self.notify("STOPPING=1", f"STATUS={self._sent_status}", _EXTEND)

    async def run(self) -> None:
        """Feed the watchdog every half period (while stopping: extend the stop timeout) and
        send the status line when it changes.

        Runs on the station's loop until cancelled: a loop that is stuck stops feeding it.
        """
        if not self.enabled:
            return
        loop = asyncio.get_running_loop()
        half = self.watchdog_s / 2 if self.watchdog_s else None
        next_ping = next_extend = loop.time()
        while True:
            now = loop.time()
            fields = []
            if half is not None and now >= next_ping:
                fields.append("WATCHDOG=1")
                next_ping = now + half
            if self._stopping and now >= next_extend:
                fields.append(_EXTEND)
                next_extend = now + EXTEND_EVERY_S
            status = self._status_line()
            if status is not None and status != self._sent_status:
                fields.append(f"STATUS={status}")
                self._sent_status = status
            self.notify(*fields)
            wait = STATUS_S if half is None else min(STATUS_S, max(0.0, next_ping - loop.time()))
            if self._stopping:
                wait = min(wait, max(0.0, next_extend - loop.time()))
            await asyncio.sleep(wait)

    def _status_line(self) -> str | None:
        if self._status is None:
            return None
        try:
            return " ".join(status_line(self._status()).split())  # a newline ends a field
        except Exception:  # a view's fault must never stop the watchdog or the station
            log.exception("systemd: cannot make the status line")
            return None

    @staticmethod
    def _status_field(status: str | None) -> tuple[str, ...]:
        return () if status is None else (f"STATUS={status}",)


def _watchdog_s(env: Mapping[str, str]) -> float | None:
    """$WATCHDOG_USEC in seconds when it is meant for this process (sd_watchdog_enabled(3))."""
    usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None  # inherited from a parent that systemd watches: not ours to feed
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1e6 if value > 0 else None
