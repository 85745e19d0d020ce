"""The real phone layer: usbmuxd for normal-mode phones, libusb for recovery and DFU.

Presence comes from two sources, reconciled into one picture per slot:
- one long-lived usbmuxd Listen subscription (a normal-mode phone is usable
  only once usbmuxd announces it), applied event by event;
- a pyusb scan every ``USB_POLL_S`` (pyusb exposes no hotplug callbacks; a
  scan of a few devices is cheap and notices a change within a second), which
  gives every phone's physical port path and finds recovery/DFU phones; udev's
  hotplug event for a recovery or DFU phone (``hw.iphone.hotplug``) sets one off
  at once, and a phone usbmuxd announces is placed at its port read from sysfs
  (``hw.iphone.usb_sysfs``), neither waiting for the poll.

What real usbmuxd does that shapes this code (usbmuxd @2efa75a):
- on every (re)connect, Listen replays one Attached per phone (client.c
  ``start_listen``): events are applied one at a time, never as a new list;
- on Debian it runs only while a phone runs iOS and numbers devices from 1 again
  when it restarts (see ``hw.sim.udev``): a DeviceID says nothing about which
  enumeration it is, so each usbmuxd entry gets a sighting number of our own,
  new for every entry on every new connection;
- its absence is a fault only while a phone running iOS is on the bus.

A phone is followed across modes by its ECID: from the UDID on A12 and later,
from lockdownd's ``UniqueChipID`` on older phones (their UDID has no ECID in it),
from the iBoot serial string in recovery and DFU. While a restore runs, its
slot keeps the phone unless the slot stays empty for ``RESTORE_GRACE_S``.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from importlib import metadata
from pathlib import Path
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any

from pymobiledevice3 import usbmux
from pymobiledevice3.exceptions import (ConnectionFailedToUsbmuxdError, MuxException, PairingError,
                                        PyMobileDevice3Exception)

from hw import models
from hw.iphone import activation, lockdown_ops
from hw.iphone.hotplug import Hotplug, UdevHotplug
from hw.iphone.iboot import BadSerialString, parse_iboot_serial
from hw.iphone.restore import WorkerSetup, fork_server, pairing_dir, restore_in_worker
from hw.iphone.slots import SlotMap
from hw.iphone.usb_scan import Scan, UsbPhone, UsbScanner, UsbUnavailable
from hw.iphone.usb_sysfs import UsbSysfs
from hw.iphone.usb_topology import PortPeers
from hw.network import ACTIVATION_HOST, host_and_port, watch_network
from hw.phones import (Device, LayerFault, Lock, LockCheck, Mode, PhoneArrived, PhoneError,
                       PhoneEvent, PhoneLeft, RestoreError, RestoreProgress, RestoreReport)

log = logging.getLogger(__name__)

USB_POLL_S = 0.5
USBMUXD_RETRY_S = 1.0
USBMUXD_ANSWER_S = 10.0  # connect, Listen and ListDevices take milliseconds on a healthy usbmuxd
USBMUXD_START_S = 5.0  # udev + systemd start usbmuxd well within this once a phone runs iOS
USBMUXD_WAIT_S = 30.0  # a restore that needs usbmuxd waits this long for it to come back
RESTORE_GRACE_S = 120.0  # a real restore leaves USB for tens of seconds between stages
HELLO_WAIT_S = 600.0  # after a restore: wait this long for the phone to boot to Hello
READY_WAIT_S = 30.0  # a phone just plugged in or booted: its daemons may need this long
RETRY_S = 3.0  # between two questions to a phone that could not answer yet
VERIFY_UNKNOWN_TRIES = 3  # post-restore: an UNKNOWN right after the reboot is not the answer
SETTLE_S = 3 * USB_POLL_S  # long enough for the next USB scan to see a phone usbmuxd announced
# A phone back on the bus is seen by the next scan; one that came back on usbmuxd (in restore mode,
# with usbmuxd started on demand) by the next connection attempt: the layer's own delay, in real time.
REAPPEAR_S = USB_POLL_S + USBMUXD_RETRY_S
# usbmuxd announces a phone only once its preflight is done (preflight.c: QueryType, StartSession
# or a Pair attempt), also the phones it finds when it (re)starts: 7 s seen in make hil's VM.
PREFLIGHT_S = 15.0
BUSY_GRACE_S = 2.0  # a phone caught re-enumerating is off the bus about this long (a DFU reset)
ERASE_PHASE = "erase"  # the one phase of an erase: 0% when asked, 100% once the phone took it
PORT_MEMORY = 512  # normal-mode serials whose last port (and ECID) is remembered


@dataclass
class _Held:
    """A slot whose phone is expected to vanish and come back (restore, reboot to Hello)."""

    grace_s: float
    since_gone: float | None = None
    # A last hold: it ends once a USB scan begun after this one has seen the phone, and the phone
    # counts as gone while such a scan does not show it (what usbmuxd said, or a scan under way,
    # may be stale: a failed restore often leaves the phone rebooting, a pulled one is gone).
    until_scan: int | None = None


@dataclass(frozen=True)
class _Sighting:
    """One usbmuxd entry, numbered when first seen: the number never repeats, DeviceIDs do."""

    device: usbmux.MuxDevice
    number: int


class UsbPhoneLayer:
    # Named on every erasure certificate (NIST SP 800-88: the tool used, with its version).
    restore_tool = f"pymobiledevice3 {metadata.version('pymobiledevice3')} Restore (Erase)"
    erase_tool = f"pymobiledevice3 {metadata.version('pymobiledevice3')} mobilebackup2 EraseDevice"

    def __init__(self, slot_map: SlotMap, setup: WorkerSetup, usb_backend: object | None = None,
                 restore_grace_s: float = RESTORE_GRACE_S, hello_wait_s: float = HELLO_WAIT_S,
                 ready_wait_s: float = READY_WAIT_S, retry_s: float = RETRY_S,
                 lockdown_timeout_s: float = lockdown_ops.LOCKDOWN_TIMEOUT_S,
                 sysfs: UsbSysfs | None = None, hotplug: Hotplug | None = None) -> None:
        self.slot_map = slot_map
        self.setup = setup
        self.pairing_dir = pairing_dir(setup.home)
        self.scanner = UsbScanner(usb_backend)
        self.sysfs = sysfs or UsbSysfs()
        self.hotplug = hotplug or UdevHotplug()
        self.restore_grace_s = restore_grace_s
        self.hello_wait_s = hello_wait_s
        self.ready_wait_s = ready_wait_s
        self.retry_s = retry_s
        self.lockdown_timeout_s = lockdown_timeout_s
        self._mux: dict[int, _Sighting] = {}  # by usbmuxd DeviceID
        self._mux_up = False
        self._mux_since = 0.0  # when the current usbmuxd connection came up
        self._mux_problem = "NO USBMUXD"
        self._sightings = 0
        self._usb: list[UsbPhone] = []
        self._usb_ok: bool | None = None  # None until the first scan
        self._scans = 0  # the number of the scan whose picture the layer holds
        self._scans_begun = 0
        self._busy_until: dict[str, float] = {}  # port path -> until when its phone counts as there
        self._ios_on_usb_since: float | None = None
        self._port_of: dict[str, str] = {}  # normal-mode USB serial (UDID without dash) -> port path
        self._in_sysfs: set[str] = set()  # serials sysfs showed since the last scan: on the bus too
        self._ecid_of: dict[str, int] = {}  # UDID without dash -> ECID (lockdownd UniqueChipID)
        self._told: dict[int, Device] = {}  # what the station has been told is on each slot
        self._held: dict[int, _Held] = {}
        self._restore_began: dict[int, int] = {}  # ECID -> sighting number when its restore began
        self._bad_serials: set[str] = set()
        self._emit: Callable[[PhoneEvent], None] = lambda event: None
        self._changed = asyncio.Event()
        self._bus_changed = asyncio.Event()  # a hotplug event: scan now

    # -- presence -----------------------------------------------------------

    async def watch(self, emit: Callable[[PhoneEvent], None]) -> None:
        self._emit = emit
        loop = asyncio.get_running_loop()
        self.hotplug.start(lambda: loop.call_soon_threadsafe(self._bus_changed.set))
        try:
            with fork_server(self.setup):
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._watch_usbmux())
                    group.create_task(self._poll_usb())
                    for task in self._side_tasks(emit):
                        group.create_task(task)
        finally:
            self.hotplug.stop()

    def _side_tasks(self, emit: Callable[[PhoneEvent], None]) -> list[Coroutine[Any, Any, None]]:
        """What else runs while the phones are watched (a network check, a scenario)."""
        # The signing server restores really use ([restore] signing_url), and Apple's activation.
        return [watch_network(emit, (host_and_port(self.setup.signing_url), ACTIVATION_HOST))]

    async def _watch_usbmux(self) -> None:
        while True:
            listener = None
            try:
                async with asyncio.timeout(USBMUXD_ANSWER_S):  # a hung daemon must not hang us
                    listener = await usbmux.create_mux()
                    await listener.listen()
                    # The replayed Attached events come next on the Listen socket; a list taken now
                    # also drops what left while we were away.
                    self._take_mux_list(await usbmux.list_devices())
                self._set_mux_up(True)
                while True:
                    before = {d.devid: d for d in listener.devices}
                    await listener.receive_device_state_update()
                    self._apply_mux_changes(before, {d.devid: d for d in listener.devices})
            except ConnectionFailedToUsbmuxdError:
                self._set_mux_up(False, "NO USBMUXD")
            except (MuxException, OSError, TimeoutError) as error:
                log.warning("usbmuxd connection lost: %s", error or "no answer in time")
                self._set_mux_up(False, "USBMUXD ERROR")
            except (KeyError, TypeError, ValueError) as error:
                # pymobiledevice3 reads each entry as it comes (usbmux.py _process_device_state):
                # one it cannot read (no SerialNumber) ends the subscription, so start a new one.
                log.warning("usbmuxd sent an entry the station cannot read (%s: %s): listening again",
                            type(error).__name__, error)
                self._set_mux_up(False, "USBMUXD ERROR")
            finally:
                if listener is not None:
                    await listener.close()
            await asyncio.sleep(USBMUXD_RETRY_S)

    def _take_mux_list(self, devices: list[usbmux.MuxDevice]) -> None:
        """usbmuxd's list on a new connection. Whether the daemon restarted in between (and gave
        another enumeration the same DeviceID) cannot be told, so every entry is a new sighting;
        what is present on which slot does not change for it."""
        self._mux = {}
        for device in devices:
            if device.is_usb:
                self._sight(device)

    def _apply_mux_changes(self, before: dict[int, usbmux.MuxDevice],
                           after: dict[int, usbmux.MuxDevice]) -> None:
        for devid in set(before) - set(after):
            sighting = self._mux.get(devid)
            if sighting is not None and sighting.device == before[devid]:
                del self._mux[devid]
        for device in after.values():
            if device.is_usb:
                self._sight(device)
        self._reconcile()

    def _sight(self, device: usbmux.MuxDevice) -> None:
        if not isinstance(device.serial, str):  # usbmuxd sends text; anything else names no phone
            self._log_once([f"usbmuxd device {device.devid}: SerialNumber {device.serial!r} is not text"])
            return
        known = self._mux.get(device.devid)
        if known is None or known.device != device:
            self._sightings += 1
            self._mux[device.devid] = _Sighting(device, self._sightings)
            self._learn_port(device.serial.replace("-", ""))

    def _learn_port(self, serial: str) -> None:
        """Where a phone usbmuxd just announced is, from sysfs: its slot need not wait for the next scan."""
        path = self.sysfs.port_of(serial)
        if path is not None:
            self._port_of.pop(serial, None)
            self._port_of[serial] = path
            _forget_oldest(self._port_of)
            self._in_sysfs.add(serial)

    def _set_mux_up(self, up: bool, problem: str = "") -> None:
        if up and not self._mux_up:
            self._mux_since = time.monotonic()
        self._mux_up = up
        self._mux_problem = problem or self._mux_problem
        self._report_usbmuxd()
        self._reconcile()

    def _report_usbmuxd(self) -> None:
        """usbmuxd missing is a fault only while a phone running iOS waits for it (or the bus is unseen)."""
        ios_on_usb = any(p.mode is Mode.NORMAL for p in self._usb)
        now = time.monotonic()
        self._ios_on_usb_since = (self._ios_on_usb_since or now) if ios_on_usb else None
        fault = None
        if not self._mux_up:
            if self._usb_ok is False:
                fault = self._mux_problem
            elif self._ios_on_usb_since is not None and now - self._ios_on_usb_since > USBMUXD_START_S:
                fault = self._mux_problem
        self._emit(LayerFault("usbmuxd", fault))

    async def _poll_usb(self) -> None:
        while True:
            self._bus_changed.clear()  # a hotplug event from here on sets off the next scan
            try:
                number = self._begin_scan()
                scan = await asyncio.to_thread(self.scanner.scan)
            except UsbUnavailable as error:
                log.debug("USB scan: %s", error)
                self._usb_ok = False
                self._emit(LayerFault("libusb", error.fault))
            else:
                self._usb_ok = True
                self._emit(LayerFault("libusb", None))
                # Usually missing udev rules: the phone is there but cannot be identified.
                self._emit(LayerFault("usb-access", "USB NO ACCESS" if scan.problems else None))
                self._log_once(scan.problems)
                self._take_scan(scan, number)
                self._reconcile()
            self._report_usbmuxd()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(USB_POLL_S):
                    await self._bus_changed.wait()

    def _begin_scan(self) -> int:
        """A scan's number, by when it began: its picture is no newer than that."""
        self._scans_begun += 1
        return self._scans_begun

    def _take_scan(self, scan: Scan, number: int) -> None:
        """The bus as the last scan saw it, and the port where each normal-mode serial was last."""
        self._usb = scan.phones
        self._in_sysfs = set()
        self._scans = number
        now = time.monotonic()
        self._busy_until = {path: until for path, until in self._busy_until.items() if until > now}
        self._busy_until.update(dict.fromkeys(scan.busy_ports, now + BUSY_GRACE_S))
        for phone in scan.phones:
            if phone.mode is Mode.NORMAL:
                self._port_of.pop(phone.serial, None)
                self._port_of[phone.serial] = phone.port_path
        _forget_oldest(self._port_of)

    def _present(self) -> dict[int, Device]:
        """Which phone is on which slot, from the latest usbmuxd and USB pictures.

        A normal-mode phone is present while usbmuxd lists it (it is usable only then), at
        the port where the USB scan last saw its serial: usbmuxd often announces a phone
        before the next scan does. While usbmuxd is away, only what the bus still shows.
        """
        present: dict[int, Device] = {}
        on_usb = self._normal_serials_on_bus()
        for sighting in self._mux.values():
            serial = sighting.device.serial.replace("-", "")
            path = self._port_of.get(serial)
            if path is None or not (self._mux_up or serial in on_usb):
                continue
            slot = self.slot_map.slot_for(path)
            if slot is not None:
                present[slot] = Device(key=sighting.device.serial, mode=Mode.NORMAL,
                                       udid=sighting.device.serial, ecid=self._ecid(sighting.device))
        for phone in self._usb:
            if phone.mode is Mode.NORMAL:
                continue
            slot = self.slot_map.slot_for(phone.port_path)
            device = self._boot_device(phone)
            if slot is not None and device is not None:
                present[slot] = device
        if self._mux_up and time.monotonic() - self._mux_since < PREFLIGHT_S:
            # A usbmuxd just (re)started has not announced its phones yet: one still on the bus
            # at its port is still there.
            for slot, told in self._told.items():
                serial = told.udid.replace("-", "")
                if (slot not in present and told.mode is Mode.NORMAL and serial in on_usb
                        and self.slot_map.slot_for(self._port_of[serial]) == slot):
                    present[slot] = told
        for path in self._busy_until:  # caught re-enumerating: it is still there
            slot = self.slot_map.slot_for(path)
            if slot is not None and slot not in present and slot in self._told:
                present[slot] = self._told[slot]
        return self._keep_held_phones(present)

    def _keep_held_phones(self, present: dict[int, Device]) -> dict[int, Device]:
        """A phone being restored stays on its slot, whatever port path it shows up on."""
        for slot in self._held:
            told = self._told.get(slot)
            if told is None or told.ecid is None or (slot in present and _same_phone(told, present[slot])):
                continue
            elsewhere = [s for s, d in present.items() if s not in self._told and d.ecid == told.ecid]
            if elsewhere:
                present[slot] = present.pop(elsewhere[0])
        return present

    def _normal_serials_on_bus(self) -> set[str]:
        return {p.serial for p in self._usb if p.mode is Mode.NORMAL} | self._in_sysfs

    def _bus_shows(self, device: Device) -> bool:
        """Whether the latest USB scan (or sysfs since) shows the phone itself, not only usbmuxd."""
        if device.mode is Mode.NORMAL:
            return device.udid.replace("-", "") in self._normal_serials_on_bus()
        return any(p.mode is not Mode.NORMAL and (seen := self._boot_device(p)) is not None
                   and seen.ecid == device.ecid for p in self._usb)

    def _ecid(self, device: usbmux.MuxDevice) -> int | None:
        return device.ecid if device.ecid is not None else self._ecid_of.get(device.serial.replace("-", ""))

    def _boot_device(self, phone: UsbPhone) -> Device | None:
        try:
            serial = parse_iboot_serial(phone.serial)
        except BadSerialString as error:
            self._log_once([f"USB port {phone.port_path}: {error}"])
            return None
        model = models.by_chip_board(serial.chip_id, serial.board_id)
        return Device(
            key=f"ECID:{serial.ecid:016X}", mode=phone.mode,
            product_type=model.product_type if model else "",
            name=model.display_name if model else f"CPID {serial.chip_id:X} BDID {serial.board_id:X}",
            ecid=serial.ecid, serial=serial.serial_number,
            chip_id=serial.chip_id, board_id=serial.board_id)

    def _log_once(self, lines: list[str]) -> None:
        for line in lines:
            if line not in self._bad_serials:
                self._bad_serials.add(line)
                log.error(line)

    def _reconcile(self) -> None:
        present = self._present()
        now = time.monotonic()
        for slot in set(self._told) | set(present):
            told, seen = self._told.get(slot), present.get(slot)
            held = self._held.get(slot)
            scanned_since = held is not None and held.until_scan is not None and self._scans > held.until_scan
            if scanned_since and seen is not None and not self._bus_shows(seen):
                # usbmuxd's Detached can reach the station after a scan found the port empty.
                seen = None
            if told is not None and seen is not None and _same_phone(told, seen):
                if seen.ecid is None and told.ecid is not None:
                    seen = replace(seen, ecid=told.ecid)
                self._told[slot] = seen  # the same phone, perhaps in another mode: no news
                if held is not None:
                    held.since_gone = None
                    if scanned_since:
                        del self._held[slot]
                continue
            if told is not None and seen is None and held is not None:
                held.since_gone = held.since_gone or now
                if now - held.since_gone < held.grace_s:
                    continue  # re-enumerating between restore stages, or rebooting to Hello
            if told is not None:
                del self._told[slot]
                self._held.pop(slot, None)
                self._emit(PhoneLeft(slot))
            if seen is not None:
                self._told[slot] = seen
                self._emit(PhoneArrived(slot, seen))
        self._changed.set()

    async def _changes(self, timeout: float | None = None) -> None:
        """Until the picture changes (or ``timeout`` passes)."""
        self._changed.clear()
        try:
            async with asyncio.timeout(timeout):
                await self._changed.wait()
        except TimeoutError:
            pass

    async def survey(self) -> tuple[dict[int, Device], list[str]]:
        """One look at usbmuxd and the bus, each phone identified; and what could not be seen.

        For `station devices`: no Listen subscription, nothing left running.
        """
        notes: list[str] = []
        try:
            async with asyncio.timeout(USBMUXD_ANSWER_S):
                self._take_mux_list(await usbmux.list_devices())
            self._mux_up = True
        except (ConnectionFailedToUsbmuxdError, MuxException, OSError, TimeoutError) as error:
            notes.append(f"usbmuxd: {error or 'no answer'} (normal-mode phones not listed)")
        number = self._begin_scan()
        scan = await asyncio.to_thread(self.scanner.scan)  # raises UsbUnavailable
        notes.extend(scan.problems)
        self._take_scan(scan, number)
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
            identity = await lockdown_ops.read_identity(device.udid, self.pairing_dir,
                                                        self.lockdown_timeout_s)
            self._learn_ecid(device, identity.ecid)
            return identity
        if not device.product_type:
            raise PhoneError(f"unknown model: {device.name}")
        return device

    def _learn_ecid(self, device: Device, ecid: int | None) -> None:
        """lockdownd's UniqueChipID: an A11 phone's UDID has no ECID, and recovery shows only the ECID."""
        if ecid is None:
            return
        self._ecid_of[device.udid.replace("-", "")] = ecid
        _forget_oldest(self._ecid_of)
        self._reconcile()  # the slot's phone now carries its ECID

    async def check_lock(self, device: Device, after_restore: bool = False) -> LockCheck:
        if after_restore:
            try:
                return await self._check_at_hello(device)
            finally:
                self._release(device)
        if device.mode is not Mode.NORMAL:
            return LockCheck(Lock.UNKNOWN, f"{device.mode.value.upper()}: lock not readable", "none")
        deadline = time.monotonic() + self.ready_wait_s
        while True:
            try:
                return await lockdown_ops.check_lock(device.udid, self.pairing_dir,
                                                     self.lockdown_timeout_s)
            except lockdown_ops.NotReady as error:
                if time.monotonic() + self.retry_s > deadline:
                    return LockCheck(Lock.UNKNOWN, str(error), "none")
            await asyncio.sleep(self.retry_s)

    async def _check_at_hello(self, device: Device) -> LockCheck:
        """Once the restored phone is back running iOS (an enumeration newer than its restore), ask again.

        Just after the reboot its daemons may not answer, or answer UNKNOWN: ask again a few
        times before taking UNKNOWN for the answer.
        """
        began = self._restore_began.pop(device.ecid, self._sightings) if device.ecid is not None else 0
        last = LockCheck(Lock.UNKNOWN, "phone did not come back after the restore", "none")
        unknowns = 0
        try:
            async with asyncio.timeout(self.hello_wait_s):
                while True:
                    sighting = self._newest_sighting(device.ecid, after=began)
                    if sighting is None:
                        await self._changes()
                        continue
                    try:
                        result = await lockdown_ops.check_lock(sighting.device.serial, self.pairing_dir,
                                                               self.lockdown_timeout_s)
                    except lockdown_ops.NotReady as error:  # restore mode, still booting, or gone
                        last = LockCheck(Lock.UNKNOWN, str(error), "none")
                    else:
                        unknowns += result.lock is Lock.UNKNOWN
                        if result.lock is not Lock.UNKNOWN or unknowns >= VERIFY_UNKNOWN_TRIES:
                            return result
                        last = result
                    await self._changes(self.retry_s)
        except TimeoutError:
            return last

    def _newest_sighting(self, ecid: int | None, after: int) -> _Sighting | None:
        mine = [s for s in self._mux.values()
                if ecid is not None and self._ecid(s.device) == ecid and s.number > after]
        return max(mine, key=lambda s: s.number, default=None)

    async def restore(self, device: Device, firmware: object,
                      report: Callable[[RestoreReport], None]) -> None:
        slot = next(s for s, d in self._told.items() if _same_phone(d, device))
        now = self._told[slot]
        if now.mode is not device.mode:  # a failed attempt may have left it in recovery
            device = replace(device, mode=now.mode)
        self._held[slot] = _Held(self.restore_grace_s)
        if device.ecid is not None:  # the check afterwards needs an enumeration newer than this
            self._restore_began[device.ecid] = self._sightings
        try:
            if device.mode is Mode.NORMAL:
                await self._usbmuxd_up()  # a phone running iOS is reached only through it
            await self._restore_in_worker(slot, device, firmware, report)
        except RestoreError:
            # usbmuxd drops a pulled phone at once and the worker fails on it (DeviceNotFoundError,
            # a dead ASR socket) before the next USB scan: report the failure only once the slot
            # knows whether its phone is still there, so a pulled cable is a departure, not a retry;
            # and once usbmuxd is back if it went, or the retry fails the same way at once.
            self._release(device)
            await self._settled(device)
            await self._usbmuxd_up()
            raise
        except BaseException:
            self._release(device)
            raise
        # Restored: the phone reboots to the Hello screen, where the station checks it again.
        self._held[slot] = _Held(self.hello_wait_s)

    async def erase(self, device: Device, report: Callable[[RestoreReport], None]) -> None:
        """Ask a phone running iOS that trusts the station to erase itself; it reboots to Hello.

        In the station's process, not a worker: a few lockdown messages, every one bounded
        (``lockdown_timeout_s``) and the whole by the station's job timeout, and cancelling the
        task stops it; no IPSW, nothing CPU- or memory-heavy. Raises RestoreError.
        """
        slot = next(s for s, d in self._told.items() if _same_phone(d, device))
        if self._told[slot].mode is not Mode.NORMAL:
            raise RestoreError("the phone is not running iOS: only a restore can erase it", False)
        self._held[slot] = _Held(self.hello_wait_s)  # it leaves the bus when it reboots
        if device.ecid is not None:  # the check afterwards needs an enumeration newer than this
            self._restore_began[device.ecid] = self._sightings
        report(RestoreProgress(ERASE_PHASE, 0.0))
        try:
            await self._usbmuxd_up()
            with tempfile.TemporaryDirectory(prefix="erase-") as work_dir:
                await lockdown_ops.erase(device.udid, self.pairing_dir, Path(work_dir), self.lockdown_timeout_s)
        except PairingError as error:
            self._release(device)
            raise RestoreError(f"phone does not trust this station: {lockdown_ops.pairing_reason(error)}",
                               True) from None
        except lockdown_ops.NotReady as error:
            self._release(device)
            raise RestoreError(f"no answer from the phone: {error}", True) from None
        except (PyMobileDevice3Exception, OSError) as error:
            self._release(device)
            raise RestoreError(f"the phone refused the erase: {activation.one_line(error)}", False) from None
        except BaseException:
            self._release(device)
            raise
        report(RestoreProgress(ERASE_PHASE, 100.0))
        # Erased: the phone reboots to the Hello screen, where the station checks it again.
        self._held[slot] = _Held(self.hello_wait_s)

    def _release(self, device: Device) -> None:
        """Stop expecting the phone to vanish, once it is seen again (or stays gone)."""
        self._restore_began.pop(device.ecid, None)  # a retry notes its own; a check at Hello took it
        for slot, told in list(self._told.items()):
            if _same_phone(told, device):
                self._held[slot] = _Held(SETTLE_S, until_scan=self._scans_begun)
        self._reconcile()

    async def _usbmuxd_up(self) -> None:
        """Until usbmuxd answers (bounded: one that stays away is the station's NO USBMUXD fault)."""
        await self._while(lambda: not self._mux_up, USBMUXD_WAIT_S)

    async def _settled(self, device: Device) -> None:
        """Until the phone's last hold ends: seen by a newer scan, or gone (PhoneLeft)."""
        await self._while(lambda: any(slot in self._held for slot, told in self._told.items()
                                      if _same_phone(told, device)), SETTLE_S + 3 * USB_POLL_S)

    async def _while(self, condition: Callable[[], bool], bound_s: float) -> None:
        """Until ``condition`` is false, looked at on every change of the picture, or ``bound_s``."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(bound_s):
                while condition():
                    await self._changes(USB_POLL_S)

    async def _restore_in_worker(self, slot: int, device: Device, firmware: object,
                                 report: Callable[[RestoreReport], None]) -> None:
        await restore_in_worker(device, getattr(firmware, "path", None), report,
                                label=f"slot{slot}", setup=self.setup)


def _same_phone(a: Device, b: Device) -> bool:
    """One phone keeps its ECID across modes; its UDID (normal) or ECID key (recovery/DFU) does not."""
    return a.key == b.key or (a.ecid is not None and a.ecid == b.ecid)


def _forget_oldest(memory: dict[str, Any]) -> None:
    while len(memory) > PORT_MEMORY:  # oldest first: a busy line sees thousands
        del memory[next(iter(memory))]


def open_usb_phones(config: Any, scenario: object, clock: object) -> UsbPhoneLayer:
    """The Pi backend's phones: usbmuxd, libusb and pymobiledevice3 restores (config: station.config.Config)."""
    state = config.station.state_dir
    setup = WorkerSetup(home=state / "pymobiledevice3-home", log_dir=state / "restore-logs",
                        timeout_s=config.restore.timeout_s, environment={},
                        signing_url=config.restore.signing_url)
    return UsbPhoneLayer(SlotMap(config.hub.ports, config.hub.slots, peer=PortPeers().peer), setup)
