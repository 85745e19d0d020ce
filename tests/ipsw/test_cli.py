"""`station ipsw ...` end to end, in-process, against the loopback server."""
from __future__ import annotations

import json
import re
from pathlib import Path

from station.config import IpswSection

from .conftest import Server, fails_one_line
from .factory import build_ipsw, synthetic_manifest, tree


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
    assert table[0].split() == ["FILE", "BUILD", "iOS", "MODELS", "SIZE", "SIGNED", "STATE"]
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


def test_remove_unknown_and_bad_keep_are_one_line(cli, server: Server, section: IpswSection, ipsw14_7: Path,
                                                  capsys) -> None:
    server.publish(ipsw14_7, ("iPhone14,7",), "18.0.1", "22A3370")
    assert cli(section, "ipsw", "add", str(ipsw14_7)) == 0
    capsys.readouterr()
    assert cli(section, "ipsw", "remove", ipsw14_7.name, "nope.ipsw") == 1  # nothing to remove: failed
    assert capsys.readouterr().err == f"station: nope.ipsw: not in the cache ({section.cache_dir})\n"
    assert (section.cache_dir / ipsw14_7.name).exists()  # all or nothing
    assert cli(section, "ipsw", "prune", "--keep", "0") == 2
    assert capsys.readouterr().err == "station: --keep 0: must be at least 1\n"


def test_trust_unlisted_from_the_command_line(cli, offline_section: IpswSection, ipsw14_7: Path, capsys) -> None:
    assert cli(offline_section, "ipsw", "add", str(ipsw14_7), "--trust-unlisted") == 0
    assert cli(offline_section, "ipsw", "list", "--json") == 0
    assert json.loads(capsys.readouterr().out.split("\n", 1)[1])[0]["state"] == "unlisted (trusted)"


def test_adding_a_cached_file_again_succeeds(cli, server: Server, section: IpswSection, ipsw14_7: Path,
                                             capsys) -> None:
    """Provisioning scripts re-run `ipsw add`: the same bytes already cached and verified are a success."""
    url = server.publish(ipsw14_7, ("iPhone14,7",), "18.0.1", "22A3370")
    assert cli(section, "ipsw", "add", str(ipsw14_7)) == 0
    capsys.readouterr()
    before = tree(section.cache_dir)
    cached = section.cache_dir / ipsw14_7.name
    for source in (str(ipsw14_7), url, str(cached)):
        assert cli(section, "ipsw", "add", source) == 0
        assert capsys.readouterr() == (f"already cached: {cached}: iOS 18.0.1 (22A3370) for iPhone14,7, "
                                       "0.3 MB, verified\n", "")
    assert tree(section.cache_dir) == before
    assert not [path for path, _ in server.requests if path.startswith("/files/")]  # nothing downloaded


def test_an_unlisted_url_added_again_is_already_cached(cli, offline_section: IpswSection, ipsw14_7: Path,
                                                       scripted, capsys) -> None:
    data = ipsw14_7.read_bytes()
    scripted.steps = [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(data), data]
    url = f"{scripted.url}/{ipsw14_7.name}"
    assert cli(offline_section, "ipsw", "add", url, "--trust-unlisted") == 0
    capsys.readouterr()
    scripted.steps = [b"HTTP/1.1 500 Not Again\r\nContent-Length: 0\r\n\r\n"]  # a second download would fail
    assert cli(offline_section, "ipsw", "add", url, "--trust-unlisted") == 0
    assert capsys.readouterr().out.startswith(f"already cached: {offline_section.cache_dir / ipsw14_7.name}: ")


