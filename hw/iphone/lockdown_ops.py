"""Identity and Activation Lock of a normal-mode phone, through pymobiledevice3's lockdown client.

The lock check follows what works on real phones:
1. a phone at the Hello screen (ActivationState "Unactivated") pairs without a
   dialog; Apple's activation server is asked through the phone's mobile
   activation service. An Apple-ID form in the answer means Activation Lock.
   (On a phone without the lock this activates it for real: there is no
   check-only request.)
2. an activated phone that trusts this station answers lockdown domain
   ``com.apple.fmip`` key ``IsAssociated``: Find My on means locked.
3. anything else is UNKNOWN with its reason; a network failure is never "not locked".
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import requests
from pymobiledevice3.exceptions import (ConnectionFailedError, MobileActivationException,
                                        NoDeviceConnectedError, PairingDialogResponsePendingError,
                                        PairingError, PasswordRequiredError,
                                        PyMobileDevice3Exception, UserDeniedPairingError)
from pymobiledevice3.lockdown import LockdownClient, create_using_usbmux
from pymobiledevice3.services.mobile_activation import MobileActivationService

from hw import models
from hw.phones import Device, Lock, LockCheck, Mode, PhoneError

log = logging.getLogger(__name__)

PAIR_TIMEOUT_S = 10.0  # at the Hello screen pairing needs no dialog; don't wait for one


async def _connect(udid: str, pairing_dir: Path, autopair: bool) -> LockdownClient:
    return await create_using_usbmux(
        serial=udid, autopair=autopair, connection_type="USB", pair_timeout=PAIR_TIMEOUT_S,
        pairing_records_cache_folder=pairing_dir)


async def read_identity(udid: str, pairing_dir: Path) -> Device:
    """What an unpaired phone tells anyone: model, iOS, UDID, ECID, serial."""
    try:
        lockdown = await _connect(udid, pairing_dir, autopair=False)
    except (ConnectionFailedError, NoDeviceConnectedError, PyMobileDevice3Exception, OSError) as error:
        raise PhoneError(f"lockdownd did not answer: {_why(error)}") from error
    try:
        values = lockdown.all_values
        product_type = values.get("ProductType", "")
        return Device(
            key=udid, mode=Mode.NORMAL, product_type=product_type,
            name=models.marketing_name(product_type), ios_version=values.get("ProductVersion", ""),
            build=values.get("BuildVersion", ""), udid=values.get("UniqueDeviceID", udid),
            ecid=values.get("UniqueChipID"), serial=values.get("SerialNumber", ""),
            chip_id=values.get("ChipID"), board_id=values.get("BoardId"))
    finally:
        await lockdown.close()


class NotReady(Exception):
    """lockdownd is not (yet) there: the phone is gone, rebooting or in restore mode."""


async def check_lock(udid: str, pairing_dir: Path) -> LockCheck:
    """The lock status; raises NotReady when the phone's lockdownd does not answer."""
    try:
        lockdown = await _connect(udid, pairing_dir, autopair=False)
    except (PyMobileDevice3Exception, OSError) as error:
        raise NotReady(f"lockdownd did not answer: {_why(error)}") from error
    try:
        unactivated = lockdown.all_values.get("ActivationState") == "Unactivated"
    finally:
        await lockdown.close()
    if unactivated:
        # The activation server call is synchronous (requests, 30 s): keep it off the station loop.
        return await asyncio.to_thread(asyncio.run, _ask_activation_server(udid, pairing_dir))
    return await _ask_find_my(udid, pairing_dir)


async def _ask_activation_server(udid: str, pairing_dir: Path) -> LockCheck:
    method = "activation-server"
    try:
        lockdown = await _connect(udid, pairing_dir, autopair=True)
    except PairingError as error:
        return LockCheck(Lock.UNKNOWN, f"pairing refused: {_why(error)}", method)
    except (PyMobileDevice3Exception, OSError) as error:
        return LockCheck(Lock.UNKNOWN, f"lockdownd did not answer: {_why(error)}", method)
    try:
        await MobileActivationService(lockdown).activate(skip_apple_id_query=True)
    except MobileActivationException as error:
        if "locked" in str(error).lower():
            return LockCheck(Lock.LOCKED, "Activation Lock: Apple asks for the Apple ID", method)
        return LockCheck(Lock.UNKNOWN, f"activation refused: {_why(error)}", method)
    except requests.RequestException as error:
        return LockCheck(Lock.UNKNOWN, f"no network: Apple's activation server: {_why(error)}",
                         method)
    except (AssertionError, KeyError) as error:  # pmd3 asserts text/xml: a refusal or an error page
        return LockCheck(Lock.UNKNOWN, f"activation server refused the request ({error!r})", method)
    except (PyMobileDevice3Exception, OSError) as error:
        return LockCheck(Lock.UNKNOWN, f"activation failed: {_why(error)}", method)
    finally:
        await lockdown.close()
    return LockCheck(Lock.CLEAR, "Apple: no Activation Lock", method)


async def _ask_find_my(udid: str, pairing_dir: Path) -> LockCheck:
    method = "fmip"
    try:
        lockdown = await _connect(udid, pairing_dir, autopair=True)
    except PasswordRequiredError:
        return LockCheck(Lock.UNKNOWN, "passcode set: unlock the phone and tap Trust", method)
    except UserDeniedPairingError:
        return LockCheck(Lock.UNKNOWN, "Trust denied on the phone", method)
    except PairingDialogResponsePendingError:
        return LockCheck(Lock.UNKNOWN, "Trust dialog not answered", method)
    except (PyMobileDevice3Exception, OSError) as error:
        return LockCheck(Lock.UNKNOWN, f"not trusted: {_why(error)}", method)
    try:
        associated = await lockdown.get_value("com.apple.fmip", "IsAssociated")
    except (PyMobileDevice3Exception, OSError) as error:
        return LockCheck(Lock.UNKNOWN, f"Find My not readable: {_why(error)}", method)
    finally:
        await lockdown.close()
    if associated:
        return LockCheck(Lock.LOCKED, "Find My is on", method)
    return LockCheck(Lock.CLEAR, "Find My off", method)


def _why(error: BaseException) -> str:
    return str(error).strip().splitlines()[0][:120] if str(error).strip() else type(error).__name__
