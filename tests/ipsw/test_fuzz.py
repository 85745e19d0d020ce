"""Issue 9, section 5, fuzzed: whatever the manifest, URL or server reply, `station ipsw add` ends with one
line on stderr, a non-zero exit, and the cache as it was.

Each test drives the real command (``station.cli.main`` through the ``cli`` fixture) against one cache
that holds a verified IPSW, for every generated input in turn: the cache must still be as it was after
each one. No input here can succeed (nothing is published, nothing is trusted), so every example fails.
"""
from __future__ import annotations

import dataclasses
import plistlib
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from station.config import IpswSection

from .conftest import Server
from .factory import deep_binary_plist, os_bytes, synthetic_manifest, tree

# Fixed examples (derandomize), no database in the shared checkout; the fixtures are shared by all the
# examples of a test on purpose: the one cache must be as it was after every one of them.
FUZZ = settings(max_examples=400, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])

VALID = plistlib.loads(synthetic_manifest())
NAME = "iPhone14,7_18.0.1_22A3370_Restore.ipsw"


def _fails_quietly(cli, section: IpswSection, capsys, before: dict, *argv: str) -> str:
    """Run `station *argv`: one line on stderr, nothing on stdout, a non-zero exit, the cache as it was."""
    capsys.readouterr()
    code = cli(section, *argv)
    out, err = capsys.readouterr()
    assert code != 0, (argv, out)
    assert out == "", (argv, out)
    assert err.startswith("station: ") and err.endswith("\n") and err.count("\n") == 1, (argv, err)
    assert tree(section.cache_dir) == before, (argv, err)
    return err


# -- manifests --------------------------------------------------------------------------------------

plist_scalars = st.one_of(
    st.text(max_size=30), st.integers(-(2**63), 2**63 - 1), st.booleans(), st.floats(allow_nan=False),
    st.binary(max_size=20), st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1)),
    st.sampled_from(["18.0.1", "22A3370", "iPhone14,7", "0x8110", "Erase", "18.0\n1", ""]),
    st.integers(4000, 6000).map(lambda digits: "1" * digits))
plist_values = st.recursive(plist_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)), max_leaves=12)

# Where a value can go wrong: each a path of keys/indexes into the valid manifest.
FIELDS = [("ProductVersion",), ("ProductBuildVersion",), ("SupportedProductTypes",), ("SupportedProductTypes", 0),
          ("BuildIdentities",), ("BuildIdentities", 2), ("BuildIdentities", 2, "Info"),
          ("BuildIdentities", 2, "Info", "DeviceClass"), ("BuildIdentities", 2, "Info", "Variant"),
          ("BuildIdentities", 2, "Info", "RestoreBehavior"), ("BuildIdentities", 2, "ApChipID"),
          ("BuildIdentities", 2, "ApBoardID"), ("BuildIdentities", 2, "Manifest"),
          ("BuildIdentities", 2, "Manifest", "OS"), ("BuildIdentities", 2, "Manifest", "OS", "Info", "Path")]


def _replaced(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    manifest = plistlib.loads(synthetic_manifest())
    *parents, last = path
    holder = manifest
    for key in parents:
        holder = holder[key]
    if value is _DELETE:
        del holder[last]
    else:
        holder[last] = value
    return manifest


_DELETE = object()


def _dumps(manifest: dict[str, Any], binary: bool) -> bytes:
    """In the format asked for, else the other: XML holds no control characters, binary no integer over 64 bits."""
    formats = (plistlib.FMT_BINARY, plistlib.FMT_XML) if binary else (plistlib.FMT_XML, plistlib.FMT_BINARY)
    for fmt in formats:
        try:
            return plistlib.dumps(manifest, fmt=fmt)
        except (OverflowError, TypeError, ValueError):
            pass
    return b"neither format holds it"


def _nested(depth: int, binary: bool) -> bytes:
    if binary:
        return deep_binary_plist(depth)
    return synthetic_manifest().replace(b"<string>22A3370</string>", b"<array>" * depth + b"</array>" * depth, 1)


wrong_types = st.builds(lambda path, value, binary: _dumps(_replaced(path, value), binary),
                        st.sampled_from(FIELDS), st.one_of(plist_values, st.just(_DELETE)), st.booleans())
byte_flips = st.builds(lambda binary, flips: _flipped(_dumps(VALID, binary), flips), st.booleans(),
                       st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1,
                                max_size=6))
