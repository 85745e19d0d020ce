"""Build-identity choice on the real manifests' traps, and on a synthetic one without ../shared."""
from __future__ import annotations

import json
import plistlib
from pathlib import Path

import pytest

from station.ipsw import models
from station.ipsw.errors import IpswError
from station.ipsw.manifest import parse_manifest

from .factory import ERASE, identity, synthetic_manifest


def _index(shared_data: Path) -> dict:
    return json.loads((shared_data / "buildmanifests" / "INDEX.json").read_text())["files"]


def _real(shared_data: Path, name: str):
    return parse_manifest((shared_data / "buildmanifests" / name).read_bytes(), name)


def test_real_manifests_parse_as_the_index_says(shared_data: Path) -> None:
    for name, expected in _index(shared_data).items():
        manifest = _real(shared_data, name)
        assert (manifest.version, manifest.build) == (expected["ProductVersion"], expected["ProductBuildVersion"])
        assert list(manifest.product_types) == expected["SupportedProductTypes"]
        assert [(i.device_class, i.restore_behavior, i.variant, i.chip_id, i.board_id)
                for i in manifest.identities] == [
            (e["DeviceClass"], e["RestoreBehavior"], e["Variant"], int(e["ApChipID"], 16), int(e["ApBoardID"], 16))
            for e in expected["BuildIdentities"]]


@pytest.mark.parametrize(("name", "product_type", "chip_board", "index"), [
    # two boards in one IPSW; Research identities without RestoreBehavior whose Variant contains the customer one
    ("iOS26.2.1_23C71_iPhone13-2_iPhone13-3.BuildManifest.plist", "iPhone13,2", None, 0),
    ("iOS26.2.1_23C71_iPhone13-2_iPhone13-3.BuildManifest.plist", "iPhone13,3", None, 1),
    ("iOS15.4.1_19E258_iPhone14-3.BuildManifest.plist", "iPhone14,3", None, 0),
    # four boards on two chips
    ("iOS15.4_19E241_iPhone_4.7_P3.BuildManifest.plist", "iPhone9,1", None, 1),
    ("iOS15.4_19E241_iPhone_4.7_P3.BuildManifest.plist", "iPhone9,3", None, 0),
    ("iOS15.4_19E241_iPhone_4.7_P3.BuildManifest.plist", "iPhone10,4", None, 2),
    ("iOS15.4_19E241_iPhone_4.7_P3.BuildManifest.plist", "iPhone10,1", None, 3),
    # the same ProductType and BDID on two chips: only CPID tells them apart
    ("iOS15.7_19H12_iPhone8-1.BuildManifest.plist", None, (0x8000, 0x04), 0),
    ("iOS15.7_19H12_iPhone8-1.BuildManifest.plist", None, (0x8003, 0x04), 1),
])
def test_erase_identity_of_real_manifests(shared_data: Path, name: str, product_type: str | None,
                                          chip_board: tuple[int, int] | None, index: int) -> None:
    manifest = _real(shared_data, name)
    boards = models.boards_for(product_type) if product_type else (models.board_at(*chip_board),)
    chosen = {manifest.erase_identity(b) for b in boards}  # type: ignore[arg-type]
    assert len(chosen) == 1
    picked = chosen.pop()
    assert picked is not None and picked.index == index and picked.restore_behavior == "Erase"
    expected = _index(shared_data)[name]["BuildIdentities"][index]
    assert "Erase" in expected["Variant"] and "Research" not in expected["Variant"]


def test_synthetic_manifest_skips_research_even_when_it_comes_first() -> None:
    manifest = parse_manifest(synthetic_manifest(), "test")
    picked = manifest.erase_identity(models.boards_for("iPhone14,7")[0])
    assert picked is not None and (picked.index, picked.variant) == (2, ERASE)


def test_research_given_restore_behavior_erase_is_still_not_chosen() -> None:
    # The later commit of the 23C71 source repo edited its Research identities to RestoreBehavior=Erase.
    board = models.boards_for("iPhone14,7")[0]
    data = plistlib.dumps({"ProductVersion": "18.0", "ProductBuildVersion": "22A1", "SupportedProductTypes":
                           ["iPhone14,7"], "BuildIdentities": [
                               identity(board.board_config, board.chip_id, board.board_id, "Erase",
                                        "Research " + ERASE, "r.dmg")]})
    assert parse_manifest(data, "test").erase_identity(board) is None


def test_manifest_for_other_boards_has_no_identity() -> None:
    manifest = parse_manifest(synthetic_manifest(("iPhone13,2",)), "test")
    assert manifest.erase_identity(models.boards_for("iPhone14,7")[0]) is None


@pytest.mark.parametrize("data", [b"not a plist", plistlib.dumps({"ProductVersion": "18.0"}),
                                  plistlib.dumps({"ProductVersion": "1", "ProductBuildVersion": "2",
                                                  "SupportedProductTypes": [], "BuildIdentities": [{}]})])
def test_bad_manifest_is_one_line(data: bytes) -> None:
    with pytest.raises(IpswError, match=r"^x.ipsw: BuildManifest.plist is not a valid build manifest"):
        parse_manifest(data, "x.ipsw")
