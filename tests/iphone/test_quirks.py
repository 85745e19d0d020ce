"""Real phones, real usbmuxd and Apple's server, where they differ from what a phone layer expects.

Each quirk is behaviour of the simulator (hw/sim cites its source next to it), met by the
real phone layer through pymobiledevice3 and pyusb.
"""
from __future__ import annotations

import asyncio
import threading

import pytest

from hw.iphone import layer
from hw.iphone.lock_evidence import FIND_MY_UNCONFIRMED
from hw.iphone.slots import SlotMap
from hw.phones import Device, LayerFault, Lock, Mode, PhoneArrived, PhoneError, PhoneLeft, RestoreError
from hw.sim import ACTIVATED, SimPhone, SimWorld
from hw.sim import Mode as SimMode
from hw.sim.phone import FindMyAnswer

from .harness import Layer, phone, running_layer

STAGE_S = 1.2  # long enough in a mode for two USB scans to see it


async def arrive(h: Layer, sim: SimPhone, slot: int) -> Device:
    h.plug(sim, slot)
    arrived = await h.until(lambda e: isinstance(e, PhoneArrived) and e.slot == slot)
    return arrived.device


async def check(h: Layer, sim: SimPhone, slot: int = 1):
    device = await h.layer.identify(await arrive(h, sim, slot))
    return await h.layer.check_lock(device)


# Section 1: the lock check fails closed -----------------------------------------------------


@pytest.mark.parametrize("answer", [FindMyAnswer.FALSE, FindMyAnswer.ABSENT], ids=["false", "absent"])
async def test_find_my_that_does_not_say_true_is_not_proof_of_off(tmp_path, monkeypatch, answer):
    """IsAssociated reads false with Find My on (libimobiledevice #275), or has no value."""
    sim = phone(activation_state=ACTIVATED, find_my=True, find_my_answer=answer)
    async with running_layer(tmp_path, monkeypatch) as h:
        result = await check(h, sim)
    assert result.lock is Lock.UNKNOWN
    assert result.reason == FIND_MY_UNCONFIRMED


@pytest.mark.parametrize("answer, lock, words", [
    ("record", Lock.CLEAR, "no Activation Lock"),
    ("record-html", Lock.CLEAR, "no Activation Lock"),
    ("form", Lock.LOCKED, "Apple asks for the Apple ID"),
    ("form-html", Lock.LOCKED, "Apple asks for the Apple ID"),
    ("error", Lock.UNKNOWN, "Activation Error"),
    ("ack", Lock.UNKNOWN, "acknowledged an earlier activation"),
    ("ack-plist", Lock.UNKNOWN, "acknowledged an earlier activation"),
    ("error-html", Lock.UNKNOWN, "Activation Error"),
    ("http-500", Lock.UNKNOWN, "HTTP 500"),
    ("wrong-type", Lock.UNKNOWN, "application/json"),
])
async def test_apples_answer_is_judged_by_what_it_is(tmp_path, monkeypatch, answer, lock, words):
    sim = phone(activation_answer=answer)
    async with running_layer(tmp_path, monkeypatch) as h:
        result = await check(h, sim)
    assert (result.lock, result.method) == (lock, "activation-server")
    assert words in result.reason


async def test_the_check_leaves_the_phone_at_hello(tmp_path, monkeypatch):
    """Asking Apple is not activating: the record is not applied, the phone stays as erased."""
    sim = phone()
    async with running_layer(tmp_path, monkeypatch) as h:
        result = await check(h, sim)
    assert result.lock is Lock.CLEAR
    assert sim.activation_state == "Unactivated"
    assert "HandleActivationInfoWithSessionRequest" not in sim.requests()
    assert "ActivationStateAcknowledged" not in sim.values_set


