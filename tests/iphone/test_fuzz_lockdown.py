"""Fuzzed lockdownd answers, sent by a simulated phone over the real protocol (issue 13, item 6).

The simulated lockdownd answers GetValue with fuzzed values (any type a plist can carry, or
none at all) and pymobiledevice3's own client reads them, as it would read a real phone's.
What the station makes of them:

- ``read_identity``: a Device whose fields have the types the station relies on, or one
  ``PhoneError`` naming what is wrong; never another exception.
- ``check_lock``: a LockCheck or ``NotReady``; CLEAR only when the phone says exactly
  ``ActivationState = Unactivated``, Find My is not on and Apple's server sent an activation
  record. Garbage anywhere else is never CLEAR.
"""
from __future__ import annotations

import asyncio
import datetime
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from hw.iphone import lockdown_ops
from hw.iphone.lock_evidence import ACTIVATION_SERVER
from hw.phones import Device, Lock, LockCheck, PhoneError
from hw.sim import ACTIVATED, UNACTIVATED, SimPhone, SimulatedBench, point_activation_at
from hw.sim.lockdownd import Lockdownd

pytestmark = pytest.mark.fuzz

FUZZ = settings(max_examples=150, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
TIMEOUT_S = 5.0
ECID = 0x001A2B3C4D5E6F72
MISSING = object()  # the phone does not send the key at all

# What the station reads (and pymobiledevice3 reads on its way: ProductVersion, DeviceClass).
IDENTITY_FIELDS = ("ProductType", "ProductVersion", "BuildVersion", "SerialNumber", "UniqueChipID",
                   "UniqueDeviceID", "ChipID", "BoardId", "DeviceClass")

XML_TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\ufffe\uffff"),
                   max_size=40)  # what an XML plist can hold
PLIST_SCALARS = st.one_of(
    XML_TEXT, st.booleans(), st.integers(-2**63, 2**64 - 1), st.floats(allow_nan=False),
    st.binary(max_size=16), st.datetimes(min_value=datetime.datetime(1970, 1, 1)))
PLIST_VALUES = st.recursive(
    PLIST_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(XML_TEXT, inner, max_size=3),
    max_leaves=5)
NEAR_VALID = st.sampled_from([
    "", " ", "iPhone14,5 ", "iphone14,5", "iPhone99,9", "17.5.1.", "17..5", "x.y", "١٧.٥", "21F90\n",
    "00008110-001A2B3C4D5E6F72", "00008110001A2B3C4D5E6F72", "../../etc/passwd", "Unactivated ",
    "unactivated", "Activated", "FactoryActivated", "a" * 4000,
    -1, 0, 1, -ECID, ECID, 2**64 - 1, 2**63, True, False, 0x8110, "0x8110", "8110"])
ANSWERS = st.one_of(st.just(MISSING), NEAR_VALID, PLIST_VALUES)


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SimPhone, dict[str, Any], Path]]:
    """One simulated phone whose lockdownd answers with ``fuzzed`` laid over its real values."""
    root = tmp_path_factory.mktemp("fuzz-lockdown")
    sim = SimPhone(ecid=ECID, serial="F2LFUZZ00001", product_type="iPhone14,5")
    fuzzed: dict[str, Any] = {}
    lock = threading.Lock()  # the simulated daemons answer in their own thread
    real = Lockdownd._domain_values

    def answer(self: Lockdownd, domain: Any) -> dict[str, Any] | None:
        values = real(self, domain)
        if values is None:
            return None
        with lock:
            overrides = dict(fuzzed.get(domain, {}))
        for key, value in overrides.items():
            if value is MISSING:
                values.pop(key, None)
            else:
                values[key] = value
        return values

    patch = pytest.MonkeyPatch()
    patch.setattr(Lockdownd, "_domain_values", answer)
    bench = SimulatedBench([], root / "bench")
    patch.setenv("USBMUXD_SOCKET_ADDRESS", bench.usbmuxd_address)
    try:
        with bench:
            point_activation_at(bench.activation_url)
            bench.world.attach(sim, 1, (1, 1))
            yield sim, fuzzed, root / "pairing"
    finally:
        point_activation_at(None)
        patch.undo()


def answering(fuzzed: dict[str, Any], values: dict[str, Any], find_my: Any = MISSING) -> None:
    fuzzed.clear()
    fuzzed[None] = values
    fuzzed["com.apple.fmip"] = {} if find_my is MISSING else {"IsAssociated": find_my}


def same_udid(a: str, b: str) -> bool:
    return a.replace("-", "").upper() == b.replace("-", "").upper()


def well_formed(device: Device, udid: str) -> None:
    for name in ("key", "product_type", "name", "ios_version", "build", "udid", "serial"):
        assert isinstance(getattr(device, name), str), (name, device)
    for name in ("ecid", "chip_id", "board_id"):
        value = getattr(device, name)
        assert value is None or (type(value) is int and 0 <= value < 2**64), (name, device)
    assert same_udid(device.udid, udid), device


def identity(udid: str, pairing: Path) -> Device | PhoneError:
    try:
        return asyncio.run(lockdown_ops.read_identity(udid, pairing, TIMEOUT_S))
    except PhoneError as error:
        return error


