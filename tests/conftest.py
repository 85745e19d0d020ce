"""Shared fixtures. Reference data lives in ../shared (beside the checkout), never in the project."""
from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import Iterator
from pathlib import Path

import pymobiledevice3.common
import pytest

SHARED = Path(os.environ.get("STATION_SHARED", Path(__file__).resolve().parents[2] / "shared"))


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, or a skip saying why: a user's clone has no ../shared beside it."""
    data = SHARED / "data"
    if not data.is_dir():
        pytest.skip(f"reference data not found at {data} (only present beside the project's own checkout)")
    return data


@pytest.fixture
def sim_config(tmp_path: Path) -> Path:
    """A simulated station's config with its state and IPSW cache in tmp_path and a 4-port hub."""
    path = tmp_path / "station.toml"
    path.write_text('[station]\nstate_dir = "state"\n[hardware]\nbackend = "sim"\n'
                    '[ipsw]\ncache_dir = "ipsw"\n[hub]\nslots = 4\n')
    return path


@pytest.fixture
def demo_config(sim_config: Path) -> Path:
    """sim_config with a hub for config/sim/demo.toml's five phones."""
    sim_config.write_text(sim_config.read_text().replace("slots = 4", "slots = 5"))
    return sim_config


@pytest.fixture
def pmd3_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """pymobiledevice3's pair records go to this test's folder, not the user's home.

    pymobiledevice3 fixes its home folder when ``pymobiledevice3.common`` is imported, and
    another test module may import it first, so the folder itself is patched per test.
    """
    home = tmp_path / "pmd3-home"
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(pymobiledevice3.common, "_HOMEFOLDER", home)
    return home


@pytest.fixture(autouse=True)
def umask_kept() -> Iterator[None]:
    """A station run in the test's process sets the process's umask to its own (077) for good:
    each test gets back the one it started with, whatever ran before it in that process."""
    mask = os.umask(0o022)
    os.umask(mask)
    yield
    os.umask(mask)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests on a fresh event loop each, without a plugin."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    arguments = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    asyncio.run(pyfuncitem.obj(**arguments))
    return True
