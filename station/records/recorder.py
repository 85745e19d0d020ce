"""The recorder: the station's ``Listener``, ``CounterSource`` and ``RecordKeeper``.

The station calls ``on_transition`` and ``on_firmware`` on its event loop; they
only update the in-memory counters and put the item on a queue, so they return
at once. A writer thread applies what has queued up in one transaction
(``Store.write``) and commits.

No record, no erase: a restore starts only once everything reported about its
port is committed (``durable``) and the records are healthy (``problem``). When
the records cannot be written — the store will not open, a write fails, the
disk is below the reserve — nothing is dropped: the items stay queued in order
and are tried again every ``retry_s`` (a certificate included) until they are
written, ``problem`` names the fault meanwhile, and it clears by itself with
the first write that succeeds. Usage::

    recorder = Recorder(config.station)   # never raises: a fault is in ``problem()``
    recorder.start()
    ...                                   # listener, counters and record keeper of the station
    recorder.stop()                       # writes what is queued, closes open sessions
"""
from __future__ import annotations

import logging
import queue
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

from hw.phones import Facts
from station.config import StationSection
from station.machine import Port
from station.records import sessions
from station.records.counters import DayCounters
from station.records.statedir import RecordsUnavailable
from station.records.store import Store
from station.records.writer import Firmware, HookResult, Item, PhoneFacts, Transition
from station.snapshot import Counters

log = logging.getLogger(__name__)

MAX_BATCH = 500  # items per transaction: bounds how long one commit holds the database
RETRY_S = 5.0  # while the records cannot be written, try again this often
MB = 1024 * 1024
_STOP = object()


def free_bytes(path: Path) -> int | None:
    """Space an unprivileged writer may still use there (None: cannot tell)."""
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


