"""Issue item 6: every bad input gets one clear line, a non-zero exit, and the cache as it was."""
from __future__ import annotations

import dataclasses
import errno
import os
import pathlib
import plistlib
import re
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from station.config import IpswSection

from .conftest import Server, fails_one_line as _fails
from .factory import build_ipsw, synthetic_manifest, tree


def test_truncated_zip(cli, section: IpswSection, cache_with_one: dict, ipsw14_7: Path, capsys) -> None:
    cut = ipsw14_7.with_name("iPhone14,7_cut_Restore.ipsw")
    cut.write_bytes(ipsw14_7.read_bytes()[:-5000])
    _fails(capsys, cli(section, "ipsw", "add", str(cut)),
           r"station: iPhone14,7_cut_Restore.ipsw: not a complete zip archive \(truncated, or not an IPSW\)")
    assert tree(section.cache_dir) == cache_with_one


def test_truncated_download_of_a_listed_ipsw(cli, server: Server, section: IpswSection, cache_with_one: dict,
                                              ipsw14_7: Path, capsys) -> None:
    server.publish(ipsw14_7, ("iPhone14,7",), "18.0.1", "22A3370")
    data = ipsw14_7.read_bytes()
    cut = ipsw14_7.with_name("short.ipsw")  # the zip reads (its end is intact) but bytes are missing
    with zipfile.ZipFile(cut, "w") as archive:
        archive.writestr("BuildManifest.plist", synthetic_manifest())
    assert len(cut.read_bytes()) < len(data)
    _fails(capsys, cli(section, "ipsw", "add", str(cut)),
           rf"station: short.ipsw: size {len(cut.read_bytes())} bytes, published {len(data)} for "
           r"iPhone14,7_18.0.1_22A3370_Restore.ipsw \(truncated or wrong file\)")
    assert tree(section.cache_dir) == cache_with_one


def test_wrong_digest(cli, server: Server, section: IpswSection, cache_with_one: dict, ipsw14_7: Path,
                      capsys) -> None:
    server.publish(ipsw14_7, ("iPhone14,7",), "18.0.1", "22A3370", sha1sum="0" * 40, sha256sum="1" * 64)
    _fails(capsys, cli(section, "ipsw", "add", str(ipsw14_7)),
           r"station: iPhone14,7_18.0.1_22A3370_Restore.ipsw: wrong digest: SHA-1 [0-9a-f]{40}, published 0{40}")
    assert tree(section.cache_dir) == cache_with_one


def test_wrong_digest_found_by_verify(cli, server: Server, section: IpswSection, cache_with_one: dict,
                                      capsys) -> None:
    (name,) = [n for n in cache_with_one if n.endswith(".ipsw")]
    path = section.cache_dir / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the OS image: the zip still reads
    path.write_bytes(bytes(data))
    _fails(capsys, cli(section, "ipsw", "verify", name), rf"station: {re.escape(name)}: wrong digest")
    _fails(capsys, cli(section, "ipsw", "match", "iPhone15,4"), r"station: NO IPSW iPhone15,4: ")
    assert cli(section, "ipsw", "list") == 0
    assert "failed: " in capsys.readouterr().out


def test_zip_without_build_manifest(cli, section: IpswSection, cache_with_one: dict, tmp_path: Path,
                                    capsys) -> None:
    bare = build_ipsw(tmp_path / "bare.ipsw", None)
    _fails(capsys, cli(section, "ipsw", "add", str(bare)),
           r"station: bare.ipsw: no BuildManifest.plist in the zip \(not an IPSW\)")
    assert tree(section.cache_dir) == cache_with_one


def test_manifest_for_other_models(cli, section: IpswSection, cache_with_one: dict, tmp_path: Path,
                                   capsys) -> None:
    ipad = tmp_path / "iPad.ipsw"
    manifest = plistlib.loads(synthetic_manifest())
    manifest["SupportedProductTypes"] = ["iPad13,1", "iPad13,2"]
    build_ipsw(ipad, plistlib.dumps(manifest))
    _fails(capsys, cli(section, "ipsw", "add", str(ipad)),
           r"station: iPad.ipsw: its BuildManifest is for iPad13,1, iPad13,2, not an iPhone this station restores")
    assert tree(section.cache_dir) == cache_with_one


def test_manifest_that_disagrees_with_the_published_file(cli, server: Server, section: IpswSection,
                                                          cache_with_one: dict, tmp_path: Path, capsys) -> None:
    # The bytes are published as an iPhone14,7 IPSW, but the BuildManifest inside names iPhone13,2.
    swapped = build_ipsw(tmp_path / "iPhone14,7_18.0.1_22A3370_Restore.ipsw", synthetic_manifest(("iPhone13,2",)))
    server.publish(swapped, ("iPhone14,7",), "18.0.1", "22A3370")
    assert cli(section, "ipsw", "catalog", "refresh", "iPhone14,7") == 0
    capsys.readouterr()
    _fails(capsys, cli(section, "ipsw", "add", str(swapped)),
           r"station: iPhone14,7_18.0.1_22A3370_Restore.ipsw: its BuildManifest says iOS 18.0.1 \(22A3370\) for "
           r"iPhone13,2, but the catalog publishes this file as 22A3370 for iPhone14,7")
    assert tree(section.cache_dir) == cache_with_one


