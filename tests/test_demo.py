"""The shipped demo scenario, end to end through the `station` command."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from PIL import Image

from ui.glyphs import shows

ROOT = Path(__file__).resolve().parents[1]


def run_scenario(tmp_path: Path, scenario: str, speed: int = 300) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "station.toml"
    config.write_text(f'[station]\nstate_dir = "{tmp_path / "state"}"\n'
                      f'[ipsw]\ncache_dir = "{tmp_path / "ipsw"}"\n'
                      f'[display]\nframes_dir = "{tmp_path / "frames"}"\n')
    return subprocess.run(
        [sys.executable, "-m", "station.cli", "run", "--config", str(config),
         "--sim", str(ROOT / scenario), "--speed", str(speed)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)


def test_demo_ends_with_the_five_expected_outcomes(tmp_path):
    # At `make run`'s speed: pymobiledevice3's own waits (iBoot's, restored's) pass in real time.
    result = run_scenario(tmp_path, "config/sim/demo.toml", speed=30)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 5, result.stdout
    assert lines[0].startswith("slot 1: DONE")
    assert lines[1].startswith("slot 2: LOCKED") and "Find My is on" in lines[1]
    assert lines[2].startswith("slot 3: DONE")
    assert lines[3].startswith("slot 4: DONE") and "(2 attempts)" in lines[3]
    assert lines[4].startswith("slot 5: DONE") and lines[4].endswith("(erase)")
    assert "UNEXPECTED" not in result.stdout
    log = result.stderr
    assert "slot 2 [G6TZK2P4Q1MN] CHECKING_LOCK -> LOCKED (Find My is on)" in log
    assert ("slot 4 [DNPWL4H8Q6VR] RESTORING -> QUEUED "
            "(retrying: phone reported restore status 53: failed to recover FDR data)") in log
    assert "slot 5 [HX7TRADE1N5E] QUEUED -> RESTORING (erase)" in log
    assert "Traceback" not in log
    frames = sorted((tmp_path / "frames").glob("*.png"))
    assert frames, "the emulated OLED showed nothing"
    # The scripted operator looks at slot 4 after confirming slot 3: its detail screen stays up
    # (a person's idle timeout runs on real time) and shows the retry while it runs.
    seen = [Image.open(path) for path in frames]
    assert any(shows(image, "SLOT 4 RESTORING", "medium", inverse=True) for image in seen)
    retrying = [image for image in seen if shows(image, "SLOT 4 RETRY 2/2", "medium", inverse=True)]
    assert retrying, "the display never showed slot 4's retry"
    assert any(shows(image, "ERASE", "medium") for image in seen), "the display never showed the erase"
    assert not list(tmp_path.glob("updater_output-*")), "a restore wrote into the working directory"

    records = station(tmp_path, "records", "list", "--json")
    outcomes = {(r["slot"], r["outcome"]) for r in json.loads(records.stdout)}
    assert outcomes == {(1, "done"), (2, "locked"), (3, "done"), (4, "done"), (5, "done")}, records.stdout
    verify = station(tmp_path, "records", "verify")
    assert verify.returncode == 0 and "4 certificates" in verify.stdout, verify.stdout + verify.stderr
    # pymobiledevice3's Restore did it, against a simulated phone, and the certificate says both,
    # with the build it installed.
    certificate = json.loads(station(tmp_path, "cert", "F2LXQ0J1N7KC").stdout)
    assert certificate["sanitization"]["tool"] == (
        "pymobiledevice3 11.45.0 Restore (Erase), against a simulated phone (no phone erased)")
    assert certificate["sanitization"]["firmware"]["build"] == "22C152"
    assert certificate["sanitization"]["job"] == "restore"
    # The trade-in was erased, not restored: its certificate says so, and which tool did it.
    erased = json.loads(station(tmp_path, "cert", "HX7TRADE1N5E").stdout)["sanitization"]
    assert erased["job"] == "erase (EraseDevice)" and erased["method_type"] == "Purge"
    assert "Erase All Content and Settings" in erased["method_detail"]
    assert erased["tool"] == ("pymobiledevice3 11.45.0 mobilebackup2 EraseDevice, against a simulated phone "
                              "(no phone erased)")
    assert erased["firmware"] == {"build": None, "ios": "17.5.1", "sha256": None} and erased["attempts"] == 1


def station(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "station.cli", *args, "--config",
                           str(tmp_path / "station.toml")],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)


def test_a_pulled_cable_stops_that_restore_only(tmp_path):
    # At the tests' full speed: the pull is tied to the OS image's transfer, not to a time that a
    # busy machine's lock check could outlast.
    result = run_scenario(tmp_path, "config/sim/detach-mid-restore.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("slot 1: EMPTY") and "slot 2: DONE" in result.stdout
    log = result.stderr
    assert "slot 1 [F2LXQ0J1PUL1] RESTORING -> EMPTY" in log
    assert re.search(r"slot1: worker \d+ stopped \((exit code 143|killed by SIG\w+)\)", log), log
    records = station(tmp_path, "records", "list", "--json")
    outcomes = [(r["slot"], r["outcome"]) for r in json.loads(records.stdout)]
    assert sorted(outcomes) == [(1, "detached"), (2, "done")]


def test_no_network_holds_restores_until_the_link_is_back(tmp_path):
    result = run_scenario(tmp_path, "config/sim/no-network.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    log = result.stderr
    assert "network: NO NETWORK" in log and "network is back" in log
    queued = log.index("CHECKING_LOCK -> QUEUED")
    assert log.index("network is back") < log.index("QUEUED -> RESTORING") and queued < log.index(
        "network is back")
    frames = sorted((tmp_path / "frames").glob("*.png"))
    assert frames  # the NO NETWORK line itself is checked by the reference images


def test_a_phone_still_locked_after_its_restore_ends_locked_without_certificate(tmp_path):
    result = run_scenario(tmp_path, "config/sim/locked-after-restore.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("slot 1: LOCKED")
    assert "still locked after restore: Activation Lock" in result.stdout
    assert "VERIFYING -> LOCKED" in result.stderr
    verify = station(tmp_path, "records", "verify")
    assert verify.returncode == 0 and "0 certificates" in verify.stdout, verify.stdout


def test_refurbisher_facts_on_certificates_and_the_dfu_phone_found_by_ecid(tmp_path):
    """Issue 14 item 3: the simulated phones' facts reach the records through pymobiledevice3."""
    result = run_scenario(tmp_path, "config/sim/refurbisher-facts.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "UNEXPECTED" not in result.stdout, result.stdout
    worn = json.loads(station(tmp_path, "cert", "F2LFACTS0001").stdout)["media"]
    assert worn["battery"] == {"cycle_count": 812, "design_capacity_mah": 3227, "full_charge_capacity_mah": 2581}
    assert (worn["storage_bytes"], worn["color"], worn["enclosure_color"]) == (256_000_000_000, "#fae5d3", "#e3e4e5")
    assert len(worn["imei"]) == 15 and worn["imei2"] and worn["meid"] == worn["imei"][:14]
    by_imei = station(tmp_path, "cert", worn["imei"])
    assert by_imei.returncode == 0 and json.loads(by_imei.stdout)["media"]["serial"] == "F2LFACTS0001"
    wifi = json.loads(station(tmp_path, "cert", "F2LFACTS0002").stdout)["media"]
    assert (wifi["imei"], wifi["imei2"], wifi["meid"]) == (None, None, None)
    assert wifi["battery"]["cycle_count"] == 87  # the simulated phone's default
    # The DFU phone: no serial, found by its ECID; its facts were read at the Hello screen.
    dfu = station(tmp_path, "cert", "1A2B3C4D5E6F70")
    assert dfu.returncode == 0, dfu.stderr
    media = json.loads(dfu.stdout)["media"]
    assert (media["serial"], media["ecid"], media["battery"]["cycle_count"]) == ("", "1A2B3C4D5E6F70", 15)
    export = station(tmp_path, "records", "export", "--format", "csv").stdout
    assert export.splitlines()[0].count("battery_") == 3 and "812" in export
