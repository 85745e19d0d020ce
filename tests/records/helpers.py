"""Drive ports through the real state machine and report to a listener as the station does."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from hw.phones import Device, Lock, Mode
from station.machine import (
    Abort,
    Attached,
    Cancel,
    Confirm,
    Detached,
    Event,
    Identified,
    LockCheckStarted,
    LockResult,
    Policy,
    Port,
    Progress,
    RestoreFailed,
    RestoreFinished,
    RestoreStarted,
    step,
)
from station.records.recorder import Recorder

IPSW_SHA256 = "ab" * 32
RESTORE_TOOL = "pymobiledevice3 11.45.0 Restore (Erase)"


class FakeClock:
    """Wall time for the recorder; starts at noon local time on a fixed day."""

    def __init__(self, start: datetime = datetime(2024, 6, 10, 12, 0, 0)) -> None:
        self.t = start.timestamp()

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    def set(self, moment: datetime) -> None:
        self.t = moment.timestamp()


def device(n: int) -> Device:
    return Device(key=f"udid{n:036d}", mode=Mode.NORMAL, product_type="iPhone14,7",
                  ios_version="16.1", build="20B82", udid=f"udid{n:036d}", ecid=0x1000 + n,
                  serial=f"F2LT{n:08d}")


@dataclass
class Phone:
    """One port: every event goes through ``step``; the listener hears what the station tells it
    (state changes and operator actions), stamped with the wall clock as the station does."""

    listener: Recorder
    slot: int
    clock: Callable[[], float] = time.time
    policy: Policy = field(default_factory=Policy)
    port: Port = field(init=False)

    def __post_init__(self) -> None:
        self.port = Port(slot=self.slot)

    def send(self, *events: Event) -> Port:
        for event in events:
            old = self.port
            self.port = step(old, event, self.policy, self.clock()).port
            if self.port.state is not old.state or isinstance(event, (Confirm, Cancel, Abort)):
                self.listener.on_transition(old, self.port, event, self.clock())
        return self.port

    def firmware(self) -> None:
        self.listener.on_firmware(self.slot, "21F90", "17.5.1", IPSW_SHA256, RESTORE_TOOL)


def arrive(phone: Phone, n: int) -> None:
    d = device(n)
    phone.send(Attached(Device(key=d.key, mode=d.mode)), Identified(d), LockCheckStarted())


def restore_events(fail: RestoreFailed | None = None) -> Iterable[Event]:
    yield RestoreStarted()
    for percent in (10.0, 20.0, 50.0):
        yield Progress("restore image", percent)
    if fail is not None:
        yield fail
        return
    yield Progress("verify", 99.0)
    yield RestoreFinished()


def clean_restore(phone: Phone, n: int, verified: bool = True, detach: bool = True) -> None:
    arrive(phone, n)
    phone.send(LockResult(Lock.CLEAR, method="activation-server"), Confirm())
    phone.firmware()
    phone.send(*restore_events())
    phone.send(LockResult(Lock.CLEAR if verified else Lock.UNKNOWN, method="activation-server",
                          reason="" if verified else "no network"))
    if detach:
        phone.send(Detached())


def locked(phone: Phone, n: int) -> None:
    arrive(phone, n)
    phone.send(LockResult(Lock.LOCKED, reason="Find My is on", method="fmip"), Confirm(), Detached())


def refused(phone: Phone, n: int) -> None:
    phone.policy = Policy(unknown_lock="refuse")
    arrive(phone, n)
    phone.send(LockResult(Lock.UNKNOWN, reason="DFU: not checkable", method="none"), Detached())


def confirm_and_restore() -> Iterable[Event]:
    """A manual retry from FAILED through to DONE, verified."""
    yield Confirm()
    yield from restore_events()
    yield LockResult(Lock.CLEAR, method="activation-server")


def failed_then_retried(phone: Phone, n: int) -> None:
    """A USB failure retried automatically, a second one fails the port, the operator retries."""
    arrive(phone, n)
    phone.send(LockResult(Lock.CLEAR, method="activation-server"), Confirm())
    phone.firmware()
    phone.send(*restore_events(RestoreFailed("usb reset", retryable=True)))
    phone.send(*restore_events(RestoreFailed("usb reset", retryable=True)))
    phone.send(*confirm_and_restore())  # a manual retry
    phone.send(Detached())


def failed(phone: Phone, n: int, detach: bool = True) -> None:
    arrive(phone, n)
    phone.send(LockResult(Lock.CLEAR, method="activation-server"), Confirm())
    phone.firmware()
    phone.send(*restore_events(RestoreFailed("device rejected the image", retryable=False)))
    if detach:
        phone.send(Detached())


def detached_mid_restore(phone: Phone, n: int) -> None:
    arrive(phone, n)
    phone.send(LockResult(Lock.CLEAR, method="activation-server"), Confirm(), Cancel(), Confirm())
    phone.firmware()
    phone.send(RestoreStarted(), Progress("restore image", 30.0), Detached())


def aborted(phone: Phone, n: int) -> None:
    arrive(phone, n)
    phone.send(LockResult(Lock.CLEAR, method="activation-server"), Confirm())
    phone.firmware()
    phone.send(RestoreStarted(), Progress("restore image", 30.0), Abort(), Detached())
