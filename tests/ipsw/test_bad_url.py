"""Issue 9, section 5: a bad URL, file name or server gets one line, a non-zero exit, and the cache as it was."""
from __future__ import annotations

import re
import shutil
import socket
import time
import urllib.parse
from pathlib import Path

import pytest

from station.config import IpswSection
from station.ipsw import transfer

from .conftest import Server, fails_one_line
from .factory import tree


def _header(length: str) -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n".encode()


def test_content_length_that_is_not_a_number(cli, section: IpswSection, cache_with_one: dict, scripted,
                                             capsys) -> None:
    scripted.steps = [_header("abc"), b"x" * 10]
    url = scripted.url + "/files/x.ipsw"
    fails_one_line(capsys, cli(section, "ipsw", "add", url),
                   rf"station: {re.escape(url)}: the server sent Content-Length 'abc', not a size\n")
    assert tree(section.cache_dir) == cache_with_one


@pytest.mark.parametrize(("url", "message"), [
    ("http://127.0.0.1:1/files/a\x00b.ipsw",
     r"http://127.0.0.1:1/files/a\\x00b.ipsw: a URL may not hold spaces or unprintable characters"),
    ("http://127.0.0.1:1/files/a b.ipsw",
     r"http://127.0.0.1:1/files/a b.ipsw: a URL may not hold spaces or unprintable characters"),
    ("http://[::1/x.ipsw", r"http://\[::1/x.ipsw: not a valid URL \(Invalid IPv6 URL\)"),
    ("http://[fe80::zz]/x.ipsw", r"http://\[fe80::zz\]/x.ipsw: not a valid URL \("),
    ("http://127.0.0.1:http/x.ipsw",
     r"http://127.0.0.1:http/x.ipsw: not a valid URL \(Port could not be cast to integer value as 'http'\)"),
    ("http://bücher.example/x.ipsw",
     r"http://bücher.example/x.ipsw: host 'bücher.example' is not ASCII \(write it as IDNA: xn--\.\.\.\)"),
    ("http://" + "ü" * 70 + "/x.ipsw", r"http://ü{70}/x.ipsw: host 'ü{40}\.\.\.' \(70 characters\) is not ASCII"),
    ("http://a..b/x.ipsw", r"http://a..b/x.ipsw: host 'a..b' is not a valid host name"),
    ("http://" + "a" * 64 + ".example/x.ipsw", r"http://a{64}.example/x.ipsw: host 'a{40}\.\.\.' \(72 characters\) "
                                               r"is not a valid host name"),
    ("http:///x.ipsw", r"http:///x.ipsw: no host in the URL"),
    ("ftp://127.0.0.1/x.ipsw", r"ftp://127.0.0.1/x.ipsw: unsupported URL scheme 'ftp' \(http or https only\)"),
    ("file:///tmp/x.ipsw", r"file:///tmp/x.ipsw: unsupported URL scheme 'file' \(http or https only\)"),
])
def test_a_bad_url_is_one_line(cli, section: IpswSection, cache_with_one: dict, capsys, url: str,
                               message: str) -> None:
    fails_one_line(capsys, cli(section, "ipsw", "add", url), "station: " + message)
    assert tree(section.cache_dir) == cache_with_one


def test_scheme_in_capitals_is_http(cli, server: Server, section: IpswSection, ipsw14_7: Path, capsys) -> None:
    url = server.publish(ipsw14_7, ("iPhone14,7",), "18.0.1", "22A3370").replace("http://", "HTTP://")
    assert cli(section, "ipsw", "add", url) == 0
    assert f"added {section.cache_dir / ipsw14_7.name}: iOS 18.0.1 (22A3370)" in capsys.readouterr().out
    assert (section.cache_dir / ipsw14_7.name).read_bytes() == ipsw14_7.read_bytes()


def test_a_path_other_than_ascii_is_sent_percent_encoded(cli, server: Server, section: IpswSection,
                                                         ipsw14_7: Path, capsys) -> None:
    copy = shutil.copy(ipsw14_7, ipsw14_7.with_name("iPhone14,7_18.0.1_22A3370_Größe_Restore.ipsw"))
    server.publish(copy, ("iPhone14,7",), "18.0.1", "22A3370")
    assert cli(section, "ipsw", "add", f"{server.url}/files/{copy.name}") == 0  # as pasted, not encoded
    assert (section.cache_dir / copy.name).read_bytes() == ipsw14_7.read_bytes()
    assert (f"/files/{copy.name}", None) in server.requests  # the server decoded what urllib sent


