"""Issue 9, section 5: a bad BuildManifest or zip gets one line, a non-zero exit, and the cache as it was."""
from __future__ import annotations

import os
import plistlib
import re
import time
import zipfile
from pathlib import Path

import pytest

from station.config import IpswSection
from station.ipsw import manifest as manifests
from station.ipsw import record as records
from station.ipsw.cache import IpswCache
from station.ipsw.errors import NoIpswError

from .conftest import Server, fails_one_line
from .factory import (deep_binary_plist, identity, member_data_at, os_bytes, patch_member_header,
                      synthetic_manifest, tree)

NAME = "iPhone14,7_18.0.1_22A3370_Restore.ipsw"
INVALID = r"station: {}: BuildManifest.plist is not a valid build manifest \({}\)\n"


def _add(cli, section: IpswSection, path: Path, *more: str) -> int:
    return cli(section, "ipsw", "add", str(path), "--trust-unlisted", *more)


def _zip(path: Path, manifest: bytes, compress: int = zipfile.ZIP_DEFLATED) -> Path:
    """A test IPSW whose BuildManifest is ``manifest`` as given (build_ipsw parses it first)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("BuildManifest.plist", manifest, compress_type=compress)
        archive.writestr("erase.dmg", b"ramdisk" * 100)
        archive.writestr("os.dmg", os_bytes(20_000))
    return path


def test_a_huge_xml_comment_is_refused_before_it_is_parsed(cli, section: IpswSection, cache_with_one: dict,
                                                             tmp_path: Path, capsys) -> None:
    # expat 2.5 scans a token again from its start for every 2 KiB plistlib feeds it: quadratic.
    comment = b"<!--" + b"x" * (manifests.MAX_MANIFEST_SIZE + 1) + b"-->"
    ipsw = _zip(tmp_path / NAME, synthetic_manifest().replace(b"<plist", comment + b"<plist", 1))
    started = time.monotonic()
    fails_one_line(capsys, _add(cli, section, ipsw),
                   rf"station: {re.escape(NAME)}: BuildManifest.plist is \d+ bytes, more than a build manifest's "
                   rf"{manifests.MAX_MANIFEST_SIZE}")
    assert time.monotonic() - started < 2
    assert tree(section.cache_dir) == cache_with_one


def test_a_huge_manifest_is_read_with_a_bound(cli, section: IpswSection, cache_with_one: dict, tmp_path: Path,
                                              capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    # 64 MiB of whitespace after </plist> is still a valid plist; deflated it is 64 KiB.
    ipsw = _zip(tmp_path / NAME, synthetic_manifest() + b" " * (64 << 20))
    fails_one_line(capsys, _add(cli, section, ipsw),
                   rf"station: {re.escape(NAME)}: BuildManifest.plist is {(64 << 20) + len(synthetic_manifest())} "
                   rf"bytes, more than a build manifest's {manifests.MAX_MANIFEST_SIZE}")
    # The zip's header may understate the size; the read itself is bounded (zipfile then finds the CRC wrong).
    patch_member_header(ipsw, "BuildManifest.plist", file_size=1000)
    fails_one_line(capsys, _add(cli, section, ipsw),
                   rf"station: {re.escape(NAME)}: BuildManifest.plist cannot be read from the zip \(Bad CRC-32")
    assert tree(section.cache_dir) == cache_with_one


def test_a_huge_compressed_manifest_is_refused_unread(cli, section: IpswSection, cache_with_one: dict,
                                                      tmp_path: Path, capsys) -> None:
    ipsw = _zip(tmp_path / NAME, synthetic_manifest() + os_bytes(manifests.MAX_MANIFEST_SIZE), zipfile.ZIP_STORED)
    fails_one_line(capsys, _add(cli, section, ipsw),
                   rf"station: {re.escape(NAME)}: BuildManifest.plist is \d+ bytes, more than a build manifest's ")
    assert tree(section.cache_dir) == cache_with_one


@pytest.mark.parametrize(("key", "value", "reason"), [
    ("ProductVersion", "1" * 5000, r"ProductVersion '1{40}\.\.\.' \(5000 characters\) is not an iOS version"),
    ("ProductVersion", "18.0\n1", r"ProductVersion '18\.0\\n1' is not an iOS version"),
    ("ProductVersion", 18, r"ProductVersion is an integer, not a string"),
    ("ProductBuildVersion", "22A3370" * 700, r"ProductBuildVersion '(22A3370){5}22A33\.\.\.' \(4900 characters\) "
                                             r"is not a build number"),
    ("SupportedProductTypes", "iPhone14,7", r"SupportedProductTypes is a string, not an array"),
    ("SupportedProductTypes", ["iPhone14,7\nx"], r"SupportedProductTypes\[0\] 'iPhone14,7\\nx' is not a ProductType"),
])
def test_a_bad_version_build_or_model_is_refused_at_add(cli, section: IpswSection, cache_with_one: dict,
                                                        tmp_path: Path, capsys, key: str, value, reason: str) -> None:
    raw = plistlib.loads(synthetic_manifest())
    raw[key] = value
    ipsw = _zip(tmp_path / NAME, plistlib.dumps(raw))
    fails_one_line(capsys, _add(cli, section, ipsw), INVALID.format(re.escape(NAME), reason))
    assert tree(section.cache_dir) == cache_with_one


def test_a_5000_digit_version_already_in_the_cache_does_not_stop_other_ipsws(
        cli, section: IpswSection, cache_with_one: dict, tmp_path: Path, capsys) -> None:
    """An IPSW added before the check: every phone of its model failed (int() of 5000 digits raises)."""
    raw = plistlib.loads(synthetic_manifest(("iPhone15,4",)))
    raw["ProductVersion"] = "1" * 5000
    planted = _zip(section.cache_dir / "iPhone15,4_huge_Restore.ipsw", plistlib.dumps(raw))
    stat = planted.stat()
    records.save(planted, records.Record(state="unlisted", size=stat.st_size, mtime_ns=stat.st_mtime_ns,
                                         inode=stat.st_ino, ctime_ns=stat.st_ctime_ns,
                                         checked_at="2026-01-01T00:00:00+00:00", sha256="0" * 64))
    before = tree(section.cache_dir)
    assert cli(section, "ipsw", "match", "iPhone15,4") == 0
    assert "iPhone15,4_18.0.1_22A3370_Restore.ipsw" in capsys.readouterr().out
    assert tree(section.cache_dir) == before


def test_a_flipped_byte_in_the_deflated_manifest(cli, section: IpswSection, cache_with_one: dict, tmp_path: Path,
                                                 capsys) -> None:
    ipsw = _zip(tmp_path / NAME, synthetic_manifest())
    at, length = member_data_at(ipsw, "BuildManifest.plist")
    data = bytearray(ipsw.read_bytes())
    data[at + length // 2] ^= 0x10
    ipsw.write_bytes(bytes(data))
    fails_one_line(capsys, _add(cli, section, ipsw),
                   rf"station: {re.escape(NAME)}: BuildManifest.plist cannot be read from the zip \(")
    assert tree(section.cache_dir) == cache_with_one


def test_a_flipped_byte_in_a_stored_manifest(cli, section: IpswSection, cache_with_one: dict, tmp_path: Path,
                                             capsys) -> None:
    manifest = synthetic_manifest()
    ipsw = _zip(tmp_path / NAME, manifest.replace(b"<dict>", b"<dict\x00", 1), zipfile.ZIP_STORED)
    reason = r"not a plist: not well-formed \(invalid token\): line \d+, column \d+"
    fails_one_line(capsys, _add(cli, section, ipsw), INVALID.format(re.escape(NAME), reason))
    assert tree(section.cache_dir) == cache_with_one


def test_corrupt_deflate_data(cli, section: IpswSection, cache_with_one: dict, tmp_path: Path, capsys) -> None:
    ipsw = _zip(tmp_path / NAME, synthetic_manifest())
    at, length = member_data_at(ipsw, "BuildManifest.plist")
    data = bytearray(ipsw.read_bytes())
    data[at:at + length] = b"\xff" * length  # block type 3: invalid
    ipsw.write_bytes(bytes(data))
    fails_one_line(capsys, _add(cli, section, ipsw),
                   rf"station: {re.escape(NAME)}: BuildManifest.plist cannot be read from the zip "
                   r"\(Error -3 while decompressing data: invalid block type\)")
    assert tree(section.cache_dir) == cache_with_one


def test_a_bad_crc(cli, section: IpswSection, cache_with_one: dict, tmp_path: Path, capsys) -> None:
    ipsw = _zip(tmp_path / NAME, synthetic_manifest())
    patch_member_header(ipsw, "BuildManifest.plist", crc=0x12345678)
    fails_one_line(capsys, _add(cli, section, ipsw),
                   rf"station: {re.escape(NAME)}: BuildManifest.plist cannot be read from the zip "
                   r"\(Bad CRC-32 for file 'BuildManifest.plist'\)")
    assert tree(section.cache_dir) == cache_with_one


@pytest.mark.parametrize("depth", [5000, 100_000])
def test_a_deeply_nested_binary_plist(cli, section: IpswSection, cache_with_one: dict, tmp_path: Path, capsys,
                                      depth: int) -> None:
    ipsw = _zip(tmp_path / NAME, deep_binary_plist(depth))
    fails_one_line(capsys, _add(cli, section, ipsw), INVALID.format(re.escape(NAME), "nested too deep"))
    assert tree(section.cache_dir) == cache_with_one


def test_a_deeply_nested_xml_plist(cli, section: IpswSection, cache_with_one: dict, tmp_path: Path,
                                   capsys) -> None:
    """plistlib parses XML without recursion; str() of the result would recurse."""
    raw = synthetic_manifest().replace(b"<string>18.0.1</string>", b"<array>" * 5000 + b"</array>" * 5000, 1)
    fails_one_line(capsys, _add(cli, section, _zip(tmp_path / NAME, raw)),
                   INVALID.format(re.escape(NAME), "ProductVersion is an array, not a string"))
    assert tree(section.cache_dir) == cache_with_one


def test_trust_unlisted_refuses_a_zip_without_the_files_its_manifest_names(
        cli, section: IpswSection, cache_with_one: dict, tmp_path: Path, capsys) -> None:
    raw = plistlib.loads(synthetic_manifest())
    board = raw["BuildIdentities"][2]
    raw["BuildIdentities"][2] = identity(board["Info"]["DeviceClass"], int(board["ApChipID"], 16),
                                         int(board["ApBoardID"], 16), "Erase", board["Info"]["Variant"],
                                         "erase.dmg", os_path="missing-os.dmg")
    ipsw = _zip(tmp_path / NAME, plistlib.dumps(raw))  # holds erase.dmg and os.dmg, not missing-os.dmg
    fails_one_line(capsys, _add(cli, section, ipsw),
                   rf"station: {re.escape(NAME)}: its BuildManifest names a file the zip does not hold: "
                   r"missing-os.dmg \(OS of build identity #2\)\n")
    assert tree(section.cache_dir) == cache_with_one


def test_an_edit_that_kept_the_mtime_is_hashed_again(cli, server: Server, section: IpswSection,
                                                     cache_with_one: dict, capsys) -> None:
    (name,) = [n for n in cache_with_one if n.endswith(".ipsw")]
    path = section.cache_dir / name
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the OS image: same size, the zip still reads
    path.write_bytes(bytes(data))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # as `touch -r` or a restore from backup does
    assert path.stat().st_mtime_ns == before.st_mtime_ns
    assert IpswCache(section).entries()[0].state == "changed (verify again)"
    with pytest.raises(NoIpswError):  # hashed again before use, and refused
        IpswCache(section).select("iPhone15,4")
    assert IpswCache(section).entries()[0].state.startswith(f"failed: {name}: wrong digest")
    fails_one_line(capsys, cli(section, "ipsw", "match", "iPhone15,4"), r"station: NO IPSW iPhone15,4: ")
