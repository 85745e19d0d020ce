"""Apple phones on the USB bus, seen through pyusb: mode, serial string, physical port.

The port path (bus and ``port_numbers``, as sysfs spells it: ``1-1.3``) is what
identifies a hub port; usbmuxd's LocationID is ``bus << 16 | address`` on
Linux and changes every time a phone re-enumerates.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import usb.core

from hw.phones import Mode

log = logging.getLogger(__name__)

APPLE_VENDOR_ID = 0x05AC
DFU_PRODUCT_IDS = frozenset({0x1227, 0x1222})  # DFU, legacy WTF
RECOVERY_PRODUCT_IDS = frozenset(range(0x1280, 0x1284))
NORMAL_PRODUCT_IDS = frozenset(range(0x1290, 0x12B0))  # what usbmuxd claims for iOS devices


class UsbUnavailable(Exception):
    """libusb is missing or the bus cannot be read; ``fault`` is the display text."""

    def __init__(self, fault: str, detail: str) -> None:
        super().__init__(f"{fault}: {detail}")
        self.fault = fault


@dataclass(frozen=True)
class UsbPhone:
    port_path: str
    mode: Mode
    serial: str  # iSerialNumber: UDID without dash (normal) or the iBoot string
    bus: int
    address: int

    @property
    def location_id(self) -> int:
        """What usbmuxd on Linux calls LocationID for this enumeration."""
        return self.bus << 16 | self.address


def port_path(bus: int, port_numbers: tuple[int, ...] | None) -> str:
    return f"{bus}-{'.'.join(map(str, port_numbers or ()))}"


def scan(backend: object | None = None) -> tuple[list[UsbPhone], list[str]]:
    """Every Apple phone plugged in, and one line per phone whose strings can't be read."""
    try:
        devices = list(usb.core.find(find_all=True, idVendor=APPLE_VENDOR_ID, backend=backend))
    except usb.core.NoBackendError:
        raise UsbUnavailable("NO LIBUSB", "no libusb found (install libusb-1.0-0)") from None
    except usb.core.USBError as error:
        raise UsbUnavailable("USB ERROR", f"cannot list USB devices: {error}") from None
    phones, problems = [], []
    for device in devices:
        mode = _mode(device.idProduct)
        if mode is None:
            continue
        path = port_path(device.bus, device.port_numbers)
        try:
            serial = device.serial_number or ""
        except (ValueError, usb.core.USBError, NotImplementedError) as error:
            # No langid / access denied: typically missing udev rules for this product id.
            problems.append(f"USB port {path}: cannot read the phone's serial "
                            f"(idProduct {device.idProduct:#06x}): {error}; check udev permissions")
            continue
        phones.append(UsbPhone(path, mode, serial, device.bus, device.address))
    return phones, problems


def _mode(product_id: int) -> Mode | None:
    if product_id in DFU_PRODUCT_IDS:
        return Mode.DFU
    if product_id in RECOVERY_PRODUCT_IDS:
        return Mode.RECOVERY
    if product_id in NORMAL_PRODUCT_IDS:
        return Mode.NORMAL
    return None
