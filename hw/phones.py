"""The phone layer: what the station needs from the phones on the hub.

The station talks to phones only through ``PhoneLayer``; the real
implementation drives usbmuxd/lockdownd and libusb, the simulated one plays a
scenario. Events flow to the station through the ``emit`` callback given to
``watch``, always called on the station's event loop.
"""
from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Protocol


class Mode(enum.Enum):
    NORMAL = "normal"
    RECOVERY = "recovery"
    DFU = "dfu"


class Lock(enum.Enum):
    UNCHECKED = "unchecked"
    CLEAR = "clear"  # neither Activation Lock nor Find My
    LOCKED = "locked"  # Activation Lock or Find My is on: never restored
    UNKNOWN = "unknown"  # could not tell (recovery/DFU, untrusted, no network)


# How often the station asks again a phone that does not trust it (passcode set, Trust not tapped).
TRUST_RECHECK_S = 3.0


@dataclass(frozen=True)
class Facts:
    """What refurbishers record of a phone, as the phone said it: None where it did not say.

    Never a guess: a DFU or recovery phone says none of these, a phone without cellular has no
    IMEI, and a value that fails its check (an IMEI's Luhn digit) is recorded as None
    (``hw.iphone.phone_facts`` reads and checks them).
    """

    imei: str | None = None  # lockdownd InternationalMobileEquipmentIdentity: 15 digits, Luhn
    imei2: str | None = None  # InternationalMobileEquipmentIdentity2 (dual SIM / eSIM)
    meid: str | None = None  # MobileEquipmentIdentifier: 14 hex digits (CDMA-capable phones)
    storage_bytes: int | None = None  # com.apple.disk_usage TotalDiskCapacity
    color: str | None = None  # DeviceColor, as lockdownd says it ("1", "#3b3b3c")
    enclosure_color: str | None = None  # DeviceEnclosureColor
    battery_cycle_count: int | None = None  # diagnostics relay, IOPMPowerSource CycleCount
    battery_design_capacity: int | None = None  # mAh, DesignCapacity
    battery_full_charge_capacity: int | None = None  # mAh, NominalChargeCapacity (AppleRawMaxCapacity)

    def known(self) -> dict[str, str | int]:
        """The facts the phone said, by name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def filled_from(self, other: Facts) -> Facts:
        """These facts, with what ``other`` says where these say nothing (a known one stays)."""
        return replace(self, **{name: value for name, value in other.known().items()
                                if getattr(self, name) is None})


NO_FACTS = Facts()


@dataclass(frozen=True)
class Device:
    """What the station knows of one phone; the phone layer fills in what it can."""

    key: str  # stable while plugged in: UDID in normal mode, ECID otherwise
    mode: Mode
    product_type: str = ""
    name: str = ""
    ios_version: str = ""
    build: str = ""
    udid: str = ""
    ecid: int | None = None
    serial: str = ""
    chip_id: int | None = None
    board_id: int | None = None
    facts: Facts = NO_FACTS  # IMEI, storage, colour... what lockdownd told without pairing

    @property
    def label(self) -> str:
        """Short id for logs: serial if known, else the ECID, else the key."""
        if self.serial:
            return self.serial
        return f"ECID {self.ecid:X}" if self.ecid is not None else self.key


# Events from the phone layer ----------------------------------------------


@dataclass(frozen=True)
class PhoneArrived:
    slot: int
    device: Device


@dataclass(frozen=True)
class PhoneLeft:
    slot: int


@dataclass(frozen=True)
class LayerFault:
    """A station-level piece is missing (``fault`` set) or back (``fault`` None)."""

    source: str  # e.g. "usbmuxd", "libusb", "network"
    fault: str | None  # display text, e.g. "NO USBMUXD"


PhoneEvent = PhoneArrived | PhoneLeft | LayerFault


# Results -------------------------------------------------------------------


@dataclass(frozen=True)
class LockCheck:
    """The answer of a lock check.

    ``needs_trust``: the phone runs iOS and would answer a host it trusts, but it does not
    trust this one (passcode set, Trust denied or not tapped). Its lock is UNKNOWN for a
    reason a person can remove, not by nature as in recovery or DFU: no ``unknown_lock``
    policy decides for it, and it is asked again until it trusts the station.
    """

    lock: Lock
    reason: str = ""  # shown to the operator: "Find My is on", "DFU: not checkable"
    method: str = ""  # how it was decided, for the record: "activation-server", "fmip", ...
    needs_trust: bool = False
    # What the phone told in the paired session the check held (IMEI, storage, battery): None
    # when the check held none (recovery, DFU, a phone that does not trust the station).
    facts: Facts | None = None


@dataclass(frozen=True)
class RestoreProgress:
    phase: str
    percent: float


@dataclass(frozen=True)
class TrustRequest:
    """The restore waits for the operator to unlock the phone and tap Trust."""

    reason: str = "unlock phone, tap Trust"


RestoreReport = RestoreProgress | TrustRequest


class PhoneError(Exception):
    """This phone cannot be handled (unreadable, not answering); the message is for the operator."""


class RestoreError(Exception):
    """A restore failed; ``retryable`` says whether trying again may help."""

    def __init__(self, reason: str, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class PhoneLayer(Protocol):
    restore_tool: str  # what restores, with its version: named on every erasure certificate
    erase_tool: str  # what erases a phone running iOS (an erase job), named the same way

    async def watch(self, emit: Callable[[PhoneEvent], None]) -> None:
        """Report arrivals, departures and faults until cancelled."""

    async def identify(self, device: Device) -> Device:
        """Fill in the identity of a phone that just arrived."""

    async def check_lock(self, device: Device, after_restore: bool = False) -> LockCheck:
        """Activation Lock / Find My status; UNKNOWN with a reason when it cannot tell, and
        ``needs_trust`` when it could tell once the phone trusts the station."""

    async def restore(self, device: Device, firmware: object,
                      report: Callable[[RestoreReport], None]) -> None:
        """Erase and reinstall; raises RestoreError. Cancelling the task stops the restore."""

    async def erase(self, device: Device, report: Callable[[RestoreReport], None]) -> None:
        """Ask a phone running iOS that trusts the station to erase itself (Erase All Content and
        Settings, keeping its iOS); it reboots to the Hello screen, where ``check_lock(...,
        after_restore=True)`` finds it. Raises RestoreError; cancelling the task stops it."""
