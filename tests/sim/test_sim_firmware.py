"""The synthetic IPSW builder: what ipsw_parser and the station read in it, and how it compares with Apple's."""
from __future__ import annotations

import hashlib
import plistlib
import tomllib
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import pytest
from ipsw_parser.ipsw import IPSW
from pyimg4 import IM4P

from hw.sim.firmware import (COMPONENT_NAMES, ERASE_VARIANT, UPDATE_VARIANT, boards_of, build_ipsw,
                             component_digest, ipsw_name, read_build_manifest)
from station.ipsw.manifest import parse_manifest
from station.ipsw.models import boards_for

DEMO = Path(__file__).resolve().parents[2] / "config" / "sim" / "demo.toml"
TWINS = (("AppleLogo", "RestoreLogo"), ("DeviceTree", "RestoreDeviceTree"), ("KernelCache", "RestoreKernelCache"),
         ("SEP", "RestoreSEP"))


def demo_phones() -> list[tuple[str, str]]:
    phones = tomllib.loads(DEMO.read_text())["phone"]
    return sorted({(p["model"], p["ios"]) for p in phones})


@pytest.fixture(scope="module")
def ipsw_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_ipsw(tmp_path_factory.mktemp("fw") / ipsw_name("iPhone14,7", "17.5.1", "21F90"),
                      "iPhone14,7", "17.5.1", "21F90", os_size=3 << 20 | 12345)


def test_same_inputs_same_bytes_other_build_other_bytes(tmp_path: Path, ipsw_path: Path) -> None:
    again = build_ipsw(tmp_path / "again.ipsw", "iPhone14,7", "17.5.1", "21F90", os_size=3 << 20 | 12345)
    assert again.read_bytes() == ipsw_path.read_bytes()
    other = build_ipsw(tmp_path / "other.ipsw", "iPhone14,7", "17.5.1", "21F91", os_size=3 << 20 | 12345)
    assert other.read_bytes() != ipsw_path.read_bytes()
    assert not list(tmp_path.glob("*.part"))
    assert ipsw_path.name == "iPhone14,7_17.5.1_21F90_Restore.ipsw"


@pytest.mark.parametrize("behavior, variant", [("Erase", ERASE_VARIANT), ("Update", UPDATE_VARIANT)])
def test_ipsw_parser_finds_every_component_with_its_size_and_digest(ipsw_path: Path, behavior: str,
                                                                      variant: str) -> None:
    ipsw = IPSW.create_from_path(str(ipsw_path))
    manifest = ipsw.build_manifest
    assert (manifest.product_version, manifest.product_build_version, manifest.build_major) == ("17.5.1", "21F90", 21)
    identity = manifest.get_build_identity("d27ap", restore_behavior=behavior)
    assert identity.variant == variant and identity["ApChipID"] == "0x8110" and identity["ApBoardID"] == "0x18"
    assert set(COMPONENT_NAMES) <= set(identity.manifest)
    with zipfile.ZipFile(ipsw_path) as archive:
        for name in COMPONENT_NAMES:
            entry = identity.manifest[name]
            info = archive.getinfo(identity.get_component_path(name))
            data = identity.get_component(name).data
            assert len(data) == info.file_size and len(entry["Digest"]) == 48
            if name == "OS":
                assert info.compress_type == zipfile.ZIP_STORED and info.file_size == 3 << 20 | 12345
                assert entry["Digest"] == hashlib.sha384(data).digest()
                assert entry["Info"]["Personalize"] is False
            else:
                assert IM4P(data).payload.data.startswith(b"SIMFW ")
                assert entry["Digest"] == component_digest(data, name, entry["Info"].get("Img4PayloadType"))
                assert entry["Info"]["RestoreRequestRules"]  # or pmd3's add_ap_tags leaves it out
    assert plistlib.loads(ipsw.system_version)["ProductVersion"] == "17.5.1"
    assert plistlib.loads(ipsw.restore_version)["ProductBuildVersion"] == "21F90"


def test_erase_and_update_differ_in_the_ramdisk_only(ipsw_path: Path) -> None:
    manifest = plistlib.loads(read_build_manifest(ipsw_path))
    erase, update = manifest["BuildIdentities"]
    differ = {name for name in COMPONENT_NAMES if erase["Manifest"][name] != update["Manifest"][name]}
    assert differ == {"RestoreRamDisk", "RestoreTrustCache"}


@pytest.mark.parametrize("model, version", demo_phones())
def test_the_demo_phones_get_an_identity_the_station_picks(tmp_path: Path, model: str, version: str) -> None:
    path = build_ipsw(tmp_path / "x.ipsw", model, version, "21F90", os_size=4096)
    manifest = parse_manifest(read_build_manifest(path), path.name)  # the station's own reader
    with zipfile.ZipFile(path) as archive:
        assert manifest.product_types == (model,) and not manifest.missing_files(archive.namelist())
    for board in boards_for(model):
        identity = manifest.erase_identity(board)
        assert identity is not None and identity.device_class == board.board_config
        ipsw = IPSW.create_from_path(str(path))
        assert ipsw.build_manifest.get_build_identity(board.board_config, restore_behavior="Update").variant \
            == UPDATE_VARIANT


