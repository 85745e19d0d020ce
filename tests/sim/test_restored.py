"""The restore ramdisk (restored, ASR, FDR) through pymobiledevice3's own restore code.

``Restore.restore_device()`` runs unchanged against a phone in restore mode on the simulated
usbmuxd, with a directory IPSW whose build identity names every component the phone asks for.
Only the host's IMG4 personalisation (``get_personalized_data``, pyimg4 stitching with a signed
ticket) is replaced by tagged bytes: it never reaches the wire in another shape.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import plistlib
import random
from pathlib import Path
from typing import Any

import pytest
from ipsw_parser.ipsw import IPSW
from pymobiledevice3.exceptions import ConnectionTerminatedError, IncorrectModeError, NoDeviceConnectedError
from pymobiledevice3.lockdown import create_using_usbmux
from pymobiledevice3.restore import fdr as pmd3_fdr
from pymobiledevice3.restore.asr import ASR_PAYLOAD_CHUNK_SIZE, ASRClient
from pymobiledevice3.restore.device import Device
from pymobiledevice3.restore.fdr import FDRClient, fdr_type
from pymobiledevice3.restore.recovery import Behavior
from pymobiledevice3.restore.restore import Restore
from pymobiledevice3.restore.restored_client import RestoredClient

from hw.sim import Mode
from hw.sim.asr import UDIF_TRAILER
from hw.sim.fdr import CONN_PORT
from hw.sim.restored import FAULTS, RESTORE_PROTOCOL_VERSION, STATUS_FAIL, STATUS_VERIFICATION_ERROR, parse_fault

from .conftest import run, wait_until

IMAGE_SIZE = 5 * ASR_PAYLOAD_CHUNK_SIZE + 1234  # six chunks, the last one short
TICKET = b"IM4M root ticket"

# What the phone says, as Restore._handlers sees it: (MsgType, DataType | Operation | Status | checkpoint).
SUCCESS = [
    ("CheckpointMsg", "update_ticket"), ("DataRequestMsg", "RootTicket"), ("CheckpointMsg", "update_ticket"),
    ("CheckpointMsg", "format_media"), ("ProgressMsg", 11), ("ProgressMsg", 12), ("CheckpointMsg", "format_media"),
    ("CheckpointMsg", "prepare_for_system_image"), ("CheckpointMsg", "prepare_for_system_image"),
    ("CheckpointMsg", "restore_system_image"), ("ProgressMsg", 13), ("DataRequestMsg", "SystemImageData"),
    ("ProgressMsg", 14), ("ProgressMsg", 14), ("ProgressMsg", 14), ("CheckpointMsg", "restore_system_image"),
    ("DataRequestMsg", "SystemImageRootHash"), ("DataRequestMsg", "SystemImageCanonicalMetadata"),
    ("ProgressMsg", 27), ("DataRequestMsg", "KernelCache"),
    ("ProgressMsg", 18), ("DataRequestMsg", "NORData"), ("CheckpointMsg", "load_sep_os"),
    ("CheckpointMsg", "load_sep_os"), ("DataRequestMsg", "FDRTrustData"),
    ("DataRequestMsg", "FirmwareUpdaterPreflight"), ("DataRequestMsg", "HostSystemTime"),
    ("ProgressMsg", 77), ("StatusMsg", 0),
]
UP_TO_THE_IMAGE = SUCCESS[:SUCCESS.index(("DataRequestMsg", "SystemImageData")) + 1]

COMPONENTS = {  # manifest entry -> (path, Info extras)
    "OS": ("os.dmg", {}),
    "LLB": ("Firmware/all_flash/LLB.d17.RELEASE.im4p", {"IsFirmwarePayload": True}),
    "iBoot": ("Firmware/all_flash/iBoot.d17.RELEASE.im4p", {"IsFirmwarePayload": True}),
    "AppleLogo": ("Firmware/all_flash/applelogo@3x~iphone.im4p", {"IsFirmwarePayload": True}),
    "SEP": ("Firmware/all_flash/sep-firmware.d17.RELEASE.im4p", {"RequiredCapacity": 0x1000}),
    "RestoreSEP": ("Firmware/all_flash/sep-firmware.d17.RELEASE.im4p", {}),
    "KernelCache": ("kernelcache.release.iphone14", {}),
    "DeviceTree": ("Firmware/all_flash/DeviceTree.d17ap.im4p", {}),
    "SystemVolume": ("Firmware/os.dmg.root_hash", {}),
    "Ap,SystemVolumeCanonicalMetadata": ("Firmware/os.dmg.mtree", {}),
}


def directory_ipsw(root: Path, phone, image: bytes) -> IPSW:
    """An extracted IPSW (PROTOCOLS 5.5: directories seek) with one Erase identity for the phone."""
    manifest = {name: {"Info": {"Path": path, **extra}} for name, (path, extra) in COMPONENTS.items()}
    identity = {"ApChipID": f"0x{phone.chip_id:04X}", "ApBoardID": f"0x{phone.board_id:02X}", "Manifest": manifest,
                "Info": {"DeviceClass": phone.hardware_model.lower(), "RestoreBehavior": "Erase",
                         "Variant": "Customer Erase Install (IPSW)"}}
    (root / "BuildManifest.plist").write_bytes(plistlib.dumps({
        "ProductVersion": "26.2", "ProductBuildVersion": "23C71", "SupportedProductTypes": [phone.product_type],
        "ManifestVersion": 0, "BuildIdentities": [identity]}))
    for name, (path, _) in COMPONENTS.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(image if name == "OS" else f"im4p {name}".encode())
    return IPSW.create_from_path(str(root))


class Recorder:
    """pymobiledevice3's Restore with its message handlers watched and its IMG4 stitching stubbed."""

    def __init__(self, ipsw: IPSW, device: Device) -> None:
        self.ipsw, self.device = ipsw, device
        self.seen: list[tuple[str, Any]] = []
        self.failed: list[str] = []

    def _restore(self) -> Restore:
        """Built on the loop that runs it (its logger names the running task)."""
        restore = Restore(self.ipsw, self.device, tss={"ApImg4Ticket": TICKET}, behavior=Behavior.Erase)
        for kind, handler in list(restore._handlers.items()):
            restore._handlers[kind] = self._watch(kind, handler)
        restore.get_personalized_data = self._personalized  # type: ignore[method-assign]
        return restore

    def _watch(self, kind, handler):
        async def watched(message: dict[str, Any]) -> Any:
            if kind == "StatusMsg":
                detail = message["Status"]
            else:
                detail = message.get("DataType") or message.get("CHECKPOINT_NAME") or message.get("Operation")
            self.seen.append((kind, detail))
            try:
                return await handler(message)
            except Exception as e:  # restore_device logs and swallows these; the test wants them
                self.failed.append(f"{kind} {detail}: {e!r}")
                raise
        return watched

    async def _personalized(self, component_name: str, data: bytes | None = None, *, tss, path=None) -> bytes:
        return b"IMG4 " + component_name.encode()

    async def restore_device(self) -> None:
        restore = self._restore()
        try:
            await asyncio.wait_for(restore.restore_device(), 10)
        finally:  # the FDR listener outlives restore_device (PROTOCOLS 6.2.7)
            for task in restore._tasks:
                task.cancel()
            await asyncio.gather(*restore._tasks, return_exceptions=True)


