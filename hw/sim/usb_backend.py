"""A pyusb backend presenting the simulated phones on their buses and hub ports.

``usb.core.find(find_all=True, backend=SimUsbBackend(world))`` lists every enumerated
phone with ``bus``, ``address`` and ``port_numbers``. Normal mode is 05ac:12a8 with the
UDID (no dash) as serial; recovery 05ac:1281 and DFU 05ac:1227 carry the iBoot serial
string (DFU with ``SRTG``, recovery with ``SRNM``) and ``NONC``/``SNON`` in string 1, so
pymobiledevice3's ``IRecv`` accepts them. What DFU and recovery phones do with the transfers
(SecureROM's DFU download, iBoot's commands and uploads, the re-enumerations of a restore) is the
phone's :class:`hw.sim.iboot.IBoot`; this module routes each transfer to it.

A device handle outlives its enumeration: once the phone re-enumerates, calls on the old
one fail with ENODEV, as libusb does.
"""
from __future__ import annotations

import logging
from array import array
from dataclasses import dataclass
from types import SimpleNamespace

import usb.backend

from hw.sim import iboot
from hw.sim.iboot import IBoot, iboot_of
from hw.sim.phone import USBMUX_MODES, Mode, SimPhone
from hw.sim.world import SimWorld, UsbDevice

logger = logging.getLogger(__name__)

APPLE_VENDOR_ID = 0x05AC
# The restore ramdisk shows as the same iPhone product as iOS (PROTOCOLS.md 3.1).
PRODUCT_IDS = {Mode.NORMAL: 0x12A8, Mode.RESTORE: 0x12A8, Mode.RECOVERY: 0x1281, Mode.DFU: 0x1227}
LANGID_EN_US = 0x0409
SPEED_HIGH, SPEED_SUPER = 3, 4  # libusb_speed LIBUSB_SPEED_HIGH, LIBUSB_SPEED_SUPER
VANISH_REBOOT_S = 0.3  # how long a phone caught mid-re-enumeration stays off the bus

GET_DESCRIPTOR = 6
DESC_STRING = 3
# Control requests by (bmRequestType, bRequest): libirecovery irecv_send_command/irecv_send_buffer,
# pymobiledevice3 irecv.py IRecv.send_command/getenv/send_buffer.
IBOOT_COMMAND = 0x40  # vendor OUT, bRequest 0 (1 for "go"/"bootx"), the command and a NUL
IBOOT_ANSWER = 0xC0  # vendor IN, bRequest 0: the answer to the last getenv
IBOOT_UPLOAD = 0x41  # vendor OUT to the interface, bRequest 0: an upload starts
DFU_OUT, DFU_IN = 0x21, 0xA1  # class requests to the interface: DFU, or the recovery "poke" 0x21/1


def iboot_serial(phone: SimPhone, mode: Mode) -> str:
    """The iSerialNumber iBoot/SecureROM report: single spaces, hex, bracketed strings; SRTG only in DFU."""
    head = f"SDOM:01 CPID:{phone.chip_id:04X} CPRV:11 CPFM:03 SCEP:01 BDID:{phone.board_id:02X} ECID:{phone.ecid:016X}"
    if mode is Mode.DFU:
        return f"{head} IBFL:3C SRTG:[{phone.securerom_tag}]"
    return f"{head} IBFL:3D SRNM:[{phone.serial}]"


def nonce_string(ap_nonce: bytes, sep_nonce: bytes) -> str:
    return f"NONC:{ap_nonce.hex().upper()} SNON:{sep_nonce.hex().upper()}"


def string_table(usb_device: UsbDevice, nonces: tuple[bytes, bytes] | None = None) -> dict[int, str]:
    """String descriptors by index (indices as public lsusb captures show them); ``nonces`` = iBoot's now."""
    phone, mode = usb_device.phone, usb_device.mode
    if mode in USBMUX_MODES:
        return {1: "Apple Inc.", 2: "iPhone", 3: phone.udid.replace("-", "")}
    product = "Apple Mobile Device (DFU Mode)" if mode is Mode.DFU else "Apple Mobile Device (Recovery Mode)"
    ap_nonce, sep_nonce = nonces or (phone.ap_nonce, phone.sep_nonce)
    return {1: nonce_string(ap_nonce, sep_nonce), 2: "Apple Inc.", 3: product, 4: iboot_serial(phone, mode)}


def _endpoint(address: int) -> SimpleNamespace:
    return SimpleNamespace(bLength=7, bDescriptorType=5, bEndpointAddress=address, bmAttributes=2,
                           wMaxPacketSize=512, bInterval=0, bRefresh=0, bSynchAddress=0, extra_descriptors=[])


