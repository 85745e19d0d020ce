"""Identity and Activation Lock of a normal-mode phone, through pymobiledevice3's lockdown client.

The lock check gathers what each source says and lets ``decide`` weigh it
(``lock_evidence`` judges each answer):

1. ``com.apple.fmip``/``IsAssociated`` from a paired session: *true* is LOCKED;
   anything else is no evidence either way.
2. a phone at the Hello screen (ActivationState "Unactivated") pairs without a
   dialog, and Apple's activation server is asked with the phone's own request:
   the only source that can make a phone CLEAR.
3. an activated phone cannot be put to Apple (it answers for activations, not
   for phones in use), so without a *true* from Find My it stays UNKNOWN with
   what the operator can do about it.

A phone that refuses to pair (passcode set, Trust denied or not tapped) cannot be
read at all: its answer is UNKNOWN with ``needs_trust``, which no policy decides for.

The paired session the check holds also reads what refurbishers record (IMEI, storage,
battery: ``hw.iphone.phone_facts``), alongside the lock questions and bounded, so the
answer never waits on it and a phone that will not say leaves the facts unknown.

Every lockdown conversation is bounded; a phone that cannot answer yet raises
``NotReady`` and the caller decides whether to ask again.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

from pymobiledevice3.exceptions import (FatalPairingError, PairingDialogResponsePendingError, PairingError,
                                        PasswordRequiredError, PyMobileDevice3Exception,
                                        UserDeniedPairingError)
from pymobiledevice3.lockdown import LockdownClient, create_using_usbmux
from pymobiledevice3.services.mobilebackup2 import Mobilebackup2Service

from hw import models
from hw.iphone import activation, phone_facts
from hw.iphone.activation import NotReady, one_line
from hw.iphone.host_key import host_key
from hw.iphone.lock_evidence import ACTIVATION_SERVER, FIND_MY, decide, judge_find_my
from hw.phones import Device, Facts, Lock, LockCheck, Mode, PhoneError

log = logging.getLogger(__name__)

PAIR_TIMEOUT_S = 10.0  # at the Hello screen pairing needs no dialog; don't wait for one
LOCKDOWN_TIMEOUT_S = 20.0  # one lockdown conversation (connect, pair, read)
APPLE_TIMEOUT_S = 90.0  # the whole activation conversation: two POSTs of <= 30 s and the phone

__all__ = ["NotReady", "check_lock", "erase", "identity", "pair", "pairing_reason", "read_identity"]


@asynccontextmanager
async def _lockdown(udid: str, pairing_dir: Path, autopair: bool,
                    timeout_s: float) -> AsyncIterator[LockdownClient]:
    """A lockdown client for ``udid`` within ``timeout_s``; NotReady when there is none."""
    try:
        async with asyncio.timeout(timeout_s):
            lockdown = await create_using_usbmux(
                serial=udid, autopair=False, connection_type="USB", pairing_records_cache_folder=pairing_dir)
            if autopair:
                await _pair(lockdown, udid, pairing_dir)
    except TimeoutError:
        raise NotReady(f"lockdownd did not answer within {timeout_s:g} s") from None
    except PairingError:
        raise  # the caller tells the operator what to do on the phone
    except (PyMobileDevice3Exception, OSError) as error:
        raise NotReady(f"lockdownd did not answer: {one_line(error)}") from error
    except (ValueError, TypeError) as error:
        # pymobiledevice3 reads some values itself on the way (ProductVersion: packaging's
        # Version() in validate_pairing) and raises on garbage: the phone's answer is unusable.
        raise NotReady(f"lockdownd's answer is unreadable: {one_line(error)}") from error
    try:
        yield lockdown
    finally:
        await lockdown.close()


async def _pair(lockdown: LockdownClient, udid: str, pairing_dir: Path) -> None:
    """What ``create_using_usbmux(autopair=True)`` does (lockdown.py ``_handle_autopair``), with the
    station's own host key (11.45 takes a key only in ``pair``), off the event loop."""
    try:
        if lockdown.paired:  # create_using_usbmux tried the pair record it has: a session is open
            return
        # pymobiledevice3 makes each pairing's root key synchronously (ca.py
        # generate_pairing_cert_chain): on a Pi that would hold every button and phone for a good
        # part of a second. The pairing runs on a connection of its own, in a thread with its own
        # loop; this connection then finds the new pair record as any later one would.
        await asyncio.to_thread(asyncio.run, _pair_on_own_connection(udid, pairing_dir))
        if not await lockdown.validate_pairing():
            raise FatalPairingError()
    except BaseException:
        await lockdown.close()
        raise


