"""The phone's mobile activation service (``com.apple.mobileactivationd``), session flow.

pymobiledevice3 prefers the session flow (``CreateTunnel1SessionInfoRequest`` works on
current iOS): session info -> Apple's drmHandshake -> activation info built from the
handshake answer -> Apple's deviceActivation -> ``HandleActivationInfoWithSessionRequest``.
The blobs are stand-ins, but each step checks what the previous one produced, so an
answer meant for another phone, or an error page passed on as a handshake, is refused
as the real daemon refuses it.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import plistlib
import uuid
from typing import TYPE_CHECKING, Any

from hw.sim.framing import FrameError, plist_dict, read_plist, write_plist
from hw.sim.phone import ACTIVATED, UNACTIVATED

if TYPE_CHECKING:
    from hw.sim.device import SimDevice

logger = logging.getLogger(__name__)


def handshake_response_for(request_message: bytes) -> bytes:
    """What Apple's drmHandshake answers to a given HandshakeRequestMessage (shared with the server sim)."""
    return hashlib.sha256(b"sim-drm-handshake" + request_message).digest()


class MobileActivationd:
    SERVICE_NAME = "com.apple.mobileactivationd"

    def __init__(self, device: SimDevice) -> None:
        self.device = device
        self.phone = device.phone

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                message = await read_plist(reader)
            except asyncio.IncompleteReadError:
                return
            except FrameError as e:
                logger.warning("%s mobileactivationd: dropping a peer that sent %s", self.phone.serial, e)
                return
            self.phone.record(message)
            with self.device.world.lock:
                reply = self._answer(message)
            await write_plist(writer, reply)

    def _answer(self, message: dict[str, Any]) -> dict[str, Any]:
        command = message.get("Command")
        value = message.get("Value")
        if command == "GetActivationStateRequest":
            return {"Value": self.phone.activation_state}
        if command == "CreateTunnel1SessionInfoRequest":
            if self.device.uptime() < self.phone.activation_ready_after:
                # Just after a boot the daemon refuses (libideviceactivation #42 shows the refusal
                # on a real phone; the length of the window here is the scenario's choice).
                return {"Error": "Failed to create activation session info: not ready"}
            return {"Value": self._session_info()}
        if command == "CreateTunnel1ActivationInfoRequest":
            return self._activation_info(value)
        if command == "HandleActivationInfoWithSessionRequest":
            return self._handle_activation_record(value)
        if command == "DeactivateRequest":
            self.phone.activation_state = UNACTIVATED
            return {}
        return {"Error": f"Unsupported command: {command!r}"}

    def _session_info(self) -> dict[str, Any]:
        request_message = os.urandom(32)
        self.device.drm_handshake = request_message
        return {
            "CollectionBlob": os.urandom(64),
            "HandshakeRequestMessage": request_message,
            "UniqueDeviceID": self.phone.udid,
        }

    def _activation_info(self, value: Any) -> dict[str, Any]:
        handshake = plist_dict(value)
        expected = self.device.drm_handshake
        if handshake is None or expected is None or handshake.get("HandshakeResponseMessage") != handshake_response_for(
            expected
        ):
            return {"Error": "Failed to create activation info: invalid drmHandshake response"}
        phone = self.phone
        info_xml = {
            "ActivationRequestInfo": {
                "ActivationRandomness": str(uuid.uuid4()).upper(),
                "ActivationState": phone.activation_state,
                "FMiPAccountExists": phone.find_my,
            },
            "DeviceCertRequest": os.urandom(64),
            "DeviceID": {"SerialNumber": phone.serial, "UniqueDeviceID": phone.udid},
            "DeviceInfo": {
                "BuildVersion": phone.build,
                "DeviceClass": "iPhone",
                "OSType": "iPhone OS",
                "ProductType": phone.product_type,
                "ProductVersion": phone.ios_version,
                "UniqueChipID": phone.ecid,
            },
        }
        return {
            "Value": {
                "ActivationInfoComplete": True,
                "ActivationInfoXML": plistlib.dumps(info_xml),
                "FairPlayCertChain": os.urandom(32),
                "FairPlaySignature": os.urandom(32),
                "RKCertification": os.urandom(32),
                "RKSignature": os.urandom(32),
                "serverKP": handshake.get("serverKP", b""),
                "signActRequest": os.urandom(32),
            }
        }

    def _handle_activation_record(self, value: Any) -> dict[str, Any]:
        answer = plist_dict(value)
        record = answer.get("ActivationRecord") if answer else None
        token = plist_dict(record.get("AccountToken")) if isinstance(record, dict) else None
        if token is None or token.get("UniqueDeviceID") != self.phone.udid:
            return {"Error": "Failed to handle activation record: not an activation record for this device"}
        self.phone.activation_state = ACTIVATED
        return {}