def test_another_file_under_a_cached_name_is_refused(cli, server: Server, section: IpswSection, ipsw14_7: Path,
                                                     tmp_path: Path, capsys) -> None:
    server.publish(ipsw14_7, ("iPhone14,7",), "18.0.1", "22A3370")
    assert cli(section, "ipsw", "add", str(ipsw14_7)) == 0
    capsys.readouterr()
    before = tree(section.cache_dir)
    for directory in ("same-size", "shorter"):
        (tmp_path / directory).mkdir()
    same_size = build_ipsw(tmp_path / "same-size" / ipsw14_7.name, synthetic_manifest(), seed=9)
    shorter = build_ipsw(tmp_path / "shorter" / ipsw14_7.name, synthetic_manifest(), os_size=1000)
    for source in (same_size, shorter):
        fails_one_line(capsys, cli(section, "ipsw", "add", str(source)),
                       rf"station: {re.escape(ipsw14_7.name)} is already in the cache, and {re.escape(str(source))} "
                       r"is another file: station ipsw remove it first to add this one")
        assert tree(section.cache_dir) == before


def test_a_cached_file_that_failed_is_not_already_cached(cli, server: Server, section: IpswSection,
                                                         ipsw14_7: Path, capsys) -> None:
    server.publish(ipsw14_7, ("iPhone14,7",), "18.0.1", "22A3370")
    assert cli(section, "ipsw", "add", str(ipsw14_7)) == 0
    capsys.readouterr()
    cached = section.cache_dir / ipsw14_7.name
    cached.write_bytes(cached.read_bytes())  # the same bytes, but the stored result no longer fits the file
    fails_one_line(capsys, cli(section, "ipsw", "add", str(ipsw14_7)),
                   rf"station: {re.escape(ipsw14_7.name)} is already in the cache, changed \(verify again\): "
                   rf"station ipsw verify {re.escape(ipsw14_7.name)} checks it")
    data = bytearray(cached.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the OS image: verify finds the wrong digest
    cached.write_bytes(bytes(data))
    assert cli(section, "ipsw", "verify", ipsw14_7.name) != 0
    capsys.readouterr()
    fails_one_line(capsys, cli(section, "ipsw", "add", str(ipsw14_7)),
                   rf"station: {re.escape(ipsw14_7.name)} is already in the cache, failed: .*wrong digest.*: "
                   rf"station ipsw remove {re.escape(ipsw14_7.name)}, then add it again")


def test_offline_add_does_not_claim_a_saved_catalog_it_never_had(cli, offline_section: IpswSection,
                                                                 ipsw14_7: Path, capsys) -> None:
    assert cli(offline_section, "ipsw", "add", str(ipsw14_7), "--trust-unlisted") == 0
    err = capsys.readouterr().err
    assert "saved copy" not in err
    assert re.fullmatch(r"catalog not refreshed: iPhone14,7: http://127\.0\.0\.1:\d+/iPhone14,7: .*; "
                        r"no saved catalog to check it against\n", err), err


def test_offline_add_names_the_saved_catalog_it_used(cli, server: Server, section: IpswSection,
                                                     offline_section: IpswSection, ipsw14_7: Path, capsys) -> None:
    server.catalog["iPhone14,7"] = []
    assert cli(section, "ipsw", "catalog", "refresh", "iPhone14,7") == 0
    capsys.readouterr()
    assert cli(offline_section, "ipsw", "add", str(ipsw14_7), "--trust-unlisted") == 0
    err = capsys.readouterr().err
    assert re.fullmatch(r"catalog not refreshed: .*; used the saved copy \(catalog fetched \d{4}-\d\d-\d\d\)\n",
                        err), err


# Exit codes (README "Exit codes and JSON output"): 2 for a command line that is wrong in itself,
# found before the cache, a file or the network is touched; 1 for an operation that failed.
USAGE, FAILED = 2, 1


def test_a_bad_command_line_exits_2_and_changes_nothing(cli, section: IpswSection, cache_with_one: dict,
                                                        tmp_path: Path, capsys) -> None:
    for argv, pattern in [
        (("add", "ftp://127.0.0.1/x.ipsw"), r"station: ftp://127.0.0.1/x.ipsw: unsupported URL scheme 'ftp'"),
        (("add", "http://127.0.0.1/a b.ipsw"), r"station: http://127.0.0.1/a b.ipsw: a URL may not hold spaces"),
        (("add", "http://127.0.0.1/files/"), r"station: files: not an .ipsw file name"),
        # Named, never opened: an absent file with a bad name is a bad name, not a missing file.
        (("add", str(tmp_path / ".hidden.ipsw")), r"station: '.hidden.ipsw': a hidden file name"),
        (("add", str(tmp_path / "firmware.zip")), r"station: firmware.zip: not an .ipsw file name"),
        (("prune", "--keep", "0"), r"station: --keep 0: must be at least 1"),
        (("catalog", "refresh", "iPhone14,7", "a/b"), r"station: 'a/b': not a ProductType like iPhone14,2"),
        (("match", "nonsense"), r"station: nonsense: expected a ProductType"),
    ]:
        code = cli(section, "ipsw", *argv)
        fails_one_line(capsys, code, pattern)
        assert code == USAGE, argv
        assert tree(section.cache_dir) == cache_with_one, argv


def test_a_failed_operation_exits_1_and_changes_nothing(cli, server: Server, section: IpswSection,
                                                        cache_with_one: dict, tmp_path: Path, capsys) -> None:
    (cached,) = [name for name in cache_with_one if name.endswith(".ipsw")]
    other = tmp_path / "other"
    other.mkdir()
    conflicting = build_ipsw(other / cached, synthetic_manifest(("iPhone15,4",)), seed=7)
    copy = build_ipsw(tmp_path / "iPhone15,4_copy_Restore.ipsw", synthetic_manifest(("iPhone15,4",)), seed=8)
    for argv, pattern in [
        (("add", f"{server.url}/files/missing.ipsw"), r"station: http://127.0.0.1:\d+/files/missing.ipsw: HTTP 404"),
        (("add", str(tmp_path / "missing.ipsw")), r"station: .*missing.ipsw: No such file or directory"),
        (("add", str(copy)), r"station: iPhone15,4_copy_Restore.ipsw: size \d+ bytes, published \d+|"
                             r"station: iPhone15,4_copy_Restore.ipsw: wrong digest"),
        (("add", str(conflicting)), rf"station: {re.escape(cached)} is already in the cache, and .* is another file"),
        (("verify", "nope.ipsw"), r"station: nope.ipsw: not in the cache"),
        (("remove", "nope.ipsw"), r"station: nope.ipsw: not in the cache"),
        (("match", "iPhone14,7"), r"station: NO IPSW iPhone14,7: "),
        (("catalog", "refresh", "iPhone12,1"), r"station: catalog not refreshed: iPhone12,1: .*HTTP 404"),
    ]:
        code = cli(section, "ipsw", *argv)
        fails_one_line(capsys, code, pattern)
        assert code == FAILED, argv
        assert tree(section.cache_dir) == cache_with_one, argv


def test_a_file_that_fails_verification_exits_1(cli, section: IpswSection, cache_with_one: dict, capsys) -> None:
    (name,) = [n for n in cache_with_one if n.endswith(".ipsw")]
    path = section.cache_dir / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the OS image: the digest is wrong, the zip still reads
    path.write_bytes(bytes(data))
    for argv in (("verify", name), ("verify", "--all")):
        code = cli(section, "ipsw", *argv)
        fails_one_line(capsys, code, rf"station: {re.escape(name)}: wrong digest")
        assert code == FAILED, argv


class _Http404:
    """Equal to the one line of a catalog fetch that got HTTP 404 for iPhone12,1."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and re.fullmatch(r"iPhone12,1: http://\S+: HTTP 404 .*", other) is not None


ANY_404 = _Http404()


def _entry_keys() -> set[str]:
    return {"file", "path", "size", "state", "build", "version", "models", "sha1", "sha256", "checked_at", "signed"}


def test_json_of_the_commands_that_change_the_cache(cli, server: Server, section: IpswSection, tmp_path: Path,
                                                    capsys) -> None:
    older = build_ipsw(tmp_path / "iPhone14,7_17.5.1_21F90_Restore.ipsw",
                       synthetic_manifest(("iPhone14,7",), "17.5.1", "21F90"), seed=2)
    newer = build_ipsw(tmp_path / "iPhone14,7_18.0.1_22A3370_Restore.ipsw", synthetic_manifest())
    server.publish(older, ("iPhone14,7",), "17.5.1", "21F90")
    server.publish(newer, ("iPhone14,7",), "18.0.1", "22A3370")
    cache = section.cache_dir

    assert cli(section, "ipsw", "catalog", "refresh", "iPhone14,7", "iPhone12,1", "--json") == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == {"catalog": str(cache / "catalog.json"), "entries": 2, "models": ["iPhone14,7"],
                               "refreshed": ["iPhone14,7"], "failed": {"iPhone12,1": ANY_404}}
    assert "catalog fetch failed: iPhone12,1: " in err  # and on stderr, as without --json

    assert cli(section, "ipsw", "add", str(older), "--json") == 0
    added = json.loads(capsys.readouterr().out)
    assert set(added) == _entry_keys() | {"already_cached"}
    assert (added["file"], added["path"], added["state"], added["build"], added["signed"], added["already_cached"]) \
        == (older.name, str(cache / older.name), "verified", "21F90", True, False)
    assert cli(section, "ipsw", "add", str(older), "--json") == 0
    assert json.loads(capsys.readouterr().out) == {**added, "already_cached": True}
    assert cli(section, "ipsw", "add", str(newer), "--json") == 0
    capsys.readouterr()

    assert cli(section, "ipsw", "verify", "--all", "--json") == 0
    verified = json.loads(capsys.readouterr().out)
    assert [(e["file"], e["state"], e["problem"]) for e in verified] == [
        (older.name, "verified", None), (newer.name, "verified", None)]
    assert set(verified[0]) == _entry_keys() | {"problem"}
    assert cli(section, "ipsw", "verify", newer.name, "--json") == 0
    assert [e["file"] for e in json.loads(capsys.readouterr().out)] == [newer.name]  # an array for one file too

    removed = [{"file": older.name, "path": str(cache / older.name)}]
    assert cli(section, "ipsw", "prune", "--keep", "1", "--dry-run", "--json") == 0
    assert json.loads(capsys.readouterr().out) == removed
    assert (cache / older.name).exists()
    assert cli(section, "ipsw", "prune", "--keep", "1", "--json") == 0
    assert json.loads(capsys.readouterr().out) == removed
    assert not (cache / older.name).exists()
    assert cli(section, "ipsw", "prune", "--keep", "1", "--json") == 0
    assert json.loads(capsys.readouterr().out) == []

    assert cli(section, "ipsw", "remove", newer.name, "--json") == 0
    assert json.loads(capsys.readouterr().out) == [{"file": newer.name, "path": str(cache / newer.name)}]


def test_verify_json_lists_a_failed_file_with_its_problem(cli, section: IpswSection, cache_with_one: dict,
                                                          capsys) -> None:
    (name,) = [n for n in cache_with_one if n.endswith(".ipsw")]
    path = section.cache_dir / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert cli(section, "ipsw", "verify", "--all", "--json") == FAILED
    out, err = capsys.readouterr()
    [entry] = json.loads(out)
    assert entry["file"] == name and entry["state"].startswith("failed: ") and "wrong digest" in entry["problem"]
    assert err.count("\n") == 1 and err.startswith(f"station: {name}: wrong digest")


def test_a_failed_command_prints_no_json(cli, section: IpswSection, cache_with_one: dict, capsys) -> None:
    for argv in (("remove", "nope.ipsw"), ("add", "/nowhere/x.ipsw"), ("catalog", "refresh", "iPhone12,1")):
        fails_one_line(capsys, cli(section, "ipsw", *argv, "--json"), r"station: ")
