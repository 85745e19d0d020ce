"""Bad command lines (issue 9, section 5): one line on stderr, a non-zero exit, nothing changed.

Exit 2 for what the command line or config got wrong, 1 for what failed while doing it
(issue 14, item 5)."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from station.cli import main

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "config" / "sim" / "demo.toml"


@pytest.fixture
def config(sim_config):
    """A simulated station whose state would go into tmp_path/state."""
    return sim_config


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() if p.is_file() else b"<dir>"
            for p in sorted(directory.rglob("*"))}


def one_line(text: str) -> str:
    assert text.endswith("\n") and text.count("\n") == 1, text
    assert "Traceback" not in text
    return text.rstrip("\n")


@pytest.mark.parametrize("argv, message", [
    (["run", "--sim", str(DEMO), "--speed", "nan"],
     "station run: argument --speed: 'nan' must be a finite number above 0"),
    (["run", "--sim", str(DEMO), "--speed", "inf"],
     "station run: argument --speed: 'inf' must be a finite number above 0"),
    (["run", "--sim", str(DEMO), "--speed=-inf"],
     "station run: argument --speed: '-inf' must be a finite number above 0"),
    (["run", "--sim", str(DEMO), "--duration", "nan"],
     "station run: argument --duration: 'nan' must be a finite number above 0"),
    (["ports", "learn", "--slots", "0"],
     "station ports learn: argument --slots: '0' must be a whole number above 0"),
    (["ports", "learn", "--slots", "two"],
     "station ports learn: argument --slots: 'two' must be a whole number above 0"),
    (["ports", "learn", "--timeout", "-1"],
     "station ports learn: argument --timeout: '-1' must be a finite number above 0"),
    (["ports", "learn", "--timeout", "0"],
     "station ports learn: argument --timeout: '0' must be a finite number above 0"),
    (["ports", "learn", "--timeout", "nan"],
     "station ports learn: argument --timeout: 'nan' must be a finite number above 0"),
])
def test_bad_numbers_are_refused_by_the_parser(tmp_path, config, capsys, argv, message):
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        main([*argv, "--config", str(config)])
    assert stopped.value.code == 2
    assert one_line(capsys.readouterr().err) == f"{message} (see --help)"
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("argv, message", [
    (["run", "--duration", "5"], "station: --duration needs --sim (it counts scenario time)"),
    (["run", "--speed", "30"], "station: --speed needs --sim (it speeds up scenario time)"),
    (["ports", "learn", "--slots", "5"],
     "station: --slots 5: the hub has 4 slots ([hub] slots in {config})"),
])
def test_options_that_would_be_ignored_or_harmful_are_refused(tmp_path, config, capsys, argv,
                                                              message):
    before = snapshot(tmp_path)
    assert main([*argv, "--config", str(config)]) == 2
    assert one_line(capsys.readouterr().err) == message.format(config=config)
    assert snapshot(tmp_path) == before


def test_command_error_is_one_line_under_python_m(tmp_path, config):
    """`python -m station.cli` runs main() in __main__: its CommandError must still be caught."""
    result = subprocess.run([sys.executable, "-m", "station.cli", "run", "--duration", "5",
                             "--config", str(config)],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 2
    assert result.stderr == "station: --duration needs --sim (it counts scenario time)\n"


def test_config_may_come_before_the_command(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[restore]\nretries = 9\n")
    assert main(["--config", str(bad), "ipsw", "list"]) == 2
    assert capsys.readouterr().err == "config error: [restore] retries = 9: must be 0..5\n"


def test_config_before_and_after_the_command_work_the_same(tmp_path, config, capsys):
    for argv in (["--config", str(config), "run", "--check"],
                 ["run", "--check", "--config", str(config)],
                 ["--config", str(config), "run", "--check", "--config", str(config)]):
        assert main(argv) == 0
        assert capsys.readouterr().out == f"{config}: OK\n"
    assert not (tmp_path / "state").exists()


def test_two_different_configs_are_one_clear_error(tmp_path, config, capsys):
    other = tmp_path / "other.toml"
    other.write_text("")
    assert main(["--config", str(config), "ipsw", "list", "--config", str(other)]) == 2
    assert one_line(capsys.readouterr().err) == \
        f"station: --config given twice: {config} before the command, {other} after it"


def test_run_check_loads_config_and_scenario_and_starts_nothing(tmp_path, demo_config, capsys):
    assert main(["run", "--check", "--config", str(demo_config), "--sim", str(DEMO)]) == 0
    assert capsys.readouterr().out == f"{demo_config}: OK\n{DEMO}: OK\n"
    assert not (tmp_path / "state").exists()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_writing_to_a_full_device_is_one_line(tmp_path, config):
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "station.cli", "run", "--check",
                                 "--config", str(config)],
                                stdout=full, stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 1  # the operation failed, not a usage error
    assert result.stderr == "station: cannot write the output: No space left on device\n"


def test_a_closed_pipe_is_a_quiet_non_zero_exit(tmp_path, config):
    reader, writer = os.pipe()
    os.close(reader)
    try:
        result = subprocess.run([sys.executable, "-m", "station.cli", "run", "--check",
                                 "--config", str(config)],
                                stdout=writer, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                timeout=60)
    finally:
        os.close(writer)
    assert result.returncode == 1
    assert result.stderr == ""


class _Failing:
    def __init__(self, code: int) -> None:
        self.code = code

    def write(self, text: str) -> int:
        raise OSError(self.code, os.strerror(self.code))

    def flush(self) -> None:
        raise OSError(self.code, os.strerror(self.code))

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        raise OSError(errno.EBADF, "no file")


def test_output_errors_in_process(monkeypatch, config, capsys):
    monkeypatch.setattr(sys, "stdout", _Failing(errno.ENOSPC))
    assert main(["run", "--check", "--config", str(config)]) == 1
    assert capsys.readouterr().err == "station: cannot write the output: No space left on device\n"
    monkeypatch.setattr(sys, "stdout", None)  # `station ... >&-`
    assert main(["run", "--check", "--config", str(config)]) == 1
    assert capsys.readouterr().err == "station: cannot write the output: standard output is closed\n"


def test_a_file_error_escaping_a_command_is_one_line(monkeypatch, config, capsys):
    """e.g. an [ipsw] cache_dir that exists but cannot be written: the command says so."""
    import station.commands.run as run_command

    def refuse(name: str) -> str:
        raise PermissionError(errno.EACCES, "Permission denied", "/var/lib/station/ipsw/catalog.json")

    monkeypatch.setattr(run_command, "backend_name", refuse)
    monkeypatch.setenv("STATION_BACKEND", "pi")
    assert main(["run", "--config", str(config)]) == 1
    assert capsys.readouterr().err == \
        "station: /var/lib/station/ipsw/catalog.json: Permission denied\n"
