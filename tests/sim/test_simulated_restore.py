"""The simulated backend's restore is no more permissive than a real phone.

A real phone running iOS goes to recovery only for a host it trusts: lockdownd wants a
paired session for EnterRecovery from iOS 14.5 (idevicerestore commit 6d3b6bb), and the
station's own worker pairs first on every iOS (hw/worker/real.py ``_connect``). So a
simulated phone that refuses trust must not be restored either, whatever the station asks.
"""
from __future__ import annotations

import asyncio
import gc
import weakref
from pathlib import Path

import pytest

from hw.clock import Clock
from hw.iphone import layer
from hw.phones import Lock, PhoneArrived, RestoreError, TrustRequest
from hw.sim import Mode as SimMode
from hw.simulated import SimulatedPhones
from station.config import Config, RestoreSection, StationSection
from station.scenario import Scenario, ScenarioInfo, ScenarioPhone


async def _restore(tmp_path: Path, spec: ScenarioPhone,
                   reports: list[object] | None = None) -> tuple[SimulatedPhones, list[object]]:
    config = Config(station=StationSection(state_dir=tmp_path / "state"),
                    restore=RestoreSection(timeout_s=60))
    scenario = Scenario("trust", ScenarioInfo(engine="timed"), (spec,), (), {}, tmp_path)
    layer = SimulatedPhones(config, scenario, Clock(speed=100, started=False))
    events: list[object] = []
    reports = [] if reports is None else reports
    watching = asyncio.create_task(layer.watch(events.append))
    try:
        async with asyncio.timeout(20):
            while not any(isinstance(e, PhoneArrived) for e in events):
                await asyncio.sleep(0.05)
            arrived = next(e for e in events if isinstance(e, PhoneArrived))
            device = await layer.identify(arrived.device)
            await layer.restore(device, None, reports.append)
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
    return layer, reports


@pytest.mark.parametrize("pairing, reason", [
    ("passcode", "passcode set: unlock the phone and tap Trust"),
    ("denied", "Trust denied on the phone"),
])
async def test_a_phone_that_does_not_trust_the_station_is_not_restored(tmp_path, pairing, reason):
    spec = ScenarioPhone(name="untrusting", slot=1, activated=True, find_my=True,
                         activation_lock=True, pairing=pairing)
    with pytest.raises(RestoreError) as failure:
        await _restore(tmp_path, spec)
    assert reason in failure.value.reason and failure.value.retryable


async def test_the_restore_asks_for_trust_and_the_phone_stays_in_ios(tmp_path, monkeypatch):
    spec = ScenarioPhone(name="untrusting", slot=1, activated=True, find_my=True, pairing="passcode")
    captured: dict[str, SimulatedPhones] = {}
    original = SimulatedPhones.__init__

    def keep(self, *args, **kwargs):
        original(self, *args, **kwargs)
        captured["layer"] = self

    monkeypatch.setattr(SimulatedPhones, "__init__", keep)
    reports: list[object] = []
    with pytest.raises(RestoreError):
        await _restore(tmp_path, spec, reports)
    assert reports == [TrustRequest("passcode set: unlock the phone and tap Trust")]  # asked once
    phone = captured["layer"].phones["untrusting"]
    assert phone.mode is SimMode.NORMAL and phone.find_my and not phone.paired_hosts
    assert "EnterRecovery" not in phone.requests()


async def test_a_trusting_phone_is_restored(tmp_path):
    spec = ScenarioPhone(name="trusting", slot=1)
    layer, reports = await _restore(tmp_path, spec)
    phone = layer.phones["trusting"]
    assert "StartSession" in phone.requests(), "restored over a paired session"
    assert not phone.paired_hosts, "erased: it trusts nobody now"
    assert not [r for r in reports if isinstance(r, TrustRequest)]


