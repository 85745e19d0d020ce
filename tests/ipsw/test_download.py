"""`add URL`: downloaded from the loopback server, resumed after a break, whole or not at all."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from station.config import IpswSection
from station.ipsw.cache import IpswCache
from station.ipsw.errors import IpswError

from .conftest import Server
from .factory import tree


def test_download_verifies_and_reports_progress(server: Server, section: IpswSection, ipsw14_7: Path) -> None:
    url = server.publish(ipsw14_7, ("iPhone14,7",), "18.0.1", "22A3370")
    seen: list[tuple[int, int | None]] = []
    entry = IpswCache(section).add(url, progress=lambda done, total: seen.append((done, total)))
    assert entry.state == "verified" and entry.path.read_bytes() == ipsw14_7.read_bytes()
    assert seen[-1] == (ipsw14_7.stat().st_size,) * 2


def test_a_broken_connection_resumes_in_the_same_run(server: Server, section: IpswSection, ipsw14_7: Path) -> None:
    url = server.publish(ipsw14_7, ("iPhone14,7",), "18.0.1", "22A3370")
    server.cut_after[ipsw14_7.name] = 100_000
    entry = IpswCache(section).add(url)
    assert entry.path.read_bytes() == ipsw14_7.read_bytes()
    ranges = [r for path, r in server.requests if path.startswith("/files/")]
    assert ranges == [None, "bytes=100000-"]


def test_an_interrupted_add_resumes_on_the_next_add(server: Server, section: IpswSection, ipsw14_7: Path) -> None:
    url = server.publish(ipsw14_7, ("iPhone14,7",), "18.0.1", "22A3370")
    server.cut_after[ipsw14_7.name] = 150_000
    once = IpswCache(dataclasses.replace(section, download_retries=0))
    with pytest.raises(IpswError, match=r"download interrupted at 150000 bytes .*run the same add again to resume"):
        once.add(url)
    assert once.entries() == []  # only the hidden part file
    assert (section.cache_dir / f".{ipsw14_7.name}.part").stat().st_size == 150_000
    entry = once.add(url)
    assert entry.state == "verified" and entry.path.read_bytes() == ipsw14_7.read_bytes()
    assert [r for p, r in server.requests if p.startswith("/files/")][-1] == "bytes=150000-"
    assert sorted(tree(section.cache_dir)) == sorted([ipsw14_7.name, ipsw14_7.name + ".verify.json"])


def test_a_changed_file_on_the_server_restarts_the_download(server: Server, section: IpswSection,
                                                           ipsw14_7: Path, tmp_path: Path) -> None:
    url = server.publish(ipsw14_7, ("iPhone14,7",), "18.0.1", "22A3370")
    part = section.cache_dir / f".{ipsw14_7.name}.part"
    section.cache_dir.mkdir()
    part.write_bytes(b"stale bytes of another file")
    (part.parent / (part.name + ".json")).write_text(json.dumps({"url": url, "validator": '"old"'}))
    entry = IpswCache(section).add(url)
    assert entry.path.read_bytes() == ipsw14_7.read_bytes()


def test_http_error_is_one_line_and_leaves_nothing(server: Server, section: IpswSection) -> None:
    with pytest.raises(IpswError, match=r"^http://127.0.0.1:\d+/files/gone.ipsw: HTTP 404 "):
        IpswCache(section).add(server.url + "/files/gone.ipsw")
    assert tree(section.cache_dir) == {}
