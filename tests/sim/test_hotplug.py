"""Hotplug storms and lifecycle: nothing leaks, nothing hangs."""
from __future__ import annotations

import asyncio
import gc
import threading
import weakref

import pytest
from pymobiledevice3 import usbmux
from pymobiledevice3.exceptions import MuxException, PyMobileDevice3Exception
from pymobiledevice3.lockdown import create_using_usbmux

from hw.sim import Mode, SimulatedBench, SimWorld
from hw.sim.iboot import iboot_of

from .conftest import open_fds, run, sim_threads

STORM = 50


def test_hotplug_storm_leaks_nothing(short_dir, make_phone, monkeypatch):
    phone = make_phone()
    threads_before, fds_before = threading.active_count(), open_fds()

    with SimulatedBench([], short_dir) as bench:
        monkeypatch.setenv("USBMUXD_SOCKET_ADDRESS", bench.usbmuxd_address)
        threads_running = sim_threads()

        async def storm() -> tuple[list[str], int]:
            mux = await usbmux.create_mux()
            try:
                await mux.listen()
                events = 0
                for _ in range(STORM):
                    bench.world.attach(phone)
                    bench.world.detach(phone)
                for _ in range(2 * STORM):
                    await asyncio.wait_for(mux.receive_device_state_update(), 2)
                    events += 1
                return [d.serial for d in mux.devices], events
            finally:
                await mux.close()

        devices, events = run(storm())
        assert (devices, events) == ([], 2 * STORM)
        assert run(usbmux.list_devices()) == []
        assert sim_threads() == threads_running  # no thread per event or per connection

    assert threading.active_count() == threads_before
    assert open_fds() == fds_before


def test_the_world_forgets_a_phone_once_it_is_unplugged(make_phone):
    # A station sees thousands of phones, each plugged in once: a world that kept every phone
    # (and its iBoot state) grew with each one (bench.soak).
    resident = make_phone()
    world = SimWorld([resident])
    gone = []
    for _ in range(STORM):
        visitor = make_phone(port_path=(1, 2), mode=Mode.RECOVERY)
        world.attach(visitor)
        with world.lock:
            iboot_of(world, visitor).env["auto-boot"] = "true"  # its firmware ran
        world.detach(visitor)
        gone.append(weakref.ref(visitor))
    del visitor
    world.attach(resident)
    with world.lock:
        iboot_of(world, resident).env["auto-boot"] = "true"
    world.detach(resident)
    gc.collect()

    assert [ref() for ref in gone] == [None] * STORM
    assert world.phones == [resident] and world.find_phone(resident.udid) is resident
    with world.lock:
        assert iboot_of(world, resident).env["auto-boot"] == "true"  # NVRAM: the phone keeps it


def test_a_phone_keeps_its_nvram_when_it_is_plugged_in_again(make_phone):
    phone = make_phone(mode=Mode.RECOVERY)
    world = SimWorld()
    world.attach(phone)
    with world.lock:
        iboot_of(world, phone).env["auto-boot"] = "true"
    world.detach(phone)
    assert world.find_phone(phone.udid) is None
    world.attach(phone)
    with world.lock:
        assert iboot_of(world, phone).env["auto-boot"] == "true"


def test_unplugging_drops_open_connections(bench_for, make_phone):
    phone = make_phone()
    bench = bench_for(phone)

    async def scenario():
        async with await create_using_usbmux(serial=phone.udid, autopair=True, pair_timeout=0) as lockdown:
            bench.world.detach(phone)
            await asyncio.sleep(0.05)
            await lockdown.get_value(key="ProductType")

    with pytest.raises(PyMobileDevice3Exception):
        run(scenario())


def test_bench_stops_cleanly_with_clients_connected(short_dir, make_phone, monkeypatch):
    phone = make_phone()
    threads_before, fds_before = threading.active_count(), open_fds()

    with SimulatedBench([phone], short_dir) as bench:
        monkeypatch.setenv("USBMUXD_SOCKET_ADDRESS", bench.usbmuxd_address)

        async def hold_connections():
            lockdown = await create_using_usbmux(serial=phone.udid, autopair=True, pair_timeout=0)
            mux = await usbmux.create_mux()
            await mux.listen()
            await mux.receive_device_state_update()
            bench.close()  # the daemon goes away under its clients
            with pytest.raises((MuxException, ConnectionError)):
                await asyncio.wait_for(mux.receive_device_state_update(), 2)
            await mux.close()
            await lockdown.close()

        run(hold_connections())
        assert not (short_dir / "usbmuxd").exists()

    assert threading.active_count() == threads_before
    assert open_fds() == fds_before


def test_environment_for_a_child_process(short_dir, make_phone):
    with SimulatedBench([make_phone()], short_dir) as bench:
        env = bench.environment()
        assert env["USBMUXD_SOCKET_ADDRESS"] == str(short_dir / "usbmuxd")
        assert env["STATION_SIM_ACTIVATION_URL"].startswith("http://127.0.0.1:")
