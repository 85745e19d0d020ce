"""Synthetic IPSWs for the simulation: Apple's shape, our bytes, the same bytes every time.

``build_ipsw`` writes, for some ProductTypes and an iOS version/build, a zip that
ipsw_parser opens and pymobiledevice3's restore walks like a real one
(PROTOCOLS.md 5.1): a BuildManifest.plist with an Erase and an Update identity per
board (board config, chip id and board id from pymobiledevice3's ``IRECV_DEVICES``
through ``hw.models``), each naming the components pymobiledevice3 reads (iBSS, iBEC,
RestoreLogo, RestoreRamDisk, RestoreDeviceTree, RestoreSEP, RestoreKernelCache and the
IsLoadedByiBoot RestoreTrustCache in recovery; LLB, iBoot, AppleLogo, RecoveryMode,
DeviceTree, SEP for NORData; KernelCache, SystemVolume, Ap,SystemVolumeCanonicalMetadata
for restored's data requests; OS for ASR), every one a pyimg4 IM4P except the OS image.

The quirks of the real manifests it keeps (compare ../shared/data/buildmanifests, which
tests/sim/test_sim_firmware.py does when it is there):
- Restore* components share their file with their installed twin (RestoreLogo and
  AppleLogo, RestoreSEP and SEP...) yet carry a different Digest: the digest is taken over
  the IM4P with its type replaced by the component's (Img4PayloadType, else
  pymobiledevice3's ``img4.COMPONENT_FOURCC``), which is what ``img4.stitch_component``
  sends. Digests are SHA-384 (48 bytes), as for every chip from 0x8010 on in the real files.
- Erase and Update identities differ in RestoreRamDisk (and its RestoreTrustCache).
- RestoreRequestRules as in the real files: pymobiledevice3's ``TSSRequest.add_ap_tags``
  skips an Image4 component without them.
- SEP/RestoreSEP carry TBMDigests for A14 and later (0x8101, 0x8110 have them in the real
  files, 0x8010/0x8015 do not; A12/A13 were not checked), so the TSS answer needs
  ``<name>-TBM``.
- No BasebandFirmware: signing a BBFW (pymobiledevice3 ``Restore.sign_bbfw``) needs real
  MBN images. A phone reporting FirmwarePreflightInfo.ChipSerialNo would make
  ``add_baseband_tags`` fail on this manifest (KeyError 'BasebandFirmware').

The OS image is deterministic pseudo-random data (SHAKE-256 of the build in counter mode),
generated, hashed and written to the zip 1 MiB at a time: a large image never sits in memory.
"""
from __future__ import annotations

import hashlib
import os
import plistlib
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ipsw_parser.ipsw import IPSW
from pyimg4 import IM4P
from pymobiledevice3.irecv_devices import IRecvDevice
from pymobiledevice3.restore.img4 import COMPONENT_FOURCC

from hw.models import all_models

# The release the simulated restores install: iOS 18.2, build 22C152 (every iPhone from the XS on).
SIM_VERSION, SIM_BUILD = "18.2", "22C152"
DEFAULT_OS_SIZE = 16 << 20  # bytes: big enough to take a few ASR chunks, small enough for a test
CHUNK = 1 << 20  # bytes generated, hashed and written at a time
ERASE_VARIANT = "Customer Erase Install (IPSW)"
UPDATE_VARIANT = "Customer Upgrade Install (IPSW)"
MANIFEST_NAME = "BuildManifest.plist"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed: the same inputs give the same bytes
_FIRST_TBM_CHIP = 0x8101

# RestoreRequestRules, rebuilt from the real manifests' five shapes (19E258, 23C71).
_DEMOTE = {"Actions": {"DPRO": True}, "Conditions": {"ApDemotionPolicyOverride": "Demote", "ApRawProductionMode": True}}


def _image4_rules(mode: str, demote: bool = False) -> list[dict[str, Any]]:
    """EPRO from the production mode (raw or current), ESEC from the raw security mode."""
    demoted = ({"ApDemotionPolicyOverride": "Demote", "ApRawProductionMode": True, "ApRequiresImage4": True}
               if mode == "ApRawProductionMode" else
               {"ApCurrentProductionMode": True, "ApDemotionPolicyOverride": "Demote", "ApInRomDFU": True,
                "ApRequiresImage4": True})
    rules = [{"Actions": {"EPRO": False}, "Conditions": {mode: False, "ApRequiresImage4": True}},
             {"Actions": {"EPRO": True}, "Conditions": {mode: True, "ApRequiresImage4": True}},
             {"Actions": {"EPRO": False}, "Conditions": demoted},
             {"Actions": {"ESEC": False}, "Conditions": {"ApRawSecurityMode": False, "ApRequiresImage4": True}},
             {"Actions": {"ESEC": True}, "Conditions": {"ApRawSecurityMode": True, "ApRequiresImage4": True}}]
    return ([_DEMOTE] if demote else []) + rules