truncations = st.builds(lambda binary, at: (data := _dumps(VALID, binary))[:int(at * len(data))], st.booleans(),
                        st.floats(0, 1, exclude_max=True))
deep = st.builds(_nested, st.integers(500, 20_000), st.booleans())
huge_strings = st.builds(lambda path, size, char: _dumps(_replaced(path, char * size), False),
                         st.sampled_from(FIELDS), st.integers(1_000, 200_000), st.characters())
garbage = st.one_of(st.binary(max_size=300), st.builds(lambda tail: b"bplist00" + tail, st.binary(max_size=300)),
                    st.builds(lambda tail: b"<?xml version='1.0'?><plist>" + tail, st.binary(max_size=300)))
manifests = st.one_of(wrong_types, byte_flips, truncations, deep, huge_strings, garbage)


def _flipped(data: bytes, flips: list[tuple[float, int]]) -> bytes:
    mutable = bytearray(data)
    for where, mask in flips:
        mutable[int(where * len(mutable))] ^= mask
    return bytes(mutable)


def _zip(path: Path, manifest: bytes, stored: bool) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("BuildManifest.plist", manifest,
                         compress_type=zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED)
        archive.writestr("erase.dmg", b"ramdisk" * 100)
        archive.writestr("os.dmg", os_bytes(2_000))
    return path


@settings(FUZZ, max_examples=800)
@given(manifest=manifests, stored=st.booleans())
def test_fuzzed_manifests(cli, section: IpswSection, cache_with_one: dict, tmp_path: Path, capsys,
                          manifest: bytes, stored: bool) -> None:
    ipsw = _zip(tmp_path / NAME, manifest, stored)
    _fails_quietly(cli, section, capsys, cache_with_one, "ipsw", "add", str(ipsw))


@FUZZ
@given(flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=4),
       cut=st.one_of(st.none(), st.floats(0, 1, exclude_max=True)), stored=st.booleans())
def test_fuzzed_zips(cli, section: IpswSection, cache_with_one: dict, tmp_path: Path, capsys,
                     flips: list[tuple[float, int]], cut: float | None, stored: bool) -> None:
    """Byte flips and cuts anywhere in the zip: headers, the central directory, the manifest's deflate stream."""
    data = _flipped(_zip(tmp_path / NAME, synthetic_manifest(), stored).read_bytes(), flips)
    ipsw = tmp_path / NAME
    ipsw.write_bytes(data if cut is None else data[:int(cut * len(data))])
    _fails_quietly(cli, section, capsys, cache_with_one, "ipsw", "add", str(ipsw))


# -- URLs -------------------------------------------------------------------------------------------

odd = st.sampled_from(["", "\x00", "\n", " ", "%", "%00", "%0A", "%2F", "[", "]", ":", "@", "#", "?", "..", ".",
                       "ü", "\u2028", "\udcff", "xn--", "-", "\\", "/"])
# Mostly what URLs are made of, so that many get as far as a request; some anything at all.
_ascii = st.text(st.characters(codec="ascii", categories=("L", "N", "P", "S")), max_size=12)
url_text = st.one_of(_ascii, _ascii, _ascii, st.text(max_size=8))
_known_hosts = st.sampled_from(["127.0.0.1", "localhost", "[::1]", "ipsw.invalid", "[::1", "[fe80::zz]",
                                "bücher.example", "a..b", "a" * 64, "", "user:pw@127.0.0.1", "1.2.3.4.5"])
hosts = st.one_of(_known_hosts, _known_hosts, _ascii, st.builds(str.__add__, url_text, odd))
ports = st.one_of(st.just(""), st.builds(lambda p: f":{p}", st.one_of(st.integers(0, 70_000), url_text)))
names = st.one_of(st.builds(lambda a: a + ".ipsw", _ascii), st.builds(lambda a: a + ".ipsw", _ascii),
                  st.sampled_from(["x.ipsw", ".x.ipsw", ".ipsw", "x.IPSW", "x", "a%0Ab.ipsw", "a%00.ipsw",
                                   "%2E%2E.ipsw", "x" * 300 + ".ipsw", "Größe.ipsw", ""]),
                  st.builds(lambda a, b: a + b + ".ipsw", url_text, odd))
