"""`make image-test`'s boot test: the built SD-card image boots in QEMU and runs the station.

    python3 image/boot_test.py [IMAGE]      (default build/image/station-$ARCH.img; root)

ARCH=amd64 boots the same appliance built for a PC (``ARCH=amd64 image/build.sh``) in
``qemu-system-x86_64``, the machine the hardware-in-the-loop tests use.

A copy of the image boots in ``qemu-system-aarch64 -M virt`` (TCG: there is no Raspberry Pi
machine with USB in this QEMU, and no usable KVM here; ../shared/IMAGE-NOTES.md) with the
kernel and initrd the build left beside it. The copy is set up the way a shop would set up
a card, plus a root login on the serial console for this test only:

- the FAT partition's station.toml says ``backend = "sim"`` (simulated phones and buttons),
  and carries the two scenarios below;
- the copy is 512 MiB larger than the image, as a card is larger than the image written to it.

Over the serial console it then checks, printing each result:

1. the first boot grew the root filesystem to the whole disk;
2. ``station.service`` is active (running) as the ``station`` user, and has sent READY
   (a Type=notify unit is "activating" until it does) and a STATUS line; the station made
   its key; gpiozero's lgpio pin library imports; ``systemd-analyze security`` is printed;
   a second disk labelled ``station-ipsw`` (the USB SSD) is the IPSW cache, the station's;
3. the watchdog: the station plays a scenario whose event loop stalls; systemd must kill it
   (WatchdogSec=) and start it again (Restart=on-failure);
4. the graceful stop: the station plays a scenario with a restore running; ``systemctl stop``
   must wait for it to finish (the phone ends DONE) and the station must then exit;
5. a typo in the FAT partition's station.toml: the station runs on, on the last good
   settings, saying BAD CONFIG (its status line) and the whole error (the journal, -p err).

Everything the VM prints goes to build/image/boot-test.log. Exit 0 when every check passes.
Standard library only: this runs on the build host, outside the station's venv.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUILD = Path(os.environ.get("BUILD", HERE.parent / "build"))
FIRMWARE_OFFSET = 1 << 20  # image/assemble.sh: the FAT partition starts at 1 MiB
FIRMWARE_MB = 256
PROMPT = "root@station:~# "
ARCH = os.environ.get("ARCH", "arm64")
# Per architecture: the QEMU machine (TCG: no usable KVM here) and the serial console.
MACHINES = {
    "arm64": (["qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a72"], "ttyAMA0"),
    "amd64": (["qemu-system-x86_64", "-M", "q35", "-cpu", "max"], "ttyS0"),
}
GROW_MB = 512
ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # bash's bracketed-paste switches and the like

STALL_SCENARIO = """\
# The boot test's hung station: the event loop blocks at 5 s for 10 minutes.
[scenario]
description = "the event loop stalls (a hung station)"
engine = "timed"
stall_at = 5
stall_s = 600
"""
RESTORE_SCENARIO = HERE.parent / "config/sim/one-restore.toml"  # a restore running at `systemctl stop`
SHOP_CONFIG = """\
# Set up by image/boot_test.py, as a shop edits this file: simulated hardware.
[hardware]
backend = "sim"
"""
AUTOLOGIN = """\
# image/boot_test.py only: a root shell on the serial console of this test copy.
[Service]
ExecStart=
ExecStart=-/sbin/agetty -o '-p -f -- \\\\u' --noclear --autologin root --keep-baud 115200,57600,38400,9600 - $TERM
"""


class Console:
    """The VM's serial console: everything it prints is logged; commands wait for a marker."""

    def __init__(self, command: list[str], log_path: Path) -> None:
        self.log = open(log_path, "w", buffering=1)
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT)
        self.text = ""
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while chunk := self.process.stdout.read1(4096):
            decoded = ESCAPES.sub("", chunk.decode("utf-8", "replace").replace("\r", ""))
            with self.lock:
                self.text += decoded
            self.log.write(decoded)

    def wait_for(self, pattern: str, timeout: float, start: int = 0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                match = re.compile(pattern).search(self.text, start)
            if match:
                return match
            if self.process.poll() is not None:
                raise Failed(f"QEMU exited ({self.process.returncode}) waiting for {pattern!r}")
            time.sleep(0.2)
        raise Failed(f"no {pattern!r} within {timeout:.0f} s (see {self.log.name})")

    def run(self, command: str, timeout: float = 60.0) -> str:
        """Run a shell command in the VM; its output (the exit status is checked)."""
        marker = f"__done_{time.monotonic_ns()}__"
        with self.lock:
            start = len(self.text)
        self.process.stdin.write(f"{command}; echo {marker}$?\n".encode())
        self.process.stdin.flush()
        match = self.wait_for(rf"{marker}(\d+)\n", timeout, start)  # the echoed line has "$?"
        output = self.text[start:match.start()]
        output = output.split("\n", 1)[1] if "\n" in output else ""  # drop the echoed command
        if match[1] != "0":
            raise Failed(f"`{command}` exited {match[1]}:\n{output}")
        return output.strip()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.log.close()


class Failed(Exception):
    pass


def prepare(image: Path, work: Path) -> Path:
    """The test copy: larger, simulated hardware on its FAT partition, a serial root login."""
    copy = work / "boot-test.img"
    subprocess.run(["cp", "--sparse=always", str(image), str(copy)], check=True)
    with open(copy, "r+b") as file:
        file.truncate(copy.stat().st_size + (GROW_MB << 20))
    fat = f"{copy}@@{FIRMWARE_OFFSET}"
    with tempfile.TemporaryDirectory() as temp:
        files = {"station.toml": SHOP_CONFIG, "stall.toml": STALL_SCENARIO,
                 "restore.toml": RESTORE_SCENARIO.read_text()}
        for name, text in files.items():
            (Path(temp) / name).write_text(text)
        subprocess.run(["mcopy", "-o", "-i", fat, str(Path(temp) / "station.toml"), "::/station.toml"],
                       check=True)
        subprocess.run(["mmd", "-i", fat, "::/test"], check=True)
        for name in ("stall.toml", "restore.toml"):
            subprocess.run(["mcopy", "-i", fat, str(Path(temp) / name), f"::/test/{name}"], check=True)
        root = f"{copy}?offset={(1 + FIRMWARE_MB) << 20}"
        dropin = Path(temp) / "autologin.conf"
        dropin.write_text(AUTOLOGIN)
        unit_dir = f"/etc/systemd/system/serial-getty@{MACHINES[ARCH][1]}.service.d"
        script = Path(temp) / "debugfs"
        script.write_text(f"mkdir {unit_dir}\nwrite {dropin} {unit_dir}/autologin.conf\n"
                          f"sif {unit_dir}/autologin.conf mode 0100644\n")
        subprocess.run(["debugfs", "-w", "-f", str(script), root], check=True, capture_output=True)
    return copy


def ipsw_disk(work: Path) -> Path:
    """A small ext4 disk labelled as the IPSW cache SSD, plugged in from the start."""
    disk = work / "boot-test-ipsw.img"
    disk.unlink(missing_ok=True)
    subprocess.run(["mkfs.ext4", "-q", "-L", "station-ipsw", str(disk), "64M"], check=True)
    return disk


def boot(copy: Path, ipsw: Path, boot_dir: Path, log_path: Path) -> Console:
    kernel = sorted(boot_dir.glob("vmlinuz-*"))[-1]
    initrd = sorted(boot_dir.glob("initrd.img-*"))[-1]
    machine, console = MACHINES[ARCH]
    command = [*machine, "-smp", "2", "-m", "2048",
               "-accel", "tcg", "-display", "none", "-serial", "stdio", "-monitor", "none",
               "-kernel", str(kernel), "-initrd", str(initrd),
               "-append", f"console={console} root=LABEL=station-root rw",
               "-drive", f"file={copy},if=virtio,format=raw",
               "-drive", f"file={ipsw},if=virtio,format=raw"]
    return Console(command, log_path)


def service(console: Console) -> dict[str, str]:
    out = console.run("systemctl show station -p ActiveState -p SubState -p NRestarts "
                      "-p StatusText -p MainPID -p Result")
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def wait_service(console: Console, want: dict[str, str], timeout: float) -> dict[str, str]:
    return poll(lambda: service(console), lambda state: all(state.get(k) == v for k, v in want.items()),
                timeout, f"station.service is not {want}")


def play(console: Console, scenario: str, speed: float) -> None:
    """Restart the station under systemd on a scenario (a runtime drop-in, gone at reboot)."""
    console.run("mkdir -p /run/systemd/system/station.service.d && printf '%s\\n' '[Service]' "
                "'ExecStart=' 'ExecStart=/opt/station/.venv/bin/station run "
                f"--sim /boot/firmware/test/{scenario} --speed {speed}' "
                "> /run/systemd/system/station.service.d/test.conf && systemctl daemon-reload")
    console.run("systemctl reset-failed station; systemctl restart station", timeout=300)


def poll(probe, done, timeout: float, why: str):
    """``probe()`` every 3 s until ``done`` says yes; its last answer, or Failed saying why."""
    deadline = time.monotonic() + timeout
    while not done(out := probe()):
        if time.monotonic() > deadline:
            raise Failed(f"{why} within {timeout:.0f} s (last: {out!r})")
        time.sleep(3)
    return out


def polled(console: Console, command: str, done, timeout: float, why: str) -> str:
    """A shell command in the VM, run until its output is what ``done`` wants."""
    return poll(lambda: console.run(command), done, timeout, why)


def check(name: str, test, *args) -> bool:
    started = time.monotonic()
    try:
        detail = test(*args)
    except Failed as error:
        print(f"FAIL {name}: {error}", flush=True)
        return False
    print(f"ok   {name} ({time.monotonic() - started:.0f} s){': ' + detail if detail else ''}", flush=True)
    return True


def first_boot_grew_the_root(console: Console, image: Path) -> str:
    console.run("systemctl is-active station-firstboot.service")
    size = int(console.run("df --output=size -B1M / | tail -1"))
    image_mb = image.stat().st_size >> 20
    if size < image_mb - FIRMWARE_MB:  # the root partition alone was image_mb - 257 MiB
        raise Failed(f"root filesystem is {size} MiB on a {image_mb + GROW_MB} MiB disk")
    return f"root filesystem {size} MiB on a disk of {image_mb + GROW_MB} MiB (image {image_mb} MiB)"


def station_ready(console: Console) -> str:
    state = wait_service(console, {"ActiveState": "active", "SubState": "running"}, 240)
    user = console.run(f"stat -c %U /proc/{state['MainPID']}")
    if user != "station":
        raise Failed(f"the station runs as {user!r}, not station")
    # A Type=notify unit stays "activating" until READY=1 arrives: running means it came.
    notify = console.run("systemctl show station -p Type -p WatchdogUSec").replace("\n", ", ")
    if "Type=notify" not in notify or not state["StatusText"]:
        raise Failed(f"{notify}, STATUS={state['StatusText']!r}")
    # The station's key, made by the station itself on its first start, readable by it alone.
    key = console.run("stat -c '%U %a' /var/lib/station/station_key.pem")
    if key != "station 600":
        raise Failed(f"station_key.pem: {key!r}, not 'station 600'")
    # gpiozero's pin library for the Pi's buttons (no GPIO chip in QEMU's virt: import only).
    console.run("/opt/station/.venv/bin/python -c 'import lgpio, gpiozero.pins.lgpio'")
    exposure = console.run("systemd-analyze security station | tail -1 | tr -cd ' -~'").strip()
    return f"active (running) as station; {notify}; STATUS={state['StatusText']!r}; " \
           f"systemd-analyze security: {exposure}"


def the_ipsw_ssd_is_the_cache(console: Console) -> str:
    """A disk labelled station-ipsw is mounted on the IPSW cache and belongs to the station."""
    mount = polled(console, "findmnt -n -o SOURCE,FSTYPE /var/lib/station/ipsw || true",
                 lambda out: "ext4" in out, 90, "no disk mounted on /var/lib/station/ipsw")
    owner = polled(console, "stat -c '%U %a' /var/lib/station/ipsw", lambda out: out == "station 700", 30,
                 "the IPSW disk was not given to the station")
    return f"/var/lib/station/ipsw is {mount}, {owner}"


def watchdog_restarts_a_hung_station(console: Console) -> str:
    before = int(service(console)["NRestarts"])
    play(console, "stall.toml", 1)
    polled(console, "journalctl -b -u station -o cat | grep -c 'Watchdog timeout' || true",
         lambda out: out.strip() not in ("", "0"), 240, "no watchdog timeout")
    state = wait_service(console, {"ActiveState": "active", "SubState": "running"}, 240)
    restarts = int(state["NRestarts"])
    if restarts <= before:
        raise Failed(f"NRestarts {restarts} (was {before}): systemd did not restart the station")
    lines = console.run("journalctl -b -u station -o cat | grep -E 'Watchdog timeout|stalls|Scheduled restart' "
                        "| head -4")
    return f"NRestarts {before} -> {restarts}; " + " | ".join(lines.splitlines())


def stop_waits_for_the_restore(console: Console) -> str:
    hung = time.monotonic()  # the station from the watchdog check is stalled: SIGTERM unheard
    play(console, "restore.toml", 10)
    hung_stop = time.monotonic() - hung
    polled(console, "journalctl -b -u station -o cat -n 300 | grep 'slot 1' | tail -1 || true",
         lambda out: "-> RESTORING" in out, 300, "slot 1 did not start restoring")
    started = time.monotonic()
    console.run("systemctl stop station", timeout=900)
    waited = time.monotonic() - started
    log = console.run("journalctl -b -u station -o cat -n 300 | grep -E 'slot 1|STOPPING|stopping' | tail -6")
    if "-> DONE" not in log:
        raise Failed(f"the restore did not finish before the station stopped:\n{log}")
    state = service(console)
    if state["ActiveState"] not in ("inactive", "failed"):
        raise Failed(f"station.service is {state['ActiveState']} after systemctl stop")
    return (f"a hung station was stopped (SIGKILL) in {hung_stop:.0f} s; systemctl stop of a live one "
            f"waited {waited:.0f} s for its restore; " + " | ".join(log.splitlines()[-3:]))


def a_bad_boot_config_keeps_the_last_good_one(console: Console) -> str:
    """A shop's typo on the FAT partition: the station runs on, on the last good settings."""
    console.run("rm -f /run/systemd/system/station.service.d/test.conf && systemctl daemon-reload")
    console.run("cp /boot/firmware/station.toml /root/station.toml.good && "
                "printf '[restore]\\nmode = \"lines\"\\n' >> /boot/firmware/station.toml")
    try:
        console.run("systemctl reset-failed station; systemctl restart station", timeout=300)
        state = wait_service(console, {"ActiveState": "active", "SubState": "running"}, 240)
        if "BAD CONFIG" not in state["StatusText"]:
            raise Failed(f"STATUS={state['StatusText']!r} does not say BAD CONFIG")
        line = console.run("journalctl -b -u station -o cat -p err | grep -m1 'last good copy'")
        backend = console.run("journalctl -b -u station -o cat -n 200 | grep -c 'NO LIBUSB' || true")
        if backend.strip() != "0":
            raise Failed("the station left the last good settings (backend sim) for the base config")
    finally:
        console.run("cp /root/station.toml.good /boot/firmware/station.toml")
    return f"STATUS={state['StatusText']!r}; journal (-p err): {line}"


def on_the_console(console: Console, started: float, checks: Callable[[], list[bool]]) -> list[bool]:
    """Wait for the VM's shell, make its output plain, run ``checks``, then stop the VM. A
    failure outside any one check (no shell, QEMU gone) fails the run."""
    try:
        console.wait_for(re.escape(PROMPT), 300)
        print(f"ok   booted to a shell in {time.monotonic() - started:.0f} s", flush=True)
        console.run("export SYSTEMD_PAGER= SYSTEMD_COLORS=0 TERM=dumb; stty cols 500")
        return checks()
    except Failed as error:
        print(f"FAIL {error}", flush=True)
        return [False]
    finally:
        console.close()


def main(argv: list[str]) -> int:
    if ARCH not in MACHINES:
        print(f"boot test: ARCH={ARCH}: must be one of {', '.join(MACHINES)}", file=sys.stderr)
        return 2
    image = Path(argv[1]) if len(argv) > 1 else BUILD / f"image/station-{ARCH}.img"
    boot_dir = BUILD / f"image/work-{ARCH}/boot"
    if not image.exists() or not list(boot_dir.glob("vmlinuz-*")):
        print(f"boot test: no {image} (or its kernel in {boot_dir}): run `make image` first", file=sys.stderr)
        return 2
    subprocess.run([str(HERE / "tools.sh"), "test"], check=True)
    work = image.parent
    copy = prepare(image, work)
    log_path = work / "boot-test.log"
    started = time.monotonic()
    ipsw = ipsw_disk(work)
    console = boot(copy, ipsw, boot_dir, log_path)
    try:
        results = on_the_console(console, started, lambda: [
            check("first boot grew the root filesystem", first_boot_grew_the_root, console, image),
            check("station.service is Ready", station_ready, console),
            check("a USB SSD labelled station-ipsw holds the IPSW cache", the_ipsw_ssd_is_the_cache, console),
            check("the watchdog restarts a hung station", watchdog_restarts_a_hung_station, console),
            check("systemctl stop waits for a running restore", stop_waits_for_the_restore, console),
            check("a bad boot-partition config keeps the last good one",
                  a_bad_boot_config_keeps_the_last_good_one, console)])
    finally:
        copy.unlink(missing_ok=True)
        ipsw.unlink(missing_ok=True)
    print(f"boot test: {sum(results)} of {len(results)} passed in {time.monotonic() - started:.0f} s "
          f"(console log: {log_path})")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
