"""`make hil`: the appliance in a VM meets gadget phones on a real kernel's USB bus.

    python3 image/hil.py        (root; builds build/image/station-amd64.img first if it is missing)

The amd64 build of the appliance (``ARCH=amd64 image/build.sh``: the SD card's recipe for a PC)
boots in ``qemu-system-x86_64`` (TCG, as ``image/boot_test.py`` does) with this tree's station
wheel installed over the image's, so the run tests the code checked out. Inside the VM:

- ``dummy_hcd num=SLOTS``: one USB host controller with a gadget side per station slot;
- ``python -m hw.gadget run`` (as root): the phones of ``PHONES`` below, each a FunctionFS
  gadget on its slot's UDC, plugged, unplugged and switched between modes on command, and
  Apple's activation and signing servers on 127.0.0.1:443/80, which /etc/hosts names
  albert.apple.com and gs.apple.com; the station's unit trusts this run's CA;
- Debian's udev and usbmuxd, and ``station.service`` with its Pi backend (no OLED or buttons in
  the VM: the station says so and runs on), ``[hub] ports`` from the gadget's UDCs.

Each scenario then drives the phones and reads the station's journal (``slot N [ID] A -> B``)
and records over the serial console, and prints its result and run time.
Standard library only: this runs on the build host.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import boot_test  # noqa: E402  (the console, the image copy and the QEMU command line)
from boot_test import Console, Failed, check  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BUILD = boot_test.BUILD
SLOTS = 6
VENV = "/opt/station/.venv"
GADGET = f"{VENV}/bin/python -m hw.gadget"

PHONES = """\
# image/hil.py: the gadget phones. Serials are the records' keys, one set per scenario.
[[phone]]
name = "clear"
slot = 1
model = "iPhone14,5"
serial = "HILCLEAR0001"

[[phone]]
name = "findmy"
slot = 2
model = "iPhone15,2"
serial = "HILFINDMY002"
find_my = true

# Erased but still Activation Locked (at the Hello screen): Apple answers with its Apple ID form.
[[phone]]
name = "alock"
slot = 3
model = "iPhone13,2"
serial = "HILALOCK0003"
activation_lock = true

[[phone]]
name = "clear2"
slot = 4
model = "iPhone16,1"
serial = "HILCLEAR0004"

[[phone]]
name = "recovery"
slot = 5
model = "iPhone14,7"
serial = "HILRECOV0005"
ecid = 0x1A2B3C4D5E6F71
mode = "recovery"

[[phone]]
name = "dfu"
slot = 6
model = "iPhone12,1"
serial = "HILDFUPH0006"
ecid = 0x1A2B3C4D5E6F72
mode = "dfu"

[[phone]]
name = "denied"
slot = 5
model = "iPhone14,2"
serial = "HILDENIED007"
pairing = "denied"
"""
SHOP_CONFIG = """\
# Set up by image/hil.py: the Pi backend (real usbmuxd, libusb, pymobiledevice3), counter mode.
[hardware]
backend = "pi"

[restore]
mode = "counter"

[hub]
slots = 6
"""
STATION_DROPIN = """\
[Service]
Environment=REQUESTS_CA_BUNDLE=/run/hil/ca.pem
"""


def wheel() -> Path:
    """This tree's station wheel, made as the image's is (image/wheel.sh)."""
    built = subprocess.run([str(HERE / "wheel.sh"), str(BUILD / "hil/wheel")], check=True,
                           stdout=subprocess.PIPE, text=True, env={**os.environ, "BUILD": str(BUILD)})
    return Path(built.stdout.strip())


def hil_disk(work: Path, station_wheel: Path) -> Path:
    """A FAT disk labelled HIL with the wheel, the phones and the station's settings."""
    disk = work / "hil.img"
    disk.unlink(missing_ok=True)
    subprocess.run(["mkfs.vfat", "-C", "-n", "HIL", str(disk), str(64 * 1024)], check=True,
                   capture_output=True)
    with tempfile.TemporaryDirectory() as temp:
        files = {"phones.toml": PHONES, "station.toml": SHOP_CONFIG, "station-hil.conf": STATION_DROPIN}
        for name, text in files.items():
            (Path(temp) / name).write_text(text)
            subprocess.run(["mcopy", "-i", str(disk), str(Path(temp) / name), f"::/{name}"], check=True)
    subprocess.run(["mcopy", "-i", str(disk), str(station_wheel), f"::/{station_wheel.name}"], check=True)
    return disk


