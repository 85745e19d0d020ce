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
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from pymobiledevice3 import usbmux
from pymobiledevice3.exceptions import ConnectionFailedToUsbmuxdError, MuxException

from hw import models
from hw.iphone import lockdown_ops
from hw.iphone.iboot import BadSerialString, parse_iboot_serial
from hw.iphone.restore import WorkerSetup, fork_server, pairing_dir, restore_in_worker
from hw.iphone.slots import SlotMap
from hw.iphone.usb_scan import UsbPhone, UsbUnavailable, scan
from hw.network import watch_network
from station.config import Config
from hw.phones import (Device, LayerFault, Lock, LockCheck, Mode, PhoneArrived, PhoneError,
                       PhoneEvent, PhoneLeft, RestoreReport)

log = logging.getLogger(__name__)

USB_POLL_S = 0.5
USBMUXD_RETRY_S = 2.0
RESTORE_GRACE_S = 120.0  # a real restore leaves USB for tens of seconds between stages
HELLO_WAIT_S = 600.0  # after a restore: wait this long for the phone to boot to Hello
SETTLE_S = 3 * USB_POLL_S  # long enough for the next USB scan to see a phone usbmuxd announced
PORT_MEMORY = 512  # normal-mode serials whose last port is remembered


@dataclass
class _Held:
    """A slot whose phone is expected to vanish and come back (restore, reboot to Hello)."""

    grace_s: float
    since_gone: float | None = None
    ends_when_seen: bool = False  # a last hold: until the USB scan has caught up with usbmuxd


