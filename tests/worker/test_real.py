"""The real engine, as far as it runs without a phone: handlers, bars, pairing wait, classification."""
from __future__ import annotations

import asyncio
import errno

import pytest
import requests
import usb.core
from pymobiledevice3 import exceptions as pmd3
from pymobiledevice3 import irecv
from pymobiledevice3.restore import asr, recovery, restore, tss

from hw.phones import Mode
from hw.worker import bars, phases, real
from hw.worker.classify import classify
from hw.worker.messages import Done, Failed, Kind, Phase, Status, Trust, WorkerFailure
from hw.worker.request import RestoreRequest


def test_progress_messages_become_phase_lines(reporting_restore, pipe):
    async def feed() -> None:
        for operation, progress in [(11, -1), (13, 10), (13, 60), (13, 40), (14, 50), (14, 100), (99, 5), (77, 30)]:
            await reporting_restore.handle_progress_msg({"MsgType": "ProgressMsg", "Operation": operation,
                                                         "Progress": progress})

    asyncio.run(feed())
    assert pipe.messages() == [
        Phase(phases.PREPARE_DISK, 0), Phase(phases.RESTORE_IMAGE, 10), Phase(phases.RESTORE_IMAGE, 60),
        Phase(phases.VERIFY_RESTORE, 50), Phase(phases.VERIFY_RESTORE, 100), Phase(phases.SEAL_SYSTEM_VOLUME, 30),
    ]


def test_final_status_zero_is_acknowledged_and_nonzero_is_a_rejection(reporting_restore, pipe):
    asyncio.run(reporting_restore.handle_status_msg({"MsgType": "StatusMsg", "Status": 0}))
    assert reporting_restore._restored.sent == [{"MsgType": "ReceivedFinalStatusMsg"}]
    assert reporting_restore.rejection is None

    asyncio.run(reporting_restore.handle_status_msg({"MsgType": "StatusMsg", "Status": 6, "Log": "..."}))
    assert pipe.messages() == [Status("restored: disk failure", 6)]
    assert reporting_restore.rejection == Failed("phone reported restore status 6: disk failure",
                                                 Kind.DEVICE_REJECTED, False)
    assert reporting_restore.rejected.is_set()


def test_fdr_status_is_a_transient_rejection(reporting_restore):
    asyncio.run(reporting_restore.handle_status_msg({"MsgType": "StatusMsg", "Status": 53}))
    assert reporting_restore.rejection.retryable


def test_failed_checkpoint_becomes_a_status_line(reporting_restore, pipe):
    async def feed() -> None:
        await reporting_restore.handle_checkpoint_msg({"CHECKPOINT_ID": 0x603, "CHECKPOINT_COMPLETE": False})
        await reporting_restore.handle_checkpoint_msg({"CHECKPOINT_ID": 0x603, "CHECKPOINT_NAME": "erase",
                                                       "CHECKPOINT_COMPLETE": True, "CHECKPOINT_RESULT": 5})

    asyncio.run(feed())
    assert pipe.messages() == [Status("restored checkpoint erase failed", 5)]


def test_recovery_steps_announce_their_phase(reporting_restore, pipe):
    async def step() -> str:
        return "sent"

    for name in ("dfu_enter_recovery", "send_ibec", "enter_restore"):
        assert getattr(reporting_restore.recovery, name).__name__ == "announced", name
    announced = reporting_restore._announcing(phases.SEND_IBEC, step)
    assert asyncio.run(announced()) == "sent"
    assert pipe.messages() == [Phase(phases.SEND_IBEC, 0)]


def test_a_rejection_ends_the_wait_for_restored(reporting_restore, monkeypatch):
    async def hangs() -> None:
        await reporting_restore.handle_status_msg({"MsgType": "StatusMsg", "Status": 14})
        await asyncio.sleep(3600)  # pmd3 would read on until the phone hangs up

    monkeypatch.setattr(real, "REJECTION_GRACE", 0.1)
    monkeypatch.setattr(reporting_restore, "update", hangs)
    with pytest.raises(WorkerFailure) as caught:
        asyncio.run(real._update(reporting_restore, "slot1"))
    assert caught.value.failed.kind is Kind.DEVICE_REJECTED


