"""Config: the documented default file, typed values, one-line errors naming the key."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from station.cli import main
from station.config import PACKAGED_CONFIG, PROVENANCE_FIELDS, Config, ConfigError, find_config, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_documented_default_file_matches_the_built_in_defaults():
    # ...but for the boot partition's overrides, which only the appliance's config names.
    packaged = load_config(PACKAGED_CONFIG)
    assert packaged.station.override_file == Path("/boot/firmware/station.toml")
    station = dataclasses.replace(packaged.station, override_file=None)
    assert dataclasses.replace(packaged, station=station) == Config()


def test_every_key_is_documented_in_station_toml():
    text = PACKAGED_CONFIG.read_text()
    for section in dataclasses.fields(Config):
        if section.name in PROVENANCE_FIELDS:
            continue
        assert f"[{section.name}]" in text
        for key in dataclasses.fields(section.default_factory()):
            assert f"{key.name} =" in text, f"[{section.name}] {key.name} is not documented"


@pytest.mark.parametrize("toml, message", [
    ("[restore]\nmax_parallel_restores = 0\n",
     "config error: [restore] max_parallel_restores = 0: must be 1..32"),
    ("[restore]\nmode = \"auto\"\n",
     'config error: [restore] mode = "auto": must be one of "counter", "line"'),
    ("[restore]\nmax_paralel_restores = 2\n",
     "config error: [restore] max_paralel_restores: unknown key (did you mean max_parallel_restores?)"),
    ("[restore]\njob = \"wipe\"\n",
     'config error: [restore] job = "wipe": must be one of "restore", "erase"'),
    ("[dispaly]\n", "config error: [dispaly]: unknown section (did you mean display?)"),
    ("[buttons]\nhold_s = \"long\"\n", 'config error: [buttons] hold_s = "long": must be a number'),
    ("[hub]\nslots = true\n", "config error: [hub] slots = true: must be an integer"),
    ("[display]\nrotate = 1\n", "config error: [display] rotate = 1: must be one of 0, 2"),
    ("[hub]\nports = { \"1-1.3\" = \"two\" }\n",
     'config error: [hub] ports.1-1.3 = "two": must be an integer'),
    ("[hub]\nports = { \"1-1.3\" = 2, \"1-1.4\" = 2 }\n",
     "config error: [hub] ports.1-1.4 = 2: slot 2 is also 1-1.3 on the same bus"),
    ("[restore\n", "config error: {path}: Expected ']' at the end of a table declaration (at line 1, column 9)"),
])
def test_bad_config_is_one_line_naming_the_key(tmp_path, toml, message):
    path = tmp_path / "station.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == message.format(path=path)


def test_one_slot_may_name_both_halves_of_a_usb3_port(tmp_path):
    path = tmp_path / "station.toml"
    path.write_text('[hub]\nports = { "1-1.3" = 2, "2-1.3" = 2 }\n')
    assert load_config(path).hub.ports == {"1-1.3": 2, "2-1.3": 2}


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    path = tmp_path / "conf" / "station.toml"
    path.parent.mkdir()
    path.write_text('[station]\nstate_dir = "../state"\n')
    assert load_config(path).station.state_dir == tmp_path / "state"


def test_config_file_search_order(tmp_path, monkeypatch):
    monkeypatch.delenv("STATION_CONFIG", raising=False)
    assert find_config("x.toml") == Path("x.toml")
    monkeypatch.setenv("STATION_CONFIG", str(tmp_path / "env.toml"))
    assert find_config(None) == tmp_path / "env.toml"
    monkeypatch.delenv("STATION_CONFIG")
    assert find_config(None) in (Path("/etc/station/station.toml"), PACKAGED_CONFIG)


def test_station_command_stops_with_one_line_and_exit_2(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[restore]\nmax_parallel_restores = 0\n")
    result = subprocess.run([sys.executable, "-m", "station.cli", "run", "--config", str(path)],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 2
    assert result.stderr == "config error: [restore] max_parallel_restores = 0: must be 1..32\n"
    assert result.stdout == ""


def test_missing_config_file_is_one_line(tmp_path, capsys):
    assert main(["run", "--config", str(tmp_path / "nope.toml")]) == 2
    assert capsys.readouterr().err == f"config error: {tmp_path / 'nope.toml'}: no such file\n"


# Bad input (issue 9, section 5): one line, a non-zero exit, nothing changed.

@pytest.mark.parametrize("toml, message", [
    ("[display]\nrotate = false\n", "config error: [display] rotate = false: must be one of 0, 2"),
    ("[display]\nrotate = 2.0\n", "config error: [display] rotate = 2.0: must be one of 0, 2"),
    ("[leds]\npins = [-1]\n", "config error: [leds] pins = [-1]: -1 is not a BCM pin (0..27)"),
    ("[leds]\npins = [5, 28]\n", "config error: [leds] pins = [5, 28]: 28 is not a BCM pin (0..27)"),
    ("[leds]\npins = [5, 6, 5]\n", "config error: [leds] pins = [5, 6, 5]: pin 5 is named twice"),
    ("[leds]\npins = [5, 17]\n",
     "config error: [leds] pins = [5, 17]: pin 17 is also [buttons] select_pin"),
    ("[leds]\npins = [true]\n", "config error: [leds] pins = true: must be an integer"),
    ("[buttons]\nok_pin = 17\n", "config error: [buttons] ok_pin = 17: pin 17 is also select_pin"),
    ('[ipsw]\nmodels = ["../../etc"]\n',
     'config error: [ipsw] models = ["../../etc"]: "../../etc" is not a ProductType like "iPhone14,2"'),
    ('[ipsw]\npin = { "../x" = "17.5.1" }\n',
     'config error: [ipsw] pin."../x": not a ProductType like "iPhone14,2"'),
    ('[station]\nstate_dir = "/tmp/a\\u0000b"\n',
     'config error: [station] state_dir = "/tmp/a\\u0000b": a path cannot contain a NUL character'),
    ('[station]\nstate_dir = "~nosuchuser9/state"\n',
     'config error: [station] state_dir = "~nosuchuser9/state": no user nosuchuser9 for "~nosuchuser9"'),
    ('[station]\n"a\\nb" = 1\n', 'config error: [station] "a\\nb": unknown key'),
    ('["x\\ny"]\n', 'config error: ["x\\ny"]: unknown section'),
    ('[hub]\nports = { "1-1.3" = [[[[[[[[[[[[1]]]]]]]]]]]] }\n',
     'config error: [hub] ports.1-1.3 = [[[[[[[[[...]]]]]]]]]: must be an integer'),
])
def test_values_that_must_be_refused(tmp_path, toml, message):
    path = tmp_path / "station.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == message.format(path=path)


def test_non_utf8_config_is_one_line(tmp_path):
    path = tmp_path / "station.toml"
    path.write_bytes(b'[station]\n# caf\xe9\nid = "x"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"config error: {path}: line 2: not UTF-8 (byte 0xe9)"


@pytest.mark.parametrize("depth", [600, 5000])
def test_deeply_nested_value_is_one_line(tmp_path, depth):
    path = tmp_path / "station.toml"
    path.write_text("[leds]\npins = " + "[" * depth + "]" * depth + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith("config error: ")
    assert "\n" not in str(caught.value)


def test_config_path_with_a_nul_is_one_line(capsys):
    assert main(["run", "--config", "a\0b.toml"]) == 2
    assert capsys.readouterr().err == 'config error: "a\\u0000b.toml": a path cannot contain a NUL character\n'


def test_empty_config_name_is_an_error_not_unset(monkeypatch, capsys):
    monkeypatch.delenv("STATION_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="--config: empty file name"):
        find_config("")
    monkeypatch.setenv("STATION_CONFIG", "")
    with pytest.raises(ConfigError, match="STATION_CONFIG is set but empty"):
        find_config(None)
    assert main(["ipsw", "list"]) == 2
    assert capsys.readouterr().err == \
        "config error: STATION_CONFIG is set but empty: name a config file, or unset it\n"
    monkeypatch.delenv("STATION_CONFIG")
    assert main(["ipsw", "list", "--config", ""]) == 2
    assert capsys.readouterr().err == "config error: --config: empty file name\n"


@pytest.mark.parametrize("key", ["state_dir", "cache_dir", "frames_dir"])
def test_a_directory_that_is_a_file_is_refused_at_load(tmp_path, key):
    section = {"state_dir": "station", "cache_dir": "ipsw", "frames_dir": "display"}[key]
    (tmp_path / "afile").write_text("x")
    path = tmp_path / "station.toml"
    path.write_text(f'[{section}]\n{key} = "afile"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == \
        f'config error: [{section}] {key} = "afile": {tmp_path / "afile"} is a file, not a directory'


def test_the_signing_server_is_a_config_key(tmp_path):
    path = tmp_path / "station.toml"
    path.write_text('[restore]\nsigning_url = "https://tss.example.net/TSS/controller?action=2"\n')
    assert load_config(path).restore.signing_url == "https://tss.example.net/TSS/controller?action=2"
    path.write_text('[restore]\nsigning_url = "ftp://tss.example.net/"\n')
    with pytest.raises(ConfigError, match=r"\[restore\] signing_url = .*not an http\(s\) URL"):
        load_config(path)
