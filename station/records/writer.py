"""Applies recorded transitions to the database: the part of the recorder that does I/O.

``SessionWriter`` is synchronous and single-threaded; the recorder runs it on
its writer thread, the benchmark drives it directly. It knows which session is
open on each slot, opens one when a port reaches IDENTIFIED, issues the
certificate when it reaches DONE, and closes and seals it when the phone leaves.
It seals only sessions it opened itself (``chain.sign_opening``): a row put into
the database by anyone else stays open and unsealed, for ``records verify`` to name.
"""
from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hw.phones import Facts
from station.machine import Port, State
from station.records import certificate, chain, db, sessions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Transition:
    old: Port
    new: Port
    event: object
    at: float  # epoch seconds, as the station reports it


@dataclass(frozen=True)
class Firmware:
    slot: int
    build: str
    version: str
    sha256: str
    tool: str = ""  # what restores: pymobiledevice3's Restore, or the timed simulation


@dataclass(frozen=True)
class PhoneFacts:
    """What the phone told in a paired session (IMEI, storage, battery): hw.phones.Facts."""

    slot: int
    facts: Facts


@dataclass(frozen=True)
class HookResult:
    """How a ``[hooks]`` command ended (station.hooks): a "Hook" row in the session it ran for,
    while that session is open."""

    slot: int
    record_id: int
    at: float  # when the hook ended, epoch seconds
    detail: str  # "on_done: exit 0 after 0.3 s", then the last of its output


Item = Transition | Firmware | PhoneFacts | HookResult


class SessionWriter:
    def __init__(self, conn: sqlite3.Connection, key: Ed25519PrivateKey,
                 issuer: certificate.Issuer) -> None:
        self._conn = conn
        self._key = key
        self._issuer = issuer
        self._open: dict[int, dict[str, Any]] = {}  # slot -> current columns of its open session
        self.sealed = False  # a record was sealed since the flag was last cleared: a new head

    def apply(self, item: Item) -> None:
        """One item, inside the caller's transaction."""
        if isinstance(item, Firmware):
            self._firmware(item)
        elif isinstance(item, PhoneFacts):
            session = self._open.get(item.slot)
            if session is not None:  # facts of a phone whose session closed already: nobody's
                self._update(session, sessions.new_facts(session, item.facts))
        elif isinstance(item, HookResult):
            self._hook(item)
        else:
            self._transition(item)

    def resync(self) -> None:
        """After a failed transaction: the open sessions are what the database holds."""
        self._open = {session["slot"]: session for session in self._own_open_sessions()}

    def _own_open_sessions(self) -> list[dict[str, Any]]:
        """The open sessions this station opened; any other open row is logged and left alone."""
        public = self._key.public_key()
        own = []
        for session in db.open_sessions(self._conn):
            if chain.opened_by_station(self._conn, public, session):
                own.append(session)
            else:
                log.error("record #%d: open, but not opened by this station: left unsealed "
                          "(`station records verify` names it)", session["id"])
        return own

    def close_open(self, now: float, why: str) -> int:
        """Close every open session because the station stops or (after a crash) starts.

        ``why`` ("StationStopped", "StationStarted") is recorded as the closing event; the
        outcome follows ``sessions.closing``: a final state stands, anything else is interrupted.
        """
        at = db.iso(now)
        with db.transaction(self._conn):
            left_open = self._own_open_sessions()
            for session in left_open:
                db.add_transition(self._conn, session["id"], {
                    "at": at, "event": why, "from_state": session["state"],
                    "to_state": State.EMPTY.value, "reason": "", "detail": ""})
                self._close(session["id"], at,
                            *sessions.closing(session, "interrupted", session["state"]))
        self._open.clear()
        if left_open:
            log.info("%s: closed session(s) %s", why, ", ".join(f"#{s['id']}" for s in left_open))
        return len(left_open)

    def _firmware(self, item: Firmware) -> None:
        session = self._open.get(item.slot)
        if session is None:
            log.warning("slot %d: firmware %s reported with no session open", item.slot, item.build)
            return
        self._update(session, {"ipsw_build": item.build, "ios_after": item.version,
                               "ipsw_sha256": item.sha256, "restore_tool": item.tool or None})

    def _hook(self, item: HookResult) -> None:
        session = self._open.get(item.slot)
        if session is None or session["id"] != item.record_id:  # sealed meanwhile: never changed
            log.warning("record #%d closed before its hook's result came: in the log only", item.record_id)
            return
        db.add_transition(self._conn, session["id"], {
            "at": db.iso(item.at), "event": "Hook", "from_state": session["state"],
            "to_state": session["state"], "reason": "", "detail": item.detail})

    def _transition(self, item: Transition) -> None:
        old, new, slot = item.old, item.new, item.new.slot
        at = db.iso(item.at)
        session = self._open.get(slot)
        if new.state is State.IDENTIFIED and old.state is not State.IDENTIFIED:
            if session is not None:
                log.warning("slot %d: session #%d never saw its phone leave", slot, session["id"])
                del self._open[slot]
                self._close(session["id"], at,
                            *sessions.closing(session, "interrupted", session["state"]))
            session = self._start(slot, new, at)
        if session is None:
            return  # before identification: no session yet
        db.add_transition(self._conn, session["id"],
                          sessions.transition_row(old, new, item.event, at))
        self._update(session, sessions.changes(session, old, new, item.event, at))
        if new.state is State.DONE and old.state is not State.DONE:
            certificate.issue(self._conn, self._key, session["id"], self._issuer)
        if new.state is State.EMPTY:
            del self._open[slot]
            self._close(session["id"], at, *sessions.closing(session, "detached", old.state.value))

    def _start(self, slot: int, new: Port, at: str) -> dict[str, Any]:
        columns = {"station_id": self._issuer.station_id, "location": self._issuer.location,
                   "operator": self._issuer.operator, "slot": slot, "started_at": at,
                   "state": new.state.value, **sessions.opening(new.device)}
        columns["id"] = db.insert_session(self._conn, columns)
        chain.sign_opening(self._conn, self._key, columns)
        columns.update(attempts=0, actions="", reason="", result=None)
        self._open[slot] = columns
        return columns

    def _update(self, session: dict[str, Any], cols: dict[str, Any]) -> None:
        if cols:
            session.update(cols)
            db.update_session(self._conn, session["id"], cols)

    def _close(self, session_id: int, at: str, outcome: str, reason: str) -> None:
        db.update_session(self._conn, session_id, {"ended_at": at, "outcome": outcome,
                                                   "state": State.EMPTY.value, "reason": reason})
        chain.seal(self._conn, self._key, session_id)
        # The transactional outbox: queued for the fleet in the sealing transaction, so no
        # sealed record is ever missing from it, nor in it without being sealed.
        db.queue_sealed(self._conn, session_id)
        self.sealed = True