async def test_a_lockdownd_that_never_answers_is_a_bounded_wait(tmp_path, monkeypatch):
    sim = phone(lockdown_stalls=True)
    async with running_layer(tmp_path, monkeypatch, ready_wait_s=1.0, lockdown_timeout_s=0.5) as h:
        device = await arrive(h, sim, 1)
        async with asyncio.timeout(10):
            with pytest.raises(PhoneError, match="did not answer within"):
                await h.layer.identify(device)
            result = await h.layer.check_lock(device)
    assert result.lock is Lock.UNKNOWN and "did not answer within" in result.reason


# Section 2: phones that lose their slot or their verification ---------------------------------


async def restore_like_a_phone(world: SimWorld, sim: SimPhone, gap: float = 0.1) -> None:
    """What a real restore does to the bus: recovery for iBEC, then the restore ramdisk on usbmuxd."""
    for mode in (SimMode.RECOVERY, SimMode.RESTORE):
        world.reboot(sim, mode, delay=gap)
        await asyncio.sleep(STAGE_S)


async def restored_and_checked(h: Layer, sim: SimPhone, device: Device, hello_after: float = 0.3):
    async def worker(slot, device, firmware, report):
        await restore_like_a_phone(h.bench.world, sim)

    h.layer._restore_in_worker = worker
    await h.layer.restore(device, None, lambda report: None)
    sim.activation_state, sim.paired_hosts = "Unactivated", {}  # erased: Hello, trusting nobody
    h.bench.world.reboot(sim, SimMode.NORMAL, delay=hello_after)
    return await h.layer.check_lock(device, after_restore=True)


async def test_an_a11_phone_keeps_its_slot_through_a_restore(tmp_path, monkeypatch):
    """iPhone X: a 40-hex UDID with no ECID in it; lockdownd's UniqueChipID links the modes."""
    sim = phone(product_type="iPhone10,3")
    assert len(sim.udid) == 40 and "-" not in sim.udid
    async with running_layer(tmp_path, monkeypatch, restore_grace_s=3.0, hello_wait_s=10.0) as h:
        device = await h.layer.identify(await arrive(h, sim, 2))
        assert device.ecid == sim.ecid
        result = await restored_and_checked(h, sim, device)
    assert not [e for e in h.events if isinstance(e, PhoneLeft)]
    assert [e.slot for e in h.events if isinstance(e, PhoneArrived)] == [2]
    assert result.lock is Lock.CLEAR


async def test_usbmuxd_restarting_with_the_same_device_id_does_not_hide_the_restored_phone(
        tmp_path, monkeypatch):
    """Debian's usbmuxd exits with the last phone and numbers from 1 again (hw.sim.udev)."""
    sim = phone()
    async with running_layer(tmp_path, monkeypatch, usbmuxd_on_demand=True,
                             restore_grace_s=3.0, hello_wait_s=10.0) as h:
        device = await h.layer.identify(await arrive(h, sim, 1))
        result = await restored_and_checked(h, sim, device)
    attached = [e for e in h.events if isinstance(e, PhoneArrived)]
    assert [e.slot for e in attached] == [1]
    assert result.lock is Lock.CLEAR, result


async def test_a_phone_whose_activation_daemon_is_slow_after_the_reboot_is_asked_again(
        tmp_path, monkeypatch):
    """Just after the boot mobileactivationd refuses session info (libideviceactivation #42)."""
    sim = phone(activation_ready_after=1.0)
    async with running_layer(tmp_path, monkeypatch, restore_grace_s=3.0, hello_wait_s=10.0) as h:
        device = await h.layer.identify(await arrive(h, sim, 1))
        await asyncio.sleep(1.0)  # ready by now: the first check is answered
        assert (await h.layer.check_lock(device)).lock is Lock.CLEAR
        result = await restored_and_checked(h, sim, device)
    assert result.lock is Lock.CLEAR, result


async def test_listen_replay_on_reconnect_does_not_make_phones_leave(tmp_path, monkeypatch):
    """usbmuxd replays one Attached per phone to a new Listen (client.c start_listen)."""
    async with running_layer(tmp_path, monkeypatch) as h:
        for slot in (1, 2, 3):
            await arrive(h, phone(), slot)
        h.events.clear()
        h.bench.usbmuxd.stop()
        h.bench.usbmuxd.start()
        await h.until(lambda e: e == LayerFault("usbmuxd", None))
        await asyncio.sleep(1.5)
    assert not [e for e in h.events if isinstance(e, (PhoneLeft, PhoneArrived))]


