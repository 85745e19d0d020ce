"""IPSWs for the simulation: one synthetic build per simulated model, put in the cache as any IPSW is.

A fresh clone has no real IPSW (8 GB each), and a real one would not match the
simulated phones' signing server anyway. ``provision`` builds, for each model a
scenario plugs in, an IPSW in the shape of Apple's (``hw.sim.firmware``: its
manifest, personalisable components and a small OS image) and adds it to the
cache with ``trust_unlisted`` — Apple's catalog does not list it, and the cache
says so in its record. Built once: a second run finds them cached.
"""
from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable
from pathlib import Path

from hw.sim.firmware import DEFAULT_OS_SIZE, SIM_BUILD, SIM_VERSION, build_ipsw, ipsw_name
from station.ipsw.cache import IpswCache

log = logging.getLogger(__name__)


def provision(cache: IpswCache, models: Iterable[str], os_size: int = DEFAULT_OS_SIZE) -> list[Path]:
    """The cached synthetic IPSW of each model, built (``os_size`` bytes of OS image) and added
    where missing; one already cached is used whatever its size."""
    paths = []
    for model in sorted(set(models)):
        name = ipsw_name(model, SIM_VERSION, SIM_BUILD)
        path = cache.dir / name
        if not path.exists():
            with tempfile.TemporaryDirectory(prefix=".synthetic-", dir=_parent(cache)) as work:
                built = build_ipsw(Path(work) / name, model, SIM_VERSION, SIM_BUILD, os_size=os_size)
                cache.add(str(built), trust_unlisted=True)
            log.info("built the simulation's IPSW for %s: %s", model, name)
        paths.append(path)
    return paths


def _parent(cache: IpswCache) -> Path:
    """Build beside the cache (same filesystem: the copy into it is cheap)."""
    cache.dir.mkdir(parents=True, exist_ok=True)
    return cache.dir
