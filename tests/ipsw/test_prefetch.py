"""Prefetch: the newest signed build of each wanted model, downloaded from a (loopback) server within the
disk budget, verified, resumed after a pause; unsigned builds pruned, never one a restore reads."""
from __future__ import annotations

import dataclasses
import json
import logging
import socket
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from station.config import ConfigError, IpswSection, load_config
from station.ipsw import prefetch
from station.ipsw.cache import IpswCache
from station.ipsw.catalog import Catalog, Published
from station.ipsw.lock import Lease

from .conftest import Server
from .factory import build_ipsw, firmware, synthetic_manifest

GB = 10**9


def _build(tmp_path: Path, model: str, version: str, build: str, seed: int, os_size: int = 300_000) -> Path:
    return build_ipsw(tmp_path / f"{model}_{version}_{build}_Restore.ipsw",
                      synthetic_manifest((model,), version, build), os_size=os_size, seed=seed)


def _published(model: str, version: str, build: str, size: int, signed: bool | None = True) -> Published:
    return Published(url=f"https://x/{model}_{build}.ipsw", build=build, version=version, size=size,
                     sha1=f"{build}-sha1", sha256=None, models=(model,), signed=signed)


def test_plan_takes_the_newest_signed_build_of_each_wanted_model_within_the_budget() -> None:
    catalog = Catalog((_published("iPhone14,7", "18.1", "22B83", 6 * GB),
                       _published("iPhone14,7", "18.2", "22C152", 6 * GB, signed=False),  # pulled
                       _published("iPhone14,7", "17.6", "21G80", 5 * GB),
                       _published("iPhone15,4", "18.1", "22B83b", 7 * GB),
                       _published("iPhone13,2", "18.1", "22B83c", 5 * GB)),
                      {"iPhone14,7": "2026-12-01T00:00:00+00:00"})
    wanted = ("iPhone14,7", "iPhone15,4", "iPhone13,2", "iPhone99,1", "iPhone14,7")
    planned = prefetch.plan([], catalog, wanted, {}, budget=12 * GB, free=None)
    assert [p.build for p in planned.downloads] == ["22B83", "22B83c"]  # 14,7 then 13,2: 15,4 does not fit
    assert planned.notes == ("iPhone15,4: iOS 18.1 (22B83b), 7.0 GB, does not fit: 6.0 GB left of "
                             "[ipsw] max_cache_gb",
                             "iPhone99,1: the catalog lists no build Apple signs (catalog never fetched for "
                             "these models)")
    pinned = prefetch.plan([], catalog, ("iPhone14,7",), {"iPhone14,7": "17.6"}, budget=64 * GB, free=None)
    assert [p.build for p in pinned.downloads] == ["21G80"]
    assert prefetch.plan([], catalog, ("iPhone14,7",), {"iPhone14,7": "18.2"}, 64 * GB, None).notes == (
        "iPhone14,7: the catalog lists no build (pinned to 18.2) Apple signs (catalog fetched 2026-12-01)",)
    short = prefetch.plan([], catalog, ("iPhone14,7",), {}, budget=64 * GB, free=6 * GB)
    assert short.downloads == () and short.notes[0].endswith(
        "does not fit: 6.0 GB free on the disk, 1.0 GB of it kept free")


@pytest.fixture
def published(server: Server, section: IpswSection, tmp_path: Path) -> dict[str, Path]:
    """iPhone14,7: 17.5.1 cached and no longer signed, 18.1 signed and published; iPhone15,4: 18.1."""
    cache = IpswCache(section)
    old = _build(tmp_path, "iPhone14,7", "17.5.1", "21F90", 1)
    server.publish(old, ("iPhone14,7",), "17.5.1", "21F90", signed=False)
    cache.add(str(old))
    files = {"old": section.cache_dir / old.name}
    for model, seed in (("iPhone14,7", 2), ("iPhone15,4", 3)):
        path = _build(tmp_path, model, "18.1", "22B83", seed, os_size=3_000_000)
        server.publish(path, (model,), "18.1", "22B83")
        files[model] = section.cache_dir / path.name
    cache.refresh_catalog(("iPhone14,7", "iPhone15,4"))
    return files


def test_run_downloads_verifies_and_prunes(server: Server, section: IpswSection, published: dict[str, Path],
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "station.ipsw.prefetch")
    cache = IpswCache(dataclasses.replace(section, prefetch=True))
    shown: list[str] = []
    result = prefetch.run(cache, ("iPhone14,7", "iPhone15,4"), status=shown.append)
    assert result.added == [published["iPhone14,7"], published["iPhone15,4"]] and not result.failed
    assert result.pruned == [published["old"]] and not published["old"].exists()
    assert [(e.path.name, e.state, e.signed) for e in cache.entries()] == [
        (published["iPhone14,7"].name, "verified", True), (published["iPhone15,4"].name, "verified", True)]
    assert cache.select("iPhone14,7").build == "22B83"
    assert shown[0].startswith("IPSW 1/2 14,7 ") and shown[0].endswith("%") and len(shown[0]) <= 25
    assert shown[-1] == ""  # the display's line, cleared at the end
    assert "prefetch 2/2: iOS 18.1 (22B83) for iPhone15,4, 3.0 MB: " in caplog.text
    assert prefetch.run(cache, ("iPhone14,7", "iPhone15,4")) == prefetch.Result()  # nothing more to do