async def test_a_restarted_usbmuxd_preflighting_its_phones_does_not_make_them_leave(tmp_path, monkeypatch):
    """usbmuxd announces a phone only once its preflight is done (preflight.c), also to a
    station that reconnected at once after a restart: seen in make hil's VM, where both idle
    phones went EMPTY and were checked again (docs/real-stack.md). A phone unplugged
    meanwhile still leaves."""
    async with running_layer(tmp_path, monkeypatch) as h:
        stays, goes = phone(), phone()
        await arrive(h, stays, 1)
        await arrive(h, goes, 2)
        h.events.clear()
        h.bench.usbmuxd.preflight_s = 2.5
        h.bench.usbmuxd.stop()
        h.bench.usbmuxd.start()
        await h.until(lambda e: e == LayerFault("usbmuxd", None))
        h.bench.world.detach(goes)
        await h.until(lambda e: isinstance(e, PhoneLeft) and e.slot == 2)
        await asyncio.sleep(3.0)  # preflight over: announced again
    assert [e for e in h.events if isinstance(e, (PhoneLeft, PhoneArrived))] == [PhoneLeft(2)]


async def test_a_phone_usbmuxd_never_announces_again_leaves_after_the_preflight_bound(tmp_path, monkeypatch):
    """On the bus but hidden by usbmuxd for good (a preflight that never ends): not a phone forever."""
    monkeypatch.setattr(layer, "PREFLIGHT_S", 1.0)
    async with running_layer(tmp_path, monkeypatch) as h:
        await arrive(h, phone(), 1)
        h.bench.usbmuxd.preflight_s = 30.0
        h.bench.usbmuxd.stop()
        h.bench.usbmuxd.start()
        await h.until(lambda e: isinstance(e, PhoneLeft) and e.slot == 1, timeout=5.0)


async def test_a_usb3_phone_is_one_slot_on_both_halves_of_its_port(tmp_path, monkeypatch):
    """iOS on the SuperSpeed bus (2-1.3), iBoot on the USB 2 bus (1-1.3): sysfs links them."""
    sim = phone(product_type="iPhone16,1", usb3=True)
    seen: list[Device] = []
    async with running_layer(tmp_path, monkeypatch, restore_grace_s=3.0, hello_wait_s=10.0) as h:
        device = await h.layer.identify(await arrive(h, sim, 3))
        assert h.bench.world.device_of(sim).bus == 2  # the table knows only 1-1.3

        async def worker(slot, device, firmware, report):
            h.bench.world.reboot(sim, SimMode.RECOVERY, delay=0.1)
            await asyncio.sleep(STAGE_S)
            seen.append(h.layer._told[3])

        h.layer._restore_in_worker = worker
        await h.layer.restore(device, None, lambda report: None)
    assert h.bench.world.device_of(sim).bus == 1
    assert seen[0].mode is Mode.RECOVERY and seen[0].ecid == sim.ecid
    assert [e.slot for e in h.events if isinstance(e, PhoneArrived)] == [3]
    assert not [e for e in h.events if isinstance(e, PhoneLeft)]


async def test_a_phone_caught_re_enumerating_mid_scan_keeps_its_slot(tmp_path, monkeypatch):
    """Gone between the bus listing and the string read: not a udev permission problem."""
    sim = phone(mode=SimMode.DFU)
    async with running_layer(tmp_path, monkeypatch) as h:
        await arrive(h, sim, 4)
        sim.vanish_on_scan = 2
        h.bench.world.set_mode(sim, SimMode.DFU)  # a new enumeration: its strings are read again
        await asyncio.sleep(3.0)
    assert sim.vanish_on_scan == 0, "the scans never caught it"
    assert LayerFault("usb-access", "USB NO ACCESS") not in h.events
    assert not [e for e in h.events if isinstance(e, PhoneLeft)]


