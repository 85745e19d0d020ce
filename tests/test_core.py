"""The station's event loop: isolation per port, bounded restores, the lock rule end to end.

The phone layer here is a test double implementing the real ``PhoneLayer``
interface (as Mopidy's dummy backend does), preloaded with what each phone answers.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from dataclasses import replace

import pytest

from hw.phones import (Device, LayerFault, Lock, LockCheck, Mode, PhoneArrived, PhoneLeft,
                       RestoreError, RestoreProgress)
from station import core
from station.config import Config, RestoreSection, StationSection
from station.core import NoFirmware, Station
from station.records.recorder import Recorder
from station.machine import State, Waiting
from station.snapshot import Screen
from station.ui.labels import detail_lines


class DoublePhones:
    erase_tool = "double EraseDevice"

    def __init__(self, locks: dict[str, LockCheck], restore_s: float = 0.05) -> None:
        self.locks = locks
        self.restore_s = restore_s
        self.restores: list[str] = []
        self.erases: list[str] = []
        self.running = 0
        self.most_running = 0
        self.fail_identify: set[str] = set()
        self.fail_restore: dict[str, RestoreError] = {}
        self.cancelled: list[str] = []

    async def watch(self, emit):
        await asyncio.Event().wait()

    async def identify(self, device):
        await asyncio.sleep(0)
        if device.key in self.fail_identify:
            raise OSError("lockdownd went away")
        return replace(device, product_type="iPhone14,7", serial=device.key.upper())

    async def check_lock(self, device, after_restore=False):
        await asyncio.sleep(0)
        return self.locks.get(device.key, LockCheck(Lock.CLEAR, "Find My off", "fmip"))

    async def restore(self, device, firmware, report):
        self.restores.append(device.key)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            if device.key in self.fail_restore:
                raise self.fail_restore.pop(device.key)
            for percent in (10, 50, 90):
                report(RestoreProgress("restore image", percent))
                await asyncio.sleep(self.restore_s / 3)
        except asyncio.CancelledError:
            self.cancelled.append(device.key)
            raise
        finally:
            self.running -= 1

    async def erase(self, device, report):
        assert device.mode is Mode.NORMAL
        self.erases.append(device.key)
        report(RestoreProgress("erase", 0))
        await asyncio.sleep(self.restore_s)
        report(RestoreProgress("erase", 100))


def make_station(phones, **restore) -> Station:
    config = Config(restore=replace(RestoreSection(), **restore))
    return Station(config, phones, clock=asyncio.get_running_loop().time)


def plug(station: Station, slot: int, key: str, mode: Mode = Mode.NORMAL) -> None:
    station.on_phone_event(PhoneArrived(slot, Device(key=key, mode=mode)))


async def settle(station: Station, timeout: float = 5.0) -> None:
    """Wait until no port has work running or queued."""
    async with asyncio.timeout(timeout):
        while station._work or station._queue:
            await asyncio.sleep(0.01)


async def test_line_station_restores_clean_phones_and_refuses_locked_ones():
    phones = DoublePhones({"locked": LockCheck(Lock.LOCKED, "Find My is on", "fmip")})
    station = make_station(phones, mode="line")
    plug(station, 1, "clean")
    plug(station, 2, "locked")
    await settle(station)
    assert station.ports[1].state is State.DONE
    assert station.ports[2].state is State.LOCKED
    assert station.ports[2].reason == "Find My is on"
    assert phones.restores == ["clean"]
    assert station.snapshot().counters.restored == 1 and station.snapshot().counters.locked == 1


async def test_no_button_press_restores_a_locked_phone():
    phones = DoublePhones({"locked": LockCheck(Lock.LOCKED, "Activation Lock is on", "x")})
    station = make_station(phones, mode="counter", unknown_lock="restore")
    plug(station, 1, "locked")
    await settle(station)
    for button, long in [("ok", False), ("ok", True), ("select", False), ("ok", True)] * 3:
        station.press(button, long)
        await settle(station)
    assert phones.restores == []
    assert station.ports[1].state is State.LOCKED


async def test_an_exception_on_one_port_fails_that_port_only():
    phones = DoublePhones({})
    phones.fail_identify.add("bad")
    station = make_station(phones, mode="line")
    plug(station, 1, "bad")
    plug(station, 2, "good")
    await settle(station)
    assert station.ports[1].state is State.FAILED
    assert "lockdownd went away" in station.ports[1].reason
    assert station.ports[2].state is State.DONE


async def test_restores_are_bounded_and_queued():
    phones = DoublePhones({}, restore_s=0.1)  # reports no phases: the USB link's schedule is not at stake
    station = make_station(phones, mode="line", max_parallel_restores=2, schedule="fixed")
    for slot in range(1, 6):
        plug(station, slot, f"p{slot}")
    await settle(station)
    assert phones.most_running == 2
    assert all(station.ports[s].state is State.DONE for s in range(1, 6))


async def test_no_network_holds_the_queue_until_it_comes_back():
    phones = DoublePhones({})
    station = make_station(phones, mode="line")
    station.on_phone_event(LayerFault("network", "NO NETWORK"))
    plug(station, 1, "p1")
    await asyncio.sleep(0.1)
    assert station.ports[1].state is State.QUEUED
    assert station.snapshot().faults == ("NO NETWORK",)
    station.on_phone_event(LayerFault("network", None))
    await settle(station)
    assert station.ports[1].state is State.DONE
    assert station.snapshot().faults == ()


async def test_detach_mid_restore_cancels_the_restore_and_frees_the_slot():
    phones = DoublePhones({}, restore_s=5)
    station = make_station(phones, mode="line", max_parallel_restores=1)
    plug(station, 1, "p1")
    plug(station, 2, "p2")
    async with asyncio.timeout(2):
        while station.ports[1].state is not State.RESTORING:
            await asyncio.sleep(0.01)
    station.on_phone_event(PhoneLeft(1))
    await asyncio.sleep(0.05)
    assert phones.cancelled == ["p1"]
    assert station.ports[1].state is State.EMPTY
    assert station.ports[2].state is State.RESTORING  # the freed place went to the next phone
    station.on_phone_event(PhoneLeft(2))
    await settle(station)


async def test_retryable_failure_is_retried_then_restored():
    phones = DoublePhones({})
    phones.fail_restore["p1"] = RestoreError("USB transfer failed", retryable=True)
    station = make_station(phones, mode="line", retries=1)
    plug(station, 1, "p1")
    await settle(station)
    assert phones.restores == ["p1", "p1"]
    assert station.ports[1].state is State.DONE and station.ports[1].attempts == 2


async def test_unknown_lock_is_held_until_a_long_press_on_that_port():
    phones = DoublePhones({"dfu": LockCheck(Lock.UNKNOWN, "DFU mode", "none")})
    station = make_station(phones, mode="line", unknown_lock="hold")
    plug(station, 1, "dfu", Mode.DFU)
    await settle(station)
    assert station.ports[1].state is State.NEEDS_CONFIRM
    station.press("ok", False)
    await settle(station)
    assert phones.restores == []
    station.press("ok", True)
    await settle(station)
    assert phones.restores == ["dfu"] and station.ports[1].state is State.DONE


async def test_missing_firmware_fails_the_port_with_the_display_text():
    class NoIpsw:
        def select(self, device):
            raise NoFirmware("NO IPSW iPhone14,7")

    station = Station(Config(restore=RestoreSection(mode="line")), DoublePhones({}),
                      firmware=NoIpsw(), clock=asyncio.get_running_loop().time)
    plug(station, 1, "p1")
    await settle(station)
    assert station.ports[1].state is State.FAILED
    assert station.ports[1].reason == "NO IPSW iPhone14,7"


async def test_a_failing_listener_does_not_stop_the_station():
    class Broken:
        def on_transition(self, *args):
            raise RuntimeError("disk on fire")

        def on_firmware(self, *args):
            raise RuntimeError("disk on fire")

    station = Station(Config(restore=RestoreSection(mode="line")), DoublePhones({}),
                      listeners=(Broken(),), clock=asyncio.get_running_loop().time)
    plug(station, 1, "p1")
    await settle(station)
    assert station.ports[1].state is State.DONE


async def test_a_restore_waits_for_memory_and_says_so(monkeypatch):
    """One worker peaks at about a budget while it personalises the ramdisk (bench.restore_memory)."""
    monkeypatch.setattr(core, "RECHECK_S", 0.02)
    mib = 1024 * 1024
    phones = DoublePhones({}, restore_s=0.3)
    station = Station(Config(restore=replace(RestoreSection(), mode="line", max_parallel_restores=2,
                                             memory_per_restore_mb=1000, schedule="fixed")),
                      phones, clock=asyncio.get_running_loop().time, free_memory=lambda: 1500 * mib)
    waits = []
    dispatch = station.dispatch

    def noting_waits(slot, event):
        dispatch(slot, event)
        if isinstance(event, Waiting):
            waits.append((slot, station.ports[1].state, station.ports[slot].reason))
    station.dispatch = noting_waits
    plug(station, 1, "first")
    plug(station, 2, "second")
    await settle(station)  # the first is past its memory peak once restored reports progress
    assert waits[0] == (2, State.RESTORING, "WAIT MEM: 1.6 GB free, a restore needs 1.0 GB")
    assert [station.ports[s].state for s in (1, 2)] == [State.DONE, State.DONE]
    assert phones.restores == ["first", "second"]


async def test_no_restore_starts_without_memory_for_one():
    phones = DoublePhones({})
    station = Station(Config(restore=replace(RestoreSection(), mode="line", memory_per_restore_mb=2000)),
                      phones, clock=asyncio.get_running_loop().time, free_memory=lambda: 10**9)
    plug(station, 1, "p1")
    await asyncio.sleep(0.1)
    assert station.ports[1].state is State.QUEUED and station.ports[1].reason.startswith("WAIT MEM")
    assert phones.restores == []
    await station.stop_work()


# -- no record, no erase: the station's real recorder, its store made to fail -------------

@contextlib.asynccontextmanager
async def records_station(phones, state_dir, restore=None, **recorder_options):
    """A line station with the real recorder on ``state_dir``, running until the block ends."""
    recorder = Recorder(StationSection(state_dir=state_dir), **{"retry_s": 0.05, **recorder_options})
    recorder.start()
    station = Station(Config(restore=restore or RestoreSection(mode="line")), phones, listeners=(recorder,),
                      counter_source=recorder, records=recorder,
                      clock=asyncio.get_running_loop().time)
    task = asyncio.create_task(station.run())
    try:
        yield station
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        recorder.stop()


async def until(condition, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def stored(state_dir):
    conn = sqlite3.connect(state_dir / "records.sqlite3")
    try:
        return conn.execute("SELECT serial, result, (SELECT count(*) FROM certificates c "
                            "WHERE c.session_id = s.id) FROM sessions s ORDER BY id").fetchall()
    finally:
        conn.close()


async def test_no_restore_while_records_cannot_be_kept_and_the_fault_clears_by_itself(tmp_path):
    blocker = tmp_path / "disk"
    blocker.write_text("")  # the state dir cannot be created: records cannot be kept
    phones = DoublePhones({})
    async with records_station(phones, blocker / "state") as station:
        plug(station, 1, "p1")
        await until(lambda: station.ports[1].reason.startswith("WAIT REC"))
        await asyncio.sleep(0.2)
        assert phones.restores == [] and station.ports[1].state is State.QUEUED
        assert station.snapshot().faults == ("NO RECORDS",)
        assert "cannot create" in station.ports[1].reason
        blocker.unlink()  # the operator fixes the cause; nobody restarts anything
        await until(lambda: station.ports[1].state is State.DONE)
        assert station.snapshot().faults == ()
    assert stored(blocker / "state") == [("P1", "done", 1)]  # nothing told while it failed was lost


@pytest.mark.parametrize("job", ["restore", "erase"])
async def test_the_work_starts_only_once_its_session_is_on_disk(tmp_path, job):
    phones = DoublePhones({})
    started = phones.restores if job == "restore" else phones.erases
    (tmp_path / "state").mkdir()
    other = sqlite3.connect(tmp_path / "state" / "records.sqlite3", isolation_level=None)
    async with records_station(phones, tmp_path / "state", RestoreSection(mode="line", job=job)) as station:
        other.execute("BEGIN IMMEDIATE")  # another writer holds the database: nothing commits
        plug(station, 1, "p1")
        await until(lambda: station.ports[1].state is State.QUEUED)
        await asyncio.sleep(0.3)
        assert started == []
        other.execute("ROLLBACK")
        await until(lambda: station.ports[1].state is State.DONE)
        assert started == ["p1"]
    other.close()


async def test_no_restore_starts_below_the_records_reserve(tmp_path, monkeypatch):
    mib = 1024 * 1024
    free = [10 * mib]
    phones = DoublePhones({})
    monkeypatch.setattr(core, "RECHECK_S", 0.05)
    async with records_station(phones, tmp_path / "state", free_space=lambda path: free[0]) as station:
        plug(station, 1, "p1")
        await until(lambda: station.ports[1].reason.startswith("WAIT REC"))
        assert station.ports[1].reason == (f"WAIT REC: records: 10 MB free on {tmp_path / 'state'}, "
                                           "64 MB kept for records ([station] records_reserve_mb)")
        assert station.snapshot().faults == ("NO RECORDS",) and phones.restores == []
        free[0] = 1000 * mib
        await until(lambda: station.ports[1].state is State.DONE)
        assert station.snapshot().faults == ()


async def test_stopping_lets_running_restores_finish_and_starts_none():
    phones = DoublePhones({}, restore_s=0.3)
    station = make_station(phones, mode="line", max_parallel_restores=1)
    plug(station, 1, "running")
    plug(station, 2, "waiting")
    await until(lambda: station.ports[1].state is State.RESTORING and station.ports[2].state is State.QUEUED)
    station.begin_stopping()
    assert station.snapshot().faults == ("STOPPING",)
    await until(lambda: station.ports[1].state is State.DONE)
    await asyncio.sleep(0.1)
    assert station.ports[2].state is State.QUEUED and phones.restores == ["running"]
    assert station.restores_running == 0
    await station.stop_work()


async def test_work_for_a_phone_gone_before_it_began_leaves_nothing_unawaited():
    """A phone plugged and pulled within one turn of the loop (a bad cable): its identify task is
    cancelled before it ran. Seen in the soak as "coroutine 'Station._verify' was never awaited"."""
    import gc
    import warnings
    station = make_station(DoublePhones({}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plug(station, 1, "flaky")
        station.on_phone_event(PhoneLeft(1))
        await asyncio.sleep(0.05)
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)], [str(w.message) for w in caught]
    await station.stop_work()


# -- erase jobs ------------------------------------------------------------------------------

def certificates(state_dir):
    conn = sqlite3.connect(state_dir / "records.sqlite3")
    try:
        return {serial: json.loads(document)
                for serial, document in conn.execute("SELECT serial, document FROM certificates")}
    finally:
        conn.close()


async def test_an_erase_job_erases_a_clear_phone_and_restores_one_that_cannot_erase_itself(tmp_path):
    phones = DoublePhones({"dfu": LockCheck(Lock.UNKNOWN, "DFU: lock not readable", "none"),
                           "locked": LockCheck(Lock.LOCKED, "Find My is on", "fmip")})
    restore = RestoreSection(mode="line", job="erase", unknown_lock="restore")
    async with records_station(phones, tmp_path / "state", restore) as station:
        plug(station, 1, "clean")
        plug(station, 2, "dfu", Mode.DFU)
        plug(station, 3, "locked")
        await until(lambda: station.ports[1].state is State.DONE and station.ports[2].state is State.DONE)
        assert station.ports[3].state is State.LOCKED
    assert phones.erases == ["clean"] and phones.restores == ["dfu"]
    issued = certificates(tmp_path / "state")
    assert set(issued) == {"CLEAN", "DFU"}
    erased = issued["CLEAN"]["sanitization"]
    assert erased["job"] == "erase (EraseDevice)" and erased["tool"] == "double EraseDevice"
    assert erased["method_type"] == "Purge" and erased["method"] == "cryptographic erase"
    assert "Erase All Content and Settings" in erased["method_detail"]
    assert erased["firmware"]["build"] is None and erased["firmware"]["sha256"] is None
    assert issued["DFU"]["sanitization"]["job"] == "restore"
    assert "restore" in issued["DFU"]["sanitization"]["method_detail"]


async def test_an_erase_that_hangs_times_out_like_a_restore():
    phones = DoublePhones({}, restore_s=30)
    station = make_station(phones, mode="line", job="erase", timeout_s=10, retries=0)
    station.restore_timeout = 0.2
    plug(station, 1, "slow")
    await until(lambda: station.ports[1].state is State.FAILED)
    assert station.ports[1].reason == "timed out after 0 s" and phones.erases == ["slow"]
    await station.stop_work()


async def test_a_phones_own_job_is_chosen_once_it_is_identified():
    phones = DoublePhones({})
    station = make_station(phones, mode="line")
    station.job_for = lambda device: "erase" if device.serial == "TRADE-IN" else None
    plug(station, 1, "trade-in")
    plug(station, 2, "other")
    await settle(station)
    assert station.ports[1].state is State.DONE and station.ports[2].state is State.DONE
    assert phones.erases == ["trade-in"] and phones.restores == ["other"]


async def test_at_the_counter_holding_select_makes_the_selected_phone_an_erase(tmp_path):
    """A counter station restores by default; the operator holds SELECT on a phone's screen to
    erase it instead (and again to go back), before pressing OK. A phone not proven clear keeps
    its restore, and its screen offers no erase."""
    phones = DoublePhones({"held": LockCheck(Lock.UNKNOWN, "Find My not confirmed off", "none")})
    async with records_station(phones, tmp_path / "state", RestoreSection(mode="counter")) as station:
        plug(station, 1, "trade-in")
        plug(station, 2, "held")
        await until(lambda: station.ports[1].state is State.NEEDS_CONFIRM
                    and station.ports[2].state is State.NEEDS_CONFIRM)
        station.press("select", False)  # slot 1's screen
        assert "hold SELECT: erase" in screen_lines(station)
        station.press("select", True)
        assert station.snapshot().screen is Screen.DETAIL and station.view.selected == 1
        assert "press OK to erase" in screen_lines(station)
        assert "hold SELECT: restore" in screen_lines(station)
        station.press("ok", False)
        await until(lambda: station.ports[1].state is State.DONE)
        station.press("select", False)  # slot 2's screen: held, so no erase is offered
        assert not [line for line in screen_lines(station) if "SELECT" in line]
        station.press("select", True)
        assert station.ports[2].job == "restore"
    assert phones.erases == ["trade-in"] and phones.restores == []
    assert certificates(tmp_path / "state")["TRADE-IN"]["sanitization"]["job"] == "erase (EraseDevice)"


def screen_lines(station: Station) -> list[str]:
    snapshot = station.snapshot()
    [port] = [p for p in snapshot.ports if p.slot == snapshot.selected]
    return detail_lines(port, snapshot.now)
