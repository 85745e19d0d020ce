"""FunctionFS: a USB function written in user space (Linux ``include/uapi/linux/usb/functionfs.h``).

ep0 takes the function's descriptors and strings once; the kernel then makes one file per
endpoint (``endpoint_files``) and reports what the
host does as 12-byte events on ep0. A control request the function handles (``SETUP``) is
answered by writing the data stage to ep0 (IN) or reading it (OUT); doing the opposite stalls it.
"""
from __future__ import annotations

import fcntl
import struct
from dataclasses import dataclass

DESCRIPTORS_MAGIC_V2 = 3
STRINGS_MAGIC = 2
HAS_FS_DESC, HAS_HS_DESC = 1, 2
ALL_CTRL_RECIP = 64  # device-recipient requests (iBoot's vendor commands) come to us too
EVENT = struct.Struct("<BBHHHB3x")  # usb_ctrlrequest, then the event type
BIND, UNBIND, ENABLE, DISABLE, SETUP, SUSPEND, RESUME = range(7)
EVENT_NAMES = ("BIND", "UNBIND", "ENABLE", "DISABLE", "SETUP", "SUSPEND", "RESUME")
BULK = 2
ENDPOINT_DESC_SIZE = 9  # struct usb_endpoint_descriptor, the audio fields included
ENDPOINT_DESC = (2 << 30) | (ENDPOINT_DESC_SIZE << 16) | (ord("g") << 8) | 130  # _IOR('g', 130, ...)
DIR_IN = 0x80


@dataclass(frozen=True)
class Interface:
    cls: int
    subclass: int
    protocol: int
    endpoints: tuple[int, ...] = ()  # bulk endpoint addresses, in ep-file order (0x81: ep IN 1)


@dataclass(frozen=True)
class Event:
    kind: int
    request_type: int = 0
    request: int = 0
    value: int = 0
    index: int = 0
    length: int = 0

    @property
    def name(self) -> str:
        return EVENT_NAMES[self.kind] if self.kind < len(EVENT_NAMES) else f"EVENT {self.kind}"

    @property
    def is_in(self) -> bool:
        return bool(self.request_type & DIR_IN)


def descriptors(interfaces: list[Interface], flags: int = 0) -> bytes:
    """The v2 descriptor blob: the same interfaces at full speed (64-byte bulk) and high speed (512)."""
    def speed(max_packet: int) -> list[bytes]:
        out = []
        for number, interface in enumerate(interfaces):
            out.append(struct.pack("<BBBBBBBBB", 9, 4, number, 0, len(interface.endpoints), interface.cls,
                                   interface.subclass, interface.protocol, 0))
            out.extend(struct.pack("<BBBBHB", 7, 5, address, BULK, max_packet, 0)
                       for address in interface.endpoints)
        return out

    full, high = speed(64), speed(512)
    body = struct.pack("<II", len(full), len(high)) + b"".join(full) + b"".join(high)
    header = struct.pack("<III", DESCRIPTORS_MAGIC_V2, 12 + len(body), HAS_FS_DESC | HAS_HS_DESC | flags)
    return header + body


def endpoint_files(interface: Interface) -> list[str]:
    """The files FunctionFS makes for the endpoints: ``ep1``... in descriptor order."""
    return [f"ep{number}" for number in range(1, len(interface.endpoints) + 1)]


def endpoint_address(endpoint: int) -> int:
    """The address the host uses for an enabled endpoint: the UDC's choice, not the descriptor's
    (FUNCTIONFS_ENDPOINT_DESC gives the descriptor as the UDC rewrote it)."""
    return fcntl.ioctl(endpoint, ENDPOINT_DESC, bytes(ENDPOINT_DESC_SIZE))[2]


def no_strings() -> bytes:
    return struct.pack("<IIII", STRINGS_MAGIC, 16, 0, 0)


def events(data: bytes) -> list[Event]:
    return [Event(kind, request_type, request, value, index, length)
            for request_type, request, value, index, length, kind in EVENT.iter_unpack(data)]