async def test_a_held_phone_keeps_its_slot_by_ecid_on_a_port_the_table_does_not_know(
        tmp_path, monkeypatch):
    """No sysfs peer link (an old kernel, an odd hub): the restore's hold follows the ECID."""
    sim = phone(product_type="iPhone16,1", usb3=True)
    async with running_layer(tmp_path, monkeypatch, restore_grace_s=3.0) as h:
        h.layer.slot_map = SlotMap({"2-1.3": 3}, 7)  # the SuperSpeed half only, no peers
        device = await h.layer.identify(await arrive(h, sim, 3))

        async def worker(slot, device, firmware, report):
            h.bench.world.reboot(sim, SimMode.RECOVERY, delay=0.1)
            await asyncio.sleep(STAGE_S)

        h.layer._restore_in_worker = worker
        await h.layer.restore(device, None, lambda report: None)
        assert h.layer._told[3].mode is Mode.RECOVERY
    assert [e.slot for e in h.events if isinstance(e, PhoneArrived)] == [3]
    assert not [e for e in h.events if isinstance(e, PhoneLeft)]


async def restore_pulled_mid_way(h: Layer, sim: SimPhone, device: Device) -> None:
    """A restore whose worker fails as pymobiledevice3 does when the cable is pulled."""
    async def worker(slot, device, firmware, report):
        h.bench.world.detach(sim)
        raise RestoreError("USB connection lost: DeviceNotFoundError", True)

    h.layer._restore_in_worker = worker
    async with asyncio.timeout(10):
        with pytest.raises(RestoreError):
            await h.layer.restore(device, None, lambda report: None)


async def test_a_restore_whose_cable_was_pulled_ends_after_the_phone_left(tmp_path, monkeypatch):
    """usbmuxd drops a pulled phone at once, so the worker fails (pymobiledevice3's
    DeviceNotFoundError, a lost ASR socket) before the next USB scan: the failure must not
    reach the station first, or a pulled phone is queued for a retry instead of leaving."""
    sim = phone()
    async with running_layer(tmp_path, monkeypatch, restore_grace_s=3.0) as h:
        device = await h.layer.identify(await arrive(h, sim, 2))
        await restore_pulled_mid_way(h, sim, device)
        assert PhoneLeft(2) in h.events
        # What the check at Hello would have needed goes with the failure: a station that runs
        # for months sees thousands of phones fail and leave.
        assert not h.layer._restore_began


async def test_a_pulled_phone_usbmuxd_still_lists_leaves_rather_than_being_retried(tmp_path, monkeypatch):
    """usbmuxd hears of a pull through its own libusb hotplug callback (usbmuxd src/usb.c,
    usb_device_remove) and its Detached then crosses a socket: the station's own USB scan can
    find the port empty first. That scan is no proof the phone is there just because usbmuxd
    still lists it (the fault matrix's restore_image@50-pull once retried a pulled phone)."""
    sim = phone()
    async with running_layer(tmp_path, monkeypatch, restore_grace_s=3.0) as h:
        device = await h.layer.identify(await arrive(h, sim, 2))
        usbmuxd = h.bench.usbmuxd
        send, held = usbmuxd._broadcast, []
        usbmuxd._broadcast = lambda message: (held.append(message) if message["MessageType"] == "Detached"
                                              else send(message))
        await restore_pulled_mid_way(h, sim, device)
        when_failed = list(h.events)
        for message in held:
            usbmuxd._loop.call(send, message)
    assert held, "usbmuxd was to list the pulled phone until the restore's failure was taken"
    assert PhoneLeft(2) in when_failed


