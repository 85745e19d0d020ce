"""Prefetch: the newest signed build of every wanted model in the cache before a phone needs it.

``plan`` is pure: from what is cached, the saved catalog and the models wanted ([ipsw] models
and the ones the station has seen lately) it decides what to download, within the disk budget
([ipsw] max_cache_gb) and the free space, and which builds to prune: those Apple no longer
signs (a restore to one would fail at the signing step) that no pin names. ``run`` carries a
plan out through the cache: it prunes first (a file a restore reads stays: ``IpswCache.remove``
refuses it), then downloads each build with ``IpswCache.add``, which streams it to a part file
and verifies it against the catalog. ``keep_going`` is asked at every chunk: when it says no
(a phone arrived, the station stops) the download pauses, its part file stays, and the next
run resumes it.
"""
from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from station.ipsw.cache import Entry, IpswCache
from station.ipsw.catalog import Catalog, Published
from station.ipsw.errors import IpswError
from station.ipsw.progress import gb
from station.ipsw.transfer import DownloadInterrupted

log = logging.getLogger(__name__)

# Free space a download must leave on the cache's filesystem: the records, logs and pair records
# may share it, and a disk filled to the last byte fails them all.
RESERVE_BYTES = 10**9
STATUS_EVERY_S = 1.0  # the display's status line, at most this often
LOG_EVERY = 25  # percent between log lines of a download


class Paused(DownloadInterrupted):
    """``keep_going`` said no: the part file stays for the next run to resume."""


@dataclass(frozen=True)
class Plan:
    prunes: tuple[Path, ...] = ()
    downloads: tuple[Published, ...] = ()
    notes: tuple[str, ...] = ()  # why a wanted model gets nothing now, one line each


@dataclass
class Result:
    pruned: list[Path] = field(default_factory=list)
    added: list[Path] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # URL -> why
    paused: bool = False


def plan(entries: Iterable[Entry], catalog: Catalog, wanted: Iterable[str], pins: dict[str, str],
         budget: int, free: int | None, skip: frozenset[str] = frozenset()) -> Plan:
    """What to prune and download; ``free`` bytes on the cache's filesystem (None: not known),
    ``skip`` URLs not to try now (they failed a moment ago)."""
    entries = list(entries)
    usable = [e for e in entries if e.usable and e.record is not None]
    prunes = tuple(e.path for e in usable if e.signed is False and not _pinned(e, pins))
    used = sum(e.size for e in entries if e.path not in prunes)
    room = None if free is None else free + sum(e.size for e in entries if e.path in prunes) - RESERVE_BYTES
    cached = {e.record.sha1 for e in usable if e.record is not None and e.path not in prunes}
    downloads: list[Published] = []
    notes: list[str] = []
    for model in dict.fromkeys(wanted):
        pin = pins.get(model)
        target = catalog.newest_for(model, pin, signed=True)
        if target is None:
            pinned = f" (pinned to {pin})" if pin else ""
            notes.append(f"{model}: the catalog lists no build{pinned} Apple signs "
                         f"({catalog.fetched_text((model,))})")
            continue
        if target.sha1 in cached or target in downloads or target.url in skip:
            continue
        what = f"{model}: iOS {target.version} ({target.build}), {gb(target.size)}"
        if used + target.size > budget:
            notes.append(f"{what}, does not fit: {gb(max(0, budget - used))} left of [ipsw] max_cache_gb")
            continue
        if room is not None and target.size > room:
            notes.append(f"{what}, does not fit: {gb(max(0, room + RESERVE_BYTES))} free on the disk, "
                         f"{gb(RESERVE_BYTES)} of it kept free")
            continue
        downloads.append(target)
        used += target.size
        if room is not None:
            room -= target.size
    return Plan(prunes, tuple(downloads), tuple(notes))


def _pinned(entry: Entry, pins: dict[str, str]) -> bool:
    assert entry.record is not None
    return any(pins.get(m) in (entry.record.version, entry.record.build) for m in entry.record.models)


def run(cache: IpswCache, wanted: Iterable[str], keep_going: Callable[[], bool] = lambda: True,
        status: Callable[[str], None] = lambda text: None, skip: frozenset[str] = frozenset()) -> Result:
    """Carry out the plan for ``wanted`` now; ``status`` gets the short line the display shows."""
    section = cache.section
    try:
        free: int | None = shutil.disk_usage(cache.dir if cache.dir.is_dir() else cache.dir.parent).free
    except OSError:
        free = None
    todo = plan(cache.entries(), cache.catalog(), wanted, section.pin, int(section.max_cache_gb * 1e9), free, skip)
    for note in todo.notes:
        log.info("prefetch: %s", note)
    result = Result()
    for path in todo.prunes:
        try:
            result.pruned.append(cache.remove(path.name))
            log.info("prefetch: pruned %s: Apple no longer signs it", path.name)
        except IpswError as error:  # in use by a restore, or gone meanwhile
            log.info("prefetch: not pruned: %s", error)
    for number, published in enumerate(todo.downloads, 1):
        if not keep_going():
            result.paused = True
            break
        label = f"{number}/{len(todo.downloads)}"
        log.info("prefetch %s: iOS %s (%s) for %s, %s: %s", label, published.version, published.build,
                 ", ".join(published.models), gb(published.size), published.url)
        try:
            entry = cache.add(published.url, progress=_Reporter(label, published, keep_going, status))
        except Paused:
            log.info("prefetch paused: %s stays to be resumed", published.file_name)
            result.paused = True
            break
        except IpswError as error:
            log.warning("prefetch: %s", error)
            result.failed[published.url] = str(error)
            continue
        finally:
            status("")
        result.added.append(entry.path)
        log.info("prefetch %s: %s %s", label, entry.path.name, entry.state)
    return result


class _Reporter:
    """The progress of one download: pauses it when ``keep_going`` says so, tells the display
    (at most each second) and the log (each quarter)."""

    def __init__(self, label: str, published: Published, keep_going: Callable[[], bool],
                 status: Callable[[str], None]) -> None:
        self.label, self.keep_going, self.status = label, keep_going, status
        self.model = published.models[0].removeprefix("iPhone") if published.models else ""
        self.name = published.file_name
        self.logged = 0
        self.shown = 0.0

    def __call__(self, done: int, total: int | None) -> None:
        if not self.keep_going():
            raise Paused(f"{self.name}: paused at {done} bytes")
        percent = done * 100 // total if total else 0
        now = time.monotonic()
        if now - self.shown >= STATUS_EVERY_S:
            self.shown = now
            self.status(f"IPSW {self.label} {self.model} {percent}%")  # fits the 25-character line
        if percent >= self.logged + LOG_EVERY:
            self.logged = percent - percent % LOG_EVERY
            log.info("prefetch %s: %s %d%% (%s of %s)", self.label, self.name, percent, gb(done), gb(total or 0))
