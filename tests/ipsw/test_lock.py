"""One writer: `station ipsw ...` in one process and the station (or another command) in another never
race. Each test runs the other side as a real second process."""
from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from station.config import IpswSection
from station.ipsw.cache import IpswCache
from station.ipsw.errors import IpswError
from station.ipsw.lock import in_use
from station.machine import State

from .conftest import Server
from .factory import build_ipsw, synthetic_manifest
from .one_phone import OnePhone, restore_one

ROOT = Path(__file__).resolve().parents[2]
# `station ARGV...` with only the ipsw commands registered: the others import the whole phone stack (2 s).
STATION = ("import sys, station.cli as cli\ncli.COMMAND_MODULES = ('station.ipsw.cli',)\n"
           "sys.exit(cli.main(sys.argv[1:]))")


def _station_command(section: IpswSection, tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """`station ARGV...` in a process of its own, on a config whose [ipsw] table is ``section``."""
    config = tmp_path / "other.toml"
    config.write_text(f'[ipsw]\ncache_dir = "{section.cache_dir}"\ncatalog_url = "{section.catalog_url}"\n'
                      f"download_timeout_s = {section.download_timeout_s}\n")
    return subprocess.run([sys.executable, "-c", STATION, *argv, "--config", str(config)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def _two_builds(server: Server, section: IpswSection, tmp_path: Path) -> tuple[Path, Path]:
    cache, paths = IpswCache(section), []
    for version, build, seed in (("17.5.1", "21F90", 1), ("18.0.1", "22A3370", 2)):
        path = build_ipsw(tmp_path / f"iPhone14,7_{version}_{build}_Restore.ipsw",
                          synthetic_manifest(("iPhone14,7",), version, build), seed=seed)
        server.publish(path, ("iPhone14,7",), version, build)
        paths.append(cache.add(str(path)).path)
    return paths[0], paths[1]


def test_a_file_a_restore_holds_is_neither_removed_nor_pruned(server: Server, section: IpswSection,
                                                              tmp_path: Path) -> None:
    older, newer = _two_builds(server, section, tmp_path)
    pinned = IpswCache(dataclasses.replace(section, pin={"iPhone14,7": "17.5.1"}))
    held = pinned.select("iPhone14,7", hold=True)  # this process restores from the older build
    assert held.path == older and in_use(older)

    removing = _station_command(section, tmp_path, "ipsw", "remove", newer.name, older.name)
    assert removing.returncode != 0 and older.exists() and newer.exists()  # all or nothing
    assert removing.stderr == f"station: {older.name} is in use by a restore; remove it when the restore is done\n"
    pruning = _station_command(section, tmp_path, "ipsw", "prune", "--keep", "1")
    assert pruning.returncode == 0 and older.exists()
    assert f"{older.name} is in use by a restore: not pruned" in pruning.stderr

    held.release()  # the restore ended
    assert not in_use(older)
    pruning = _station_command(section, tmp_path, "ipsw", "prune", "--keep", "1")
    assert (pruning.returncode, pruning.stdout) == (0, f"removed {older}\n")
    assert not older.exists() and newer.exists()


def test_a_choice_waits_while_another_process_changes_the_cache(server: Server, section: IpswSection,
                                                                 tmp_path: Path) -> None:
    _, newer = _two_builds(server, section, tmp_path)
    writer = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom pathlib import Path\nfrom station.ipsw.lock import CacheLock\n"
                               f"with CacheLock(Path({str(section.cache_dir)!r})).exclusive():\n"
                               "    print('locked', flush=True)\n    sys.stdin.readline()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "locked\n"
        chosen: list[Path] = []
        choosing = threading.Thread(target=lambda: chosen.append(IpswCache(section).select("iPhone14,7").path))
        choosing.start()
        choosing.join(0.5)
        assert choosing.is_alive() and chosen == []  # waits for the writer
        assert writer.stdin is not None
        writer.stdin.write("\n")
        writer.stdin.flush()
        choosing.join(10)
        assert chosen == [newer]
    finally:
        writer.kill()
        writer.wait()


def test_two_adds_of_one_file_at_once(offline_section: IpswSection, ipsw14_7: Path, scripted,
                                      tmp_path: Path) -> None:
    """A provisioning script and the station's prefetch fetch the same URL: one writes, the other is told."""
    data = ipsw14_7.read_bytes()
    half = len(data) // 2
    scripted.steps = [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(data), data[:half], 2.5, data[half:]]
    url = f"{scripted.url}/{ipsw14_7.name}"
    config = tmp_path / "other.toml"
    config.write_text(f'[ipsw]\ncache_dir = "{offline_section.cache_dir}"\n'
                      f'catalog_url = "{offline_section.catalog_url}"\ndownload_timeout_s = 5\n')
    first = subprocess.Popen([sys.executable, "-c", STATION, "ipsw", "add", url, "--trust-unlisted",
                              "--config", str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, cwd=ROOT)
    part = offline_section.cache_dir / f".{ipsw14_7.name}.part"
    try:
        deadline = time.monotonic() + 10
        while not part.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # claimed (the part is locked once made) and into the server's pause
        assert first.poll() is None
        cache = IpswCache(offline_section)
        with pytest.raises(IpswError, match=r"another add of this file is under way"):
            cache.add(url, trust_unlisted=True)
        out, _ = first.communicate(timeout=30)
    finally:
        first.kill()
    assert first.returncode == 0 and out.startswith("added ")
    assert cache.find_cached(url) is not None and not part.exists()


async def test_the_station_holds_the_file_only_while_its_restore_runs(server: Server, section: IpswSection,
                                                                      tmp_path: Path) -> None:
    _, newer = await asyncio.to_thread(_two_builds, server, section, tmp_path)
    held_while_restoring: list[bool] = []

    async def look(firmware) -> None:  # type: ignore[no-untyped-def]
        held_while_restoring.append(await asyncio.to_thread(in_use, firmware.path))
    station = await restore_one(IpswCache(section), OnePhone(while_restoring=look))
    assert station.ports[1].state is State.DONE
    assert held_while_restoring == [True]
    assert not in_use(newer)
