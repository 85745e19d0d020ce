"""The real phone layer (pymobiledevice3 + pyusb) against the protocol-level simulator.

Nothing here is mocked above the transport: usbmuxd is a unix socket speaking
the plist protocol, lockdownd answers over it with TLS sessions, Apple's
activation server is a local HTTP server and the USB bus is a pyusb backend.
"""
from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from hw.iphone import activation, lockdown_ops
from hw.iphone import layer as layer_module
from hw.phones import LayerFault, Lock, Mode, PhoneArrived, PhoneLeft
from hw.sim import ACTIVATED, Hang, Pairing, Refuse
from hw.sim import Mode as SimMode
from hw.sim import usb_backend
from hw.sim.activation_server import DEVICE_ACTIVATION_PATH, DRM_HANDSHAKE_PATH
from station.config import Config, RestoreSection
from station.core import Station
from station.machine import State
from .harness import phone, running_layer


async def test_a_phone_is_found_on_its_hub_port_and_identified(tmp_path, monkeypatch):
    sim = phone(product_type="iPhone14,7", ios_version="17.5.1", build="21F90")
    async with running_layer(tmp_path, monkeypatch) as h:
        h.plug(sim, 3)
        arrived = await h.until(lambda e: isinstance(e, PhoneArrived))
        assert arrived.slot == 3 and arrived.device.mode is Mode.NORMAL
        device = await h.layer.identify(arrived.device)
    assert (device.product_type, device.name, device.ios_version, device.build) == (
        "iPhone14,7", "iPhone 14", "17.5.1", "21F90")
    assert (device.udid, device.ecid, device.serial) == (sim.udid, sim.ecid, sim.serial)
    assert "Pair" not in sim.requests(), "identity must not need pairing"


async def test_two_phones_of_one_model_in_different_modes(tmp_path, monkeypatch):
    normal = phone(product_type="iPhone13,2")
    dfu = phone(product_type="iPhone13,2", mode=SimMode.DFU)
    async with running_layer(tmp_path, monkeypatch) as h:
        h.plug(normal, 1)
        h.plug(dfu, 2)
        await h.until(lambda e: isinstance(e, PhoneArrived) and e.slot == 2)
        await h.until(lambda e: isinstance(e, PhoneArrived) and e.slot == 1)
        arrivals = {e.slot: e.device for e in h.events if isinstance(e, PhoneArrived)}
        identities = {slot: await h.layer.identify(d) for slot, d in arrivals.items()}
        lock = await h.layer.check_lock(identities[2])
    assert identities[1].mode is Mode.NORMAL and identities[1].ecid == normal.ecid
    assert identities[2].mode is Mode.DFU and identities[2].ecid == dfu.ecid
    assert identities[2].product_type == "iPhone13,2"  # from CPID/BDID in the iBoot string
    assert lock.lock is Lock.UNKNOWN and "DFU" in lock.reason


@pytest.mark.parametrize("fields, lock, method, reason", [
    ({}, Lock.CLEAR, "activation-server", "no Activation Lock"),
    ({"activation_lock": True}, Lock.LOCKED, "activation-server", "Apple asks for the Apple ID"),
    ({"activation_state": ACTIVATED, "find_my": True}, Lock.LOCKED, "fmip", "Find My is on"),
    # An activated phone cannot be put to Apple; Find My off is no proof (lock_evidence).
    ({"activation_state": ACTIVATED}, Lock.UNKNOWN, "fmip", "Find My not confirmed off"),
    ({"activation_state": ACTIVATED, "pairing": Pairing.DIALOG}, Lock.UNKNOWN, "fmip",
     "Find My not confirmed off"),
    ({"activation_state": ACTIVATED, "find_my": True, "pairing": Pairing.PASSCODE}, Lock.UNKNOWN,
     "fmip", "passcode"),
    ({"activation_state": ACTIVATED, "find_my": True, "pairing": Pairing.DENIED}, Lock.UNKNOWN,
     "fmip", "Trust denied"),
], ids=["hello-clean", "hello-activation-lock", "find-my-on", "find-my-off", "trust-dialog",
        "passcode", "trust-denied"])
async def test_lock_check_paths(tmp_path, monkeypatch, fields, lock, method, reason):
    sim = phone(**fields)
    async with running_layer(tmp_path, monkeypatch) as h:
        h.plug(sim, 1)
        arrived = await h.until(lambda e: isinstance(e, PhoneArrived))
        result = await h.layer.check_lock(await h.layer.identify(arrived.device))
    assert (result.lock, result.method) == (lock, method)
    assert reason in result.reason
    # Passcode or "Don't Trust": unreadable until it trusts the station, which no policy stands in for.
    assert result.needs_trust is (fields.get("pairing") in (Pairing.PASSCODE, Pairing.DENIED))