_SEP_RULES = [
    {"Actions": {"ESEC": False}, "Conditions": {"ApRawSecurityMode": False}},
    {"Actions": {"ESEC": True}, "Conditions": {"ApRawSecurityMode": True}},
    {"Actions": {"DSEC": True, "ESEC": False},
     "Conditions": {"ApDemotionPolicyOverride": "", "ApRawProductionMode": False, "ApRawSecurityMode": True}},
    {"Actions": {"DSEC": True, "ESEC": False},
     "Conditions": {"ApDemotionPolicyOverride": "Demote", "ApRawProductionMode": False, "ApRawSecurityMode": True}},
    {"Actions": {"EPRO": False}, "Conditions": {"ApRawProductionMode": False}},
    {"Actions": {"EPRO": True}, "Conditions": {"ApRawProductionMode": True}},
]
_RAW, _CURRENT = "ApRawProductionMode", "ApCurrentProductionMode"


@dataclass(frozen=True)
class _File:
    path: str  # template: {short} d64, {board} d64ap, {family} iphone14, {ramdisk} / {os} dmg names
    fourcc: str | None  # the IM4P's type as shipped; None: not an IM4P (the OS image)
    size: int  # payload bytes


@dataclass(frozen=True)
class _Component:
    name: str
    file: str  # key of _FILES; "ramdisk"/"restore_trustcache" take the identity's behaviour
    rules: tuple[str, bool] | None  # (production-mode condition, demote rule); None: the SEP rules
    flags: tuple[str, ...] = ()  # Info booleans set True
    payload_type: str | None = None  # Info.Img4PayloadType
    build_string: bool = False


_FILES = {
    "ibss": _File("Firmware/dfu/iBSS.{short}.RELEASE.im4p", "ibss", 8192),
    "ibec": _File("Firmware/dfu/iBEC.{short}.RELEASE.im4p", "ibec", 8192),
    "llb": _File("Firmware/all_flash/LLB.{short}.RELEASE.im4p", "illb", 8192),
    "iboot": _File("Firmware/all_flash/iBoot.{short}.RELEASE.im4p", "ibot", 8192),
    "devicetree": _File("Firmware/all_flash/DeviceTree.{board}.im4p", "dtre", 4096),
    "sep": _File("Firmware/all_flash/sep-firmware.{short}.RELEASE.im4p", "sepi", 16384),
    "logo": _File("Firmware/all_flash/applelogo@3x~iphone.im4p", "logo", 2048),
    "recoverymode": _File("Firmware/all_flash/recoverymode@3x~iphone-lightning.im4p", "recm", 2048),
    "kernel": _File("kernelcache.release.{family}", "krnl", 65536),
    "ramdisk_Erase": _File("{ramdisk_Erase}", "rdsk", 262144),
    "ramdisk_Update": _File("{ramdisk_Update}", "rdsk", 262144),
    "restore_trustcache_Erase": _File("Firmware/{ramdisk_Erase}.trustcache", "rtsc", 1024),
    "restore_trustcache_Update": _File("Firmware/{ramdisk_Update}.trustcache", "rtsc", 1024),
    "static_trustcache": _File("Firmware/{os}.trustcache", "trst", 1024),
    "root_hash": _File("Firmware/{os}.root_hash", "isys", 256),
    "mtree": _File("Firmware/{os}.mtree", "msys", 1024),
    "os": _File("{os}", None, 0),
}

