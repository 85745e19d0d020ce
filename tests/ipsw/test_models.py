"""The board table (pymobiledevice3's IRECV_DEVICES) against the reference device table."""
from __future__ import annotations

import json
from pathlib import Path

from station.ipsw import models


def test_table_agrees_with_reference_device_table(shared_data: Path) -> None:
    table = json.loads((shared_data / "device_table.json").read_text())
    rows = {**table["iphones_10_1_and_later"], **table["non_retail"]}
    for product_type, row in rows.items():
        assert [(b.chip_id, b.board_id, b.board_config) for b in models.boards_for(product_type)] == [
            (row["cpid_int"], row["bdid_int"], row["board_config"])], product_type
    for product_type, variants in table["older_iphones_used_by_included_buildmanifests"].items():
        assert sorted((b.chip_id, b.board_id) for b in models.boards_for(product_type)) == sorted(
            (v["cpid_int"], v["bdid_int"]) for v in variants)
    for key, product_type in table["lookup_by_cpid_bdid"].items():
        board = models.board_at(*models.parse_chip_board(key))  # type: ignore[misc]
        assert board is not None and board.product_type == product_type, key


def test_station_models_start_at_iphone_8_and_leave_out_the_research_vm(shared_data: Path) -> None:
    table = json.loads((shared_data / "device_table.json").read_text())
    assert set(models.station_models()) == set(table["iphones_10_1_and_later"])


def test_chip_board_text() -> None:
    assert models.parse_chip_board("8110:18") == (0x8110, 0x18)
    assert models.parse_chip_board("0x8101:0x0C") == (0x8101, 0x0C)
    assert models.parse_chip_board("iPhone14,7") is None
    assert models.parse_chip_board("8110") is None


def test_board_lookup() -> None:
    assert models.board_at(0x8110, 0x18).product_type == "iPhone14,7"  # type: ignore[union-attr]
    assert models.board_at(0x1234, 0x56) is None
    assert len(models.boards_for("iPhone8,1")) == 2  # same ProductType and BDID on two chips
    assert models.is_iphone("iPhone14,7") and not models.is_iphone("iPad8,1")
