"""The real restore: pymobiledevice3's ``Restore`` (Erase, local IPSW, pinned to the phone's ECID).

Imported by the fork server before any fork, so everything here is loaded once. What it
changes in pymobiledevice3 (progress bars, USB waits, network timeouts) it changes in the
worker process only, when ``run`` starts.
"""
from __future__ import annotations

import asyncio
import logging
import time
from types import ModuleType
from typing import Any

import requests
import usb.core
from ipsw_parser.ipsw import IPSW
from pymobiledevice3 import irecv
from pymobiledevice3.exceptions import PairingDialogResponsePendingError, PasswordRequiredError
from pymobiledevice3.irecv import IRecv
from pymobiledevice3.lockdown import LockdownClient, create_using_usbmux
from pymobiledevice3.restore import recovery, restore, tss
from pymobiledevice3.restore.base_restore import Behavior
from pymobiledevice3.restore.device import Device
from pymobiledevice3.restore.restore import Restore, known_errors

from hw.phones import Mode
from station.worker import bars, phases
from station.worker.messages import Failed, Kind, WorkerFailure
from station.worker.reporter import Reporter
from station.worker.request import RestoreRequest

log = logging.getLogger(__name__)

PAIR_ATTEMPT = 5.0  # s of one pairing attempt while the operator unlocks and taps Trust
TRUST_POLL = 2.0  # s between pairing attempts
REJECTION_GRACE = 15.0  # s restored gets to drop the connection after a non-zero StatusMsg
NETWORK_TIMEOUT = 60.0  # s for any HTTP request to Apple (pymobiledevice3 sets none on TSS)
USB_SCAN_PAUSE = 0.1  # s between two USB bus scans while waiting for the phone
TRANSIENT_STATUSES = {53}  # "failed to recover FDR data": restored needed Apple through the host
_FOREVER = 0xFFFFFFFF  # IRecv's default timeout, in seconds (136 years)


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


async def run(request: RestoreRequest, reporter: Reporter) -> None:
    if request.ecid is None or request.ipsw is None:
        raise WorkerFailure(Failed("a real restore needs the phone's ECID and an IPSW", Kind.INTERNAL, False))
    _adapt_pymobiledevice3(reporter, request.usb_timeout)
    ipsw = open_ipsw(request.ipsw)
    device = await _connect(request, reporter)
    await _update(ReportingRestore(ipsw, device, reporter), request.label)


def open_ipsw(path: str) -> IPSW:
    try:
        from station.ipsw.reader import open_for_restore
    except ImportError:
        # Without the IPSW cache's reader ipsw_parser reads through zipfile: correct, but each
        # seek on the OS image re-reads it up to the target (Python 3.11 ZipExtFile.seek).
        return IPSW.create_from_path(path)
    return open_for_restore(path)


async def _connect(request: RestoreRequest, reporter: Reporter) -> Device:
    assert request.ecid is not None
    if request.mode is Mode.NORMAL:
        lockdown = await _paired_lockdown(request, reporter)
        if lockdown.ecid != request.ecid:
            await lockdown.close()
            raise WorkerFailure(Failed(f"{request.udid} is ECID {lockdown.ecid:X}, not {request.ecid:X}",
                                       Kind.INTERNAL, False))
        # Restore.update() reads PreflightInfo over this session, then sends EnterRecovery on a
        # fresh one (paired by now: no dialog) and follows the phone by ECID into recovery.
        reporter.phase(phases.ENTER_RECOVERY)
        return Device(lockdown=lockdown)
    reporter.phase(phases.SEND_IBSS if request.mode is Mode.DFU else phases.SEND_IBEC)
    return Device(irecv=await asyncio.to_thread(_BoundedIRecv, ecid=request.ecid))


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
    """IRecv whose waits for the phone end after ``limit`` seconds (pmd3 passes no timeout)."""

    limit: float = 120.0

    def _reinit(self, ecid: int | None = None, timeout: float = _FOREVER, is_recovery: bool | None = None) -> None:
        super()._reinit(ecid=ecid, timeout=self.limit if timeout == _FOREVER else timeout,  # type: ignore[arg-type]
                        is_recovery=is_recovery)


def _paced_find(*args: Any, **kwargs: Any) -> Any:
    # IRecv._find calls this in a loop with no pause: one core per waiting worker without it.
    time.sleep(USB_SCAN_PAUSE)
    return usb.core.find(*args, **kwargs)


class _RequestsWithTimeout(ModuleType):
    """``requests`` as pymobiledevice3's restore modules see it: every call gets a timeout."""

    def __init__(self) -> None:
        super().__init__("requests")

    def __getattr__(self, name: str) -> Any:
        return getattr(requests, name)

    @staticmethod
    def post(*args: Any, **kwargs: Any) -> requests.Response:
        return requests.post(*args, **{"timeout": NETWORK_TIMEOUT, **kwargs})

    @staticmethod
    def get(*args: Any, **kwargs: Any) -> requests.Response:
        return requests.get(*args, **{"timeout": NETWORK_TIMEOUT, **kwargs})


def _adapt_pymobiledevice3(reporter: Reporter, usb_timeout: float) -> None:
    """Bars -> percent lines; bounded, paced USB waits; no unbounded HTTP. This process only."""
    bars.install(reporter)
    _BoundedIRecv.limit = usb_timeout
    recovery.IRecv = _BoundedIRecv  # type: ignore[misc]
    irecv.find = _paced_find  # type: ignore[attr-defined]
    for module in (tss, restore):
        module.requests = _RequestsWithTimeout()  # type: ignore[attr-defined]