# Info flags and rules per component as in the real manifests (19E258's d64ap identity).
_COMPONENTS = (
    _Component("iBSS", "ibss", (_CURRENT, True), build_string=True),
    _Component("iBEC", "ibec", (_CURRENT, False), build_string=True),
    _Component("LLB", "llb", (_RAW, True), ("IsFirmwarePayload",), build_string=True),
    _Component("iBoot", "iboot", (_RAW, False), ("IsFirmwarePayload",)),
    _Component("DeviceTree", "devicetree", (_RAW, False), ("IsFirmwarePayload",)),
    _Component("RestoreDeviceTree", "devicetree", (_CURRENT, False), payload_type="rdtr"),
    _Component("KernelCache", "kernel", (_RAW, False)),
    _Component("RestoreKernelCache", "kernel", (_CURRENT, False), payload_type="rkrn"),
    _Component("SEP", "sep", None, ("IsSecondaryFirmwarePayload",)),
    _Component("RestoreSEP", "sep", None, ("IsSecondaryFirmwarePayload",), payload_type="rsep"),
    _Component("AppleLogo", "logo", (_RAW, False), ("IsFirmwarePayload",)),
    _Component("RestoreLogo", "logo", (_CURRENT, False), payload_type="rlgo"),
    _Component("RecoveryMode", "recoverymode", (_RAW, False), ("IsFirmwarePayload",)),
    _Component("RestoreRamDisk", "ramdisk", (_CURRENT, False)),
    _Component("RestoreTrustCache", "restore_trustcache", (_CURRENT, False), ("IsFUDFirmware", "IsLoadedByiBoot"),
               payload_type="rtsc"),
    _Component("StaticTrustCache", "static_trustcache", (_CURRENT, False), ("IsFUDFirmware",)),
    _Component("SystemVolume", "root_hash", (_CURRENT, False), ("IsFUDFirmware",)),
    _Component("Ap,SystemVolumeCanonicalMetadata", "mtree", (_CURRENT, False), ("IsFUDFirmware",)),
    _Component("OS", "os", (_CURRENT, False)),
)
COMPONENT_NAMES = tuple(c.name for c in _COMPONENTS)
_INFO_FLAGS = ("IsFTAB", "IsLoadedByiBoot", "IsLoadedByiBootStage1", "IsiBootEANFirmware",
               "IsiBootNonEssentialFirmware")
# Info.SystemPartitionPadding: the same table in all four real manifests.
_PADDING = {"8": 80, "16": 160, "32": 320, "64": 640, "128": 1280, "256": 1280, "512": 1280, "768": 1280,
            "1024": 1280}


def ipsw_name(product_types: str | Sequence[str], version: str, build: str) -> str:
    """Apple's file name for a single-board-family IPSW: ``iPhone14,7_17.5.1_21F90_Restore.ipsw``."""
    return f"{','.join(_product_types(product_types))}_{version}_{build}_Restore.ipsw"


def boards_of(product_type: str) -> tuple[IRecvDevice, ...]:
    """Every board pymobiledevice3 knows for ``product_type`` (iPhone8,1 has two)."""
    boards = tuple(d for d in all_models() if d.product_type == product_type)
    if not boards:
        raise ValueError(f"unknown ProductType {product_type!r} (not in pymobiledevice3's IRECV_DEVICES)")
    return boards


def os_image_chunks(product_types: str | Sequence[str], build: str, size: int) -> Iterator[bytes]:
    """The OS image of (product types, build), ``CHUNK`` bytes at a time."""
    seed = _seed(_product_types(product_types), build, "os")
    for index, at in enumerate(range(0, size, CHUNK)):
        yield hashlib.shake_256(seed + index.to_bytes(8, "big")).digest(min(CHUNK, size - at))


def build_ipsw(path: Path, product_types: str | Sequence[str], version: str, build: str, *,
               os_size: int = DEFAULT_OS_SIZE) -> Path:
    """Write the IPSW to ``path`` (through ``path`` + ".part", then renamed); same arguments, same bytes."""
    types = _product_types(product_types)
    if os_size < 0:
        raise ValueError(f"os_size must not be negative: {os_size}")
    names = _dmg_names(types, build)
    files: dict[str, bytes] = {}  # member -> IM4P, in the order written
    identities = {"Erase": [], "Update": []}
    os_path = names["os"]
    for product_type in types:
        for board in boards_of(product_type):
            board_config = board.hardware_model.lower()
            fields = {"short": board_config.removesuffix("ap"), "board": board_config,
                      "family": product_type.split(",")[0].lower(), **names}
            for behavior in identities:
                identities[behavior].append(_identity(board, product_type, version, build, behavior, fields, files))
    part = path.with_name(path.name + ".part")
    with zipfile.ZipFile(part, "w") as archive:
        for member, data in files.items():
            archive.writestr(_info(member, zipfile.ZIP_DEFLATED), data)
        os_digest = _write_os(archive, os_path, types, build, os_size)
        for identity in identities["Erase"] + identities["Update"]:  # Apple lists Erase identities first
            identity["Manifest"]["OS"]["Digest"] = os_digest
        manifest = {"BuildIdentities": identities["Erase"] + identities["Update"], "ManifestVersion": 0,
                    "ProductBuildVersion": build, "ProductVersion": version, "SupportedProductTypes": list(types)}
        archive.writestr(_info(MANIFEST_NAME, zipfile.ZIP_DEFLATED), plistlib.dumps(manifest))
        for member, data in _version_plists(types, version, build, names, os_size).items():
            archive.writestr(_info(member, zipfile.ZIP_DEFLATED), data)
    os.replace(part, path)
    return path


