"""Every wait of the real worker ends, with a Failed line an operator can act on.

Each wait is made to happen in pymobiledevice3's own code; only the lowest boundary is
simulated (a pyusb backend, usbmuxd's socket). Bounds are shrunk through the module
constants so the tests take about a second each.
"""
from __future__ import annotations

import asyncio
import threading
import time
from array import array
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from pymobiledevice3.lockdown import create_using_usbmux
from pymobiledevice3.restore import tss
from pymobiledevice3.restore.tss import TSSResponse

from hw.sim import Mode, Pairing, SimPhone, SimUsbBackend
from hw.worker import real
from hw.worker.messages import Kind, WorkerFailure

T = TypeVar("T")
DFU_DNLOAD, DFU_GETSTATUS = 1, 3
DFU_DNBUSY = 4  # DFU state "download busy" (USB DFU 1.1, table A.1)
POLL = 1.0  # pymobiledevice3 sleeps 1 s between two polls in each of these loops


def ends_within(seconds: float, work: Callable[[], T]) -> T:
    """``work()`` in a thread: its result or exception, or a test failure if it is still waiting."""
    outcome: list[Any] = []

    def attempt() -> None:
        try:
            outcome.append((True, work()))
        except BaseException as error:  # handed to the test thread below
            outcome.append((False, error))

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(seconds)
    if not outcome:
        pytest.fail(f"still waiting after {seconds} s")
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


class BusyDfuPhone(SimUsbBackend):
    """A DFU phone that takes every upload block, then stays dfuDNBUSY on every DFU_GETSTATUS."""

    statuses = 0

    def ctrl_transfer(self, dev_handle: Any, bmRequestType: int, bRequest: int, wValue: int, wIndex: int,
                      data: array, timeout: int) -> int:
        if dev_handle.device.mode is Mode.DFU and (bmRequestType, bRequest) == (0x21, DFU_DNLOAD):
            return len(data)
        if dev_handle.device.mode is Mode.DFU and (bmRequestType, bRequest) == (0xA1, DFU_GETSTATUS):
            BusyDfuPhone.statuses += 1
            data[:6] = array("B", [0, 0, 0, 0, DFU_DNBUSY, 0])
            return 6
        return super().ctrl_transfer(dev_handle, bmRequestType, bRequest, wValue, wIndex, data, timeout)


def test_dfu_upload_gives_up_when_the_phone_stays_busy(bench_with, monkeypatch):
    phone = SimPhone(ecid=0xD1, serial="F17000000D1", mode=Mode.DFU)
    bench_with(phone, usb_backend=BusyDfuPhone)
    monkeypatch.setattr(real, "DFU_STATUS_TIMEOUT", 0.5)
    device = real._BoundedIRecv(ecid=phone.ecid)
    started = time.monotonic()

    with pytest.raises(WorkerFailure) as caught:
        ends_within(5, lambda: device.send_buffer(b"iBSS" * 1000))  # pmd3 polls GETSTATUS until state 5

    assert time.monotonic() - started < 0.5 + POLL + 2  # slack for a busy machine
    assert BusyDfuPhone.statuses >= 2
    failed = caught.value.failed
    assert (failed.kind, failed.retryable) == (Kind.USB, True)
    assert failed.reason == "phone in DFU mode did not take the upload (still in DFU state 4 after 0.5 s)"


async def test_pairing_on_the_way_to_recovery_gives_up(bench_with, manifest_ipsw, make_restore, pipe,
                                                       pmd3_patched, monkeypatch):
    """boot_ramdisk opens a fresh lockdown session with pair_timeout=None: a phone that forgot the
    station shows the Trust dialog, and pymobiledevice3 would wait on it for ever."""
    phone = SimPhone(ecid=0xA1, serial="F17000000A1", product_type="iPhone14,3")
    bench_with(phone)
    lockdown = await create_using_usbmux(serial=phone.udid, connection_type="USB")  # paired
    restore = make_restore(manifest_ipsw, real.Device(lockdown=lockdown))
    restore.recovery.tss = TSSResponse({"ApImg4Ticket": b"ticket"})  # signed already: straight to recovery
    phone.paired_hosts.clear()
    phone.pairing, phone.dialog_tries = Pairing.DIALOG, 10**6  # nobody taps Trust
    real._adapt_pymobiledevice3(pipe.reporter, usb_timeout=5, signing_url=tss.TSS_CONTROLLER_ACTION_URL)
    monkeypatch.setattr(real, "RECOVERY_PAIR_TIMEOUT", 0.5)
    started = time.monotonic()

    with pytest.raises(WorkerFailure) as caught:
        await asyncio.wait_for(restore.recovery.boot_ramdisk(), 5)

    assert time.monotonic() - started < 0.5 + POLL + 2  # slack for a busy machine
    assert phone.requests().count("Pair") >= 2  # pymobiledevice3's own dialog loop ran
    failed = caught.value.failed
    assert (failed.kind, failed.retryable) == (Kind.TIMEOUT, True)
    assert failed.reason == "phone no longer trusts this station (Trust dialog on the way to recovery): " \
                            "unlock it and tap Trust"


async def test_pairing_on_the_way_to_recovery_waits_no_dialog_by_default(bench_with, pipe, pmd3_patched):
    phone = SimPhone(ecid=0xA2, serial="F17000000A2", pairing=Pairing.DIALOG, dialog_tries=10**6)
    bench_with(phone)
    real._adapt_pymobiledevice3(pipe.reporter, usb_timeout=5, signing_url=tss.TSS_CONTROLLER_ACTION_URL)

    with pytest.raises(WorkerFailure):
        await asyncio.wait_for(real.recovery.create_using_usbmux(serial=phone.udid, connection_type="USB"), 5)
    assert phone.requests().count("Pair") == 1  # idevicerestore: one handshake, no dialog wait


async def test_waiting_for_restore_mode_gives_up(bench_with, manifest_ipsw, make_restore, fake_irecv,
                                                 monkeypatch):
    bench_with()  # usbmuxd runs, and lists no phone: the phone never comes back in restore mode
    restore = make_restore(manifest_ipsw, real.Device(irecv=fake_irecv))
    monkeypatch.setattr(real, "RESTORED_TIMEOUT", 0.5)
    started = time.monotonic()

    with pytest.raises(WorkerFailure) as caught:
        await asyncio.wait_for(restore.restore_device(), 5)

    assert time.monotonic() - started < 0.5 + 2  # slack for a busy machine
    failed = caught.value.failed
    assert (failed.kind, failed.retryable) == (Kind.USB, True)
    assert failed.reason == "phone did not come back in restore mode within 0.5 s (usbmuxd does not list it)"
