"""Child process of test_crash: records a burst of sessions until it is killed.

Slot 1 holds a phone mid-restore for the whole run; slots 2-16 restore phone
after phone. Prints ``ready`` once slot 1's session is committed.
"""
from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

from station.config import StationSection
from station.machine import Confirm, Lock, LockResult, Progress, RestoreStarted
from station.records.recorder import Recorder

from . import helpers
from .helpers import Phone


def main(state_dir: str) -> None:
    recorder = Recorder(StationSection(id="crash", state_dir=Path(state_dir)))
    recorder.start()
    stuck = Phone(recorder, 1)
    helpers.arrive(stuck, 0)
    stuck.send(LockResult(Lock.CLEAR, method="activation-server"), Confirm(), RestoreStarted(),
               Progress("restore image", 1.0))
    recorder.flush()
    print("ready", flush=True)
    histories = itertools.cycle([helpers.clean_restore, helpers.locked, helpers.failed_then_retried])
    phones = [Phone(recorder, slot) for slot in range(2, 17)]
    for n in itertools.count(1):  # until the parent kills us
        next(histories)(phones[n % len(phones)], n)
        # Idle a moment as the station's loop does: a producer that never lets go of the GIL
        # would make the writer wait a switch interval (5 ms) for every statement.
        time.sleep(0.0005)


if __name__ == "__main__":
    main(sys.argv[1])
