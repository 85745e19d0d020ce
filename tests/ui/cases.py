"""Snapshots worth a reference image: each screen and the cases an operator must read at a glance."""
from __future__ import annotations

from dataclasses import replace

from hw.phones import Device, Lock, Mode
from station.machine import Port, State
from station.snapshot import Counters, PortFlag, Screen, Snapshot

NOW = 10_000.0

PRO = Device(key="u1", mode=Mode.NORMAL, product_type="iPhone14,2", name="iPhone 13 Pro",
             ios_version="17.5.1", serial="F2LXK3QJ0D4N")
SE = Device(key="u2", mode=Mode.NORMAL, product_type="iPhone12,8", name="iPhone SE (2nd gen)",
            ios_version="16.7.8", serial="G6TZK2P4Q1MN")
DFU = Device(key="ECID:001C5B02C107ABDA", mode=Mode.DFU, product_type="iPhone15,3",
             name="iPhone 14 Pro Max", ecid=0x1C5B02C107ABDA, serial="DNPWL4H8Q6VR")
NO_NAME = Device(key="u4", mode=Mode.NORMAL, product_type="iPhone99,9", ios_version="18.0")


def restoring(slot: int, percent: float, device: Device = PRO, phase: str = "restoring_filesystem",
              minutes: float = 5.0) -> Port:
    return Port(slot, State.RESTORING, device, Lock.CLEAR, phase=phase, percent=percent,
                attempts=1, confirmed_by="operator", restore_started=NOW - minutes * 60)


MIXED = (
    Port(1, State.DONE, SE, Lock.CLEAR, verified=True),
    Port(2, State.LOCKED, SE, Lock.LOCKED, lock_reason="Find My is on", reason="Find My is on"),
    restoring(3, 42.4),
    Port(4, State.NEEDS_CONFIRM, DFU, Lock.UNKNOWN, lock_reason="DFU: not checkable", held=True),
    Port(5),
    Port(6, State.FAILED, PRO, Lock.CLEAR, reason="USB transfer failed", retryable=True,
         restore_started=NOW - 900),
    Port(7, State.QUEUED, PRO, Lock.CLEAR, confirmed_by="policy"),
)
TODAY = Counters(restored=37, failed=2, locked=5, retried=3)
# Slot 7 retries by itself (its first restore lost USB), slot 6 failed for good.
RETRYING = MIXED[:6] + (replace(restoring(7, 63.0, minutes=9), attempts=2, max_attempts=2),)


def sixteen() -> tuple[Port, ...]:
    ports = [Port(slot) for slot in range(1, 17)]
    ports[2] = restoring(3, 88)
    ports[10] = Port(11, State.CHECKING_LOCK, SE)
    ports[11] = restoring(12, 7, minutes=1)
    ports[12] = Port(13, State.VERIFYING, PRO, Lock.CLEAR, percent=100.0)
    ports[15] = Port(16, State.NEEDS_TRUST, SE, reason="unlock phone, tap Trust")
    return tuple(ports)


CASES: dict[str, Snapshot] = {
    "overview_mixed": Snapshot(MIXED, Screen.OVERVIEW, selected=3, counters=TODAY, now=NOW),
    "overview_16_slots_page_2": Snapshot(sixteen(), Screen.OVERVIEW, selected=12, counters=TODAY,
                                         now=NOW),
    "overview_big_day": Snapshot(MIXED, Screen.OVERVIEW, selected=7,
                                 counters=Counters(1234, 56, 789), now=NOW),
    "overview_fault": Snapshot(MIXED, Screen.OVERVIEW, selected=4, counters=TODAY,
                               faults=("NO NETWORK", "NO USBMUXD"), now=NOW),
    "detail_restoring": Snapshot(MIXED, Screen.DETAIL, selected=3, counters=TODAY, now=NOW),
    "detail_locked": Snapshot(MIXED, Screen.DETAIL, selected=2, counters=TODAY, now=NOW),
    "detail_held": Snapshot(MIXED, Screen.DETAIL, selected=4, counters=TODAY, now=NOW),
    "detail_failed_long_reason": Snapshot(
        (Port(1, State.FAILED, NO_NAME, Lock.CLEAR, restore_started=NOW - 60, retryable=False,
              reason="restore failed in phase update_baseband: device did not come back"),),
        Screen.DETAIL, selected=1, now=NOW),
    "detail_empty_fault": Snapshot(MIXED, Screen.DETAIL, selected=5, faults=("NO USBMUXD",),
                                   now=NOW),
    "overview_retry_cursor_on_held": Snapshot(RETRYING, Screen.OVERVIEW, selected=4, counters=TODAY,
                                              now=NOW),
    "detail_retry": Snapshot(RETRYING, Screen.DETAIL, selected=7, counters=TODAY, now=NOW),
    "counters": Snapshot(MIXED, Screen.COUNTERS, counters=TODAY, now=NOW),
    "counters_port_flag": Snapshot(MIXED, Screen.COUNTERS, counters=TODAY,
                                   port_flags=(PortFlag(slot=6, troubles=4, attempts=7),),
                                   faults=("NO NETWORK",), now=NOW),
    "counters_large": Snapshot(MIXED, Screen.COUNTERS, counters=Counters(1234, 56, 789), now=NOW),
}


def every_state() -> list[Port]:
    """One port in each state, with the details that state normally carries."""
    base = {state: Port(1, state, PRO, Lock.CLEAR) for state in State}
    base[State.EMPTY] = Port(1)
    base[State.RESTORING] = restoring(1, 50)
    return [replace(port, slot=1) for port in base.values()]
