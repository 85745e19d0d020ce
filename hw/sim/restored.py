"""restored: the restore ramdisk's daemon on port 62078, driving a restore as a real phone does.

The host is pymobiledevice3's ``Restore.restore_device`` (``restore/restore.py``) with
``RestoredClient`` (``restore/restored_client.py``); idevicerestore ``restore.c`` is the second
witness. Messages are lockdown-framed plists (4-byte big-endian length).

Before the restore (``RestoredClient.create``/``_connect``):
- ``{Request: QueryType}`` (no Label) → ``{Type: com.apple.mobile.restored, RestoreProtocolVersion}``.
- ``{Request: QueryValue, Label, QueryKey}`` → the value at the top level of the reply, under its
  key: ``HardwareInfo`` (pymobiledevice3 reads ``UniqueChipID`` and drops a phone whose ECID
  differs; idevicerestore ``restore_device`` prints BoardID, ChipID, UniqueChipID, ProductionMode)
  and ``SavedDebugInfo`` (idevicerestore reads PreviousExitStatus, USBLog, PanicLog when present).
- ``Goodbye`` and ``Reboot`` as idevicerestore's ``restored_goodbye``/``restored_reboot`` send them.

``{Request: StartRestore, Label, RestoreProtocolVersion, RestoreOptions}`` gets no reply
(``RestoredClient.start_restore`` uses ``send_plist``). The options must carry what
pymobiledevice3's ``RestoreOptions`` always sets: every data type and message type the phone
will use must be a key of ``SupportedDataTypes``/``SupportedMessageTypes`` (the bools there are
not "supported": ``SystemImageData`` is False), ``SupportedHostProtocols`` must offer ``MuxSocket``,
and the protocol version must be the one QueryType gave. A phone refuses anything else with
StatusMsg 14 and a Log (what a real restored does with such a host is unverified).

Then the phone talks, in the order of an iOS 17/18 erase restore (checkpoint names and ids from
the restore logs in libimobiledevice/idevicerestore#651 and #675 and doronz88/pymobiledevice3#1701;
operation codes from pymobiledevice3 ``consts.PROGRESS_BAR_OPERATIONS`` = idevicerestore
``restore.h``), answers read on the same stream unless a DataPort is named:

1. CheckpointMsg update_ticket, DataRequestMsg RootTicket → ``{RootTicketData: data}``
   (``Restore.send_root_ticket``).
2. ProgressMsg 11 CREATE_PARTITION_MAP, 12 CREATE_FILESYSTEM (checkpoint format_media),
   checkpoints prepare_for_system_image and restore_system_image.
3. ProgressMsg 13 RESTORE_IMAGE, DataRequestMsg SystemImageData with DataPort 12345 → ASR
   (``hw.sim.asr``; the port listens before the request goes out, ``Restore.send_filesystem``).
   The image must arrive whole, chunk checksums right, and equal ``phone.os_image`` when that is
   set; otherwise StatusMsg 0xFFFFFFFFFFFFFFFF ("verification error" in pymobiledevice3
   ``known_errors`` and idevicerestore ``restore_handle_status_msg``) with a Log.
   ProgressMsg 14 VERIFY_RESTORE 0 → 100 (the one operation pymobiledevice3 draws as a bar).
4. DataRequestMsg SystemImageRootHash, SystemImageCanonicalMetadata → ``{<type>File: data}``.
5. ProgressMsg 27 INSTALL_KERNELCACHE, DataRequestMsg KernelCache → ``{KernelCacheFile}``
   (``Restore.send_component``). No DeviceTree request: pymobiledevice3 could answer one, but
   its ``SupportedDataTypes`` (taken from Apple Configurator) does not list DeviceTree, and the
   phone asks only for what the host lists.
6. ProgressMsg 18 FLASH_FIRMWARE, DataRequestMsg NORData → ``{LlbImageData: data,
   NorImageData: [data, ...]}`` (+ optional ``<SEP>ImageData``; ``Restore.send_nor``), checkpoint
   load_sep_os.
7. DataRequestMsg FDRTrustData, FirmwareUpdaterPreflight → ``{}``; HostSystemTime →
   ``{SetHostTimeOnDevice: number}`` (``Restore.handle_host_system_time``).
8. ProgressMsg 77 SEALING_SYSTEM_VOLUME, StatusMsg 0; the phone waits for
   ``{MsgType: ReceivedFinalStatusMsg}`` (``handle_status_msg``), then reboots into iOS at the
   Hello screen: erased (Unactivated, trusting nobody, Find My off; Activation Lock lives on
   Apple's server), as ``hw.simulated._erase`` describes the same state.

An answer of the wrong shape fails the restore (StatusMsg 14 with a Log). After any non-zero
StatusMsg restored closes the stream, so the host's next ``recv`` raises
ConnectionTerminatedError (PROTOCOLS 6.2.7), and the phone reboots; iBoot has
``auto-boot=false`` from the restore (PROTOCOLS 5.1 step 5), so it comes back in recovery.

FDR listens on 1082 for the whole enumeration (``hw.sim.fdr``).

Faults, ``phone.restore_fault`` (``FAULTS``; ``parse_fault`` checks a value):
- ``""``: none.
- ``"status-<n>"`` (n ≠ 0, decimal): after the image has arrived and been verified, restored sends
  StatusMsg n (with a Log) and closes the stream; the phone reboots to recovery.
- ``"pulled-during-asr"``: the phone leaves USB once half of the OS image has arrived (the world
  detaches it, so usbmuxd reports it gone and every connection to it aborts).
"""
from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hw.sim.asr import ASR_PORT, AsrOutcome, AsrSession
from hw.sim.fdr import CTRL_PORT, FdrControl
from hw.sim.framing import FrameError, read_plist, requests, write_plist
from hw.sim.iboot import FAULTS as IBOOT_FAULTS
from hw.sim.phone import Mode

