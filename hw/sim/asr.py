"""The device side of ASR (Apple Software Restore) on restored's DataPort: the OS image arrives here.

The host is pymobiledevice3 ``restore/asr.py`` ``ASRClient`` (idevicerestore ``asr.c``). The wire:
no length prefix; control messages are bare XML plists, and the host reads the device's byte by
byte until its buffer ends with ``</plist>\\n`` (``ASRClient.recv_plist``), which is how plistlib
ends an XML plist. The device speaks first:

1. device ``{Command: Initiate, "Checksum Chunks": true}``; real restored runs
   ``asr -source asr://localhost:12345 ... --chunkchecksum`` (restore log in
   libimobiledevice/idevicerestore#328 and pwnerblu/ios7resources-ipad1#4), so checksums are on.
2. host ``{"FEC Slice Stride": 40, "Packet Payload Size": 1450, "Packets Per FEC": 25,
   Payload: {Port: 1, Size}, "Stream ID": 1, Version: 1}`` + ``"Checksum Chunk Size": 131072``
   (``ASRClient.perform_validation``, idevicerestore ``asr_send_validation_packet_info``).
3. device ``OOBData`` requests, the host answering each with exactly ``OOB Length`` raw bytes from
   ``OOB Offset`` (``handle_oob_data_request`` asserts it read that many: a range past the end
   would crash the host, so ranges stay inside ``Size``). Which ranges a real ASR asks for is
   unverified: here the head of the image and the 512-byte UDIF trailer at its end.
4. device ``{Command: Payload}``; host streams the image from offset 0 in 0x20000-byte chunks,
   each followed by its 20-byte SHA-1 when checksums are on (``ASRClient.send_payload``), no
   trailer, then closes.

A chunk whose SHA-1 does not match ends the session at once, as ASR's chunk verification does.
Whatever arrived (bytes and SHA-256) is written to ``phone.asr_received`` on every ending.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import plistlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from hw.sim.phone import SimPhone

logger = logging.getLogger(__name__)

ASR_PORT = 12345  # pymobiledevice3 DEFAULT_ASR_SYNC_PORT, idevicerestore ASR_DEFAULT_PORT
CHUNK_SIZE = 0x20000  # ASR_PAYLOAD_CHUNK_SIZE = ASR_CHECKSUM_CHUNK_SIZE
SHA1_SIZE = 20
PLIST_END = b"</plist>\n"
MAX_CONTROL_PLIST = 64 * 1024
OOB_HEAD = 0x1000  # unverified: the start of the container
UDIF_TRAILER = 512  # the "koly" block at the end of a UDIF disk image
# The host's packet info (ASRClient.perform_validation): key -> the value ASR takes (None: any int).
PACKET_INFO = {"FEC Slice Stride": 40, "Packet Payload Size": 1450, "Packets Per FEC": 25,
               "Stream ID": 1, "Version": 1}


@dataclass(frozen=True)
class AsrOutcome:
    """How one ASR session ended: what arrived, and why it stopped short (None: the whole image)."""

    size: int
    sha256: str
    announced: int  # Payload.Size in the host's packet info (0 if it never came)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class AsrSession:
    """One ASR connection. ``outcome`` resolves when it ends; ``pull`` (if given) is called once half
    of the payload has arrived, and the session then stops reading (the phone has left the bus)."""

    def __init__(self, phone: SimPhone, lock: AbstractContextManager[Any], *, checksums: bool = True,
                 pull: Callable[[], None] | None = None) -> None:
        self.phone = phone
        self._lock = lock  # the world's: daemons write the phone's fields under it
        self.checksums = checksums
        self._pull = pull
        self.outcome: asyncio.Future[AsrOutcome] = asyncio.get_running_loop().create_future()
        self.oob_requests: list[tuple[int, int]] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        digest, received, announced = hashlib.sha256(), 0, 0
        error: str | None = "the host closed ASR before the payload"
        try:
            await _send(writer, {"Command": "Initiate", "Checksum Chunks": self.checksums})
            info = await _receive(reader)
            announced, error = self._check_packet_info(info)
            if error is not None:
                return
            for offset, length in _oob_ranges(announced):
                self.oob_requests.append((offset, length))
                await _send(writer, {"Command": "OOBData", "OOB Offset": offset, "OOB Length": length})
                await reader.readexactly(length)
            await _send(writer, {"Command": "Payload"})
            index = 0
            loop = asyncio.get_running_loop()
            started = loop.time()  # the payload's own time: what the link carried
            while received < announced:
                chunk = await reader.readexactly(min(CHUNK_SIZE, announced - received))
                if self.checksums:
                    checksum = await reader.readexactly(SHA1_SIZE)
                    if hashlib.sha1(chunk).digest() != checksum:
                        error = f"chunk {index} (offset {received:#x}) failed its SHA-1 check"
                        return
                digest.update(chunk)
                received += len(chunk)
                index += 1
                if self.phone.usb_rate:  # the link's rate: the host's sends back up behind it
                    await asyncio.sleep(max(0.0, received / self.phone.usb_rate - (loop.time() - started)))
                if self._pull is not None and received >= announced // 2 and received < announced:
                    error = f"the phone left USB after {received} of {announced} bytes"
                    self._pull()
                    return
            error = None
        except asyncio.IncompleteReadError:
            error = f"the host closed ASR after {received} of {announced} payload bytes"
        except (ConnectionError, asyncio.LimitOverrunError, ValueError) as e:
            error = f"ASR connection failed after {received} bytes: {e!r}"
        finally:
            outcome = AsrOutcome(received, digest.hexdigest(), announced, error)
            with self._lock:
                self.phone.asr_received = (outcome.size, outcome.sha256)
            if error is not None:
                logger.warning("%s ASR: %s", self.phone.serial, error)
            else:
                seconds = loop.time() - started
                logger.info("%s ASR: received %d bytes, sha256 %s, in %.2f s", self.phone.serial,
                            received, outcome.sha256, seconds)
            if not self.outcome.done():
                self.outcome.set_result(outcome)

    def _check_packet_info(self, info: dict[str, Any]) -> tuple[int, str | None]:
        """The host's answer to Initiate, as pymobiledevice3 and idevicerestore build it."""
        payload = info.get("Payload")
        size = payload.get("Size") if isinstance(payload, dict) else None
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0 or payload.get("Port") != 1:
            return 0, f"packet info without a usable Payload (Port 1, Size): {payload!r}"
        wrong = {k: info.get(k) for k, v in PACKET_INFO.items() if info.get(k) != v}
        if self.checksums and info.get("Checksum Chunk Size") != CHUNK_SIZE:
            wrong["Checksum Chunk Size"] = info.get("Checksum Chunk Size")
        if wrong:
            return size, f"packet info ASR does not take: {wrong}"
        return size, None


def _oob_ranges(size: int) -> list[tuple[int, int]]:
    ranges = [(0, min(OOB_HEAD, size))]
    if size > UDIF_TRAILER:
        ranges.append((size - UDIF_TRAILER, UDIF_TRAILER))
    return ranges


async def _send(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    writer.write(plistlib.dumps(message))  # XML, ending in "</plist>\n" as the host waits for
    await writer.drain()


async def _receive(reader: asyncio.StreamReader) -> dict[str, Any]:
    data = await reader.readuntil(PLIST_END)
    if len(data) > MAX_CONTROL_PLIST:
        raise ValueError(f"a {len(data)}-byte control plist")
    try:
        message = plistlib.loads(data)
    except Exception as e:  # noqa: BLE001 - plistlib raises many types (ExpatError is no ValueError)
        raise ValueError(f"not a plist: {data[:40]!r}") from e
    if not isinstance(message, dict):
        raise ValueError(f"not a plist dict: {data[:40]!r}")
    return message
