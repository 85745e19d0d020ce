"""The cache's upkeep in a running station: the catalog a day old at most, NOT SIGNED on the status line,
prefetch in quiet hours or when idle, paused by a phone; the models seen, from the records."""
from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from station.config import IpswSection
from station.ipsw import upkeep as upkeeps
from station.ipsw.cache import IpswCache
from station.ipsw.seen import models_seen
from station.ipsw.upkeep import Upkeep, _local_minute
from station.machine import Port
from station.records import db
from station.snapshot import Counters, Snapshot
from station.ui.render import draw_screen

from .conftest import Server
from .factory import build_ipsw, firmware, synthetic_manifest

DAY = 86400.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _upkeep(cache: IpswCache, clock: Clock, *, busy: list[bool] | None = None, shown: list[str] | None = None,
            seen: tuple[str, ...] = (), minute: int = 12 * 60, wall: float | None = None) -> Upkeep:
    busy = busy if busy is not None else [False]
    return Upkeep(cache, seen=lambda: seen, busy=lambda: busy[0],
                  status=(shown.append if shown is not None else lambda text: None), clock=clock,
                  wall=(lambda: wall) if wall is not None else time.time, local_minute=lambda: minute)


def _cached(server: Server, section: IpswSection, tmp_path: Path, version: str = "18.0.1",
            build: str = "22A3370", signed: bool = True, seed: int = 1) -> Path:
    path = build_ipsw(tmp_path / f"iPhone14,7_{version}_{build}_Restore.ipsw",
                      synthetic_manifest(("iPhone14,7",), version, build), seed=seed)
    server.publish(path, ("iPhone14,7",), version, build, signed=signed)
    return IpswCache(section).add(str(path)).path