def os_image_of(ipsw: Path, hardware_model: str) -> tuple[int, str]:
    """(size, SHA-256) of the OS image a phone's ASR must receive: its Erase identity's OS member."""
    with zipfile.ZipFile(ipsw) as archive:
        manifest = IPSW(archive).build_manifest
        member = manifest.get_build_identity(hardware_model.lower(), restore_behavior="Erase") \
            .get_component_path("OS")
        digest, size = hashlib.sha256(), 0
        with archive.open(member) as stream:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
    return size, digest.hexdigest()


def read_build_manifest(ipsw: Path) -> bytes:
    with zipfile.ZipFile(ipsw) as archive:
        return archive.read(MANIFEST_NAME)


def component_digest(im4p: bytes, component: str, payload_type: str | None = None) -> bytes:
    """SHA-384 of ``im4p`` typed as ``component``, as pymobiledevice3's stitch_component sends it."""
    fourcc = payload_type or COMPONENT_FOURCC.get(component)
    if fourcc is None:
        return hashlib.sha384(im4p).digest()
    image = IM4P(im4p)
    image.fourcc = fourcc
    return hashlib.sha384(image.output()).digest()


# Pieces -----------------------------------------------------------------------------------


def _identity(board: IRecvDevice, product_type: str, version: str, build: str, behavior: str,
              fields: dict[str, str], files: dict[str, bytes]) -> dict[str, Any]:
    manifest: dict[str, Any] = {}
    for component in _COMPONENTS:
        key = f"{component.file}_{behavior}" if component.file in ("ramdisk", "restore_trustcache") else component.file
        spec = _FILES[key]
        member = spec.path.format(**fields)
        info: dict[str, Any] = {flag: False for flag in _INFO_FLAGS}
        info.update({flag: True for flag in component.flags})
        info["Path"] = member
        info["Personalize"] = spec.fourcc is not None
        info["RestoreRequestRules"] = _SEP_RULES if component.rules is None else _image4_rules(*component.rules)
        entry: dict[str, Any] = {"Info": info, "Trusted": True}
        if component.payload_type:
            info["Img4PayloadType"] = component.payload_type
        if spec.fourcc is None:
            info["HashMethod"] = "sha2-384"
            entry["Digest"] = b""  # the OS image's, filled in once it is written
        else:
            if member not in files:
                files[member] = _im4p(spec, key, member, build)
            entry["Digest"] = component_digest(files[member], component.name, component.payload_type)
        if component.build_string:
            entry["BuildString"] = _iboot_version(build)
        if component.rules is None and board.chip_id >= _FIRST_TBM_CHIP:
            entry["TBMDigests"] = hashlib.shake_256(_seed((product_type,), build, "tbm", component.name)).digest(240)
        manifest[component.name] = entry
    return {
        "ApBoardID": f"0x{board.board_id:02X}",
        "ApChipID": f"0x{board.chip_id:04X}",
        "ApSecurityDomain": "0x01",
        "Ap,ProductType": product_type,
        "Ap,OSLongVersion": f"{version}.{build}",
        "Info": {
            "BuildNumber": build,
            "BuildTrain": "Simulated",
            "DeviceClass": board.hardware_model.lower(),
            "FDRSupport": True,
            "MinimumSystemPartition": 8192,
            "MobileDeviceMinVersion": "1351",
            "OSVarContentSize": 329121792,
            "RestoreBehavior": behavior,
            "SystemPartitionPadding": dict(_PADDING),
            "Variant": ERASE_VARIANT if behavior == "Erase" else UPDATE_VARIANT,
            "VariantContents": {name: "Production" for name in ("DFU", "Firmware", "InstalledKernelCache", "OS",
                                                                "RestoreKernelCache", "RestoreRamDisk",
                                                                "RestoreSEP", "SEP")},
        },
        "Manifest": manifest,
        "ProductMarketingVersion": version,
        "UniqueBuildID": hashlib.sha1(_seed((product_type,), build, "unique-build-id")).digest(),
    }


