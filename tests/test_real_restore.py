"""pymobiledevice3's own Restore, end to end, against simulated phones (the real engine).

The station's real worker (hw/worker/real.py) runs pymobiledevice3's ``Restore`` in a
worker process; the simulated phone answers as a real one at each boundary: lockdownd
(EnterRecovery), iBoot over the USB bus (reached from the worker through the bridge), the
signing server, restored's messages, ASR and FDR. The bytes ASR received are checked against
the IPSW's OS image (by the simulated phone, which fails verification on a mismatch, and here).
"""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

from ipsw_parser.ipsw import IPSW

ROOT = Path(__file__).resolve().parents[1]


def play(tmp_path: Path, scenario: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "station.toml"
    config.write_text(f'[station]\nstate_dir = "{tmp_path / "state"}"\n'
                      f'[ipsw]\ncache_dir = "{tmp_path / "ipsw"}"\n')
    return subprocess.run([sys.executable, "-m", "station.cli", "run", "--config", str(config),
                           "--sim", str(ROOT / scenario), "--speed", "30"],
                          capture_output=True, text=True, timeout=240, cwd=tmp_path)


def station(tmp_path: Path, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "station.cli", *args, "--config",
                             str(tmp_path / "station.toml")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def os_image_sha256(ipsw: Path, hardware_model: str) -> str:
    with zipfile.ZipFile(ipsw) as archive:
        member = IPSW(archive).build_manifest.get_build_identity(
            hardware_model, restore_behavior="Erase").get_component_path("OS")
        return hashlib.sha256(archive.read(member)).hexdigest()


def test_a_phone_from_ios_and_one_from_dfu_restored_by_pymobiledevice3(tmp_path):
    result = play(tmp_path, "config/sim/real-restore.toml")
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    assert result.stdout.splitlines() == [
        "slot 1: DONE          DONE     iPhone 14 F2LXQ0J1N7KC",
        "slot 2: DONE          DONE     iPhone 12 ECID 52D561922C2E22"]
    # What ASR took is the IPSW's OS image, byte for byte, for both phones.
    received = re.findall(r"ASR: received (\d+) bytes, sha256 ([0-9a-f]{64})", result.stderr)
    ipsws = {path.name.split("_")[0]: path for path in (tmp_path / "ipsw").glob("*.ipsw")}
    expected = {os_image_sha256(ipsws["iPhone14,7"], "d27ap"), os_image_sha256(ipsws["iPhone13,2"], "d53gap")}
    assert {digest for _, digest in received} == expected and len(received) == 2
    # The worker logs show the real sequence: recovery, the signing request, restored, ASR.
    logs = "\n".join(p.read_text() for p in (tmp_path / "state" / "restore-logs").glob("slot*.log"))
    for step in ("fetching TSS record", "Sending iBEC", "Sending iBSS", "connected to ASR",
                 "'MsgType': 'StatusMsg', 'Status': 0"):
        assert step in logs, step
    certificate = json.loads(station(tmp_path, "cert", "F2LXQ0J1N7KC"))
    assert certificate["sanitization"]["tool"] == (
        "pymobiledevice3 11.45.0 Restore (Erase), against a simulated phone (no phone erased)")
    assert certificate["sanitization"]["firmware"]["build"] == "22C152"


def test_each_fault_ends_as_a_real_restore_would(tmp_path):
    result = play(tmp_path, "config/sim/real-restore-faults.toml")
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    sessions = {s["slot"]: s for s in json.loads(station(tmp_path, "records", "list", "--json"))}
    assert (sessions[1]["outcome"], sessions[1]["reason"]) == (
        "failed", "NOT SIGNED 22C152: Apple no longer signs it; add a signed IPSW for iPhone15,4 (station ipsw add)")
    assert sessions[1]["attempts"] == 1  # a refusal to sign is final: never asked again
    assert (sessions[2]["outcome"], sessions[2]["reason"]) == ("detached", "detached in restoring")
    assert (sessions[3]["outcome"], sessions[3]["reason"]) == ("failed", "phone reported restore status 14: fail")
    assert (sessions[4]["outcome"], sessions[4]["attempts"]) == ("done", 2)  # status 53 retried
    assert "ok: 4 records, chain intact; 1 certificates" in station(tmp_path, "records", "verify")