class Recorder:
    def __init__(self, station: StationSection, *, now: Callable[[], float] = time.time,
                 retry_s: float = RETRY_S,
                 free_space: Callable[[Path], int | None] = free_bytes) -> None:
        self._station = station
        self._now = now
        self._retry_s = retry_s
        self._free_space = free_space
        self._reserve = station.records_reserve_mb * MB
        self._counters_lock = threading.Lock()  # the writer thread rebases what the loop reads
        self._counters = DayCounters(now, Counters())
        self._store: Store | None = None
        self.fault: str | None = None  # why records cannot be written now; None when they can
        self._open_store()
        self._queue: queue.SimpleQueue[tuple[int, Item] | threading.Event | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="records-writer", daemon=True)
        self._reported = 0  # sequence number of the last item queued (loop thread)
        self._last: dict[int, int] = {}  # slot -> sequence number of its last item queued
        self._committed = 0  # sequence number of the last item committed (writer thread)
        self._notify: Callable[[], None] = lambda: None
        self._stop_by = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write everything queued so far (trying for up to ``timeout``), close the open sessions.

        A phone still plugged in is a new session when the station runs again, so its session
        ends here: with its final state if it reached one, else as interrupted.
        """
        if self._thread.is_alive():
            self._stop_by = time.monotonic() + timeout
            self._queue.put(_STOP)
            self._thread.join(timeout + 5.0)
            if self._thread.is_alive():
                log.error("records writer did not finish within %.0f s", timeout)
                return
        if self._store is None:
            return
        try:
            self._store.close_open(self._now(), "StationStopped")
        except Exception as error:  # noqa: BLE001 - a full disk at shutdown: the next start closes them
            log.error("records: cannot close the open sessions now (the next start will): %s", error)
        self._store.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # Listener: called on the event loop, must return at once. -------------

    def on_transition(self, old: Port, new: Port, event: object, at: float) -> None:
        if not sessions.is_recorded(old, new, event):
            return
        with self._counters_lock:
            self._counters.observe(old, new, at)
        self._enqueue(new.slot, Transition(old, new, event, at))

    def on_firmware(self, slot: int, build: str, version: str, sha256: str, tool: str = "") -> None:
        self._enqueue(slot, Firmware(slot, build, version, sha256, tool))

    def on_facts(self, slot: int, facts: Facts) -> None:
        self._enqueue(slot, PhoneFacts(slot, facts))

    def on_hook(self, result: HookResult) -> None:
        """A hook's result (station.hooks), for its phone's session while it is open."""
        self._enqueue(result.slot, result)

    def _enqueue(self, slot: int, item: Item) -> None:
        self._reported += 1
        self._last[slot] = self._reported
        self._queue.put((self._reported, item))

    # CounterSource ---------------------------------------------------------

    def counters(self) -> Counters:
        with self._counters_lock:
            return self._counters.counters()

    # RecordKeeper: asked on the event loop before a restore starts. ----------

    def set_notify(self, notify: Callable[[], None]) -> None:
        """``notify`` is called on the writer thread after each write attempt."""
        self._notify = notify

    def durable(self, slot: int) -> bool:
        """Everything reported about ``slot`` so far is committed to disk."""
        return self._committed >= self._last.get(slot, 0)

    def backlog(self) -> int:
        """Items reported but not yet committed to disk (the writer's queue, and what it retries)."""
        return self._reported - self._committed

    def problem(self) -> str | None:
        """Why no restore may start now (records failing, or the disk below the reserve)."""
        if self.fault:
            return self.fault
        free = self._free_space(self._station.state_dir)
        if free is not None and free < self._reserve:
            return (f"records: {free / MB:.0f} MB free on {self._station.state_dir}, "
                    f"{self._reserve / MB:.0f} MB kept for records ([station] records_reserve_mb)")
        return None

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued before this call is committed (tests, shutdown)."""
        if not self._thread.is_alive():
            return False
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    # The writer thread -------------------------------------------------------

    def _run(self) -> None:
        pending: list[tuple[int, Item]] = []
        waiters: list[threading.Event] = []
        stopping = False
        while True:
            healthy = self._store is not None and self.fault is None
            taken = self._take(None if healthy and not stopping else self._retry_s)
            for entry in taken:
                if entry is _STOP:
                    stopping = True
                elif isinstance(entry, threading.Event):
                    waiters.append(entry)
                else:
                    pending.append(entry)  # type: ignore[arg-type]
            if taken or not healthy:
                self._write(pending)
                self._notify()
            if not pending:
                for waiter in waiters:
                    waiter.set()
                waiters.clear()
            if stopping and (not pending or time.monotonic() >= self._stop_by):
                if pending:
                    log.error("records: %d item(s) never written (%s): the next start closes "
                              "their sessions as interrupted", len(pending), self.fault)
                return

    def _take(self, timeout: float | None) -> list[object]:
        """What has queued up: waits for the first item (up to ``timeout``), then takes the rest."""
        try:
            taken = [self._queue.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                taken.append(self._queue.get_nowait())
            except queue.Empty:
                return taken

    def _write(self, pending: list[tuple[int, Item]]) -> None:
        if self._store is None and not self._open_store():
            return
        assert self._store is not None
        try:
            if not pending and self.fault:
                self._store.probe()  # nothing queued: find out whether writing works again
            while pending:
                batch = pending[:MAX_BATCH]
                self._store.write([item for _, item in batch])
                del pending[:len(batch)]
                self._committed = batch[-1][0]
            self._store.sync_head()
        except Exception as error:  # noqa: BLE001 - whatever it was, it is retried, never dropped
            expected = isinstance(error, (sqlite3.Error, OSError))  # a full disk, a pulled card
            self._set_fault(f"records not written: {error}", traceback=not expected)
            return
        self._set_fault(None)

    def _open_store(self) -> bool:
        try:
            store = Store(self._station, self._now)
        except RecordsUnavailable as error:
            self._set_fault(str(error))
            return False
        with self._counters_lock:
            self._counters.add(store.counters)
        self._store = store
        self._set_fault(None)
        return True

    def _set_fault(self, fault: str | None, traceback: bool = False) -> None:
        if fault == self.fault:
            return
        if fault is None:
            log.info("records are written again")
        else:
            log.error("%s (kept, tried again every %g s)", fault, self._retry_s, exc_info=traceback)
        self.fault = fault
