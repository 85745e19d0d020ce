"""Scenario files: every shipped one loads; a bad one is one line naming what is wrong."""
from __future__ import annotations

from pathlib import Path

import pytest

from station.cli import main
from station.scenario import ScenarioError, load_scenario

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted((ROOT / "config" / "sim").glob("*.toml")), ids=str)
def test_shipped_scenarios_load(path):
    scenario = load_scenario(path)
    assert scenario.phones


def test_demo_has_the_four_phones_the_readme_promises():
    demo = load_scenario(ROOT / "config" / "sim" / "demo.toml")
    assert [(p.name, p.expect) for p in demo.phones] == [
        ("clean", "done"), ("find-my-on", "locked"), ("dfu", "done"), ("flaky-cable", "done")]
    assert demo.phones[3].fail.percent == 60


@pytest.mark.parametrize("body, message", [
    ('[[phone]]\nname = "a"\nslot = 1\nactivaton_lock = true\n',
     "[[phone]] #1 activaton_lock: unknown key (did you mean activation_lock?)"),
    ('[[phone]]\nname = "a"\n', "[[phone]] #1 slot: missing key"),
    ('[[phone]]\nname = "a"\nslot = 99\n', "[[phone]] #1 slot = 99: must be 1..64"),
    ('[[phone]]\nname = "a"\nslot = 1\nmodel = "Pixel 7"\n',
     "[[phone]] a model = \"Pixel 7\": must look like 'iPhone14,7'"),
    ('[[phone]]\nname = "a"\nslot = 1\nmode = "sleepy"\n',
     '[[phone]] #1 mode = "sleepy": must be one of "normal", "recovery", "dfu"'),
    ('[[phone]]\nname = "a"\nslot = 1\nfail = { kind = "gremlins" }\n',
     '[[phone]] #1 fail kind = "gremlins": must be one of "network", "usb", "device_rejected", "timeout"'),
    ('[[phone]]\nname = "a"\nslot = 1\n[[phone]]\nname = "b"\nslot = 1\n',
     "[[phone]] b slot = 1: a is still plugged in there"),
    ('[[press]]\nat = 3\nbutton = "menu"\n',
     '[[press]] #1 button = "menu": must be one of "select", "ok", "back"'),
    ('[phones]\n', "[phones]: unknown table (expected one of config, network, phone, press, scenario, usbmuxd)"),
])
def test_bad_scenario_is_one_line(tmp_path, body, message):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert str(caught.value) == f"scenario error: bad.toml: {message}"


def test_run_with_a_bad_scenario_exits_2_with_one_line(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text('[[phone]]\nname = "a"\n')
    assert main(["run", "--config", str(ROOT / "config" / "station-sim.toml"),
                 "--sim", str(path)]) == 2
    assert capsys.readouterr().err == "scenario error: bad.toml: [[phone]] #1 slot: missing key\n"


def test_scenario_config_overrides_are_validated(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text('[config.restore]\nmode = "turbo"\n[[phone]]\nname = "a"\nslot = 1\n')
    assert main(["run", "--config", str(ROOT / "config" / "station-sim.toml"),
                 "--sim", str(path)]) == 2
    assert capsys.readouterr().err == \
        'config error: [restore] mode = "turbo": must be one of "counter", "line"\n'
