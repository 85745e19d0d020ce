"""`station ports learn` through station.cli.main: pyusb reads the simulated bench's bus, and
`--write` edits the config file keeping what the operator wrote in it."""
from __future__ import annotations

import argparse
import json
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import usb.core

from hw.iphone.usb_topology import PortPeers
from hw.sim import SimPhone, SimulatedBench
from station.cli import main
from station.commands.ports import POLL_S, learn_ports, with_ports
from station.config import PACKAGED_CONFIG, load_config

CONFIG = """\
# Bench 7, back room
[station]
state_dir = "state"

[hub]  # the 4-port hub on the left
slots = 2   # two cables for now

[restore]
mode = "line"  # one after another
"""


@pytest.fixture
def bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SimulatedBench]:
    """A simulated bench whose bus is the one pyusb lists in this process; ``bench.looked`` is
    set once something has listed it."""
    with SimulatedBench([], tmp_path / "bench") as bench:
        find = usb.core.find
        bench.looked = threading.Event()

        def find_on_bench(**kw: object) -> object:
            bench.looked.set()
            return find(**{**kw, "backend": bench.usb_backend})

        monkeypatch.setattr(usb.core, "find", find_on_bench)
        yield bench


def plug_soon(bench: SimulatedBench, *ports: tuple[int, ...]) -> threading.Thread:
    """Plug one phone into each port in turn, once `ports learn` has seen the bus empty (a phone
    already there when it starts is not learned), one poll apart."""
    def plug() -> None:
        bench.looked.wait(30)
        for n, port in enumerate(ports):
            time.sleep(POLL_S + 0.1)
            bench.world.attach(SimPhone(ecid=0x300 + n, serial=f"F2L00000030{n}"), 1, port)

    thread = threading.Thread(target=plug)
    thread.start()
    return thread


def test_write_keeps_a_comment_after_the_hub_header(tmp_path, bench, capsys):
    """The old writer looked for a bare `[hub]` line, missed this one and added a second [hub]
    table, which the next start refused."""
    config = tmp_path / "station.toml"
    config.write_text(CONFIG)
    plugger = plug_soon(bench, (1, 3))
    code = main(["ports", "learn", "--slots", "1", "--timeout", "5", "--write", "--config", str(config)])
    plugger.join()
    assert code == 0, capsys.readouterr().err
    assert load_config(config).hub.ports == {"1-1.3": 1}
    text = config.read_text()
    assert text.count("[hub]") == 1
    assert text.replace('ports = {"1-1.3" = 1}\n', "") == CONFIG


def test_learn_maps_each_port_to_the_next_slot_as_json(tmp_path, bench, capsys):
    config = tmp_path / "station.toml"
    config.write_text("# my station\n[hub]\nslots = 3\n")
    plugger = plug_soon(bench, (1, 4), (1, 2), (2, 7))  # plugged in this order: slots 1, 2, 3
    code = main(["ports", "learn", "--json", "--timeout", "5", "--config", str(config)])
    plugger.join()
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out) == {"ports": {"1-1.4": 1, "1-1.2": 2, "1-2.7": 3}, "written": None}
    assert config.read_text() == "# my station\n[hub]\nslots = 3\n"  # no --write: untouched


def test_learn_prints_the_table_as_toml(tmp_path, bench, capsys):
    config = tmp_path / "station.toml"
    config.write_text("[hub]\nslots = 1\n")
    plugger = plug_soon(bench, (1, 4))
    assert main(["ports", "learn", "--timeout", "5", "--config", str(config)]) == 0
    plugger.join()
    assert capsys.readouterr().out == '[hub]\nports = {"1-1.4" = 1}\n'


def test_learn_writes_both_halves_of_a_usb3_port(tmp_path, capsys):
    config = tmp_path / "station.toml"
    config.write_text("[hub]\nslots = 2\n")
    usb2_phone = SimPhone(ecid=0x200, serial="F2L000000200")
    usb3_phone = SimPhone(ecid=0x201, serial="F2L000000201", product_type="iPhone16,1", usb3=True)
    with SimulatedBench([], tmp_path / "bench") as bench:
        def plug_in_turn() -> None:
            for phone, port in ((usb2_phone, 1), (usb3_phone, 2)):
                time.sleep(0.8)
                bench.world.attach(phone, 1, (1, port))

        plugger = threading.Thread(target=plug_in_turn)
        plugger.start()
        args = argparse.Namespace(slots=None, timeout=5.0, write=True, json=True)
        assert learn_ports(args, load_config(config), bench.usb_backend, PortPeers(bench.sysfs_root)) == 0
        plugger.join()
    # The USB 3 phone showed on 2-1.2; its USB 2 half 1-1.2 is the same slot. A USB 2 phone on
    # a USB 3 hub shows on the USB 2 half, and the SuperSpeed half is written beside it.
    expected = {"1-1.1": 1, "2-1.1": 1, "2-1.2": 2, "1-1.2": 2}
    assert json.loads(capsys.readouterr().out) == {"ports": expected, "written": str(config)}
    assert load_config(config).hub.ports == expected


def test_nothing_learned_is_a_failure(tmp_path, bench, capsys):
    config = tmp_path / "station.toml"
    config.write_text("[hub]\nslots = 1\n")
    assert main(["ports", "learn", "--timeout", "0.6", "--write", "--config", str(config)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.endswith("station: no port learned\n")
    assert config.read_text() == "[hub]\nslots = 1\n"


def test_write_needs_a_config_file_of_the_operators(monkeypatch, capsys):
    """Never the package's own default (a wheel's file, shared by every station on the host)."""
    monkeypatch.setenv("STATION_CONFIG", str(PACKAGED_CONFIG))
    assert main(["ports", "learn", "--write"]) == 2
    assert capsys.readouterr().err == \
        "station: --write needs the config file to edit: give it with --config FILE\n"


@pytest.mark.parametrize("before, after", [
    ("[station]\nid = \"bench-7\"\n",  # no [hub] yet: one is added
     '[station]\nid = "bench-7"\n\n[hub]\nports = {"1-1.1" = 1, "2-1.1" = 1}\n'),
    ("[hub]\nslots = 2\nports = { \"9-9\" = 2 }  # learned in May\nlinks = {}\n",  # replaced in place
     '[hub]\nslots = 2\nports = {"1-1.1" = 1, "2-1.1" = 1}  # learned in May\nlinks = {}\n'),
    ("hub.slots = 2  # dotted keys\n",
     'hub.slots = 2  # dotted keys\nhub.ports = {"1-1.1" = 1, "2-1.1" = 1}\n'),
])
def test_with_ports_keeps_everything_else(before, after):
    assert with_ports(before, {"1-1.1": 1, "2-1.1": 1}) == after


def test_with_ports_on_the_shipped_config_changes_one_line():
    shipped = PACKAGED_CONFIG.read_text()
    edited = with_ports(shipped, {"1-1.1": 1})
    assert edited.replace('ports = {"1-1.1" = 1}\n', "ports = {}\n") == shipped
    assert tomllib.loads(edited)["hub"]["ports"] == {"1-1.1": 1}
