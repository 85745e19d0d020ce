"""The shipped demo serving its page, shared by the metrics tests."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from web.running import Running, playing_demo


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with playing_demo(tmp_path_factory.mktemp("demo")) as running:
        yield running