def test_a_two_board_ipsw_has_an_identity_per_board(tmp_path: Path) -> None:
    path = build_ipsw(tmp_path / "x.ipsw", ("iPhone13,2", "iPhone13,3"), "26.2.1", "23C71", os_size=4096)
    identities = plistlib.loads(read_build_manifest(path))["BuildIdentities"]
    assert [(i["Info"]["DeviceClass"], i["Info"]["RestoreBehavior"], i["ApBoardID"]) for i in identities] == [
        ("d53gap", "Erase", "0x0C"), ("d53pap", "Erase", "0x0E"), ("d53gap", "Update", "0x0C"),
        ("d53pap", "Update", "0x0E")]  # the real 23C71 manifest's order and boards
    with pytest.raises(ValueError, match="unknown ProductType"):
        boards_of("iPhone99,99")


def test_a_large_os_image_is_streamed_not_held(tmp_path: Path) -> None:
    size = 48 << 20
    tracemalloc.start()
    try:
        build_ipsw(tmp_path / "big.ipsw", "iPhone15,4", "18.0.1", "22A3370", os_size=size)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"peak {peak} bytes for a {size}-byte OS image"
    with zipfile.ZipFile(tmp_path / "big.ipsw") as archive:
        os_member = max(archive.infolist(), key=lambda i: i.file_size)
        assert os_member.file_size == size and archive.testzip() is None


# Against Apple's manifests (../shared/data/buildmanifests) ---------------------------------------------


def real_manifests(shared_data: Path) -> dict[str, dict[str, Any]]:
    return {p.name: plistlib.loads(p.read_bytes()) for p in sorted((shared_data / "buildmanifests").glob("*.plist"))}


def customer(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for i in manifest["BuildIdentities"] if i["Info"].get("Variant") in (ERASE_VARIANT, UPDATE_VARIANT)]


def test_keys_per_identity_are_those_of_apples_manifests(shared_data: Path, ipsw_path: Path) -> None:
    real = real_manifests(shared_data)
    ours = plistlib.loads(read_build_manifest(ipsw_path))
    assert set.intersection(*(set(m) for m in real.values())) <= set(ours)
    identities = [i for m in real.values() for i in customer(m)]
    # Every key all real identities have; the baseband ones stay out: no BasebandFirmware here (see firmware.py).
    common = set.intersection(*(set(i) for i in identities))
    common_info = set.intersection(*(set(i["Info"]) for i in identities))
    for identity in ours["BuildIdentities"]:
        assert {k for k in common if not k.startswith("Bb")} <= set(identity)
        assert common_info <= set(identity["Info"])


def test_component_entries_have_the_keys_apples_have(shared_data: Path, ipsw_path: Path) -> None:
    ours = plistlib.loads(read_build_manifest(ipsw_path))["BuildIdentities"]
    for name, manifest in real_manifests(shared_data).items():
        for real_identity, our_identity in zip(customer(manifest)[:1] + customer(manifest)[-1:], (ours[0], ours[1])):
            for component in COMPONENT_NAMES:
                real = real_identity["Manifest"].get(component)
                if real is None:  # 15.x manifests before SystemVolume... have every one of ours
                    continue
                mine = our_identity["Manifest"][component]
                assert set(real) - {"TBMDigests"} <= set(mine), (name, component)
                assert set(real["Info"]) <= set(mine["Info"]), (name, component, set(real["Info"]) - set(mine["Info"]))
                assert real["Info"].get("Img4PayloadType") == mine["Info"].get("Img4PayloadType"), (name, component)
                assert [r["Conditions"] for r in real["Info"]["RestoreRequestRules"]] == \
                    [r["Conditions"] for r in mine["Info"]["RestoreRequestRules"]], (name, component)


def test_twins_share_a_file_but_not_a_digest_as_in_apples(shared_data: Path, ipsw_path: Path) -> None:
    ours = plistlib.loads(read_build_manifest(ipsw_path))["BuildIdentities"][0]["Manifest"]
    mine = {"BuildIdentities": [{"Manifest": ours, "Info": {"Variant": ERASE_VARIANT}}]}
    for manifest in [*real_manifests(shared_data).values(), mine]:
        identity = customer(manifest)[0]["Manifest"]
        for installed, restore in TWINS:
            assert identity[installed]["Info"]["Path"] == identity[restore]["Info"]["Path"]
            assert identity[installed]["Digest"] != identity[restore]["Digest"]


def test_erase_and_update_ramdisks_differ_as_in_apples(shared_data: Path, ipsw_path: Path) -> None:
    for manifest in [*real_manifests(shared_data).values(), plistlib.loads(read_build_manifest(ipsw_path))]:
        paths = {(i["Info"]["DeviceClass"], i["Info"]["RestoreBehavior"]):
                 i["Manifest"]["RestoreRamDisk"]["Info"]["Path"] for i in customer(manifest)}
        for (board, behavior), path in paths.items():
            if behavior == "Erase":
                assert path != paths[(board, "Update")]
