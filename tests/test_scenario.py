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


def test_demo_has_the_five_phones_the_readme_promises():
    demo = load_scenario(ROOT / "config" / "sim" / "demo.toml")
    assert [(p.name, p.expect) for p in demo.phones] == [
        ("clean", "done"), ("find-my-on", "locked"), ("dfu", "done"), ("flaky-fdr", "done"),
        ("trade-in", "done")]
    assert demo.info.engine == "real" and demo.phones[3].restore_fault == "status-53"
    assert [p.job for p in demo.phones] == ["", "", "", "", "erase"]


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


# Bad input (issue 9, section 5): one line, a non-zero exit, nothing changed.

PHONE = '[[phone]]\nname = "a"\nslot = 1\n'


@pytest.mark.parametrize("body, message", [
    (PHONE + 'model = "iPhone42,1"\n',
     "[[phone]] a model = \"iPhone42,1\": no such iPhone (pymobiledevice3's IRECV_DEVICES)"),
    (PHONE + "ecid = -1\n", "[[phone]] #1 ecid = -1: must be 1..18446744073709551615"),
    (PHONE + "ecid = 0x10000000000000000\n",
     "[[phone]] #1 ecid = 18446744073709551616: must be 1..18446744073709551615"),
    (PHONE + "detach = inf\n", "[[phone]] #1 detach = inf: must be 0..86400"),
    (PHONE + "detach = nan\n", "[[phone]] #1 detach = nan: must be 0..86400"),
    (PHONE + "detach = -1\n", "[[phone]] #1 detach = -1: must be 0..86400"),
    ('[scenario]\nduration = -1\n' + PHONE, "[scenario] duration = -1: must be 0..86400"),
    ('[scenario]\nduration = nan\n' + PHONE, "[scenario] duration = nan: must be 0..86400"),
    ('[scenario]\nduration = inf\n' + PHONE, "[scenario] duration = inf: must be 0..86400"),
    (PHONE + '[[press]]\nat = 1\nbutton = "ok"\nslot = 0\n', "[[press]] #1 slot = 0: must be 1..64"),
    ('[[phone]]\nname = "a\\nb"\nslot = 1\n',
     '[[phone]] #1 name = "a\\nb": must be one line of printable characters'),
    ('[[phone]]\nname = ""\nslot = 1\n',
     '[[phone]] #1 name = "": must be one line of printable characters'),
    ('[scenario]\ndescription = ' + '[' * 3 + ']' * 3 + '\n',
     '[scenario] description = [[[]]]: must be a string'),
    (PHONE + 'restore_fault = "status-0"\n',
     '[[phone]] a restore_fault = "status-0": must be one of ibss-rejected, usb-pulled-upload, '
     'pulled-during-asr, status-<n> (n != 0)'),
    ('[scenario]\nengine = "fast"\n' + PHONE, '[scenario] engine = "fast": must be one of "timed", "real"'),
])
def test_bad_scenario_value_is_one_line(tmp_path, body, message):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert str(caught.value) == f"scenario error: bad.toml: {message}"


@pytest.mark.parametrize("body", [
    "[[phone]]\nname = \"a\"\nslot = 1\nfail = " + "[" * 5000 + "]" * 5000 + "\n",
    "[scenario]\ndescription = " + "[" * 600 + "]" * 600 + "\n",
])
def test_deeply_nested_scenario_is_one_line(tmp_path, body):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert "\n" not in str(caught.value)


def test_non_utf8_scenario_is_one_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_bytes(PHONE.encode() + b'model = "\xff"\n')
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert str(caught.value) == f"scenario error: {path}: line 4: not UTF-8 (byte 0xff)"


@pytest.mark.parametrize("command", [["run", "--duration", "1"], ["devices"]])
@pytest.mark.parametrize("body, message", [
    ('[[phone]]\nname = "a"\nslot = 6\n',
     "[[phone]] a slot = 6: beyond the hub ([hub] slots = 4)"),
    (PHONE + '[[press]]\nat = 1\nbutton = "ok"\nslot = 5\n',
     "[[press]] #1 slot = 5: beyond the hub ([hub] slots = 4)"),
    ('[config.hub]\nslots = 2\n[[phone]]\nname = "a"\nslot = 3\n',
     "[[phone]] a slot = 3: beyond the hub ([hub] slots = 2)"),
])
def test_a_slot_beyond_the_hub_is_refused_before_anything_starts(tmp_path, sim_config, capsys,
                                                                command, body, message):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main([*command, "--config", str(sim_config), "--sim", str(path)]) == 2
    assert capsys.readouterr().err == f"scenario error: bad.toml: {message}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no state dir, no cache dir


def test_unknown_model_stops_the_run_with_one_line(tmp_path, sim_config, capsys):
    path = tmp_path / "bad.toml"
    path.write_text(PHONE + 'model = "iPhone42,1"\n')
    assert main(["devices", "--config", str(sim_config), "--sim", str(path)]) == 2
    assert capsys.readouterr().err == ("scenario error: bad.toml: [[phone]] a model = \"iPhone42,1\": "
                                       "no such iPhone (pymobiledevice3's IRECV_DEVICES)\n")