def _interface(number: int, alt: int, cls: int, sub: int, proto: int, endpoints: list[int]) -> SimpleNamespace:
    return SimpleNamespace(bLength=9, bDescriptorType=4, bInterfaceNumber=number, bAlternateSetting=alt,
                           bNumEndpoints=len(endpoints), bInterfaceClass=cls, bInterfaceSubClass=sub,
                           bInterfaceProtocol=proto, iInterface=0, extra_descriptors=[],
                           endpoints=[_endpoint(a) for a in endpoints])


def _interfaces(mode: Mode) -> list[list[SimpleNamespace]]:
    """Per interface, its alternate settings: normal = PTP + usbmux; recovery = iBoot's two; DFU = one, no endpoints.

    Recovery's upload endpoint 0x04 is in interface 1's default setting: pyusb resolves an endpoint
    only in the active alternate setting (``_ResourceManager.get_interface_and_endpoint``) and
    pymobiledevice3 selects 1/1 only above 0x1281 (``IRecv._reinit``), so on a 0x1281 iBoot it could
    not upload at all otherwise; 1/1, which libirecovery selects there, has it too.
    """
    if mode in USBMUX_MODES:
        return [[_interface(0, 0, 0x06, 0x01, 0x01, [0x81, 0x02, 0x83])], [_interface(1, 0, 0xFF, 0xFE, 0x02, [0x84, 0x05])]]
    if mode is Mode.RECOVERY:
        return [[_interface(0, 0, 0xFF, 0xFF, 0x51, [])],
                [_interface(1, 0, 0xFF, 0xFF, 0x51, [0x04, 0x85]), _interface(1, 1, 0xFF, 0xFF, 0x51, [0x04, 0x85])]]
    return [[_interface(0, 0, 0xFE, 0x01, 0x00, [])]]


@dataclass
class _Handle:
    """An open device (what outlives one transfer is the phone's, in its ``IBoot``)."""

    device: UsbDevice
    configuration: int = 1


class SimUsbBackend(usb.backend.IBackend):
    def __init__(self, world: SimWorld) -> None:
        super().__init__()
        self.world = world

    def enumerate_devices(self) -> list[UsbDevice]:
        return self.world.usb_devices()

    def get_parent(self, dev: UsbDevice) -> None:
        return None

    def get_device_descriptor(self, dev: UsbDevice) -> SimpleNamespace:
        strings = string_table(dev)
        normal = dev.mode in USBMUX_MODES
        return SimpleNamespace(
            bLength=18, bDescriptorType=1, bcdUSB=0x0300 if dev.superspeed else 0x0200, bDeviceClass=0, bDeviceSubClass=0, bDeviceProtocol=0,
            bMaxPacketSize0=64, idVendor=APPLE_VENDOR_ID, idProduct=PRODUCT_IDS[dev.mode],
            bcdDevice=0x1511 if normal else 0x0000,
            iManufacturer=1 if normal else 2, iProduct=2 if normal else 3,
            iSerialNumber=max(strings), bNumConfigurations=1 if not normal else 4,
            address=dev.address, bus=dev.bus, port_number=dev.port_path[-1], port_numbers=dev.port_path,
            speed=SPEED_SUPER if dev.superspeed else SPEED_HIGH,
        )

    def get_configuration_descriptor(self, dev: UsbDevice, config: int) -> SimpleNamespace:
        if config >= self.get_device_descriptor(dev).bNumConfigurations:
            raise IndexError(config)
        interfaces = _interfaces(dev.mode)
        return SimpleNamespace(bLength=9, bDescriptorType=2, wTotalLength=9, bNumInterfaces=len(interfaces),
                               bConfigurationValue=config + 1, iConfiguration=0, bmAttributes=0xC0, bMaxPower=250,
                               extra_descriptors=[])

    def get_interface_descriptor(self, dev: UsbDevice, intf: int, alt: int, config: int) -> SimpleNamespace:
        return _interfaces(dev.mode)[intf][alt]  # IndexError ends pyusb's walk over alternate settings

    def get_endpoint_descriptor(self, dev: UsbDevice, ep: int, intf: int, alt: int, config: int) -> SimpleNamespace:
        return _interfaces(dev.mode)[intf][alt].endpoints[ep]

    def open_device(self, dev: UsbDevice) -> _Handle:
        self._check(dev)
        return _Handle(dev)

    def close_device(self, dev_handle: _Handle) -> None:
        pass

    def set_configuration(self, dev_handle: _Handle, config_value: int) -> None:
        self._check(dev_handle.device)
        dev_handle.configuration = config_value

    def get_configuration(self, dev_handle: _Handle) -> int:
        self._check(dev_handle.device)
        return dev_handle.configuration

    def set_interface_altsetting(self, dev_handle: _Handle, intf: int, altsetting: int) -> None:
        self._check(dev_handle.device)

    def claim_interface(self, dev_handle: _Handle, intf: int) -> None:
        self._check(dev_handle.device)

    def release_interface(self, dev_handle: _Handle, intf: int) -> None:
        pass

    def is_kernel_driver_active(self, dev_handle: _Handle, intf: int) -> bool:
        return False

    def detach_kernel_driver(self, dev_handle: _Handle, intf: int) -> None:
        pass

    def attach_kernel_driver(self, dev_handle: _Handle, intf: int) -> None:
        pass

    def clear_halt(self, dev_handle: _Handle, ep: int) -> None:
        self._check(dev_handle.device)

    def reset_device(self, dev_handle: _Handle) -> None:
        """A port reset re-enumerates the phone (new address); in DFU after a download it boots the iBSS."""
        dev = dev_handle.device
        with self.world.lock:
            self._check(dev)
            if dev.mode in USBMUX_MODES:
                self.world.reboot(dev.phone, dev.mode, delay=0.05)
            else:
                self._iboot(dev).reset(dev)

    def bulk_write(self, dev_handle: _Handle, ep: int, intf: int, data: array, timeout: int) -> int:
        dev = dev_handle.device
        with self.world.lock:
            self._check(dev)
            if dev.mode is not Mode.RECOVERY:
                raise iboot.stall()
            return self._iboot(dev).bulk_out(dev, ep, data.tobytes())

    def ctrl_transfer(self, dev_handle: _Handle, bmRequestType: int, bRequest: int, wValue: int, wIndex: int,
                      data: array, timeout: int) -> int:
        dev = dev_handle.device
        self._check(dev)
        if bmRequestType == 0x80 and bRequest == GET_DESCRIPTOR and wValue >> 8 == DESC_STRING:
            self._maybe_vanish(dev)
            return _fill(data, self._string_descriptor(dev, wValue & 0xFF, wIndex))
        if dev.mode in USBMUX_MODES:
            raise iboot.stall()
        answer = iboot_request(self.world, dev, bmRequestType, bRequest, wValue, data.tobytes())
        return _fill(data, answer) if isinstance(answer, bytes) else answer

    def _iboot(self, dev: UsbDevice) -> IBoot:
        return iboot_of(self.world, dev.phone)

    def _string_descriptor(self, dev: UsbDevice, index: int, langid: int) -> bytes:
        if index == 0:
            return bytes([4, DESC_STRING]) + LANGID_EN_US.to_bytes(2, "little")
        with self.world.lock:
            nonces = iboot.nonces_of(self.world, dev.phone)
        text = string_table(dev, nonces).get(index)
        if text is None or langid != LANGID_EN_US:
            raise iboot.stall()
        encoded = text.encode("utf-16-le")[:252]
        return bytes([len(encoded) + 2, DESC_STRING]) + encoded

    def _maybe_vanish(self, dev: UsbDevice) -> None:
        """A phone caught re-enumerating (a DFU reset, a restore stage) between the bus listing and
        the read: the read fails as on a device that is gone, not as on one we may not open."""
        phone = dev.phone
        with self.world.lock:
            if phone.vanish_on_scan <= 0:
                return
            phone.vanish_on_scan -= 1
            if dev.mode not in USBMUX_MODES:
                self._iboot(dev).keep_stage(dev)
            self.world.reboot(phone, dev.mode, delay=VANISH_REBOOT_S)
        raise iboot.gone()

    def _check(self, dev: UsbDevice) -> None:
        if not self.world.is_present(dev):
            raise iboot.gone()


