"""The whole simulated bench in one context manager: world, usbmuxd, activation server, USB backend.

It sets nothing process-wide by itself. A caller in this process passes ``usb_backend`` to
pyusb and points pymobiledevice3 with ``USBMUXD_SOCKET_ADDRESS`` and ``point_activation_at``;
a child process (a restore worker) gets the same addresses, and the USB bus through its
bridge (``hw.sim.usb_remote``), from ``environment()``.

The hub is a USB 3 hub on root port 1: ``1-1.N`` on the USB 2 bus, ``2-1.N`` on its
SuperSpeed companion, linked in a sysfs tree under ``sysfs_root``. With
``usbmuxd_on_demand`` usbmuxd lives as on Debian: only while a phone runs iOS.
"""
from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Self

from hw.sim.activation_server import ACTIVATION_URL_ENV, ActivationServer
from hw.sim.phone import USBMUX_MODES, SimPhone
from hw.sim.udev import SysfsDevices, UsbmuxdOnDemand, WorldHotplug, write_usb3_hub
from hw.sim.usb_backend import SimUsbBackend
from hw.sim.usb_remote import UsbBridge
from hw.sim.usbmuxd import SimUsbmuxd
from hw.sim.world import SimWorld

MAX_UNIX_PATH = 104  # sun_path is 108 bytes on Linux, 104 on macOS
USB2_BUS, USB3_BUS, HUB_PORT = 1, 2, 1


class SimulatedBench:
    def __init__(self, phones: Iterable[SimPhone], state_dir: Path, *, reboot_seconds: float = 0.5,
                 usbmuxd_on_demand: bool = False, hub_ports: int = 16) -> None:
        self.state_dir = Path(state_dir)
        self._phones = list(phones)  # the bench's own: its world keeps them when they are unplugged
        self.world = SimWorld(self._phones, reboot_seconds=reboot_seconds, superspeed={USB2_BUS: USB3_BUS})
        self.sysfs_root = self.state_dir / "sysfs"
        self.sysfs = SysfsDevices(self.world, self.sysfs_root)
        self.hotplug = WorldHotplug(self.world)  # for the phone layer: udev's events on this bus
        self.hub_ports = hub_ports
        socket_path = self.state_dir / "usbmuxd"
        if len(str(socket_path)) > MAX_UNIX_PATH:
            raise ValueError(f"state_dir is too long for a unix socket path: {socket_path}")
        self.usbmuxd = SimUsbmuxd(self.world, socket_path, pair_record_dir=self.state_dir / "lockdown")
        self.activation = ActivationServer(self.world)
        self.usb_backend = SimUsbBackend(self.world)
        self.usb_bridge: UsbBridge | None = None  # while the bench runs
        self._on_demand = UsbmuxdOnDemand(self.world, self.usbmuxd) if usbmuxd_on_demand else None

    @property
    def usbmuxd_address(self) -> str:
        return self.usbmuxd.address

    @property
    def activation_url(self) -> str:
        return self.activation.url

    def environment(self) -> dict[str, str]:
        """What a child process needs to reach this bench."""
        bridge = self.usb_bridge.environment if self.usb_bridge is not None else {}
        return {"USBMUXD_SOCKET_ADDRESS": self.usbmuxd_address, ACTIVATION_URL_ENV: self.activation_url,
                **bridge}

    def settle(self, timeout: float = 5.0) -> None:
        """Until udev has started usbmuxd for the phones running iOS (on demand only)."""
        deadline = time.monotonic() + timeout
        while self._on_demand is not None and not self.usbmuxd.running and time.monotonic() < deadline:
            if not any(d.mode in USBMUX_MODES for d in self.world.usb_devices()):
                return
            time.sleep(0.01)

    def __enter__(self) -> Self:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        write_usb3_hub(self.sysfs_root, USB2_BUS, USB3_BUS, HUB_PORT, self.hub_ports)
        try:
            self.sysfs.start()  # first: the kernel's directory is there before usbmuxd hears of a phone
            for phone in self._phones:
                self.world.attach(phone)
            if self._on_demand is not None:
                self._on_demand.start()
            else:
                self.usbmuxd.start()
            self.activation.start()
            self.usb_bridge = UsbBridge(self.usb_backend, self.state_dir / "usb")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.usb_bridge is not None:
            self.usb_bridge.close()
            self.usb_bridge = None
        self.activation.stop()
        if self._on_demand is not None:
            self._on_demand.stop()
        self.usbmuxd.stop()
        self.world.close()
        self.sysfs.stop()
