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


@dataclass(frozen=True)
class Scan:
    phones: list[UsbPhone]
    problems: list[str]  # one line per phone whose strings cannot be read (udev permissions)
    busy_ports: frozenset[str] = frozenset()  # a phone there was re-enumerating: still there


class UsbScanner:
    """Scans the bus; a phone's serial is read once per enumeration (bus, address, product).

    Reading strings is a control transfer to the phone; once per enumeration keeps the scan
    off phones that are busy being restored.
    """

    def __init__(self, backend: object | None = None) -> None:
        self.backend = backend
        self._serials: dict[tuple[int, int, int], str] = {}

    def scan(self) -> Scan:
        devices = self._find()
        phones, problems, busy = [], [], set()
        serials: dict[tuple[int, int, int], str] = {}
        for device in devices:
            mode = _mode(device.idProduct)
            if mode is None:
                continue
            path = port_path(device.bus, device.port_numbers)
            key = (device.bus, device.address, device.idProduct)
            try:
                serial = self._serials.get(key)
                if serial is None:
                    serial = device.serial_number or ""
            except (ValueError, usb.core.USBError, NotImplementedError) as error:
                if not self._still_there(key):
                    # Re-enumerating (a DFU reset, a restore stage): gone between the listing and
                    # the read, which pyusb reports as it does a permission problem ("no langid").
                    log.debug("USB port %s: phone re-enumerating during the scan", path)
                    busy.add(path)
                    continue
                # No langid / access denied: typically missing udev rules for this product id.
                problems.append(f"USB port {path}: cannot read the phone's serial "
                                f"(idProduct {device.idProduct:#06x}): {error}; check udev permissions")
                continue
            serials[key] = serial
            phones.append(UsbPhone(path, mode, serial, device.bus, device.address))
        self._serials = serials  # only what is on the bus now: addresses are reused
        return Scan(phones, problems, frozenset(busy))

    def _find(self) -> list[usb.core.Device]:
        try:
            return list(usb.core.find(find_all=True, idVendor=APPLE_VENDOR_ID, backend=self.backend))
        except usb.core.NoBackendError:
            raise UsbUnavailable("NO LIBUSB", "no libusb found (install libusb-1.0-0)") from None
        except usb.core.USBError as error:
            raise UsbUnavailable("USB ERROR", f"cannot list USB devices: {error}") from None

    def _still_there(self, key: tuple[int, int, int]) -> bool:
        return any((d.bus, d.address, d.idProduct) == key for d in self._find())


def scan(backend: object | None = None) -> Scan:
    """One look at the bus: every Apple phone plugged in, and what could not be read."""
    return UsbScanner(backend).scan()


def _mode(product_id: int) -> Mode | None:
    if product_id in DFU_PRODUCT_IDS:
        return Mode.DFU
    if product_id in RECOVERY_PRODUCT_IDS:
        return Mode.RECOVERY
    if product_id in NORMAL_PRODUCT_IDS:
        return Mode.NORMAL
    return None
