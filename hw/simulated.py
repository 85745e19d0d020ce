"""The simulated backend's phones: the real phone layer against simulated phones.

A scenario's phones become ``hw.sim`` phones that speak usbmuxd, lockdownd,
iBoot-over-pyusb and Apple's activation server; the station then finds,
identifies and lock-checks them with the same pymobiledevice3 and pyusb code
it uses on a Pi. Restores run in worker processes with one of two engines:

* ``real`` (``[scenario] engine = "real"``): hw/worker/real.py with
  pymobiledevice3's ``Restore``, exactly as on a Pi, against the simulated phone:
  its iBoot over the simulated USB bus (reached from the worker through
  ``hw.sim.usb_remote``), restored, ASR and FDR over the simulated usbmuxd, and
  a simulated signing server (``hw.sim.tss_server``) for the tickets;
* ``timed``: the sim engine walks the real phase sequence with timers, paced at
  a simulated USB rate, for runs of thousands of restores. The phone is moved
  between modes as a real restore moves it (iOS -> recovery -> the restore
  ramdisk on usbmuxd), each move a re-enumeration.

When the restore succeeds the phone is erased and reboots to the Hello screen;
when it fails it stays where the restore left it.

A timed restore fails as a real one does when the world takes away what its phase needs
(the worker is stopped, and the restore fails retryably with the reason the real worker's
classification gives, hw/worker/classify.py):
* its phone leaves the bus (a pulled cable): "USB connection lost";
* usbmuxd stops while the restore talks to the phone through it (lockdownd's EnterRecovery,
  and restored from prepare_disk to reboot; iBoot in recovery is reached over libusb, not
  usbmuxd): "USB connection lost";
* the network is down when the restore asks Apple's signing server: for the APTicket when it
  begins (pymobiledevice3 restore/recovery.py ``boot_ramdisk`` fetches the TSS record before
  anything else) and for the baseband's ticket (restore/restore.py ``send_baseband_data``):
  "cannot reach Apple".
A scenario phone's ``fault_at`` strikes one of these (or kills the worker, or hangs it) when
its restore reaches a given phase and percent (station/scenario.py).

A phone running iOS is restored only over a paired lockdown session, as the real
worker does first (hw/worker/real.py ``_connect``): a real phone goes to
recovery only for a host it trusts (lockdownd wants a paired session for
EnterRecovery from iOS 14.5, idevicerestore commit 6d3b6bb), so a simulated
phone that refuses trust is not restored either.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from pymobiledevice3.exceptions import (PairingDialogResponsePendingError, PairingError,
                                        PasswordRequiredError)

from hw.clock import Clock
from hw.iphone import layer, lockdown_ops
from hw.iphone.layer import UsbPhoneLayer
from hw.iphone.restore import WorkerSetup, restore_in_worker
from hw.iphone.slots import SlotMap
from hw.iphone.usb_sysfs import UsbSysfs
from hw.iphone.usb_topology import PortPeers
from hw.phones import (Device, LayerFault, PhoneEvent, RestoreError, RestoreProgress, RestoreReport,
                       TrustRequest)
from hw.sim import Pairing, SimPhone, SimulatedBench, phone_named, point_activation_at
from hw.sim import Mode as SimMode
from hw.sim.firmware import SIM_BUILD, os_image_of
from hw.sim.phone import FindMyAnswer
from hw.sim.tss_server import TssServer
from hw.sim.usb_links import SimLink, SimLinks
from hw.sim.world import SimWorld
from hw.worker import InjectedFailure, Kind, SimParams
from hw.worker import phases
from station.config import Config
from station.scenario import HELLO, PhaseFault, Scenario, ScenarioInfo, ScenarioPhone

log = logging.getLogger(__name__)

SIM_BUS = 1
USBMUX_ENV = "USBMUXD_SOCKET_ADDRESS"
HELLO_WAIT_S = 60.0
ENUMERATION_GAP_S = 8.0  # a phone is off the bus this long between two restore stages
SIM_LOCKDOWN_TIMEOUT_S = 3.0  # simulated daemons answer in milliseconds; a stalled one is found sooner
REAL_GRACE_FLOOR_S = 10.0  # pymobiledevice3 recovery.py: sleep(10) after iBEC's "go" in the DFU path
# The layer's own delay in seeing a phone again, twice over: the simulated usbmuxd shares the
# station's process, so a loaded machine slows both (at 300x, 1 s lost a DFU phone mid-restore).
TIMED_GRACE_FLOOR_S = 2 * layer.REAPPEAR_S
TRUST_WAIT_S = 120.0  # scenario seconds a restore waits for Trust (the real worker's trust_timeout)
# The timed engine's phone reboots to Hello in scenario time: the wait for it is scaled too (the
# real engine's reboot is pymobiledevice3's, in real time), never below this, never above HELLO_WAIT_S.
TIMED_HELLO_FLOOR_S = 20.0
# Phases in which a restore talks to the phone through usbmuxd (see the module docstring).
USBMUX_PHASES = frozenset({phases.ENTER_RECOVERY, phases.PREPARE_DISK, phases.RESTORE_IMAGE,
                           phases.VERIFY_RESTORE, phases.FLASH_FIRMWARE, phases.UPDATE_BASEBAND,
                           phases.SEAL_SYSTEM_VOLUME, phases.REBOOT})


class SimulatedPhones(UsbPhoneLayer):
    # Said plainly on every certificate: which engine, and that no real phone was erased.
    TOOLS = {"timed": "station timed restore simulation (not pymobiledevice3's Restore; no phone erased)",
             "real": f"{UsbPhoneLayer.restore_tool}, against a simulated phone (no phone erased)"}

    def __init__(self, config: Config, scenario: Scenario, clock: Clock) -> None:
        self.scenario = scenario
        self.clock = clock
        self.engine = scenario.info.engine
        self.restore_tool = self.TOOLS[self.engine]
        self.erase_tool = f"{UsbPhoneLayer.erase_tool}, against a simulated phone (no phone erased)"
        self.signing = TssServer(unsigned={(SIM_BUILD, model) for model in scenario.info.unsigned_models})
        state = config.station.state_dir
        self.bench = SimulatedBench([], state / "sim", hub_ports=config.hub.slots,
                                    usbmuxd_on_demand=scenario.info.usbmuxd == "on-demand")
        self.phones = {phone.name: _sim_phone(phone, clock.speed) for phone in scenario.phones}
        setup = WorkerSetup(home=state / "pymobiledevice3-home", log_dir=state / "restore-logs",
                            timeout_s=config.restore.timeout_s,
                            environment={USBMUX_ENV: self.bench.usbmuxd_address})
        natural = {f"{SIM_BUS}-1.{slot}": slot for slot in range(1, config.hub.slots + 1)}
        slots = SlotMap(config.hub.ports or natural, config.hub.slots,
                        peer=PortPeers(self.bench.sysfs_root).peer)
        # The phones' own waits pass in scenario time; a simulated daemon answers at once.
        speed = clock.speed
        super().__init__(slots, setup, usb_backend=self.bench.usb_backend,
                         sysfs=UsbSysfs(self.bench.sysfs_root), hotplug=self.bench.hotplug,
                         # pymobiledevice3's own waits and the layer's scans run in real time: the
                         # grace for a re-enumerating phone never drops below them, however fast
                         # the scenario plays.
                         restore_grace_s=max(REAL_GRACE_FLOOR_S if scenario.info.engine == "real"
                                             else TIMED_GRACE_FLOOR_S, layer.RESTORE_GRACE_S / speed),
                         hello_wait_s=HELLO_WAIT_S if scenario.info.engine == "real" else
                         min(HELLO_WAIT_S, max(TIMED_HELLO_FLOOR_S, layer.HELLO_WAIT_S / speed)),
                         ready_wait_s=max(2.0, layer.READY_WAIT_S / speed),
                         retry_s=max(0.2, layer.RETRY_S / speed),
                         lockdown_timeout_s=SIM_LOCKDOWN_TIMEOUT_S)
        self._failures: Counter[str] = Counter()
        self._attempts: Counter[str] = Counter()  # real-engine restores begun, per scenario phone
        self._struck: Counter[str] = Counter()  # fault_at faults struck, per scenario phone
        self._network_up = True
        self._running: dict[str, _Needs] = {}  # timed restores under way, per scenario phone
        self._network_back: dict[str, float] = {}  # struck phone -> down_s once its restore ends
        # The USB links the slots share, at the scenario's pace: the filesystem transfers'.
        self.links = SimLinks({name: SimLink(name, rate * speed, config.hub.phone_mb_s * 1e6 * speed,
                                             fail_load=scenario.info.link_fail_load,
                                             fail_after_s=scenario.info.link_fail_s / speed)
                               for name, rate in config.hub.link_rates().items()},
                              self.bench.state_dir / "links")
        self.link_of = {slot: config.hub.link_of(slot) for slot in range(1, config.hub.slots + 1)}

    async def watch(self, emit: Callable[[PhoneEvent], None]) -> None:
        with self.simulation():
            await self.links.start()
            try:
                await super().watch(emit)
            finally:
                await self.links.stop()

    @contextmanager
    def simulation(self) -> Iterator[None]:
        """The bench running, and this process's pymobiledevice3 aimed at it."""
        saved = os.environ.get(USBMUX_ENV)
        os.environ[USBMUX_ENV] = self.bench.usbmuxd_address  # pymobiledevice3 reads it per call
        try:
            with self.bench, self.signing:
                point_activation_at(self.bench.activation_url)
                # The workers reach the bench (usbmuxd, the USB bus) and the signing server.
                self.setup = replace(self.setup, environment={**self.setup.environment,
                                                              **self.bench.environment()},
                                     signing_url=self.signing.url)
                try:
                    yield
                finally:
                    point_activation_at(None)
        finally:
            if saved is None:
                os.environ.pop(USBMUX_ENV, None)
            else:
                os.environ[USBMUX_ENV] = saved

    def plug(self, spec: ScenarioPhone) -> None:
        self.bench.world.attach(self.phones[spec.name], SIM_BUS, (1, spec.slot))

    def unplug(self, spec: ScenarioPhone) -> None:
        """The cable pulled: a timed restore of this phone loses it (the real worker's USB error).

        A scenario plugs each phone in once, so the phone is forgotten here (its key, pairings and
        dialogue go with it): kept, a soak's thousands of phones grew the station's memory.
        """
        phone = self.phones.pop(spec.name, None)
        if phone is not None:
            self.bench.world.detach(phone)
        if spec.name in self._running:
            self._running[spec.name].lost("USB connection lost: the phone left the bus")

    def set_network(self, up: bool) -> None:
        self._network_up = up
        self._emit(LayerFault("network", None if up else "NO NETWORK"))

    def stop_usbmuxd(self) -> None:
        """usbmuxd stops (a crash, an upgrade): every usbmux connection of a restore drops with it."""
        self.bench.usbmuxd.stop()
        for needs in self._running.values():
            if needs.phase in USBMUX_PHASES:
                needs.lost("USB connection lost: usbmuxd closed the connection")

    def _strike(self, spec: ScenarioPhone, fault: PhaseFault) -> None:
        """A station-side ``fault_at``: the cable, the network, usbmuxd."""
        under_way = ", ".join(f"{name} in {needs.phase or 'its start'}" for name, needs in self._running.items())
        log.warning("scenario: %s for %s in %s at %.0f%% (restores under way: %s)", fault.fault, spec.name,
                    fault.phase, fault.percent, under_way or "none")
        back = fault.down_s / self.clock.speed
        loop = asyncio.get_running_loop()
        if fault.fault == "pull":
            self.unplug(spec)
        elif fault.fault == "network-down":  # back down_s after the struck restore ends
            self.set_network(False)
            if spec.name in self._running:
                self._network_back[spec.name] = back
            else:
                loop.call_later(back, self.set_network, True)
        elif fault.fault == "usbmuxd-restart":
            self.stop_usbmuxd()
            loop.call_later(back, self.bench.usbmuxd.start)

    def _side_tasks(self, emit: Callable[[PhoneEvent], None]) -> list[Coroutine[Any, Any, None]]:
        return [self._play(emit)]  # the scenario says when the network goes; Apple is never asked

    async def _play(self, emit: Callable[[PhoneEvent], None]) -> None:
        """Plug and unplug the scenario's phones, and cut the network, when it says."""
        self.clock.start()  # the bench is up: this is the scenario's second 0
        timeline: list[tuple[float, Callable[[], object]]] = []
        for spec in self.scenario.phones:
            timeline.append((spec.attach, lambda s=spec: self.plug(s)))
            if spec.detach is not None:
                timeline.append((spec.detach, lambda s=spec: self.unplug(s)))
        for change in self.scenario.network:
            timeline.append((change.at, lambda up=change.up: self.set_network(up)))
        usbmuxd = self.bench.usbmuxd
        for daemon in self.scenario.usbmuxd:
            timeline.append((daemon.at, usbmuxd.start if daemon.running else self.stop_usbmuxd))
        for at, action in sorted(timeline, key=lambda item: item[0]):
            await self.clock.sleep_until(at)
            action()
        await asyncio.Event().wait()

    async def _restore_in_worker(self, slot: int, device: Device, firmware: object,
                                 report: Callable[[RestoreReport], None]) -> None:
        spec = next((s for s in self.scenario.phones
                     if s.name in self.phones and self.phones[s.name].ecid == device.ecid), None)
        if spec is None:  # unplugged before its restore began
            raise RestoreError("USB connection lost: the phone left the bus", True)
        phone = self.phones[spec.name]
        failure = None
        if spec.fail is not None and self._failures[spec.name] < spec.fail.times:
            self._failures[spec.name] += 1
            failure = InjectedFailure(spec.fail.phase, spec.fail.percent, Kind(spec.fail.kind))
        fault = spec.fault_at  # struck on this attempt, in the worker (kill, hang) or here
        if fault is not None and self._struck[spec.name] < fault.times:
            self._struck[spec.name] += 1
            if fault.fault in ("kill-worker", "hang") and fault.phase != HELLO:
                failure = InjectedFailure(fault.phase, fault.percent,
                                          effect="kill" if fault.fault == "kill-worker" else "hang")
                fault = None
            elif fault.phase != HELLO:  # struck here once the station sees the point: the worker waits
                failure = InjectedFailure(fault.phase, fault.percent, effect="pause")
        else:
            fault = None
        if phone.mode is SimMode.NORMAL:  # running iOS (not left in recovery by a failed attempt)
            await self._paired(device, report)
        if self.engine == "real":
            await self._real_restore(slot, device, phone, spec, firmware, report)
            return
        sim = SimParams(speed=self.clock.speed, fail=failure, link_socket=str(self.links.socket_path),
                        link=self.link_of[slot])
        stages = _Stages(self.bench.world, phone, ENUMERATION_GAP_S / self.clock.speed)
        needs = _Needs()
        strike_at = None
        if fault is not None and fault.phase != HELLO:
            strike_at = phases.overall_percent(device.mode, fault.phase, fault.percent)

        def follow(item: RestoreReport) -> None:
            nonlocal strike_at
            if isinstance(item, RestoreProgress):
                stages.enter(item.phase)
                first, asks_apple = not needs.phase, item.phase != needs.phase and (
                    not needs.phase or item.phase == phases.UPDATE_BASEBAND)
                needs.phase = item.phase
                if asks_apple and not self._network_up:
                    needs.lost(f"cannot reach Apple: the network is down (the "
                               f"{'restore' if first else 'baseband'}'s signing request)")
            report(item)
            if (strike_at is not None and isinstance(item, RestoreProgress) and item.phase == fault.phase
                    and item.percent >= strike_at - 1e-6):
                strike_at = None
                self._strike(spec, fault)

        if spec.name not in self.phones:  # unplugged while it paired
            raise RestoreError("USB connection lost: the phone left the bus", True)
        self._running[spec.name] = needs
        try:
            await needs.run(restore_in_worker(device, getattr(firmware, "path", None), follow,
                                              label=f"slot{slot}", setup=self.setup, sim=sim))
        except BaseException:
            stages.move(SimMode.RECOVERY)  # a failed or stopped restore leaves the phone in iBoot
            raise
        finally:
            del self._running[spec.name]
            if spec.name in self._network_back:
                asyncio.get_running_loop().call_later(self._network_back.pop(spec.name), self.set_network, True)
        phone.erase()
        if fault is not None and fault.fault == "hang":  # at Hello: its lockdownd stops answering
            phone.lockdown_stalls = True
        self.bench.world.reboot(phone, SimMode.NORMAL, delay=REBOOT_S / self.clock.speed)
        if fault is not None and fault.phase == HELLO and fault.fault != "hang":
            self._strike(spec, fault)  # while it reboots to the Hello screen

    async def _real_restore(self, slot: int, device: Device, phone: SimPhone, spec: ScenarioPhone,
                            firmware: object, report: Callable[[RestoreReport], None]) -> None:
        """pymobiledevice3's Restore in a worker, against this phone; it moves itself between modes."""
        path = getattr(firmware, "path", None)
        if path is None:
            raise RestoreError("NO IPSW: the real engine restores from a cached IPSW", False)
        self.signing.add_ipsw(Path(path))  # Apple signs the builds it released
        phone.os_image = await asyncio.to_thread(os_image_of, Path(path), phone.hardware_model)
        # The scenario's fault strikes the first attempt; a retry meets a phone that works.
        self._attempts[spec.name] += 1
        phone.restore_fault = spec.restore_fault if self._attempts[spec.name] == 1 else ""
        phone.usb_rate = SimParams().usb_rate * self.clock.speed  # the timed engine's link, scaled alike
        await restore_in_worker(device, Path(path), report, label=f"slot{slot}", setup=self.setup)
        phone.erase()
        if phone.mode is not SimMode.NORMAL:
            self.bench.world.reboot(phone, SimMode.NORMAL, delay=REBOOT_S / self.clock.speed)

    async def _paired(self, device: Device, report: Callable[[RestoreReport], None]) -> None:
        """A paired session with a phone running iOS, as the real worker opens one first
        (``_paired_lockdown``): a phone locked with a passcode or showing the Trust dialog is
        waited for (bounded, the operator asked once); one that refuses is not restored."""
        deadline = time.monotonic() + TRUST_WAIT_S / self.clock.speed
        asked = False
        while True:
            try:
                await lockdown_ops.pair(device.udid, self.pairing_dir, self.lockdown_timeout_s)
                return
            except (PasswordRequiredError, PairingDialogResponsePendingError) as error:
                reason = lockdown_ops.pairing_reason(error)
                if time.monotonic() >= deadline:
                    raise RestoreError(f"phone does not trust this station: {reason}", True) from None
                if not asked:
                    report(TrustRequest(reason))
                    asked = True
            except PairingError as error:
                raise RestoreError(f"phone does not trust this station: "
                                   f"{lockdown_ops.pairing_reason(error)}", True) from None
            except lockdown_ops.NotReady as error:
                raise RestoreError(f"no paired session to send the phone to recovery: {error}",
                                   True) from None
            await asyncio.sleep(self.retry_s)


