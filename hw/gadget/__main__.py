"""Gadget phones: simulated iPhones on a Linux kernel's USB bus (dummy_hcd + FunctionFS), as root.

    python -m hw.gadget run PHONES.toml     the phones, Apple's servers, a control socket
    python -m hw.gadget send COMMAND...     one command to a running ``run``; prints its answer

``PHONES.toml`` lists the phones (``[[phone]]`` with name, slot and hw.sim.SimPhone's facts:
model, serial, ecid, mode, ios, activated, activation_lock, find_my, pairing); none is plugged
in until told. ``[[ipsw]]`` (path, models, ios, build) is a build Apple signs: written to
``path`` (``hw.sim.firmware.build_ipsw``) unless it is there, for the station's ``ipsw add``,
and what the phones of those models' ASR must receive when they restore from it.
Commands: ``plug NAME``, ``unplug NAME``, ``mode NAME normal|recovery|dfu`` (the phone reboots
into it), ``ports`` (the ``[hub] ports`` table for the station), ``quit``.
Slot N is the Nth dummy UDC; ``modprobe dummy_hcd num=N`` makes N of them, each its own bus.
``kill -USR1`` on a ``run`` logs every thread's stack (where a stuck phone is waiting).
"""
from __future__ import annotations

import argparse
import faulthandler
import logging
import signal
import socket
import sys
import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hw.sim import Mode, Pairing, SimPhone, phone_named
from hw.sim.world import SimWorld

if TYPE_CHECKING:
    from hw.sim.tss_server import TssServer

log = logging.getLogger("hw.gadget")

CONTROL = Path("/run/hil/control")
PKI = Path("/run/hil")
MOUNTS = Path("/run/hil/ffs")
UDC_CLASS = Path("/sys/class/udc")
PHONE_KEYS = {"name", "slot", "model", "serial", "ecid", "mode", "ios", "activated", "activation_lock",
              "find_my", "pairing"}
IPSW_KEYS = {"path", "models", "ios", "build"}


class BadPhones(ValueError):
    pass


@dataclass(frozen=True)
class Build:
    path: Path
    models: tuple[str, ...]
    ios: str
    build: str


@dataclass(frozen=True)
class Bench:
    phones: dict[str, tuple[int, SimPhone]]
    builds: tuple[Build, ...]


def load_bench(path: Path) -> Bench:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise BadPhones(f"{path}: {error}") from None
    phones: dict[str, tuple[int, SimPhone]] = {}
    for number, raw in enumerate(data.get("phone", []), 1):
        _check(raw, f"{path}: [[phone]] #{number}", PHONE_KEYS, {"name", "slot"})
        phones[raw["name"]] = (int(raw["slot"]), _phone(raw))
    builds = []
    for number, raw in enumerate(data.get("ipsw", []), 1):
        _check(raw, f"{path}: [[ipsw]] #{number}", IPSW_KEYS, IPSW_KEYS)
        builds.append(Build(Path(raw["path"]), tuple(raw["models"]), raw["ios"], raw["build"]))
    return Bench(phones, tuple(builds))


def _check(raw: dict[str, Any], where: str, known: set[str], needed: set[str]) -> None:
    unknown = set(raw) - known
    if unknown:
        raise BadPhones(f"{where}: unknown key {sorted(unknown)[0]!r}")
    if not needed <= set(raw):
        raise BadPhones(f"{where}: needs {', '.join(sorted(needed))}")


def _phone(raw: dict[str, Any]) -> SimPhone:
    return phone_named(raw["name"], ecid=raw.get("ecid"), serial=raw.get("serial", ""),
                       activated=raw.get("activated", False), find_my=raw.get("find_my", False),
                       product_type=raw.get("model", "iPhone14,5"), ios_version=raw.get("ios", "17.5.1"),
                       mode=Mode(raw.get("mode", "normal")), activation_lock=raw.get("activation_lock", False),
                       pairing=Pairing(raw.get("pairing", "auto")), bus=1, port_path=(int(raw["slot"]),))


def udcs() -> dict[tuple[int, ...], str]:
    """Slot N -> the Nth dummy UDC (dummy_udc.N-1)."""
    names = sorted((p.name for p in UDC_CLASS.glob("dummy_udc.*")), key=lambda n: int(n.rsplit(".", 1)[1]))
    return {(number,): name for number, name in enumerate(names, 1)}


