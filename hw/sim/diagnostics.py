"""The phone's diagnostics relay (``com.apple.mobile.diagnostics_relay``): the battery's IORegistry entry.

Requests and replies as libimobiledevice src/diagnostics_relay.c and pymobiledevice3
services/diagnostics.py (``DiagnosticsService``) speak them: plist messages with ``Request``;
each reply carries ``Status`` ("Success", "Failure", "UnknownRequest": libimobiledevice
``diagnostics_relay_check_result``) and, for a query, ``Diagnostics``. ``IORegistry`` with
``EntryClass`` ``IOPMPowerSource`` (pymobiledevice3 ``get_battery``) answers the
``AppleSmartBattery`` entry, whose class is a subclass of IOPMPowerSource; its keys are the
ones a real phone reports (``ioreg -c AppleSmartBattery``): ``CycleCount``, ``DesignCapacity``,
``NominalChargeCapacity``, ``AppleRawMaxCapacity`` (mAh) and ``MaxCapacity`` (a percentage on
current iOS). ``Goodbye`` ends the connection. Only a paired session can start the service
(hw.sim.lockdownd ``_start_service``).
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from hw.sim.framing import requests, write_plist

if TYPE_CHECKING:
    from hw.sim.device import SimDevice

BATTERY_CLASSES = frozenset({"IOPMPowerSource", "AppleSmartBattery"})


class DiagnosticsRelay:
    SERVICE_NAME = "com.apple.mobile.diagnostics_relay"

    def __init__(self, device: SimDevice) -> None:
        self.device = device
        self.phone = device.phone

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async for message in requests(reader, f"{self.phone.serial} diagnostics_relay"):
            self.phone.record(message)
            if self.phone.diagnostics_stalls:  # takes the request, never answers
                await reader.read()
                return
            with self.device.world.lock:
                reply = self._answer(message)
            await write_plist(writer, reply)
            if message.get("Request") == "Goodbye":
                return

    def _answer(self, message: dict[str, Any]) -> dict[str, Any]:
        request = message.get("Request")
        if request == "Goodbye":
            return {"Status": "Success"}
        if request != "IORegistry":
            return {"Status": "UnknownRequest"}
        if message.get("EntryClass") in BATTERY_CLASSES or message.get("EntryName") == "AppleSmartBattery":
            return {"Status": "Success", "Diagnostics": {"IORegistry": self._battery()}}
        return {"Status": "Success", "Diagnostics": {}}  # no such entry: pymobiledevice3 returns None

    def _battery(self) -> dict[str, Any]:
        phone = self.phone
        return {
            "CycleCount": phone.battery_cycle_count,
            "DesignCapacity": phone.battery_design_capacity,
            "NominalChargeCapacity": phone.battery_full_charge_capacity,
            "AppleRawMaxCapacity": phone.battery_full_charge_capacity,
            "MaxCapacity": 100,
            "CurrentCapacity": 100,
            "IsCharging": False,
            "ExternalConnected": True,
        }