REBOOT_S = 30.0  # a restored phone takes this long to reach the Hello screen
# An erased phone drops mobilebackup2's link this long after EraseDevice (unverified: the time a
# real phone takes to begin erasing; it keeps the station's ERASING on the display a moment).
ERASE_STARTS_S = 15.0


class _Needs:
    """What a timed restore under way depends on: it fails as soon as something it needs is lost."""

    def __init__(self) -> None:
        self.phase = ""
        self._lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def lost(self, reason: str) -> None:
        if not self._lost.done():
            log.warning("%s in %s", reason, self.phase or "its start")
            self._lost.set_result(reason)

    async def run(self, restore: Coroutine[Any, Any, None]) -> None:
        """The restore, or RestoreError once something it needs is lost (its worker stopped)."""
        work = asyncio.ensure_future(restore)
        try:
            await asyncio.wait((work, self._lost), return_when=asyncio.FIRST_COMPLETED)
            if work.done():
                return work.result()
        finally:
            if not work.done():
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
        raise RestoreError(self._lost.result(), True)


class _Stages:
    """Moves a phone between modes as a real restore does: recovery for iBEC, the ramdisk for restored."""

    MODES = {phases.SEND_IBEC: SimMode.RECOVERY, phases.PREPARE_DISK: SimMode.RESTORE}

    def __init__(self, world: SimWorld, phone: SimPhone, gap_s: float) -> None:
        self.world, self.phone, self.gap_s = world, phone, gap_s
        self._phase = ""

    def enter(self, phase: str) -> None:
        if phase != self._phase:
            self._phase = phase
            if phase in self.MODES:
                self.move(self.MODES[phase])

    def move(self, mode: SimMode) -> None:
        if self.phone.mode is not mode and self.world.device_of(self.phone) is not None:
            self.world.reboot(self.phone, mode, delay=self.gap_s)


def _sim_phone(spec: ScenarioPhone, speed: float) -> SimPhone:
    return phone_named(
        spec.name, ecid=spec.ecid, serial=spec.serial, activated=spec.activated, find_my=spec.find_my,
        product_type=spec.model, ios_version=spec.ios, build=spec.build or "21F90", mode=SimMode(spec.mode),
        activation_lock=spec.activation_lock,
        pairing=Pairing(spec.pairing), bus=SIM_BUS, port_path=(1, spec.slot),
        find_my_answer=FindMyAnswer(spec.find_my_answer), activation_answer=spec.activation_answer,
        activation_ready_after=spec.activation_ready_after / speed, lockdown_stalls=spec.lockdown_stalls,
        usb3=spec.usb3, vanish_on_scan=spec.vanish_on_scan, erase_reboot_s=REBOOT_S / speed,
        erase_starts_s=ERASE_STARTS_S / speed,
        **spec.phone_facts())


def open_simulated_phones(config: Config, scenario: Scenario | None, clock: Clock) -> SimulatedPhones:
    empty = Scenario("none", ScenarioInfo(), (), (), {}, Path())
    return SimulatedPhones(config, scenario or empty, clock)