if TYPE_CHECKING:
    from hw.sim.device import Handler, SimDevice

logger = logging.getLogger(__name__)

RESTORED_PORT = 62078
RESTORED_TYPE = "com.apple.mobile.restored"
RESTORE_PROTOCOL_VERSION = 14  # idevicerestore adapts operation codes only below 14

STATUS_OK = 0
STATUS_FAIL = 14  # "fail" (pymobiledevice3 known_errors, idevicerestore restore_handle_status_msg)
STATUS_VERIFICATION_ERROR = 0xFFFFFFFFFFFFFFFF  # "verification error", same sources

FAULTS = ("", "status-<n>", "pulled-during-asr")
_STATUS_FAULT = re.compile(r"status-([0-9]+)")

# ProgressMsg operations (pymobiledevice3 consts.PROGRESS_BAR_OPERATIONS).
CREATE_PARTITION_MAP, CREATE_FILESYSTEM, RESTORE_IMAGE, VERIFY_RESTORE = 11, 12, 13, 14
FLASH_FIRMWARE, INSTALL_KERNELCACHE, SEALING_SYSTEM_VOLUME = 18, 27, 77

# CheckpointMsg ids (restore logs cited in the module docstring).
UPDATE_TICKET, FORMAT_MEDIA, PREPARE_FOR_SYSTEM_IMAGE = 0x60B, 0x658, 0x6B3
RESTORE_SYSTEM_IMAGE, LOAD_SEP_OS = 0x65B, 0x609

# What the phone sends and asks for: each must be a key of the host's RestoreOptions lists.
MESSAGE_TYPES = ("CheckpointMsg", "DataRequestMsg", "ProgressMsg", "StatusMsg")
DATA_TYPES = ("RootTicket", "SystemImageData", "SystemImageRootHash", "SystemImageCanonicalMetadata",
              "KernelCache", "NORData", "FDRTrustData", "FirmwareUpdaterPreflight",
              "HostSystemTime")


