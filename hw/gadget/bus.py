"""The simulated world's phones on a real kernel's USB bus: one dummy UDC per hub port.

``hw.sim.world.SimWorld`` stays the truth about which phone is where and in which mode (the
simulated iBoot and restore move phones between modes in it, as they do for the pyusb
simulator); this module mirrors every enumeration onto the port's gadget, so the kernel, udev,
usbmuxd and libusb meet the phone as they would meet an iPhone:

- iOS and the restore ramdisk: usbmuxd's interface (class ff/fe/02, one bulk pair), spoken by
  ``hw.gadget.usbmux_device`` and bridged to the phone's simulated daemons (``hw.sim.device``);
- recovery and DFU: iBoot's and SecureROM's control requests, answered by the same code as the
  pyusb simulator's (``hw.sim.usb_backend.iboot_request``), and recovery's bulk upload endpoint.

Strings: configfs numbers the gadget's strings 1 manufacturer, 2 product, 3 serial. A real phone
in recovery or DFU has its nonces at index 1 (pymobiledevice3 and libirecovery read index 1
whatever iManufacturer says) and its serial string at 4, so here the nonces take the
manufacturer's place; readers that follow iSerialNumber (usbmuxd, pyusb, the station) see no
difference.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from usb.core import USBError

from hw.gadget import functionfs
from hw.gadget.configfs import PortGadget
from hw.gadget.functionfs import Event, Interface
from hw.gadget.usbmux_device import MuxDevice
from hw.sim.device import Handler, SimDevice, serve_accepted
from hw.sim.iboot import iboot_of, nonces_of
from hw.sim.loop import BackgroundLoop
from hw.sim.phone import USBMUX_MODES, Mode
from hw.sim.usb_backend import PRODUCT_IDS, iboot_request, string_table
from hw.sim.world import SimWorld, UsbArrived, UsbDevice, UsbEvent, UsbLeft

logger = logging.getLogger(__name__)

MUX_INTERFACE = Interface(0xFF, 0xFE, 0x02, (0x81, 0x02))  # usbmuxd usb.h INTERFACE_CLASS/SUBCLASS/PROTOCOL
# Uploads go to bulk OUT EP 0x04 (pymobiledevice3 irecv.py send_buffer, libirecovery). The UDC,
# not the function, numbers endpoints: dummy_hcd's bulk OUT ones come as 2, 7, 12, 1, then its
# generic ones count 1, 2, 3, 4 (dummy_hcd.c ep_info, epautoconf.c usb_ep_autoconfig_ss), so
# the 8th is the host's 0x04 and the host skips the repeated numbers (config.c "duplicate
# endpoint"). FunctionFS's VIRTUAL_ADDR, meant to keep a descriptor's own address, fails on
# Linux 6.1: "config_ep_by_speed(ep2out-bulk) returned -5", and the host "can't set config #1".
RECOVERY_INTERFACE = Interface(0xFF, 0xFF, 0x51, tuple(range(0x01, 0x09)))
DFU_INTERFACE = Interface(0xFE, 0x01, 0x00)
READ_SIZE = 1 << 16
UPLOAD_PIECE = 0x8000  # what pymobiledevice3 and libirecovery write at a time


class _Face:
    """One FunctionFS function of a port, open for the whole run, with its ep0 reader."""

    def __init__(self, port: "_Port", face: str, interface: Interface, flags: int) -> None:
        self.port = port
        self.face = face
        mount = port.gadget.mounts[face]
        self.ep0 = os.open(mount / "ep0", os.O_RDWR)
        os.write(self.ep0, functionfs.descriptors([interface], flags))
        os.write(self.ep0, functionfs.no_strings())
        self.endpoints = [os.open(mount / name, os.O_RDWR) for name in functionfs.endpoint_files(interface)]
        threading.Thread(target=self._events, name=f"{port.name}-{face}-ep0", daemon=True).start()

    def _events(self) -> None:
        while True:
            try:
                data = os.read(self.ep0, 4 * functionfs.EVENT.size)
            except OSError as error:
                if error.errno == errno.EINTR:
                    continue
                logger.debug("%s %s ep0: %s", self.port.name, self.face, error)
                return
            for event in functionfs.events(data):
                logger.debug("%s %s: %s", self.port.name, self.face, event.name)
                self.port.event(self, event)


class _Port:
    """One hub port: its gadget, and the enumeration shown on it now."""

    def __init__(self, name: str, gadget: PortGadget, world: SimWorld, loop: BackgroundLoop) -> None:
        self.name = name
        self.gadget = gadget
        self.world = world
        self.loop = loop
        self.device: UsbDevice | None = None
        self.mux: MuxDevice | None = None
        self.sim: SimDevice | None = None
        self.faces = {
            "mux": _Face(self, "mux", MUX_INTERFACE, 0),
            "recovery": _Face(self, "recovery", RECOVERY_INTERFACE, functionfs.ALL_CTRL_RECIP),
            "dfu": _Face(self, "dfu", DFU_INTERFACE, functionfs.ALL_CTRL_RECIP),
        }
        mux_in, mux_out = self.faces["mux"].endpoints
        self._mux_in = mux_in
        threading.Thread(target=self._read_mux, args=(mux_out,), name=f"{name}-mux-out", daemon=True).start()
        for number, endpoint in enumerate(self.faces["recovery"].endpoints, 1):
            threading.Thread(target=self._read_uploads, args=(endpoint,), name=f"{name}-recovery-out{number}",
                             daemon=True).start()

    # -- enumerations ---------------------------------------------------------

    def show(self, device: UsbDevice) -> None:
        self.hide()
        phone = device.phone
        self.device = device
        with self.world.lock:
            strings = string_table(device, nonces_of(self.world, phone))
        if device.mode in USBMUX_MODES:
            self.sim = SimDevice(device, self.world)
            self.mux = MuxDevice(f"{self.name} {phone.serial}", self._send_mux, self._open_port)
            face, shown = "mux", (strings[1], strings[2], strings[3])
        else:  # the nonces (index 1 on a phone) where configfs puts the manufacturer (module docstring)
            face, shown = ("dfu" if device.mode is Mode.DFU else "recovery"), (strings[1], strings[3], strings[4])
        self.gadget.show(face, PRODUCT_IDS[device.mode], shown)
        logger.info("%s: %s in %s mode is on the bus", self.name, phone.serial, device.mode.value)

    def hide(self) -> None:
        if self.device is None:
            return
        self.gadget.hide()
        if self.mux is not None:
            self.mux.close()
        if self.sim is not None:
            self.loop.call(self.sim.close)
        logger.info("%s: %s left the bus", self.name, self.device.phone.serial)
        self.device, self.mux, self.sim = None, None, None

    # -- usbmuxd's interface --------------------------------------------------

    def _read_mux(self, endpoint: int) -> None:
        for data in _transfers(endpoint, READ_SIZE):
            mux = self.mux
            if mux is not None and data:
                mux.receive(data)

    def _send_mux(self, packet: bytes) -> None:
        os.write(self._mux_in, packet)

    def _open_port(self, port: int) -> socket.socket | None:
        sim = self.sim
        handler = sim.handler(port) if sim is not None else None
        if sim is None or handler is None:
            return None
        return bridge(sim, handler, self.loop)

    # -- iBoot and SecureROM --------------------------------------------------

    def event(self, face: _Face, event: Event) -> None:
        if event.kind in (functionfs.DISABLE, functionfs.UNBIND) and face.face == "mux" and self.mux is not None:
            self.mux.close()
        if event.kind != functionfs.SETUP:
            return
        device = self.device
        try:
            if device is None or device.mode in USBMUX_MODES:
                raise USBError("no iBoot here", errno=errno.EPIPE)
            data = b"" if event.is_in else os.read(face.ep0, event.length)
            answer = iboot_request(self.world, device, event.request_type, event.request, event.value, data)
            if event.is_in:
                os.write(face.ep0, bytes(answer)[:event.length] if isinstance(answer, bytes) else b"")
        except USBError as error:
            logger.debug("%s: request %#04x/%d stalled: %s", self.name, event.request_type, event.request, error)
            _stall(face.ep0, event)
        except OSError as error:  # EIDRM: the host gave up on it, or the phone left the bus meanwhile
            logger.debug("%s: request %#04x/%d cancelled: %s", self.name, event.request_type, event.request,
                         error.strerror)

    def _read_uploads(self, endpoint: int) -> None:
        """Whatever the host writes to any of recovery's OUT endpoints goes to iBoot with the
        address the host wrote to: it takes 0x04's and refuses the others', as a phone would."""
        for data in _transfers(endpoint, UPLOAD_PIECE):
            device = self.device
            if device is None or device.mode is not Mode.RECOVERY:
                continue
            with self.world.lock:
                try:
                    iboot_of(self.world, device.phone).bulk_out(device, functionfs.endpoint_address(endpoint), data)
                except USBError as error:
                    logger.info("%s: upload refused: %s", self.name, error)


def _transfers(endpoint: int, size: int) -> Iterator[bytes]:
    """What the host sends to an OUT endpoint, a transfer at a time. Reads fail while the
    function is not enabled, or once the host has gone: then wait for the next enumeration."""
    while True:
        try:
            yield os.read(endpoint, size)
        except OSError:
            time.sleep(0.05)


def bridge(sim: SimDevice, handler: Handler, loop: BackgroundLoop) -> socket.socket:
    """A socket to ``handler``, which serves it as an accepted connection (``serve_accepted``),
    as the simulated usbmuxd's sockets are."""
    ours, theirs = socket.socketpair()
    loop.call(lambda: asyncio.ensure_future(
        serve_accepted(theirs, lambda reader, writer: sim.serve(handler, reader, writer))))
    return ours


