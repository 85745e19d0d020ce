"""Where a phone is, from sysfs (the simulated kernel's tree), and which udev events wake the scan."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hw.iphone.hotplug import UdevHotplug, is_boot_mode_phone
from hw.iphone.usb_sysfs import UsbSysfs
from hw.sim import Mode, SimulatedBench
from .harness import phone


def test_a_phone_is_found_by_its_serial_while_plugged_in_and_not_after(tmp_path):
    sim = phone()
    with SimulatedBench([], tmp_path / "bench") as bench:
        sysfs = UsbSysfs(bench.sysfs_root)
        bench.world.attach(sim, 1, (1, 4))
        assert sysfs.port_of(sim.udid) == "1-1.4"  # usbmuxd's UDID has a dash, the USB serial none
        bench.world.set_mode(sim, Mode.RECOVERY)  # re-enumerated: its serial string is iBoot's now
        assert sysfs.port_of(sim.udid) is None
        bench.world.detach(sim)
        assert not (bench.sysfs_root / "1-1.4").exists()


def test_no_sysfs_tree_is_no_port():
    assert UsbSysfs(Path("/nonexistent/sysfs")).port_of("00008030-0001") is None


@pytest.mark.parametrize(("product", "wakes"), [
    ("5ac/1227/0", True), ("5ac/1281/0", True),  # DFU, recovery
    ("5ac/12a8/1511", False),  # iOS: usbmuxd announces it
    ("46d/c52b/1211", False), ("", False), ("5ac", False), ("zz/1227/0", False),
])
def test_only_recovery_and_dfu_phones_wake_the_scan(product, wakes):
    assert is_boot_mode_phone(product) is wakes


async def test_udev_events_start_and_stop_wherever_the_station_runs():
    """With or without udev and netlink (a container, a laptop), starting and stopping is quiet."""
    hotplug = UdevHotplug()
    hotplug.start(lambda: None)
    await asyncio.sleep(0)
    hotplug.stop()
