"""The framing lockdownd and the services behind it use: a 4-byte big-endian length, then a plist."""
from __future__ import annotations

import asyncio
import logging
import plistlib
import struct
from collections.abc import AsyncIterator
from typing import Any

logger = logging.getLogger(__name__)

MAX_FRAME = 16 * 1024 * 1024  # far above any real request; a bigger length means a broken peer


class FrameError(Exception):
    """The peer sent something that is not a length-prefixed plist dict."""


async def read_plist(reader: asyncio.StreamReader) -> dict[str, Any]:
    """Read one message; ``asyncio.IncompleteReadError`` when the peer closes."""
    (length,) = struct.unpack(">I", await reader.readexactly(4))
    if length > MAX_FRAME:
        raise FrameError(f"frame of {length} bytes")
    payload = await reader.readexactly(length)
    message = plist_dict(payload)
    if message is None:
        raise FrameError(f"not a plist dict: {payload[:40]!r}")
    return message


async def requests(reader: asyncio.StreamReader, who: str) -> AsyncIterator[dict[str, Any]]:
    """Each message until the peer closes; a peer that breaks the framing is dropped (logged)."""
    while True:
        try:
            yield await read_plist(reader)
        except asyncio.IncompleteReadError:
            return
        except FrameError as e:
            logger.warning("%s: dropping a peer that sent %s", who, e)
            return


def plist_dict(data: Any) -> dict[str, Any] | None:
    """``data`` parsed as a plist dict, or None for anything else (garbage, an HTML page, another type)."""
    if not isinstance(data, bytes | bytearray) or not data:
        return None
    try:
        parsed = plistlib.loads(bytes(data))
    except Exception:  # noqa: BLE001 - plistlib raises many types on garbage; a peer's garbage must not kill us
        return None
    return parsed if isinstance(parsed, dict) else None


async def write_plist(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    payload = plistlib.dumps(message)
    writer.write(struct.pack(">I", len(payload)) + payload)
    await writer.drain()
