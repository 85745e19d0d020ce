"""The real restore: pymobiledevice3's ``Restore`` (Erase, local IPSW, pinned to the phone's ECID).

Imported by the fork server before any fork, so everything here is loaded once. What it
changes in pymobiledevice3 (progress bars, USB waits, network timeouts) it changes in the
worker process only, when ``run`` starts.

Every wait has a bound (the constants below, each with where the real tools' bound comes
from), and a cryptex goes to the phone from the IPSW member, never whole in memory.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from types import ModuleType
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import requests
import usb.core
from ipsw_parser.ipsw import IPSW
from pymobiledevice3 import irecv
from pymobiledevice3 import usbmux
from pymobiledevice3.exceptions import MuxException, PairingDialogResponsePendingError, PasswordRequiredError
from pymobiledevice3.irecv import IRecv
from pymobiledevice3.lockdown import LockdownClient, create_using_usbmux
from pymobiledevice3.progress import BYTES_UNIT
from pymobiledevice3.restore import recovery, restore, tss
from pymobiledevice3.restore.base_restore import Behavior
from pymobiledevice3.restore.device import Device
from pymobiledevice3.restore.restore import FILE_DATA_FORMAT, Restore, known_errors
from pymobiledevice3.service_connection import ServiceConnection

from hw.iphone.usb_scan import APPLE_VENDOR_ID, DFU_PRODUCT_IDS, RECOVERY_PRODUCT_IDS
from hw.ipsw_archive import open_for_restore
from hw.phones import Mode
from hw.sim.usb_remote import RemoteUsbBackend
from hw.worker import bars, phases
from hw.worker.messages import Failed, Kind, WorkerFailure
from hw.worker.reporter import Reporter
from hw.worker.request import RestoreRequest

log = logging.getLogger(__name__)

PAIR_ATTEMPT = 5.0  # s of one pairing attempt while the operator unlocks and taps Trust
TRUST_POLL = 2.0  # s between pairing attempts
REJECTION_GRACE = 15.0  # s restored gets to drop the connection after a non-zero StatusMsg
# s for one whole HTTP request to Apple (name lookup, connect, every read): neither pymobiledevice3
# (tss.py TSSRequest.send_receive) nor libtatsu (tss.c tss_request_send, curl) sets any; ours, twice
# the 30 s pymobiledevice3 gives each activation POST (services/mobile_activation.py).
NETWORK_TIMEOUT = 60.0
# s a DFU upload may stay short of dfuDNLOAD-IDLE: libirecovery (irecv_send_buffer) polls DFU_GETSTATUS
# 20 times 1 s apart, then fails with IRECV_E_USB_UPLOAD; pymobiledevice3 (irecv.py send_buffer) polls for ever.
DFU_STATUS_TIMEOUT = 20.0
# s of Trust dialog when boot_ramdisk opens a fresh lockdown session before EnterRecovery (pymobiledevice3
# passes pair_timeout=None: for ever). idevicerestore (normal.c normal_enter_recovery) tries one handshake
# and gives up; the station's retry then pairs through _paired_lockdown, with the operator told.
RECOVERY_PAIR_TIMEOUT = 0.0
# s for the phone to appear on usbmuxd in restore mode after bootx: idevicerestore (idevicerestore.c,
# "Waiting for device to enter restore mode", 300000 ms). pymobiledevice3 (restore.py
# _connect_to_restored_service) retries every second for ever, and usbmuxd may never list the phone
# again (usbmuxd issue #147).
RESTORED_TIMEOUT = 300.0
USB_SCAN_PAUSE = 0.1  # s between two USB bus scans while waiting for the phone
TRANSIENT_STATUSES = {53}  # "failed to recover FDR data": restored needed Apple through the host
# TSS answers Apple sends when it will not sign this build for this device ("This device isn't eligible
# for the requested build."): libtatsu (tss.c tss_request_send) stops retrying at any STATUS, these included.
NOT_SIGNED_STATUSES = {69, 94}
DFU_DNLOAD_IDLE = 5  # DFU state after a block is taken (USB DFU 1.1, appendix A.1)
FILE_DATA_CHUNK = 8192  # bytes per FileData plist: pymobiledevice3 send_source_boot_object_v4, idevicerestore
SMALL_BOOT_OBJECTS = {"__GlobalManifest__", "__RestoreVersion__", "__SystemVersion__"}  # plists and tickets
_FOREVER = 0xFFFFFFFF  # IRecv's default timeout, in seconds (136 years)


class NotSigned(Exception):
    """Apple's signing server will not sign this build for this phone: final, never retried."""