async def test_a_trust_dialog_nobody_answers_needs_trust(tmp_path, monkeypatch):
    monkeypatch.setattr(lockdown_ops, "PAIR_TIMEOUT_S", 0.5)
    sim = phone(activation_state=ACTIVATED, find_my=True, pairing=Pairing.DIALOG, dialog_tries=10**6)
    async with running_layer(tmp_path, monkeypatch) as h:
        h.plug(sim, 1)
        arrived = await h.until(lambda e: isinstance(e, PhoneArrived))
        result = await h.layer.check_lock(await h.layer.identify(arrived.device))
    assert (result.lock, result.needs_trust) == (Lock.UNKNOWN, True)
    assert result.reason == "Trust dialog not answered"


async def test_recovery_and_dfu_are_unreadable_by_nature_not_untrusted(tmp_path, monkeypatch):
    async with running_layer(tmp_path, monkeypatch) as h:
        h.plug(phone(mode=SimMode.RECOVERY), 1)
        arrived = await h.until(lambda e: isinstance(e, PhoneArrived))
        result = await h.layer.check_lock(await h.layer.identify(arrived.device))
    assert (result.lock, result.needs_trust) == (Lock.UNKNOWN, False)
    assert result.reason == "RECOVERY: lock not readable"


@pytest.mark.parametrize("fault, reason", [
    (Refuse(503, path=DEVICE_ACTIVATION_PATH), "answered HTTP 503"),
    (Refuse(503, path=DRM_HANDSHAKE_PATH), "drmHandshake answered HTTP 503"),
    (Hang(5.0), "no network"),
], ids=["activation-503", "handshake-503", "timeout"])
async def test_network_failure_is_unknown_never_clear(tmp_path, monkeypatch, fault, reason):
    monkeypatch.setattr(activation, "HTTP_TIMEOUT_S", 0.5)
    sim = phone(activation_lock=True)  # locked: a wrong "clear" here would be a disaster
    async with running_layer(tmp_path, monkeypatch) as h:
        h.bench.activation.set_fault(fault)
        h.plug(sim, 1)
        arrived = await h.until(lambda e: isinstance(e, PhoneArrived))
        result = await h.layer.check_lock(await h.layer.identify(arrived.device))
    assert result.lock is Lock.UNKNOWN
    assert reason in result.reason


async def test_recovery_and_dfu_phones_come_and_go_within_a_second(tmp_path, monkeypatch):
    sim = phone(product_type="iPhone14,7", mode=SimMode.RECOVERY)
    async with running_layer(tmp_path, monkeypatch) as h:
        await asyncio.sleep(0.6)
        loop = asyncio.get_running_loop()
        plugged = loop.time()
        h.plug(sim, 6)
        arrived = await h.until(lambda e: isinstance(e, PhoneArrived), timeout=1.0)
        assert loop.time() - plugged < 1.0
        assert (arrived.slot, arrived.device.mode, arrived.device.product_type) == (
            6, Mode.RECOVERY, "iPhone14,7")
        assert arrived.device.serial == sim.serial  # SRNM, only in recovery strings
        unplugged = loop.time()
        h.bench.world.detach(sim)
        await h.until(lambda e: isinstance(e, PhoneLeft), timeout=1.0)
        assert loop.time() - unplugged < 1.0


async def test_no_usbmuxd_is_a_fault_while_a_phone_waits_for_it(tmp_path, monkeypatch):
    monkeypatch.setattr(layer_module, "USBMUXD_START_S", 0.5)
    async with running_layer(tmp_path, monkeypatch) as h:
        h.plug(phone(), 2)
        await h.until(lambda e: isinstance(e, PhoneArrived) and e.slot == 2)
        h.bench.usbmuxd.stop()
        await h.until(lambda e: e == LayerFault("usbmuxd", "NO USBMUXD"))
        h.events.clear()
        h.bench.usbmuxd.start()
        await h.until(lambda e: e == LayerFault("usbmuxd", None))
        assert not [e for e in h.events if isinstance(e, PhoneLeft)], "the phone stayed on its slot"


