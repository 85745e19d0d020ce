"""Sim restores end to end: station -> fork server -> worker -> sim engine -> JSON lines -> reports."""
from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from hw.phones import Mode, RestoreProgress, TrustRequest
from hw.worker import phases
from hw.worker.launcher import WorkerHandle
from hw.worker.messages import Kind
from hw.worker.request import InjectedFailure, RestoreRequest, SimParams
from hw.worker.supervisor import WorkerError, _follow, run_restore

FAST = SimParams(speed=2000.0, usb_rate=35e6, image_bytes=64 << 20)
SLOW = SimParams(speed=1.0)  # a whole restore takes minutes: the test stops it


def request(tmp_path: Path, sim: SimParams = FAST, **options) -> RestoreRequest:
    return RestoreRequest(label=options.pop("label", "slot1"), log_dir=str(tmp_path / "logs"), sim=sim, **options)


async def first_report(reports: list, task: asyncio.Task) -> None:
    while not reports and not task.done():
        await asyncio.sleep(0.01)


def phases_seen(reports: list) -> list[str]:
    seen: list[str] = []
    for report in reports:
        if not seen or seen[-1] != report.phase:
            seen.append(report.phase)
    return seen


@pytest.mark.parametrize("mode", [Mode.NORMAL, Mode.DFU])
def test_sim_restore_goes_through_every_phase_in_order(fork_server, small_ipsw, tmp_path, monkeypatch, mode):
    station_cwd = tmp_path / "station"
    station_cwd.mkdir()
    monkeypatch.chdir(station_cwd)
    reports: list = []
    # 8 MiB at 8 MB/s (20 kB/s x 400): about a second of byte progress; the other phases ~0.5 s.
    sim = SimParams(speed=400.0, usb_rate=20e3)
    asyncio.run(run_restore(request(tmp_path, sim, mode=mode, ipsw=str(small_ipsw)), reports.append,
                            server=fork_server))

    assert all(isinstance(report, RestoreProgress) for report in reports)
    assert phases_seen(reports) == list(phases.sequence(mode))
    for phase in phases.sequence(mode):
        percents = [r.percent for r in reports if r.phase == phase]
        assert percents == sorted(percents) and percents[-1] == 100.0, phase
    image = [r.percent for r in reports if r.phase == phases.RESTORE_IMAGE]
    assert len(image) > 2, "the image phase reports byte progress"
    assert list(station_cwd.iterdir()) == [], "nothing may be written into the station's cwd"
    logs = list((tmp_path / "logs").iterdir())
    assert len(logs) == 1 and "restore done" in logs[0].read_text()


@pytest.mark.parametrize(("failure", "kind", "retryable"), [
    (InjectedFailure(phases.RESTORE_IMAGE, 50.0, Kind.NETWORK), Kind.NETWORK, True),
    (InjectedFailure(phases.FLASH_FIRMWARE, 20.0, Kind.DEVICE_REJECTED), Kind.DEVICE_REJECTED, False),
    (InjectedFailure(phases.SEND_IBEC, 0.0, Kind.USB), Kind.USB, True),
    (InjectedFailure(phases.VERIFY_RESTORE, 10.0, Kind.DEVICE_REJECTED, retryable=True, reason="status 53"),
     Kind.DEVICE_REJECTED, True),
])
def test_injected_failure_raises_restore_error_with_its_retryability(fork_server, worker_pids, tmp_path, failure, kind,
                                                                     retryable):
    reports: list = []
    sim = SimParams(speed=FAST.speed, image_bytes=FAST.image_bytes, fail=failure)
    with pytest.raises(WorkerError) as caught:
        asyncio.run(run_restore(request(tmp_path, sim), reports.append, server=fork_server))
    assert (caught.value.kind, caught.value.retryable) == (kind, retryable)
    assert reports[-1].phase == failure.phase
    if failure.reason:
        assert caught.value.reason == failure.reason
    assert worker_pids() == []


def test_worker_killed_with_sigkill_is_noticed_within_two_seconds(fork_server, worker_pids, tmp_path):
    async def scenario() -> float:
        reports: list = []
        task = asyncio.create_task(run_restore(request(tmp_path, SLOW), reports.append, server=fork_server))
        await first_report(reports, task)
        [pid] = worker_pids()
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(WorkerError) as caught:
            await task
        assert "SIGKILL" in caught.value.reason and caught.value.retryable
        return time.monotonic() - killed

    assert asyncio.run(scenario()) < 2.0
    assert worker_pids() == []


def test_cancel_kills_and_reaps_the_worker_and_leaks_no_fd(fork_server, worker_pids, open_fds, tmp_path):
    async def scenario() -> None:
        reports: list = []
        task = asyncio.create_task(run_restore(request(tmp_path, SLOW), reports.append, server=fork_server))
        await first_report(reports, task)
        assert len(worker_pids()) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    before = open_fds()
    started = time.monotonic()
    asyncio.run(scenario())
    assert time.monotonic() - started < 5.0
    assert worker_pids() == [], "no worker, not even a zombie, outlives the cancel"
    assert open_fds() <= before


def test_timeout_kills_the_worker(fork_server, worker_pids, tmp_path):
    started = time.monotonic()
    with pytest.raises(WorkerError) as caught:
        asyncio.run(run_restore(request(tmp_path, SLOW, timeout=0.5), lambda report: None, server=fork_server))
    assert caught.value.kind is Kind.TIMEOUT and caught.value.retryable
    assert time.monotonic() - started < 5.0
    assert worker_pids() == []


def test_four_concurrent_sim_restores(fork_server, worker_pids, tmp_path):
    reports: dict[str, list] = {f"slot{n}": [] for n in range(4)}

    async def scenario() -> None:
        await asyncio.gather(*(run_restore(request(tmp_path, label=label), reports[label].append,
                                           server=fork_server) for label in reports))

    asyncio.run(scenario())
    for label, seen in reports.items():
        assert phases_seen(seen) == list(phases.sequence(Mode.RECOVERY)), label
    assert len(list((tmp_path / "logs").iterdir())) == 4


def test_trust_lines_become_trust_requests_and_a_malformed_line_fails(tmp_path):
    read, write = os.pipe()
    os.write(write, b'{"type":"trust","reason":"unlock phone, tap Trust"}\n{"type":"phase"\n')

    class Exited(WorkerHandle):
        async def wait(self) -> int:
            return 0

    reports: list = []
    with pytest.raises(WorkerError) as caught:
        asyncio.run(_follow(Exited(None, read), "slot1", reports.append))  # type: ignore[arg-type]
    assert reports == [TrustRequest("unlock phone, tap Trust")]
    assert "protocol error" in caught.value.reason and not caught.value.retryable
    os.close(read)
    os.close(write)
