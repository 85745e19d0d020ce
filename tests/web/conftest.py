"""The shipped demo serving its page, shared by the browser and metrics tests."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from web.running import ROOT, STAY_UP, Running, start_station


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """The shipped demo (five phones), played at `make run`'s speed, serving its page."""
    text = (ROOT / "config/sim/demo.toml").read_text() + STAY_UP
    running = start_station(tmp_path_factory.mktemp("demo"), text, speed=30)
    yield running
    assert running.stop() in (0, 130), running.log()[-3000:]
    assert "Traceback" not in running.log()
