"""A real phone layer (pymobiledevice3 + pyusb) on a simulated bench, and what it emitted."""
from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from hw.iphone.layer import UsbPhoneLayer
from hw.iphone.restore import WorkerSetup
from hw.iphone.slots import SlotMap
from hw.iphone.usb_sysfs import UsbSysfs
from hw.iphone.usb_topology import PortPeers
from hw.sim import SimPhone, SimulatedBench, point_activation_at

_ecids = itertools.count(0x00112233445566)


def phone(**fields: Any) -> SimPhone:
    ecid = next(_ecids)
    return SimPhone(ecid=ecid, serial=f"F2L{ecid % 10**9:09d}", **fields)


class Layer:
    """A layer on a bench, with the events it emitted."""

    def __init__(self, bench: SimulatedBench, layer: UsbPhoneLayer) -> None:
        self.bench = bench
        self.layer = layer
        self.events: list[object] = []

    def plug(self, sim: SimPhone, slot: int) -> None:
        self.bench.world.attach(sim, 1, (1, slot))

    async def until(self, predicate: Callable[[object], bool], timeout: float = 5.0) -> Any:
        async with asyncio.timeout(timeout):
            while True:
                found = [e for e in self.events if predicate(e)]
                if found:
                    return found[-1]
                await asyncio.sleep(0.02)


@asynccontextmanager
async def running_layer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *,
                        usbmuxd_on_demand: bool = False, **layer_options: Any) -> AsyncIterator[Layer]:
    bench = SimulatedBench([], tmp_path / "bench", usbmuxd_on_demand=usbmuxd_on_demand)
    monkeypatch.setenv("USBMUXD_SOCKET_ADDRESS", bench.usbmuxd_address)
    setup = WorkerSetup(home=tmp_path / "home", log_dir=tmp_path / "logs", timeout_s=60,
                        environment={"USBMUXD_SOCKET_ADDRESS": bench.usbmuxd_address})
    natural = {f"1-1.{slot}": slot for slot in range(1, 8)}
    options = {"restore_grace_s": 1.0, "hello_wait_s": 5.0, "ready_wait_s": 2.0, "retry_s": 0.2}
    layer = UsbPhoneLayer(SlotMap(natural, 7, peer=PortPeers(bench.sysfs_root).peer), setup,
                          usb_backend=bench.usb_backend, sysfs=UsbSysfs(bench.sysfs_root),
                          hotplug=bench.hotplug, **(options | layer_options))
    layer._side_tasks = lambda emit: []  # no Apple reachability probe from a test
    harness = Layer(bench, layer)
    with bench:
        point_activation_at(bench.activation_url)
        task = asyncio.create_task(layer.watch(harness.events.append))
        try:
            yield harness
        finally:
            point_activation_at(None)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
