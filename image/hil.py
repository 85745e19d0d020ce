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

Each scenario then drives the phones and reads, over the serial console, the station's journal
(``slot N [ID] A -> B``), its records (``station records list --json``) and the kernel's log,
and prints its result and run time.
Standard library only: this runs on the build host.
"""
from __future__ import annotations

import json
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
SLOTS = 7
VENV = "/opt/station/.venv"
STATION_USER = f"runuser -u station -- {VENV}/bin/station"  # the service's own user, as its files expect
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

# Erased, not locked: restored from the build below, through recovery and restore mode, on a
# port of its own (docs/real-stack.md: usbmuxd hid phones on reused ports after restores).
[[phone]]
name = "restorer"
slot = 7
model = "iPhone14,3"
serial = "HILRESTOR008"

[[ipsw]]
path = "/run/hil/ipsw/iPhone14,3_18.2_22C152_Restore.ipsw"
models = ["iPhone14,3"]
ios = "18.2"
build = "22C152"
"""
SHOP_CONFIG = """\
# Set up by image/hil.py: the Pi backend (real usbmuxd, libusb, pymobiledevice3), counter mode.
[hardware]
backend = "pi"

[restore]
mode = "counter"

[hub]
slots = 7
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
        run(f"{STATION_USER} ipsw add --trust-unlisted /run/hil/ipsw/*.ipsw", timeout=300)
        run(f"cp /mnt/hil/station.toml /boot/firmware/station.toml && echo '{ports}' >> /boot/firmware/station.toml")
        run("rm -rf /var/lib/station/records* && systemctl reset-failed station; systemctl start station",
            timeout=300)
        boot_test.wait_service(self.console, {"ActiveState": "active", "SubState": "running"}, 240)
        pipes = run("journalctl -b -u station -o cat | grep -F 'lgd-nfy' || true")
        if pipes:  # lgpio's pipes in the working directory (tests/test_systemd.py)
            raise Failed(f"the buttons' pin factory could not start: {pipes.splitlines()[0]}")
        usbmuxd = run("dpkg-query -W -f '${Version}' usbmuxd")
        return f"usbmuxd {usbmuxd}; [hub] {ports}"

    def send(self, *words: str) -> None:
        self.console.run(f"{GADGET} send {' '.join(words)}")

    def transitions(self, ident: str) -> list[str]:
        """The station's `slot N [ident] A -> B (why)` lines for one phone, oldest first."""
        out = self.console.run(f"journalctl -b -u station -o cat | grep -F '[{ident}]' || true", timeout=120)
        return [line for line in out.splitlines() if " -> " in line]

    def sessions(self, phone: str) -> list[dict]:
        """The station's records of one phone, by serial number or ECID, oldest first."""
        out = self.console.run(f"{STATION_USER} records list --json", timeout=120)
        lines = out.splitlines()  # the console's own lines around the array
        start = lines.index("[")
        rows = json.loads("\n".join(lines[start:lines.index("]", start) + 1]))
        return [row for row in rows if phone in (row.get("serial"), row.get("ecid"))]

    def record(self, phone: str, which: int = -1, **want: object) -> dict:
        """The phone's record (``which``: its latest), once it holds ``want`` (the journal's line
        can come a moment before the record's write); Failed saying what it holds instead."""
        def matches(rows: list[dict]) -> bool:
            return len(rows) >= abs(which) and all(rows[which].get(key) == value for key, value in want.items())

        rows = boot_test.poll(lambda: self.sessions(phone), matches, 30, f"no record of {phone} with {want}")
        return rows[which]

    def kernel_devices(self, bus: str, since: str) -> list[int]:
        """The device numbers the kernel gave on ``bus`` ("3-1") since ``since`` (journalctl time)."""
        out = self.console.run(f"journalctl -k -o cat --since '{since}' | grep -F 'usb {bus}: new ' || true")
        return [int(number) for number in re.findall(r"device number (\d+)", out)]

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
    for slot, serial, method, result in ((1, "HILCLEAR0001", "activation-server", "clear"),
                                         (2, "HILFINDMY002", "fmip", "locked"),
                                         (3, "HILALOCK0003", "activation-server", "locked"),
                                         (4, "HILCLEAR0004", "activation-server", "clear")):
        hil.record(serial, slot=slot, state=ends[serial].lower(), lock_method=method, lock_result=result)
    return "; ".join(seen) + "; each has its record"


def unplugged_and_plugged_again(hil: Hil) -> str:
    before = len(hil.transitions("HILCLEAR0001"))
    hil.send("unplug", "clear")
    hil.until("HILCLEAR0001", "EMPTY", 60, after=before)
    again = len(hil.transitions("HILCLEAR0001"))
    hil.send("plug", "clear")
    lines = hil.until("HILCLEAR0001", "NEEDS_CONFIRM", 240, after=again)
    hil.record("HILCLEAR0001", which=-2, outcome="detached", reason="detached in needs_confirm")
    hil.record("HILCLEAR0001", state="needs_confirm", lock_result="clear", outcome=None)
    return " | ".join(line.split("] ", 1)[1] for line in lines[before:]) + "; one record closed, a new one open"


