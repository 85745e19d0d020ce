"""A phone as usbmuxd reaches it: lockdownd on port 62078 plus one-shot service ports in iOS;
restored (62078), ASR and FDR in the restore ramdisk (``hw.sim.restored``).

One ``SimDevice`` lives per enumeration (a reboot closes its ports and connections, as on a
real phone). It runs on the usbmuxd simulator's event loop.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable

from hw.sim.lockdownd import Lockdownd
from hw.sim.phone import Mode, SimPhone
from hw.sim.restored import Restored
from hw.sim.world import SimWorld, UsbDevice

logger = logging.getLogger(__name__)

LOCKDOWN_PORT = 62078
FIRST_SERVICE_PORT = 49152  # lockdownd hands out ephemeral ports for started services

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve_accepted(sock: socket.socket, serve: Handler) -> None:
    """``serve`` an accepted socket as a server-side stream, as asyncio.start_server makes them:
    lockdownd's StartSession turns its end into the TLS server, which a stream from a
    connect() cannot become (asyncio's start_tls takes that for a client's)."""
    protocol = asyncio.StreamReaderProtocol(asyncio.StreamReader(), serve)
    await asyncio.get_running_loop().connect_accepted_socket(lambda: protocol, sock=sock)


class SimDevice:
    def __init__(self, usb: UsbDevice, world: SimWorld) -> None:
        self.usb = usb
        self.world = world
        self.lockdownd = Lockdownd(self)
        self.restored = Restored(self) if usb.mode is Mode.RESTORE else None
        self._services: dict[int, Handler] = {}
        self._ports = itertools.count(FIRST_SERVICE_PORT)
        self._writers: set[asyncio.StreamWriter] = set()
        self._ssl: dict[str, ssl.SSLContext] = {}
        self.drm_handshake: bytes | None = None  # mobileactivationd's last HandshakeRequestMessage
        self._booted = time.monotonic()

    def uptime(self) -> float:
        """Seconds since this enumeration: daemons come up one after another after a boot."""
        return time.monotonic() - self._booted

    @property
    def phone(self) -> SimPhone:
        return self.usb.phone

    def handler(self, port: int) -> Handler | None:
        """What listens on ``port``; None means the phone resets the connection (usbmuxd: CONNREFUSED)."""
        if self.restored is not None:
            return self.restored.handler(port)
        if port == LOCKDOWN_PORT:
            return self.lockdownd.serve
        return self._services.pop(port, None)

    def open_service(self, handler: Handler) -> int:
        """Listen for one connection on a fresh port, as lockdownd's StartService does."""
        port = next(self._ports)
        self._services[port] = handler
        return port

    async def serve(self, handler: Handler, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Run a connection that usbmuxd bridged to this device; it ends when the phone leaves."""
        self._writers.add(writer)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError) as e:
            logger.debug("%s: connection ended: %r", self.phone.serial, e)
        finally:
            self._writers.discard(writer)
            writer.close()

    def close(self) -> None:
        """The phone left the bus: every connection to it drops, without a TLS goodbye."""
        self._services.clear()
        for writer in list(self._writers):
            writer.transport.abort()

    def ssl_context(self, host_id: str) -> ssl.SSLContext:
        """TLS server side for a paired host: the DeviceCertificate it issued, with the phone's own key.

        The host certificate is not verified: pymobiledevice3's pairing certificates all have empty
        names and serial 1, which OpenSSL's chain building cannot tell apart.
        """
        context = self._ssl.get(host_id)
        if context is None:
            record = self.phone.paired_hosts[host_id]
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.verify_mode = ssl.CERT_NONE
            fd, path = tempfile.mkstemp(suffix=".pem")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(bytes(record["DeviceCertificate"]) + b"\n" + self.phone.private_key_pem)
                context.load_cert_chain(path)
            finally:
                os.unlink(path)
            self._ssl[host_id] = context
        return context
