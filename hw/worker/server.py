"""The fork server: one process that imports the restore stack once and forks a worker per restore.

Why our own and not multiprocessing's "forkserver" start method: pymobiledevice3 fixes its
pair-record folder from HOME / XDG_DATA_HOME when it is imported (``common._HOMEFOLDER``), so
the process that imports it must start with the station's environment, which
multiprocessing only gives by changing the station's own os.environ around the launch.
Running it ourselves also gives the server (and every worker it forks) its own stdout/stderr,
cwd and session from the first instruction, lets it delete each worker's directory after
reaping it, and lets signals go through the process that reaps, so a kill never hits a
recycled pid. The protocol stays tiny:

- The station holds one SOCK_SEQPACKET control socket (fd given on the command line). Each
  message is a RestoreRequest as JSON with two fds attached: the station's end of a fresh
  per-worker socket pair and the write end of the worker's report pipe.
- Over the per-worker socket the server answers ``{"pid": n}``, accepts ``{"signal": n}``
  and, once it reaped the worker, sends ``{"exit": code}`` (negative: killed by a signal)
  and closes it. If the station hangs up first, the worker is killed.
- EOF on the control socket (the station exited or called stop) kills every worker and
  ends the server. Workers die with the server (PR_SET_PDEATHSIG).
- Each worker's directory is named after its server (``restore-<server pid>-...``): one left
  by a server that died without removing them (killed with the station, a power cut) is
  removed by the next server to start there, once no process has that pid (a server still
  running there keeps its own).

Run as ``python -m hw.worker.server CONTROL_FD WORK_ROOT MODULE...`` (launcher.py does).
"""
from __future__ import annotations

import ctypes
import functools
import gc
import importlib
import json
import logging
import os
import selectors
import shutil
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hw import logsetup

log = logging.getLogger("hw.worker.server")

MAX_REQUEST = 1 << 16
EXIT_CRASHED = 70  # the child's own code raised: a bug, already logged to its log file
_PR_SET_PDEATHSIG = 1
WORKDIR_PREFIX = "restore-"


@dataclass
class _Worker:
    conn: socket.socket | None  # None once the station hung up
    workdir: str