@pytest.mark.parametrize(("name", "message"), [
    ("a\nb.ipsw", r"'a\\nb.ipsw': a file name with a control character"),
    ("a\x00b.ipsw", r"'a\\x00b.ipsw': a file name with a control character"),
    (".hidden.ipsw", r"'.hidden.ipsw': a hidden file name \(it starts with '.'\)"),
    (".ipsw", r"'.ipsw': a hidden file name \(it starts with '.'\)"),
    ("x" * 230 + ".ipsw", r"'x{40}\.\.\.' \(235 characters\): a file name longer than 200 bytes"),
])
def test_a_bad_file_name_in_a_url_is_one_line(cli, server: Server, section: IpswSection, cache_with_one: dict,
                                              ipsw14_7: Path, capsys, name: str, message: str) -> None:
    server.files[name] = ipsw14_7  # served, so that only the name is wrong
    url = f"{server.url}/files/{urllib.parse.quote(name)}"
    fails_one_line(capsys, cli(section, "ipsw", "add", url, "--trust-unlisted"), "station: " + message)
    assert tree(section.cache_dir) == cache_with_one


@pytest.mark.parametrize("name", ["a\nb.ipsw", ".hidden.ipsw"])
def test_a_bad_file_name_of_a_path_is_one_line(cli, section: IpswSection, cache_with_one: dict, ipsw14_7: Path,
                                               tmp_path: Path, capsys, name: str) -> None:
    source = shutil.copy(ipsw14_7, tmp_path / name)
    fails_one_line(capsys, cli(section, "ipsw", "add", str(source), "--trust-unlisted"),
                   r"station: '(a\\nb|\.hidden)\.ipsw': a (file name with a control character|hidden file name)")
    assert tree(section.cache_dir) == cache_with_one


def test_a_server_that_sends_one_byte_every_half_second(cli, section: IpswSection, cache_with_one: dict, scripted,
                                                        monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(transfer, "RATE_WINDOW_S", 1.0)
    scripted.steps = [_header("8")] + [step for _ in range(8) for step in (b"x", 0.5)]
    url = scripted.url + "/files/x.ipsw"
    started = time.monotonic()
    fails_one_line(capsys, cli(section, "ipsw", "add", url),
                   rf"station: {re.escape(url)}: too slow: [0-9] bytes in [0-9.]+ s, less than "
                   rf"{transfer.MIN_RATE} bytes/s \(try again later, or another mirror\)\n")
    assert time.monotonic() - started < 2.5  # not the 4 s the server would take, nor retries
    assert tree(section.cache_dir) == cache_with_one


def test_a_dns_failure_is_one_line_not_a_resume(cli, section: IpswSection, cache_with_one: dict,
                                                capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    url = "http://ipsw.invalid/iPhone14,7_18.0.1_22A3370_Restore.ipsw"
    lookups: list[str] = []
    resolve = socket.getaddrinfo

    def counted(host: str, *args, **kwargs):  # the real resolver, counted
        lookups.append(host)
        return resolve(host, *args, **kwargs)
    monkeypatch.setattr(socket, "getaddrinfo", counted)
    fails_one_line(capsys, cli(section, "ipsw", "add", url),
                   rf"station: {re.escape(url)}: cannot resolve ipsw.invalid \(.+\)\n")
    assert lookups.count("ipsw.invalid") == 1  # no retries (a time bound was tight on a busy machine)
    assert tree(section.cache_dir) == cache_with_one  # no part file to resume


def test_a_refused_connection_leaves_no_empty_part(cli, offline_section: IpswSection, capsys) -> None:
    url = offline_section.catalog_url.replace("{identifier}", "x.ipsw")
    fails_one_line(capsys, cli(offline_section, "ipsw", "add", url), rf"station: {re.escape(url)}: .*refused")
    assert tree(offline_section.cache_dir) == {}