def test_a_file_a_restore_reads_is_not_pruned(section: IpswSection, published: dict[str, Path]) -> None:
    lease = Lease(published["old"])  # a restore (refused since, or pinned before) still reads it
    try:
        result = prefetch.run(IpswCache(section), ("iPhone14,7",))
        assert result.pruned == [] and published["old"].exists()
    finally:
        lease.release()
    assert prefetch.run(IpswCache(section), ()).pruned == [published["old"]]


def test_a_pinned_unsigned_build_stays(section: IpswSection, published: dict[str, Path]) -> None:
    pinned = IpswCache(dataclasses.replace(section, pin={"iPhone14,7": "17.5.1"}))
    assert prefetch.run(pinned, ()).pruned == [] and published["old"].exists()


def test_a_paused_download_keeps_its_part_and_resumes(server: Server, section: IpswSection,
                                                      published: dict[str, Path]) -> None:
    cache = IpswCache(section)
    chunks = iter(range(100))
    result = prefetch.run(cache, ("iPhone14,7",), keep_going=lambda: next(chunks) < 2)  # a phone comes
    assert result.paused and result.added == []
    part = section.cache_dir / f".{published['iPhone14,7'].name}.part"
    assert 0 < part.stat().st_size < 3_000_000
    result = prefetch.run(cache, ("iPhone14,7",))
    assert result.added == [published["iPhone14,7"]] and not part.exists()
    ranges = [wanted for path, wanted in server.requests if path == f"/files/{published['iPhone14,7'].name}"]
    assert ranges[0] is None and ranges[-1] is not None and ranges[-1].startswith("bytes=")  # resumed, not again


def test_a_failed_download_is_said_and_skipped(server: Server, section: IpswSection,
                                               published: dict[str, Path]) -> None:
    server.files.pop(published["iPhone15,4"].name)  # the mirror lost it: HTTP 404
    result = prefetch.run(IpswCache(section), ("iPhone15,4", "iPhone14,7"))
    assert list(result.failed) == [f"{server.url}/files/iPhone15%2C4_18.1_22B83_Restore.ipsw"]
    assert "HTTP 404" in next(iter(result.failed.values()))
    assert result.added == [published["iPhone14,7"]]
    again = prefetch.run(IpswCache(section), ("iPhone15,4",), skip=frozenset(result.failed))
    assert again == prefetch.Result()


def test_a_download_streams_to_disk(tmp_path: Path) -> None:
    """A 40 MB IPSW from a plain HTTP server in another process: this process never holds it whole."""
    root = tmp_path / "mirror"
    (root / "catalog").mkdir(parents=True)
    ipsw = _build(root, "iPhone14,7", "18.1", "22B83", 4, os_size=40_000_000)
    with http_server(root) as url:
        (root / "catalog" / "iPhone14,7.json").write_text(json.dumps(
            {"firmwares": [firmware(ipsw, f"{url}/{ipsw.name}", "iPhone14,7", "18.1", "22B83")]}))
        section = IpswSection(cache_dir=tmp_path / "cache", catalog_url=url + "/catalog/{identifier}.json")
        cache = IpswCache(section)
        cache.refresh_catalog(("iPhone14,7",))  # the station's upkeep does it daily
        tracemalloc.start()
        try:
            result = prefetch.run(cache, ("iPhone14,7",))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert result.added == [section.cache_dir / ipsw.name], result
    assert peak < 20_000_000, peak  # the digest's ring of 8 x 1 MiB and change, not 40 MB


class http_server:
    """``python -m http.server`` on a loopback port, serving ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __enter__(self) -> str:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.process = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                                         "--directory", str(self.root)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return url
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("http.server did not start")

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.mark.parametrize("value, message", [
    ('"22:00"', '[ipsw] quiet_hours = "22:00": must be "HH:MM-HH:MM" (two different times, 24-hour clock), or ""'),
    ('"22:00-22:00"', '[ipsw] quiet_hours = "22:00-22:00": must be "HH:MM-HH:MM"'),
    ('"24:00-06:00"', '[ipsw] quiet_hours = "24:00-06:00": must be "HH:MM-HH:MM"'),
])
def test_bad_quiet_hours_are_one_line(tmp_path: Path, value: str, message: str) -> None:
    config = tmp_path / "station.toml"
    config.write_text(f"[ipsw]\nquiet_hours = {value}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(config)
    assert str(raised.value).startswith(f"config error: {message}")


def test_prefetch_keys_are_typed_and_bounded(tmp_path: Path) -> None:
    config = tmp_path / "station.toml"
    config.write_text('[ipsw]\nprefetch = true\nmax_cache_gb = 200\nseen_days = 7\nquiet_hours = "22:30-06:00"\n'
                      "idle_minutes = 5\n")
    section = load_config(config).ipsw
    assert (section.prefetch, section.max_cache_gb, section.seen_days, section.idle_minutes) == (True, 200.0, 7, 5.0)
    assert section.quiet_minutes == (22 * 60 + 30, 6 * 60)
    for bad, message in (("prefetch = 1", "must be true or false"), ("max_cache_gb = 0", "must be 1..1000000"),
                         ("seen_days = -1", "must be 0..3650"), ("idle_minutes = 0", "must be 1..1440")):
        config.write_text(f"[ipsw]\n{bad}\n")
        with pytest.raises(ConfigError, match=f"^config error: \\[ipsw\\] {bad}: {message}$"):
            load_config(config)

