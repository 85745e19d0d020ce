"""sd_notify against a real AF_UNIX datagram socket, the unit file, the udev rules."""
from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from station import systemd
from station.machine import Port, State
from station.snapshot import Snapshot
from station.systemd import Notifier, status_line

ROOT = Path(__file__).resolve().parents[1]


class Listener:
    """What systemd would read on $NOTIFY_SOCKET: each datagram with the time it came."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.05)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._done.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().split("\n"))
            self.messages.append((time.monotonic(), fields))

    def close(self) -> None:
        self._done.set()
        self._thread.join()
        self.sock.close()

    def times(self, key: str) -> list[float]:
        return [at for at, fields in self.messages if key in fields]

    def values(self, key: str) -> list[str]:
        return [fields[key] for _, fields in self.messages if key in fields]


@pytest.fixture
def listener():
    # AF_UNIX paths are limited to 108 bytes: pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="notify-") as directory:
        path = os.path.join(directory, "notify")
        receiver = Listener(path)
        try:
            yield path, receiver
        finally:
            receiver.close()


def snapshot(*states: State, faults: tuple[str, ...] = ()) -> Snapshot:
    return Snapshot(ports=tuple(Port(slot=i + 1, state=s) for i, s in enumerate(states)), faults=faults)


def settle(receiver: Listener, count: int = 1) -> None:
    deadline = time.monotonic() + 2
    while len(receiver.messages) < count and time.monotonic() < deadline:
        time.sleep(0.01)


def test_the_status_line_counts_ports_by_state_and_names_the_faults():
    picture = snapshot(State.RESTORING, State.DONE, State.LOCKED, State.EMPTY, faults=("NO NETWORK",))
    assert status_line(picture) == "4 ports: 1 locked, 1 restoring, 1 done; NO NETWORK"
    assert status_line(snapshot(State.EMPTY, State.EMPTY)) == "2 ports: all empty"
    assert status_line(snapshot(State.NEEDS_CONFIRM, State.DONE, State.DONE)) == (
        "3 ports: 1 needs confirm, 2 done")


def test_ready_and_stopping_reach_the_socket(listener):
    path, receiver = listener
    notifier = Notifier(lambda: snapshot(State.DONE, State.EMPTY), environ={"NOTIFY_SOCKET": path})
    assert notifier.enabled and notifier.watchdog_s is None
    notifier.ready()
    notifier.stopping()
    settle(receiver, 2)
    assert [fields for _, fields in receiver.messages] == [
        {"READY": "1", "STATUS": "2 ports: 1 done"},
        {"STOPPING": "1", "STATUS": "stopping; 2 ports: 1 done", "EXTEND_TIMEOUT_USEC": "60000000"},
    ]


def test_an_abstract_socket_is_named_with_an_at_sign():
    name = f"station-test-{os.getpid()}-{time.monotonic_ns()}"
    receiver = Listener("\0" + name)
    try:
        Notifier(environ={"NOTIFY_SOCKET": "@" + name}).ready()
        settle(receiver)
        assert receiver.values("READY") == ["1"]
    finally:
        receiver.close()


def test_without_notify_socket_nothing_is_sent_and_run_returns():
    notifier = Notifier(lambda: snapshot(State.EMPTY), environ={"WATCHDOG_USEC": "100000"})
    assert not notifier.enabled
    assert notifier.notify("READY=1")
    notifier.ready()
    notifier.stopping()
    asyncio.run(asyncio.wait_for(notifier.run(), 1))  # returns at once: no socket, no watchdog


def test_a_watchdog_meant_for_another_process_is_not_fed(listener):
    path, _ = listener
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier(environ=env).watchdog_s is None
    env["WATCHDOG_PID"] = str(os.getpid())
    assert Notifier(environ=env).watchdog_s == pytest.approx(0.1)


def test_a_failing_send_is_logged_once_and_never_raises(tmp_path, caplog):
    notifier = Notifier(environ={"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    with caplog.at_level(logging.DEBUG, logger="station.systemd"):
        assert not notifier.notify("READY=1")
        notifier.ready()
        notifier.stopping()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "cannot notify" in warnings[0].getMessage()


def test_the_watchdog_is_fed_every_half_period_and_status_follows_changes(listener):
    path, receiver = listener
    states = [State.EMPTY]
    notifier = Notifier(lambda: snapshot(states[0]),
                        environ={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})

    async def main() -> None:
        task = asyncio.create_task(notifier.run())
        await asyncio.sleep(0.5)
        states[0] = State.RESTORING
        await asyncio.sleep(0.55)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    settle(receiver)
    pings = receiver.times("WATCHDOG")
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    assert 8 <= len(pings) <= 12, pings
    assert min(gaps) >= 0.08, gaps  # never more often than half the period (late is load)
    assert 0.09 <= sorted(gaps)[len(gaps) // 2] <= 0.13, gaps
    assert receiver.values("STATUS") == ["1 ports: all empty", "1 ports: 1 restoring"]


def test_a_blocked_loop_stops_feeding_the_watchdog(listener):
    path, receiver = listener
    notifier = Notifier(environ={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"})  # a ping per 50 ms
    window: list[float] = []

    async def main() -> None:
        task = asyncio.create_task(notifier.run())
        await asyncio.sleep(0.3)
        window.append(time.monotonic())
        time.sleep(0.8)  # a stalled loop: a blocking call on it
        window.append(time.monotonic())
        await asyncio.sleep(0.3)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    settle(receiver)
    start, end = window
    pings = receiver.times("WATCHDOG")
    # The last ping before the stall may still be in flight for a moment.
    assert not [at for at in pings if start + 0.1 < at < end], (start, end, pings)
    assert len([at for at in pings if at < start]) >= 4
    assert len([at for at in pings if at >= end]) >= 4  # fed again once the loop runs


def test_while_stopping_the_loop_extends_the_stop_timeout_until_it_stalls(listener, monkeypatch):
    # A draining station lives past TimeoutStopSec only while its loop runs: it asks for
    # EXTEND_TIMEOUT_USEC again and again (sd_notify(3)); a loop that hangs stops asking,
    # and systemd kills it when the last extension runs out.
    monkeypatch.setattr(systemd, "EXTEND_EVERY_S", 0.1)
    monkeypatch.setattr(systemd, "STATUS_S", 0.05)
    path, receiver = listener
    notifier = Notifier(environ={"NOTIFY_SOCKET": path})
    window: list[float] = []

    async def main() -> None:
        task = asyncio.create_task(notifier.run())
        await asyncio.sleep(0.3)
        assert not receiver.values("EXTEND_TIMEOUT_USEC")  # running: no stop timeout to extend
        notifier.stopping()
        await asyncio.sleep(0.5)
        window.append(time.monotonic())
        time.sleep(0.6)  # the loop hangs mid-drain
        window.append(time.monotonic())
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    settle(receiver)
    start, end = window
    extensions = receiver.times("EXTEND_TIMEOUT_USEC")
    assert set(receiver.values("EXTEND_TIMEOUT_USEC")) == {str(int(systemd.EXTEND_BY_S * 1e6))}
    assert len([at for at in extensions if at < start]) >= 4
    assert not [at for at in extensions if start + 0.05 < at < end]


def test_a_simulated_station_says_ready_then_stopping(listener):
    path, receiver = listener
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        config = work / "station.toml"
        config.write_text(f'[station]\nstate_dir = "{work / "state"}"\n'
                          f'[ipsw]\ncache_dir = "{work / "ipsw"}"\n'
                          f'[display]\nframes_dir = "{work / "frames"}"\n')
        env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"}
        result = subprocess.run(
            [sys.executable, "-m", "station.cli", "run", "--config", str(config),
             "--sim", str(ROOT / "config/sim/find-my-unproven.toml"), "--speed", "300"],
            capture_output=True, text=True, timeout=120, cwd=work, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    settle(receiver)
    messages = [fields for _, fields in receiver.messages]
    assert messages[0]["READY"] == "1" and re.match(r"\d+ ports: ", messages[0]["STATUS"])
    # The last word names the ports as the scenario left them (its `expect`s).
    assert messages[-1]["STOPPING"] == "1"
    assert re.fullmatch(r"stopping; \d+ ports: 3 needs confirm, 1 locked", messages[-1]["STATUS"])
    assert sum("READY" in m for m in messages) == 1 and sum("STOPPING" in m for m in messages) == 1
    assert receiver.times("WATCHDOG"), "the watchdog was never fed"
    statuses = receiver.values("STATUS")
    assert all(re.match(r"\d+ ports: ", s) for s in statuses[:-1]), statuses


# Debian bookworm's usbmuxd.service (usbmuxd 1.1.1-6), which the drop-in changes.
DEBIAN_USBMUXD_UNIT = """[Unit]
Description=Socket daemon for the usbmux protocol used by Apple devices
Documentation=man:usbmuxd(8)