async def _pair_on_own_connection(udid: str, pairing_dir: Path) -> None:
    client = await create_using_usbmux(serial=udid, autopair=False, connection_type="USB",
                                       pairing_records_cache_folder=pairing_dir)
    try:
        if not client.paired:
            await client.pair(timeout=PAIR_TIMEOUT_S, private_key=host_key(pairing_dir))
    finally:
        await client.close()


async def read_identity(udid: str, pairing_dir: Path, timeout_s: float = LOCKDOWN_TIMEOUT_S) -> Device:
    """What an unpaired phone tells anyone: model, iOS, UDID, ECID (UniqueChipID), serial."""
    try:
        async with _lockdown(udid, pairing_dir, False, timeout_s) as lockdown:
            values = lockdown.all_values
    except (NotReady, PairingError) as error:
        raise PhoneError(str(error)) from error
    return identity(udid, values)


def identity(udid: str, values: Mapping[str, object]) -> Device:
    """The Device lockdownd's values describe; one PhoneError naming the first value that is
    not what a phone sends. A missing value stays unknown; one of the wrong type or range is an
    error, not a guess (a negative or boolean UniqueChipID would be taken for another phone's)."""
    product_type = _text(values, "ProductType")
    reported = _text(values, "UniqueDeviceID") or udid
    if reported.replace("-", "").upper() != udid.replace("-", "").upper():
        raise PhoneError(f"lockdownd's UniqueDeviceID {_shown(reported)} is not the phone "
                         f"usbmuxd listed ({udid})")
    return Device(
        key=udid, mode=Mode.NORMAL, product_type=product_type,
        name=models.marketing_name(product_type), ios_version=_text(values, "ProductVersion"),
        build=_text(values, "BuildVersion"), udid=reported, ecid=_number(values, "UniqueChipID"),
        serial=_text(values, "SerialNumber"), chip_id=_number(values, "ChipID"),
        board_id=_number(values, "BoardId"), facts=phone_facts.from_values(values, udid))


def _text(values: Mapping[str, object], key: str) -> str:
    value = values.get(key, "")
    if not isinstance(value, str):
        raise PhoneError(f"lockdownd's {key} is {_shown(value)}, not text")
    return value


def _number(values: Mapping[str, object], key: str) -> int | None:
    value = values.get(key)
    if value is None:
        return None
    if type(value) is not int or not 0 <= value < 2**64:
        raise PhoneError(f"lockdownd's {key} is {_shown(value)}, not an unsigned 64-bit number")
    return value


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


async def check_lock(udid: str, pairing_dir: Path, timeout_s: float = LOCKDOWN_TIMEOUT_S,
                     facts_timeout_s: float = phone_facts.FACTS_TIMEOUT_S) -> LockCheck:
    """The lock decision, with the facts the paired session told; raises NotReady while the
    phone cannot answer."""
    try:
        async with _lockdown(udid, pairing_dir, True, timeout_s) as lockdown:
            # Read beside the lock questions (the Apple conversation takes seconds): the facts
            # never fail the check, and add at most facts_timeout_s to it.
            reading = asyncio.create_task(phone_facts.read_in_session(lockdown, facts_timeout_s))
            try:
                check = await _decide(lockdown, timeout_s)
            except BaseException:
                reading.cancel()
                with contextlib.suppress(BaseException):
                    await reading
                raise
            return replace(check, facts=await _facts_of(reading, udid))
    except PairingError as error:
        return LockCheck(Lock.UNKNOWN, pairing_reason(error), FIND_MY, needs_trust=True)