class ReportingRestore(Restore):
    """``Restore`` whose restored-message handlers report phases, percent and failures."""

    def __init__(self, ipsw: IPSW, device: Device, reporter: Reporter) -> None:
        super().__init__(ipsw, device, behavior=Behavior.Erase)
        self.reporter = reporter
        self.rejection: Failed | None = None
        self.rejected = asyncio.Event()
        for name, phase in (("dfu_enter_recovery", phases.SEND_IBSS), ("send_ibec", phases.SEND_IBEC),
                            ("enter_restore", phases.BOOT_RAMDISK)):
            setattr(self.recovery, name, self._announcing(phase, getattr(self.recovery, name)))

    def _announcing(self, phase: str, step: Any) -> Any:
        async def announced(*args: Any, **kwargs: Any) -> Any:
            self.reporter.phase(phase)
            return await step(*args, **kwargs)
        return announced

    async def handle_progress_msg(self, message: dict[str, Any]) -> None:
        # Not super(): it only logs, or opens a bar for VERIFY_RESTORE, which this replaces.
        operation, progress = message.get("Operation"), message.get("Progress")
        phase = phases.OPERATION_PHASES.get(operation)  # type: ignore[arg-type]
        if phase is None:
            log.debug("progress: %s", message)
            return
        valid = isinstance(progress, (int, float)) and not isinstance(progress, bool) and 0 <= progress <= 100
        self.reporter.phase(phase, float(progress) if valid else 0.0)

    async def handle_status_msg(self, message: dict[str, Any]) -> None:
        await super().handle_status_msg(message)  # status 0: acknowledges the final status
        status = message.get("Status")
        if status == 0:
            return
        # restored keeps the connection open for a while after a failure: remember it and let
        # run() stop waiting (pymobiledevice3's loop would only end when the phone hangs up).
        text = known_errors.get(status, "unknown error")  # type: ignore[call-overload]
        self.reporter.status(f"restored: {text}", status if isinstance(status, int) else None)
        self.rejection = Failed(f"phone reported restore status {status}: {text}", Kind.DEVICE_REJECTED,
                                status in TRANSIENT_STATUSES)
        self.rejected.set()

    async def handle_checkpoint_msg(self, message: dict[str, Any]) -> None:
        await super().handle_checkpoint_msg(message)
        result = message.get("CHECKPOINT_RESULT")
        if message.get("CHECKPOINT_COMPLETE") and isinstance(result, int) and result != 0:
            name = message.get("CHECKPOINT_NAME") or f"0x{message.get('CHECKPOINT_ID', 0):x}"
            self.reporter.status(f"restored checkpoint {name} failed", result)

    async def _connect_to_restored_service(self) -> None:
        try:
            async with asyncio.timeout(RESTORED_TIMEOUT):  # not wait_for: it can swallow a cancel
                await super()._connect_to_restored_service()
        except TimeoutError:
            raise WorkerFailure(Failed(f"phone did not come back in restore mode within {RESTORED_TIMEOUT:g} s "
                                       "(usbmuxd does not list it)", Kind.USB, True)) from None

    async def send_source_boot_object_v4(self, message: dict[str, Any]) -> None:
        """A component (a cryptex: 1.6 GB in idevicerestore issue #736) streamed from its IPSW member.

        pymobiledevice3 reads it whole first, which ran hosts with several restores out of memory
        (idevicerestore issues #529, #521); idevicerestore now streams it too (restore.c
        restore_send_source_boot_object_v4, ipsw_extract_send). The plists on the wire are the same.
        """
        image_name = message["Arguments"]["ImageName"]
        if image_name in SMALL_BOOT_OBJECTS:
            await super().send_source_boot_object_v4(message)
            return
        service = await self._get_service_for_data_request(message)
        identity = await self.get_build_identity_from_request(message)
        path = identity.get_component(image_name, tss=self.recovery.tss).path
        self.logger.info(f"Sending {image_name} now...")
        with self.ipsw.open_path(path) as member:
            await self._send_file_data(service, member, image_name)
        await service.send_plist({"FileDataDone": True})
        self.logger.info(f"Done sending {image_name}")

    async def _send_file_data(self, service: ServiceConnection, member: BinaryIO, name: str) -> None:
        """pymobiledevice3's FileData loop (send_source_boot_object_v4), fed from ``member``."""
        size = member.seek(0, os.SEEK_END)  # O(1) on a stored member (hw.ipsw_archive)
        member.seek(0)
        sent = 0
        with restore.ProgressBar(total=size, desc=name, unit=BYTES_UNIT) as bar:
            while chunk := member.read(FILE_DATA_CHUNK):
                await service.send_plist({"FileData": chunk}, fmt=FILE_DATA_FORMAT)
                bar.update(len(chunk))
                if sent == 0 and chunk.startswith(b"AEA1"):
                    await self._answer_url_asset(service)
                sent += len(chunk)

    async def _answer_url_asset(self, service: ServiceConnection) -> None:
        # As pymobiledevice3 does after an Apple Encrypted Archive's first chunk: restored may ask
        # for the URLAsset that holds its key, within 3 s; anything else is taken as "not needed".
        try:
            async with asyncio.timeout(3):
                message = await service.recv_plist()
            if message["MsgType"] != "URLAsset":
                raise TimeoutError
            await self.send_url_asset(message)
        except TimeoutError:
            self.logger.debug("No URLAsset was requested. Assuming it is not necessary")


