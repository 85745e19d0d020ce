"""The point of the fork server: a forked worker adds a few MB, a fresh interpreter ~60."""
from __future__ import annotations

import asyncio
import subprocess
import sys

from hw.worker import phases
from hw.worker.launcher import DEFAULT_PRELOAD
from hw.worker.request import RestoreRequest, SimParams


def memory_kb(pid: int) -> dict[str, int]:
    """USS (private pages: what this process adds) and PSS, from /proc/<pid>/smaps_rollup."""
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            name, _, rest = line.partition(":")
            if rest.strip().endswith("kB"):
                fields[name] = int(rest.split()[0])
    return {"uss": fields["Private_Clean"] + fields["Private_Dirty"], "pss": fields["Pss"]}


def spawned_interpreter_kb() -> dict[str, int]:
    code = f"import importlib, sys\nfor m in {list(DEFAULT_PRELOAD)!r}: importlib.import_module(m)\n" \
           "print('ready', flush=True)\nsys.stdin.read()"
    process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None and process.stdout.readline() == b"ready\n"
        return memory_kb(process.pid)
    finally:
        process.kill()
        process.wait()


def forked_worker_kb(fork_server, worker_pids, tmp_path) -> dict[str, int]:
    """A worker in the middle of its image phase (the engine, asyncio and the reader all in use)."""
    from hw.worker.supervisor import run_restore

    async def scenario() -> dict[str, int]:
        reports: list = []
        request = RestoreRequest("mem", str(tmp_path / "logs"), sim=SimParams(speed=50.0, usb_rate=1e6))
        task = asyncio.create_task(run_restore(request, reports.append, server=fork_server))
        while not any(r.phase == phases.RESTORE_IMAGE and r.percent > 0 for r in reports):
            assert not task.done()
            await asyncio.sleep(0.02)
        [pid] = worker_pids()
        measured = memory_kb(pid)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return measured

    return asyncio.run(scenario())


def test_forked_worker_adds_a_fraction_of_a_spawned_interpreter(fork_server, worker_pids, tmp_path):
    spawned = spawned_interpreter_kb()
    forked = forked_worker_kb(fork_server, worker_pids, tmp_path)
    print(f"\nmemory per worker: forked USS {forked['uss'] / 1024:.1f} MB (PSS {forked['pss'] / 1024:.1f} MB), "
          f"spawned interpreter USS {spawned['uss'] / 1024:.1f} MB (PSS {spawned['pss'] / 1024:.1f} MB), "
          f"ratio {spawned['uss'] / forked['uss']:.1f}x")
    assert forked["uss"] < spawned["uss"] / 4
