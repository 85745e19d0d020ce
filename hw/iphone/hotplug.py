"""udev's hotplug events for phones in recovery and DFU: the layer scans the bus at once.

pyusb has no hotplug callbacks, so the layer polls the bus every ``USB_POLL_S``; a recovery or
DFU phone (which usbmuxd never announces) would otherwise wait for that poll. udev's netlink
events (pyudev ``Monitor``, source "udev": sent after udev's rules ran, so the phone's
permissions are set when the scan reads it) end that wait. Normal-mode phones are left to
usbmuxd's announcement (and sysfs): a scan set off by them once lost a phone that usbmuxd was
preflighting (docs/real-stack.md item 13). Without pyudev, libudev or a netlink socket the poll
alone finds phones, as before.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from hw.iphone.usb_scan import APPLE_VENDOR_ID, DFU_PRODUCT_IDS, RECOVERY_PRODUCT_IDS

log = logging.getLogger(__name__)

BOOT_PRODUCT_IDS = DFU_PRODUCT_IDS | RECOVERY_PRODUCT_IDS


class Hotplug(Protocol):
    def start(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` (thread-safe) whenever a recovery or DFU phone comes or goes."""

    def stop(self) -> None: ...


class UdevHotplug:
    def __init__(self) -> None:
        self._monitor: object | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, wake: Callable[[], None]) -> None:
        try:
            import pyudev  # libudev through ctypes: absent on a laptop without systemd
            monitor = pyudev.Monitor.from_netlink(pyudev.Context())
            monitor.filter_by(subsystem="usb", device_type="usb_device")
            monitor.start()
        except (ImportError, OSError) as error:
            log.info("no udev hotplug events (%s): recovery and DFU phones are found by the USB poll", error)
            return
        loop = asyncio.get_running_loop()

        def readable() -> None:
            while (device := monitor.poll(timeout=0)) is not None:
                if is_boot_mode_phone(device.properties.get("PRODUCT", "")):
                    wake()

        loop.add_reader(monitor.fileno(), readable)
        self._monitor, self._loop = monitor, loop

    def stop(self) -> None:
        if self._monitor is not None and self._loop is not None:
            self._loop.remove_reader(self._monitor.fileno())  # type: ignore[attr-defined]
            self._monitor = None


def is_boot_mode_phone(product: str) -> bool:
    """The kernel's uevent PRODUCT (``5ac/1227/0``: vendor/product/bcdDevice in hex) of a recovery or DFU phone."""
    try:
        vendor, product_id = (int(part, 16) for part in product.split("/")[:2])
    except ValueError:
        return False
    return vendor == APPLE_VENDOR_ID and product_id in BOOT_PRODUCT_IDS
