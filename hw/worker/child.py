"""A worker's life after the fork: own stdio, own directory, one restore, one verdict line, exit.

Runs in a process forked from the fork server, so the restore stack is already imported
and the environment (HOME, XDG_DATA_HOME) was fixed before that import.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from hw.worker.classify import classify
from hw.worker.messages import Kind, WorkerFailure
from hw.worker.reporter import Reporter
from hw.worker.request import RestoreRequest

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1  # the restore failed and said so on the pipe
EXIT_TERMINATED = 128 + signal.SIGTERM


def run(request_json: bytes, report_fd: int, workdir: str) -> int:
    """The worker's main; returns its exit code (the server reports it to the station)."""
    reporter = Reporter(report_fd)
    try:
        request = RestoreRequest.from_json(request_json)
        _isolate(request, workdir)
    except Exception as error:  # a bad request or an unwritable log dir: say so, there is no log yet
        reporter.failed(f"worker setup failed: {error}", Kind.INTERNAL, False)
        return EXIT_FAILED
    log.info("worker %d: %s restore of %s (ECID %s) in %s", os.getpid(), "simulated" if request.sim else "real",
             request.label, request.ecid, workdir)
    try:
        asyncio.run(_restore(request, reporter))
    except asyncio.CancelledError:
        log.info("terminated by the station")
        return EXIT_TERMINATED
    except WorkerFailure as failure:
        log.error("restore failed: %s", failure.failed)
        reporter.send(failure.failed)
        return EXIT_FAILED
    except Exception as error:
        failed = classify(error)
        log.error("restore failed: %s", failed, exc_info=True)
        reporter.send(failed)
        return EXIT_FAILED
    log.info("restore done")
    reporter.done()
    return EXIT_OK


def _isolate(request: RestoreRequest, workdir: str) -> None:
    """Nothing of this restore reaches the station's terminal or working directory."""
    log_dir = Path(request.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{request.label}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    null_fd = os.open(os.devnull, os.O_RDONLY)
    # fd level, so rich's progress display, print() and C libraries (libusb) all land in the log.
    os.dup2(null_fd, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    os.close(null_fd)
    logging.basicConfig(level=request.log_level, stream=sys.stderr, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # pymobiledevice3 writes updater_output-<udid>.cpio into the cwd and crash logs into temp
    # dirs: both go into this worker's own directory, which the fork server removes after it.
    os.chdir(workdir)
    tempfile.tempdir = workdir
    if request.usbmux_address:
        os.environ["USBMUXD_SOCKET_ADDRESS"] = request.usbmux_address


async def _restore(request: RestoreRequest, reporter: Reporter) -> None:
    # SIGTERM (the station's cancel) cancels the restore so its finally blocks run; SIGKILL follows.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    if request.sim is not None:
        from hw.worker import sim
        await sim.run(request, reporter)
    else:
        from hw.worker import real
        await real.run(request, reporter)