class Hil:
    def __init__(self, console: Console) -> None:
        self.console = console

    def setup(self) -> str:
        run = self.console.run
        run("mkdir -p /mnt/hil && mount -o ro LABEL=HIL /mnt/hil")
        run(f"{VENV}/bin/pip install --quiet --no-deps --force-reinstall /mnt/hil/station-*.whl", timeout=300)
        # The checkout's system files too (udev rules, unit, modprobe.d): the image may be older.
        run(f"{VENV}/bin/station install-udev >/dev/null && {VENV}/bin/station install-service >/dev/null")
        run(f"modprobe dummy_hcd num={SLOTS} && modprobe libcomposite && modprobe usb_f_fs")
        run("printf '127.0.0.1 albert.apple.com gs.apple.com\\n' >> /etc/hosts")
        run("mkdir -p /run/systemd/system/station.service.d && "
            "cp /mnt/hil/station-hil.conf /run/systemd/system/station.service.d/ && systemctl daemon-reload")
        run("systemctl stop station")
        run(f"systemd-run --unit hil-gadget --property=Environment=PYTHONUNBUFFERED=1 {GADGET} run --debug "
            "/mnt/hil/phones.toml")
        boot_test.polled(self.console, "test -S /run/hil/control && echo up || true", lambda out: out == "up",
                       120, "the gadget phones did not start")
        ports = run(f"{GADGET} send ports")
        run(f"cp /mnt/hil/station.toml /boot/firmware/station.toml && echo '{ports}' >> /boot/firmware/station.toml")
        run("rm -rf /var/lib/station/records* && systemctl reset-failed station; systemctl start station",
            timeout=300)
        boot_test.wait_service(self.console, {"ActiveState": "active", "SubState": "running"}, 240)
        usbmuxd = run("dpkg-query -W -f '${Version}' usbmuxd")
        return f"usbmuxd {usbmuxd}; [hub] {ports}"

    def send(self, *words: str) -> None:
        self.console.run(f"{GADGET} send {' '.join(words)}")

    def transitions(self, ident: str) -> list[str]:
        """The station's `slot N [ident] A -> B (why)` lines for one phone, oldest first."""
        out = self.console.run(f"journalctl -b -u station -o cat | grep -F '[{ident}]' || true", timeout=120)
        return [line for line in out.splitlines() if " -> " in line]

    def until(self, ident: str, state: str, timeout: float, after: int = 0) -> list[str]:
        """Wait for the phone's port to reach ``state`` (after its first ``after`` transitions)."""
        return boot_test.poll(lambda: self.transitions(ident),
                              lambda lines: any(re.search(rf"-> {state}\b", line) for line in lines[after:]),
                              timeout, f"[{ident}] never reached {state}")


def four_phones_with_mixed_locks(hil: Hil) -> str:
    for name in ("clear", "findmy", "alock", "clear2"):
        hil.send("plug", name)
    ends = {"HILCLEAR0001": "NEEDS_CONFIRM", "HILFINDMY002": "LOCKED", "HILALOCK0003": "LOCKED",
            "HILCLEAR0004": "NEEDS_CONFIRM"}
    seen = []
    for serial, state in ends.items():
        lines = hil.until(serial, state, 240)
        seen.append(lines[-1].split("] ", 1)[1])
    return "; ".join(seen)


def unplugged_and_plugged_again(hil: Hil) -> str:
    before = len(hil.transitions("HILCLEAR0001"))
    hil.send("unplug", "clear")
    hil.until("HILCLEAR0001", "EMPTY", 60, after=before)
    again = len(hil.transitions("HILCLEAR0001"))
    hil.send("plug", "clear")
    lines = hil.until("HILCLEAR0001", "NEEDS_CONFIRM", 240, after=again)
    return " | ".join(line.split("] ", 1)[1] for line in lines[before:])


