"""Log lines to stderr: with a time stamp in a terminal, with a syslog priority for journald.

Under systemd, stderr is a stream to journald, which stamps the time itself and reads a
leading ``<N>`` as the line's priority (sd-daemon(3): SD_ERR is "<3>"; systemd.exec(5),
SyslogLevelPrefix=, on by default), so ``journalctl -u station -p err`` shows the errors
only. systemd says stderr is such a stream by setting $JOURNAL_STREAM to its device and
inode numbers (systemd.exec(5), "JOURNAL_STREAM"); a stream redirected elsewhere (a file, a
pipe) does not match and keeps the plain format.
"""
from __future__ import annotations

import logging
import os
from typing import TextIO

PLAIN = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
JOURNAL = "<%(priority)d>%(name)s: %(message)s"
# Python's levels as syslog priorities (syslog(3): 2 crit, 3 err, 4 warning, 6 info, 7 debug).
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


def configure(level: str | int, stream: TextIO) -> None:
    handler = logging.StreamHandler(stream)
    if to_journal(stream):
        handler.setFormatter(logging.Formatter(JOURNAL))
        handler.addFilter(_with_priority)
    else:
        handler.setFormatter(logging.Formatter(PLAIN))
    # As basicConfig always does: nothing when the root logger has handlers already (a
    # test's log capture, an embedding program's own).
    logging.basicConfig(level=level.upper() if isinstance(level, str) else level, handlers=[handler])


def to_journal(stream: TextIO) -> bool:
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        status = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):  # not a file (a test's StringIO)
        return False
    return expected == f"{status.st_dev}:{status.st_ino}"


def _with_priority(record: logging.LogRecord) -> bool:
    record.priority = next((p for level, p in _PRIORITIES if record.levelno >= level), 7)
    return True
