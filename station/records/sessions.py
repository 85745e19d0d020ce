"""How a port's transitions become one session record: the rules, as pure functions.

A *session* is one phone on one slot. It opens when the port reaches IDENTIFIED
(before that the station does not know which phone it has) and closes when the
phone is detached, or at the next start-up if the station stopped first. It
stores every state change and operator action (Confirm, Cancel, Abort, SwitchJob — also
those that changed nothing), and keeps summary columns up to date.

``result`` is the final state the port is in — ``done``, ``failed``, ``locked``
or ``refused`` — or NULL while the station works on the phone; a manual retry
(FAILED --Confirm--> QUEUED) clears it. ``outcome``, set when the session
closes, is:

* ``done`` / ``failed`` / ``locked`` / ``refused``: the session ended in that
  final state: the phone was unplugged from it, or the station stopped while the
  phone sat there (a finished restore stays finished across a power cut);
* ``detached``: unplugged before the end — while identifying, checking,
  waiting for trust or confirmation, queued, restoring or verifying;
* ``interrupted``: the station stopped (shutdown, crash, power cut) while
  working on the phone; closed by ``Recorder.stop`` or, after a crash, at the
  next start-up.

``attempts`` counts the restores started in the session, automatic and manual
retries included (retries = attempts - 1). "iOS after" is the version of the
IPSW restored, as given by ``on_firmware``.

Counters (``station.records.counters``) count sessions by result on the local
day ``result_at`` falls on: restored = ``done`` (verified or not), failed =
``failed``, locked = ``locked`` and ``refused`` together — both are phones not
restored because of their lock (REFUSED is an unknown lock the policy would not
risk); the records keep the two apart.
"""
from __future__ import annotations

from typing import Any

from hw.phones import Device, Facts
from station.machine import (
    Abort,
    Cancel,
    Confirm,
    LockResult,
    Port,
    RestoreStarted,
    State,
    SwitchJob,
)

RESULTS = {State.DONE: "done", State.FAILED: "failed", State.LOCKED: "locked",
           State.REFUSED: "refused"}
OPERATOR_ACTIONS = (Confirm, Cancel, Abort, SwitchJob)


def is_recorded(old: Port, new: Port, event: object) -> bool:
    """State changes and operator actions: what the station reports (not progress ticks)."""
    return new.state is not old.state or isinstance(event, OPERATOR_ACTIONS)


def opening(device: Device | None) -> dict[str, Any]:
    """The identity columns of a new session, from the phone the port identified."""
    if device is None:
        return {}
    return {
        "udid": device.udid,
        "ecid": f"{device.ecid:X}" if device.ecid is not None else "",
        "serial": device.serial,
        "model": device.product_type,
        "ios_before": device.ios_version,
        "build_before": device.build,
        **device.facts.known(),  # what lockdownd told without pairing; the rest at the lock check
    }


def new_facts(session: dict[str, Any], facts: Facts) -> dict[str, Any]:
    """The fact columns ``facts`` fills: only those the session does not know yet. The first
    reading stands (the phone as it came in); a later one (at the Hello screen after the
    restore of a phone that came in DFU) adds what was unknown."""
    return {name: value for name, value in facts.known().items() if session.get(name) is None}


def changes(session: dict[str, Any], old: Port, new: Port, event: object, at: str) -> dict[str, Any]:
    """The session columns this transition sets (``session`` holds the current values)."""
    cols: dict[str, Any] = {}
    entered = new.state is not old.state
    if entered:
        cols["state"] = new.state.value
    if isinstance(event, OPERATOR_ACTIONS):
        cols["actions"] = ";".join(filter(None, (session.get("actions", ""), action_name(event))))
    if not entered:
        return cols
    if isinstance(event, LockResult):
        if old.state is State.VERIFYING:
            cols.update(verify_method=event.method, verify_result=event.lock.value,
                        verified=int(new.verified))
        else:
            cols.update(lock_method=event.method, lock_result=event.lock.value,
                        lock_reason=event.reason, lock_checked_at=at)
    if isinstance(event, RestoreStarted):
        cols["job"] = new.job
        cols["attempts"] = session.get("attempts", 0) + 1
        if not session.get("restore_started_at"):
            cols["restore_started_at"] = at
    if new.state is State.VERIFYING:
        cols["restore_finished_at"] = at
    if new.state in RESULTS:
        cols.update(result=RESULTS[new.state], result_at=at, reason=new.reason)
    elif old.state in RESULTS and new.state is not State.EMPTY:  # a manual retry
        cols.update(result=None, result_at=None)
    return cols


def closing(session: dict[str, Any], by: str, state: str) -> tuple[str, str]:
    """(outcome, reason) of a session closing now in ``state``; ``by``: "detached" or "interrupted"."""
    result = session.get("result")
    if result:
        return result, session.get("reason") or ""
    return by, f"{by} in {state}"


def action_name(event: object) -> str:
    name = type(event).__name__.lower()
    return f"{name}(long)" if isinstance(event, Confirm) and event.long else name


def transition_row(old: Port, new: Port, event: object, at: str) -> dict[str, Any]:
    return {"at": at, "event": type(event).__name__,
            "from_state": old.state.value, "to_state": new.state.value,
            "reason": new.reason if new.reason != old.reason else "", "detail": _detail(new, event)}


def _detail(new: Port, event: object) -> str:
    if isinstance(event, LockResult):
        return " ".join(filter(None, (event.lock.value, event.method and f"via {event.method}",
                                      event.reason and f"({event.reason})")))
    if isinstance(event, Confirm) and event.long:
        return "long"
    if isinstance(event, SwitchJob):
        return new.job  # what it is now: unchanged when the switch was refused
    return new.phase if new.state is State.RESTORING else ""
