"""Small test IPSWs built with zipfile: a real BuildManifest from ../shared, or a synthetic one."""
from __future__ import annotations

import hashlib
import plistlib
import random
import struct
import zipfile
from pathlib import Path
from typing import Any

from station.ipsw.models import boards_for

ERASE = "Customer Erase Install (IPSW)"
UPDATE = "Customer Upgrade Install (IPSW)"


def identity(board_config: str, chip: int, board: int, behavior: str | None, variant: str,
             ramdisk: str, os_path: str = "os.dmg") -> dict[str, Any]:
    info = {"DeviceClass": board_config, "Variant": variant}
    if behavior is not None:
        info["RestoreBehavior"] = behavior
    return {"ApChipID": f"0x{chip:04X}", "ApBoardID": f"0x{board:02X}", "Info": info,
            "Manifest": {"OS": {"Info": {"Path": os_path}}, "RestoreRamDisk": {"Info": {"Path": ramdisk}}}}


def synthetic_manifest(models: tuple[str, ...] = ("iPhone14,7",), version: str = "18.0.1",
                       build: str = "22A3370") -> bytes:
    """A manifest with the real ones' traps: a Research identity without RestoreBehavior comes first."""
    identities = []
    for model in models:
        for b in boards_for(model):
            identities += [
                identity(b.board_config, b.chip_id, b.board_id, None, "Research " + ERASE, "research.dmg"),
                identity(b.board_config, b.chip_id, b.board_id, "Update", UPDATE, "update.dmg"),
                identity(b.board_config, b.chip_id, b.board_id, "Erase", ERASE, "erase.dmg"),
            ]
    return plistlib.dumps({"ProductVersion": version, "ProductBuildVersion": build,
                           "SupportedProductTypes": list(models), "ManifestVersion": 0,
                           "BuildIdentities": identities})


def build_ipsw(path: Path, manifest: bytes | None, os_size: int = 300_000, seed: int = 1) -> Path:
    """An IPSW: deflated plists, stored dmgs (the OS image is the largest member), like Apple's."""
    os_path = "os.dmg"
    if manifest is not None:
        first = plistlib.loads(manifest)["BuildIdentities"][0]
        os_path = first["Manifest"].get("OS", {}).get("Info", {}).get("Path", os_path)
    with zipfile.ZipFile(path, "w") as archive:
        if manifest is not None:
            archive.writestr("BuildManifest.plist", manifest, compress_type=zipfile.ZIP_DEFLATED)
        archive.writestr("Restore.plist", plistlib.dumps({"seed": seed}), compress_type=zipfile.ZIP_DEFLATED)
        archive.writestr("erase.dmg", b"ramdisk" * 100)
        archive.writestr(os_path, os_bytes(os_size, seed))
    return path


def os_bytes(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def os_member(path: Path) -> str:
    with zipfile.ZipFile(path) as archive:
        stored = [i for i in archive.infolist() if i.compress_type == zipfile.ZIP_STORED]
        return max(stored, key=lambda i: i.file_size).filename


def firmware(path: Path, url: str, model: str, version: str, build: str, **changes: Any) -> dict[str, Any]:
    """The ipsw.me v4 firmware record of ``path``; ``changes`` override fields (a wrong digest...)."""
    data = path.read_bytes()
    return {"identifier": model, "version": version, "buildid": build, "url": url, "filesize": len(data),
            "sha1sum": hashlib.sha1(data).hexdigest(), "sha256sum": hashlib.sha256(data).hexdigest(),
            "md5sum": hashlib.md5(data).hexdigest(), "signed": True, **changes}


def tree(directory: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under ``directory`` with its size, mtime and SHA-1: 'the cache is left as it was'.

    Not catalog.json: that is the publisher's list, saved again whenever an add finds the station online;
    nor .lock, the empty file every command that changes the cache locks.
    """
    if not directory.exists():
        return {}
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns,
                                            hashlib.sha1(p.read_bytes()).hexdigest())
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name not in ("catalog.json", ".lock")}


def member_data_at(path: Path, name: str) -> tuple[int, int]:
    """Where ``name``'s (compressed) bytes sit in the zip: (offset, length)."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(name)
    with path.open("rb") as stream:
        stream.seek(info.header_offset + 26)
        name_length, extra_length = struct.unpack("<HH", stream.read(4))
    return info.header_offset + 30 + name_length + extra_length, info.compress_size


def patch_member_header(path: Path, name: str, **fields: int) -> None:
    """Overwrite ``crc``, ``compress_size`` or ``file_size`` of ``name`` in both its local and central headers."""
    offsets = {"crc": (14, 16), "compress_size": (18, 20), "file_size": (22, 24)}  # in the local, central header
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(name)
        central = archive.start_dir
    data = bytearray(path.read_bytes())
    while data[central + 46:central + 46 + len(name.encode())] != name.encode():
        central += 46 + sum(struct.unpack_from("<HHH", data, central + 28))
    for field, value in fields.items():
        local_at, central_at = offsets[field]
        struct.pack_into("<I", data, info.header_offset + local_at, value)
        struct.pack_into("<I", data, central + central_at, value)
    path.write_bytes(bytes(data))


def deep_binary_plist(depth: int) -> bytes:
    """A binary plist of ``depth`` arrays nested in each other (plistlib.dumps itself recurses too deep)."""
    ref_size, offset_size = 4, 8
    objects, offsets, at = [], [], 8
    for n in range(depth):
        obj = b"\xa1" + struct.pack(">I", n + 1)  # an array of one reference: the next object
        offsets.append(at)
        objects.append(obj)
        at += len(obj)
    offsets.append(at)
    objects.append(b"\x08")  # false
    at += 1
    table = b"".join(struct.pack(">Q", o) for o in offsets)
    trailer = struct.pack(">6xBBQQQ", offset_size, ref_size, len(offsets), 0, at)
    return b"bplist00" + b"".join(objects) + table + trailer