@pytest.fixture
def image() -> bytes:
    return random.Random(7).randbytes(IMAGE_SIZE)


@pytest.fixture
def restoring(bench_for, make_phone, tmp_path, image):
    """A phone in the restore ramdisk on the bench, and pymobiledevice3's Restore for it."""

    def start(**phone_fields: Any):
        phone = make_phone(mode=Mode.RESTORE, **phone_fields)
        bench = bench_for(phone)
        device = Device()
        device._ecid, device._hardware_model, device._ap_parameters = phone.ecid, phone.hardware_model.lower(), {}
        return phone, bench, Recorder(directory_ipsw(tmp_path, phone, image), device)

    return start


def digest(data: bytes) -> tuple[int, str]:
    return len(data), hashlib.sha256(data).hexdigest()


# Before the restore -------------------------------------------------------------------------


def test_restored_client_finds_the_phone_by_ecid(bench_for, make_phone):
    other = make_phone(mode=Mode.RESTORE)
    phone = make_phone(mode=Mode.RESTORE)
    bench_for(other, phone)

    async def scenario():
        client = await RestoredClient.create(phone.ecid)
        try:
            return client.version, client.hardware_info, client.saved_debug_info
        finally:
            await client.service.close()

    version, hardware, saved = run(scenario())
    assert version == RESTORE_PROTOCOL_VERSION
    assert hardware == {"BoardID": phone.board_id, "ChipID": phone.chip_id, "UniqueChipID": phone.ecid,
                        "ProductionMode": True}
    assert saved == {}
    assert phone.requests() == ["QueryType", "QueryValue", "QueryValue"]
    assert other.requests() == []  # its UDID names another ECID: pmd3 does not even connect
    with pytest.raises(NoDeviceConnectedError):
        run(RestoredClient.create(phone.ecid + 1))


