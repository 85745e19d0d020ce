"""Which phone is which: ProductType <-> (chip id, board id, board config).

The table is pymobiledevice3's ``IRECV_DEVICES`` (the one its own restore uses),
read through ``hw.models``, so the station and the restore library never disagree
about a board.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from hw import models

# The station restores iPhones from the iPhone 8 (iPhone10,1) on.
FIRST_MODEL = (10, 1)


@dataclass(frozen=True)
class Board:
    product_type: str
    board_config: str  # lower case, as BuildIdentity Info.DeviceClass lower-cased
    chip_id: int
    board_id: int
    name: str


def _board(model: models.IRecvDevice) -> Board:
    return Board(model.product_type, model.hardware_model.lower(), model.chip_id, model.board_id,
                 model.display_name)


@cache
def _boards() -> tuple[Board, ...]:
    return tuple(map(_board, models.all_models()))


def boards_for(product_type: str) -> tuple[Board, ...]:
    """Every board of a ProductType (iPhone8,1 has two: Samsung and TSMC chips)."""
    return tuple(b for b in _boards() if b.product_type == product_type)


def board_at(chip_id: int, board_id: int) -> Board | None:
    """The board a phone in recovery/DFU reports as CPID/BDID; the pair is unique in the table."""
    model = models.by_chip_board(chip_id, board_id)
    return _board(model) if model else None


def model_number(product_type: str) -> tuple[int, int] | None:
    found = re.fullmatch(r"iPhone(\d+),(\d+)", product_type)
    return (int(found[1]), int(found[2])) if found else None


def station_models() -> tuple[str, ...]:
    """Every retail iPhone the station restores, in table order."""
    seen: dict[str, None] = {}
    for board in _boards():
        number = model_number(board.product_type)
        if number and FIRST_MODEL <= number and number[0] < 99:  # iPhone99,x: research VM
            seen[board.product_type] = None
    return tuple(seen)


def is_iphone(product_type: str) -> bool:
    return model_number(product_type) is not None and bool(boards_for(product_type))


def parse_chip_board(text: str) -> tuple[int, int] | None:
    """"8110:18" or "0x8110:0x18" (hex, as a USB serial string shows CPID and BDID) -> (chip, board)."""
    found = re.fullmatch(r"(?:0x)?([0-9a-fA-F]{1,4}):(?:0x)?([0-9a-fA-F]{1,2})", text.strip())
    return (int(found[1], 16), int(found[2], 16)) if found else None