def _im4p(spec: _File, key: str, member: str, build: str) -> bytes:
    assert spec.fourcc is not None
    header = f"SIMFW {key} {member} {build}\n".encode()
    payload = header + hashlib.shake_256(_seed((member,), build, key)).digest(max(spec.size - len(header), 0))
    description = _iboot_version(build) if spec.fourcc in ("ibss", "ibec", "illb", "ibot") else f"sim-{key}-{build}"
    return IM4P(fourcc=spec.fourcc, description=description, payload=payload).output()


def _write_os(archive: zipfile.ZipFile, member: str, types: tuple[str, ...], build: str, size: int) -> bytes:
    info = _info(member, zipfile.ZIP_STORED)
    info.file_size = size  # lets zipfile choose ZIP64 up front for a > 4 GiB image
    digest = hashlib.sha384()
    with archive.open(info, "w") as stream:
        for chunk in os_image_chunks(types, build, size):
            digest.update(chunk)
            stream.write(chunk)
    return digest.digest()


def _version_plists(types: tuple[str, ...], version: str, build: str, names: dict[str, str],
                    os_size: int) -> dict[str, bytes]:
    """Restore.plist as in iPhone IPSWs; SystemVersion/RestoreVersion, which ipsw_parser reads on request."""
    boards = [b for t in types for b in boards_of(t)]
    restore = {
        "DeviceClass": "iPhone",
        "DeviceMap": [{"BDID": b.board_id, "BoardConfig": b.hardware_model.lower(), "CPID": b.chip_id,
                       "Platform": f"t{b.chip_id:x}", "SCEP": 1, "SDOM": 1} for b in boards],
        "ProductBuildVersion": build,
        "ProductType": types[0],
        "ProductVersion": version,
        "RestoreRamDisks": {"Update": names["ramdisk_Update"], "User": names["ramdisk_Erase"]},
        "SupportedProductTypes": list(types),
        "SystemRestoreImageFileSystems": {names["os"]: "APFS"},
        "SystemRestoreImages": {"User": names["os"]},
        "OSImageSize": os_size,
    }
    system = {"ProductBuildVersion": build, "ProductName": "iPhone OS", "ProductVersion": version}
    return {"Restore.plist": plistlib.dumps(restore), "SystemVersion.plist": plistlib.dumps(system),
            "RestoreVersion.plist": plistlib.dumps({"ProductBuildVersion": build, "ProductVersion": version})}


def _dmg_names(types: tuple[str, ...], build: str) -> dict[str, str]:
    """Apple-style part numbers (``078-28730-016.dmg``), derived from the build."""
    def name(role: str) -> str:
        n = int.from_bytes(hashlib.sha256(_seed(types, build, role)).digest()[:8], "big")
        return f"{n % 900 + 100:03d}-{n // 900 % 90000 + 10000:05d}-{n // 81000000 % 900 + 1:03d}.dmg"
    return {"os": name("os"), "ramdisk_Erase": name("ramdisk-erase"), "ramdisk_Update": name("ramdisk-update")}


def _iboot_version(build: str) -> str:
    n = int.from_bytes(hashlib.sha256(build.encode()).digest()[:4], "big")
    return f"iBoot-{n % 9000 + 1000}.{n // 9000 % 200}.{n // 1800000 % 100}~{n % 97 + 1}"


def _info(member: str, compression: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(member, date_time=_ZIP_TIME)
    info.compress_type = compression
    info.create_system = 3
    info.external_attr = 0o100644 << 16
    return info


def _seed(types: Sequence[str], build: str, *parts: str) -> bytes:
    return "\0".join(("station-sim-firmware", *types, build, *parts)).encode()


def _product_types(product_types: str | Sequence[str]) -> tuple[str, ...]:
    types = (product_types,) if isinstance(product_types, str) else tuple(product_types)
    if not types:
        raise ValueError("no ProductType given")
    for product_type in types:
        boards_of(product_type)
    return types
