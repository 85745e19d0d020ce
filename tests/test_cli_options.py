"""What every `station` command takes: --version, --print-completion, and --config, -v and
--log-level before or after the command name (issue 14, item 5)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from station.cli import main

ROOT = Path(__file__).resolve().parents[1]
LOCKED = """\
[scenario]
engine = "timed"
[config.restore]
mode = "line"
[[phone]]
name = "find-my-on"
slot = 1
find_my = true
activation_lock = true
expect = "locked"
"""


def stop(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int | str | None, str, str]:
    """Run an option that ends the parse (argparse's exit): its code and what it printed."""
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    out, err = capsys.readouterr()
    return stopped.value.code, out, err


def station(*argv: str) -> subprocess.CompletedProcess[str]:
    """For what only a process of its own shows: how logging was set up."""
    return subprocess.run([sys.executable, "-m", "station.cli", *argv], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_version(capsys):
    code, out, _ = stop(["--version"], capsys)
    assert code == 0
    assert out.startswith(f"station {metadata.version('station')}; pymobiledevice3 ")


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completion_completes_commands_and_options(capsys):
    code, script, _ = stop(["--print-completion", "bash"], capsys)
    assert code == 0
    # What bash's programmable completion would ask: the words so far, the one being completed.
    probes = {'station rec': "records",
              'station records ""': "list export verify new-chain",
              'station ipsw catalog ""': "refresh",
              'station ports learn --ti': "--timeout",
              'station run --check --lo': "--log-level"}
    asks = "".join(f'COMP_WORDS=({words}); COMP_CWORD={len(words.split()) - 1}; COMPREPLY=(); '
                   '_shtab_station; echo "${COMPREPLY[*]}"\n' for words in probes)
    result = subprocess.run(["bash", "-c", script + "\n" + asks], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == list(probes.values())


@pytest.mark.parametrize("shell", ["zsh", "tcsh", "fish"])
def test_other_shells_get_a_script_naming_every_command(shell, capsys):
    code, script, _ = stop(["--print-completion", shell], capsys)
    assert code == 0
    for command in ("run", "devices", "records", "new-chain", "ipsw", "ports", "install-service"):
        assert command in script


def test_unknown_shell_is_a_usage_error(capsys):
    code, out, err = stop(["--print-completion", "cmd.exe"], capsys)
    assert (code, out) == (2, "")
    assert err.startswith("station: argument --print-completion: invalid choice: 'cmd.exe'")


@pytest.mark.parametrize("argv", [["-v", "key", "show"], ["key", "show", "--log-level", "INFO"]])
def test_verbose_or_log_level_before_or_after_the_command(sim_config, argv):
    """`key show` on a new station makes the key and logs that at info: shown only when asked."""
    result = station(*argv, "--config", str(sim_config))
    assert result.returncode == 0, result.stderr
    assert "INFO    station.records.keys: created station key " in result.stderr


def test_without_v_a_command_logs_no_info(sim_config):
    result = station("key", "show", "--config", str(sim_config))
    assert result.returncode == 0 and "INFO" not in result.stderr


def test_log_level_replaces_the_configs_for_run(tmp_path):
    """`run` logs at [station] log_level; --log-level wins for this command, the file unchanged."""
    config = tmp_path / "station.toml"
    text = '[station]\nstate_dir = "state"\nlog_level = "error"\n[ipsw]\ncache_dir = "ipsw"\n'
    config.write_text(text)
    scenario = tmp_path / "locked.toml"
    scenario.write_text(LOCKED)
    told = station("run", "--sim", str(scenario), "--speed", "50", "--config", str(config), "--log-level", "info")
    assert told.returncode == 0 and "INFO    station.core: slot 1 " in told.stderr
    assert config.read_text() == text


@pytest.mark.parametrize("argv, message", [
    (["-v", "ipsw", "list", "--log-level", "debug"], "station: -v and --log-level debug both given: use one"),
    (["--log-level", "info", "ipsw", "list", "--log-level", "debug"],
     "station: --log-level given twice: info before the command, debug after it"),
])
def test_conflicting_log_options_are_one_usage_error(sim_config, capsys, argv, message):
    assert main([*argv, "--config", str(sim_config)]) == 2
    assert capsys.readouterr().err == message + "\n"


def test_a_bad_log_level_is_refused_by_the_parser(sim_config, capsys):
    code, _, err = stop(["run", "--check", "--log-level", "loud", "--config", str(sim_config)], capsys)
    assert code == 2
    assert err.startswith("station run: argument --log-level: invalid choice: 'loud'")
