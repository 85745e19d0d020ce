"""FDR (factory data recovery) control port 1082 of the restore ramdisk, as far as a host opens it.

The host is pymobiledevice3 ``restore/fdr.py`` (idevicerestore ``fdr.c``): it connects to
``CTRL_PORT`` 0x43A = 1082, sends the raw bytes ``BeginCtrl\\0``, then a plist framed by a
little-endian 32-bit length ``{Command: "BeginCtrl\\0", CtrlProtoVersion: 2}`` and reads the
reply the same way for ``ConnPort`` (``FDRClient.ctrl_handshake``; idevicerestore
``fdr_ctrl_handshake``). pymobiledevice3 sends ``Command`` as data ``b"BeginCtrl\\0"`` where
idevicerestore sends the string ``"BeginCtrl"``: both are taken. The reply is a binary plist,
as idevicerestore's ``fdr_send_plist`` writes them.

After the handshake the device would ask the host, by 2-byte little-endian commands, to open
connections for it (0x1 sync → the host connects to ``ConnPort``; 0x105 proxy). The simulated
phone has no factory data to recover and sends none of them: it keeps the connection open until
the host closes it. It sends no ``Ping`` (0xBBAA) either: pymobiledevice3's ``handle_plist_cmd``
answers Pong with ``send_recv_plist`` and would then wait for a plist the device never sends.

With ``Restore(ignore_fdr=True)`` pymobiledevice3 opens 1082 and sends nothing; that connection
is held open just the same (PROTOCOLS 6.1.10: refusing it aborts the restore).
"""
from __future__ import annotations

import asyncio
import logging
import plistlib
import struct
from typing import Any

logger = logging.getLogger(__name__)

CTRL_PORT = 0x43A  # 1082
CTRL_COMMAND = b"BeginCtrl\0"
CTRL_PROTO_VERSION = 2
CONN_PORT = 0xF0A0  # unverified: the ephemeral port a real device reports; nothing listens (no sync is sent)
MAX_PLIST = 64 * 1024


class FdrControl:
    """The control port; ``handshakes`` counts the hosts that got a ConnPort."""

    def __init__(self, serial: str) -> None:
        self.serial = serial
        self.handshakes = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        command = await reader.readexactly(len(CTRL_COMMAND))
        if command != CTRL_COMMAND:
            logger.warning("%s FDR: dropping a host that began with %r", self.serial, command)
            return
        request = await _read_plist(reader)
        if request is None or request.get("Command") not in (CTRL_COMMAND, "BeginCtrl") \
                or request.get("CtrlProtoVersion") != CTRL_PROTO_VERSION:
            logger.warning("%s FDR: dropping a host that sent %r", self.serial, request)
            return
        payload = plistlib.dumps({"ConnPort": CONN_PORT}, fmt=plistlib.FMT_BINARY)
        writer.write(struct.pack("<I", len(payload)) + payload)
        await writer.drain()
        self.handshakes += 1
        while await reader.read(4096):  # held open; nothing the host sends needs an answer
            pass


async def _read_plist(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    (length,) = struct.unpack("<I", await reader.readexactly(4))
    if length > MAX_PLIST:
        return None
    try:
        message = plistlib.loads(await reader.readexactly(length))
    except Exception:  # noqa: BLE001 - a host's garbage must not kill the port
        return None
    return message if isinstance(message, dict) else None