[Service]
ExecStart=/usr/sbin/usbmuxd --user usbmux --systemd
"""


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed (Debian: apt-get install systemd)")
def test_the_unit_files_verify(tmp_path):
    # An offline root holding the units, the programs they name, and systemd's own units
    # (verify follows the units' dependencies), so the host's /opt is not needed.
    root = tmp_path / "root"
    for program in ("opt/station/.venv/bin/station", "usr/local/sbin/station-firstboot", "usr/sbin/usbmuxd",
                    "usr/bin/systemd-tmpfiles"):
        (root / program).parent.mkdir(parents=True, exist_ok=True)
        (root / program).write_text("#!/bin/sh\n")
        (root / program).chmod(0o755)
    units = root / "etc/systemd/system"
    (units / "usbmuxd.service.d").mkdir(parents=True)
    shutil.copy(ROOT / "station/system/station.service", units)
    shutil.copy(ROOT / "image/rootfs/etc/systemd/system/station-firstboot.service", units)
    shutil.copy(ROOT / "image/rootfs/etc/systemd/system/station-ipsw-owner.service", units)
    # What systemd-fstab-generator makes of the image's fstab line for the IPSW disk.
    (units / "var-lib-station-ipsw.mount").write_text(
        "[Mount]\nWhat=/dev/disk/by-label/station-ipsw\nWhere=/var/lib/station/ipsw\nType=ext4\n")
    shutil.copy(ROOT / "station/system/usbmuxd-keep-running.conf", units / "usbmuxd.service.d/station.conf")
    for system in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")):
        if system.is_dir():
            shutil.copytree(system, root / "usr/lib/systemd/system", symlinks=True, dirs_exist_ok=True)
            break
    (root / "usr/lib/systemd/system/usbmuxd.service").write_text(DEBIAN_USBMUXD_UNIT)
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={root}", "station.service",
                             "station-firstboot.service", "station-ipsw-owner.service", "usbmuxd.service"],
                            capture_output=True, text=True, timeout=60)
    # verify exits 0 on unknown keys and only says "Unknown key ..., ignoring": any output fails.
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
        result.stdout + result.stderr)
    shown = subprocess.run(["systemctl", f"--root={root}", "cat", "usbmuxd.service"],
                           capture_output=True, text=True, timeout=60)
    if shown.returncode == 0:  # the drop-in replaces ExecStart: no --systemd, so no -z
        assert "ExecStart=/usr/sbin/usbmuxd --user usbmux -f" in shown.stdout


def test_the_service_works_in_a_directory_it_can_write():
    """lgpio (gpiozero's Pi 5 pin factory) makes its notification pipes ``.lgd-nfyN`` in the
    working directory, or in $LG_WD, and opens them relative to the working directory
    (joan2937/lg #12). With the unit's default, / under ProtectSystem=strict, that fails:
    `make hil` logged "xCreatePipe: Can't set permissions (436) for //.lgd-nfy0", then
    "no buttons or LEDs" -- a station with dead buttons."""
    unit = (ROOT / "station/system/station.service").read_text()
    settings = dict(re.findall(r"^(\w+)=(.*)$", unit, re.MULTILINE))
    writable = [f"/run/{settings['RuntimeDirectory']}"] if "RuntimeDirectory" in settings else []
    writable += [f"/var/lib/{settings['StateDirectory']}"] if "StateDirectory" in settings else []
    assert settings.get("WorkingDirectory") in writable, settings.get("WorkingDirectory")


# udev(7) rule syntax: comma-separated KEY op "value"; a small check, since `udevadm verify`
# only exists from systemd 254 (Debian bookworm has 252).
_RULE_KEY = re.compile(r'\s*(?P<key>[A-Z_]+(\{[^}]+\})?)\s*(?P<op>==|!=|\+=|-=|:=|=)\s*"(?P<value>[^"]*)"\s*')
_MATCH_KEYS = {"ACTION", "SUBSYSTEM", "KERNEL", "DRIVER", "ATTR", "ATTRS", "ENV", "TAG"}
_ASSIGN_KEYS = {"GROUP", "MODE", "OWNER", "TAG", "ENV", "GOTO", "LABEL", "RUN", "SYMLINK"}


def _parse_rules(path: Path) -> list[str]:
    """The rule lines of a udev rules file, each checked against udev(7)'s syntax."""
    labels, gotos, lines = set(), set(), []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        pairs = line.split(",")
        parsed = [_RULE_KEY.fullmatch(pair) for pair in pairs]
        assert all(parsed), f"{path.name}:{number}: cannot parse {line!r}"
        for match in parsed:
            key, op, value = match["key"].split("{")[0], match["op"], match["value"]
            known = _MATCH_KEYS if op in ("==", "!=") else _ASSIGN_KEYS
            assert key in known, f"{path.name}:{number}: {key}{op} is not a key udev knows here"
            if key == "LABEL":
                labels.add(value)
            if key == "GOTO":
                gotos.add(value)
            if key == "MODE":
                assert re.fullmatch(r"0[0-7]{3}", value) and value[2] in "67", value
        lines.append(line)
    assert gotos <= labels, gotos - labels
    return lines


def test_the_gpio_rule_parses_and_gives_gpiochips_to_group_gpio():
    lines = _parse_rules(ROOT / "station/system/60-station-gpio.rules")
    assert lines == ['SUBSYSTEM=="gpio", KERNEL=="gpiochip*", GROUP="gpio", MODE="0660"']


def test_the_udev_rules_parse_and_cover_normal_recovery_and_dfu():
    lines = _parse_rules(ROOT / "station/system/39-station-apple.rules")
    products = [re.search(r'ATTR\{idProduct\}=="([^"]+)"', l)[1] for l in lines if "idProduct" in l]
    assert all('GROUP="plugdev"' in l for l in lines if "idProduct" in l)

    def covered(product: int) -> bool:
        return any(re.fullmatch(_glob(pattern), f"{product:04x}") for pattern in products)

    for product in (0x1227, 0x1280, 0x1281, 0x1282, 0x1283, 0x12a8, 0x12ab, 0x1901):
        assert covered(product), f"{product:#06x}"
    assert not covered(0x1284) and not covered(0x8600)  # not a phone mode we serve


def _glob(pattern: str) -> str:
    """udev's fnmatch with `|` alternatives, as a regular expression."""
    return "|".join(alternative.replace("?", ".").replace("*", ".*")
                    for alternative in pattern.split("|"))


def test_log_lines_carry_syslog_priorities_only_when_stderr_is_the_journal(tmp_path, monkeypatch):
    # journald reads "<3>" as err (SyslogLevelPrefix=); it knows the stream by $JOURNAL_STREAM.
    from hw import logsetup
    stream = open(tmp_path / "stderr", "w")
    status = os.fstat(stream.fileno())
    script = ("import logging,sys; from hw import logsetup; logsetup.configure('info', sys.stderr);"
              "log = logging.getLogger('station.core'); log.error('usbmuxd: NO USBMUXD');"
              "log.warning('slow'); log.info('slot 1: EMPTY -> DETECTING'); log.debug('hidden')")
    env = {**os.environ, "JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino}"}
    subprocess.run([sys.executable, "-c", script], stderr=stream, env=env, check=True, timeout=60)
    stream.close()
    assert (tmp_path / "stderr").read_text().splitlines() == [
        "<3>station.core: usbmuxd: NO USBMUXD", "<4>station.core: slow",
        "<6>station.core: slot 1: EMPTY -> DETECTING"]
    # The same stream, not announced as the journal: time-stamped lines, no priority prefix.
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")
    with open(tmp_path / "other", "w") as other:
        assert not logsetup.to_journal(other)


def test_a_scenario_stall_blocks_the_loop_before_the_scenario_ends(sim_config, tmp_path):
    # make image-test's hung station: a scenario of nothing but a stall must wait for it.
    scenario = tmp_path / "stall.toml"
    scenario.write_text('[scenario]\nengine = "timed"\nstall_at = 0.5\nstall_s = 1.5\n')
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "station.cli", "run", "--config", str(sim_config),
                          "--sim", str(scenario)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "the event loop stalls for 2 s" in run.stderr
    assert time.monotonic() - started >= 2.0