async def test_the_catalog_is_fetched_again_when_a_day_old(server: Server, section: IpswSection, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """Apple stops signing the cached build: the next day's fetch says so, on the status line and in the log."""
    await asyncio.to_thread(_cached, server, section, tmp_path)
    later = _published_later(server, tmp_path)
    cache, shown = IpswCache(section), []
    await _upkeep(cache, Clock(), shown=shown).maintain()  # fetched today: nothing asked
    catalog_requests = [path for path, _ in server.requests if path.startswith("/v4/")]
    assert shown == [""] and len(catalog_requests) == 1  # the one of the add
    server.catalog["iPhone14,7"] = [dict(f, signed=f["buildid"] == "22B83") for f in server.catalog["iPhone14,7"]]
    await _upkeep(cache, Clock(), shown=shown, wall=time.time() + DAY + 60).maintain()
    assert [path for path, _ in server.requests if path.startswith("/v4/")] == catalog_requests * 2
    assert [e.signed for e in cache.entries()] == [False]
    assert shown[-1] == "NOT SIGNED 22A3370 14,7"
    assert (f"iPhone14,7: every cached build is one Apple no longer signs; its phones are refused until one it "
            f"signs is added (iOS 18.1 (22B83): station ipsw add {later})") in caplog.text


def _published_later(server: Server, tmp_path: Path) -> str:
    path = build_ipsw(tmp_path / "iPhone14,7_18.1_22B83_Restore.ipsw",
                      synthetic_manifest(("iPhone14,7",), "18.1", "22B83"), seed=2)
    return server.publish(path, ("iPhone14,7",), "18.1", "22B83")


async def test_an_offline_fetch_is_tried_again_an_hour_later(offline_section: IpswSection, ipsw14_7: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    cache = IpswCache(offline_section)
    await asyncio.to_thread(cache.add, str(ipsw14_7), True)
    clock = Clock()
    keeper = _upkeep(cache, clock)
    await keeper.maintain()
    said = "Connection refused; no saved catalog; tried again in an hour"  # none was ever saved
    assert caplog.text.count(said) == 1
    clock.now += 60
    await keeper.maintain()
    assert caplog.text.count(said) == 1
    clock.now += upkeeps.RETRY_S
    await keeper.maintain()
    assert caplog.text.count(said) == 2


async def test_prefetch_waits_for_idle_or_quiet_hours(server: Server, section: IpswSection, tmp_path: Path) -> None:
    await asyncio.to_thread(_cached, server, section, tmp_path, "17.5.1", "21F90", False)
    _published_later(server, tmp_path)
    cache = IpswCache(dataclasses.replace(section, prefetch=True, quiet_hours="22:00-06:00", idle_minutes=10))
    await asyncio.to_thread(cache.refresh_catalog, ("iPhone14,7",))

    def names() -> list[str]:
        return [e.path.name for e in cache.entries()]
    before = names()
    clock, busy = Clock(), [True]
    keeper = _upkeep(cache, clock, busy=busy, seen=("iPhone14,7",))
    await keeper.maintain()  # a port is busy, midday
    busy[0] = False
    clock.now += 9 * 60
    await keeper.maintain()  # idle, but for 9 minutes only
    assert names() == before
    clock.now += 60
    await keeper.maintain()  # idle for 10
    assert names() == ["iPhone14,7_18.1_22B83_Restore.ipsw"]  # and the unsigned one pruned

    at_night = _upkeep(IpswCache(dataclasses.replace(cache.section, models=("iPhone15,4",))), Clock(),
                       busy=[True], minute=23 * 60)
    _publish(server, tmp_path, "iPhone15,4")
    await asyncio.to_thread(at_night.cache.refresh_catalog, ("iPhone15,4",))
    await at_night.maintain()  # busy, but in quiet hours
    assert "iPhone15,4_18.1_22B83_Restore.ipsw" in names()


def _publish(server: Server, tmp_path: Path, model: str, os_size: int = 300_000) -> Path:
    path = build_ipsw(tmp_path / f"{model}_18.1_22B83_Restore.ipsw", synthetic_manifest((model,), "18.1", "22B83"),
                      os_size=os_size, seed=7)
    server.publish(path, (model,), "18.1", "22B83")
    return path


async def test_a_phone_that_comes_pauses_the_download(server: Server, section: IpswSection, scripted,
                                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The station's loop sees the port busy within a watch interval; the download stops at its next chunk."""
    monkeypatch.setattr(upkeeps, "WATCH_S", 0.02)
    path = build_ipsw(tmp_path / "iPhone14,7_18.1_22B83_Restore.ipsw",
                      synthetic_manifest(("iPhone14,7",), "18.1", "22B83"), os_size=3_000_000)
    data = path.read_bytes()
    url = f"{scripted.url}/{path.name}"  # a slow mirror: a pause after the first 1.5 MB
    scripted.steps = [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(data), data[:1_500_000], 2.0,
                      data[1_500_000:]]
    server.catalog["iPhone14,7"] = [firmware(path, url, "iPhone14,7", "18.1", "22B83")]
    cache = IpswCache(dataclasses.replace(section, prefetch=True, models=("iPhone14,7",)))
    await asyncio.to_thread(cache.refresh_catalog, ("iPhone14,7",))
    clock, busy, shown = Clock(), [False], []

    def status(text: str) -> None:
        shown.append(text)
        if text.startswith("IPSW"):
            busy[0] = True  # a phone is plugged in as the download shows its progress

    keeper = Upkeep(cache, seen=lambda: (), busy=lambda: busy[0], status=status, clock=clock)
    clock.now += 3600  # idle for an hour
    task = asyncio.create_task(keeper.run())
    part = section.cache_dir / f".{path.name}.part"
    async with asyncio.timeout(10):
        while not (shown and shown[-1] == "" and part.exists()):
            await asyncio.sleep(0.02)
    assert not keeper.window_open and any(t.startswith("IPSW 1/1 14,7 ") for t in shown)
    assert 0 < part.stat().st_size < len(data) and not (section.cache_dir / path.name).exists()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def test_the_status_line_takes_the_overview_footer() -> None:
    texts: list[str] = []

    class Recording(ImageDraw.ImageDraw):
        def text(self, xy, text, *args, **kwargs):  # type: ignore[no-untyped-def, override]
            texts.append(text)
            return super().text(xy, text, *args, **kwargs)

    snapshot = Snapshot(ports=(Port(1),), counters=Counters(3, 1, 0), status="IPSW 1/2 14,7 42%")
    draw_screen(Recording(Image.new("1", (128, 64))), snapshot)
    assert "IPSW 1/2 14,7 42%" in texts and not any(t.startswith("DONE") for t in texts)
    texts.clear()
    draw_screen(Recording(Image.new("1", (128, 64))), dataclasses.replace(snapshot, status=""))
    assert "DONE 3 FAIL 1 LOCK 0" in texts


def test_models_seen_come_from_the_records(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert models_seen(state, 30, time.time()) == ()  # no records yet
    conn = db.open_store(state)
    now = time.time()
    for model, days_ago in (("iPhone14,7", 40), ("iPhone13,2", 10), ("", 1), ("iPhone15,4", 2), ("iPhone13,2", 1)):
        db.insert_session(conn, {"station_id": "s", "slot": 1, "state": "done", "model": model,
                                 "started_at": db.iso(now - days_ago * DAY)})
    conn.close()
    assert models_seen(state, 30, now) == ("iPhone13,2", "iPhone15,4")  # the most recent first
    assert models_seen(state, 0, now) == ()



def test_a_running_station_keeps_its_cache(server: Server, section: IpswSection, tmp_path: Path) -> None:
    """`station run` (the appliance loop, simulated bench) starts the upkeep: in its quiet hours it
    prefetches the newest signed build of a configured model, verified, and prunes the one Apple no
    longer signs; its progress is in the log. Stopped by SIGTERM mid-way, it exits cleanly."""
    _published_later(server, tmp_path)
    _cached(server, section, tmp_path, "17.5.1", "21F90", signed=False)  # its catalog lists both
    minute = _local_minute()
    quiet = f"{(minute - 60) % 1440 // 60:02d}:{minute % 60:02d}-{(minute + 120) % 1440 // 60:02d}:{minute % 60:02d}"
    config = tmp_path / "station.toml"
    config.write_text(f'[station]\nstate_dir = "{tmp_path / "state"}"\n'
                      f'[ipsw]\ncache_dir = "{section.cache_dir}"\ncatalog_url = "{section.catalog_url}"\n'
                      f'models = ["iPhone14,7"]\nprefetch = true\nquiet_hours = "{quiet}"\n')
    child = subprocess.Popen([sys.executable, "-m", "station.cli", "run", "--config", str(config)],
                             env={**os.environ, "STATION_BACKEND": "sim"}, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    deadline = time.monotonic() + 60
    while (child.poll() is None and time.monotonic() < deadline
           and [(e.path.name, e.state) for e in IpswCache(section).entries()] != [
               ("iPhone14,7_18.1_22B83_Restore.ipsw", "verified")]):
        time.sleep(0.2)
    cached = [(e.path.name, e.state) for e in IpswCache(section).entries()]
    child.send_signal(signal.SIGTERM)
    out, _ = child.communicate(timeout=60)
    # prefetched and verified; the build Apple no longer signs pruned
    assert cached == [("iPhone14,7_18.1_22B83_Restore.ipsw", "verified")], out
    assert child.returncode == 0, out
    assert "prefetch 1/1: iOS 18.1 (22B83) for iPhone14,7" in out, out
    assert "prefetch: pruned iPhone14,7_17.5.1_21F90_Restore.ipsw: Apple no longer signs it" in out, out
    assert "Traceback" not in out, out
