"""Exceptions of a real restore -> (kind, retryable): what the station does next depends on it.

First matching rule wins, so the specific classes come before their bases
(USBTimeoutError before USBError, requests' timeouts before TimeoutError, ...).
"""
from __future__ import annotations

import errno

import requests
import usb.core
from ipsw_parser.exceptions import NoSuchBuildIdentityError as IpswNoSuchBuildIdentityError
from pymobiledevice3 import exceptions as pmd3

from hw.worker.messages import Failed, Kind, WorkerFailure

_RULES: tuple[tuple[tuple[type[BaseException], ...], Kind, bool, str], ...] = (
    # An answer with a STATUS (pymobiledevice3 raises TSSError on its MESSAGE): libtatsu (tss.c
    # tss_request_send) stops at any STATUS, as asking again gets the same answer. Answers without
    # one reach here as requests' HTTPError (real._TssRequests), retryable below.
    ((pmd3.TSSError,), Kind.DEVICE_REJECTED, False, "Apple's signing server refused"),
    ((requests.exceptions.RequestException,), Kind.NETWORK, True, "cannot reach Apple"),
    ((pmd3.PasswordRequiredError, pmd3.PairingDialogResponsePendingError), Kind.TIMEOUT, True,
     "phone not trusted in time"),
    ((pmd3.UserDeniedPairingError,), Kind.DEVICE_REJECTED, True, "Trust denied on the phone"),
    ((pmd3.NoSuchBuildIdentityError, IpswNoSuchBuildIdentityError), Kind.DEVICE_REJECTED, False,
     "the IPSW does not fit this phone"),
    ((NotImplementedError,), Kind.DEVICE_REJECTED, False, "phone not supported"),
    ((usb.core.NoBackendError,), Kind.USB, False, "no libusb"),
    # DeviceNotFoundError: usbmuxd does not list the phone (between enumerations, or preflighting it).
    ((usb.core.USBError, pmd3.IRecvError, pmd3.NoDeviceConnectedError, pmd3.DeviceNotFoundError,
      pmd3.ConnectionFailedError, pmd3.ConnectionTerminatedError, pmd3.NotConnectedError,
      pmd3.IncorrectModeError, ConnectionError),
     Kind.USB, True, "USB connection lost"),
    ((TimeoutError,), Kind.TIMEOUT, True, "timed out"),
    ((pmd3.ProtocolError, pmd3.LockdownError), Kind.DEVICE_REJECTED, False, "the phone refused"),
)

# OSErrors about the station's own files are setup problems, not a flaky cable.
_LOCAL_ERRNOS = {errno.ENOSPC, errno.EACCES, errno.EPERM, errno.ENOENT, errno.EROFS, errno.EMFILE}


def classify(error: BaseException) -> Failed:
    if isinstance(error, WorkerFailure):
        return error.failed
    for types, kind, retryable, what in _RULES:
        if isinstance(error, types):
            return Failed(f"{what}: {one_line(error)}", kind, retryable)
    if isinstance(error, OSError) and error.errno not in _LOCAL_ERRNOS:
        return Failed(f"USB transfer failed: {one_line(error)}", Kind.USB, True)
    return Failed(f"internal error: {one_line(error)}", Kind.INTERNAL, False)


def one_line(error: BaseException, limit: int = 160) -> str:
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