def test_bars_report_percent_and_draw_nothing(pmd3_patched, pipe, capfd):
    real._adapt_pymobiledevice3(pipe.reporter, usb_timeout=5, signing_url=tss.TSS_CONTROLLER_ACTION_URL)
    assert asr.ProgressBar is bars.ReportingBar and irecv.ProgressBar is bars.ReportingBar
    with asr.ProgressBar(total=1000, desc="filesystem", unit="B") as bar:
        for _ in range(4):
            bar.update(250)
    with irecv.ProgressBar(total=10, desc="RestoreLogo", unit="B") as bar:
        bar.update(10)  # not worth a phase
    verify = restore.ProgressBar(total=100, desc="verify restore")
    verify.n = 40
    verify.close()
    assert pipe.messages() == [Phase(phases.RESTORE_IMAGE, p) for p in (0, 25, 50, 75, 100)] + [
        Phase(phases.VERIFY_RESTORE, 40)]
    assert capfd.readouterr() == ("", "")


def test_usb_waits_are_bounded(pmd3_patched, pipe, monkeypatch):
    real._adapt_pymobiledevice3(pipe.reporter, usb_timeout=0.3, signing_url=tss.TSS_CONTROLLER_ACTION_URL)
    monkeypatch.setattr(real, "USB_SCAN_PAUSE", 0.05)
    monkeypatch.setattr(usb.core, "find", lambda **kwargs: [])  # an empty bus
    with pytest.raises(pmd3.IRecvNoDeviceConnectedError):
        recovery.IRecv(ecid=0x1234)  # what pmd3 calls, without a timeout
    assert tss.requests.post is not requests.post


def test_passcode_locked_phone_asks_for_trust_once_then_pairs(pipe, monkeypatch):
    attempts = []

    async def create_using_usbmux(**kwargs):
        attempts.append(kwargs)
        if len(attempts) < 3:
            raise pmd3.PasswordRequiredError()
        return "lockdown"

    monkeypatch.setattr(real, "create_using_usbmux", create_using_usbmux)
    monkeypatch.setattr(real, "TRUST_POLL", 0.01)
    request = RestoreRequest("slot1", "/unused", mode=Mode.NORMAL, udid="00008110-0001", ecid=1)
    assert asyncio.run(real._paired_lockdown(request, pipe.reporter)) == "lockdown"
    assert pipe.messages() == [Trust()]
    assert all(a["pair_timeout"] == real.PAIR_ATTEMPT and a["serial"] == request.udid for a in attempts)


def test_trust_wait_is_bounded(pipe, monkeypatch):
    async def create_using_usbmux(**kwargs):
        raise pmd3.PairingDialogResponsePendingError()

    monkeypatch.setattr(real, "create_using_usbmux", create_using_usbmux)
    monkeypatch.setattr(real, "TRUST_POLL", 0.01)
    request = RestoreRequest("slot1", "/unused", mode=Mode.NORMAL, udid="u", ecid=1, trust_timeout=0.1)
    with pytest.raises(pmd3.PairingDialogResponsePendingError) as caught:
        asyncio.run(real._paired_lockdown(request, pipe.reporter))
    assert classify(caught.value).kind is Kind.TIMEOUT


def test_a_phone_usbmuxd_does_not_list_is_a_lost_connection_worth_a_retry(pipe, monkeypatch):
    """pymobiledevice3 raises DeviceNotFoundError when usbmuxd's list lacks the phone (a moment
    between enumerations, or usbmuxd still preflighting it). `make hil` saw it end a restore
    as "internal error", not retried."""
    async def create_using_usbmux(**kwargs):
        raise pmd3.DeviceNotFoundError(kwargs["serial"], "Device not found: usbmux has no device matching udid u")

    monkeypatch.setattr(real, "create_using_usbmux", create_using_usbmux)
    request = RestoreRequest("slot1", "/unused", mode=Mode.NORMAL, udid="u", ecid=1)
    with pytest.raises(pmd3.DeviceNotFoundError) as caught:
        asyncio.run(real._paired_lockdown(request, pipe.reporter))
    failed = classify(caught.value)
    assert (failed.kind, failed.retryable) == (Kind.USB, True), failed


