"""Phones an hour against what the USB bus allows: the bus-aware scheduler and two fixed ones.

`python -m bench.throughput [--speed S] [--phones N]` plays the same batch (N phones plugged in
at once, line mode, the timed engine: each restore's filesystem transfer moves an iOS 18-sized
8.7 GB image over its port's simulated USB link, hw.sim.usb_links) under three schedules, on
one 40 MB/s link (a Pi 4) and on two (a Pi 5), and prints side by side:

- phones restored per hour of scenario time, over the whole batch (first start to last done),
  divided by the bus bound: links x link rate x 3600 / payload, the most any schedule can
  restore an hour;
- how busy each link was from its first transfer's start to its last one's end (the bytes it
  carried over what it could have carried then): the scheduler's own figure, without the fill
  and the drain that no schedule avoids. Every phone moves the same payload, so this is also
  phones an hour over the bus bound while the link had transfers: a line's steady state;
- failures of an oversubscribed link ("Unable to send data to ASR", idevicerestore #604), the
  retries they cost and the phones that failed for good.

The batch figure carries the fill and the drain: the first transfer starts only after a
restore's first phases (about 50 s), and the last phone's phases after its transfer (about
145 s) move nothing; over 14 phones those are ~6 % of the batch, so its ratio cannot reach
0.95 on one link (1 - 196 / 3241 s = 0.94 at best); the link's busy share can reach 1.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

LINK_RATE = 40e6
PAYLOAD = 8.7e9  # the timed engine's synthetic OS image without an IPSW: an iOS 18 restore


@dataclass(frozen=True)
class Outcome:
    done: int
    failed: int
    batch_per_hour: float
    busy: float  # the links' mean busy share while they had transfers
    link_failures: int
    retries: int


def scenario(phones: int, links: int, schedule: str, max_parallel: int) -> str:
    per_link = -(-phones // links)
    tables = ", ".join(f'l{i} = {{ slots = {list(range(i * per_link + 1, min(phones, (i + 1) * per_link) + 1))}, '
                       f"mb_s = {LINK_RATE / 1e6:g} }}" for i in range(links))
    lines = ['[scenario]', 'description = "throughput bench"', 'duration = 86400', 'engine = "timed"',
             '[config.hub]', f'slots = {phones}', f'links = {{ {tables} }}',
             '[config.restore]', 'mode = "line"', f'schedule = "{schedule}"',
             f'max_parallel_restores = {max_parallel}', 'memory_per_restore_mb = 100', 'retries = 1']
    for slot in range(1, phones + 1):
        lines += ['[[phone]]', f'name = "p{slot}"', f'slot = {slot}', f'serial = "F2LTHRU{slot:05d}"']
    return "\n".join(lines) + "\n"


def play(folder: Path, text: str, speed: float) -> Outcome:
    folder.mkdir(parents=True)
    config = folder / "station.toml"
    config.write_text(f'[station]\nstate_dir = "{folder / "state"}"\n[ipsw]\ncache_dir = "{folder / "ipsw"}"\n')
    (folder / "scenario.toml").write_text(text)
    run = subprocess.run([sys.executable, "-m", "station.cli", "run", "--config", str(config),
                          "--sim", str(folder / "scenario.toml"), "--speed", str(speed)],
                         capture_output=True, text=True, timeout=3600)
    (folder / "station.log").write_text(run.stderr)
    listing = subprocess.run([sys.executable, "-m", "station.cli", "records", "list", "--json", "--config",
                              str(config)], capture_output=True, text=True, check=True, timeout=120)
    sessions = json.loads(listing.stdout)
    done = [s for s in sessions if s["result"] == "done"]
    starts = [_seconds(s["restore_started_at"]) for s in sessions if s["restore_started_at"]]
    batch = (max(_seconds(s["result_at"]) for s in done) - min(starts)) * speed if done else 0.0
    busy = [float(share) / 100 for share in re.findall(r"busy ([\d.]+)% of the time", run.stderr)]
    return Outcome(done=len(done), failed=sum(s["result"] == "failed" for s in sessions),
                   batch_per_hour=3600 * len(done) / batch if batch else 0.0,
                   busy=sum(busy) / len(busy) if busy else 0.0,
                   link_failures=len(re.findall(r"USB link \S+: .* fails at", run.stderr)),
                   retries=sum(max(0, s["attempts"] - 1) for s in sessions))


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.splitlines()[0])
    parser.add_argument("--phones", type=int, default=14)
    parser.add_argument("--speed", type=float, default=100.0, help="time compression (default 100)")
    args = parser.parse_args(argv)
    schedules = (("bus-aware", "bus", 32), ("all at once", "fixed", 32), ("fixed 2", "fixed", 2))
    print(f"{args.phones} phones, {PAYLOAD / 1e9:g} GB each, links of {LINK_RATE / 1e6:g} MB/s, "
          f"played at {args.speed:g}x (figures in scenario time)")
    print(f"{'links':>5} {'schedule':<12} {'done':>4} {'failed':>6} {'per hour':>9} {'/bound':>7} "
          f"{'link busy':>9} {'link fails':>10} {'retries':>7}")
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp:
        for links in (1, 2):
            bound = links * LINK_RATE * 3600 / PAYLOAD
            for label, schedule, parallel in schedules:
                result = play(Path(tmp) / f"{links}-{schedule}-{parallel}",
                              scenario(args.phones, links, schedule, parallel), args.speed)
                print(f"{links:>5} {label:<12} {result.done:>4} {result.failed:>6} "
                      f"{result.batch_per_hour:>9.2f} {result.batch_per_hour / bound:>7.3f} "
                      f"{result.busy:>9.2f} "
                      f"{result.link_failures:>10} {result.retries:>7}", flush=True)
            print(f"{'':>5} bus bound: {bound:.2f} phones/hour; 'link busy' is phones an hour over it while "
                  "the links had transfers (a line's steady state)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
