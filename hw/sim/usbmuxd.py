"""Simulated usbmuxd on a unix socket, speaking the plist protocol as usbmuxd on Linux does.

Packets are a 16-byte little-endian header (length, version 1, message 8, tag) and an
XML plist. Replies echo the request's tag; events (Attached/Detached/Paired) go only
to Listen sockets, with tag 0. After ``Connect`` answers Result 0 the socket carries
the device port's raw bytes. Only normal-mode phones appear (usbmuxd claims product
ids 0x1290-0x12af; recovery and DFU phones never reach it).

Everything runs on one background event loop (see ``hw.sim.loop``); ``stop()`` removes
the socket, so a station can be shown "no usbmuxd", and ``start()`` brings it back.
Like an exiting process, a stopped daemon leaves no socket open: every socket it
accepted is closed once its loop has stopped, so no client waits on a dead peer.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import plistlib
import re
import socket
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hw.sim.device import SimDevice, serve_accepted
from hw.sim.framing import plist_dict
from hw.sim.loop import BackgroundLoop
from hw.sim.phone import USBMUX_MODES
from hw.sim.world import SimWorld, UsbArrived, UsbEvent

logger = logging.getLogger(__name__)

HEADER = struct.Struct("<IIII")  # length (whole packet), version, message, tag
PLIST_VERSION = 1
MESSAGE_PLIST = 8
MAX_PACKET = 1024 * 1024

RESULT_OK = 0
RESULT_BADCOMMAND = 1
RESULT_BADDEV = 2
RESULT_CONNREFUSED = 3
RESULT_BADVERSION = 6
ENOENT = 2
EINVAL = 22

NORMAL_PRODUCT_ID = 0x12A8
HIGH_SPEED, SUPER_SPEED = 480_000_000, 5_000_000_000  # ConnectionSpeed, bit/s (usb.c)
SAFE_RECORD_ID = re.compile(r"^[A-Za-z0-9-]+$")


@dataclass
class _Attached:
    device_id: int
    device: SimDevice

    def properties(self) -> dict[str, Any]:
        usb = self.device.usb
        return {
            "ConnectionSpeed": SUPER_SPEED if usb.superspeed else HIGH_SPEED,
            "ConnectionType": "USB",
            "DeviceID": self.device_id,
            "LocationID": usb.location_id,
            "ProductID": NORMAL_PRODUCT_ID,
            "SerialNumber": usb.phone.udid,
        }

    def message(self) -> dict[str, Any]:
        return {"MessageType": "Attached", "DeviceID": self.device_id, "Properties": self.properties()}


class SimUsbmuxd:
    def __init__(self, world: SimWorld, socket_path: Path, pair_record_dir: Path | None = None) -> None:
        self.world = world
        self.socket_path = Path(socket_path)
        self.pair_record_dir = pair_record_dir
        self.buid = str(uuid.uuid4()).upper()
        # Pair records by UDID, in memory only without a ``pair_record_dir``. usbmuxd keeps them
        # as files (conf.c config_set_device_record/config_get_device_record read and write
        # /var/lib/lockdown/<UDID>.plist each time): one per phone ever paired, none in memory.
        self._records: dict[str, bytes] = {}
        self._loop = BackgroundLoop(f"sim-usbmuxd-{self.socket_path.name}")
        self._server: socket.socket | None = None  # the listening socket
        self._sockets: set[socket.socket] = set()  # every accepted socket, until the daemon stops
        self._unsubscribe = None
        self._ids = itertools.count(1)
        self._attached: dict[int, _Attached] = {}  # DeviceID -> device
        # usbmuxd announces a phone (Attached, ListDevices) only once its preflight is done
        # (preflight.c: lockdownd QueryType, StartSession or a Pair attempt), also each phone it
        # finds when it starts. 0 by default (the suite's thousands of plug-ins); make hil's
        # VM took 7 s with the real daemon, a Pair included (docs/real-stack.md).
        self.preflight_s = 0.0
        self._preflighting: dict[int, tuple[_Attached, asyncio.TimerHandle]] = {}
        self._listeners: set[asyncio.StreamWriter] = set()
        self._clients: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        """The value for ``USBMUXD_SOCKET_ADDRESS``."""
        return str(self.socket_path)

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        if self.running:
            return
        self._loop.start()
        self._loop.run(self._listen())
        # usbmuxd learns about devices from USB: replay what is plugged, then follow changes.
        self._unsubscribe = self.world.subscribe(lambda event: self._loop.call(self._on_usb, event))

    def stop(self) -> None:
        """Go away like a stopped daemon: socket removed, every client and device connection closed."""
        if not self.running:
            return
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        try:
            self._loop.run(self._shutdown())
        finally:
            self._loop.stop()
            # The loop is gone: nothing else uses these now. The kernel would close them all.
            for sock in [self._server, *self._sockets]:
                if sock is not None:
                    sock.close()
            self._sockets.clear()
            self._server = None
            self.socket_path.unlink(missing_ok=True)

    # Lifecycle (on the loop) ---------------------------------------------------

    async def _listen(self) -> None:
        self.socket_path.unlink(missing_ok=True)
        self._ids = itertools.count(1)  # a fresh daemon numbers devices from 1 again
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(self.socket_path))
        server.listen()
        server.setblocking(False)
        self.socket_path.chmod(0o666)  # as usbmuxd does: any user may connect
        self._server = server
        # A plain reader callback, not sock_accept: a cancelled accept future can lose a socket.
        asyncio.get_running_loop().add_reader(server.fileno(), self._accept, server)

    def _accept(self, server: socket.socket) -> None:
        try:
            conn, _ = server.accept()
        except (BlockingIOError, InterruptedError):
            return
        conn.setblocking(False)
        self._sockets = {sock for sock in self._sockets if sock.fileno() != -1}  # closed ones go
        self._sockets.add(conn)
        asyncio.ensure_future(serve_accepted(conn, self._serve_client))

    async def _shutdown(self) -> None:
        """Drop every device and client; ``stop`` closes the sockets once the loop has stopped."""
        if self._server is not None:
            asyncio.get_running_loop().remove_reader(self._server.fileno())
        for attached, timer in self._preflighting.values():
            timer.cancel()
            attached.device.close()
        self._preflighting.clear()
        for attached in self._attached.values():
            attached.device.close()
        self._attached.clear()
        self._listeners.clear()
        for writer in list(self._clients):
            writer.close()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)

    # Devices (on the loop) -------------------------------------------------------

    def _on_usb(self, event: UsbEvent) -> None:
        usb = event.device
        if usb.mode not in USBMUX_MODES:
            return
        if isinstance(event, UsbArrived):
            attached = _Attached(self._next_id(), SimDevice(usb, self.world))
            if self.preflight_s > 0:
                timer = asyncio.get_running_loop().call_later(self.preflight_s, self._announce, attached)
                self._preflighting[attached.device_id] = (attached, timer)
            else:
                self._announce(attached)
            return
        for device_id, (attached, timer) in list(self._preflighting.items()):
            if attached.device.usb is usb:  # gone before it was announced: nobody is told
                del self._preflighting[device_id]
                timer.cancel()
                attached.device.close()
        for device_id, attached in list(self._attached.items()):
            if attached.device.usb is usb:
                del self._attached[device_id]
                attached.device.close()
                self._broadcast({"MessageType": "Detached", "DeviceID": device_id})

    def _announce(self, attached: _Attached) -> None:
        self._preflighting.pop(attached.device_id, None)
        self._attached[attached.device_id] = attached
        self._broadcast(attached.message())

    def _next_id(self) -> int:
        """usbmuxd's counter: never reuses an id still in use."""
        while True:
            device_id = next(self._ids)
            if device_id not in self._attached and device_id not in self._preflighting:
                return device_id

    def _broadcast(self, message: dict[str, Any]) -> None:
        for writer in list(self._listeners):
            self._send(writer, 0, message)

    # Clients (on the loop) --------------------------------------------------------

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._clients.add(writer)
        bridged = False
        try:
            while True:
                header = await reader.readexactly(HEADER.size)
                length, version, message_type, tag = HEADER.unpack(header)
                if not HEADER.size <= length <= MAX_PACKET:
                    logger.warning("usbmuxd: dropping a client that sent a %d-byte packet", length)
                    return
                payload = await reader.readexactly(length - HEADER.size)
                if version != PLIST_VERSION or message_type != MESSAGE_PLIST:
                    self._send(writer, tag, _result(RESULT_BADVERSION))
                    continue
                request = _parse(payload)
                if request is None:
                    continue  # usbmuxd ignores what it cannot parse
                if writer in self._listeners:
                    self._send(writer, tag, _result(RESULT_BADCOMMAND))  # a Listen socket takes no commands
                    return
                bridged = await self._dispatch(request, tag, reader, writer)
                if bridged:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except asyncio.CancelledError:
            pass  # the loop is stopping; ending quietly keeps asyncio's stream callback from logging it
        finally:
            self._tasks.discard(task)
            self._clients.discard(writer)
            self._listeners.discard(writer)
            if not bridged:
                writer.close()

    async def _dispatch(
        self, request: dict[str, Any], tag: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; True once the socket has been handed to a device port."""
        kind = request["MessageType"]
        if kind == "Connect":
            return await self._connect(request, tag, reader, writer)
        if kind == "Listen":
            self._send(writer, tag, _result(RESULT_OK))
            for attached in self._attached.values():
                self._send(writer, 0, attached.message())
            self._listeners.add(writer)
        elif kind == "ReadBUID":
            self._send(writer, tag, {"BUID": self.buid})
        elif kind == "ListDevices":
            self._send(writer, tag, {"DeviceList": [a.message() for a in self._attached.values()]})
        elif kind == "ListListeners":
            self._send(writer, tag, {"ListenerList": [{"ID String": str(id(w))} for w in self._listeners]})
        elif kind == "ReadPairRecord":
            self._send(writer, tag, self._read_pair_record(request.get("PairRecordID")))
        elif kind == "SavePairRecord":
            self._send(writer, tag, self._save_pair_record(request))
        elif kind == "DeletePairRecord":
            self._send(writer, tag, self._delete_pair_record(request.get("PairRecordID")))
        else:
            self._send(writer, tag, _result(RESULT_BADCOMMAND))
        return False

    async def _connect(
        self, request: dict[str, Any], tag: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        device_id, port_number = request.get("DeviceID"), request.get("PortNumber")
        if not isinstance(device_id, int) or device_id not in self._attached:
            self._send(writer, tag, _result(RESULT_BADDEV))
            return False
        if not isinstance(port_number, int):
            self._send(writer, tag, _result(RESULT_BADCOMMAND))
            return False
        device = self._attached[device_id].device
        handler = device.handler(socket.ntohs(port_number & 0xFFFF))  # clients send it in network order
        if handler is None:
            self._send(writer, tag, _result(RESULT_CONNREFUSED))
            return False
        self._send(writer, tag, _result(RESULT_OK))
        self._clients.discard(writer)
        await device.serve(handler, reader, writer)
        return True

    # Pair records ------------------------------------------------------------------

    def _read_pair_record(self, record_id: Any) -> dict[str, Any]:
        if not _valid_record_id(record_id):
            return _result(EINVAL)
        data = self._load_record(record_id)
        return _result(ENOENT) if data is None else {"PairRecordData": data}

    def _save_pair_record(self, request: dict[str, Any]) -> dict[str, Any]:
        record_id, data = request.get("PairRecordID"), request.get("PairRecordData")
        if not _valid_record_id(record_id) or not isinstance(data, bytes):
            return _result(EINVAL)
        if self.pair_record_dir is None:
            self._records[record_id] = data
        else:
            self.pair_record_dir.mkdir(parents=True, exist_ok=True)
            (self.pair_record_dir / f"{record_id}.plist").write_bytes(data)
        device_id = request.get("DeviceID")
        attached = self._attached.get(device_id) if isinstance(device_id, int) else None
        if attached is not None and attached.device.phone.udid == record_id:
            self._broadcast({"MessageType": "Paired", "DeviceID": device_id})
        return _result(RESULT_OK)

    def _delete_pair_record(self, record_id: Any) -> dict[str, Any]:
        if not _valid_record_id(record_id):
            return _result(EINVAL)
        found = self._records.pop(record_id, None) is not None
        if self.pair_record_dir is not None:
            path = self.pair_record_dir / f"{record_id}.plist"
            found = found or path.exists()
            path.unlink(missing_ok=True)
        return _result(RESULT_OK if found else ENOENT)

    def _load_record(self, record_id: str) -> bytes | None:
        if record_id in self._records:
            return self._records[record_id]
        if self.pair_record_dir is not None:
            path = self.pair_record_dir / f"{record_id}.plist"
            if path.is_file():
                return path.read_bytes()
        return None

    # Wire ------------------------------------------------------------------------------

    def _send(self, writer: asyncio.StreamWriter, tag: int, message: dict[str, Any]) -> None:
        if writer.is_closing():
            return
        payload = plistlib.dumps(message)
        writer.write(HEADER.pack(HEADER.size + len(payload), PLIST_VERSION, MESSAGE_PLIST, tag) + payload)


def _result(number: int) -> dict[str, Any]:
    return {"MessageType": "Result", "Number": number}


def _parse(payload: bytes) -> dict[str, Any] | None:
    request = plist_dict(payload)
    return request if request is not None and isinstance(request.get("MessageType"), str) else None


def _valid_record_id(record_id: Any) -> bool:
    return isinstance(record_id, str) and bool(SAFE_RECORD_ID.match(record_id))
