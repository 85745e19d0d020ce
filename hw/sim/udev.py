"""What udev and systemd do around usbmuxd on Debian, and the sysfs links between USB 3 port pairs.

usbmuxd's life on Debian (usbmuxd @2efa75a):
- udev/39-usbmuxd.rules.in: when an iOS device (05ac:12[9a]x) is added, udev asks
  systemd for ``usbmuxd.service`` (configure.ac ``udev_activation_rule`` =
  ``ENV{SYSTEMD_WANTS}="usbmuxd.service"``); when one is removed it runs ``usbmuxd -x``;
- systemd/usbmuxd.service.in runs ``usbmuxd --user usbmux --systemd``, and
  ``--systemd`` implies ``--enable-exit`` (main.c usage);
- ``-x`` sends SIGUSR1, and the daemon exits if ``device_get_count(1) == 0``
  (main.c ``handle_signal``).
So usbmuxd runs only while a phone is plugged in, and a new daemon numbers its
devices from 1 again (device.c ``next_device_id = 1``): DeviceIDs repeat.
"""
from __future__ import annotations

import logging
import os
import queue
import shutil
import threading
from pathlib import Path

from collections.abc import Callable

from hw.sim.phone import USBMUX_MODES, Mode
from hw.sim.usb_backend import APPLE_VENDOR_ID, PRODUCT_IDS, string_table
from hw.sim.usbmuxd import SimUsbmuxd
from hw.sim.world import SimWorld, UsbArrived, UsbDevice, UsbEvent, UsbLeft

logger = logging.getLogger(__name__)


class UsbmuxdOnDemand:
    """Starts the simulated usbmuxd when a phone running iOS appears, stops it when the last leaves."""

    def __init__(self, world: SimWorld, usbmuxd: SimUsbmuxd) -> None:
        self.world = world
        self.usbmuxd = usbmuxd
        self._actions: queue.SimpleQueue[UsbEvent | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._unsubscribe = lambda: None

    def start(self) -> None:
        # Start and stop take the world's lock and wait for usbmuxd's loop: not in a world callback.
        self._thread = threading.Thread(target=self._run, name="sim-udev", daemon=True)
        self._thread.start()
        self._unsubscribe = self.world.subscribe(self._actions.put)

    def stop(self) -> None:
        self._unsubscribe()
        if self._thread is not None:
            self._actions.put(None)
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while (event := self._actions.get()) is not None:
            if event.device.mode not in USBMUX_MODES:
                continue
            if isinstance(event, UsbArrived):
                if not self.usbmuxd.running:
                    logger.debug("udev: starting usbmuxd for %s", event.device.phone.serial)
                    self.usbmuxd.start()
            elif self.usbmuxd.running and not self._usbmux_devices_left():
                logger.debug("udev: usbmuxd -x: no device left, usbmuxd exits")
                self.usbmuxd.stop()

    def _usbmux_devices_left(self) -> bool:
        return any(d.mode in USBMUX_MODES for d in self.world.usb_devices())


def write_usb3_hub(root: Path, usb2_bus: int, usb3_bus: int, hub_port: int, ports: int) -> None:
    """A sysfs tree with one USB 3 hub on ``hub_port`` of both root hubs, each port linked to its peer.

    Names as the kernel makes them (drivers/usb/core/port.c ``usb_hub_create_port_device``:
    ``<hub>-port<N>`` under the hub's interface ``<hub>:1.0``, root hubs ``usb<bus>`` with
    interface ``<bus>-0:1.0``), and ``link_peers`` adds a ``peer`` link to the companion port.
    """
    def port_dir(bus: int, hub: tuple[int, ...], port: int) -> Path:
        name = f"{bus}-{'.'.join(map(str, hub))}" if hub else f"usb{bus}"
        interface = f"{name}:1.0" if hub else f"{bus}-0:1.0"
        return root / name / interface / f"{name}-port{port}"

    pairs = [((), hub_port)] + [((hub_port,), port) for port in range(1, ports + 1)]
    for hub, port in pairs:
        left, right = port_dir(usb2_bus, hub, port), port_dir(usb3_bus, hub, port)
        for here, there in ((left, right), (right, left)):
            here.mkdir(parents=True, exist_ok=True)
            link = here / "peer"
            if not link.is_symlink():
                os.symlink(os.path.relpath(there, here), link)


class SysfsDevices:
    """Each phone on the bus as a device directory in a sysfs tree, as the kernel keeps one.

    drivers/usb/core/sysfs.c: the directory is named by the port path (``1-1.3``) and holds
    ``idVendor``/``idProduct`` (``%04x``), ``busnum``/``devnum`` and ``serial``, the
    iSerialNumber read once at enumeration (hub.c ``usb_enumerate_device``). It appears when
    the device is added, before udev hears of it, and goes when the device is removed.
    Subscribed before usbmuxd, so a phone usbmuxd announces is already here, as on Linux.
    """

    def __init__(self, world: SimWorld, root: Path) -> None:
        self.world = world
        self.root = root
        self._unsubscribe: Callable[[], None] = lambda: None

    def start(self) -> None:
        self._unsubscribe = self.world.subscribe(self._on_event)

    def stop(self) -> None:
        self._unsubscribe()

    def _on_event(self, event: UsbEvent) -> None:
        folder = self.root / device_name(event.device)
        if isinstance(event, UsbLeft):
            shutil.rmtree(folder, ignore_errors=True)
            return
        device = event.device
        folder.mkdir(parents=True, exist_ok=True)
        strings = string_table(device)
        fields = {"idVendor": f"{APPLE_VENDOR_ID:04x}", "idProduct": f"{PRODUCT_IDS[device.mode]:04x}",
                  "busnum": str(device.bus), "devnum": str(device.address),
                  "serial": strings[max(strings)]}  # iSerialNumber is the last string (usb_backend)
        for name, value in fields.items():
            (folder / name).write_text(value + "\n")


def device_name(device: UsbDevice) -> str:
    return f"{device.bus}-{'.'.join(map(str, device.port_path))}"


class WorldHotplug:
    """udev's hotplug events for recovery and DFU phones (``hw.iphone.hotplug``'s simulated twin).

    ``wake`` is called on the world's thread, as it would be on pyudev's: it must be thread-safe.
    """

    BOOT_MODES = frozenset({Mode.RECOVERY, Mode.DFU})

    def __init__(self, world: SimWorld) -> None:
        self.world = world
        self._unsubscribe: Callable[[], None] = lambda: None

    def start(self, wake: Callable[[], None]) -> None:
        def on_event(event: UsbEvent) -> None:
            if event.device.mode in self.BOOT_MODES:
                wake()
        self._unsubscribe = self.world.subscribe(on_event)

    def stop(self) -> None:
        self._unsubscribe()