def usbmuxd_restarted(hil: Hil) -> str:
    serials = ("HILCLEAR0001", "HILCLEAR0004")
    counts = {serial: len(hil.transitions(serial)) for serial in serials}
    latest = {serial: hil.sessions(serial)[-1]["id"] for serial in serials}
    since = hil.console.run("date '+%Y-%m-%d %H:%M:%S'")
    hil.console.run("systemctl restart usbmuxd")
    time.sleep(20)
    moved = {serial: hil.transitions(serial)[count:] for serial, count in counts.items()}
    if any(moved.values()):
        # What usbmuxd said after its restart: whether its preflight of each phone ended, and how
        # (docs/real-stack.md items 12 and 13).
        said = hil.console.run(f"journalctl -u usbmuxd --since '{since.strip()}' -o cat | tail -n 20")
        # And the phones' side of it: how their TLS sessions with usbmuxd ended (docs/real-stack.md item 14).
        phones = hil.console.run(f"journalctl -u hil-gadget --since '{since.strip()}' -o cat "
                                 "| grep -iE 'ssl|tls|connection ended' | tail -n 20 || true")
        raise Failed(f"phones changed state when usbmuxd restarted: {moved}; usbmuxd after the restart:\n{said}\n"
                     f"the gadget phones after the restart:\n{phones}")
    for serial in serials:  # the same record still the latest: the restart opened none
        hil.record(serial, id=latest[serial], state="needs_confirm", outcome=None)
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
    hil.record("HILRECOV0005", slot=5, ecid="1A2B3C4D5E6F71", state="needs_confirm", lock_method="none",
               lock_result="unknown")
    hil.record("1A2B3C4D5E6F72", slot=6, serial="", state="needs_confirm", lock_result="unknown")
    table = hil.console.run(f"cd /tmp && {VENV}/bin/station devices", timeout=120)
    for ecid, mode in (("1A2B3C4D5E6F71", "recovery"), ("1A2B3C4D5E6F72", "dfu")):
        if not any(mode in line.split() and ecid in line.split() for line in table.splitlines()):
            raise Failed(f"`station devices` does not list the {mode} phone {ecid}:\n{table}")
    return " | ".join(seen) + "; `station devices` lists both ECIDs"


def a_phone_that_refuses_pairing(hil: Hil) -> str:
    hil.send("unplug", "recovery")
    hil.send("plug", "denied")
    lines = hil.until("HILDENIED007", "(NEEDS_TRUST|LOCKED|NEEDS_CONFIRM|REFUSED)", 240)
    hil.record("HILDENIED007", slot=5, state="needs_trust", lock_result="unknown")
    return lines[-1].split("] ", 1)[1] + "; its record says needs_trust"


def a_phone_restored_through_its_boot_modes(hil: Hil) -> str:
    """Line mode: an erased, unlocked phone restores by itself, as pymobiledevice3's Restore moves
    it normal -> recovery -> restore mode -> normal, a new USB device each time on the same port;
    its slot holds throughout, and it ends with a record and an erasure certificate."""
    for name in ("clear", "dfu", "denied"):
        hil.send("unplug", name)
    hil.console.run("sed -i 's/^mode = \"counter\"/mode = \"line\"/' /boot/firmware/station.toml && "
                    "systemctl restart station", timeout=300)
    boot_test.wait_service(hil.console, {"ActiveState": "active", "SubState": "running"}, 240)
    since = hil.console.run("date '+%Y-%m-%d %H:%M:%S'")
    bus = re.search(r'"(\d+-1)" = 7\b', hil.console.run("grep ports /boot/firmware/station.toml")).group(1)
    hil.send("plug", "restorer")
    try:
        lines = hil.until("HILRESTOR008", "DONE", 600)
    except Failed as error:
        hidden = hil.console.run("journalctl -b -u usbmuxd -o cat | grep -c 'lockdown error -8' || true")
        # Where each attempt stopped, and what usbmuxd and the kernel saw of the phone meanwhile.
        station = hil.console.run(f"journalctl -u station --since '{since.strip()}' -o cat "
                                  "| grep -vE 'lgd-nfy' | grep -iE 'slot ?7|worker|restore|usb' | tail -n 40")
        usbmuxd = hil.console.run(f"journalctl -u usbmuxd --since '{since.strip()}' -o cat | tail -n 30")
        kernel = hil.console.run(f"journalctl -k -o cat --since '{since.strip()}' | grep -F 'usb {bus}' | tail -n 20")
        raise Failed(f"{error}; usbmuxd's preflight failed {hidden.strip()} time(s) (docs/real-stack.md)\n"
                     f"the station:\n{station}\nusbmuxd:\n{usbmuxd}\nthe kernel on {bus}:\n{kernel}") from None
    if any("-> EMPTY" in line for line in lines):
        raise Failed(f"the slot let go of the phone during its restore: {lines}")
    numbers = hil.kernel_devices(bus, since)
    if len(set(numbers)) < 4:
        raise Failed(f"expected 4 enumerations (normal, recovery, restore, normal) on {bus}, saw {numbers}")
    row = hil.record("HILRESTOR008", slot=7, state="done", result="done", lock_result="clear",
                     verify_result="clear", ipsw_build="22C152", ios_after="18.2", attempts=1)
    certificate = hil.console.run(f"{STATION_USER} cert HILRESTOR008 | grep -c HILRESTOR008 || true")
    if certificate.strip() in ("", "0"):
        raise Failed("`station cert HILRESTOR008` has no certificate naming the phone")
    return (f"{' | '.join(line.split('] ', 1)[1] for line in lines)}; USB device numbers {numbers} on {bus}; "
            f"record #{row['id']} done, certificate issued")


SCENARIOS: list[tuple[str, Callable[[Hil], str]]] = [
    ("4 normal-mode phones at once, mixed lock states", four_phones_with_mixed_locks),
    ("a phone unplugged and plugged again", unplugged_and_plugged_again),
    ("usbmuxd restarted while phones are attached", usbmuxd_restarted),
    ("a recovery-mode and a DFU phone identified by ECID", boot_modes_identified_by_ecid),
    ("a phone whose pairing is refused", a_phone_that_refuses_pairing),
    ("a phone restored: normal -> recovery -> restore mode -> normal, the slot holding",
     a_phone_restored_through_its_boot_modes),
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
