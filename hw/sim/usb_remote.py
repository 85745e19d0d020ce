"""The simulated USB bus, reachable from restore workers in other processes.

A restore runs in a worker process of its own (hw.worker), while the
simulated phones live in the station's process (``SimWorld``). On a real station
libusb reaches the phones through the kernel from any process; here a bridge
does: ``UsbBridge`` serves a ``SimUsbBackend`` on a Unix socket, and
``RemoteUsbBackend`` is a pyusb backend in the worker that forwards each call.

The wire is ``multiprocessing.connection`` (message framing and HMAC
authentication from the standard library, rather than a protocol of our own).
Devices and handles cross as tokens, descriptors as plain namespaces; an IN
transfer's bytes come back and are copied into the caller's buffer, as libusb
fills it; a ``USBError`` comes back as one with its errno, so a handle to a phone
that re-enumerated fails with ENODEV in the worker exactly as it does in-process.
"""
from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import secrets
import socket
import threading
from array import array
from dataclasses import dataclass
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any

import usb.backend
from usb.core import USBError

from hw.sim.usb_backend import SimUsbBackend

log = logging.getLogger(__name__)

ADDRESS_ENV = "STATION_SIM_USB"  # where a worker finds the bridge
KEY_ENV = "STATION_SIM_USB_KEY"  # and the key that lets it in (hex)
# Exceptions a backend raises on purpose, as pyusb's libusb1 backend does (usb/backend/libusb1.py:
# IndexError past the last interface or setting, NotImplementedError for what it does not do).
PASSED_ON = (IndexError, ValueError, NotImplementedError)
# Calls a worker may make: pyusb's backend interface (usb/backend/__init__.py IBackend).
CALLS = frozenset({
    "enumerate_devices", "get_device_descriptor", "get_configuration_descriptor",
    "get_interface_descriptor", "get_endpoint_descriptor", "open_device", "close_device",
    "set_configuration", "get_configuration", "set_interface_altsetting", "claim_interface",
    "release_interface", "is_kernel_driver_active", "detach_kernel_driver", "attach_kernel_driver",
    "clear_halt", "reset_device", "bulk_write", "bulk_read", "intr_write", "intr_read", "ctrl_transfer",
})


@dataclass(frozen=True)
class Token:
    """A device or handle of the station's process, as a worker holds it."""

    number: int


class UsbBridge:
    """Serves the simulated bus on ``path`` until ``close``; one thread per connected worker."""

    def __init__(self, backend: SimUsbBackend, path: Path) -> None:
        self.backend = backend
        self.path = path
        self.key = secrets.token_bytes(32)
        path.unlink(missing_ok=True)
        self._listener = Listener(str(path), family="AF_UNIX", authkey=self.key)
        self._closed = False
        self._acceptor = threading.Thread(target=self._accept, name="sim-usb-bridge", daemon=True)
        self._acceptor.start()

    @property
    def environment(self) -> dict[str, str]:
        """What a worker needs in its environment to reach this bus."""
        return {ADDRESS_ENV: str(self.path), KEY_ENV: self.key.hex()}

    def close(self) -> None:
        self._closed = True
        # accept() does not return when the listening socket is closed under it: wake it.
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as wake:
            wake.connect(str(self.path))
        self._acceptor.join(5.0)
        self._listener.close()
        self.path.unlink(missing_ok=True)

    def _accept(self) -> None:
        while not self._closed:
            try:
                connection = self._listener.accept()
            except (OSError, EOFError, AuthenticationError):
                if self._closed:
                    return
                continue  # a client that failed authentication, or went away while connecting
            threading.Thread(target=self._serve, args=(connection,), name="sim-usb-client",
                             daemon=True).start()

    def _serve(self, connection: Connection) -> None:
        handed = _Handed()  # what this worker holds: it goes when the worker does
        with connection:
            while True:
                try:
                    name, args = connection.recv()
                except (EOFError, OSError):
                    return
                connection.send(self._answer(handed, name, args))

    def _answer(self, handed: _Handed, name: str, args: tuple[Any, ...]) -> tuple[str, Any]:
        if name not in CALLS:
            return "error", (f"no such call: {name}", None, None)
        try:
            args = tuple(handed.object(arg) if isinstance(arg, Token) else arg for arg in args)
            if name == "ctrl_transfer" and isinstance(args[5], int):  # IN: the length to read
                buffer = array("B", bytes(args[5]))
                count = self.backend.ctrl_transfer(*args[:5], buffer, args[6])
                return "ok", bytes(buffer[:count])
            if name in ("bulk_write", "intr_write", "ctrl_transfer"):
                args = tuple(array("B", arg) if isinstance(arg, bytes) else arg for arg in args)
            result = getattr(self.backend, name)(*args)
        except USBError as error:
            return "error", (error.strerror, error.errno, error.backend_error_code)
        except PASSED_ON as error:  # part of the backend interface: pyusb's walks end on IndexError
            return "raise", (type(error).__name__, str(error))
        if name == "enumerate_devices":  # devices and handles stay here; the worker gets tokens
            return "ok", [handed.token(device) for device in result]
        if name == "open_device":
            return "ok", handed.token(result)
        if name == "close_device":
            handed.drop(args[0])
        return "ok", result