def parse_fault(value: str) -> tuple[str, int]:
    """``phone.restore_fault`` as (kind, status); ValueError names the values there are."""
    if value in ("", "pulled-during-asr"):
        return value, 0
    if value in IBOOT_FAULTS:  # iBoot's to act on, before restored ever runs
        return "", 0
    match = _STATUS_FAULT.fullmatch(value)
    if match and int(match.group(1)) != 0:
        return "status", int(match.group(1))
    raise ValueError(f"restore_fault {value!r} is not one of {', '.join(map(repr, FAULTS))} (n != 0)")


class RestoreFailed(Exception):
    """The phone ends the restore: StatusMsg ``status`` with ``log``."""

    def __init__(self, status: int, log: str) -> None:
        super().__init__(log)
        self.status, self.log = status, log


@dataclass(frozen=True)
class _Answer:
    """What a data request's answer must hold: keys with their types."""

    keys: dict[str, type | tuple[type, ...]]


class Restored:
    """restored, ASR and FDR of one restore-mode enumeration (a reboot makes a new one)."""

    def __init__(self, device: SimDevice) -> None:
        self.device = device
        self.phone = device.phone
        self.fdr = FdrControl(self.phone.serial)
        self.asr: AsrSession | None = None
        self._asr_listening = False
        self._started = False

    def handler(self, port: int) -> Handler | None:
        """What listens in the ramdisk; None → usbmuxd answers CONNREFUSED (the host retries)."""
        if port == RESTORED_PORT:
            return self.serve
        if port == CTRL_PORT:
            return self.fdr.serve
        if port == ASR_PORT and self._asr_listening and self.asr is not None:
            self._asr_listening = False  # asr takes one connection
            return self.asr.serve
        return None

    # The restored stream ------------------------------------------------------------

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async for request in requests(reader, f"{self.phone.serial} restored"):
            self.phone.record(request)
            name = request.get("Request")
            if name == "StartRestore" and not self._started:
                self._started = True
                await self._restore(request, reader, writer)
                return
            reply = self._answer(name, request)
            await write_plist(writer, reply)
            if name == "Goodbye":
                return
            if name == "Reboot":
                self._reboot(Mode.RECOVERY)
                return

    def _answer(self, name: Any, request: dict[str, Any]) -> dict[str, Any]:
        if name == "QueryType":
            return {"Request": "QueryType", "Type": RESTORED_TYPE, "RestoreProtocolVersion": RESTORE_PROTOCOL_VERSION}
        if name == "QueryValue":
            key = request.get("QueryKey")
            values = self._values()
            if key is None:
                return values
            if key in values:
                return {key: values[key]}
            return {"Error": "MissingValue"}  # unverified name; no host depends on it
        if name in ("Goodbye", "Reboot"):
            return {"Request": name, "Result": "Success"}  # unverified reply shape
        return {"Request": name, "Error": "InvalidRequest"} if isinstance(name, str) else {"Error": "InvalidRequest"}

    def _values(self) -> dict[str, Any]:
        phone = self.phone
        return {
            "HardwareInfo": {
                "BoardID": phone.board_id,
                "ChipID": phone.chip_id,
                "UniqueChipID": phone.ecid,
                "ProductionMode": True,
            },
            "SavedDebugInfo": {},  # no previous restore failed: nothing saved (unverified shape)
        }

    # The restore ----------------------------------------------------------------------

    async def _restore(self, request: dict[str, Any], reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        conversation = _Conversation(self.phone.serial, reader, writer)
        try:
            try:
                fault, status = parse_fault(self.phone.restore_fault)
            except ValueError as e:  # a scenario error, shown where the restore stops
                raise RestoreFailed(STATUS_FAIL, str(e)) from None
            problem = _check_start(request)
            if problem is not None:
                raise RestoreFailed(STATUS_FAIL, f"StartRestore refused: {problem}")
            await self._script(conversation, fault, status)
        except RestoreFailed as failure:
            logger.warning("%s restored: status %d: %s", self.phone.serial, failure.status, failure.log)
            try:
                await conversation.send({"MsgType": "StatusMsg", "Status": failure.status, "Log": failure.log})
            except _PhoneGone:
                pass
            self._reboot(Mode.RECOVERY)  # closing the stream is the caller's (SimDevice.serve)
            return
        except _PhoneGone:
            return
        # Restore finished: wait for the host's acknowledgement, then boot iOS.
        try:
            ack = await read_plist(reader)
            self.phone.record(ack)
            if ack.get("MsgType") != "ReceivedFinalStatusMsg":
                logger.warning("%s restored: expected ReceivedFinalStatusMsg, got %r", self.phone.serial, ack)
        except (asyncio.IncompleteReadError, ConnectionError, FrameError):
            logger.info("%s restored: the host left without ReceivedFinalStatusMsg", self.phone.serial)
        self._erase()
        self._reboot(Mode.NORMAL)

    async def _script(self, c: _Conversation, fault: str, status: int) -> None:
        await c.checkpoint(UPDATE_TICKET, "update_ticket")
        await c.data_request("RootTicket", _Answer({"RootTicketData": bytes}))
        await c.checkpoint(UPDATE_TICKET, "update_ticket", complete=True)

        await c.checkpoint(FORMAT_MEDIA, "format_media")
        await c.progress(CREATE_PARTITION_MAP)
        await c.progress(CREATE_FILESYSTEM)
        await c.checkpoint(FORMAT_MEDIA, "format_media", complete=True)
        await c.checkpoint(PREPARE_FOR_SYSTEM_IMAGE, "prepare_for_system_image")
        await c.checkpoint(PREPARE_FOR_SYSTEM_IMAGE, "prepare_for_system_image", complete=True)

        await c.checkpoint(RESTORE_SYSTEM_IMAGE, "restore_system_image")
        await c.progress(RESTORE_IMAGE)
        outcome = await self._receive_image(c, pull=fault == "pulled-during-asr")
        self._verify(outcome)
        for percent in (0, 50, 100):
            await c.progress(VERIFY_RESTORE, percent)
        await c.checkpoint(RESTORE_SYSTEM_IMAGE, "restore_system_image", complete=True)
        if fault == "status":
            raise RestoreFailed(status, f"restored: failing with status {status} (restore_fault)")

        await c.data_request("SystemImageRootHash", _Answer({"SystemImageRootHashFile": bytes}))
        await c.data_request("SystemImageCanonicalMetadata", _Answer({"SystemImageCanonicalMetadataFile": bytes}))
        await c.progress(INSTALL_KERNELCACHE)
        await c.data_request("KernelCache", _Answer({"KernelCacheFile": bytes}))

        await c.progress(FLASH_FIRMWARE)
        nor = await c.data_request("NORData", _Answer({"LlbImageData": bytes, "NorImageData": list}))
        if not nor["NorImageData"] or not all(isinstance(i, bytes) and i for i in nor["NorImageData"]):
            raise RestoreFailed(STATUS_FAIL, "NORData: NorImageData must be a non-empty list of images")
        await c.checkpoint(LOAD_SEP_OS, "load_sep_os")
        await c.checkpoint(LOAD_SEP_OS, "load_sep_os", complete=True)

        await c.data_request("FDRTrustData", _Answer({}))
        await c.data_request("FirmwareUpdaterPreflight", _Answer({}))
        await c.data_request("HostSystemTime", _Answer({"SetHostTimeOnDevice": (int, float)}))
        await c.progress(SEALING_SYSTEM_VOLUME)
        await c.send({"MsgType": "StatusMsg", "Status": STATUS_OK})

    async def _receive_image(self, c: _Conversation, *, pull: bool) -> AsrOutcome:
        session = AsrSession(self.phone, self.device.world.lock, pull=self._pull if pull else None)
        self.asr, self._asr_listening = session, True  # listening before the host is told the port
        try:
            await c.send({"MsgType": "DataRequestMsg", "DataType": "SystemImageData", "DataPort": ASR_PORT})
            outcome = await session.outcome
        finally:
            self._asr_listening = False
        if pull:
            raise _PhoneGone()
        return outcome

    def _verify(self, outcome: AsrOutcome) -> None:
        """ASR's verification of what it wrote, then the phone's own (``phone.os_image``)."""
        if not outcome.ok:
            raise RestoreFailed(STATUS_VERIFICATION_ERROR, f"ASR: {outcome.error}")
        expected = self.phone.os_image
        if expected is not None and (outcome.size, outcome.sha256) != tuple(expected):
            raise RestoreFailed(STATUS_VERIFICATION_ERROR,
                                f"ASR: the image does not verify: got {outcome.size} bytes sha256 "
                                f"{outcome.sha256}, expected {expected[0]} bytes sha256 {expected[1]}")

    # The phone ---------------------------------------------------------------------------

    def _pull(self) -> None:
        logger.info("%s: pulled from USB during ASR", self.phone.serial)
        self.device.world.detach(self.phone)

    def _erase(self) -> None:
        with self.device.world.lock:
            self.phone.erase()

    def _reboot(self, mode: Mode) -> None:
        if self.device.world.is_present(self.device.usb):
            self.device.world.reboot(self.phone, mode)


class _PhoneGone(Exception):
    """The phone left the bus mid-restore: nothing more is sent."""


class _Conversation:
    """restored's side of the stream once StartRestore came: messages out, data answers in."""

    def __init__(self, serial: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.serial, self.reader, self.writer = serial, reader, writer

    async def send(self, message: dict[str, Any]) -> None:
        try:
            await write_plist(self.writer, message)
        except (ConnectionError, RuntimeError) as e:
            raise _PhoneGone() from e

    async def progress(self, operation: int, progress: int = 0) -> None:
        await self.send({"MsgType": "ProgressMsg", "Operation": operation, "Progress": progress})

    async def checkpoint(self, ident: int, name: str, *, complete: bool = False) -> None:
        await self.send({"MsgType": "CheckpointMsg", "CHECKPOINT_ID": ident, "CHECKPOINT_NAME": name,
                         "CHECKPOINT_COMPLETE": complete, "CHECKPOINT_RESULT": 0})

    async def data_request(self, data_type: str, answer: _Answer, **fields: Any) -> dict[str, Any]:
        await self.send({"MsgType": "DataRequestMsg", "DataType": data_type, **fields})
        try:
            reply = await read_plist(self.reader)
        except (asyncio.IncompleteReadError, ConnectionError, FrameError) as e:
            raise _PhoneGone() from e  # the host is gone: nobody to report to
        problems = [k for k, kind in answer.keys.items() if not isinstance(reply.get(k), kind)
                    or (kind is bytes and not reply[k])]
        if problems:
            raise RestoreFailed(STATUS_FAIL, f"{data_type}: the host's answer lacks {problems}: keys {sorted(reply)}")
        return reply


def _check_start(request: dict[str, Any]) -> str | None:
    """Why StartRestore cannot start the restore (None: it can)."""
    if not isinstance(request.get("Label"), str):
        return "no Label"
    version = request.get("RestoreProtocolVersion")
    if str(version) != str(RESTORE_PROTOCOL_VERSION):
        return f"RestoreProtocolVersion {version!r}, not {RESTORE_PROTOCOL_VERSION}"
    options = request.get("RestoreOptions")
    if not isinstance(options, dict):
        return "no RestoreOptions"
    data_types, message_types = options.get("SupportedDataTypes"), options.get("SupportedMessageTypes")
    if not isinstance(data_types, dict) or not isinstance(message_types, dict):
        return "no SupportedDataTypes/SupportedMessageTypes"
    missing = [t for t in DATA_TYPES if t not in data_types] + [t for t in MESSAGE_TYPES if t not in message_types]
    if missing:
        return f"the host does not handle {missing}"
    protocols = options.get("SupportedHostProtocols")  # iOS 27's transports; older hosts send none
    if protocols is not None and "MuxSocket" not in protocols:
        return f"SupportedHostProtocols {protocols!r} without MuxSocket"
    if not isinstance(options.get("UUID"), str):
        return "no UUID"
    return None

