"""Restores in worker processes, one per phone, forked from a server that preloaded the restore stack.

Station side (never imports pymobiledevice3's restore stack):
``start_fork_server(ServerConfig(...))`` at start-up, ``await run_restore(request, report)``
per phone, ``stop_fork_server()`` at shutdown. Modules: ``request`` (what a worker is asked),
``messages`` (its report lines), ``launcher`` (the station's handle on the server),
``supervisor`` (run_restore). Worker side: ``server`` (the fork server process), ``child``
(a worker's set-up), ``sim`` and ``real`` (the engines), ``reporter``, ``classify``,
``phases`` (shared by both sides).
"""
from hw.worker.launcher import ForkServer, ServerConfig, default_server, start_fork_server, stop_fork_server
from hw.worker.messages import Kind
from hw.worker.request import InjectedFailure, RestoreRequest, SimParams
from hw.worker.supervisor import WorkerError, run_restore

__all__ = [
    "ForkServer", "InjectedFailure", "Kind", "RestoreRequest", "ServerConfig", "SimParams", "WorkerError",
    "default_server", "run_restore", "start_fork_server", "stop_fork_server",
]