async def run(request: RestoreRequest, reporter: Reporter) -> None:
    if request.ecid is None or request.ipsw is None:
        raise WorkerFailure(Failed("a real restore needs the phone's ECID and an IPSW", Kind.INTERNAL, False))
    _adapt_pymobiledevice3(reporter, request.usb_timeout, request.signing_url)
    ipsw = open_for_restore(request.ipsw)
    device = await _connect(request, reporter)
    restoring = ReportingRestore(ipsw, device, reporter)
    try:
        await _update(restoring, request.label)
    except NotSigned:
        raise WorkerFailure(await _not_signed(restoring)) from None


async def _not_signed(restoring: ReportingRestore) -> Failed:
    build = restoring.ipsw.build_manifest.product_build_version
    product_type = await restoring.device.get_product_type()
    return Failed(f"NOT SIGNED {build}: Apple no longer signs it; add a signed IPSW for {product_type} "
                  "(station ipsw add)", Kind.DEVICE_REJECTED, False)




async def _connect(request: RestoreRequest, reporter: Reporter) -> Device:
    assert request.ecid is not None
    mode = request.mode
    if mode is Mode.NORMAL:
        mode = await _where_now(request)
    if mode is Mode.NORMAL:
        lockdown = await _paired_lockdown(request, reporter)
        if lockdown.ecid != request.ecid:
            await lockdown.close()
            raise WorkerFailure(Failed(f"{request.udid} is ECID {lockdown.ecid:X}, not {request.ecid:X}",
                                       Kind.INTERNAL, False))
        # Restore.update() reads PreflightInfo over this session, then sends EnterRecovery on a
        # fresh one (paired by now: no dialog) and follows the phone by ECID into recovery.
        reporter.phase(phases.ENTER_RECOVERY)
        return Device(lockdown=lockdown)
    reporter.phase(phases.SEND_IBSS if mode is Mode.DFU else phases.SEND_IBEC)
    return Device(irecv=await asyncio.to_thread(_BoundedIRecv, ecid=request.ecid))


async def _where_now(request: RestoreRequest) -> Mode:
    """Where a phone asked for in iOS is: a retry may meet it in iBoot, or still rebooting there.

    restored reboots into recovery after a non-zero status (auto-boot is off by then): follow the
    phone by ECID on USB; wait for it (bounded) while it is on neither usbmuxd nor USB.
    """
    assert request.ecid is not None
    deadline = time.monotonic() + request.usb_timeout
    while True:
        mode = await asyncio.to_thread(_iboot_mode, request.ecid)
        if mode is not None:
            log.info("the phone is in %s, not iOS: restoring from there", mode.value)
            return mode
        if await _on_usbmux(request.udid) or time.monotonic() >= deadline:
            return Mode.NORMAL  # past the deadline the usbmux path fails in its own words
        await asyncio.sleep(TRUST_POLL / 4)


