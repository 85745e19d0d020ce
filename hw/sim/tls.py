"""A phone's daemon turning a connection into TLS, where the connection may drop mid-handshake."""
from __future__ import annotations

import asyncio
import ssl


async def start_tls(writer: asyncio.StreamWriter, context: ssl.SSLContext) -> None:
    """``writer.start_tls(context)``; a connection that drops during the handshake (usbmuxd
    stopping, a cable pulled) raises ConnectionResetError, as any other loss of it does.

    asyncio's ``loop.start_tls`` returns None instead of a transport when the connection is lost
    during the handshake (cpython #105993, documented there as intended), and Python 3.11's
    ``StreamWriter.start_tls`` then fails with AttributeError and leaves the writer with no
    transport, so that closing it fails too.
    """
    transport = writer.transport
    try:
        await writer.start_tls(context)
    except AttributeError:
        if writer.transport is not None:
            raise
        writer._transport = transport  # noqa: SLF001 (the lost transport back, so close() works)
        raise ConnectionResetError("the connection dropped during the TLS handshake") from None
