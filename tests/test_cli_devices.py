"""`station devices` and `station run --sim --json` through station.cli.main, on the simulator:
what a script reads (null for what is not known), the backend STATION_BACKEND names, the lock
column as the last recorded result, and exit 1 when no phone could be looked for."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import usb.core

from hw.sim import SimPhone, SimulatedBench
from station.cli import main

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "config" / "sim" / "demo.toml"
LOCKED = """\
[scenario]
engine = "timed"
[config.restore]
mode = "line"
[[phone]]
name = "find-my-on"
slot = 2
model = "iPhone15,4"
serial = "G6TZK2P4Q1MN"
find_my = true
activation_lock = true
expect = "locked"
"""


@pytest.fixture
def bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SimulatedBench]:
    """pyusb lists this simulated bus, and usbmuxd is not running (it is started on demand)."""
    monkeypatch.setenv("USBMUXD_SOCKET_ADDRESS", str(tmp_path / "no-usbmuxd"))
    monkeypatch.setenv("STATION_BACKEND", "pi")
    with SimulatedBench([], tmp_path / "bench") as bench:
        find = usb.core.find
        monkeypatch.setattr(usb.core, "find", lambda **kw: find(**{**kw, "backend": bench.usb_backend}))
        yield bench


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_devices_lists_every_phone_with_slot_mode_and_identity(demo_config, capsys):
    code, out, err = run(capsys, "devices", "--json", "--config", str(demo_config), "--sim", str(DEMO))
    assert code == 0, err
    rows = json.loads(out)
    assert [(r["slot"], r["mode"], r["product_type"]) for r in rows] == [
        (1, "normal", "iPhone14,7"), (2, "normal", "iPhone15,4"), (3, "dfu", "iPhone13,2"),
        (4, "normal", "iPhone14,5"), (5, "normal", "iPhone14,7")]
    assert rows[0]["ios"] == "17.5.1" and rows[0]["serial"] == "F2LXQ0J1N7KC"
    # DFU: identity from the iBoot string; what it cannot tell is null, never "-"
    assert rows[2]["ecid"] and rows[2]["ios"] is None and rows[2]["serial"] is None
    assert "-" not in [value for row in rows for value in row.values()]
    assert all(row["last_lock_check"] is None for row in rows)  # this station never saw them


def test_the_lock_column_is_the_last_recorded_result(tmp_path, sim_config, capsys):
    scenario = tmp_path / "locked.toml"
    scenario.write_text(LOCKED)
    code, out, err = run(capsys, "run", "--sim", str(scenario), "--speed", "50", "--json",
                         "--config", str(sim_config))
    assert code == 0, err
    [port] = json.loads(out)
    assert (port["slot"], port["outcome"], port["expected"], port["as_expected"]) == (2, "locked", "locked", True)
    assert port["phone"]["serial"] == "G6TZK2P4Q1MN" and port["reason"] == "Find My is on"

    code, out, _ = run(capsys, "devices", "--sim", str(scenario), "--json", "--config", str(sim_config))
    [phone] = json.loads(out)
    assert phone["last_lock_check"]["result"] == "locked" and phone["last_lock_check"]["at"]
    code, out, _ = run(capsys, "devices", "--sim", str(scenario), "--config", str(sim_config))
    header, line = out.splitlines()
    assert header.split("  ")[-1] == "LAST LOCK CHECK"
    assert line[header.index("LAST LOCK CHECK"):].startswith("locked 20")


def test_station_backend_sim_lists_the_simulated_bench(sim_config, monkeypatch, capsys):
    """Not the real usbmuxd and bus: with no scenario, the simulated bench is empty."""
    monkeypatch.setenv("STATION_BACKEND", "sim")
    monkeypatch.setenv("USBMUXD_SOCKET_ADDRESS", "/nonexistent/usbmuxd")  # never asked
    code, out, err = run(capsys, "devices", "--json", "--config", str(sim_config))
    assert (code, json.loads(out)) == (0, [])
    assert err.splitlines()[0] == "note: the simulated bench has no phones without --sim SCENARIO"


def test_an_unknown_backend_is_a_configuration_error(sim_config, monkeypatch, capsys):
    monkeypatch.setenv("STATION_BACKEND", "qemu")
    assert run(capsys, "devices", "--config", str(sim_config)) == (
        2, "", "station: STATION_BACKEND='qemu': must be one of pi, sim\n")


def test_a_phone_that_cannot_be_listed_is_a_failure(sim_config, bench, capsys):
    """The bus holds a phone, usbmuxd is down: an empty list would read as "no phones"."""
    bench.world.attach(SimPhone(ecid=0x400, serial="F2L000000400"), 1, (1, 1))
    code, out, err = run(capsys, "devices", "--json", "--config", str(sim_config))
    assert (code, out) == (1, "")
    assert err.startswith("station: phones on the bus could not be listed: usbmuxd: ")
    assert err.count("\n") == 1


def test_no_phone_with_usbmuxd_down_is_an_empty_list(sim_config, bench, capsys):
    """udev starts usbmuxd when an iPhone is plugged in: with none, it is not running."""
    code, out, err = run(capsys, "devices", "--json", "--config", str(sim_config))
    assert (code, json.loads(out)) == (0, [])
    assert err.startswith("note: usbmuxd: ")


def test_devices_without_libusb_is_one_line(tmp_path, sim_config, monkeypatch, capsys):
    def no_backend(*args: object, **kwargs: object) -> None:
        raise usb.core.NoBackendError("No backend available")

    monkeypatch.setattr(usb.core, "find", no_backend)
    monkeypatch.setenv("USBMUXD_SOCKET_ADDRESS", str(tmp_path / "absent"))
    monkeypatch.setenv("STATION_BACKEND", "pi")
    assert run(capsys, "devices", "--config", str(sim_config)) == (
        1, "", "station: NO LIBUSB: no libusb found (install libusb-1.0-0)\n")
