"""`station install-udev` and `station install-service`: put the files that make a Debian or
Raspberry Pi OS system an appliance in place, from the copies inside the package.

The package carries them (``station/system/``) so that a wheel installed anywhere can set a
system up with no checkout; the SD-card image and ``image/install-station.sh`` use these
same commands. ``--root DIR`` writes into an offline tree (an image being built) and
skips the steps that need a running system (reloading udev and systemd).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
from importlib import resources
from pathlib import Path

from station.cli import OperationFailed
from station.commands.output import print_json
from station.config import Config

UDEV_RULES = ("39-station-apple.rules", "60-station-gpio.rules")
# (file in the package, where it goes, replace an existing one)
SERVICE_FILES = (
    ("station.service", "etc/systemd/system/station.service", True),
    ("usbmuxd-keep-running.conf", "etc/systemd/system/usbmuxd.service.d/station.conf", True),
    ("i2c-dev.conf", "etc/modules-load.d/station-i2c-dev.conf", True),
    ("modprobe-station.conf", "etc/modprobe.d/station.conf", True),
    ("station-tmpfiles.conf", "etc/tmpfiles.d/station.conf", True),
    # The operator's config is theirs: written once, never over their edits.
    ("station.toml", "etc/station/station.toml", False),
)


def register(subparsers: argparse._SubParsersAction) -> None:
    for name, handler, what in (
            ("install-udev", install_udev, "let the station user open Apple phones and GPIO chips"),
            ("install-service", install_service,
             "install station.service, keep usbmuxd running, load i2c-dev, "
             "keep apple-mfi-fastcharge out, default config")):
        parser = subparsers.add_parser(name, help=what)
        parser.add_argument("--root", type=Path, default=Path("/"), metavar="DIR",
                            help="install into this root directory (an image being built)")
        parser.add_argument("--json", action="store_true",
                            help='print {"written": [FILE...], "kept": [FILE...]}')
        parser.set_defaults(handler=handler)


def install_udev(args: argparse.Namespace, config: Config) -> int:
    written = [_install(name, args.root / "etc/udev/rules.d" / name, replace=True) for name in UDEV_RULES]
    if _live(args.root):
        _run("udevadm", "control", "--reload-rules")
        _run("udevadm", "trigger", "--subsystem-match=usb", "--subsystem-match=gpio")
    _report(args, written)
    return 0


def install_service(args: argparse.Namespace, config: Config) -> int:
    written = [_install(name, args.root / target, replace) for name, target, replace in SERVICE_FILES]
    if _live(args.root):
        _run("systemctl", "daemon-reload")
    _report(args, written)
    if not args.json:
        print("enable with: systemctl enable --now usbmuxd station")
    return 0


def _install(name: str, target: Path, replace: bool) -> tuple[Path, bool]:
    """``target`` and whether it was written (False: an existing file that is kept)."""
    if target.exists() and not replace:
        return target, False
    target.parent.mkdir(parents=True, exist_ok=True)
    with resources.as_file(resources.files("station.system") / name) as source:
        shutil.copyfile(source, target)
    target.chmod(0o644)
    return target, True


def _report(args: argparse.Namespace, installed: list[tuple[Path, bool]]) -> None:
    if args.json:
        print_json({"written": [str(path) for path, written in installed if written],
                    "kept": [str(path) for path, written in installed if not written]})
        return
    for path, written in installed:
        print(f"wrote {path}" if written else f"kept {path} (already there)")


def _live(root: Path) -> bool:
    """Writing into the running system (not an image) with systemd as its init."""
    return root.resolve() == Path("/") and Path("/run/systemd/system").is_dir()


def _run(*command: str) -> None:
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise OperationFailed(f"{command[0]}: not installed") from None
    except subprocess.CalledProcessError as error:
        raise OperationFailed(f"{' '.join(command)}: {error.stderr.strip() or error.returncode}") from None
    except subprocess.TimeoutExpired:
        raise OperationFailed(f"{' '.join(command)}: no answer in 60 s") from None