async def test_a_phone_is_forgotten_once_it_is_unplugged(tmp_path):
    # A scenario plugs each phone in once. A simulation that kept every phone after it left (its
    # key, pairings, each lockdownd request it got) grew with every phone of bench.soak.
    specs = tuple(ScenarioPhone(name=f"p{n}", slot=1, attach=n, detach=n + 0.5) for n in range(20))
    config = Config(station=StationSection(state_dir=tmp_path / "state"))
    scenario = Scenario("soak", ScenarioInfo(engine="timed"), specs, (), {}, tmp_path)
    layer = SimulatedPhones(config, scenario, Clock(speed=100, started=False))
    gone = [weakref.ref(phone) for phone in layer.phones.values()]
    for spec in specs:
        layer.plug(spec)
        layer.phones[spec.name].record({"Request": "QueryType"})
        layer.unplug(spec)
    layer.unplug(specs[0])  # pulled by a fault, then unplugged by the scenario: nothing to do
    gc.collect()

    assert layer.phones == {} and layer.bench.world.phones == []
    assert [ref() for ref in gone] == [None] * len(specs)


@pytest.mark.parametrize("engine", ["timed", "real"])
@pytest.mark.parametrize("speed", [1, 30, 300, 3000])
def test_a_restored_phone_keeps_its_slot_for_as_long_as_the_station_takes_to_see_it_again(
        tmp_path, engine, speed):
    # A phone that moves to restore mode is seen again only once usbmuxd (started on demand when
    # it arrives, as on Debian) has the station connected again: up to one USB scan and one
    # reconnect attempt later, in real time whatever the scenario's speed. A grace shorter than
    # that (and than twice that on a loaded machine, where the simulated usbmuxd shares the
    # station's process) lost a DFU phone's slot mid-restore: RESTORING -> EMPTY, then the phone
    # came back as a new one in recovery.
    config = Config(station=StationSection(state_dir=tmp_path / "state"))
    scenario = Scenario("grace", ScenarioInfo(engine=engine), (), (), {}, tmp_path)
    phones = SimulatedPhones(config, scenario, Clock(speed=speed, started=False))
    assert phones.restore_grace_s >= 2 * (layer.USB_POLL_S + layer.USBMUXD_RETRY_S)


async def _erase(tmp_path: Path, spec: ScenarioPhone) -> tuple[SimulatedPhones, list[object], object]:
    """Erase the scenario's phone through the layer, then check it at the Hello screen."""
    config = Config(station=StationSection(state_dir=tmp_path / "state"),
                    restore=RestoreSection(timeout_s=60))
    scenario = Scenario("erase", ScenarioInfo(engine="timed"), (spec,), (), {}, tmp_path)
    layer = SimulatedPhones(config, scenario, Clock(speed=100, started=False))
    events: list[object] = []
    reports: list[object] = []
    watching = asyncio.create_task(layer.watch(events.append))
    try:
        async with asyncio.timeout(30):
            while not any(isinstance(e, PhoneArrived) for e in events):
                await asyncio.sleep(0.05)
            arrived = next(e for e in events if isinstance(e, PhoneArrived))
            device = await layer.identify(arrived.device)
            phone = layer.phones[spec.name]
            await layer.erase(device, reports.append)
            after = await layer.check_lock(device, after_restore=True)
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
    return phone, reports, after


async def test_an_erase_empties_a_trusting_phone_which_reboots_to_hello_clear(tmp_path):
    spec = ScenarioPhone(name="trade-in", slot=1, activated=True, serial="F2LXERASE001")
    phone, reports, after = await _erase(tmp_path, spec)
    assert "mobilebackup2.EraseDevice" in phone.requests()
    assert "EnterRecovery" not in phone.requests()  # iOS stays: no restore
    assert phone.activation_state == "Unactivated" and not phone.find_my
    assert after.lock is Lock.CLEAR, after
    assert [r.phase for r in reports] == ["erase", "erase"] and reports[-1].percent == 100


async def test_a_phone_that_refuses_the_erase_fails_it(tmp_path, monkeypatch):
    spec = ScenarioPhone(name="trade-in", slot=1, activated=True)
    original = SimulatedPhones.__init__

    def refusing(self, *args, **kwargs):
        original(self, *args, **kwargs)
        for phone in self.phones.values():
            phone.erase_refused = True

    monkeypatch.setattr(SimulatedPhones, "__init__", refusing)
    with pytest.raises(RestoreError) as failure:
        await _erase(tmp_path, spec)
    assert failure.value.reason.startswith("the phone refused the erase")