def test_a_lockdown_client_learns_the_mode_and_stops(bench_for, make_phone):
    phone = make_phone(mode=Mode.RESTORE)
    bench_for(phone)
    with pytest.raises(IncorrectModeError):
        run(create_using_usbmux(serial=phone.udid, autopair=False))


def test_fdr_control_handshake(bench_for, make_phone, monkeypatch):
    phone = make_phone(mode=Mode.RESTORE)
    bench_for(phone)
    monkeypatch.setattr(pmd3_fdr, "conn_port", None)

    async def scenario():
        client = await FDRClient.create(fdr_type.FDR_CTRL, udid=phone.udid)
        try:  # held open, nothing sent: a poll for the next command waits
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(client.poll_and_handle_message(), 0.2)
                raise AssertionError("the phone sent an FDR command")
        finally:
            await client.service.close()

    run(scenario())
    assert pmd3_fdr.conn_port == CONN_PORT


def test_start_restore_without_options_is_refused(bench_for, make_phone):
    phone = make_phone(mode=Mode.RESTORE)
    bench = bench_for(phone)

    async def scenario():
        client = await RestoredClient.create(phone.ecid)
        await client.start_restore(None)
        status = await client.recv()
        with pytest.raises(ConnectionTerminatedError):
            await client.recv()
        return status

    status = run(scenario())
    assert status["MsgType"] == "StatusMsg" and status["Status"] == STATUS_FAIL
    assert "no RestoreOptions" in status["Log"]
    wait_until(lambda: bench.world.device_of(phone) is not None and phone.mode is Mode.RECOVERY)


def test_faults_are_checked():
    assert parse_fault("status-27") == ("status", 27)
    assert parse_fault("pulled-during-asr") == ("pulled-during-asr", 0)
    for bad in ("status-0", "status-x", "pulled"):
        with pytest.raises(ValueError, match="restore_fault"):
            parse_fault(bad)
    assert "status-<n>" in FAULTS


# Restore.restore_device ---------------------------------------------------------------------


def test_a_restore_streams_the_image_and_the_phone_boots_to_hello(restoring, image, monkeypatch):
    monkeypatch.setattr(pmd3_fdr, "conn_port", None)
    phone, bench, recorder = restoring(os_image=digest(image), activation_state="Activated", find_my=True)

    run(recorder.restore_device())

    assert recorder.seen == SUCCESS and recorder.failed == []
    assert phone.asr_received == digest(image)
    assert pmd3_fdr.conn_port == CONN_PORT  # the FDR listener task got through its handshake
    start = next(m for m in phone.received if m.get("Request") == "StartRestore")
    assert start["RestoreOptions"]["SupportedHostProtocols"] == ["MuxSocket"]
    # The host sends ReceivedFinalStatusMsg and returns; the phone reads it in its own time, then reboots.
    wait_until(lambda: phone.mode is Mode.NORMAL and bench.world.device_of(phone) is not None)
    assert phone.requests()[-1] == "?"  # ReceivedFinalStatusMsg has no Request: the last thing it got
    assert phone.received[-1] == {"MsgType": "ReceivedFinalStatusMsg"}
    assert (phone.activation_state, phone.find_my, phone.paired_hosts) == ("Unactivated", False, {})

    async def hello():  # the station's post-restore check can talk to it
        async with await create_using_usbmux(serial=phone.udid, autopair=False) as lockdown:
            return lockdown.all_values["ActivationState"]

    assert run(hello()) == "Unactivated"