def usbmuxd_restarted(hil: Hil) -> str:
    counts = {serial: len(hil.transitions(serial)) for serial in ("HILCLEAR0001", "HILCLEAR0004")}
    hil.console.run("systemctl restart usbmuxd")
    time.sleep(20)
    moved = {serial: hil.transitions(serial)[count:] for serial, count in counts.items()}
    if any(moved.values()):
        raise Failed(f"phones changed state when usbmuxd restarted: {moved}")
    lost = hil.console.run("journalctl -b -u station -o cat | grep -c 'usbmuxd connection lost' || true")
    return f"both phones kept their state; the station saw usbmuxd go {lost.strip()} time(s)"


def boot_modes_identified_by_ecid(hil: Hil) -> str:
    """Found on the bus (libusb, not usbmuxd) by their iBoot serial strings: the station labels a
    recovery phone by its serial number (SRNM), a DFU phone, which shows none, by its ECID;
    `station devices` lists both ECIDs."""
    for name in ("clear2", "findmy", "alock"):
        hil.send("unplug", name)
    hil.send("plug", "recovery")
    hil.send("plug", "dfu")
    seen = []
    for ident, mode in (("HILRECOV0005", "RECOVERY"), ("ECID 1A2B3C4D5E6F72", "DFU")):
        last = hil.until(ident, "NEEDS_CONFIRM", 240)[-1]
        if f"({mode}: lock not readable)" not in last:
            raise Failed(f"[{ident}]: {last}")
        seen.append(last.split(": ", 1)[1])
    table = hil.console.run(f"cd /tmp && {VENV}/bin/station devices", timeout=120)
    for ecid, mode in (("1A2B3C4D5E6F71", "recovery"), ("1A2B3C4D5E6F72", "dfu")):
        if not any(mode in line.split() and ecid in line.split() for line in table.splitlines()):
            raise Failed(f"`station devices` does not list the {mode} phone {ecid}:\n{table}")
    return " | ".join(seen) + "; `station devices` lists both ECIDs"


def a_phone_that_refuses_pairing(hil: Hil) -> str:
    hil.send("unplug", "recovery")
    hil.send("plug", "denied")
    lines = hil.until("HILDENIED007", "(NEEDS_TRUST|LOCKED|NEEDS_CONFIRM|REFUSED)", 240)
    return lines[-1].split("] ", 1)[1]


SCENARIOS: list[tuple[str, Callable[[Hil], str]]] = [
    ("4 normal-mode phones at once, mixed lock states", four_phones_with_mixed_locks),
    ("a phone unplugged and plugged again", unplugged_and_plugged_again),
    ("usbmuxd restarted while phones are attached", usbmuxd_restarted),
    ("a recovery-mode and a DFU phone identified by ECID", boot_modes_identified_by_ecid),
    ("a phone whose pairing is refused", a_phone_that_refuses_pairing),
]


def main() -> int:
    image = BUILD / "image/station-amd64.img"
    boot_dir = BUILD / "image/work-amd64/boot"
    if not image.exists() or not list(boot_dir.glob("vmlinuz-*")):
        print("hil: no amd64 image yet: building it (ARCH=amd64 image/build.sh)", flush=True)
        subprocess.run([str(HERE / "build.sh")], check=True, env={**os.environ, "ARCH": "amd64"})
    subprocess.run([str(HERE / "tools.sh"), "test"], check=True)
    boot_test.ARCH = "amd64"
    work = BUILD / "hil"
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    disk = hil_disk(work, wheel())
    copy = boot_test.prepare(image, work)
    log_path = work / "hil.log"
    console = boot_test.boot(copy, disk, boot_dir, log_path)  # the HIL disk where the SSD was
    hil = Hil(console)

    def scenarios() -> list[bool]:
        if not check("set up: gadget phones, Apple on loopback, the station on its Pi backend", hil.setup):
            return [False]
        return [check(name, scenario, hil) for name, scenario in SCENARIOS]

    try:
        results = boot_test.on_the_console(console, started, scenarios)
    finally:
        copy.unlink(missing_ok=True)
    print(f"hil: {sum(results)} of {len(SCENARIOS)} scenarios passed in {time.monotonic() - started:.0f} s "
          f"(console log: {log_path})")
    return 0 if results and all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
