"""The real phone layer: usbmuxd for normal-mode phones, libusb for recovery and DFU.

Presence comes from two sources, reconciled into one picture per slot:
- one long-lived usbmuxd Listen subscription (a normal-mode phone is usable
  only once usbmuxd announces it);
- a pyusb scan every ``USB_POLL_S`` (pyusb exposes no hotplug callbacks; a
  scan of a few devices is cheap and notices a change within a second), which
  gives every phone's physical port path and finds recovery/DFU phones.
A phone being restored re-enumerates several times (normal -> recovery ->
restore ramdisk -> normal); while its restore runs, its slot keeps the phone
unless the slot stays empty for ``RESTORE_GRACE_S``.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pymobiledevice3 import usbmux
from pymobiledevice3.exceptions import ConnectionFailedToUsbmuxdError, MuxException

from hw import models
from hw.iphone import lockdown_ops
from hw.iphone.iboot import BadSerialString, parse_iboot_serial
from hw.iphone.slots import SlotMap
from hw.iphone.usb_scan import UsbPhone, UsbUnavailable, scan
from hw.phones import (Device, LayerFault, Lock, LockCheck, Mode, PhoneArrived, PhoneError,
                       PhoneEvent, PhoneLeft, RestoreReport)

log = logging.getLogger(__name__)

USB_POLL_S = 0.5
USBMUXD_RETRY_S = 2.0
RESTORE_GRACE_S = 120.0  # a real restore leaves USB for tens of seconds between stages
HELLO_WAIT_S = 600.0  # after a restore: wait this long for the phone to boot to Hello


@dataclass
class _Restoring:
    since_gone: float | None = None


class UsbPhoneLayer:
    def __init__(self, slot_map: SlotMap, pairing_dir: Path,
                 restore: Callable[..., object] | None = None,
                 usb_backend: object | None = None, restore_grace_s: float = RESTORE_GRACE_S,
                 hello_wait_s: float = HELLO_WAIT_S) -> None:
        self.slot_map = slot_map
        self.restore_grace_s = restore_grace_s
        self.hello_wait_s = hello_wait_s
        self.pairing_dir = pairing_dir
        self.usb_backend = usb_backend
        self._restore_runner = restore
        self._mux: dict[str, usbmux.MuxDevice] = {}  # by UDID, as usbmuxd spells it
        self._usb: list[UsbPhone] = []
        self._told: dict[int, Device] = {}  # what the station has been told is on each slot
        self._restoring: dict[int, _Restoring] = {}
        self._bad_serials: set[str] = set()
        self._emit: Callable[[PhoneEvent], None] = lambda event: None
        self._changed = asyncio.Event()

    # -- presence -----------------------------------------------------------

    async def watch(self, emit: Callable[[PhoneEvent], None]) -> None:
        self._emit = emit
        async with asyncio.TaskGroup() as group:
            group.create_task(self._watch_usbmux())
            group.create_task(self._poll_usb())

    async def _watch_usbmux(self) -> None:
        while True:
            mux = None
            try:
                mux = await usbmux.create_mux()
                await mux.get_device_list(0.1)
                self._set_mux({d.serial: d for d in mux.devices if d.is_usb})
                await mux.close()
                mux = await usbmux.create_mux()
                await mux.listen()
                self._emit(LayerFault("usbmuxd", None))
                while True:
                    await mux.receive_device_state_update()
                    self._set_mux({d.serial: d for d in mux.devices if d.is_usb})
            except ConnectionFailedToUsbmuxdError:
                self._emit(LayerFault("usbmuxd", "NO USBMUXD"))
            except (MuxException, OSError) as error:
                log.warning("usbmuxd connection lost: %s", error)
                self._emit(LayerFault("usbmuxd", "USBMUXD ERROR"))
            finally:
                if mux is not None:
                    await mux.close()
            await asyncio.sleep(USBMUXD_RETRY_S)

    def _set_mux(self, devices: dict[str, usbmux.MuxDevice]) -> None:
        self._mux = devices
        self._reconcile()

    async def _poll_usb(self) -> None:
        while True:
            try:
                phones, problems = await asyncio.to_thread(scan, self.usb_backend)
            except UsbUnavailable as error:
                log.debug("USB scan: %s", error)
                self._emit(LayerFault("libusb", error.fault))
            else:
                self._emit(LayerFault("libusb", None))
                for problem in problems:
                    if problem not in self._bad_serials:
                        self._bad_serials.add(problem)
                        log.error(problem)
                self._usb = phones
                self._reconcile()
            await asyncio.sleep(USB_POLL_S)

    def _present(self) -> dict[int, Device]:
        """Which phone is on which slot, from the latest usbmuxd and USB pictures."""
        present: dict[int, Device] = {}
        for phone in self._usb:
            slot = self.slot_map.slot_for(phone.port_path)
            if slot is None:
                continue
            if phone.mode is Mode.NORMAL:
                mux = next((d for d in self._mux.values() if d.matches_udid(phone.serial)), None)
                if mux is not None:  # not usable until usbmuxd has announced it
                    present[slot] = Device(key=mux.serial, mode=Mode.NORMAL, udid=mux.serial,
                                           ecid=mux.ecid)
                continue
            device = self._boot_device(phone)
            if device is not None:
                present[slot] = device
        return present

    def _boot_device(self, phone: UsbPhone) -> Device | None:
        try:
            serial = parse_iboot_serial(phone.serial)
        except BadSerialString as error:
            line = f"USB port {phone.port_path}: {error}"
            if line not in self._bad_serials:
                self._bad_serials.add(line)
                log.error(line)
            return None
        model = models.by_chip_board(serial.chip_id, serial.board_id)
        return Device(
            key=f"ECID:{serial.ecid:016X}", mode=phone.mode,
            product_type=model.product_type if model else "",
            name=model.display_name if model else f"CPID {serial.chip_id:X} BDID {serial.board_id:X}",
            ecid=serial.ecid, serial=serial.serial_number,
            chip_id=serial.chip_id, board_id=serial.board_id)

    def _reconcile(self) -> None:
        present = self._present()
        now = time.monotonic()
        for slot in set(self._told) | set(present):
            told, seen = self._told.get(slot), present.get(slot)
            restoring = self._restoring.get(slot)
            if told is not None and seen is not None and _same_phone(told, seen):
                self._told[slot] = seen  # the same phone, perhaps in another mode: no news
                if restoring is not None:
                    restoring.since_gone = None
                continue
            if told is not None and seen is None and restoring is not None:
                restoring.since_gone = restoring.since_gone or now
                if now - restoring.since_gone < self.restore_grace_s:
                    continue  # re-enumerating between restore stages, probably
            if told is not None:
                del self._told[slot]
                self._emit(PhoneLeft(slot))
            if seen is not None:
                self._told[slot] = seen
                self._emit(PhoneArrived(slot, seen))
        self._changed.set()

    # -- questions ----------------------------------------------------------

    async def identify(self, device: Device) -> Device:
        if device.mode is Mode.NORMAL:
            return await lockdown_ops.read_identity(device.udid, self.pairing_dir)
        if not device.product_type:
            raise PhoneError(f"unknown model: {device.name}")
        return device

    async def check_lock(self, device: Device, after_restore: bool = False) -> LockCheck:
        if after_restore:
            udid = await self._wait_for_normal_mode(device)
            if udid is None:
                return LockCheck(Lock.UNKNOWN, "phone did not come back after the restore", "none")
            return await lockdown_ops.check_lock(udid, self.pairing_dir)
        if device.mode is not Mode.NORMAL:
            return LockCheck(Lock.UNKNOWN, f"{device.mode.value.upper()} mode: lock not readable",
                             "none")
        return await lockdown_ops.check_lock(device.udid, self.pairing_dir)

    async def _wait_for_normal_mode(self, device: Device) -> str | None:
        """The UDID of the restored phone once usbmuxd announces it again, or None."""
        try:
            async with asyncio.timeout(self.hello_wait_s):
                while True:
                    for mux in self._mux.values():
                        if device.ecid is not None and mux.ecid == device.ecid:
                            return mux.serial
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            return None

    async def restore(self, device: Device, firmware: object,
                      report: Callable[[RestoreReport], None]) -> None:
        slot = next(s for s, d in self._told.items() if _same_phone(d, device))
        self._restoring[slot] = _Restoring()
        try:
            await self._restore_runner(device, firmware, report)
        finally:
            del self._restoring[slot]
            self._reconcile()


def _same_phone(a: Device, b: Device) -> bool:
    """One phone keeps its ECID across modes; its UDID (normal) or ECID key (recovery/DFU) does not."""
    return a.key == b.key or (a.ecid is not None and a.ecid == b.ecid)
