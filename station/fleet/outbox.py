"""The station's records to the broker: one at a time, in chain order, none lost.

The recorder's writer puts each record into the ``outbox`` table in the very
transaction that seals it (station.records.writer), so a sealed record is
always queued, even when the broker is away for an hour, the station is off,
or [mqtt] was not enabled yet. This thread, with its own SQLite connection,
publishes the oldest row (QoS 1) and deletes it only once the broker's PUBACK
for it says success: a PUBACK with an error reason (MQTT v5: quota exceeded,
not authorized) is no acknowledgement, and the row is tried again later.

One record is in flight at a time: the order the fleet receives is the chain's
order, simply. A record is sent again only when its acknowledgement never came
(a broker that went away, a station killed mid-publish): the receiver keeps one
copy per record hash. One in flight costs a round trip per record; over loopback
that was 80 to 400 records a second on a busy 2-core test machine
(tests/fleet/test_no_record_lost.py measures it), and a line closes a few a minute.

States of a row:  queued --publish--> in flight --PUBACK ok--> deleted
                                          |--PUBACK error--> queued (after RETRY_S)
                                          |--connection lost--> in flight (paho resends it)
"""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from station.fleet import payloads
from station.records import db, keys
from station.records.statedir import RecordsUnavailable

log = logging.getLogger(__name__)

POLL_S = 0.5  # how often an empty outbox is looked at again
RETRY_S = 5.0  # after a refusal, or while the records cannot be read
NEXT_ROW = "SELECT session_id FROM outbox ORDER BY seq LIMIT 1"  # chain order


class Outbox:
    def __init__(self, state_dir: Path, client: mqtt.Client, topic: str,
                 connected: threading.Event) -> None:
        self._state_dir = state_dir
        self._client = client
        self._topic = topic
        self._connected = connected
        self._acks: dict[int, mqtt.ReasonCode] = {}  # mid -> the broker's answer
        self._answered = threading.Condition()
        self._stopping = threading.Event()
        self._give_up_at = 0.0  # once stopping: when to stop waiting for the record in flight
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fleet-outbox", daemon=True)
        self._problem = ""  # the last problem logged, so a repeat is not
        self.sent = 0  # records acknowledged since start

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Look at the outbox now (connected again, a record sealed)."""
        self._wake.set()

    def stop(self, grace_s: float) -> None:
        """Stop, sending what is queued for up to ``grace_s`` while connected."""
        self._give_up_at = time.monotonic() + grace_s
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout=grace_s + 1.0)

    def on_publish(self, _client: mqtt.Client, _userdata: object, mid: int,
                   reason: mqtt.ReasonCode, _properties: object) -> None:
        """paho's thread: the broker's answer to a QoS 1 publish (holds paho's lock: be quick)."""
        with self._answered:
            self._acks[mid] = reason
            self._answered.notify_all()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        key: Ed25519PrivateKey | None = None
        try:
            while not self._done():
                if not self._connected.wait(POLL_S):
                    continue
                try:
                    if conn is None:
                        conn = db.connect(db.path_in(self._state_dir))
                    row = conn.execute(NEXT_ROW).fetchone()
                    if row is None:
                        if self._stopping.is_set():
                            return  # all sent
                        self._wake.wait(POLL_S)
                        self._wake.clear()
                        continue
                    session_id = row[0]
                    key = key or keys.load_or_create(self._state_dir, may_create=False)
                    payload = payloads.encode(payloads.record(conn, session_id, key))
                except (sqlite3.Error, RecordsUnavailable, KeyError, OSError) as error:
                    self._say(f"cannot read the outbox: {error}; trying again in {RETRY_S:.0f} s")
                    self._stopping.wait(RETRY_S)
                    continue
                answer = self._send(session_id, payload)
                if answer is None:
                    return  # stopping: the row stays, and is sent on the next start
                if answer:
                    try:
                        conn.execute("DELETE FROM outbox WHERE session_id = ?", (session_id,))
                    except sqlite3.Error as error:  # sent again later: receivers keep one copy
                        self._say(f"record #{session_id}: acknowledged, but cannot be taken off "
                                  f"the outbox: {error}")
                        self._stopping.wait(RETRY_S)
                        continue
                    self.sent += 1
                    self._problem = ""
                else:
                    self._stopping.wait(RETRY_S)
        finally:
            if conn is not None:
                conn.close()

    def _done(self) -> bool:
        """Stopping, and out of time to send what is left (it stays for the next start)."""
        return self._stopping.is_set() and (time.monotonic() >= self._give_up_at
                                            or not self._connected.is_set())

    def _send(self, session_id: int, payload: bytes) -> bool | None:
        """True once acknowledged, False when refused, None when stopping first."""
        info = self._client.publish(self._topic, payload, qos=1)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):  # NO_CONN: paho keeps it
            self._say(f"record #{session_id}: cannot publish: {mqtt.error_string(info.rc)}")
            return False
        with self._answered:
            while info.mid not in self._acks:
                if self._stopping.is_set() and time.monotonic() >= self._give_up_at:
                    return None
                self._answered.wait(POLL_S)
            reason = self._acks.pop(info.mid)
        if reason.is_failure:
            self._say(f"record #{session_id}: the broker did not take it ({reason}); "
                      f"trying again in {RETRY_S:.0f} s")
            return False
        log.debug("record #%d: acknowledged by the broker", session_id)
        return True

    def _say(self, problem: str) -> None:
        if problem != self._problem:
            self._problem = problem
            log.error("fleet outbox: %s", problem)