async def test_no_usbmuxd_and_no_phone_is_how_debian_idles(tmp_path, monkeypatch):
    """Debian's usbmuxd runs only while a phone runs iOS (hw.sim.udev): its absence alone is no fault."""
    async with running_layer(tmp_path, monkeypatch, usbmuxd_on_demand=True) as h:
        await asyncio.sleep(1.5)
        assert not h.bench.usbmuxd.running
        assert LayerFault("usbmuxd", "NO USBMUXD") not in h.events
        h.plug(phone(), 2)  # udev starts usbmuxd, and the station finds it
        arrived = await h.until(lambda e: isinstance(e, PhoneArrived))
        assert arrived.slot == 2 and h.bench.usbmuxd.running
        assert LayerFault("usbmuxd", "NO USBMUXD") not in h.events


async def test_hotplug_storm_ends_empty_with_nothing_leaked(tmp_path, monkeypatch):
    """One phone plugged and unplugged 50 times in about 10 s, with the station listening."""
    sim = phone()
    async with running_layer(tmp_path, monkeypatch) as h:
        station = Station(Config(restore=RestoreSection(mode="counter")), h.layer,
                          clock=asyncio.get_running_loop().time)
        h.layer._emit = lambda event: (h.events.append(event), station.on_phone_event(event))
        await h.until(lambda e: e == LayerFault("usbmuxd", None))
        await asyncio.sleep(0.6)
        fds, threads, tasks = open_fds(), threading.active_count(), len(asyncio.all_tasks())
        children = child_processes()
        for _ in range(50):
            h.plug(sim, 4)
            await asyncio.sleep(0.1)
            h.bench.world.detach(sim)
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)  # the last USB scans, usbmuxd events and lock checks
        arrivals = sum(isinstance(e, PhoneArrived) for e in h.events)
        departures = sum(isinstance(e, PhoneLeft) for e in h.events)
        assert arrivals == departures >= 1  # every arrival the station heard of, it saw leave
        assert all(port.state is State.EMPTY for port in station.ports.values())
        assert not station._work and not h.layer._told
        assert len(asyncio.all_tasks()) == tasks
        assert threading.active_count() <= threads
        assert open_fds() <= fds
        assert child_processes() == children


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def child_processes() -> set[int]:
    me = str(os.getpid())
    return {int(pid) for pid in os.listdir("/proc") if pid.isdigit() and _parent(pid) == me}


def _parent(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
    except (OSError, IndexError):
        return ""


async def test_a_strange_usb_serial_is_one_log_line_and_no_phone(tmp_path, monkeypatch, caplog):
    sim = phone(mode=SimMode.RECOVERY)
    monkeypatch.setattr(usb_backend, "iboot_serial", lambda phone, mode: "NO SERIAL HERE")
    async with running_layer(tmp_path, monkeypatch) as h:
        h.plug(sim, 5)
        await asyncio.sleep(1.2)
    assert not [e for e in h.events if isinstance(e, PhoneArrived)]
    lines = [r.getMessage() for r in caplog.records if "USB port 1-1.5" in r.getMessage()]
    assert len(lines) == 1 and "no CPID" in lines[0]


async def test_an_unreadable_usb_device_is_a_station_fault(tmp_path, monkeypatch):
    """No udev permission: pyusb cannot read the serial (no langid); the display must say so."""
    sim = phone(mode=SimMode.DFU)

    def no_access(self):
        raise ValueError("The device has no langid (permission issue, no string descriptors)")

    import usb.core
    monkeypatch.setattr(usb.core.Device, "serial_number", property(no_access))
    async with running_layer(tmp_path, monkeypatch) as h:
        h.plug(sim, 2)
        await h.until(lambda e: e == LayerFault("usb-access", "USB NO ACCESS"))
        monkeypatch.undo()
        monkeypatch.setenv("USBMUXD_SOCKET_ADDRESS", h.bench.usbmuxd_address)
        await h.until(lambda e: e == LayerFault("usb-access", None))
        await h.until(lambda e: isinstance(e, PhoneArrived))


@pytest.mark.parametrize("mode", [SimMode.NORMAL, SimMode.DFU, SimMode.RECOVERY])
async def test_a_phone_is_on_its_slot_before_the_next_bus_scan(tmp_path, monkeypatch, mode):
    """Attach -> slot without the 0.5 s poll: a phone running iOS from usbmuxd's announcement and
    its port in sysfs, a recovery or DFU phone from the hotplug event (issue 13's detection goal)."""
    monkeypatch.setattr(layer_module, "USB_POLL_S", 60.0)  # after the first scan, no other by the clock
    async with running_layer(tmp_path, monkeypatch) as h:
        await asyncio.sleep(0.3)
        h.plug(phone(mode=mode), 5)
        arrived = await h.until(lambda e: isinstance(e, PhoneArrived), timeout=3.0)
    assert arrived.slot == 5 and arrived.device.mode.value == mode.value
