"""The simulated phone's mobilebackup2 erase, through pymobiledevice3's Mobilebackup2Service."""
from __future__ import annotations

import pytest
from pymobiledevice3.exceptions import PyMobileDevice3Exception
from pymobiledevice3.lockdown import create_using_usbmux
from pymobiledevice3.services.mobilebackup2 import Mobilebackup2Service

from hw.sim import Mode, Pairing
from hw.sim.phone import ACTIVATED, UNACTIVATED

from .conftest import run, wait_until


async def erase(phone, tmp_path):
    async with await create_using_usbmux(serial=phone.udid, autopair=True, pair_timeout=0) as lockdown:
        await Mobilebackup2Service(lockdown).erase_device(tmp_path)


def test_erase_device_empties_the_phone_and_it_reboots_to_hello(bench_for, make_phone, tmp_path):
    phone = make_phone(activation_state=ACTIVATED, find_my=False, pairing=Pairing.AUTO_ACCEPT)
    bench = bench_for(phone, reboot_seconds=0.2)
    before = bench.world.device_of(phone)

    run(erase(phone, tmp_path))

    assert phone.requests()[-2:] == ["mobilebackup2.Hello", "mobilebackup2.EraseDevice"]
    assert phone.activation_state == UNACTIVATED and not phone.find_my and not phone.paired_hosts
    wait_until(lambda: bench.world.device_of(phone) not in (None, before))
    assert bench.world.device_of(phone).mode is Mode.NORMAL


def test_a_phone_that_refuses_the_erase_keeps_its_data(bench_for, make_phone, tmp_path):
    phone = make_phone(activation_state=ACTIVATED, erase_refused=True)
    bench_for(phone)
    with pytest.raises(PyMobileDevice3Exception, match="reported an error"):
        run(erase(phone, tmp_path))
    assert phone.activation_state == ACTIVATED and phone.paired_hosts
