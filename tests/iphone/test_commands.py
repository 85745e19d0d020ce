"""`station devices` and `station ports learn`, through pyusb and pymobiledevice3 on the simulator."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from hw.sim import SimPhone, SimulatedBench
from hw.iphone.usb_topology import PortPeers
from station.commands.ports import learn_ports
from station.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def test_devices_lists_every_phone_with_slot_mode_and_identity(tmp_path):
    config = tmp_path / "station.toml"
    config.write_text(f'[station]\nstate_dir = "{tmp_path / "state"}"\n')
    result = subprocess.run(
        [sys.executable, "-m", "station.cli", "devices", "--json", "--config", str(config),
         "--sim", str(ROOT / "config" / "sim" / "demo.toml")],
        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["slot"], r["mode"], r["product_type"]) for r in rows] == [
        (1, "normal", "iPhone14,7"), (2, "normal", "iPhone15,4"), (3, "dfu", "iPhone13,2"),
        (4, "normal", "iPhone14,5")]
    assert rows[0]["ios"] == "17.5.1" and rows[0]["serial"] == "F2LXQ0J1N7KC"
    assert rows[2]["ios"] == "-" and rows[2]["ecid"] != "-"  # DFU: identity from the iBoot string


def test_devices_without_libusb_is_one_line(tmp_path, monkeypatch):
    import usb.core

    def no_backend(*args, **kwargs):
        raise usb.core.NoBackendError("No backend available")

    monkeypatch.setattr(usb.core, "find", no_backend)
    monkeypatch.setenv("USBMUXD_SOCKET_ADDRESS", str(tmp_path / "absent"))
    config = tmp_path / "station.toml"
    config.write_text(f'[station]\nstate_dir = "{tmp_path / "state"}"\n')
    from station.cli import main
    assert main(["devices", "--config", str(config)]) == 2


def test_ports_learn_maps_each_port_to_the_next_slot_and_writes_the_table(tmp_path, capsys):
    config_path = tmp_path / "station.toml"
    config_path.write_text('# my station\n[hub]\nslots = 3\n\n[restore]\nmode = "line"\n')
    phones = [SimPhone(ecid=0x100 + i, serial=f"F2L00000000{i}") for i in range(3)]
    ports = [(1, 4), (1, 2), (2, 7)]  # plugged in this order: slots 1, 2, 3
    with SimulatedBench([], tmp_path / "bench") as bench:
        def plug_in_turn() -> None:
            for phone, path in zip(phones, ports):
                time.sleep(0.8)
                bench.world.attach(phone, 1, path)

        plugger = threading.Thread(target=plug_in_turn)
        plugger.start()
        args = argparse.Namespace(slots=None, timeout=5.0, write=True)
        assert learn_ports(args, load_config(config_path), bench.usb_backend) == 0
        plugger.join()
    assert '"1-1.4" = 1, "1-1.2" = 2, "1-2.7" = 3' in capsys.readouterr().out
    learned = load_config(config_path)
    assert learned.hub.ports == {"1-1.4": 1, "1-1.2": 2, "1-2.7": 3}
    assert learned.restore.mode == "line" and config_path.read_text().startswith("# my station")


def test_ports_learn_writes_both_halves_of_a_usb3_port(tmp_path, capsys):
    config_path = tmp_path / "station.toml"
    config_path.write_text("[hub]\nslots = 2\n")
    usb2_phone = SimPhone(ecid=0x200, serial="F2L000000200")
    usb3_phone = SimPhone(ecid=0x201, serial="F2L000000201", product_type="iPhone16,1", usb3=True)
    with SimulatedBench([], tmp_path / "bench") as bench:
        def plug_in_turn() -> None:
            for phone, port in ((usb2_phone, 1), (usb3_phone, 2)):
                time.sleep(0.8)
                bench.world.attach(phone, 1, (1, port))

        plugger = threading.Thread(target=plug_in_turn)
        plugger.start()
        args = argparse.Namespace(slots=None, timeout=5.0, write=True)
        assert learn_ports(args, load_config(config_path), bench.usb_backend,
                           PortPeers(bench.sysfs_root)) == 0
        plugger.join()
    # The USB 3 phone showed on 2-1.2; its USB 2 half 1-1.2 is the same slot. A USB 2 phone on
    # a USB 3 hub shows on the USB 2 half, and the SuperSpeed half is written beside it.
    assert load_config(config_path).hub.ports == {"1-1.1": 1, "2-1.1": 1, "2-1.2": 2, "1-1.2": 2}