@given(values=st.dictionaries(st.sampled_from(IDENTITY_FIELDS), ANSWERS, min_size=1, max_size=4))
@example(values={"UniqueChipID": -ECID})
@example(values={"UniqueChipID": True})
@example(values={"ProductType": {"nested": ["dict"]}})
@example(values={"SerialNumber": 12345})
@example(values={"UniqueDeviceID": "00008110-0000000000000001"})
@example(values={"ProductVersion": "x.y"})
@FUZZ
def test_fuzzed_identity_is_a_device_or_one_phone_error(bench, values):
    """Whatever lockdownd says about the phone, identify gives a well-formed Device or one
    PhoneError that says what is wrong, never another exception."""
    sim, fuzzed, pairing = bench
    answering(fuzzed, values)
    result = identity(sim.udid, pairing)
    event(type(result).__name__)
    if isinstance(result, PhoneError):
        message = str(result)
        assert message and "\n" not in message and "Traceback" not in message
        return
    well_formed(result, sim.udid)
    unchanged = {k: v for k, v in values.items() if v is not MISSING}
    if not unchanged:  # only keys left out: what the phone did say is kept
        assert result.ecid in (None, ECID)


def test_untouched_identity_is_the_phones(bench):
    """The fuzzing harness itself changes nothing when nothing is fuzzed."""
    sim, fuzzed, pairing = bench
    answering(fuzzed, {})
    device = identity(sim.udid, pairing)
    assert isinstance(device, Device)
    assert (device.product_type, device.ecid, device.serial, device.ios_version, device.build) == (
        "iPhone14,5", ECID, sim.serial, sim.ios_version, sim.build)
    assert device.chip_id == sim.chip_id and device.board_id == sim.board_id


@pytest.mark.parametrize("field, value", [
    ("UniqueChipID", -ECID), ("UniqueChipID", True), ("UniqueChipID", "001A2B3C4D5E6F72"),
    ("ProductType", {"a": 1}), ("ProductType", 5), ("SerialNumber", b"F2L"), ("BuildVersion", ["21F90"]),
    ("ChipID", "0x8110"), ("BoardId", -1), ("UniqueDeviceID", "00008110-0000000000000001"),
])
def test_a_wrong_value_is_one_error_naming_it(bench, field, value):
    """The operator reads which value the phone got wrong."""
    sim, fuzzed, pairing = bench
    answering(fuzzed, {field: value})
    result = identity(sim.udid, pairing)
    assert isinstance(result, PhoneError), result
    assert field in str(result)


LOCK_FIELDS = ("ActivationState", "ProductVersion", "UniqueDeviceID", "DeviceClass", "ProductType")


@given(values=st.dictionaries(st.sampled_from(LOCK_FIELDS), ANSWERS, max_size=3),
       find_my=st.one_of(st.just(MISSING), st.booleans(), PLIST_VALUES),
       state=st.sampled_from([UNACTIVATED, ACTIVATED]),
       activation_lock=st.booleans())
@example(values={"ActivationState": UNACTIVATED}, find_my=False, state=UNACTIVATED, activation_lock=False)
@example(values={"ActivationState": "Unactivated "}, find_my=False, state=UNACTIVATED, activation_lock=False)
@example(values={"ActivationState": ["Unactivated"]}, find_my=MISSING, state=UNACTIVATED,
         activation_lock=False)
@FUZZ
def test_fuzzed_lock_answers_are_never_clear_from_garbage(bench, values, find_my, state, activation_lock):
    """The Activation Lock check fails closed: CLEAR only from Apple's record, asked for a phone
    that says exactly "Unactivated" and whose Find My is not on; LOCKED whenever Find My says true."""
    sim, fuzzed, pairing = bench
    sim.activation_state, sim.activation_lock = state, activation_lock
    answering(fuzzed, values, find_my)
    try:
        result = asyncio.run(lockdown_ops.check_lock(sim.udid, pairing, TIMEOUT_S))
    except lockdown_ops.NotReady as error:
        assert str(error) and "\n" not in str(error)
        event("not ready")
        return
    finally:
        sim.activation_state, sim.activation_lock = UNACTIVATED, False
    assert isinstance(result, LockCheck) and result.reason
    event(result.lock.value)
    said = values.get("ActivationState", state)
    if result.lock is Lock.CLEAR:
        assert said == UNACTIVATED and type(said) is str, (values, result)
        assert find_my is not True and not activation_lock, (find_my, result)
        assert result.method == ACTIVATION_SERVER
    if find_my is True and isinstance(said, str):
        assert result.lock is Lock.LOCKED, result


@pytest.mark.parametrize("activation_lock, find_my, lock", [
    (False, False, Lock.CLEAR), (True, False, Lock.LOCKED), (False, True, Lock.LOCKED)])
def test_the_authoritative_answer_decides(bench, activation_lock, find_my, lock):
    """The property above is not empty: an untouched phone at Hello is CLEAR only on Apple's record."""
    sim, fuzzed, pairing = bench
    sim.activation_lock = activation_lock
    answering(fuzzed, {}, find_my)
    try:
        result = asyncio.run(lockdown_ops.check_lock(sim.udid, pairing, TIMEOUT_S))
    finally:
        sim.activation_lock = False
    assert result.lock is lock, result


def test_a_version_pymobiledevice3_cannot_read_is_not_ready_not_a_crash(bench):
    """pymobiledevice3 compares ProductVersion itself while pairing; a phone that sends garbage there
    gets the usual "ask again" answer (UNKNOWN in the end), not an exception from packaging."""
    sim, fuzzed, pairing = bench
    answering(fuzzed, {"ProductVersion": " "})
    with pytest.raises(lockdown_ops.NotReady, match="unreadable"):
        asyncio.run(lockdown_ops.check_lock(sim.udid, pairing, TIMEOUT_S))
