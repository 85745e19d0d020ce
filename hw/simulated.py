"""The simulated backend's phones: the real phone layer against simulated phones.

A scenario's phones become ``hw.sim`` phones that speak usbmuxd, lockdownd,
iBoot-over-pyusb and Apple's activation server; the station then finds,
identifies and lock-checks them with the same pymobiledevice3 and pyusb code
it uses on a Pi. Restores run in worker processes with one of two engines:

* ``real`` (``[scenario] engine = "real"``): station/worker/real.py with
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

A phone running iOS is restored only over a paired lockdown session, as the real
worker does first (station/worker/real.py ``_connect``): a real phone goes to
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

from hw.iphone import layer, lockdown_ops
from hw.iphone.layer import UsbPhoneLayer
from hw.iphone.restore import WorkerSetup, restore_in_worker
from hw.iphone.slots import SlotMap
from hw.iphone.usb_topology import PortPeers
from hw.phones import (Device, LayerFault, PhoneEvent, RestoreError, RestoreProgress, RestoreReport,
                       TrustRequest)
from hw.sim import Pairing, SimPhone, SimulatedBench, phone_named, point_activation_at
from hw.sim import Mode as SimMode
from hw.sim.phone import FindMyAnswer
from hw.sim.firmware import SIM_BUILD, os_image_of
from hw.sim.tss_server import TssServer
from hw.sim.usb_links import SimLink, SimLinks
from hw.sim.world import SimWorld
from station.clock import Clock
from station.config import Config
from station.scenario import Scenario, ScenarioInfo, ScenarioPhone
from station.worker import InjectedFailure, Kind, SimParams
from station.worker import phases

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


class SimulatedPhones(UsbPhoneLayer):
    # Said plainly on every certificate: which engine, and that no real phone was erased.
    TOOLS = {"timed": "station timed restore simulation (not pymobiledevice3's Restore; no phone erased)",
             "real": f"{UsbPhoneLayer.restore_tool}, against a simulated phone (no phone erased)"}

    def __init__(self, config: Config, scenario: Scenario, clock: Clock) -> None:
        self.scenario = scenario
        self.clock = clock
        self.engine = scenario.info.engine
        self.restore_tool = self.TOOLS[self.engine]
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
                         # pymobiledevice3's own waits and the layer's scans run in real time: the
                         # grace for a re-enumerating phone never drops below them, however fast
                         # the scenario plays.
                         restore_grace_s=max(REAL_GRACE_FLOOR_S if scenario.info.engine == "real"
                                             else TIMED_GRACE_FLOOR_S, layer.RESTORE_GRACE_S / speed),
                         hello_wait_s=HELLO_WAIT_S, ready_wait_s=max(2.0, layer.READY_WAIT_S / speed),
                         retry_s=max(0.2, layer.RETRY_S / speed),
                         lockdown_timeout_s=SIM_LOCKDOWN_TIMEOUT_S)
        self._failures: Counter[str] = Counter()
        self._attempts: Counter[str] = Counter()  # real-engine restores begun, per scenario phone
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

    def _side_tasks(self, emit: Callable[[PhoneEvent], None]) -> list[Coroutine[Any, Any, None]]:
        return [self._play(emit)]  # the scenario says when the network goes; Apple is never asked

    async def _play(self, emit: Callable[[PhoneEvent], None]) -> None:
        """Plug and unplug the scenario's phones, and cut the network, when it says."""
        self.clock.start()  # the bench is up: this is the scenario's second 0
        timeline: list[tuple[float, Callable[[], object]]] = []
        for spec in self.scenario.phones:
            timeline.append((spec.attach, lambda s=spec: self.plug(s)))
            if spec.detach is not None:
                timeline.append((spec.detach, lambda p=self.phones[spec.name]: self.bench.world.detach(p)))
        for change in self.scenario.network:
            fault = None if change.up else "NO NETWORK"
            timeline.append((change.at, lambda f=fault: emit(LayerFault("network", f))))
        usbmuxd = self.bench.usbmuxd
        for daemon in self.scenario.usbmuxd:
            timeline.append((daemon.at, usbmuxd.start if daemon.running else usbmuxd.stop))
        for at, action in sorted(timeline, key=lambda item: item[0]):
            await self.clock.sleep_until(at)
            action()
        await asyncio.Event().wait()

    async def _restore_in_worker(self, slot: int, device: Device, firmware: object,
                                 report: Callable[[RestoreReport], None]) -> None:
        spec = next(s for s in self.scenario.phones if self.phones[s.name].ecid == device.ecid)
        phone = self.phones[spec.name]
        failure = None
        if spec.fail is not None and self._failures[spec.name] < spec.fail.times:
            self._failures[spec.name] += 1
            failure = InjectedFailure(spec.fail.phase, spec.fail.percent, Kind(spec.fail.kind))
        if phone.mode is SimMode.NORMAL:  # running iOS (not left in recovery by a failed attempt)
            await self._paired(device, report)
        if self.engine == "real":
            await self._real_restore(slot, device, phone, spec, firmware, report)
            return
        sim = SimParams(speed=self.clock.speed, fail=failure, link_socket=str(self.links.socket_path),
                        link=self.link_of[slot])
        stages = _Stages(self.bench.world, phone, ENUMERATION_GAP_S / self.clock.speed)

        def follow(item: RestoreReport) -> None:
            if isinstance(item, RestoreProgress):
                stages.enter(item.phase)
            report(item)

        try:
            await restore_in_worker(device, getattr(firmware, "path", None), follow,
                                    label=f"slot{slot}", setup=self.setup, sim=sim)
        except BaseException:
            stages.move(SimMode.RECOVERY)  # a failed or stopped restore leaves the phone in iBoot
            raise
        phone.erase()
        self.bench.world.reboot(phone, SimMode.NORMAL, delay=REBOOT_S / self.clock.speed)

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
        usb3=spec.usb3, vanish_on_scan=spec.vanish_on_scan)


def open_simulated_phones(config: Config, scenario: Scenario | None, clock: Clock) -> SimulatedPhones:
    empty = Scenario("none", ScenarioInfo(), (), (), {}, Path())
    return SimulatedPhones(config, scenario or empty, clock)
