"""The boot partition's config overrides: applied when good; when bad, the last good copy
runs, the problem is one line on the display and on stderr, and `run --check` fails."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from station import overrides
from station.config import Config
from station.core import Station
from station.snapshot import Screen
from station.ui.render import render

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def files(tmp_path):
    boot = tmp_path / "boot"
    boot.mkdir()
    base = tmp_path / "station.toml"
    base.write_text(f'[station]\nstate_dir = "{tmp_path / "state"}"\n'
                    f'override_file = "{boot / "station.toml"}"\n'
                    '[restore]\nmode = "counter"\n')
    (tmp_path / "state").mkdir()
    return base, boot / "station.toml"


def test_a_good_override_applies_and_is_kept_as_the_last_good(files):
    base, override = files
    override.write_text('[restore]\nmode = "line"\n[station]\nlocation = "Shop 1"\n')
    config = overrides.load(base)
    assert (config.restore.mode, config.station.location) == ("line", "Shop 1")
    assert config.overrides == override and not config.override_problem
    overrides.remember(config)
    assert (config.station.state_dir / overrides.LAST_GOOD).read_bytes() == override.read_bytes()


def test_a_bad_override_runs_on_the_last_good_one_and_says_what_is_wrong(files):
    base, override = files
    override.write_text('[restore]\nmode = "line"\n')
    overrides.remember(overrides.load(base))
    override.write_text('[restore]\nmode = "lines"\n')  # the shop's typo
    config = overrides.load(base)
    assert config.restore.mode == "line"  # the last good settings, not the base's "counter"
    assert config.override_problem == f'{override}: [restore] mode = "lines": must be one of "counter", "line"'
    assert "last good copy" in overrides.fallback(config)
    overrides.remember(config)  # a bad file never becomes the fallback
    assert b"lines" not in (config.station.state_dir / overrides.LAST_GOOD).read_bytes()
    assert not list(config.station.state_dir.glob(".override.*"))  # the refused copy is gone


def test_a_bad_override_with_no_good_one_yet_runs_on_the_base_config(files):
    base, override = files
    override.write_text("[restore\nmode = 1\n")
    config = overrides.load(base)
    assert config.restore.mode == "counter" and config.overrides is None
    assert config.override_problem.startswith(f"{override}: ")
    assert overrides.fallback(config) == f"running on {base} alone"


def test_the_override_cannot_move_the_records(files, tmp_path):
    base, override = files
    override.write_text(f'[station]\nstate_dir = "{tmp_path / "elsewhere"}"\n')
    config = overrides.load(base)
    assert config.station.state_dir == tmp_path / "state"
    assert "[station] state_dir: can only be set in" in config.override_problem


def test_no_override_file_is_no_problem(files):
    base, _ = files
    config = overrides.load(base)
    assert config.overrides is None and not config.override_problem


def test_commands_name_the_problem_and_run_check_fails(files):
    base, override = files
    override.write_text('[display]\nrotate = 1\n')
    check = subprocess.run([sys.executable, "-m", "station.cli", "run", "--check", "--config", str(base)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 2
    assert check.stderr.strip() == f"station: {override}: [display] rotate = 1: must be one of 0, 2"
    listing = subprocess.run([sys.executable, "-m", "station.cli", "records", "list", "--config", str(base)],
                             capture_output=True, text=True, timeout=60)
    assert f"station: {override}: [display] rotate = 1" in listing.stderr
    assert "running on" in listing.stderr


def test_the_display_shows_the_whole_line_then_settles_to_the_overview():
    now = [0.0]
    station = Station(Config(), phones=None, clock=lambda: now[0])
    problem = '/boot/firmware/station.toml: [restore] mode = "lines": must be one of "counter", "line"'
    station.set_fault("config", "BAD CONFIG", problem)
    snapshot = station.snapshot()
    assert snapshot.screen is Screen.FAULTS and snapshot.faults == ("BAD CONFIG",)
    assert snapshot.fault_details == (f"BAD CONFIG: {problem}",)
    body = render(snapshot).crop((0, 12, 128, 55))
    assert body.getbbox() is not None  # the text is drawn
    now[0] = 60.0  # nobody pressed a button: back to the ports, the fault line stays
    snapshot = station.snapshot()
    assert snapshot.screen is Screen.OVERVIEW and snapshot.faults == ("BAD CONFIG",)
    for _ in range(9):  # SELECT: 7 details, the counters, then the faults again
        station.press("select", False)
    assert station.snapshot().screen is Screen.FAULTS


def test_a_file_edited_bad_after_start_up_is_not_kept(files):
    base, override = files
    override.write_text('[restore]\nmode = "line"\n')
    config = overrides.load(base)  # good at start-up...
    override.write_text('[restore]\nmode = "lines"\n')  # ...edited before it is kept
    overrides.remember(config)
    assert not (config.station.state_dir / overrides.LAST_GOOD).exists()
    assert not list(config.station.state_dir.glob(".override.*"))