def test_a_real_restore_needs_an_ecid_and_an_ipsw(pipe):
    with pytest.raises(WorkerFailure) as caught:
        asyncio.run(real.run(RestoreRequest("slot1", "/unused", ipsw="x.ipsw"), pipe.reporter))
    assert caught.value.failed.kind is Kind.INTERNAL
    assert pipe.messages() == []


@pytest.mark.parametrize(("error", "kind", "retryable"), [
    # Any STATUS answer is final (libtatsu tss.c tss_request_send); answers without one are HTTPErrors.
    (pmd3.TSSError("Apple's signing server (TSS) refused the request: malformed request"), Kind.DEVICE_REJECTED,
     False),
    (requests.exceptions.HTTPError("gs.apple.com answered HTTP 503 without a TSS status"), Kind.NETWORK, True),
    (requests.exceptions.ConnectionError("[Errno 111] Connection refused"), Kind.NETWORK, True),
    (requests.exceptions.ConnectionError("gs.apple.com: Name or service not known"), Kind.NETWORK, True),
    (requests.exceptions.ReadTimeout("read timed out"), Kind.NETWORK, True),
    (usb.core.USBError("Pipe error", errno.EPIPE), Kind.USB, True),
    (usb.core.USBTimeoutError("Operation timed out", errno.ETIMEDOUT), Kind.USB, True),
    (usb.core.NoBackendError("No backend available"), Kind.USB, False),
    (pmd3.IRecvNoDeviceConnectedError("No device in Recovery or DFU mode was found."), Kind.USB, True),
    (pmd3.ConnectionFailedError(), Kind.USB, True),
    (pmd3.ConnectionTerminatedError(), Kind.USB, True),
    (pmd3.NoDeviceConnectedError(), Kind.USB, True),
    (OSError("failed to upload data"), Kind.USB, True),
    (pmd3.PasswordRequiredError(), Kind.TIMEOUT, True),
    (asyncio.TimeoutError(), Kind.TIMEOUT, True),
    (pmd3.UserDeniedPairingError(), Kind.DEVICE_REJECTED, True),
    (pmd3.NoSuchBuildIdentityError("no identity for d17ap"), Kind.DEVICE_REJECTED, False),
    (NotImplementedError("is_image4_supported is False"), Kind.DEVICE_REJECTED, False),
    (pmd3.ProtocolError("unexpected ASR command"), Kind.DEVICE_REJECTED, False),
    (OSError(errno.ENOSPC, "No space left on device"), Kind.INTERNAL, False),
    (KeyError("HardwareModel"), Kind.INTERNAL, False),
    (WorkerFailure(Failed("status 6", Kind.DEVICE_REJECTED, False)), Kind.DEVICE_REJECTED, False),
])
def test_failure_classification(error, kind, retryable):
    failed = classify(error)
    assert (failed.kind, failed.retryable) == (kind, retryable)
    assert failed.reason and "\n" not in failed.reason


def test_done_is_the_last_line(pipe):
    pipe.reporter.done()
    assert pipe.messages() == [Done()]


def test_a_retry_follows_the_phone_where_the_failed_attempt_left_it(bench_with, pipe, tmp_path, pmd3_patched):
    """A restore that failed after EnterRecovery leaves the phone in iBoot (restored reboots it into
    recovery after a non-zero status): the retry, asked for the phone as it was plugged in (iOS, by
    UDID), must find it by ECID on USB, not fail on usbmux's "no such device"."""
    from hw.sim import SimPhone
    from hw.sim import Mode as SimMode
    phone = SimPhone(ecid=0x00E197DC09B6617B, serial="GSJQJSS6Z4YH", mode=SimMode.RECOVERY)
    bench_with(phone)
    real._adapt_pymobiledevice3(pipe.reporter, usb_timeout=5, signing_url=tss.TSS_CONTROLLER_ACTION_URL)
    request = RestoreRequest("slot4", str(tmp_path), mode=Mode.NORMAL, udid=phone.udid, ecid=phone.ecid,
                             ipsw="unused.ipsw")

    device = asyncio.run(real._connect(request, pipe.reporter))

    assert device.irecv is not None and device.irecv.ecid == phone.ecid
    assert pipe.messages()[-1] == Phase(phases.SEND_IBEC, 0.0)