async def _on_usbmux(udid: str) -> bool:
    try:
        devices = await usbmux.list_devices()
    except (MuxException, OSError):  # usbmuxd not running (Debian's exits with the last phone)
        return False
    return any(device.serial.replace("-", "") == udid.replace("-", "") for device in devices)


def _iboot_mode(ecid: int) -> Mode | None:
    """Recovery or DFU when the phone with ``ecid`` is on USB in iBoot now; None otherwise (one scan)."""
    wanted = f"ECID:{ecid:016X}"
    for device in _paced_find(find_all=True, idVendor=APPLE_VENDOR_ID):
        mode = (Mode.DFU if device.idProduct in DFU_PRODUCT_IDS
                else Mode.RECOVERY if device.idProduct in RECOVERY_PRODUCT_IDS else None)
        with contextlib.suppress(ValueError, usb.core.USBError):  # re-enumerating: not there
            if mode is not None and wanted in (device.serial_number or ""):
                return mode
    return None


async def _paired_lockdown(request: RestoreRequest, reporter: Reporter) -> LockdownClient:
    """A paired lockdown session; a passcode-locked phone waits (bounded) for unlock and Trust."""
    deadline = time.monotonic() + request.trust_timeout
    asked = False
    while True:
        try:
            return await create_using_usbmux(serial=request.udid, connection_type="USB", autopair=True,
                                             pair_timeout=PAIR_ATTEMPT)
        except (PasswordRequiredError, PairingDialogResponsePendingError) as error:
            if time.monotonic() >= deadline:
                raise
            if not asked:
                log.info("waiting for the operator to unlock the phone and tap Trust (%s)", error)
                reporter.trust()
                asked = True
            await asyncio.sleep(TRUST_POLL)


async def _update(restore: ReportingRestore, label: str) -> None:
    update = asyncio.create_task(restore.update(), name=label)  # pmd3 names its loggers after the task
    rejected = asyncio.create_task(restore.rejected.wait())
    try:
        await asyncio.wait({update, rejected}, return_when=asyncio.FIRST_COMPLETED)
        if not update.done():
            await asyncio.wait({update}, timeout=REJECTION_GRACE)
        if restore.rejection is not None:
            raise WorkerFailure(restore.rejection)
        update.result()
    finally:
        for task in (update, rejected, *restore._tasks):  # FDR and async data requests outlive update()
            task.cancel()
        await asyncio.gather(update, rejected, *restore._tasks, return_exceptions=True)


class _BoundedIRecv(IRecv):
    """IRecv whose waits for the phone end after ``limit`` seconds (pmd3 passes no timeout), and
    whose DFU uploads end after DFU_STATUS_TIMEOUT if the phone never reports the block taken."""

    limit: float = 120.0
    _busy_since: float | None

    def _reinit(self, ecid: int | None = None, timeout: float = _FOREVER, is_recovery: bool | None = None) -> None:
        self._busy_since = None  # every upload (and send_buffer's final reset) starts a fresh wait
        super()._reinit(ecid=ecid, timeout=self.limit if timeout == _FOREVER else timeout,  # type: ignore[arg-type]
                        is_recovery=is_recovery)

    @property
    def status(self) -> int:
        # send_buffer reads this every second "until 5"; the clock starts at the first other state.
        state = int(super().status)
        if state == DFU_DNLOAD_IDLE:
            self._busy_since = None
        elif self._busy_since is None:
            self._busy_since = time.monotonic()
        elif time.monotonic() - self._busy_since >= DFU_STATUS_TIMEOUT:
            raise WorkerFailure(Failed(f"phone in DFU mode did not take the upload (still in DFU state {state} "
                                       f"after {DFU_STATUS_TIMEOUT:g} s)", Kind.USB, True))
        return state


