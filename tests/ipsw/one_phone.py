"""One clear phone through a line-mode station with an IPSW cache: what the station does with the file."""
from __future__ import annotations

import asyncio
import dataclasses

from hw.phones import Device, Lock, LockCheck, Mode, PhoneArrived
from station.config import Config, RestoreSection
from station.core import Station
from station.firmware import IpswFirmware
from station.ipsw.cache import IpswCache
from station.machine import State


class OnePhone:
    """Enough of the phone layer for one phone running iOS, Find My off; ``restores`` lists what
    each restore was given, and ``while_restoring`` (if set) is called during the restore."""

    def __init__(self, while_restoring=None) -> None:  # type: ignore[no-untyped-def]
        self.restores: list[object] = []
        self.while_restoring = while_restoring

    async def watch(self, emit) -> None:  # type: ignore[no-untyped-def]
        await asyncio.Event().wait()

    async def identify(self, device: Device) -> Device:
        return dataclasses.replace(device, product_type="iPhone14,7", serial="F2LTEST")

    async def check_lock(self, device: Device, after_restore: bool = False) -> LockCheck:
        return LockCheck(Lock.CLEAR, "Find My off", "fmip")

    async def restore(self, device, firmware, report) -> None:  # type: ignore[no-untyped-def]
        self.restores.append(firmware)
        if self.while_restoring is not None:
            await self.while_restoring(firmware)


async def restore_one(cache: IpswCache, phones: OnePhone) -> Station:
    """The phone plugged into slot 1 and taken until its port is DONE or FAILED."""
    station = Station(Config(restore=RestoreSection(mode="line")), phones,  # type: ignore[arg-type]
                      firmware=IpswFirmware(cache, required=True), clock=asyncio.get_running_loop().time)
    station.on_phone_event(PhoneArrived(1, Device(key="p1", mode=Mode.NORMAL)))
    async with asyncio.timeout(10):
        while station.ports[1].state not in (State.FAILED, State.DONE):
            await asyncio.sleep(0.01)
    await station.stop_work()
    return station
