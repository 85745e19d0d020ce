"""What refurbishers record of a phone, read from it and checked: IMEI, storage, colour, battery.

Where each fact comes from (pymobiledevice3 11.45.0 is the client; hw/sim serves the same):

- lockdownd's values (``LockdownClient.all_values``; pymobiledevice3 lockdown.py
  ``validate_pairing`` reads them again once a session is open, "reload data after
  pairing"): ``InternationalMobileEquipmentIdentity``, ``InternationalMobileEquipmentIdentity2``,
  ``MobileEquipmentIdentifier``, ``DeviceColor``, ``DeviceEnclosureColor``. A phone without
  cellular has no IMEI key at all. Unpaired, lockdownd hands out only a few keys (``DeviceColor``
  among them: libimobiledevice ``ideviceinfo --simple``), so most facts need the paired session the
  lock check holds anyway.
- storage: ``GetValue`` domain ``com.apple.disk_usage`` key ``TotalDiskCapacity`` (bytes), else
  ``com.apple.disk_usage.factory`` (libimobiledevice tools/ideviceinfo.c ``domains[]``; pymobiledevice3
  has no helper, ``LockdownClient.get_value(domain, key)`` asks it).
- battery: the diagnostics relay (``com.apple.mobile.diagnostics_relay``, pymobiledevice3
  services/diagnostics.py ``DiagnosticsService.get_battery``: ``IORegistry`` with ``EntryClass``
  ``IOPMPowerSource``, the ``AppleSmartBattery`` entry): ``CycleCount``, ``DesignCapacity`` and
  ``NominalChargeCapacity`` (older iOS: ``AppleRawMaxCapacity``; ``MaxCapacity`` is a percentage
  on current iOS, so it is not read as mAh). StartService needs a paired session.

Every read is optional and bounded: a phone that does not answer, or answers garbage, leaves
the fact None and never fails the lock check it rides on. A value that fails its check is
logged once (the same bad value of the same phone is not logged at every check) and dropped.
"""
from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from typing import Any

from pymobiledevice3.exceptions import PyMobileDevice3Exception
from pymobiledevice3.lockdown import LockdownClient
from pymobiledevice3.services.diagnostics import DiagnosticsService

from hw.phones import NO_FACTS, Facts

log = logging.getLogger(__name__)

FACTS_TIMEOUT_S = 5.0  # all of storage and battery; the lock check's answer never waits longer
DISK_DOMAINS = ("com.apple.disk_usage", "com.apple.disk_usage.factory")
MAX_STORAGE = 2**50  # 1 PiB: far above any phone; beyond it the number is not a capacity
MAX_CYCLES = 100_000
MAX_MAH = 100_000
_COLOR = re.compile(r"[#0-9A-Za-z ,._-]{1,32}")
_logged: set[str] = set()
_LOG_MEMORY = 4096


def luhn_ok(digits: str) -> bool:
    """The Luhn check of a digit string (an IMEI's last digit checks the first 14)."""
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def check_imei(value: object) -> str | None:
    """A 15-digit IMEI with a valid check digit, or None."""
    if isinstance(value, str) and len(value) == 15 and value.isascii() and value.isdigit() and luhn_ok(value):
        return value
    return None


def check_meid(value: object) -> str | None:
    """A 14-hex-digit MEID (upper case), or None."""
    if isinstance(value, str) and re.fullmatch(r"[0-9A-Fa-f]{14}", value):
        return value.upper()
    return None


def check_color(value: object) -> str | None:
    """lockdownd's colour text ("1", "#3b3b3c", "white"): short, printable, or None."""
    if isinstance(value, str) and _COLOR.fullmatch(value):
        return value
    return None


def _count(limit: int, least: int = 0):  # type: ignore[no-untyped-def]
    def check(value: object) -> int | None:
        if type(value) is int and least <= value <= limit:
            return value
        return None
    return check


check_storage = _count(MAX_STORAGE, 1)
check_cycles = _count(MAX_CYCLES)
check_mah = _count(MAX_MAH, 1)

VALUE_KEYS = {  # Facts field: (lockdownd key, check)
    "imei": ("InternationalMobileEquipmentIdentity", check_imei),
    "imei2": ("InternationalMobileEquipmentIdentity2", check_imei),
    "meid": ("MobileEquipmentIdentifier", check_meid),
    "color": ("DeviceColor", check_color),
    "enclosure_color": ("DeviceEnclosureColor", check_color),
}


def from_values(values: Mapping[str, Any], who: str) -> Facts:
    """The facts in lockdownd's values (``all_values``); a bad one is logged once and left None."""
    return Facts(**{name: _checked(who, key, values.get(key), check)
                    for name, (key, check) in VALUE_KEYS.items()})


def from_battery(entry: object, who: str) -> Facts:
    """Cycle count and capacities from the diagnostics relay's IOPMPowerSource entry."""
    if not isinstance(entry, Mapping):
        if entry is not None:
            _log_once(who, f"diagnostics IOPMPowerSource is {_shown(entry)}, not a dictionary")
        return NO_FACTS
    full_key = "NominalChargeCapacity" if "NominalChargeCapacity" in entry else "AppleRawMaxCapacity"
    return Facts(
        battery_cycle_count=_checked(who, "CycleCount", entry.get("CycleCount"), check_cycles),
        battery_design_capacity=_checked(who, "DesignCapacity", entry.get("DesignCapacity"), check_mah),
        battery_full_charge_capacity=_checked(who, full_key, entry.get(full_key), check_mah))


def _checked(who: str, key: str, value: object, check) -> Any:  # type: ignore[no-untyped-def]
    if value is None:
        return None
    good = check(value)
    if good is None:
        _log_once(who, f"lockdownd's {key} is {_shown(value)}: not recorded")
    return good


def _log_once(who: str, message: str) -> None:
    line = f"{who}: {message}"
    if line in _logged:
        return
    if len(_logged) >= _LOG_MEMORY:
        _logged.clear()
    _logged.add(line)
    log.warning("%s", line)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


async def read_in_session(lockdown: LockdownClient, timeout_s: float = FACTS_TIMEOUT_S) -> Facts:
    """Everything a paired session tells, within ``timeout_s``; never raises (but cancellation)."""
    who = str(lockdown.identifier)
    facts = from_values(lockdown.all_values, who)
    try:
        async with asyncio.timeout(timeout_s):
            facts = facts.filled_from(Facts(storage_bytes=await _storage(lockdown, who)))
            facts = facts.filled_from(await _battery(lockdown, who))
    except TimeoutError:
        log.info("%s: storage/battery not read within %g s: recorded as unknown", who, timeout_s)
    return facts


async def _storage(lockdown: LockdownClient, who: str) -> int | None:
    for domain in DISK_DOMAINS:
        try:
            value = await lockdown.get_value(domain, "TotalDiskCapacity")
        except (PyMobileDevice3Exception, OSError) as error:
            log.info("%s: %s TotalDiskCapacity not readable: %s", who, domain, error)
            continue
        storage = _checked(who, f"{domain} TotalDiskCapacity", value, check_storage)
        if storage is not None:
            return storage
    return None


async def _battery(lockdown: LockdownClient, who: str) -> Facts:
    try:
        async with DiagnosticsService(lockdown) as diagnostics:
            entry = await diagnostics.get_battery()
    except (PyMobileDevice3Exception, OSError, ValueError, TypeError, KeyError) as error:
        log.info("%s: battery not readable (diagnostics relay): %s", who, error or type(error).__name__)
        return NO_FACTS
    return from_battery(entry, who)