def _stall(ep0: int, event: Event) -> None:
    """FunctionFS stalls a request answered in the wrong direction."""
    try:
        if event.is_in:
            os.read(ep0, 0)
        else:
            os.write(ep0, b"")
    except OSError:
        pass  # EL2HLT: the stall happened


class KernelBus:
    """Mirrors the world's enumerations onto dummy UDCs, one port path per UDC, in order."""

    def __init__(self, world: SimWorld, udcs: dict[tuple[int, ...], str], mount_root: Path) -> None:
        self.world = world
        self.loop = BackgroundLoop("gadget-daemons")
        self._events: queue.SimpleQueue[UsbEvent | None] = queue.SimpleQueue()
        self._ports: dict[tuple[int, ...], _Port] = {}
        self._udcs = udcs
        self._mount_root = mount_root
        self._thread: threading.Thread | None = None
        self._unsubscribe = lambda: None

    def start(self) -> None:
        self.loop.start()
        for index, (path, udc) in enumerate(sorted(self._udcs.items())):
            gadget = PortGadget(f"iphone{index + 1}", udc, self._mount_root)
            gadget.create()
            self._ports[path] = _Port(gadget.name, gadget, self.world, self.loop)
        self._thread = threading.Thread(target=self._apply, name="gadget-bus", daemon=True)
        self._thread.start()
        # World callbacks hold its lock and must not block: the gadget work happens on our thread.
        self._unsubscribe = self.world.subscribe(self._events.put)

    def _apply(self) -> None:
        while (event := self._events.get()) is not None:
            port = self._ports.get(event.device.port_path)
            if port is None:
                logger.error("no UDC for port %s", event.device.port_path)
                continue
            try:
                if isinstance(event, UsbArrived):
                    port.show(event.device)
                elif isinstance(event, UsbLeft) and port.device is event.device:
                    port.hide()
            except OSError as error:
                logger.error("%s: %s", port.name, error)

    def stop(self) -> None:
        self._unsubscribe()
        self._events.put(None)
        if self._thread is not None:
            self._thread.join()
        for port in self._ports.values():
            port.hide()  # off the bus; configfs is cleared by the next run (PortGadget.create)
        self.loop.stop()
