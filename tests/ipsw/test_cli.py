"""`station ipsw ...` end to end, in-process, against the loopback server."""
from __future__ import annotations

import json
from pathlib import Path

from station.config import IpswSection

from .conftest import Server
from .factory import build_ipsw, synthetic_manifest


def test_the_commands_on_a_fresh_cache(cli, server: Server, section: IpswSection, tmp_path: Path, capsys) -> None:
    older = build_ipsw(tmp_path / "iPhone14,7_17.5.1_21F90_Restore.ipsw",
                       synthetic_manifest(("iPhone14,7",), "17.5.1", "21F90"), seed=2)
    newer = build_ipsw(tmp_path / "iPhone14,7_18.0.1_22A3370_Restore.ipsw", synthetic_manifest())
    server.publish(older, ("iPhone14,7",), "17.5.1", "21F90")
    url = server.publish(newer, ("iPhone14,7",), "18.0.1", "22A3370")

    assert cli(section, "ipsw", "catalog", "refresh", "iPhone14,7") == 0
    assert capsys.readouterr().out == f"catalog: 2 IPSWs for 1 models in {section.cache_dir}\n"

    assert cli(section, "ipsw", "add", str(older)) == 0
    assert cli(section, "ipsw", "add", url) == 0
    out = capsys.readouterr().out
    assert f"added {section.cache_dir / newer.name}: iOS 18.0.1 (22A3370) for iPhone14,7, " in out

    assert cli(section, "ipsw", "list", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(e["file"], e["version"], e["models"], e["state"]) for e in listed] == [
        (older.name, "17.5.1", ["iPhone14,7"], "verified"), (newer.name, "18.0.1", ["iPhone14,7"], "verified")]
    assert listed[1]["size"] == newer.stat().st_size

    assert cli(section, "ipsw", "list") == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["FILE", "BUILD", "iOS", "MODELS", "SIZE", "STATE"]
    assert table[2].split()[:4] == [newer.name, "22A3370", "18.0.1", "iPhone14,7"]

    assert cli(section, "ipsw", "match", "iPhone14,7", "--json") == 0
    assert json.loads(capsys.readouterr().out)["identity"] == {
        "index": 2, "DeviceClass": "d27ap", "Variant": "Customer Erase Install (IPSW)", "RestoreBehavior": "Erase"}
    assert cli(section, "ipsw", "match", "8110:18") == 0
    assert capsys.readouterr().out == (
        f"iPhone14,7: {section.cache_dir / newer.name}\n  iOS 18.0.1 (22A3370), build identity #2: "
        "DeviceClass d27ap, Variant 'Customer Erase Install (IPSW)', RestoreBehavior Erase\n")

    assert cli(section, "ipsw", "verify", "--all") == 0
    assert capsys.readouterr().out.count(": iOS ") == 2

    assert cli(section, "ipsw", "prune", "--keep", "1", "--dry-run") == 0
    assert capsys.readouterr().out == f"would remove {section.cache_dir / older.name}\n"
    assert cli(section, "ipsw", "prune", "--keep", "1") == 0
    assert cli(section, "ipsw", "remove", newer.name) == 0
    capsys.readouterr()
    assert cli(section, "ipsw", "list", "--json") == 0
    assert json.loads(capsys.readouterr().out) == []


def test_add_twice_and_remove_unknown_are_one_line(cli, server: Server, section: IpswSection, ipsw14_7: Path,
                                                   capsys) -> None:
    server.publish(ipsw14_7, ("iPhone14,7",), "18.0.1", "22A3370")
    assert cli(section, "ipsw", "add", str(ipsw14_7)) == 0
    assert cli(section, "ipsw", "add", str(ipsw14_7)) == 2
    assert capsys.readouterr().err == (f"station: {ipsw14_7.name} is already in the cache "
                                       f"(station ipsw verify {ipsw14_7.name} checks it again)\n")
    assert cli(section, "ipsw", "remove", ipsw14_7.name, "nope.ipsw") == 2
    assert capsys.readouterr().err == f"station: nope.ipsw: not in the cache ({section.cache_dir})\n"
    assert (section.cache_dir / ipsw14_7.name).exists()  # all or nothing
    assert cli(section, "ipsw", "prune", "--keep", "0") == 2
    assert capsys.readouterr().err == "station: --keep 0: must be at least 1\n"


def test_trust_unlisted_from_the_command_line(cli, offline_section: IpswSection, ipsw14_7: Path, capsys) -> None:
    assert cli(offline_section, "ipsw", "add", str(ipsw14_7), "--trust-unlisted") == 0
    assert cli(offline_section, "ipsw", "list", "--json") == 0
    assert json.loads(capsys.readouterr().out.split("\n", 1)[1])[0]["state"] == "unlisted (trusted)"
