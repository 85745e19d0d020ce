"""Simulated lockdownd (device port 62078): values, pairing, sessions with TLS, services, EnterRecovery.

Errors carry the names real lockdownd uses (libimobiledevice ``lockdownd_strtoerr``), so
pymobiledevice3 maps them to its own exceptions. Choices where the real daemon's answer
is not documented are marked "unverified" below.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hw.sim.diagnostics import DiagnosticsRelay
from hw.sim.framing import requests, write_plist
from hw.sim.mobileactivation import MobileActivationd
from hw.sim.mobilebackup2 import MobileBackup2
from hw.sim.phone import ACTIVATED, FindMyAnswer, Mode, Pairing
from hw.sim.tls import start_tls

if TYPE_CHECKING:
    from hw.sim.device import SimDevice

logger = logging.getLogger(__name__)

LOCKDOWN_TYPE = "com.apple.mobile.lockdown"  # in the restore ramdisk restored takes the port (hw.sim.restored)
# iOS 14.5 started refusing EnterRecovery outside a paired session (idevicerestore commit 6d3b6bb).
RECOVERY_NEEDS_SESSION_FROM = (14, 5)

# What an unpaired host may read. Unverified beyond pymobiledevice3's needs: SerialNumber and
# ActivationState are included because the station reads them before pairing.
UNPAIRED_KEYS = frozenset({
    "ActivationState", "BoardId", "BuildVersion", "CPUArchitecture", "ChipID", "DeviceClass", "DeviceColor",
    "DeviceName", "DevicePublicKey", "HardwareModel", "HasSiDP", "ProductName", "ProductType", "ProductVersion",
    "ProtocolVersion", "SerialNumber", "TelephonyCapability", "TimeIntervalSince1970", "UniqueChipID",
    "UniqueDeviceID", "WiFiAddress",
})
_NO_VALUE = object()  # a key lockdownd answers for, with no Value in the reply
DISK_USAGE_DOMAINS = ("com.apple.disk_usage", "com.apple.disk_usage.factory")
PAIR_RECORD_KEYS = ("DeviceCertificate", "HostCertificate", "HostID", "RootCertificate", "SystemBUID")


@dataclass
class _Connection:
    """Per-connection state: lockdownd sessions belong to a connection, not to the phone."""

    session_id: str | None = None
    host_id: str | None = None
    then: str | None = None  # what to do once the reply is flushed: "tls", "close" or "recovery"


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


class Lockdownd:
    def __init__(self, device: SimDevice) -> None:
        self.device = device
        self.phone = device.phone
        self._handlers: dict[str, Callable[[dict[str, Any], _Connection], dict[str, Any]]] = {
            "QueryType": self._query_type,
            "GetValue": self._get_value,
            "SetValue": self._set_value,
            "Pair": self._pair,
            "StartSession": self._start_session,
            "StopSession": self._stop_session,
            "StartService": self._start_service,
            "EnterRecovery": self._enter_recovery,
            "Goodbye": self._goodbye,
        }

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.phone.lockdown_stalls:  # a hung daemon: takes the connection, never answers
            await reader.read()
            return
        conn = _Connection()
        async for request in requests(reader, f"{self.phone.serial} lockdownd"):
            self.phone.record(request)
            reply = self._answer(request, conn)
            await write_plist(writer, reply)
            then, conn.then = conn.then, None
            if then == "tls":
                await start_tls(writer, self.device.ssl_context(conn.host_id or ""))
            elif then == "close":
                return
            elif then == "recovery":
                self.device.world.reboot(self.phone, Mode.RECOVERY)
                return

    def _answer(self, request: dict[str, Any], conn: _Connection) -> dict[str, Any]:
        name = request.get("Request")
        handler = self._handlers.get(name) if isinstance(name, str) else None
        if handler is None:
            return _error(name, "InvalidRequest")  # unverified name; no client depends on it
        with self.device.world.lock:
            return handler(request, conn)

    # Requests ---------------------------------------------------------------

    def _query_type(self, request: dict[str, Any], conn: _Connection) -> dict[str, Any]:
        return {"Request": "QueryType", "Type": LOCKDOWN_TYPE}

    def _get_value(self, request: dict[str, Any], conn: _Connection) -> dict[str, Any]:
        domain, key = request.get("Domain"), request.get("Key")
        reply: dict[str, Any] = {"Request": "GetValue"}
        if domain is not None:
            reply["Domain"] = domain
        if key is not None:
            reply["Key"] = key
        values = self._domain_values(domain)
        if values is None:
            return reply | {"Error": "MissingValue"}
        if conn.session_id is None:
            if domain is not None:  # unverified: domains are treated as session-only
                return reply | {"Error": "GetProhibited"}
            values = {k: v for k, v in values.items() if k in UNPAIRED_KEYS}
        if key is None:
            # Some domains are not listed whole (libimobiledevice #275: com.apple.fmip reads empty).
            return reply | {"Value": {} if domain == "com.apple.fmip" else values}
        if not isinstance(key, str) or key not in values:
            prohibited = conn.session_id is None and key in (self._domain_values(domain) or {})
            return reply | {"Error": "GetProhibited" if prohibited else "MissingValue"}
        value = values[key]
        return reply if value is _NO_VALUE else reply | {"Value": value}

    def _set_value(self, request: dict[str, Any], conn: _Connection) -> dict[str, Any]:
        key, domain = request.get("Key"), request.get("Domain")
        if conn.session_id is None:
            return _error("SetValue", "SetProhibited")
        if not isinstance(key, str) or "Value" not in request:
            return _error("SetValue", "MissingValue")
        self.phone.values_set[key if domain is None else f"{domain}/{key}"] = request["Value"]
        return {"Request": "SetValue"}

    def _pair(self, request: dict[str, Any], conn: _Connection) -> dict[str, Any]:
        record = request.get("PairRecord")
        if not isinstance(record, dict):
            return _error("Pair", "MissingPairRecord")
        if any(not record.get(k) for k in PAIR_RECORD_KEYS) or not isinstance(record["HostID"], str):
            return _error("Pair", "InvalidPairRecord")
        phone = self.phone
        if record["HostID"] not in phone.paired_hosts:
            if phone.pairing is Pairing.PASSCODE:
                return _error("Pair", "PasswordProtected")
            if phone.pairing is Pairing.DENIED:
                return _error("Pair", "UserDeniedPairing")
            if phone.pairing is Pairing.DIALOG:
                phone.pair_attempts += 1
                if phone.pair_attempts <= phone.dialog_tries:
                    return _error("Pair", "PairingDialogResponsePending")
        phone.paired_hosts[record["HostID"]] = dict(record)
        return {"Request": "Pair", "EscrowBag": os.urandom(48)}

    def _start_session(self, request: dict[str, Any], conn: _Connection) -> dict[str, Any]:
        host_id = request.get("HostID")
        if not isinstance(host_id, str):
            return _error("StartSession", "MissingHostID")
        if conn.session_id is not None:
            return _error("StartSession", "SessionActive")
        if host_id not in self.phone.paired_hosts:
            return _error("StartSession", "InvalidHostID")
        conn.session_id, conn.host_id, conn.then = str(uuid.uuid4()).upper(), host_id, "tls"
        return {"Request": "StartSession", "SessionID": conn.session_id, "EnableSessionSSL": True}

    def _stop_session(self, request: dict[str, Any], conn: _Connection) -> dict[str, Any]:
        if conn.session_id is None:
            return _error("StopSession", "SessionInactive")
        if request.get("SessionID") != conn.session_id:
            return _error("StopSession", "InvalidSessionID")
        # Real lockdownd drops TLS here and reads plaintext; pymobiledevice3 keeps TLS, so its next
        # request on this connection fails either way. The sim closes, and pmd3 reconnects.
        conn.session_id, conn.then = None, "close"
        return {"Request": "StopSession", "Result": "Success"}

    def _start_service(self, request: dict[str, Any], conn: _Connection) -> dict[str, Any]:
        name = request.get("Service")
        reply: dict[str, Any] = {"Request": "StartService", "Service": name}
        if conn.session_id is None:
            return reply | {"Error": "SessionInactive"}
        services = {MobileActivationd.SERVICE_NAME: MobileActivationd,
                    DiagnosticsRelay.SERVICE_NAME: DiagnosticsRelay,
                    MobileBackup2.SERVICE_NAME: MobileBackup2}
        service = services.get(name) if isinstance(name, str) else None
        if service is None:
            return reply | {"Error": "InvalidService"}
        port = self.device.open_service(self._tls_service(service(self.device).serve, conn.host_id or ""))
        return reply | {"Port": port, "EnableServiceSSL": True}

    def _enter_recovery(self, request: dict[str, Any], conn: _Connection) -> dict[str, Any]:
        if conn.session_id is None and version_tuple(self.phone.ios_version) >= RECOVERY_NEEDS_SESSION_FROM:
            return _error("EnterRecovery", "SessionInactive")
        conn.then = "recovery"
        return {"Request": "EnterRecovery"}

    def _goodbye(self, request: dict[str, Any], conn: _Connection) -> dict[str, Any]:
        conn.then = "close"
        return {"Request": "Goodbye", "Result": "Success"}

    # Helpers ----------------------------------------------------------------

    def _tls_service(self, serve: Callable[..., Any], host_id: str) -> Callable[..., Any]:
        """Services started with EnableServiceSSL speak TLS from their first byte."""

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await start_tls(writer, self.device.ssl_context(host_id))
            await serve(reader, writer)

        return handler

    def _domain_values(self, domain: Any) -> dict[str, Any] | None:
        phone = self.phone
        if domain is None:
            return {
                "ActivationState": phone.activation_state,
                "ActivationStateAcknowledged": phone.values_set.get(
                    "ActivationStateAcknowledged", phone.activation_state == ACTIVATED
                ),
                "ApNonce": phone.ap_nonce,
                "BoardId": phone.board_id,
                "BuildVersion": phone.build,
                "CPUArchitecture": "arm64e",
                "ChipID": phone.chip_id,
                "DeviceClass": "iPhone",
                "DeviceColor": phone.color,
                "DeviceEnclosureColor": phone.enclosure_color,
                "DeviceName": phone.device_name,
                "DevicePublicKey": phone.public_key_pem,
                "HardwareModel": phone.hardware_model,
                "HasSiDP": True,
                "Image4Supported": True,
                "PasswordProtected": phone.pairing is Pairing.PASSCODE,
                "ProductName": "iPhone OS",
                "ProductType": phone.product_type,
                "ProductVersion": phone.ios_version,
                "ProtocolVersion": "2",
                "SEPNonce": phone.sep_nonce,
                "SerialNumber": phone.serial,
                **_present({"InternationalMobileEquipmentIdentity": phone.imei,
                            "InternationalMobileEquipmentIdentity2": phone.imei2,
                            "MobileEquipmentIdentifier": phone.meid}),
                "TelephonyCapability": phone.cellular,
                "TimeIntervalSince1970": time.time(),
                "UniqueChipID": phone.ecid,
                "UniqueDeviceID": phone.udid,
                "WiFiAddress": phone.wifi_address,
            }
        if domain == "com.apple.fmip":
            return self._find_my_values()
        if domain in DISK_USAGE_DOMAINS:
            # libimobiledevice tools/ideviceinfo.c lists both domains; the factory one holds the
            # capacity as sold. Only the keys the station reads, with their real names.
            return {"TotalDiskCapacity": phone.storage_bytes, "TotalDataCapacity": phone.storage_bytes * 9 // 10,
                    "TotalSystemCapacity": phone.storage_bytes // 10}
        return None

    def _find_my_values(self) -> dict[str, Any]:
        """``IsAssociated``: believed by nobody when false (libimobiledevice #275: false on a phone
        with Find My on; libideviceactivation #2: always false in Setup Assistant)."""
        answer = self.phone.find_my_answer
        if answer is FindMyAnswer.ABSENT:
            return {"IsAssociated": _NO_VALUE}
        return {"IsAssociated": self.phone.find_my and answer is FindMyAnswer.HONEST}


def _present(values: dict[str, Any]) -> dict[str, Any]:
    """The keys the phone has: lockdownd leaves out what a phone does not have (no IMEI without cellular)."""
    return {key: value for key, value in values.items() if value is not None}


def _error(request: Any, error: str) -> dict[str, Any]:
    """An error reply; a request without a usable name gets no ``Request`` echo (plists have no null)."""
    return {"Request": request, "Error": error} if isinstance(request, str) else {"Error": error}
