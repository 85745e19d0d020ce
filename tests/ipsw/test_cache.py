"""The cache directory: add, verify, the stored result, remove, prune and the choice for a phone."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from station.config import IpswSection
from station.ipsw import record
from station.ipsw.cache import IpswCache
from station.ipsw.errors import IpswError, NoIpswError
from station.records import statedir

from .conftest import Server
from .factory import build_ipsw, os_bytes, synthetic_manifest


def _published(server: Server, tmp_path: Path, model: str, version: str, build: str, seed: int = 1) -> Path:
    path = build_ipsw(tmp_path / f"{model}_{version}_{build}_Restore.ipsw",
                      synthetic_manifest((model,), version, build), seed=seed)
    server.publish(path, (model,), version, build)
    return path


def test_add_copies_verifies_and_stores_the_result(server: Server, section: IpswSection, ipsw14_7: Path) -> None:
    server.publish(ipsw14_7, ("iPhone14,7",), "18.0.1", "22A3370")
    entry = IpswCache(section).add(str(ipsw14_7))
    assert entry.path == section.cache_dir / ipsw14_7.name and entry.path.read_bytes() == ipsw14_7.read_bytes()
    assert entry.state == "verified" and entry.record is not None
    assert (entry.record.build, entry.record.version, entry.record.models) == ("22A3370", "18.0.1", ("iPhone14,7",))
    assert record.path_for(entry.path).exists()
    assert sorted(p.name for p in section.cache_dir.iterdir()) == sorted(
        [ipsw14_7.name, ipsw14_7.name + ".verify.json", "catalog.json", ".lock"])  # no temp file left


def test_unlisted_needs_trust_and_stays_marked(offline_section: IpswSection, ipsw14_7: Path) -> None:
    cache = IpswCache(offline_section)
    with pytest.raises(IpswError, match=r"is not in the catalog .*add --trust-unlisted"):
        cache.add(str(ipsw14_7))
    entry = cache.add(str(ipsw14_7), trust_unlisted=True)
    assert entry.state == "unlisted (trusted)"
    assert cache.verify(entry.path.name).state == "unlisted (trusted)"  # the trust holds for the same bytes


def test_a_restart_trusts_the_stored_result_until_size_or_mtime_change(
        server: Server, section: IpswSection, ipsw14_7: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server.publish(ipsw14_7, ("iPhone14,7",), "18.0.1", "22A3370")
    path = IpswCache(section).add(str(ipsw14_7)).path
    hashed: list[Path] = []
    monkeypatch.setattr("station.ipsw.cache.file_digests",
                        lambda p, progress=None: hashed.append(p) or _real_digests(p, progress))
    assert IpswCache(section).select("iPhone14,7").path == path and hashed == []  # a fresh object: no re-hash
    os.utime(path, ns=(0, 1_000_000_000))
    assert IpswCache(section).entries()[0].state == "changed (verify again)"
    assert IpswCache(section).select("iPhone14,7").path == path and hashed == [path]
    assert IpswCache(section).entries()[0].state == "verified"


def test_an_add_by_an_operator_stays_verified_when_the_station_starts(
        server: Server, section: IpswSection, ipsw14_7: Path) -> None:
    """`sudo -u station station ipsw add` runs with the login umask (022), not the service's 077.
    Were the file 0644, the station's start would make it private (statedir.secure), which
    changes its ctime, and the verification would be lost: found by `make hil`."""
    server.publish(ipsw14_7, ("iPhone14,7",), "18.0.1", "22A3370")
    old = os.umask(0o022)
    try:
        path = IpswCache(section).add(str(ipsw14_7)).path
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o600
    assert statedir.secure(section.cache_dir) == 0  # nothing in the cache was readable by others
    assert IpswCache(section).entries()[0].state == "verified"


def _real_digests(path: Path, progress=None):  # type: ignore[no-untyped-def]
    from station.ipsw.digest import file_digests
    return file_digests(path, progress)


def test_a_changed_file_that_fails_again_is_not_used(server: Server, section: IpswSection, ipsw14_7: Path) -> None:
    server.publish(ipsw14_7, ("iPhone14,7",), "18.0.1", "22A3370")
    cache = IpswCache(section)
    path = cache.add(str(ipsw14_7)).path
    _flip_os_byte(path)
    with pytest.raises(NoIpswError, match="^NO IPSW iPhone14,7$"):
        cache.select("iPhone14,7")
    assert cache.entries()[0].state.startswith("failed: ") and "wrong digest" in cache.entries()[0].state


def _flip_os_byte(path: Path) -> None:
    """Corrupt one byte inside the OS image: same size, the zip still reads, the digest differs."""
    offset = path.read_bytes().find(os_bytes(300_000)[1000:1016])
    with path.open("r+b") as stream:
        stream.seek(offset)
        byte = stream.read(1)
        stream.seek(offset)
        stream.write(bytes([byte[0] ^ 1]))


def test_select_newest_pinned_and_by_chip_board(server: Server, section: IpswSection, tmp_path: Path) -> None:
    cache = IpswCache(section)
    for version, build, seed in (("17.5.1", "21F90", 1), ("18.0.1", "22A3370", 2), ("17.6", "21G80", 3)):
        cache.add(str(_published(server, tmp_path, "iPhone14,7", version, build, seed)))
    newest = cache.select("iPhone14,7")
    assert (newest.version, newest.build, newest.restore_behavior, newest.variant) == (
        "18.0.1", "22A3370", "Erase", "Customer Erase Install (IPSW)")
    assert (newest.identity_index, newest.device_class) == (2, "d27ap")
    assert newest.sha256 and newest.model == "iPhone14,7"
    assert cache.select(chip_id=0x8110, board_id=0x18) == newest
    pinned = IpswCache(dataclasses.replace(section, pin={"iPhone14,7": "17.5.1"})).select("iPhone14,7")
    assert pinned.build == "21F90"
    assert IpswCache(dataclasses.replace(section, pin={"iPhone14,7": "21G80"})).select("iPhone14,7").version == "17.6"


def test_no_ipsw_shows_on_the_port_and_the_log_names_the_build(server: Server, section: IpswSection,
                                                               tmp_path: Path) -> None:
    cache = IpswCache(section)
    cache.add(str(_published(server, tmp_path, "iPhone13,2", "18.0.1", "22A3370")))
    server.catalog["iPhone14,7"] = []
    server.publish(build_ipsw(tmp_path / "iPhone14,7_18.1_22B83_Restore.ipsw", synthetic_manifest(
        ("iPhone14,7",), "18.1", "22B83")), ("iPhone14,7",), "18.1", "22B83")
    cache.refresh_catalog(("iPhone14,7",))
    with pytest.raises(NoIpswError) as raised:
        cache.select("iPhone14,7")
    assert str(raised.value) == "NO IPSW iPhone14,7"
    assert raised.value.log_message.endswith(
        f"add iOS 18.1 (22B83): station ipsw add {server.url}/files/iPhone14%2C7_18.1_22B83_Restore.ipsw")
    with pytest.raises(NoIpswError, match="^NO IPSW iPhone14,7$"):
        cache.select(chip_id=0x8110, board_id=0x18)
    with pytest.raises(NoIpswError, match="^NO IPSW 1234:56$") as unknown:
        cache.select(chip_id=0x1234, board_id=0x56)
    assert "not in the device table" in unknown.value.log_message


def test_two_boards_of_one_ipsw(server: Server, section: IpswSection, tmp_path: Path) -> None:
    path = build_ipsw(tmp_path / "iPhone13,2,iPhone13,3_18.0.1_22A3370_Restore.ipsw",
                      synthetic_manifest(("iPhone13,2", "iPhone13,3")))
    server.publish(path, ("iPhone13,2", "iPhone13,3"), "18.0.1", "22A3370")
    cache = IpswCache(section)
    cache.add(str(path))
    assert cache.select("iPhone13,2").device_class == "d53gap"
    assert cache.select("iPhone13,3").device_class == "d53pap"
    assert cache.select(chip_id=0x8101, board_id=0x0E).model == "iPhone13,3"


def test_remove_and_prune_keep_per_model(server: Server, section: IpswSection, tmp_path: Path) -> None:
    cache = IpswCache(dataclasses.replace(section, pin={"iPhone14,7": "16.0"}))
    names = {}
    for version, build, seed in (("16.0", "20A362", 1), ("17.5.1", "21F90", 2), ("18.0.1", "22A3370", 3)):
        names[version] = cache.add(str(_published(server, tmp_path, "iPhone14,7", version, build, seed))).path.name
    other = cache.add(str(_published(server, tmp_path, "iPhone15,4", "17.5.1", "21F90", 4))).path.name
    assert cache.prune(keep=1, dry_run=True) == [section.cache_dir / names["17.5.1"]]
    assert len(cache.entries()) == 4
    cache.prune(keep=1)
    assert sorted(e.path.name for e in cache.entries()) == sorted([names["16.0"], names["18.0.1"], other])
    cache.remove(names["16.0"])
    assert not (section.cache_dir / (names["16.0"] + ".verify.json")).exists()
    with pytest.raises(IpswError, match=f"^{names['16.0']}: not in the cache"):
        cache.remove(names["16.0"])


def test_product_type_with_two_chips_asks_for_cpid_bdid(server: Server, section: IpswSection,
                                                       tmp_path: Path) -> None:
    path = _published(server, tmp_path, "iPhone8,1", "15.7", "19H12")
    cache = IpswCache(section)
    cache.add(str(path))
    with pytest.raises(IpswError, match="iPhone8,1 has 2 boards in 19H12 .*give its CPID:BDID"):
        cache.select("iPhone8,1")
    assert cache.select(chip_id=0x8003, board_id=0x04).device_class == "n71map"
