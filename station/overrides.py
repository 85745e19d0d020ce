"""The config's override file (the SD card's FAT partition), and the last good copy of it.

The appliance runs on /etc/station/station.toml with ``[station] override_file`` on top:
the boot partition's station.toml, which a shop edits from any PC. A mistake in that file
must not take the station down, since an appliance has no keyboard to fix it with: the
station keeps a copy of the last override file that worked in its state directory, runs on
that copy when the file is bad, and says what is wrong (``Config.override_problem``, one
line, shown on the display). With no good copy yet, it runs on the base config alone.

``state_dir`` and ``override_file`` come from the base config only: they decide where the
records and this very copy are kept, which a file on a removable FAT partition must not move.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from pathlib import Path

from station.config import Config, ConfigError, load_config, read_toml, with_overrides

log = logging.getLogger("station.config")

LAST_GOOD = "override.last-good.toml"
BASE_ONLY = {"station": ("state_dir", "override_file")}


def load(path: str | os.PathLike[str]) -> Config:
    """The config at ``path`` with its override file applied, or the last good one (and why).

    A bad base config raises ConfigError as ever: it is the image's own, not an edit. The
    caller reports ``override_problem`` (the log, the display; stderr for a command)."""
    base = load_config(path)
    file = base.station.override_file
    if file is None or not file.exists():
        return base
    try:
        return _apply(base, file, file)
    except ConfigError as error:
        problem = _one_line(file, error)
    last_good = base.station.state_dir / LAST_GOOD
    try:
        config = _apply(base, last_good, file)
    except (ConfigError, OSError):  # none yet (or unreadable): the base config alone
        config = base
    return dataclasses.replace(config, override_problem=problem)


def fallback(config: Config) -> str:
    """What a config with an override problem runs on, for the log line after the problem."""
    if config.overrides is not None:
        return f"running on its last good copy {config.overrides}"
    return f"running on {config.source} alone"


def remember(config: Config) -> None:
    """Keep the override file the running station uses as the last good one.

    Read once, and the copy itself checked before it replaces the last good one, rather
    than trusted from start-up: the shop may have edited the file since, and only a file
    that parses may become the fallback."""
    file = config.station.override_file
    if config.override_problem or file is None or config.overrides != file:
        return
    target = config.station.state_dir / LAST_GOOD
    temp = None
    try:
        data = file.read_bytes()
        if target.exists() and target.read_bytes() == data:
            return
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".override.")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        _apply(dataclasses.replace(config, overrides=None), Path(temp), file)
        os.replace(temp, target)
        temp = None
        log.info("kept %s as the last good overrides (%s)", file, target)
    except (ConfigError, OSError) as error:  # a fallback not kept is not a reason to stop
        log.warning("could not keep %s as the last good overrides: %s", file, error)
    finally:
        if temp is not None:
            Path(temp).unlink(missing_ok=True)


def _apply(base: Config, file: Path, named: Path) -> Config:
    """``base`` with ``file``'s keys; relative paths in it are relative to ``named``'s folder
    (the override file's, also for its copy in the state directory)."""
    data = read_toml(file, ConfigError)
    for section, keys in BASE_ONLY.items():
        for key in keys:
            if isinstance(data.get(section), dict) and key in data[section]:
                raise ConfigError(f"[{section}] {key}: can only be set in {base.source or 'the base config'}")
    config = with_overrides(base, data, named.resolve().parent)
    return dataclasses.replace(config, overrides=file)


def _one_line(file: Path, error: ConfigError) -> str:
    """The error as the display shows it: the file named once, then what is wrong."""
    message = str(error.args[0])
    return message if message.startswith(str(file)) else f"{file}: {message}"
