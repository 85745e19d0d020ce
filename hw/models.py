"""iPhone models by ProductType or by chip id + board id, from pymobiledevice3's table."""
from __future__ import annotations

from functools import cache

from pymobiledevice3.irecv_devices import IRECV_DEVICES, IRecvDevice


def all_models() -> tuple[IRecvDevice, ...]:
    """Every Apple device pymobiledevice3 knows, in its table's order."""
    return IRECV_DEVICES


@cache
def _by_product_type() -> dict[str, IRecvDevice]:
    table: dict[str, IRecvDevice] = {}
    for device in IRECV_DEVICES:
        table.setdefault(device.product_type, device)  # the table's first row, as before
    return table


@cache
def _by_chip_board() -> dict[tuple[int, int], IRecvDevice]:
    return {(d.chip_id, d.board_id): d for d in IRECV_DEVICES}


def by_product_type(product_type: str) -> IRecvDevice | None:
    """One board of the ProductType (iPhone8,1 has two; boards differ only in the chip's maker)."""
    return _by_product_type().get(product_type)


def by_chip_board(chip_id: int, board_id: int) -> IRecvDevice | None:
    return _by_chip_board().get((chip_id, board_id))


def marketing_name(product_type: str) -> str:
    model = by_product_type(product_type)
    return model.display_name if model else product_type