async def _facts_of(reading: asyncio.Task[Facts], udid: str) -> Facts | None:
    try:
        return await reading
    except Exception:  # noqa: BLE001 - a fact the station cannot read must not cost the lock answer
        log.exception("%s: reading the phone's facts failed: recorded as unknown", udid)
        return None


async def _decide(lockdown: LockdownClient, timeout_s: float) -> LockCheck:
    state = lockdown.all_values.get("ActivationState")
    if not isinstance(state, str):
        raise NotReady("the phone does not say whether it is activated yet")
    find_my = await _ask_find_my(lockdown, timeout_s)
    if find_my.lock is Lock.LOCKED or state != "Unactivated":
        return decide([find_my])
    try:
        async with asyncio.timeout(APPLE_TIMEOUT_S):
            apple = await activation.ask_apple(lockdown)
    except TimeoutError:
        apple = LockCheck(Lock.UNKNOWN, "no answer from Apple's activation server in time",
                          ACTIVATION_SERVER)
    return decide([find_my, apple])


async def pair(udid: str, pairing_dir: Path, timeout_s: float = LOCKDOWN_TIMEOUT_S) -> None:
    """A paired lockdown session with the phone, opened and closed: what a restore of a phone
    running iOS needs first. Raises PairingError while the phone does not trust this host,
    NotReady while it cannot answer."""
    async with _lockdown(udid, pairing_dir, True, timeout_s):
        pass


async def _ask_find_my(lockdown: LockdownClient, timeout_s: float) -> LockCheck:
    try:
        async with asyncio.timeout(timeout_s):
            value = await lockdown.get_value("com.apple.fmip", "IsAssociated")
    except (TimeoutError, PyMobileDevice3Exception, OSError) as error:
        log.info("%s: Find My not readable: %s", lockdown.identifier, one_line(error))
        value = None
    if value is not True:
        log.info("%s: com.apple.fmip IsAssociated = %r: no evidence", lockdown.identifier, value)
    return judge_find_my(value)


async def erase(udid: str, pairing_dir: Path, work_dir: Path, timeout_s: float = LOCKDOWN_TIMEOUT_S) -> None:
    """Ask the phone to erase itself (Erase All Content and Settings), in a paired session.

    pymobiledevice3's ``Mobilebackup2Service.erase_device``: the device-link and mobilebackup2
    version exchanges, then ``EraseDevice`` (libimobiledevice tools/idevicebackup2.c ``erase``
    sends the same request). The phone drops the link and reboots to the Hello screen; it keeps
    its iOS. ``work_dir``: the device link's directory (an erase writes nothing there). Raises
    PairingError while the phone does not trust this host, NotReady while it cannot answer,
    PyMobileDevice3Exception when it refuses.
    """
    async with _lockdown(udid, pairing_dir, True, timeout_s) as lockdown:
        try:
            async with asyncio.timeout(timeout_s):
                await Mobilebackup2Service(lockdown).erase_device(work_dir)
        except TimeoutError:
            raise NotReady(f"mobilebackup2 did not answer within {timeout_s:g} s") from None


def pairing_reason(error: PairingError) -> str:
    """What the operator does about a refused pairing."""
    if isinstance(error, PasswordRequiredError):
        return "passcode set: unlock the phone and tap Trust"
    if isinstance(error, UserDeniedPairingError):
        return "Trust denied on the phone"
    if isinstance(error, PairingDialogResponsePendingError):
        return "Trust dialog not answered"
    return f"not trusted: {one_line(error)}"