class _Handed:
    """The devices and handles one worker holds tokens for, on its connection's thread.

    Kept for as long as the worker is connected (a device is one enumeration, a handle one
    ``open_device``), or a handle until it is closed: a bridge that kept all it ever handed
    out kept every phone that a station restored.
    """

    def __init__(self) -> None:
        self._objects: dict[int, object] = {}
        self._tokens: dict[int, Token] = {}  # id(object) -> its token, while the object is here
        self._numbers = itertools.count(1)

    def token(self, thing: object) -> Token:
        token = self._tokens.get(id(thing))
        if token is None or self._objects.get(token.number) is not thing:
            token = Token(next(self._numbers))
            self._objects[token.number] = thing
            self._tokens[id(thing)] = token
        return token

    def object(self, token: Token) -> object:
        thing = self._objects.get(token.number)
        if thing is None:  # a handle used after close_device: libusb's would be freed memory
            raise USBError("No such device (it may have been disconnected)", errno=errno.ENODEV)
        return thing

    def drop(self, thing: object) -> None:
        token = self._tokens.pop(id(thing), None)
        if token is not None:
            self._objects.pop(token.number, None)


class RemoteUsbBackend(usb.backend.IBackend):
    """pyusb's view of the bridge, in a worker: ``usb.core.find(backend=RemoteUsbBackend(...))``."""

    def __init__(self, address: str, key: bytes) -> None:
        self._connection = Client(address, family="AF_UNIX", authkey=key)
        self._lock = threading.Lock()  # one call at a time on the one connection

    @classmethod
    def from_environment(cls) -> RemoteUsbBackend | None:
        """The bridge named in this process's environment, or None on a real station."""
        address = os.environ.get(ADDRESS_ENV)
        return cls(address, bytes.fromhex(os.environ[KEY_ENV])) if address else None

    def _call(self, name: str, *args: Any) -> Any:
        with self._lock:
            self._connection.send((name, args))
            status, value = self._connection.recv()
        if status == "error":
            message, errno, code = value
            raise USBError(message, code, errno)
        if status == "raise":
            kind, message = value
            raise {cls.__name__: cls for cls in PASSED_ON}[kind](message)
        return value

    def enumerate_devices(self) -> list[Token]:
        return self._call("enumerate_devices")

    def get_parent(self, dev: Token) -> None:
        return None

    def get_device_descriptor(self, dev: Token) -> Any:
        return self._call("get_device_descriptor", dev)

    def get_configuration_descriptor(self, dev: Token, config: int) -> Any:
        return self._call("get_configuration_descriptor", dev, config)

    def get_interface_descriptor(self, dev: Token, intf: int, alt: int, config: int) -> Any:
        return self._call("get_interface_descriptor", dev, intf, alt, config)

    def get_endpoint_descriptor(self, dev: Token, ep: int, intf: int, alt: int, config: int) -> Any:
        return self._call("get_endpoint_descriptor", dev, ep, intf, alt, config)

    def open_device(self, dev: Token) -> Token:
        return self._call("open_device", dev)

    def close_device(self, dev_handle: Token) -> None:
        self._call("close_device", dev_handle)

    def set_configuration(self, dev_handle: Token, config_value: int) -> None:
        self._call("set_configuration", dev_handle, config_value)

    def get_configuration(self, dev_handle: Token) -> int:
        return self._call("get_configuration", dev_handle)

    def set_interface_altsetting(self, dev_handle: Token, intf: int, altsetting: int) -> None:
        self._call("set_interface_altsetting", dev_handle, intf, altsetting)

    def claim_interface(self, dev_handle: Token, intf: int) -> None:
        self._call("claim_interface", dev_handle, intf)

    def release_interface(self, dev_handle: Token, intf: int) -> None:
        self._call("release_interface", dev_handle, intf)

    def is_kernel_driver_active(self, dev_handle: Token, intf: int) -> bool:
        return self._call("is_kernel_driver_active", dev_handle, intf)

    def detach_kernel_driver(self, dev_handle: Token, intf: int) -> None:
        self._call("detach_kernel_driver", dev_handle, intf)

    def attach_kernel_driver(self, dev_handle: Token, intf: int) -> None:
        self._call("attach_kernel_driver", dev_handle, intf)

    def clear_halt(self, dev_handle: Token, ep: int) -> None:
        self._call("clear_halt", dev_handle, ep)

    def reset_device(self, dev_handle: Token) -> None:
        self._call("reset_device", dev_handle)

    def bulk_write(self, dev_handle: Token, ep: int, intf: int, data: array, timeout: int) -> int:
        return self._call("bulk_write", dev_handle, ep, intf, bytes(data), timeout)

    def ctrl_transfer(self, dev_handle: Token, bmRequestType: int, bRequest: int, wValue: int,
                      wIndex: int, data: array, timeout: int) -> int:
        if bmRequestType & 0x80:  # IN: the device fills the caller's buffer
            received = self._call("ctrl_transfer", dev_handle, bmRequestType, bRequest, wValue,
                                  wIndex, len(data), timeout)
            data[:len(received)] = array("B", received)
            return len(received)
        return self._call("ctrl_transfer", dev_handle, bmRequestType, bRequest, wValue, wIndex,
                          bytes(data), timeout)