def test_a_corrupted_chunk_fails_verification(restoring, image, monkeypatch):
    phone, bench, recorder = restoring(os_image=digest(image))
    original, sent = ASRClient.send_buffer, []

    async def send_buffer(self, buf: bytes) -> None:
        if len(buf) == ASR_PAYLOAD_CHUNK_SIZE + 20:  # a payload chunk with its SHA-1
            sent.append(buf)
            if len(sent) == 2:
                buf = buf[:100] + bytes([buf[100] ^ 0xFF]) + buf[101:]
        await original(self, buf)

    monkeypatch.setattr(ASRClient, "send_buffer", send_buffer)

    with pytest.raises(ConnectionTerminatedError):
        run(recorder.restore_device())

    assert recorder.seen == [*UP_TO_THE_IMAGE, ("StatusMsg", STATUS_VERIFICATION_ERROR)]
    assert phone.asr_received == digest(image[:ASR_PAYLOAD_CHUNK_SIZE])  # the good first chunk only
    wait_until(lambda: phone.mode is Mode.RECOVERY and bench.world.device_of(phone) is not None)


def test_an_image_other_than_the_phones_fails_verification(restoring, image):
    phone, _, recorder = restoring(os_image=(IMAGE_SIZE, "0" * 64))

    with pytest.raises(ConnectionTerminatedError):
        run(recorder.restore_device())

    assert recorder.seen == [*UP_TO_THE_IMAGE, ("StatusMsg", STATUS_VERIFICATION_ERROR)]
    assert phone.asr_received == digest(image)  # all of it arrived; it is just not what the phone wants


def test_asr_asks_for_the_head_and_the_trailer_before_the_payload(restoring, image, monkeypatch):
    _, _, recorder = restoring()
    asked: list[tuple[int, int]] = []
    original = ASRClient.handle_oob_data_request

    async def handle(self, packet, filesystem):
        asked.append((packet["OOB Offset"], packet["OOB Length"]))
        await original(self, packet, filesystem)

    monkeypatch.setattr(ASRClient, "handle_oob_data_request", handle)
    run(recorder.restore_device())
    assert asked == [(0, 0x1000), (IMAGE_SIZE - UDIF_TRAILER, UDIF_TRAILER)]


def test_status_fault_after_the_image_ends_the_stream(restoring, image):
    phone, bench, recorder = restoring(restore_fault="status-27")

    with pytest.raises(ConnectionTerminatedError):
        run(recorder.restore_device())

    image_done = SUCCESS.index(("CheckpointMsg", "restore_system_image"), len(UP_TO_THE_IMAGE))
    after_image = SUCCESS[len(UP_TO_THE_IMAGE):image_done + 1]
    assert recorder.seen == [*UP_TO_THE_IMAGE, *after_image, ("StatusMsg", 27)]
    assert phone.asr_received == digest(image)
    wait_until(lambda: phone.mode is Mode.RECOVERY and bench.world.device_of(phone) is not None)


def test_pulled_during_asr(restoring, image):
    phone, bench, recorder = restoring(restore_fault="pulled-during-asr")

    with pytest.raises(ConnectionTerminatedError):
        run(recorder.restore_device())

    assert recorder.seen == UP_TO_THE_IMAGE
    # pmd3's send_filesystem may or may not notice: a small image fits in the socket buffers.
    size, _ = phone.asr_received
    assert IMAGE_SIZE // 2 <= size < IMAGE_SIZE
    assert phone.asr_received == digest(image[:size])
    assert bench.world.device_of(phone) is None  # off the bus, not rebooting
