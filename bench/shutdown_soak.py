"""SIGTERM at random moments, many times: the station must always exit, and promptly.

`python -m bench.shutdown_soak [RUNS]` plays simulated scenarios (the demo on the real engine,
and a timed-engine one) and sends SIGTERM at a random moment of each run, from start-up to the
middle of a restore, and a second one a second later if it is still running (the first lets
restores finish). A run that has not exited 20 s after the second is a hang: its Python stacks
are printed (py-spy, when installed) and it is killed. Prints how many runs hung and the exit
time after the last SIGTERM (median, slowest), measured in this one run.
"""
from __future__ import annotations

import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ("config/sim/demo.toml", "config/sim/find-my-unproven.toml")
HANG_S = 20.0


def one_run(work: Path, scenario: str, delay: float) -> tuple[float | None, int | None]:
    """(seconds from SIGTERM to exit or None for a hang, exit code)."""
    config = work / "station.toml"
    config.write_text(f'[station]\nstate_dir = "{work / "state"}"\n[ipsw]\ncache_dir = "{work / "ipsw"}"\n')
    child = subprocess.Popen([sys.executable, "-m", "station.cli", "run", "--config", str(config), "--sim",
                              str(ROOT / scenario), "--speed", "30"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work)
    time.sleep(delay)
    if child.poll() is not None:
        return 0.0, child.returncode  # over before the signal: not a shutdown test, but not a hang
    child.send_signal(signal.SIGTERM)  # the first lets running restores finish (station.shutdown)...
    first = time.perf_counter()
    try:
        code = child.wait(1.0)
        return time.perf_counter() - first, code
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGTERM)  # ...the second stops now: that is what must never hang
    sent = time.perf_counter()
    try:
        code = child.wait(HANG_S)
    except subprocess.TimeoutExpired:
        _dump(child.pid)
        child.kill()
        child.wait()
        return None, None
    return time.perf_counter() - sent, code


def _dump(pid: int) -> None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if Path(spy).exists():
        print(subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True).stdout)


def main(argv: list[str]) -> int:
    runs = int(argv[0]) if argv else 200
    rng = random.Random(1)
    exits: list[float] = []
    hangs = 0
    with tempfile.TemporaryDirectory(prefix="soak-", dir="/tmp") as temp:
        work = Path(temp)
        for n in range(runs):
            scenario = SCENARIOS[n % len(SCENARIOS)]
            took, code = one_run(work, scenario, rng.uniform(0.2, 12.0))
            if took is None:
                hangs += 1
                print(f"run {n}: {scenario}: HUNG after SIGTERM", flush=True)
            else:
                exits.append(took)
    print(f"{runs} runs, SIGTERM at random moments: {hangs} hung; exit after SIGTERM: median "
          f"{statistics.median(exits):.2f} s, slowest {max(exits):.2f} s")
    return 1 if hangs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
