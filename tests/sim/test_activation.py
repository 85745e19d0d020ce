"""Activation Lock check through pymobiledevice3's MobileActivationService and the simulated Apple server."""
from __future__ import annotations

import functools

import pytest
import requests
from pymobiledevice3.exceptions import MobileActivationException
from pymobiledevice3.lockdown import create_using_usbmux
from pymobiledevice3.services.mobile_activation import MobileActivationService

from hw.sim import ACTIVATED, UNACTIVATED, Hang, Refuse
from hw.sim.activation_server import DEVICE_ACTIVATION_PATH, DRM_HANDSHAKE_PATH

from .conftest import run


async def activate(phone) -> None:
    async with await create_using_usbmux(serial=phone.udid, autopair=True, pair_timeout=0) as lockdown:
        await MobileActivationService(lockdown).activate(skip_apple_id_query=True)


def test_clean_phone_is_activated(bench_for, make_phone):
    phone = make_phone()
    bench = bench_for(phone)

    run(activate(phone))

    assert phone.activation_state == ACTIVATED
    assert [(s.path, s.udid) for s in bench.activation.seen] == [
        (DRM_HANDSHAKE_PATH, phone.udid), (DEVICE_ACTIVATION_PATH, phone.udid)]
    assert [m["Command"] for m in phone.received if "Command" in m] == [
        "GetActivationStateRequest", "CreateTunnel1SessionInfoRequest", "CreateTunnel1ActivationInfoRequest",
        "HandleActivationInfoWithSessionRequest"]
    assert phone.values_set == {"ActivationStateAcknowledged": True}


def test_locked_phone_gets_the_apple_id_form(bench_for, make_phone):
    locked, clean = make_phone(activation_lock=True), make_phone(port_path=(1, 9))
    bench = bench_for(locked, clean)

    with pytest.raises(MobileActivationException, match="Activation Lock"):
        run(activate(locked))

    assert locked.activation_state == UNACTIVATED
    assert bench.activation.seen[-1].udid == locked.udid
    run(activate(clean))  # the server tells phones apart
    assert clean.activation_state == ACTIVATED


def test_activated_phone_is_left_alone(bench_for, make_phone):
    phone = make_phone(activation_state=ACTIVATED, activation_lock=True)
    bench = bench_for(phone)

    run(activate(phone))

    assert not bench.activation.seen


def test_server_refusing_the_handshake(bench_for, make_phone):
    phone = make_phone()
    bench = bench_for(phone)
    bench.activation.set_fault(Refuse(503, DRM_HANDSHAKE_PATH))

    with pytest.raises(MobileActivationException, match="refused to create its activation info"):
        run(activate(phone))
    assert phone.activation_state == UNACTIVATED


def test_server_refusing_the_activation(bench_for, make_phone):
    """pymobiledevice3 neither checks the HTTP status nor raises its own error: an ``assert`` on the type fails."""
    phone = make_phone()
    bench = bench_for(phone)
    bench.activation.set_fault(Refuse(503, DEVICE_ACTIVATION_PATH))

    with pytest.raises(AssertionError):
        run(activate(phone))
    assert phone.activation_state == UNACTIVATED


def test_server_not_answering(bench_for, make_phone, monkeypatch):
    """pymobiledevice3 waits 30 s (hard-coded); the test shortens requests' timeout to keep the suite fast."""
    phone = make_phone()
    bench = bench_for(phone)
    bench.activation.set_fault(Hang(seconds=10))
    monkeypatch.setattr(requests, "post", functools.partial(_post_with_timeout, requests.post))

    with pytest.raises(requests.exceptions.Timeout):
        run(activate(phone))
    assert phone.activation_state == UNACTIVATED


def _post_with_timeout(post, *args, timeout=None, **kwargs):
    return post(*args, timeout=0.5, **kwargs)