def test_match_for_a_model_no_ipsw_supports(cli, section: IpswSection, cache_with_one: dict, capsys) -> None:
    _fails(capsys, cli(section, "ipsw", "match", "iPhone14,7"),
           r"station: NO IPSW iPhone14,7: no usable IPSW for iPhone14,7 in .*")
    _fails(capsys, cli(section, "ipsw", "match", "nonsense"),
           r"station: nonsense: expected a ProductType \(iPhone14,7\) or CPID:BDID in hex \(8110:18\)")


@pytest.fixture
def unreadable(monkeypatch: pytest.MonkeyPatch):
    """Make a file unreadable: chmod 000, or (root reads anything) an injected EACCES on open."""
    def make(path: Path) -> Path:
        path.chmod(0)
        if os.geteuid() == 0:
            real_open = pathlib.Path.open

            def deny(self: Path, *args, **kwargs):  # type: ignore[no-untyped-def]
                if self == path:
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
                return real_open(self, *args, **kwargs)
            monkeypatch.setattr(pathlib.Path, "open", deny)
        return path
    return make


def test_unreadable_file(cli, section: IpswSection, cache_with_one: dict, ipsw14_7: Path, unreadable,
                         tmp_path: Path, capsys) -> None:
    _fails(capsys, cli(section, "ipsw", "add", str(unreadable(ipsw14_7))),
           rf"station: {re.escape(str(ipsw14_7))}: Permission denied")
    _fails(capsys, cli(section, "ipsw", "add", str(tmp_path / "missing.ipsw")),
           r"station: .*missing.ipsw: No such file or directory")
    directory = tmp_path / "dir.ipsw"
    directory.mkdir()
    _fails(capsys, cli(section, "ipsw", "add", str(directory)), r"station: .*dir.ipsw: Is a directory")
    assert tree(section.cache_dir) == cache_with_one


def test_disk_full_during_add_injected(cli, server: Server, section: IpswSection, cache_with_one: dict,
                                       ipsw14_7: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    url = server.publish(ipsw14_7, ("iPhone14,7",), "18.0.1", "22A3370")
    real_write, room = os.write, [100_000]

    def write(fd: int, data) -> int:  # type: ignore[no-untyped-def]
        if room[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = real_write(fd, bytes(data)[:room[0]])
        room[0] -= written
        return written

    monkeypatch.setattr(os, "write", write)
    for source in (str(ipsw14_7), url):
        room[0] = 100_000
        _fails(capsys, cli(section, "ipsw", "add", source),
               rf"station: disk full in {re.escape(str(section.cache_dir))} while writing {re.escape(ipsw14_7.name)}")
        assert tree(section.cache_dir) == cache_with_one


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (needs root and mount); skipped where it cannot be mounted."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                                           capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root); the injected ENOSPC test covers it")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_disk_full_during_add_on_a_small_filesystem(cli, server: Server, section: IpswSection,
                                                     small_filesystem: Path, tmp_path: Path, capsys) -> None:
    small = dataclasses.replace(section, cache_dir=small_filesystem / "cache")
    fits = build_ipsw(tmp_path / "iPhone15,4_17.5.1_21F90_Restore.ipsw",
                      synthetic_manifest(("iPhone15,4",), "17.5.1", "21F90"), os_size=200_000, seed=5)
    server.publish(fits, ("iPhone15,4",), "17.5.1", "21F90")
    assert cli(small, "ipsw", "add", str(fits)) == 0
    capsys.readouterr()
    before = tree(small.cache_dir)
    big = build_ipsw(tmp_path / "iPhone14,7_18.0.1_22A3370_Restore.ipsw", synthetic_manifest(), os_size=2_000_000)
    server.publish(big, ("iPhone14,7",), "18.0.1", "22A3370")
    _fails(capsys, cli(small, "ipsw", "add", str(big)),
           rf"station: disk full in {re.escape(str(small.cache_dir))} while writing {re.escape(big.name)}")
    assert tree(small.cache_dir) == before


def test_remove_refuses_a_path_outside_the_cache(cli, section: IpswSection, cache_with_one: dict, tmp_path: Path,
                                                 capsys) -> None:
    (name,) = [n for n in cache_with_one if n.endswith(".ipsw")]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    other = elsewhere / name
    other.write_bytes(b"not the cached file")
    for command in ("remove", "verify"):
        _fails(capsys, cli(section, "ipsw", command, str(other)),
               rf"station: {re.escape(str(other))}: not in the cache \({re.escape(str(section.cache_dir))}\); "
               rf"give the file name \({re.escape(name)}\)")
    assert tree(section.cache_dir) == cache_with_one and other.exists()
    assert cli(section, "ipsw", "remove", str(section.cache_dir / ".." / "cache" / name)) == 0  # in the cache: fine
    assert capsys.readouterr().out == f"removed {section.cache_dir / name}\n"


def test_remove_the_same_file_twice_in_one_command(cli, section: IpswSection, cache_with_one: dict,
                                                   capsys) -> None:
    (name,) = [n for n in cache_with_one if n.endswith(".ipsw")]
    assert cli(section, "ipsw", "remove", name, name, str(section.cache_dir / name)) == 0
    out, err = capsys.readouterr()
    assert (out, err) == (f"removed {section.cache_dir / name}\n", "")
    assert tree(section.cache_dir) == {}