def iboot_request(world: SimWorld, dev: UsbDevice, request_type: int, request: int, value: int,
                  data: bytes) -> bytes | int:
    """A vendor or class control request to a phone in DFU or recovery (this backend's, and the
    kernel gadget's in ``hw.gadget``): an IN request's data stage, or how many bytes an OUT
    request took. Anything iBoot or SecureROM does not take stalls (raises ``USBError``)."""
    with world.lock:
        if not world.is_present(dev):  # the phone may have left while this thread waited for the lock
            raise iboot.gone()
        phone_iboot = iboot_of(world, dev.phone)
        if dev.mode is Mode.DFU and request_type == DFU_OUT:
            return phone_iboot.dfu_out(dev, request, value, data)
        if dev.mode is Mode.DFU and request_type == DFU_IN:
            return phone_iboot.dfu_in(dev, request)
        if dev.mode is Mode.RECOVERY and request_type == IBOOT_COMMAND and request in (0, 1):  # NUL-terminated
            phone_iboot.command(dev, data.split(b"\0", 1)[0].decode(errors="replace"))
            return len(data)
        if dev.mode is Mode.RECOVERY and request_type == IBOOT_ANSWER and request == 0:
            return phone_iboot.answer(dev)
        if dev.mode is Mode.RECOVERY and request_type == IBOOT_UPLOAD and request == 0:
            return phone_iboot.start_upload(dev)
        if dev.mode is Mode.RECOVERY and request_type == DFU_OUT and request == iboot.DFU_DNLOAD:
            return phone_iboot.poke(dev)
    raise iboot.stall()


def _fill(data: array, payload: bytes) -> int:
    count = min(len(payload), len(data) * data.itemsize)
    data[:count] = array("B", payload[:count])
    return count