class UsbPhoneLayer:
    def __init__(self, slot_map: SlotMap, setup: WorkerSetup, usb_backend: object | None = None,
                 restore_grace_s: float = RESTORE_GRACE_S, hello_wait_s: float = HELLO_WAIT_S) -> None:
        self.slot_map = slot_map
        self.setup = setup
        self.pairing_dir = pairing_dir(setup.home)
        self.usb_backend = usb_backend
        self.restore_grace_s = restore_grace_s
        self.hello_wait_s = hello_wait_s
        self._mux: dict[str, usbmux.MuxDevice] = {}  # by UDID, as usbmuxd spells it
        self._usb: list[UsbPhone] = []
        self._port_of: dict[str, str] = {}  # normal-mode USB serial (UDID without dash) -> port path
        self._told: dict[int, Device] = {}  # what the station has been told is on each slot
        self._held: dict[int, _Held] = {}
        self._restore_mux_ids: dict[int | None, set[int]] = {}
        self._bad_serials: set[str] = set()
        self._emit: Callable[[PhoneEvent], None] = lambda event: None
        self._changed = asyncio.Event()

    # -- presence -----------------------------------------------------------

    async def watch(self, emit: Callable[[PhoneEvent], None]) -> None:
        self._emit = emit
        with fork_server(self.setup):
            async with asyncio.TaskGroup() as group:
                group.create_task(self._watch_usbmux())
                group.create_task(self._poll_usb())
                for task in self._side_tasks(emit):
                    group.create_task(task)

    def _side_tasks(self, emit: Callable[[PhoneEvent], None]) -> list[Coroutine[Any, Any, None]]:
        """What else runs while the phones are watched (a network check, a scenario)."""
        return [watch_network(emit)]

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
                # Usually missing udev rules: the phone is there but cannot be identified.
                self._emit(LayerFault("usb-access", "USB NO ACCESS" if problems else None))
                for problem in problems:
                    if problem not in self._bad_serials:
                        self._bad_serials.add(problem)
                        log.error(problem)
                self._take_scan(phones)
                self._reconcile()
            await asyncio.sleep(USB_POLL_S)

    def _take_scan(self, phones: list[UsbPhone]) -> None:
        """The bus as the last scan saw it, and the port where each normal-mode serial was last."""
        self._usb = phones
        for phone in phones:
            if phone.mode is Mode.NORMAL:
                self._port_of.pop(phone.serial, None)
                self._port_of[phone.serial] = phone.port_path
        while len(self._port_of) > PORT_MEMORY:  # oldest first: a busy line sees thousands
            del self._port_of[next(iter(self._port_of))]

    def _present(self) -> dict[int, Device]:
        """Which phone is on which slot, from the latest usbmuxd and USB pictures.

        A normal-mode phone is present while usbmuxd lists it (it is usable only then), at
        the port where the USB scan last saw its serial: usbmuxd often announces a phone
        before the next scan does.
        """
        present: dict[int, Device] = {}
        for mux in self._mux.values():
            path = self._port_of.get(mux.serial.replace("-", ""))
            slot = self.slot_map.slot_for(path) if path else None
            if slot is not None:
                present[slot] = Device(key=mux.serial, mode=Mode.NORMAL, udid=mux.serial,
                                       ecid=mux.ecid)
        for phone in self._usb:
            if phone.mode is Mode.NORMAL:
                continue
            slot = self.slot_map.slot_for(phone.port_path)
            device = self._boot_device(phone)
            if slot is not None and device is not None:
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
            held = self._held.get(slot)
            if told is not None and seen is not None and _same_phone(told, seen):
                self._told[slot] = seen  # the same phone, perhaps in another mode: no news
                if held is not None:
                    held.since_gone = None
                    if held.ends_when_seen:
                        del self._held[slot]
                continue
            if told is not None and seen is None and held is not None:
                held.since_gone = held.since_gone or now
                if now - held.since_gone < held.grace_s:
                    continue  # re-enumerating between restore stages, or rebooting to Hello
            if told is not None:
                del self._told[slot]
                self._emit(PhoneLeft(slot))
            if seen is not None:
                self._told[slot] = seen
                self._emit(PhoneArrived(slot, seen))
        self._changed.set()

    async def survey(self) -> tuple[dict[int, Device], list[str]]:
        """One look at usbmuxd and the bus, each phone identified; and what could not be seen.

        For `station devices`: no Listen subscription, nothing left running.
        """
        notes: list[str] = []
        try:
            self._mux = {d.serial: d for d in await usbmux.list_devices() if d.is_usb}
        except (ConnectionFailedToUsbmuxdError, MuxException, OSError) as error:
            notes.append(f"usbmuxd: {error or 'not running'} (normal-mode phones not listed)")
        phones, problems = await asyncio.to_thread(scan, self.usb_backend)  # raises UsbUnavailable
        notes.extend(problems)
        self._take_scan(phones)
        present = self._present()
        for slot, device in present.items():
            try:
                present[slot] = await self.identify(device)
            except PhoneError as error:
                notes.append(f"slot {slot}: {error}")
        return present, notes

    # -- questions ----------------------------------------------------------

    async def identify(self, device: Device) -> Device:
        if device.mode is Mode.NORMAL:
            return await lockdown_ops.read_identity(device.udid, self.pairing_dir)
        if not device.product_type:
            raise PhoneError(f"unknown model: {device.name}")
        return device

    async def check_lock(self, device: Device, after_restore: bool = False) -> LockCheck:
        if after_restore:
            try:
                return await self._check_at_hello(device)
            finally:
                self._release(device)
        if device.mode is not Mode.NORMAL:
            return LockCheck(Lock.UNKNOWN, f"{device.mode.value.upper()}: lock not readable",
                             "none")
        try:
            return await lockdown_ops.check_lock(device.udid, self.pairing_dir)
        except lockdown_ops.NotReady as error:
            return LockCheck(Lock.UNKNOWN, str(error), "none")

    async def _check_at_hello(self, device: Device) -> LockCheck:
        """Once the restored phone is back in normal mode (a new enumeration), check it again."""
        stale = self._restore_mux_ids.pop(device.ecid, set())
        why = "phone did not come back after the restore"
        try:
            async with asyncio.timeout(self.hello_wait_s):
                while True:
                    for mux in list(self._mux.values()):
                        if device.ecid is None or mux.ecid != device.ecid or mux.devid in stale:
                            continue
                        try:
                            return await lockdown_ops.check_lock(mux.serial, self.pairing_dir)
                        except lockdown_ops.NotReady as error:
                            stale.add(mux.devid)  # restore mode, or gone again: wait for the next one
                            why = str(error)
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            return LockCheck(Lock.UNKNOWN, why, "none")

    async def restore(self, device: Device, firmware: object,
                      report: Callable[[RestoreReport], None]) -> None:
        slot = next(s for s, d in self._told.items() if _same_phone(d, device))
        self._held[slot] = _Held(self.restore_grace_s)
        # The phone's usbmuxd ids before the restore: the check afterwards needs a new one.
        self._restore_mux_ids[device.ecid] = {
            m.devid for m in self._mux.values() if m.ecid is not None and m.ecid == device.ecid}
        try:
            await self._restore_in_worker(slot, device, firmware, report)
        except BaseException:
            self._release(device)
            raise
        # Restored: the phone reboots to the Hello screen, where the station checks it again.
        self._held[slot] = _Held(self.hello_wait_s)

    def _release(self, device: Device) -> None:
        """Stop expecting the phone to vanish, once it is seen again (or stays gone)."""
        for slot, told in list(self._told.items()):
            if _same_phone(told, device):
                self._held[slot] = _Held(SETTLE_S, ends_when_seen=True)
        self._reconcile()

    async def _restore_in_worker(self, slot: int, device: Device, firmware: object,
                                 report: Callable[[RestoreReport], None]) -> None:
        await restore_in_worker(device, getattr(firmware, "path", None), report,
                                label=f"slot{slot}", setup=self.setup)


def _same_phone(a: Device, b: Device) -> bool:
    """One phone keeps its ECID across modes; its UDID (normal) or ECID key (recovery/DFU) does not."""
    return a.key == b.key or (a.ecid is not None and a.ecid == b.ecid)


def open_usb_phones(config: Config, scenario: object, clock: object) -> UsbPhoneLayer:
    """The Pi backend's phones: usbmuxd, libusb and pymobiledevice3 restores."""
    state = config.station.state_dir
    setup = WorkerSetup(home=state / "pymobiledevice3-home", log_dir=state / "restore-logs",
                        timeout_s=config.restore.timeout_s, environment={})
    return UsbPhoneLayer(SlotMap(config.hub.ports, config.hub.slots), setup)
