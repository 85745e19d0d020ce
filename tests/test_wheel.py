"""The package stands alone: the wheel, installed in a new venv away from the checkout, runs
its commands with its built-in defaults and no /etc/station, and carries the system files."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from station.config import SYSTEM_CONFIG

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_FILES = ("pyproject.toml", "README.md", "station", "hw")
SCENARIO = ROOT / "config/sim/one-restore.toml"


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    if SYSTEM_CONFIG.exists():
        pytest.skip(f"{SYSTEM_CONFIG} exists on this machine: the test is about running without it")
    work = tmp_path_factory.mktemp("wheel")
    # From the files a wheel is made of: a checkout's build/ (an image's root filesystem,
    # caches) is no business of the package's build.
    source = work / "source"
    source.mkdir()
    for name in PACKAGE_FILES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir",
                            str(work / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    if built.returncode != 0:
        pytest.skip(f"cannot build the wheel here (pip needs setuptools from PyPI): {built.stderr[-300:]}")
    wheel = next((work / "dist").glob("station-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(work / "venv")], check=True, timeout=120)
    # The new venv gets the wheel alone; its dependencies are borrowed from this venv by a
    # plain path (a .pth line that is a path runs no import hooks, so this venv's editable
    # install of the checkout is not borrowed with them).
    site = Path(subprocess.run([str(work / "venv/bin/python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    (work / "venv/bin/station").write_text(f"#!{work / 'venv/bin/python'}\nimport sys\nfrom station.cli import main\n"
                                           "sys.exit(main())\n")
    (work / "venv/bin/station").chmod(0o755)
    return work, wheel


def station(work: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STATION_", "PYTHON"))}
    env.update(HOME=str(work / "home"), XDG_STATE_HOME=str(work / "home/.local/state"))
    return subprocess.run([str(work / "venv/bin/station"), *args], capture_output=True, text=True,
                          cwd=work, env=env, timeout=timeout)


def test_the_wheel_carries_the_system_files(venv):
    _, wheel = venv
    names = zipfile.ZipFile(wheel).namelist()
    for name in ("station.service", "39-station-apple.rules", "60-station-gpio.rules",
                 "usbmuxd-keep-running.conf", "i2c-dev.conf", "station-tmpfiles.conf", "station.toml",
                 "modprobe-station.conf"):
        assert f"station/system/{name}" in names


def test_commands_run_from_the_wheel_alone(venv):
    work, _ = venv
    where = station(work, "--help")
    assert where.returncode == 0 and "install-udev" in where.stdout
    imported = subprocess.run([str(work / "venv/bin/python"), "-c", "import station; print(station.__file__)"],
                              capture_output=True, text=True, cwd=work, timeout=60)
    assert imported.stdout.startswith(str(work / "venv")), imported.stdout  # not the checkout
    listing = station(work, "ipsw", "list")
    assert listing.returncode == 0, listing.stderr
    check = station(work, "run", "--check")
    assert check.returncode == 0 and check.stdout.startswith(str(work / "venv")), check.stdout + check.stderr


def test_a_simulation_from_the_wheel_keeps_its_records_in_the_users_state_dir(venv):
    work, _ = venv
    run = station(work, "run", "--sim", str(SCENARIO), "--speed", "100", timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr[-2000:]
    assert "slot 1: DONE" in run.stdout
    state = work / "home/.local/state/station-sim"
    assert (state / "records.sqlite3").exists() and (state / "station_key.pub").exists()
    (work / "sim.toml").write_text(f'[station]\nstate_dir = "{state}"\n')
    verified = station(work, "records", "verify", "--config", str(work / "sim.toml"))
    assert verified.returncode == 0 and verified.stdout.startswith("ok:"), verified.stdout + verified.stderr


def test_install_udev_and_service_write_into_a_root(venv):
    work, _ = venv
    root = work / "root"
    for command in ("install-udev", "install-service"):
        done = station(work, command, "--root", str(root))
        assert done.returncode == 0, done.stderr
    rules = (root / "etc/udev/rules.d/39-station-apple.rules").read_text()
    assert rules == (ROOT / "station/system/39-station-apple.rules").read_text()
    assert (root / "etc/systemd/system/station.service").exists()
    # apple-mfi-fastcharge never loads: loaded by the first phone after boot, it takes that phone
    # from usbmuxd (docs/real-stack.md). Read back by modprobe itself, where there is one.
    modprobe = shutil.which("modprobe") or "/usr/sbin/modprobe"
    if Path(modprobe).exists():
        config = subprocess.run([modprobe, "-C", str(root / "etc/modprobe.d"), "--showconfig"],
                                capture_output=True, text=True, timeout=60).stdout
        assert "blacklist apple_mfi_fastcharge" in config.splitlines()
    else:
        assert "blacklist apple_mfi_fastcharge" in (root / "etc/modprobe.d/station.conf").read_text()
    (root / "etc/station/station.toml").write_text("# the operator's own\n")
    again = station(work, "install-service", "--root", str(root))
    assert "kept" in again.stdout  # an edited config is never overwritten
    assert (root / "etc/station/station.toml").read_text() == "# the operator's own\n"
