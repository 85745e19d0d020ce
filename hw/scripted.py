"""A phone layer that plays a scenario: phones arrive, answer and restore as scripted.

It implements the same ``PhoneLayer`` interface as the real one, at the level
of the station's questions (who is this, is it locked, restore it), so the
whole station runs on a laptop with nothing plugged in.
"""
from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from hw import models
from hw.phones import (Device, Lock, LockCheck, Mode, PhoneArrived, PhoneEvent, PhoneLeft,
                       RestoreError, RestoreProgress, RestoreReport)
from station.clock import Clock
from station.scenario import Scenario, ScenarioInfo, ScenarioPhone

# The phases a restore goes through, with their share of the time (restore image = ASR).
PHASES = (("enter recovery", 2), ("send iBSS/iBEC", 3), ("boot ramdisk", 5),
          ("restore image", 70), ("verify image", 10), ("flash firmware", 5),
          ("update baseband", 3), ("seal volume", 2))

FAILURES = {
    "usb": ("USB transfer failed", True),
    "network": ("Apple signing server unreachable", True),
    "device_rejected": ("device rejected the image (status 14)", False),
    "timeout": ("phone stopped answering", True),
}

IDENTIFY_S = 2.0
LOCK_CHECK_S = 3.0
REBOOT_TO_HELLO_S = 30.0


class ScriptedPhones:
    def __init__(self, scenario: Scenario, clock: Clock) -> None:
        self.clock = clock
        self.phones = {_key(phone): phone for phone in scenario.phones}
        self._failures: Counter[str] = Counter()

    async def watch(self, emit: Callable[[PhoneEvent], None]) -> None:
        async with asyncio.TaskGroup() as group:
            for phone in self.phones.values():
                group.create_task(self._play(phone, emit))
        await asyncio.Event().wait()  # the scenario is over; phones stay as they are

    async def _play(self, phone: ScenarioPhone, emit: Callable[[PhoneEvent], None]) -> None:
        await self.clock.sleep_until(phone.attach)
        emit(PhoneArrived(phone.slot, Device(key=_key(phone), mode=Mode(phone.mode))))
        if phone.detach is not None:
            await self.clock.sleep_until(phone.detach)
            emit(PhoneLeft(phone.slot))

    async def identify(self, device: Device) -> Device:
        await self.clock.sleep(IDENTIFY_S)
        return _identity(self.phones[device.key])

    async def check_lock(self, device: Device, after_restore: bool = False) -> LockCheck:
        phone = self.phones[device.key]
        if after_restore:
            await self.clock.sleep(REBOOT_TO_HELLO_S)
            if phone.activation_lock:
                return LockCheck(Lock.LOCKED, "Activation Lock (Apple asks for the Apple ID)",
                                 "activation-server")
            return LockCheck(Lock.CLEAR, "Hello screen, no Activation Lock", "activation-server")
        await self.clock.sleep(LOCK_CHECK_S)
        if phone.mode != "normal":
            return LockCheck(Lock.UNKNOWN, f"{phone.mode.upper()} mode: lock not readable", "none")
        if phone.find_my:
            return LockCheck(Lock.LOCKED, "Find My is on", "fmip")
        if phone.activation_lock:
            return LockCheck(Lock.LOCKED, "Activation Lock is on", "activation-server")
        return LockCheck(Lock.CLEAR, "Find My off", "fmip")

    async def restore(self, device: Device, firmware: object,
                      report: Callable[[RestoreReport], None]) -> None:
        phone = self.phones[device.key]
        failure = phone.failure if self._failures[device.key] < _times(phone) else None
        phases = [p for p in PHASES if phone.mode == "normal" or p[0] != "enter recovery"]
        total = sum(weight for _, weight in phases)
        done = 0.0
        for phase, weight in phases:
            for tick in range(10):
                percent = 100.0 * (done + weight * tick / 10) / total
                if failure and failure.phase == phase and percent >= failure.percent:
                    self._failures[device.key] += 1
                    reason, retryable = FAILURES[failure.kind]
                    raise RestoreError(f"{reason} in {phase} at {percent:.0f}%", retryable)
                report(RestoreProgress(phase, percent))
                await self.clock.sleep(phone.restore_time * weight / total / 10)
            done += weight
        report(RestoreProgress("done", 100.0))


def _times(phone: ScenarioPhone) -> int:
    return phone.failure.times if phone.failure else 0


def _ecid(phone: ScenarioPhone) -> int:
    if phone.ecid is not None:
        return phone.ecid
    return int.from_bytes(hashlib.sha256(phone.name.encode()).digest()[:7], "big")


def _key(phone: ScenarioPhone) -> str:
    return f"{phone.name}:{_ecid(phone):016X}"


def _identity(phone: ScenarioPhone) -> Device:
    model = models.by_product_type(phone.model)
    chip_id = model.chip_id if model else None
    ecid = _ecid(phone)
    normal = phone.mode == "normal"
    return Device(
        key=_key(phone), mode=Mode(phone.mode), product_type=phone.model,
        name=models.marketing_name(phone.model),
        ios_version=phone.ios if normal else "", build=phone.build if normal else "",
        udid=f"{chip_id or 0:08X}-{ecid:016X}" if normal else "", ecid=ecid,
        serial=phone.serial if phone.mode != "dfu" else "",  # DFU strings carry no SRNM
        chip_id=chip_id, board_id=model.board_id if model else None)


def open_scripted_phones(config: object, scenario: Scenario | None, clock: Clock) -> ScriptedPhones:
    empty = Scenario("none", ScenarioInfo(), (), (), {}, Path())
    return ScriptedPhones(scenario or empty, clock)
