"""The recorder: the station's ``Listener`` and ``CounterSource``.

The station calls ``on_transition`` and ``on_firmware`` on its event loop; they
only update the in-memory counters and put the item on a queue, so they return
at once. A writer thread takes what has queued up, applies it in one
transaction (``SessionWriter``) and commits; a crash loses at most the batch
being written, and the next start-up closes what was left open, as ``stop``
does on a clean shutdown. Usage::

    recorder = Recorder(config.station)   # raises RecordsUnavailable
    recorder.start()
    ...                                   # pass it to the station as listener and counters
    recorder.stop()                       # writes what is queued, closes open sessions
"""
from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Self

from station.config import StationSection
from station.machine import Port
from station.records import certificate, db, keys, sessions
from station.records.counters import DayCounters
from station.records.statedir import RecordsUnavailable
from station.records.writer import Firmware, Item, SessionWriter, Transition
from station.snapshot import Counters

log = logging.getLogger(__name__)

MAX_BATCH = 500  # items per transaction: bounds how long one commit holds the database
_STOP = object()


class Recorder:
    def __init__(self, station: StationSection, *, now: Callable[[], float] = time.time) -> None:
        """Open (or create) the records of ``station.state_dir`` and close what the last run left open.

        Raises ``RecordsUnavailable`` (one line) when the directory, key or database cannot be used.
        """
        self._now = now
        key = keys.load_or_create(station.state_dir)
        self._conn = db.open_store(station.state_dir)
        issuer = certificate.Issuer(station.id, station.operator, station.location,
                                    certificate.tool_version())
        self._writer = SessionWriter(self._conn, key, issuer)
        try:
            self._writer.close_open(now(), "StationStarted")  # left open by a crash or power cut
            self._counters = DayCounters.from_db(self._conn, now)
        except sqlite3.Error as error:
            self._conn.close()
            path = db.path_in(station.state_dir)
            raise RecordsUnavailable(f"records unavailable: {path}: {error}") from None
        self._queue: queue.SimpleQueue[Item | threading.Event | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="records-writer", daemon=True)
        self.fault: str | None = None  # set when a write failed, for the display

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write everything queued so far, close the sessions still open, close the database.

        A phone still plugged in is a new session when the station runs again, so its session
        ends here: with its final state if it reached one, else as interrupted.
        """
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("records writer did not finish within %.0f s", timeout)
                return
        try:
            self._writer.close_open(self._now(), "StationStopped")
        except sqlite3.Error as error:
            log.error("records: cannot close the open sessions: %s", error)
        self._conn.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # Listener: called on the event loop, must return at once. -------------

    def on_transition(self, old: Port, new: Port, event: object, at: float) -> None:
        if not sessions.is_recorded(old, new, event):
            return
        self._counters.observe(old, new, at)
        self._queue.put(Transition(old, new, event, at))

    def on_firmware(self, slot: int, build: str, version: str, sha256: str) -> None:
        self._queue.put(Firmware(slot, build, version, sha256))

    # CounterSource ---------------------------------------------------------

    def counters(self) -> Counters:
        return self._counters.counters()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued before this call is committed (tests, shutdown)."""
        if not self._thread.is_alive():
            return False
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    # The writer thread -------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._write([item for item in batch if isinstance(item, (Transition, Firmware))])
            for item in batch:
                if isinstance(item, threading.Event):
                    item.set()
            if _STOP in batch:
                return

    def _write(self, items: list[Item]) -> None:
        if not items:
            return
        try:
            with db.transaction(self._conn):
                for item in items:
                    self._writer.apply(item)
        except Exception:  # whatever it was, one bad batch must not stop the records
            # The batch is lost, not the recorder: pick up again from what the database holds.
            log.exception("records: %d item(s) not written", len(items))
            self.fault = "RECORDS FAILED"
            try:
                self._writer.resync()
            except sqlite3.Error as error:
                log.error("records: cannot read open sessions back: %s", error)
