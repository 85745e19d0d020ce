"""The USB links a hub's ports share, for the simulated restores' filesystem transfers.

A Raspberry Pi 4 has one USB 2.0 link behind all its ports (about 36-40 MB/s of ASR payload in
idevicerestore's logs), a Pi 5 two, and a hub's upstream port is one more. Every transfer on a
link shares its rate: each one gets an equal part, never more than one phone takes alone
(``flow_rate``: ASR on an idle link, about 35 MB/s). That is processor sharing, computed
exactly here: the rates change only when a transfer starts, asks for more, or ends.

A link asked for far more than it carries fails transfers the way real restores fail:
idevicerestore #604 (a Pi 4 restoring several phones at once) ends at random percentages with
"Unable to send data to ASR. Sent 0 of 131092 bytes". Here, once the transfers open on a link
ask for more than ``fail_load`` times its rate for ``fail_after_s`` (the phone's ASR gives up
on a stalled stream), the transfer furthest from done fails (the least work lost), and so on
while the link stays that loaded. The threshold is a parameter: the issue does not say at how
many phones it starts.

Workers reach a link over a Unix socket, one connection per transfer, one line per request::

    open <link> <total bytes>      (no answer)
    send <bytes>                   -> "ok" once the link carried them | "fail <reason>"

Requests are answered in order and may be sent ahead (a worker keeps one queued behind the one
being carried, as a host keeps USB transfers queued), so the link never waits for a worker.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

ASR_FAILURE = "Unable to send data to ASR: the USB link is oversubscribed"
MAX_LINE = 256


@dataclass
class _Transfer:
    number: int
    total: int
    sent: float = 0.0
    # Requests not carried yet, oldest first: [bytes left, its answer].
    requests: deque[tuple[list[float], asyncio.Future[str]]] = field(default_factory=deque)

    @property
    def pending(self) -> float:
        return sum(left[0] for left, _ in self.requests)

    def carry(self, size: float) -> None:
        self.sent += size
        while self.requests and size > 0:
            left, answer = self.requests[0]
            moved = min(left[0], size)
            left[0] -= moved
            size -= moved
            if left[0] <= 1e-6:
                self.requests.popleft()
                if not answer.done():
                    answer.set_result("ok")

    def fail(self, answer: str) -> None:
        while self.requests:
            _, waiter = self.requests.popleft()
            if not waiter.done():
                waiter.set_result(answer)


@dataclass
class LinkStats:
    peak_transfers: int = 0
    bytes_carried: float = 0.0
    failures: int = 0
    busy_s: float = 0.0  # time with at least one transfer sending
    first_open: float | None = None  # loop time of the first transfer's start
    last_close: float | None = None  # and of the last one's end

    def utilisation(self, rate: float) -> float:
        """Bytes carried over what the link could carry from the first transfer to the last."""
        if self.first_open is None or self.last_close is None or self.last_close <= self.first_open:
            return 0.0
        return self.bytes_carried / (rate * (self.last_close - self.first_open))


@dataclass
class SimLink:
    """One link: its rate, the per-transfer ceiling, and when it fails transfers (all bytes/s, s)."""

    name: str
    rate: float
    flow_rate: float
    fail_load: float = 2.0
    fail_after_s: float = 30.0
    stats: LinkStats = field(default_factory=LinkStats)

    def __post_init__(self) -> None:
        self._open: dict[int, _Transfer] = {}
        self._numbers = itertools.count(1)
        self._updated: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loaded_since: float | None = None

    # -- what workers do --------------------------------------------------

    def open(self, total: int) -> _Transfer:
        self._advance()
        transfer = _Transfer(next(self._numbers), total)
        self._open[transfer.number] = transfer
        if self.stats.first_open is None:
            self.stats.first_open = self._updated
        self.stats.peak_transfers = max(self.stats.peak_transfers, len(self._open))
        self._replan()
        return transfer

    def send(self, transfer: _Transfer, size: int) -> asyncio.Future[str]:
        """"ok" once the link carried ``size`` more bytes of this transfer, or why it failed."""
        answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._advance()
        if transfer.number not in self._open:
            answer.set_result(f"fail {ASR_FAILURE}")
            return answer
        transfer.requests.append(([float(size)], answer))
        self._replan()
        return answer

    def close(self, transfer: _Transfer) -> None:
        self._advance()
        if self._open.pop(transfer.number, None) is not None:
            transfer.fail("fail the transfer was closed")
            self.stats.last_close = self._updated
        self._replan()

    @property
    def transfers(self) -> int:
        return len(self._open)

    # -- the fluid model --------------------------------------------------

    def _share(self) -> float:
        sending = sum(1 for t in self._open.values() if t.pending > 0)
        return min(self.flow_rate, self.rate / sending) if sending else 0.0

    def _advance(self) -> None:
        """Move every sending transfer on by what the link carried since the last change."""
        now = asyncio.get_running_loop().time()
        elapsed = 0.0 if self._updated is None else now - self._updated
        self._updated = now
        share = self._share()
        if elapsed <= 0 or share == 0:
            return
        self.stats.busy_s += elapsed
        for transfer in self._open.values():
            moved = min(transfer.pending, share * elapsed)
            if moved > 0:
                transfer.carry(moved)
                self.stats.bytes_carried += moved

    def _replan(self) -> None:
        """After any change: answer what is done, fail what must fail, and wake at the next event."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        wake: list[float] = []
        if self._overloaded():
            self._loaded_since = self._loaded_since if self._loaded_since is not None else now
            due = self._loaded_since + self.fail_after_s
            if now >= due:
                self._fail_one()
                self._loaded_since = now if self._overloaded() else None
                return self._replan()
            wake.append(due - now)
        else:
            self._loaded_since = None
        share = self._share()
        firsts = [t.requests[0][0][0] for t in self._open.values() if t.requests]
        if firsts and share > 0:
            wake.append(min(firsts) / share)
        if wake:
            self._timer = loop.call_later(max(0.0, min(wake)), self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._advance()
        self._replan()

    def _overloaded(self) -> bool:
        # Only transfers with bytes still to carry ask anything of the link: one whose last piece
        # is through is done, however late its worker closes it.
        asking = sum(1 for t in self._open.values() if t.sent < t.total - 1e-6)
        return asking * self.flow_rate > self.fail_load * self.rate

    def _fail_one(self) -> None:
        victim = min(self._open.values(), key=lambda t: (t.sent / max(t.total, 1), -t.number))
        del self._open[victim.number]
        self.stats.failures += 1
        log.warning("USB link %s: %d transfers ask %.0f MB/s of its %.0f MB/s; transfer %d fails "
                    "at %.0f%%", self.name, len(self._open) + 1,
                    (len(self._open) + 1) * self.flow_rate / 1e6, self.rate / 1e6, victim.number,
                    100 * victim.sent / max(victim.total, 1))
        victim.fail(f"fail {ASR_FAILURE}")


class SimLinks:
    """Every link of a bench, served to the restore workers on one Unix socket."""

    def __init__(self, links: dict[str, SimLink], socket_path: Path) -> None:
        self.links = links
        self.socket_path = socket_path
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.socket_path),
                                                       limit=MAX_LINE)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for link in self.links.values():
            stats = link.stats
            if stats.first_open is not None:
                log.info("USB link %s: %.1f GB carried, busy %.1f%% of the time it had transfers; "
                         "at most %d at once, %d failed", link.name, stats.bytes_carried / 1e9,
                         100 * stats.utilisation(link.rate), stats.peak_transfers, stats.failures)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link: SimLink | None = None
        transfer: _Transfer | None = None
        try:
            while line := await reader.readline():
                words = line.decode("ascii", "replace").split()
                if len(words) == 3 and words[0] == "open" and link is None and words[2].isdigit():
                    link = self.links.get(words[1])
                    if link is None:
                        writer.write(f"fail no USB link {words[1]!r}\n".encode())
                        break
                    transfer = link.open(int(words[2]))
                elif len(words) == 2 and words[0] == "send" and link and transfer and words[1].isdigit():
                    link.send(transfer, int(words[1])).add_done_callback(
                        lambda answer: answer.cancelled() or writer.write(f"{answer.result()}\n".encode()))
                else:
                    writer.write(b"fail bad request\n")
                    break
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass  # a worker that died or spoke nonsense: its transfer ends below
        finally:
            if link is not None and transfer is not None:
                link.close(transfer)
            writer.close()
