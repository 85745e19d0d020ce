"""The phone's backup service (``com.apple.mobilebackup2``), only as far as an erase needs it.

A device-link conversation (pymobiledevice3 services/device_link.py ``DeviceLink``,
libimobiledevice src/device_link_service.c): every message is a plist *array*, 4-byte
big-endian length first. The phone opens with ``["DLMessageVersionExchange", 300, 0]``; the
host answers ``["DLMessageVersionExchange", "DLVersionsOk", 300]`` and the phone says
``["DLMessageDeviceReady"]``. Then mobilebackup2's own ``Hello`` (``SupportedProtocolVersions``,
pymobiledevice3 services/mobilebackup2.py ``version_exchange``) is answered with ErrorCode 0 and
the version the phone picks (the highest it shares: 2.1).

``EraseDevice`` (``{"MessageName": "EraseDevice", "TargetIdentifier": udid}``: pymobiledevice3
``MobileBackup2Service.erase_device``; libimobiledevice tools/idevicebackup2.c ``CMD_ERASE``
sends the same request) makes the phone erase itself: it drops the link without a reply
(pymobiledevice3 suppresses the ConnectionTerminatedError that follows) and reboots to the
Hello screen as after a restore: Unactivated, Find My off, trusting nobody (``SimPhone.erase``).
Activation Lock lives on Apple's server and survives. A phone with ``erase_refused`` answers
with a non-zero ErrorCode instead (pymobiledevice3 raises "The device reported an error").
Only a paired session can start the service (hw.sim.lockdownd ``_start_service``).
"""
from __future__ import annotations

import asyncio
import logging
import plistlib
import struct
from typing import TYPE_CHECKING, Any

from hw.sim.framing import MAX_FRAME
from hw.sim.phone import Mode

if TYPE_CHECKING:
    from hw.sim.device import SimDevice

logger = logging.getLogger(__name__)

DL_VERSION = 300  # DLMessageVersionExchange's major version, as iOS sends it
PROTOCOL_VERSIONS = (2.0, 2.1)  # mobilebackup2 versions this phone speaks
ERASE_REFUSED = 1  # a non-zero ErrorCode (unverified which one a refusing phone sends; not 105, out of space)


class MobileBackup2:
    SERVICE_NAME = "com.apple.mobilebackup2"

    def __init__(self, device: SimDevice) -> None:
        self.device = device
        self.phone = device.phone

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        who = f"{self.phone.serial} mobilebackup2"
        await _send(writer, ["DLMessageVersionExchange", DL_VERSION, 0])
        try:
            answer = await _receive(reader)
            if answer[:2] != ["DLMessageVersionExchange", "DLVersionsOk"]:
                logger.warning("%s: version exchange answered %r", who, answer[:2])
                return
            await _send(writer, ["DLMessageDeviceReady"])
            while True:
                message = await _receive(reader)
                if message[:1] == ["DLMessageDisconnect"]:
                    return
                if message[:1] != ["DLMessageProcessMessage"] or len(message) < 2 \
                        or not isinstance(message[1], dict):
                    logger.warning("%s: dropping a peer that sent %r", who, message[:1])
                    return
                body: dict[str, Any] = message[1]
                self.phone.record({"Request": f"mobilebackup2.{body.get('MessageName')}"})
                name = body.get("MessageName")
                if name == "Hello":
                    await _send(writer, ["DLMessageProcessMessage", self._hello(body)])
                elif name == "EraseDevice" and not self.phone.erase_refused:
                    await asyncio.sleep(self.phone.erase_starts_s)
                    self._erase()
                    return  # the link drops: the phone is erasing
                else:
                    await _send(writer, ["DLMessageProcessMessage",
                                         {"ErrorCode": ERASE_REFUSED, "ErrorDescription": f"{name} refused"}])
        except (asyncio.IncompleteReadError, ValueError, plistlib.InvalidFileException):
            return

    def _hello(self, body: dict[str, Any]) -> dict[str, Any]:
        offered = body.get("SupportedProtocolVersions") or []
        shared = [v for v in PROTOCOL_VERSIONS if v in offered]
        if not shared:
            return {"ErrorCode": 1, "ErrorDescription": "no supported protocol version"}
        return {"ErrorCode": 0, "ProtocolVersion": max(shared)}

    def _erase(self) -> None:
        world = self.device.world
        with world.lock:
            self.phone.erase()
        world.reboot(self.phone, Mode.NORMAL, delay=self.phone.erase_reboot_s)


async def _send(writer: asyncio.StreamWriter, message: list[Any]) -> None:
    payload = plistlib.dumps(message)
    writer.write(struct.pack(">I", len(payload)) + payload)
    await writer.drain()


async def _receive(reader: asyncio.StreamReader) -> list[Any]:
    (length,) = struct.unpack(">I", await reader.readexactly(4))
    if length > MAX_FRAME:
        raise ValueError(f"frame of {length} bytes")
    message = plistlib.loads(await reader.readexactly(length))
    if not isinstance(message, list):
        raise ValueError("not a device-link array")
    return message
