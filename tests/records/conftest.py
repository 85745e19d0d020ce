"""Records fixtures: a station section in a temp dir, a fake wall clock, a running recorder."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from station import cli as station_cli
from station.config import StationSection
from station.records.recorder import Recorder

from .helpers import FakeClock


@pytest.fixture
def station(tmp_path: Path) -> StationSection:
    return StationSection(id="bench-7", location="Shop, bench 7", operator="alice",
                          state_dir=tmp_path / "state")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def recorder(station: StationSection, clock: FakeClock) -> Iterator[Recorder]:
    with Recorder(station, now=clock) as recorder:
        yield recorder


@pytest.fixture
def config_file(tmp_path: Path, station: StationSection) -> Path:
    path = tmp_path / "station.toml"
    path.write_text(f'[station]\nid = "{station.id}"\nlocation = "{station.location}"\n'
                    f'operator = "{station.operator}"\nstate_dir = "{station.state_dir}"\n')
    return path


@pytest.fixture
def cli(config_file: Path, capsys: pytest.CaptureFixture[str]):
    """Run ``station ARGS --config <temp config>``; returns (exit code, stdout, stderr)."""
    def run(*argv: str) -> tuple[int, str, str]:
        code = station_cli.main([*argv, "--config", str(config_file)])
        out, err = capsys.readouterr()
        return code, out, err
    return run
