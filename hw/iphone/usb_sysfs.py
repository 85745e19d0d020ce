"""Which port a phone is on, read from sysfs: no USB transfer to any phone.

The kernel reads a device's iSerialNumber once, when it enumerates it, and keeps it
(drivers/usb/core/hub.c ``usb_enumerate_device`` -> ``usb_cache_string``); sysfs shows it
as ``serial`` in the device's directory, named by its port path (``1-1.3``;
drivers/usb/core/sysfs.c). Reading it costs no control transfer, so it cannot disturb a
phone that usbmuxd is preflighting, which a pyusb string read can (docs/real-stack.md
item 13). The directory exists before udev, and so usbmuxd, hears of the device.
"""
from __future__ import annotations

from pathlib import Path

from hw.iphone.usb_topology import PORT_PATH, SYSFS_USB_DEVICES

APPLE_VENDOR = "05ac"  # sysfs writes idVendor as four hex digits


class UsbSysfs:
    def __init__(self, root: Path = SYSFS_USB_DEVICES) -> None:
        self.root = root

    def port_of(self, serial: str) -> str | None:
        """The port path of the Apple device whose serial string is ``serial`` (dashes ignored)."""
        wanted = serial.replace("-", "").upper()
        try:
            entries = list(self.root.iterdir())
        except OSError:
            return None
        for entry in entries:
            if PORT_PATH.match(entry.name) is None:
                continue  # root hubs (usb1) and interfaces (1-1.3:1.0)
            if _read(entry / "idVendor") == APPLE_VENDOR and _read(entry / "serial").upper() == wanted:
                return entry.name
        return None


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""  # gone between the listing and the read: unplugged
