"""pymobiledevice3's progress bars, replaced by percent lines on the report pipe.

pymobiledevice3 draws rich bars on stderr (``progress.ProgressBar``), bound by name in the
modules that upload: irecv (USB uploads, desc = component), restore.asr (desc "filesystem")
and restore.restore (boot objects, "verify restore"). ``install`` rebinds those names in
this worker process to ``ReportingBar``, so no bar is drawn and none redirects stdio.
"""
from __future__ import annotations

from types import TracebackType

from hw.worker import phases
from hw.worker.reporter import Reporter

# Bars worth a percent on the display; the others (logo, device tree, ...) are short.
BAR_PHASES = {
    "iBSS": phases.SEND_IBSS,
    "iBEC": phases.SEND_IBEC,
    "RestoreRamDisk": phases.BOOT_RAMDISK,
    "filesystem": phases.RESTORE_IMAGE,
    "verify restore": phases.VERIFY_RESTORE,
}


class ReportingBar:
    """The shape of ``pymobiledevice3.progress.ProgressBar`` (tqdm-like), reporting instead of drawing."""

    reporter: Reporter | None = None  # one restore per worker process: set once by ``install``

    def __init__(self, total: float | None = None, desc: str = "", unit: str = "it", disable: bool = False) -> None:
        self._total = total or None
        self._n = 0.0
        self._phase = None if disable else BAR_PHASES.get(desc)

    @property
    def n(self) -> float:
        return self._n

    @n.setter
    def n(self, value: float) -> None:
        self._n = value
        self._push()

    def update(self, n: float = 1) -> None:
        self._n += n
        self._push()

    def close(self) -> None:
        self._push()

    def __enter__(self) -> ReportingBar:
        self._push()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def _push(self) -> None:
        if self._phase is not None and self._total and self.reporter is not None:
            self.reporter.phase(self._phase, 100.0 * self._n / self._total)


def install(reporter: Reporter) -> None:
    from pymobiledevice3 import irecv, utils
    from pymobiledevice3.restore import asr, restore

    ReportingBar.reporter = reporter
    for module in (irecv, utils, asr, restore):
        module.ProgressBar = ReportingBar  # type: ignore[attr-defined,misc]
