"""Each quirk scenario under config/sim/, played by `station run --sim`, ends as it expects.

The runs are started together (they are mostly waiting on simulated time) and judged one
by one: the command exits 1 when any port ends other than its phone's ``expect``.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# scenario -> (speed, what the log must say, what it must not say)
SCENARIOS = {
    "find-my-unproven": (300, ["slot 1 [", "Find My not confirmed off: ask the owner to sign out of "
                               "Find My, or hold OK", "CHECKING_LOCK -> LOCKED (Find My is on)"],
                         ["-> RESTORING"]),
    "activation-pages": (300, ["CHECKING_LOCK -> LOCKED (Activation Lock: Apple asks for the Apple ID)",
                               "Apple's activation server: Activation Error",
                               "Apple acknowledged an earlier activation",
                               "Apple's activation server answered HTTP 500"], []),
    "a11-restore": (100, ["slot 2 [F17VX0A1JCLJ] VERIFYING -> DONE"], ["-> EMPTY"]),
    "usbmuxd-restarts": (300, ["VERIFYING -> DONE"], ["phone did not come back"]),
    "listen-replay": (100, ["QUEUED -> RESTORING"], ["-> EMPTY", "-> DETECTING (", "NEEDS_CONFIRM -> QUEUED\n"
                                                      "NEEDS_CONFIRM"]),
    "usb3-port": (100, ["slot 2 [FTA7EDRB5ERT] VERIFYING -> DONE"], ["slot 1 ", "-> EMPTY"]),
    "re-enumerating": (300, ["VERIFYING -> DONE"], ["USB NO ACCESS", "-> EMPTY"]),
    "slow-activation-daemon": (300, ["VERIFYING -> DONE"], ["DONE (not verified"]),
    # Five phones on one link: restores start as it has room, none fails for an oversubscribed link.
    "shared-link": (100, ["WAIT USB: link usb busy", "slot 5 [F2LXQ0J1BUS5] VERIFYING -> DONE"],
                    ["oversubscribed", "-> FAILED", "retrying"]),
    "lockdown-stalls": (300, ["DETECTING -> FAILED (lockdownd did not answer within 3 s)"], []),
    # unknown_lock = "restore" decides only for phones unreadable by nature (the DFU one).
    "untrusted-phones": (300, ["slot 1 [F2LTRUST0001] CHECKING_LOCK -> NEEDS_TRUST (passcode set: "
                               "unlock the phone and tap Trust)",
                               "slot 2 [F17TRUST0002] CHECKING_LOCK -> NEEDS_TRUST "
                               "(Trust denied on the phone)",
                               "slot 3 [G6TTRUST0003] CHECKING_LOCK -> LOCKED (Find My is on)",
                               "slot 4 [ECID 1C5B02C107ABDA] VERIFYING -> DONE"],
                         ["slot 1 [F2LTRUST0001] NEEDS_TRUST ->", "slot 2 [F17TRUST0002] NEEDS_TRUST ->",
                          "[F2LTRUST0001] QUEUED", "[F17TRUST0002] QUEUED", "[G6TTRUST0003] QUEUED"]),
}


PARALLEL = 3  # scenarios played at once: ten starting together on two cores starve their
# simulated daemons past the 3 s lockdown bound (seen as "lockdownd did not answer")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str]]:
    waiting = list(SCENARIOS.items())
    running: dict[str, tuple[list[str], Path, subprocess.Popen[bytes]]] = {}
    finished = {}
    while waiting or running:
        while waiting and len(running) < PARALLEL:
            name, (speed, _, _) = waiting.pop(0)
            folder = tmp_path_factory.mktemp(name)
            config = folder / "station.toml"
            config.write_text(f'[station]\nstate_dir = "{folder / "state"}"\n'
                              f'[ipsw]\ncache_dir = "{folder / "ipsw"}"\n')
            command = [sys.executable, "-m", "station.cli", "run", "--config", str(config),
                       "--sim", str(ROOT / "config" / "sim" / f"{name}.toml"), "--speed", str(speed)]
            # Output to files, not pipes: a pipe nobody reads yet fills up and blocks the station.
            with (folder / "out").open("w") as out, (folder / "err").open("w") as err:
                running[name] = (command, folder, subprocess.Popen(command, stdout=out, stderr=err, cwd=folder))
        for name, (command, folder, process) in list(running.items()):
            if process.poll() is not None:
                del running[name]
                finished[name] = subprocess.CompletedProcess(
                    command, process.returncode, (folder / "out").read_text(), (folder / "err").read_text())
        time.sleep(0.1)
    return finished


@pytest.mark.parametrize("name", SCENARIOS)
def test_the_quirk_scenario_ends_as_it_expects(runs, name):
    result = runs[name]
    _, wanted, unwanted = SCENARIOS[name]
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    assert "UNEXPECTED" not in result.stdout and "Traceback" not in result.stderr
    for words in wanted:
        assert words in result.stderr, f"{name}: no {words!r} in the log"
    for words in unwanted:
        assert words not in result.stderr, f"{name}: {words!r} in the log"
