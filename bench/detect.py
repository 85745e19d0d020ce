"""How soon a phone plugged in is on its slot and identified, through the protocol simulator.

`python -m bench.detect [--attaches N]` plugs phones one at a time into a simulated hub met by
the real phone layer (pymobiledevice3 against the simulated usbmuxd and lockdownd, pyusb against
the simulated bus) and prints, side by side, p50 / p95 / max of

- attach -> on its slot (the layer's PhoneArrived): a phone running iOS, which usbmuxd
  announces and sysfs places, against a DFU phone, which udev's hotplug event makes the layer
  scan for at once;
- attach -> identified (lockdownd read for the one, the iBoot serial string for the other): what
  the display shows;

each also with the bus poll alone (no sysfs, no hotplug events: every 0.5 s), as on a machine
without libudev, and as the layer was before it used them.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from hw.iphone.layer import UsbPhoneLayer
from hw.iphone.restore import WorkerSetup
from hw.iphone.slots import SlotMap
from hw.iphone.usb_sysfs import UsbSysfs
from hw.phones import PhoneArrived, PhoneLeft
from hw.sim import Mode, SimPhone, SimulatedBench

SLOTS = 7
_ecids = itertools.count(0x00A1B2C3D4E5F6)


class _NoHotplug:
    def start(self, wake: Callable[[], None]) -> None:
        pass

    def stop(self) -> None:
        pass


async def measure(folder: Path, mode: Mode, attaches: int, events: bool) -> tuple[list[float], list[float]]:
    bench = SimulatedBench([], folder, usbmuxd_on_demand=False)
    setup = WorkerSetup(home=folder / "home", log_dir=folder / "logs", timeout_s=60,
                        environment={"USBMUXD_SOCKET_ADDRESS": bench.usbmuxd_address})
    layer = UsbPhoneLayer(SlotMap({f"1-1.{s}": s for s in range(1, SLOTS + 1)}, SLOTS), setup,
                          usb_backend=bench.usb_backend,
                          sysfs=UsbSysfs(bench.sysfs_root if events else folder / "no-sysfs"),
                          hotplug=bench.hotplug if events else _NoHotplug())
    layer._side_tasks = lambda emit: []  # no Apple reachability probe from a benchmark
    emitted: list[object] = []
    changed = asyncio.Event()

    def emit(event: object) -> None:
        emitted.append(event)
        changed.set()

    async def until(seen: Callable[[object], bool]) -> object:
        while True:
            found = next((e for e in emitted if seen(e)), None)
            if found is not None:
                return found
            changed.clear()
            await changed.wait()

    os.environ["USBMUXD_SOCKET_ADDRESS"] = bench.usbmuxd_address  # pymobiledevice3 reads it per call
    arrived, identified = [], []
    with bench:
        task = asyncio.create_task(layer.watch(emit))
        await asyncio.sleep(1.0)  # usbmuxd up, the first scans done
        for number in range(attaches):
            slot = number % SLOTS + 1
            ecid = next(_ecids)
            phone = SimPhone(ecid=ecid, serial=f"F2LDET{ecid % 10**6:06d}", mode=mode)
            emitted.clear()
            started = time.perf_counter()
            bench.world.attach(phone, 1, (1, slot))
            came = await until(lambda e: isinstance(e, PhoneArrived) and e.slot == slot)
            arrived.append(time.perf_counter() - started)
            await layer.identify(came.device)  # type: ignore[attr-defined]
            identified.append(time.perf_counter() - started)
            bench.world.detach(phone)
            await until(lambda e: e == PhoneLeft(slot))
            await asyncio.sleep(0.13 * (number % 4))  # attaches fall anywhere between two scans
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return arrived, identified


def figures(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return (f"p50 {statistics.median(ordered) * 1000:>5.0f} ms  p95 {p95 * 1000:>5.0f} ms  "
            f"max {ordered[-1] * 1000:>5.0f} ms")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.detect", description=__doc__.splitlines()[0])
    parser.add_argument("--attaches", type=int, default=40)
    args = parser.parse_args(argv)
    print(f"{args.attaches} attaches each, one at a time, on {SLOTS} slots")
    with tempfile.TemporaryDirectory(prefix="bench-detect-") as tmp:
        for label, mode in (("running iOS", Mode.NORMAL), ("DFU", Mode.DFU)):
            for events, how in ((True, "sysfs + udev events"), (False, "bus poll alone")):
                folder = Path(tmp) / f"{mode.value}-{how[:3]}"
                arrived, identified = asyncio.run(measure(folder, mode, args.attaches, events))
                print(f"  {label:<12} {how:<20} on its slot: {figures(arrived)}")
                print(f"  {'':<12} {'':<20} identified: {figures(identified)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
