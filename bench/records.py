"""Records benchmarks (issue 5): CSV export against the sqlite3 shell, and event-loop lag while writing.

    .venv/bin/python -m bench.records [--sessions 100000] [--dir /var/tmp] [--repeat 3]

A temp state dir is filled with ``--sessions`` sessions through the recorder's own
writer, fed by ``station.machine.step`` on 16 slots, then deleted afterwards.
The export comparison needs the ``sqlite3`` shell (Debian package ``sqlite3``).
Each line prints figures and ratios; nothing asserts on absolute times.
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import itertools
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from hw.phones import Device, Lock, Mode
from station.config import StationSection
from station.machine import (
    Attached,
    Confirm,
    Detached,
    Event,
    Identified,
    LockCheckStarted,
    LockResult,
    Policy,
    Port,
    Progress,
    RestoreFailed,
    RestoreFinished,
    RestoreStarted,
    State,
    step,
)
from station.records import certificate, db, export, keys
from station.records.recorder import Recorder
from station.records.writer import Firmware, SessionWriter, Transition

SLOTS = 16
SHA256 = "5e" * 32
CLEAR = LockResult(Lock.CLEAR, method="activation-server")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.records", description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100_000, help="sessions in the database (default 100000)")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the temp state dir (default: $TMPDIR)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per export measurement; the best one counts")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the simulated 16-phone run")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-records-", dir=args.dir) as temp:
        state_dir = Path(temp) / "state"
        populate(state_dir, args.sessions)
        compare_export(state_dir, Path(temp), args.repeat)
        loop_lag(state_dir, args.seconds)
    return 0


# Port histories, as the station's state machine plays them --------------------


def device(n: int) -> Device:
    udid = f"{n:040x}"
    return Device(key=udid, mode=Mode.NORMAL, product_type="iPhone14,7", ios_version="16.1",
                  build="20B82", udid=udid, ecid=0x1A2B0000 + n, serial=f"F{n:011d}")


def history(n: int) -> Iterator[Event | Firmware]:
    """A mix like a busy day: mostly clean restores, some locked, some retried, some pulled out."""
    d = device(n)
    yield from (Attached(Device(key=d.key, mode=d.mode)), Identified(d), LockCheckStarted())
    kind = n % 10
    if kind == 0:
        yield from (LockResult(Lock.LOCKED, "Find My is on", "fmip"), Detached())
        return
    yield from (CLEAR, Confirm())
    yield Firmware(0, "21F90", "17.5.1", SHA256)
    yield from (RestoreStarted(), Progress("restore image", 40.0))
    if kind == 1:  # USB trouble: one automatic retry
        yield from (RestoreFailed("usb reset", retryable=True), RestoreStarted())
    if kind == 2:  # pulled out mid-restore
        yield Detached()
        return
    yield from (RestoreFinished(), CLEAR, Detached())


def play(n: int, slot: int, at: Callable[[], float]) -> Iterator[Transition | Firmware]:
    """The items the station would report for session ``n`` on ``slot``."""
    port = Port(slot)
    for event in history(n):
        if isinstance(event, Firmware):
            yield Firmware(slot, event.build, event.version, event.sha256)
            continue
        old, port = port, step(port, event, Policy(), 0.0).port
        if port.state is not old.state or isinstance(event, Confirm):
            yield Transition(old, port, event, at())


# 1. Fill the database ------------------------------------------------------------


def populate(state_dir: Path, sessions: int) -> None:
    key = keys.load_or_create(state_dir)
    conn = db.open_store(state_dir)
    writer = SessionWriter(conn, key, certificate.Issuer("bench", "bench operator", "bench",
                                                         certificate.tool_version()))
    clock = itertools.count(time.time() - 30 * 86400, 0.5)  # a month of history, half a second a step
    started = time.perf_counter()
    items = 0
    for first in range(0, sessions, 1000):
        with db.transaction(conn):
            for n in range(first, min(first + 1000, sessions)):
                for item in play(n, n % SLOTS + 1, clock.__next__):
                    writer.apply(item)
                    items += 1
    elapsed = time.perf_counter() - started
    transitions = conn.execute("SELECT count(*) FROM transitions").fetchone()[0]
    conn.close()
    size = sum(p.stat().st_size for p in state_dir.iterdir()) / 2**20
    print(f"populated {sessions} sessions ({transitions} transitions, {items} items) through the "
          f"recorder's writer in {elapsed:.1f} s: {sessions / elapsed:.0f} sessions/s; {size:.0f} MiB")


# 2. CSV export: ours against the sqlite3 shell -------------------------------------


def compare_export(state_dir: Path, temp: Path, repeat: int) -> None:
    path = db.path_in(state_dir)
    ours, theirs = temp / "ours.csv", temp / "sqlite3.csv"

    def our_export() -> None:
        conn = db.open_existing(state_dir)
        with ours.open("w", encoding="utf-8", newline="") as stream:
            export.write_csv(conn, stream)
        conn.close()

    shell = shutil.which("sqlite3")
    our_time = best(our_export, repeat)
    rows = sum(1 for _ in ours.open("rb")) - 1
    mib = ours.stat().st_size / 2**20
    print(f"export csv (station records export): {rows} rows, {mib:.1f} MiB in {our_time * 1000:.0f} ms: "
          f"{rows / our_time:,.0f} rows/s, {mib / our_time:.0f} MiB/s")
    if shell is None:
        print("sqlite3 shell not found (apt-get install sqlite3): no side-by-side ratio")
        return
    conn = db.open_existing(state_dir)
    sql, _ = db.sessions_query(conn, None)
    conn.close()

    def shell_export() -> None:
        with theirs.open("wb") as stream:
            subprocess.run([shell, "-csv", "-header", str(path), sql], stdout=stream, check=True)

    their_time = best(shell_export, repeat)
    print(f"export csv (sqlite3 -csv shell):      {rows} rows, {theirs.stat().st_size / 2**20:.1f} MiB in "
          f"{their_time * 1000:.0f} ms: {rows / their_time:,.0f} rows/s; same values: "
          f"{'yes' if same_values(ours, theirs) else 'NO'}")
    print(f"export throughput ratio station/sqlite3 = {their_time / our_time:.2f} (goal >= 0.5)")


def same_values(first: Path, second: Path) -> bool:
    """The two files hold the same fields (they quote differently: we quote every text field)."""
    with first.open(newline="") as a, second.open(newline="") as b:
        return all(x == y for x, y in itertools.zip_longest(csv.reader(a), csv.reader(b)))


def best(run: Callable[[], None], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


# 3. Event-loop lag during a simulated 16-phone run ---------------------------------


class NullListener:
    def on_transition(self, old: Port, new: Port, event: object, at: float) -> None:
        pass

    def on_firmware(self, slot: int, build: str, version: str, sha256: str) -> None:
        pass


async def phone(slot: int, listener: NullListener | Recorder, numbers: Iterator[int],
                gap: float, until: float, done: list[int]) -> None:
    """One slot: phone after phone, an event every ``gap`` seconds, as the station reports them."""
    while time.perf_counter() < until:
        for item in play(next(numbers), slot, time.time):
            if isinstance(item, Firmware):
                listener.on_firmware(item.slot, item.build, item.version, item.sha256)
            else:
                listener.on_transition(item.old, item.new, item.event, item.at)
                if item.new.state is State.EMPTY:
                    done.append(slot)
            await asyncio.sleep(gap)


async def simulate(listener: NullListener | Recorder, seconds: float, gap: float) -> tuple[list[float], int]:
    lags: list[float] = []
    done: list[int] = []
    until = time.perf_counter() + seconds
    numbers = itertools.count(10_000_000)

    async def probe() -> None:
        while time.perf_counter() < until:
            started = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - started - 0.005)

    await asyncio.gather(probe(), *(phone(slot, listener, numbers, gap, until, done)
                                    for slot in range(1, SLOTS + 1)))
    return lags, len(done)


def loop_lag(state_dir: Path, seconds: float) -> None:
    gap = 0.002  # 16 phones, each event 2 ms after the last: ~8000 transitions/s, far above a real station
    baseline, _ = asyncio.run(simulate(NullListener(), seconds, gap))
    recorder = Recorder(StationSection(id="bench", state_dir=state_dir))
    recorder.start()
    lags, sessions = asyncio.run(simulate(recorder, seconds, gap))
    started = time.perf_counter()
    recorder.stop(timeout=120)
    drain = time.perf_counter() - started
    print(f"16-phone run, {seconds:.0f} s, an event every {gap * 1000:.0f} ms per phone: "
          f"{sessions} sessions recorded (writer drained {drain:.2f} s after the run)")
    for name, values in (("no listener", baseline), ("recorder", lags)):
        q = statistics.quantiles(values, n=100)
        print(f"  loop lag with {name:<11}: p50 {q[49] * 1000:.2f} ms, p99 {q[98] * 1000:.2f} ms, "
              f"max {max(values) * 1000:.2f} ms over {len(values)} ticks")
    print(f"loop lag p99 with recorder = {statistics.quantiles(lags, n=100)[98] * 1000:.2f} ms (goal < 10 ms)")


if __name__ == "__main__":
    raise SystemExit(main())