schemes = st.one_of(st.sampled_from(["http", "https", "HTTP", "hTtPs"]),
                    st.sampled_from(["ftp", "file", "data", "h", "http:", "1http"]))


@FUZZ
@example(scheme="http", host="ipsw.invalid", port="", path="a", name="x.ipsw", tail="")  # DNS: no
@example(scheme="HTTP", host="localhost", port=":1", path="a", name="x.ipsw", tail="")  # nobody listens
@example(scheme="https", host="[::1]", port=":1", path="a", name="x.ipsw", tail="")
@example(scheme="http", host="127.0.0.1", port=":99999", path="a", name="x.ipsw", tail="")
@given(scheme=schemes, host=hosts, port=ports, path=_ascii, name=names,
       tail=st.one_of(st.just(""), st.just(""), url_text))
def test_fuzzed_urls(cli, section: IpswSection, cache_with_one: dict, tmp_path: Path, capsys,
                     monkeypatch: pytest.MonkeyPatch, scheme: str, host: str, port: str, path: str, name: str,
                     tail: str) -> None:
    """Hosts other than this machine fail as an offline station's do: DNS does not know them."""
    monkeypatch.chdir(tmp_path)  # a URL taken for a relative path finds nothing here
    once = dataclasses.replace(section, download_retries=0)
    url = f"{scheme}://{host}{port}/{path}/{name}{tail}"
    _fails_quietly(cli, once, capsys, cache_with_one, "ipsw", "add", url)


@FUZZ
@given(path=url_text, name=names)
def test_fuzzed_urls_on_the_test_server(cli, server: Server, section: IpswSection, cache_with_one: dict,
                                        capsys, path: str, name: str) -> None:
    once = dataclasses.replace(section, download_retries=0)
    _fails_quietly(cli, once, capsys, cache_with_one, "ipsw", "add", f"{server.url}/{path}/{name}")


header_values = st.one_of(st.sampled_from(["abc", "-1", "1_000", " 12 ", "1e3", "0x10", "99999999999999999999",
                                           "", "\u0661\u0662"]), st.text(max_size=10), st.integers(0, 400).map(str))


@FUZZ
@given(status=st.sampled_from([b"200 OK", b"206 Partial Content", b"301 Moved", b"404 Not Found", b"500 Oops",
                               b"200", b"999 What", b"abc"]),
       length=st.one_of(st.none(), header_values), body=st.binary(max_size=400),
       extra=st.sampled_from([b"", b"Transfer-Encoding: chunked\r\n", b"Location: ftp://x/y.ipsw\r\n",
                              b"ETag: \"\x01\"\r\n", b"Content-Range: bytes 0-1/2\r\n"]))
def test_fuzzed_server_replies(cli, section: IpswSection, cache_with_one: dict, scripted, capsys,
                               status: bytes, length: str | None, body: bytes, extra: bytes) -> None:
    """Whatever the reply, one line; a download cut short may leave its part to resume, nothing else."""
    header = b"" if length is None else b"Content-Length: " + length.encode("utf-8", "surrogateescape") + b"\r\n"
    scripted.steps = [b"HTTP/1.1 " + status + b"\r\n" + header + extra + b"Connection: close\r\n\r\n" + body]
    once = dataclasses.replace(section, download_retries=0)
    capsys.readouterr()
    code = cli(once, "ipsw", "add", scripted.url + "/files/x.ipsw")
    out, err = capsys.readouterr()
    assert code != 0 and out == "" and err.startswith("station: ") and err.count("\n") == 1, err
    after = tree(section.cache_dir)
    if "run the same add again to resume" in err:
        resumable = {".x.ipsw.part", ".x.ipsw.part.json"}
        assert set(after) - set(cache_with_one) <= resumable and ".x.ipsw.part" in after, err
        for leftover in resumable:
            (section.cache_dir / leftover).unlink(missing_ok=True)
    else:
        assert after == cache_with_one, err