async def _lockdown_for_recovery(*args: Any, **kwargs: Any) -> LockdownClient:
    """What Recovery.boot_ramdisk calls as create_using_usbmux, with its Trust wait bounded."""
    try:
        return await create_using_usbmux(*args, **{**kwargs, "pair_timeout": RECOVERY_PAIR_TIMEOUT})
    except PairingDialogResponsePendingError:
        raise WorkerFailure(Failed("phone no longer trusts this station (Trust dialog on the way to recovery): "
                                   "unlock it and tap Trust", Kind.TIMEOUT, True)) from None


_usb_backend: Any = None  # libusb on a station; the simulated bus's bridge in a simulation


def _paced_find(*args: Any, **kwargs: Any) -> Any:
    # IRecv._find calls this in a loop with no pause: one core per waiting worker without it.
    time.sleep(USB_SCAN_PAUSE)
    if _usb_backend is not None:
        kwargs["backend"] = _usb_backend
    return usb.core.find(*args, **kwargs)


def _bounded(call: Callable[..., requests.Response], url: str, **kwargs: Any) -> requests.Response:
    """``call(url, ...)`` given up after NETWORK_TIMEOUT s, however slowly the server trickles its answer.

    requests' own timeout bounds each read, not the request. The call runs in a daemon thread;
    one given up on ends at its own per-read timeout.
    """
    answer: Future[requests.Response] = Future()

    def attempt() -> None:
        try:
            answer.set_result(call(url, **{"timeout": NETWORK_TIMEOUT, **kwargs}))
        except BaseException as error:  # handed to the waiting caller
            answer.set_exception(error)

    threading.Thread(target=attempt, name="bounded-http", daemon=True).start()
    try:
        return answer.result(timeout=NETWORK_TIMEOUT)
    except (TimeoutError, requests.exceptions.Timeout):  # whichever bound came first: one reason
        raise requests.exceptions.Timeout(
            f"no complete answer from {urlsplit(url).hostname} within {NETWORK_TIMEOUT:g} s") from None


class _BoundedRequests(ModuleType):
    """``requests`` as pymobiledevice3's restore modules see it: every request ends within NETWORK_TIMEOUT."""

    def __init__(self) -> None:
        super().__init__("requests")

    def __getattr__(self, name: str) -> Any:
        return getattr(requests, name)

    @staticmethod
    def post(url: str, **kwargs: Any) -> requests.Response:
        return _bounded(requests.post, url, **kwargs)

    @staticmethod
    def get(url: str, **kwargs: Any) -> requests.Response:
        return _bounded(requests.get, url, **kwargs)


class _TssRequests(_BoundedRequests):
    """``requests`` as tss.py sees it: bounded, and the answer judged as libtatsu does (tss_request_send)."""

    @staticmethod
    def post(url: str, **kwargs: Any) -> requests.Response:
        response = _bounded(requests.post, url, **kwargs)
        status = re.search(rb"STATUS=(\d+)", response.content)
        if status is None:
            # A proxy's error page, a 5xx, a cut answer: libtatsu asks again; pymobiledevice3 would
            # fail on an IndexError.
            raise requests.exceptions.HTTPError(
                f"{urlsplit(url).hostname} answered HTTP {response.status_code} without a TSS status",
                response=response)
        if int(status.group(1)) in NOT_SIGNED_STATUSES:
            raise NotSigned(response.content.decode(errors="replace"))
        return response


def _adapt_pymobiledevice3(reporter: Reporter, usb_timeout: float, signing_url: str) -> None:
    """Bars -> percent lines; bounded, paced USB waits; bounded pairing; bounded, judged HTTP;
    the configured signing server. This process only."""
    bars.install(reporter)
    _BoundedIRecv.limit = usb_timeout
    recovery.IRecv = _BoundedIRecv  # type: ignore[misc]
    recovery.create_using_usbmux = _lockdown_for_recovery  # type: ignore[assignment]
    global _usb_backend
    _usb_backend = RemoteUsbBackend.from_environment()  # None: pyusb picks libusb
    irecv.find = _paced_find  # type: ignore[attr-defined]
    tss.requests = _TssRequests()  # type: ignore[attr-defined]
    tss.TSS_CONTROLLER_ACTION_URL = signing_url  # read by TSSRequest.send_receive at each request
    restore.requests = _BoundedRequests()  # type: ignore[attr-defined]
