"""Signing status: each cached build is signed or not as the catalog says; the choice prefers a signed
build, and a phone whose only build Apple no longer signs is refused before its restore starts."""
from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import pytest

from station.config import IpswSection
from station.ipsw.cache import IpswCache
from station.ipsw.errors import NotSignedError
from station.machine import State

from .conftest import Server
from .factory import build_ipsw, synthetic_manifest
from .one_phone import OnePhone, restore_one


def _publish(server: Server, tmp_path: Path, version: str, build: str, signed: bool, seed: int,
             add_to: IpswCache | None = None, model: str = "iPhone14,7") -> str:
    path = build_ipsw(tmp_path / f"{model}_{version}_{build}_Restore.ipsw",
                      synthetic_manifest((model,), version, build), seed=seed)
    url = server.publish(path, (model,), version, build, signed=signed)
    if add_to is not None:
        add_to.add(str(path))
    return url


def test_list_says_which_cached_builds_apple_signs(cli, server: Server, section: IpswSection,
                                                   tmp_path: Path, capsys) -> None:
    cache = IpswCache(section)
    _publish(server, tmp_path, "17.5.1", "21F90", False, 1, cache)
    _publish(server, tmp_path, "18.0.1", "22A3370", True, 2, cache)
    unlisted = build_ipsw(tmp_path / "iPhone15,4_18.0.1_22A3370_Restore.ipsw", synthetic_manifest(("iPhone15,4",)))
    cache.add(str(unlisted), trust_unlisted=True)
    assert cli(section, "ipsw", "list", "--json") == 0
    assert [(e["build"], e["signed"]) for e in json.loads(capsys.readouterr().out)] == [
        ("21F90", False), ("22A3370", True), ("22A3370", None)]
    assert cli(section, "ipsw", "list") == 0
    table = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert table[0][4:] == ["SIZE", "SIGNED", "STATE"]
    assert [row[6] for row in table[1:]] == ["NO", "yes", "?"]  # after the size, "0.3 MB"


def test_the_status_follows_the_catalog(server: Server, section: IpswSection, tmp_path: Path) -> None:
    """Apple stops signing a build: the next refresh of the catalog says so, nothing is hashed again."""
    cache = IpswCache(section)
    _publish(server, tmp_path, "18.0.1", "22A3370", True, 1, cache)
    assert [e.signed for e in cache.entries()] == [True]
    server.catalog["iPhone14,7"] = [dict(f, signed=False) for f in server.catalog["iPhone14,7"]]
    cache.refresh_catalog(("iPhone14,7",))
    assert [e.signed for e in cache.entries()] == [False]


def test_a_signed_build_is_chosen_before_a_newer_unsigned_one(server: Server, section: IpswSection,
                                                             tmp_path: Path) -> None:
    cache = IpswCache(section)
    _publish(server, tmp_path, "17.6", "21G80", True, 1, cache)
    _publish(server, tmp_path, "18.0", "22A3354", False, 2, cache)  # a withdrawn release: newer, but refused
    chosen = cache.select("iPhone14,7")
    assert (chosen.build, chosen.signed) == ("21G80", True)


def test_only_unsigned_builds_are_refused_with_what_to_add(server: Server, section: IpswSection,
                                                          tmp_path: Path) -> None:
    cache = IpswCache(section)
    _publish(server, tmp_path, "17.5.1", "21F90", False, 1, cache)
    url = _publish(server, tmp_path, "18.1", "22B83", True, 2)  # published, not cached
    cache.refresh_catalog(("iPhone14,7",))
    with pytest.raises(NotSignedError) as refused:
        cache.select("iPhone14,7")
    assert str(refused.value) == "NOT SIGNED 21F90: add iOS 18.1"
    assert refused.value.log_message.startswith("iOS 17.5.1 (21F90) for iPhone14,7 is no longer signed by Apple "
                                                "(catalog fetched ")
    assert refused.value.log_message.endswith(f"; add iOS 18.1 (22B83): station ipsw add {url}")
    pinned = IpswCache(dataclasses.replace(section, pin={"iPhone14,7": "17.5.1"}))
    with pytest.raises(NotSignedError, match=r"^NOT SIGNED 21F90: unpin$") as refused:
        pinned.select("iPhone14,7")
    assert 'pin.iPhone14,7 = "17.5.1" names it: pin a signed version, or remove the pin' in refused.value.log_message


def test_match_says_not_signed(cli, server: Server, section: IpswSection, tmp_path: Path, capsys) -> None:
    _publish(server, tmp_path, "17.5.1", "21F90", False, 1, IpswCache(section))
    assert cli(section, "ipsw", "match", "iPhone14,7") == 1
    assert capsys.readouterr().err.startswith("station: NOT SIGNED 21F90: iOS 17.5.1 (21F90) for iPhone14,7 is no "
                                              "longer signed by Apple")


async def test_the_station_refuses_an_unsigned_build_before_the_restore(server: Server, section: IpswSection,
                                                                        tmp_path: Path) -> None:
    cache = IpswCache(section)
    _publish(server, tmp_path, "17.5.1", "21F90", False, 1, cache)
    _publish(server, tmp_path, "18.1", "22B83", True, 2)
    await asyncio.to_thread(cache.refresh_catalog, ("iPhone14,7",))
    phones = OnePhone()
    station = await restore_one(cache, phones)
    assert station.ports[1].state is State.FAILED
    assert station.ports[1].reason == "NOT SIGNED 21F90: add iOS 18.1"  # the detail screen shows it
    assert phones.restores == []  # the phone was never touched
