"""What refurbishers record (issue 14 item 3), read by pymobiledevice3 from the simulated phone."""
from __future__ import annotations

import logging
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hw.iphone import lockdown_ops, phone_facts
from hw.phones import Facts, Lock, Mode, PhoneArrived
from hw.sim import ACTIVATED, Pairing
from hw.sim import Mode as SimMode
from .harness import phone, running_layer


async def _checked(tmp_path, monkeypatch, sim, **layer_options):
    async with running_layer(tmp_path, monkeypatch, **layer_options) as h:
        h.plug(sim, 1)
        arrived = await h.until(lambda e: isinstance(e, PhoneArrived))
        device = await h.layer.identify(arrived.device)
        return device, await h.layer.check_lock(device)


async def test_the_lock_checks_paired_session_reads_every_fact(tmp_path, monkeypatch):
    sim = phone(battery_cycle_count=412, battery_design_capacity=3227, battery_full_charge_capacity=2700,
                storage_bytes=256_000_000_000, color="#fae5d3", enclosure_color="#e3e4e5")
    device, result = await _checked(tmp_path, monkeypatch, sim)
    assert result.lock is Lock.CLEAR
    assert result.facts == Facts(
        imei=sim.imei, imei2=sim.imei2, meid=sim.meid, storage_bytes=256_000_000_000,
        color="#fae5d3", enclosure_color="#e3e4e5", battery_cycle_count=412,
        battery_design_capacity=3227, battery_full_charge_capacity=2700)
    # Unpaired, lockdownd tells the colour and nothing that identifies the line (no IMEI).
    assert device.facts == Facts(color="#fae5d3")
    assert "com.apple.mobile.diagnostics_relay" in [m.get("Service") for m in sim.received]


async def test_a_phone_without_cellular_has_no_imei(tmp_path, monkeypatch):
    sim = phone(cellular=False)
    _, result = await _checked(tmp_path, monkeypatch, sim)
    assert (result.facts.imei, result.facts.imei2, result.facts.meid) == (None, None, None)
    assert result.facts.battery_cycle_count == sim.battery_cycle_count


async def test_a_bad_imei_is_logged_once_and_recorded_as_unknown(tmp_path, monkeypatch, caplog):
    good = phone().imei
    bad = good[:-1] + str((int(good[-1]) + 1) % 10)  # the wrong check digit
    sim = phone(imei_given=bad)
    async with running_layer(tmp_path, monkeypatch) as h:
        h.plug(sim, 1)
        arrived = await h.until(lambda e: isinstance(e, PhoneArrived))
        device = await h.layer.identify(arrived.device)
        with caplog.at_level(logging.WARNING, logger="hw.iphone.phone_facts"):
            first = await h.layer.check_lock(device)
            again = await h.layer.check_lock(device)
    assert first.facts.imei is None and again.facts.imei is None
    assert first.facts.imei2 == sim.imei2  # the others still count
    assert [r.getMessage() for r in caplog.records if bad in r.getMessage()] == [
        f"{sim.udid}: lockdownd's InternationalMobileEquipmentIdentity is '{bad}': not recorded"]


async def test_a_diagnostics_relay_that_never_answers_costs_the_lock_check_only_its_bound(
        tmp_path, monkeypatch):
    sim = phone(diagnostics_stalls=True)
    async with running_layer(tmp_path, monkeypatch) as h:
        h.plug(sim, 1)
        arrived = await h.until(lambda e: isinstance(e, PhoneArrived))
        device = await h.layer.identify(arrived.device)
        began = time.monotonic()
        result = await lockdown_ops.check_lock(device.udid, h.layer.pairing_dir, 5.0, facts_timeout_s=0.5)
        took = time.monotonic() - began
    assert result.lock is Lock.CLEAR
    assert result.facts.imei == sim.imei and result.facts.battery_cycle_count is None
    assert took < 3.0


@pytest.mark.parametrize("fields", [{"mode": SimMode.DFU}, {"mode": SimMode.RECOVERY},
                                    {"activation_state": ACTIVATED, "pairing": Pairing.PASSCODE}],
                         ids=["dfu", "recovery", "untrusted"])
async def test_a_phone_that_says_nothing_records_nothing(tmp_path, monkeypatch, fields):
    device, result = await _checked(tmp_path, monkeypatch, phone(**fields))
    assert result.facts is None
    if device.mode is not Mode.NORMAL:
        assert device.facts == Facts()


@settings(max_examples=300, deadline=None)
@given(value=st.one_of(st.text(max_size=20), st.integers(), st.none(), st.booleans(), st.binary(max_size=16),
                       st.from_regex(r"[0-9]{15}", fullmatch=True)))
def test_any_value_a_phone_sends_is_a_checked_fact_or_none(value):
    values = {key: value for key, _ in phone_facts.VALUE_KEYS.values()}
    facts = phone_facts.from_values(values, "fuzz")
    if facts.imei is not None:
        assert len(facts.imei) == 15 and facts.imei.isdigit() and phone_facts.luhn_ok(facts.imei)
    battery = phone_facts.from_battery({"CycleCount": value, "DesignCapacity": value,
                                        "NominalChargeCapacity": value}, "fuzz")
    for count in (battery.battery_cycle_count, battery.battery_design_capacity):
        assert count is None or (type(count) is int and count >= 0)


def test_imei_check():
    assert phone_facts.check_imei("490154203237518") == "490154203237518"  # the textbook IMEI
    assert phone_facts.check_imei("490154203237519") is None
    assert phone_facts.check_imei("49015420323751") is None
    assert phone_facts.check_imei("४९०१५४२०३२३७५१८") is None  # digits, but not ASCII ones