class Server:
    def __init__(self, control: socket.socket, work_root: str) -> None:
        self._control = control
        self._work_root = work_root
        self._workers: dict[int, _Worker] = {}
        self._selector = selectors.DefaultSelector()
        # SIGCHLD wakes the selector through a self-pipe: reaping happens in the loop, not in a handler.
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(self._wake_w)
        self._selector.register(self._control, selectors.EVENT_READ, self._on_request)
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._on_sigchld)
        _remove_orphaned_workdirs(work_root)

    def serve(self) -> None:
        log.info("fork server %d ready", os.getpid())
        while self._control.fileno() >= 0:
            for key, _ in self._selector.select():
                key.data()
        self._shutdown()

    # Events ---------------------------------------------------------------

    def _on_request(self) -> None:
        try:
            request, fds, _, _ = socket.recv_fds(self._control, MAX_REQUEST, 2)
        except OSError as error:
            log.error("control socket: %s", error)
            request, fds = b"", []
        if not request:  # the station is gone or stopped us
            for fd in fds:
                os.close(fd)
            self._selector.unregister(self._control)
            self._control.close()
            return
        if len(fds) != 2:
            log.error("request without its two fds: dropped")
            for fd in fds:
                os.close(fd)
            return
        self._fork(request, socket.socket(fileno=fds[0]), fds[1])

    def _on_worker(self, pid: int) -> None:
        worker = self._workers.get(pid)
        if worker is None or worker.conn is None:  # reaped earlier in this same wake-up
            return
        try:
            data = worker.conn.recv(256)
        except OSError:
            data = b""
        if not data:  # the station hung up without waiting for the exit: the worker goes too
            self._drop_conn(worker)
            _kill(pid, signal.SIGKILL)
            return
        try:
            _kill(pid, int(json.loads(data)["signal"]))
        except (ValueError, KeyError, TypeError):
            log.error("worker %d: bad command %r", pid, data[:80])

    def _on_sigchld(self) -> None:
        while True:
            try:
                os.read(self._wake_r, 512)
            except BlockingIOError:
                break
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._reaped(pid, os.waitstatus_to_exitcode(status))

    # Workers --------------------------------------------------------------

    def _fork(self, request: bytes, conn: socket.socket, report_fd: int) -> None:
        workdir = tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-", dir=self._work_root)
        pid = os.fork()
        if pid == 0:
            os._exit(self._child(request, conn, report_fd, workdir))
        os.close(report_fd)  # the worker holds the only write end: its death is EOF for the station
        self._workers[pid] = _Worker(conn, workdir)
        log.info("worker %d forked", pid)
        # Registered before the reply, so that a station already gone is dropped like any other.
        self._selector.register(conn, selectors.EVENT_READ, functools.partial(self._on_worker, pid))
        try:
            conn.send(json.dumps({"pid": pid}).encode())
        except OSError:  # the station gave up already
            self._drop_conn(self._workers[pid])
            _kill(pid, signal.SIGKILL)

    def _child(self, request: bytes, conn: socket.socket, report_fd: int, workdir: str) -> int:
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            _die_with_parent()
            # Close the server's descriptors (the objects own them: close, never just os.close).
            self._selector.close()
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._control.close()
            conn.close()
            for other in self._workers.values():
                if other.conn is not None:
                    other.conn.close()
            from hw.worker import child
            return child.run(request, report_fd, workdir)
        except BaseException:
            log.exception("worker %d crashed", os.getpid())
            return EXIT_CRASHED

    def _reaped(self, pid: int, code: int) -> None:
        worker = self._workers.pop(pid, None)
        if worker is None:
            return
        log.info("worker %d exited with %d", pid, code)
        if worker.conn is not None:
            try:
                # Read what the station sent meanwhile (a signal for the dead worker): closing a
                # socket with unread data resets it, and the station would lose the exit code.
                while worker.conn.recv(256, socket.MSG_DONTWAIT):
                    pass
            except OSError:
                pass
            try:
                worker.conn.send(json.dumps({"exit": code}).encode())
            except OSError:
                pass
            self._drop_conn(worker)
        shutil.rmtree(worker.workdir, ignore_errors=True)

    def _drop_conn(self, worker: _Worker) -> None:
        if worker.conn is not None:
            self._selector.unregister(worker.conn)
            worker.conn.close()
            worker.conn = None

    def _shutdown(self) -> None:
        for pid in list(self._workers):
            _kill(pid, signal.SIGKILL)
        for pid in list(self._workers):
            try:
                _, status = os.waitpid(pid, 0)
            except ChildProcessError:
                status = 0
            self._reaped(pid, os.waitstatus_to_exitcode(status))
        log.info("fork server %d stopped", os.getpid())


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _remove_orphaned_workdirs(work_root: str) -> None:
    """Worker directories of fork servers that are gone (their workers died with them)."""
    for path in Path(work_root).glob(f"{WORKDIR_PREFIX}*-*"):
        server = path.name[len(WORKDIR_PREFIX):].split("-", 1)[0]
        # Our own pid: a server before a reboot had it (we have forked nothing yet).
        if server.isdigit() and (int(server) == os.getpid() or not _running(int(server))):
            shutil.rmtree(path, ignore_errors=True)
            log.info("removed %s, left by fork server %s", path, server)


def _running(pid: int) -> bool:
    """A process has this pid; a zombie (dead, not yet reaped by whoever inherited it) is not one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell: keep its directories
    return stat[stat.rindex(")") + 2] != "Z"


def _die_with_parent() -> None:
    """The kernel SIGKILLs this worker when the fork server dies, however it dies."""
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the server died before prctl took effect
        os._exit(EXIT_CRASHED)


def main(argv: list[str]) -> None:
    control_fd, work_root, *preload = argv
    logsetup.configure(logging.INFO, sys.stderr)  # the station's stderr: journald on a Pi
    for module in preload:
        importlib.import_module(module)
    # Move everything imported so far out of the collector's reach: a collection in a worker
    # would otherwise write to every object's header and copy the pages it shares with us.
    gc.collect()
    gc.freeze()
    Server(socket.socket(fileno=int(control_fd)), work_root).serve()


if __name__ == "__main__":
    main(sys.argv[1:])
