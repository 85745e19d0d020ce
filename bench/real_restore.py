"""The real restore path, measured: pymobiledevice3's Restore in its workers against simulated phones.

`python -m bench.real_restore` runs ``station run --sim`` with the real engine and prints, from
one run each, side by side:

1. one restore, then four at once: each worker's peak RSS (VmHWM) and the memory it adds to
   what it shares with the fork server it came from (its private pages, smaps_rollup), sampled
   every 50 ms; the fork server's own RSS for scale;
2. the OS image through ASR (the simulated phone's receiving time, unpaced) against `dd` of the
   same member of the same IPSW: the ratio;
3. the wall time of the demo's four restores (`make run`'s scenario and speed).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("iPhone14,7", "iPhone13,2", "iPhone14,5", "iPhone15,4")
SAMPLE_S = 0.05


def scenario(phones: int, os_image_mb: int) -> str:
    lines = ['[scenario]', 'description = "bench"', 'duration = 86400', 'engine = "real"',
             f'os_image_mb = {os_image_mb}', '[config.restore]', 'mode = "line"',
             f'max_parallel_restores = {phones}', 'memory_per_restore_mb = 100']
    for slot in range(1, phones + 1):
        lines += ['[[phone]]', f'name = "p{slot}"', f'slot = {slot}', f'model = "{MODELS[slot - 1]}"',
                  'expect = "done"']
    return "\n".join(lines) + "\n"


class Sampler:
    """Peak RSS and private memory of the station's grandchildren (the restore workers)."""

    def __init__(self, root_pid: int) -> None:
        self.root = root_pid
        self.peaks: dict[int, tuple[int, int]] = {}  # pid -> (VmHWM kB, private kB)
        self.server_rss = 0
        self.concurrent_private = 0  # the most private memory all workers held at one moment
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            parents = _parents()
            servers = [pid for pid, parent in parents.items() if parent == self.root]
            total = 0
            for server in servers:
                self.server_rss = max(self.server_rss, _status(server, "VmRSS"))
                for pid in (p for p, parent in parents.items() if parent == server):
                    hwm, private = _status(pid, "VmHWM"), _private(pid)
                    old = self.peaks.get(pid, (0, 0))
                    self.peaks[pid] = (max(old[0], hwm), max(old[1], private))
                    total += private
            self.concurrent_private = max(self.concurrent_private, total)
            time.sleep(SAMPLE_S)


def _parents() -> dict[int, int]:
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            found[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return found


def _status(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _private(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    return sum(int(line.split()[1]) for line in text.splitlines()
               if line.startswith(("Private_Clean:", "Private_Dirty:")))


def play(work: Path, name: str, text: str, speed: int = 1000) -> tuple[subprocess.CompletedProcess[str], Sampler, float]:
    """One `station run --sim`; each run has its own IPSW cache (its own OS image size)."""
    config = work / f"{name}.toml"
    config.write_text(f'[station]\nstate_dir = "{work / name}"\n[ipsw]\ncache_dir = "{work / name / "ipsw"}"\n')
    path = work / f"{name}-scenario.toml"
    path.write_text(text)
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "station.cli", "run", "--config", str(config), "--sim",
                              str(path), "--speed", str(speed)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=work)
    sampler = Sampler(child.pid)
    out, err = child.communicate(timeout=900)
    sampler.stop()
    return subprocess.CompletedProcess(child.args, child.returncode, out, err), sampler, time.perf_counter() - started


def memory(work: Path) -> None:
    for phones in (1, 4):
        result, sampler, wall = play(work, f"mem{phones}", scenario(phones, 64))
        if result.returncode != 0:
            print(f"{phones} restore(s) did not all end DONE:\n{result.stdout}{result.stderr[-2000:]}")
            continue
        workers = sorted(sampler.peaks.values())
        print(f"{phones} restore(s) at once, {wall:.1f} s: fork server RSS {sampler.server_rss / 1024:.0f} MiB; "
              f"workers (attempts) {len(workers)}")
        for hwm, private in workers:
            print(f"  worker: peak RSS {hwm / 1024:.0f} MiB, added (private) {private / 1024:.1f} MiB")
        print(f"  all workers together at their most: {sampler.concurrent_private / 1024:.1f} MiB private "
              f"({sampler.concurrent_private / 1024 / max(1, phones):.1f} MiB per restore; goal <= 30)")


def asr_against_dd(work: Path, size_mb: int = 512) -> None:
    result, _, _ = play(work, "asr", scenario(1, size_mb))
    match = re.search(r"ASR: received (\d+) bytes, sha256 \w+, in ([\d.]+) s", result.stderr)
    if result.returncode != 0 or match is None:
        print(f"ASR run failed:\n{result.stdout}{result.stderr[-2000:]}")
        return
    ipsw = next((work / "asr" / "ipsw").glob(f"{MODELS[0]}_*.ipsw"))
    with zipfile.ZipFile(ipsw) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)  # the OS image, stored
    with ipsw.open("rb") as stream:  # where the member's data starts: after its local header
        stream.seek(info.header_offset + 26)
        name_length, extra_length = int.from_bytes(stream.read(2), "little"), int.from_bytes(stream.read(2), "little")
    offset = info.header_offset + 30 + name_length + extra_length
    started = time.perf_counter()
    subprocess.run(["dd", f"if={ipsw}", "of=/dev/null", "bs=1M", "iflag=skip_bytes,count_bytes",
                    f"skip={offset}", f"count={info.file_size}"], check=True, capture_output=True)
    dd_s = time.perf_counter() - started
    asr_bytes, asr_s = int(match.group(1)), float(match.group(2))
    print(f"OS image {asr_bytes / 2**20:.0f} MiB: through ASR (pymobiledevice3 -> simulated phone) "
          f"{asr_s:.2f} s = {asr_bytes / asr_s / 1e6:.0f} MB/s; dd of the member {dd_s:.2f} s = "
          f"{info.file_size / dd_s / 1e6:.0f} MB/s; ASR / dd = {asr_s / dd_s:.1f}x the time")


def demo(work: Path) -> None:
    text = (ROOT / "config" / "sim" / "demo.toml").read_text()
    result, _, wall = play(work, "demo", text, speed=30)
    print(f"demo (make run's scenario at 30x, real engine): {wall:.1f} s wall, exit {result.returncode}:")
    for line in result.stdout.splitlines():
        print(f"  {line}")


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="bench-real-", dir="/tmp") as temp:
        work = Path(temp)
        memory(work)
        asr_against_dd(work)
        demo(work)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
