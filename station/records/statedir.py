"""The state directory and the one error raised when records cannot be kept there."""
from __future__ import annotations

import os
from pathlib import Path


class RecordsUnavailable(Exception):
    """Records cannot be kept; the message is the one line the station shows."""


def prepare(state_dir: Path) -> Path:
    """Create ``state_dir`` if missing and check that it is writable."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RecordsUnavailable(f"records unavailable: cannot create {state_dir}: "
                                 f"{error.strerror or error}") from None
    if not os.access(state_dir, os.W_OK | os.X_OK):
        raise RecordsUnavailable(f"records unavailable: {state_dir} is not writable")
    return state_dir