def port_table(slots: dict[tuple[int, ...], str]) -> str:
    """Each UDC's port as the host's sysfs names it: dummy_hcd.K's root hub is its own bus, port 1."""
    rows = []
    for (slot,), udc in sorted(slots.items()):
        host = Path("/sys/devices/platform") / udc.replace("dummy_udc", "dummy_hcd")
        bus = next(host.glob("usb*")).name.removeprefix("usb")
        rows.append(f'"{bus}-1" = {slot}')
    return "ports = { " + ", ".join(rows) + " }"


class Controller:
    def __init__(self, world: SimWorld, phones: dict[str, tuple[int, SimPhone]],
                 slots: dict[tuple[int, ...], str]) -> None:
        self.world = world
        self.phones = phones
        self.slots = slots
        self.done = threading.Event()

    def handle(self, line: str) -> str:
        words = line.split()
        if not words:
            return "error: empty command"
        command, args = words[0], words[1:]
        try:
            if command == "ports":
                return port_table(self.slots)
            if command == "quit":
                self.done.set()
                return "ok"
            phone = self.phones[args[0]][1]
            if command == "plug":
                self.world.attach(phone)
            elif command == "unplug":
                self.world.detach(phone)
            elif command == "mode":
                self.world.reboot(phone, Mode(args[1]), delay=1.0)
            else:
                return f"error: unknown command {command!r}"
        except (IndexError, KeyError, ValueError) as error:
            return f"error: {line!r}: {error}"
        return "ok"


def serve(controller: Controller, path: Path) -> None:
    path.unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()
    server.settimeout(0.5)
    while not controller.done.is_set():
        try:
            connection, _ = server.accept()
        except TimeoutError:
            continue
        with connection:
            line = connection.makefile().readline()
            log.info("command: %s", line.strip())
            connection.sendall((controller.handle(line) + "\n").encode())
    server.close()
    path.unlink(missing_ok=True)


def run(phones_file: Path) -> int:
    # Here, not at the top: `send` runs once per command in a TCG VM, and these take seconds there.
    from hw.gadget.apple import apple_servers
    from hw.gadget.bus import KernelBus

    bench = load_bench(phones_file)
    phones = bench.phones
    slots = udcs()
    if not slots:
        print("gadget: no dummy UDC: modprobe dummy_hcd num=N (and libcomposite, usb_f_fs)", file=sys.stderr)
        return 2
    missing = [name for name, (slot, _) in phones.items() if (slot,) not in slots]
    if missing:
        print(f"gadget: phone {missing[0]} has a slot with no UDC ({len(slots)} UDCs)", file=sys.stderr)
        return 2
    # `kill -USR1`: every thread's stack, to the process's own stderr (the journal under systemd).
    faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True)
    every_phone = [phone for _, phone in phones.values()]
    world = SimWorld(every_phone, reboot_seconds=1.0)
    bus = KernelBus(world, slots, MOUNTS)
    activation, signing = apple_servers(world, PKI)
    for build in bench.builds:
        serve_build(build, signing, every_phone)
    activation.start()
    signing.start()
    bus.start()
    log.info("gadget phones ready: %d UDCs, phones %s", len(slots), ", ".join(phones))
    try:
        serve(Controller(world, phones, slots), CONTROL)
    finally:
        for phone in every_phone:
            world.detach(phone)
        bus.stop()
        world.close()
        activation.stop()
        signing.stop()
    return 0


def serve_build(build: Build, signing: "TssServer", phones: list[SimPhone]) -> None:
    from hw.sim.firmware import build_ipsw, os_image_of

    if not build.path.exists():
        build.path.parent.mkdir(parents=True, exist_ok=True)
        build_ipsw(build.path, build.models, build.ios, build.build)
    signing.add_ipsw(build.path)
    for phone in phones:
        if phone.product_type in build.models:
            phone.os_image = os_image_of(build.path, phone.hardware_model)
    log.info("IPSW %s for %s at %s", build.build, ", ".join(build.models), build.path)


def send(words: list[str]) -> int:
    try:
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(CONTROL))
            client.sendall((" ".join(words) + "\n").encode())
            answer = client.makefile().readline().strip()
    except OSError as error:
        print(f"gadget: no gadget phones running at {CONTROL}: {error.strerror or error}", file=sys.stderr)
        return 2
    print(answer)
    return 1 if answer.startswith("error") else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hw.gadget", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run")
    run_parser.add_argument("phones", type=Path)
    run_parser.add_argument("--debug", action="store_true", help="log every USB event and connection")
    commands.add_parser("send").add_argument("words", nargs="+")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if getattr(args, "debug", False) else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run(args.phones) if args.command == "run" else send(args.words)
    except BadPhones as error:
        print(f"gadget: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