async def test_a_restore_that_lost_usb_with_the_phone_still_there_fails_without_a_departure(
        tmp_path, monkeypatch):
    sim = phone()
    async with running_layer(tmp_path, monkeypatch, restore_grace_s=3.0) as h:
        device = await h.layer.identify(await arrive(h, sim, 2))

        async def worker(slot, device, firmware, report):
            raise RestoreError("USB connection lost: ConnectionTerminatedError", True)

        h.layer._restore_in_worker = worker
        async with asyncio.timeout(10):
            with pytest.raises(RestoreError):
                await h.layer.restore(device, None, lambda report: None)
        await asyncio.sleep(2 * layer.USB_POLL_S)
    assert not [e for e in h.events if isinstance(e, PhoneLeft)]


async def test_a_scan_begun_before_a_failed_restore_does_not_end_the_wait_for_its_phone(
        tmp_path, monkeypatch):
    """A failed restore leaves the phone rebooting to recovery (idevicerestore's failure path).
    A USB scan that began before the failure still shows it there: only a scan begun after may
    end the wait, or the reboot is taken for a departure and the retried phone comes back as a
    new one held for a person (seen in the fault matrix's restore_image@99-network-down)."""
    sim = phone(product_type="iPhone14,7", mode=SimMode.RECOVERY)
    async with running_layer(tmp_path, monkeypatch) as h:
        device = await arrive(h, sim, 2)
        pictured, answer = threading.Event(), threading.Event()
        real_scan = h.layer.scanner.scan

        def scan_held_open():  # the picture is taken, the answer waits
            picture = real_scan()
            pictured.set()
            answer.wait(5)
            return picture

        async def worker(slot, device, firmware, report):
            h.layer.scanner.scan = scan_held_open
            await asyncio.to_thread(pictured.wait, 5)
            h.layer.scanner.scan = real_scan
            h.bench.world.reboot(sim, SimMode.RECOVERY, delay=1.0)
            answer.set()  # the stale picture arrives once the failure is taken
            raise RestoreError("cannot reach Apple: the network is down", True)

        h.layer._restore_in_worker = worker
        async with asyncio.timeout(10):
            with pytest.raises(RestoreError):
                await h.layer.restore(device, None, lambda report: None)
        await asyncio.sleep(1.0 + 3 * layer.USB_POLL_S)  # back from its reboot, seen again
        assert h.layer._told[2].ecid == sim.ecid
    assert not [e for e in h.events if isinstance(e, PhoneLeft)]


async def test_an_entry_usbmuxd_sends_without_a_serial_does_not_end_the_watch(tmp_path, monkeypatch, caplog):
    """pymobiledevice3 raises KeyError('SerialNumber') reading such an entry off the Listen
    socket; the layer listens again, keeps the phone it had, and still sees the next one."""
    async with running_layer(tmp_path, monkeypatch) as h:
        await arrive(h, phone(), 1)
        h.bench.usbmuxd._loop.call(h.bench.usbmuxd._broadcast, {
            "MessageType": "Attached", "DeviceID": 99, "Properties": {"ConnectionType": "USB", "DeviceID": 99}})
        await arrive(h, phone(), 2)
    assert not [e for e in h.events if isinstance(e, PhoneLeft)]
    assert "usbmuxd sent an entry the station cannot read (KeyError: 'SerialNumber')" in caplog.text


async def test_a_restore_waits_for_usbmuxd_to_be_back_before_it_starts(tmp_path, monkeypatch):
    """Started while usbmuxd restarts, a restore of a phone running iOS failed at once and its
    retry with it (the fault matrix's usbmuxd-restart neighbour): it waits for usbmuxd instead."""
    sim = phone()
    began: list[bool] = []
    async with running_layer(tmp_path, monkeypatch) as h:
        device = await h.layer.identify(await arrive(h, sim, 1))
        h.bench.usbmuxd.stop()
        while h.layer._mux_up:
            await asyncio.sleep(0.02)

        async def worker(slot, device, firmware, report):
            began.append(h.layer._mux_up)

        h.layer._restore_in_worker = worker
        restore = asyncio.create_task(h.layer.restore(device, None, lambda report: None))
        await asyncio.sleep(0.5)
        assert not began
        h.bench.usbmuxd.start()
        async with asyncio.timeout(10):
            await restore
    assert began == [True]
