"""Restores run in worker processes forked from a preloaded server (hw.worker).

Both backends restore through here: the real one with pymobiledevice3's
``Restore``, the simulated one with the sim engine; only the request differs.
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from hw.phones import Device, RestoreProgress, RestoreReport, TrustRequest
from hw.worker import (ForkServer, RestoreRequest, ServerConfig, SimParams, run_restore,
                       start_fork_server, stop_fork_server)
from hw.worker.phases import overall_percent


@dataclass(frozen=True)
class WorkerSetup:
    home: Path  # pymobiledevice3's home: its pair records live in <home>/pymobiledevice3
    log_dir: Path  # one log file per restore
    timeout_s: float
    environment: dict[str, str]
    signing_url: str = "http://gs.apple.com/TSS/controller?action=2"  # [restore] signing_url


@contextmanager
def fork_server(setup: WorkerSetup) -> Iterator[ForkServer]:
    setup.log_dir.mkdir(parents=True, exist_ok=True)
    server = start_fork_server(ServerConfig(
        home=setup.home, log_path=setup.log_dir / "fork-server.log",
        work_root=setup.log_dir.parent / "work", env=setup.environment))
    try:
        yield server
    finally:
        stop_fork_server()


def pairing_dir(home: Path) -> Path:
    """Where the station's own lockdown clients keep pair records: the workers' folder."""
    return home / "pymobiledevice3"


async def restore_in_worker(device: Device, ipsw: Path | None, report: Callable[[RestoreReport], None],
                            *, label: str, setup: WorkerSetup, sim: SimParams | None = None) -> None:
    """One restore in its own worker; raises RestoreError (WorkerError) when it fails."""
    request = RestoreRequest.for_device(
        device, label=label, log_dir=str(setup.log_dir), ipsw=str(ipsw) if ipsw else None,
        timeout=setup.timeout_s, usbmux_address=setup.environment.get("USBMUXD_SOCKET_ADDRESS"),
        signing_url=setup.signing_url,
        sim=sim)

    def forward(message: RestoreReport) -> None:
        if isinstance(message, TrustRequest):
            report(message)
        else:
            report(RestoreProgress(message.phase,
                                   overall_percent(device.mode, message.phase, message.percent)))

    await run_restore(request, forward)
