"""What the page, the API and `station status` show: JSON made from snapshots and records.

The words are the display's (``station.ui.labels``), so the page, the OLED and the command
line say the same thing. What names a phone or its owner's customer (serial, IMEI, MEID, ECID,
UDID) is null unless the request brought the token: the port is redacted before any label is
made from it, so no line (the detail screen's "iOS 17.5.1  F2LX...") can carry it either.
"""
from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from hw.phones import NO_FACTS, Device
from station.ipsw.cache import Entry
from station.machine import LockResult, Port, State
from station.snapshot import Snapshot
from station.ui import labels

# Session columns that identify a phone: withheld from a reader without the token.
SECRET_COLUMNS = ("udid", "ecid", "serial", "imei", "imei2", "meid")
RECORD_COLUMNS = ("id", "slot", "job", "started_at", "ended_at", "state", "outcome", "reason", "model",
                  "ios_before", "ios_after", "lock_method", "lock_result", "lock_reason", "verified",
                  "attempts", "ipsw_build", *SECRET_COLUMNS)


def actions(port: Port) -> list[str]:
    """What the network may do to this port now: stop work, or start again a failed restore of a
    phone whose lock was not held for a person. Never a held phone's confirmation, nor a start."""
    if port.state is State.QUEUED:
        return ["cancel"]
    if port.state in (State.RESTORING, State.NEEDS_TRUST) and port.restore_started is not None:
        return ["abort"]
    if port.state is State.FAILED and port.restore_started is not None and not port.held:
        return ["retry"]  # a phone held for a person (lock unknown) starts again only at the station
    return []


def port_json(port: Port, now: float, lock_method: str, reveal: bool) -> dict[str, Any]:
    shown = port if reveal else _redacted(port)
    device = shown.device
    facts = device.facts if device is not None else NO_FACTS
    return {
        "slot": port.slot, "state": port.state.value, "label": labels.short_state(shown),
        "title": labels.state_title(shown), "job": port.job,
        "needs_person": port.state in labels.NEEDS_PERSON, "held": port.held,
        "model": labels.model_text(shown) or None,
        "product_type": _text(device.product_type) if device else None,
        "mode": device.mode.value if device else None,
        "ios": _text(device.ios_version) if device else None,
        "serial": _text(device.serial) if device else None,
        "ecid": f"{device.ecid:X}" if device and device.ecid is not None else None,
        "udid": _text(device.udid) if device else None,
        "imei": facts.imei, "storage_bytes": facts.storage_bytes,
        "lock": port.lock.value, "lock_text": labels.lock_text(shown),
        "lock_reason": port.lock_reason or None, "lock_method": lock_method or None,
        "phase": port.phase or None, "percent": round(port.percent, 1),
        "eta": labels.eta_text(shown, now) or None, "retry": labels.retry_text(shown) or None,
        "attempts": port.attempts, "max_attempts": port.max_attempts,
        "reason": port.reason or None,
        "operator_reason": labels.operator_reason(port.reason) if port.reason else None,
        "detail": labels.detail_lines(shown, now),
        "actions": actions(port),
    }


def status_json(snapshot: Snapshot, station_id: str, lock_methods: dict[int, str],
                cache: list[dict[str, Any]], reveal: bool) -> dict[str, Any]:
    """The whole station at one moment: what the page draws and `station status` prints."""
    counters = snapshot.counters
    return {
        "station": station_id,
        "time": iso_now(),
        "ports": [port_json(port, snapshot.now, lock_methods.get(port.slot, ""), reveal)
                  for port in snapshot.ports],
        "counters": {"restored": counters.restored, "failed": counters.failed,
                     "locked": counters.locked, "retried": counters.retried},
        "faults": list(snapshot.faults),
        "fault_details": list(snapshot.fault_details),
        "status": snapshot.status or None,
        "port_flags": [{"slot": flag.slot, "troubles": flag.troubles, "attempts": flag.attempts}
                       for flag in snapshot.port_flags],
        "ipsw": cache,
        "sensitive_shown": reveal,
    }


def record_json(session: dict[str, Any], has_certificate: bool, reveal: bool) -> dict[str, Any]:
    row = {name: session.get(name) for name in RECORD_COLUMNS}
    for name in SECRET_COLUMNS:
        row[name] = (row[name] or None) if reveal else None
    row["verified"] = None if row["verified"] is None else bool(row["verified"])
    row["certificate"] = f"/api/certificates/{session['id']}" if has_certificate else None
    return row


def cache_json(entry: Entry) -> dict[str, Any]:
    """An IPSW as `station ipsw list --json` says it, without the station's file path."""
    shown = entry.as_json()
    shown.pop("path", None)
    return shown


def iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text(value: str) -> str | None:
    return value or None


def _redacted(port: Port) -> Port:
    """The port as a reader without the token may see it: no serial, ECID, UDID or IMEI."""
    if port.device is None:
        return port
    device: Device = replace(port.device, key="", serial="", udid="", ecid=None,
                             facts=replace(port.device.facts, imei=None, imei2=None, meid=None))
    return replace(port, device=device)


class LockMethods:
    """A listener of the station: how each port's last lock answer was decided (the phone layer's
    method: ``activation-server``, ``dfu``...), which the port itself does not keep."""

    def __init__(self) -> None:
        self.by_slot: dict[int, str] = {}

    def on_transition(self, old: Port, new: Port, event: object, at: float) -> None:
        if isinstance(event, LockResult):
            self.by_slot[new.slot] = event.method
        elif new.state is State.EMPTY:
            self.by_slot.pop(new.slot, None)

    def on_firmware(self, slot: int, build: str, version: str, sha256: str, tool: str = "") -> None:
        pass
