"""The catalog: fetched from a (loopback) ipsw.me-shaped server, saved with its dates, used offline."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from station.config import ConfigError, IpswSection
from station.ipsw import catalog
from station.ipsw.cache import CATALOG_FILE, IpswCache
from station.ipsw.errors import IpswError

from .conftest import Server


def _firmware(model: str, build: str, version: str, url: str, size: int = 10) -> dict:
    return {"identifier": model, "buildid": build, "version": version, "url": url, "filesize": size,
            "sha1sum": "AA" * 20, "sha256sum": "bb" * 32, "signed": False}


def test_refresh_saves_entries_and_fetch_dates(server: Server, section: IpswSection) -> None:
    url = "https://updates.example/iPhone13,2,iPhone13,3_18.0.1_22A3370_Restore.ipsw"
    server.catalog = {"iPhone13,2": [_firmware("iPhone13,2", "22A3370", "18.0.1", url)],
                      "iPhone13,3": [_firmware("iPhone13,3", "22A3370", "18.0.1", url)]}
    fresh, failures = IpswCache(section).refresh_catalog(("iPhone13,2", "iPhone13,3"))
    assert failures == {}
    saved = catalog.load(section.cache_dir / CATALOG_FILE)
    assert saved == fresh
    (entry,) = saved.entries  # one IPSW listed under two identifiers
    assert entry.models == ("iPhone13,2", "iPhone13,3") and entry.sha1 == "aa" * 20
    assert entry.file_name == "iPhone13,2,iPhone13,3_18.0.1_22A3370_Restore.ipsw"
    assert set(saved.fetched) == {"iPhone13,2", "iPhone13,3"}
    assert server.requests[0][0] in ("/v4/device/iPhone13,2", "/v4/device/iPhone13,3")


def test_offline_keeps_the_saved_copy(server: Server, section: IpswSection, offline_section: IpswSection) -> None:
    server.catalog = {"iPhone14,7": [_firmware("iPhone14,7", "22A3370", "18.0.1", "https://x/a.ipsw")]}
    IpswCache(section).refresh_catalog(("iPhone14,7",))
    offline = IpswCache(offline_section)  # same cache_dir, unreachable URL
    before = (section.cache_dir / CATALOG_FILE).read_bytes()
    with pytest.raises(IpswError, match=r"^catalog not refreshed: iPhone14,7: http://127\.0\.0\.1:\d+/iPhone14,7"):
        offline.refresh_catalog(("iPhone14,7",))
    assert (section.cache_dir / CATALOG_FILE).read_bytes() == before
    assert offline.catalog().newest_for("iPhone14,7").build == "22A3370"  # type: ignore[union-attr]


def test_a_refresh_replaces_a_models_list_and_keeps_others(server: Server, section: IpswSection) -> None:
    server.catalog = {"iPhone14,7": [_firmware("iPhone14,7", "21F90", "17.5.1", "https://x/old.ipsw")],
                      "iPhone15,4": [_firmware("iPhone15,4", "21F90", "17.5.1", "https://x/other.ipsw")]}
    cache = IpswCache(section)
    cache.refresh_catalog(("iPhone14,7", "iPhone15,4"))
    server.catalog["iPhone14,7"] = [_firmware("iPhone14,7", "22A3370", "18.0.1", "https://x/new.ipsw")]
    fresh, _ = cache.refresh_catalog(("iPhone14,7",))
    assert sorted(e.url for e in fresh.entries) == ["https://x/new.ipsw", "https://x/other.ipsw"]


def test_partial_failure_is_reported_not_fatal(server: Server, section: IpswSection) -> None:
    server.catalog = {"iPhone14,7": [_firmware("iPhone14,7", "22A3370", "18.0.1", "https://x/a.ipsw")]}
    fresh, failures = IpswCache(section).refresh_catalog(("iPhone14,7", "iPhone99,99"))
    assert list(failures) == ["iPhone99,99"] and "HTTP 404" in failures["iPhone99,99"]
    assert list(fresh.fetched) == ["iPhone14,7"]


def test_default_models_are_every_station_iphone(server: Server, section: IpswSection) -> None:
    server.catalog = {"iPhone10,1": [_firmware("iPhone10,1", "20H1", "16.7", "https://x/8.ipsw")]}
    _, failures = IpswCache(section).refresh_catalog()
    fetched = {path.rsplit("/", 1)[-1] for path, _ in server.requests}
    assert "iPhone10,1" in fetched and "iPhone17,1" in fetched and "iPhone8,1" not in fetched
    assert len(failures) == len(fetched) - 1


def test_a_broken_reply_and_a_corrupt_saved_file_are_one_line(server: Server, section: IpswSection) -> None:
    server.catalog = {"iPhone14,7": "not a list"}  # type: ignore[dict-item]
    with pytest.raises(IpswError, match="not a firmware list"):
        IpswCache(section).refresh_catalog(("iPhone14,7",))
    section.cache_dir.mkdir()
    (section.cache_dir / CATALOG_FILE).write_text("{")
    with pytest.raises(IpswError, match="unreadable catalog .* run station ipsw catalog refresh"):
        IpswCache(section).catalog()


def test_catalog_url_needs_the_identifier_placeholder() -> None:
    with pytest.raises(ConfigError, match=r"\[ipsw\] catalog_url = .https://api.ipsw.me/v4/devices.: "
                                          r"must contain \{identifier\}"):
        IpswSection(catalog_url="https://api.ipsw.me/v4/devices")


def test_published_reference_catalog_round_trips(tmp_path: Path, shared_data: Path) -> None:
    """The real published facts (sizes over 4 GiB and over 10^10 bytes) survive save and load."""
    reference = json.loads((shared_data / "ipsw_catalog.json").read_text())["entries"]
    entries = tuple(catalog.Published(url=e["url"], build=e["build"], version=e["ios_version"],
                                      size=e["size_bytes"], sha1=e["sha1"], sha256=e["sha256"],
                                      models=tuple(e["product_types"])) for e in reference)
    catalog.save(catalog.Catalog(entries, {"iPhone14,7": "2026-01-01T00:00:00+00:00"}), tmp_path / "c.json")
    loaded = catalog.load(tmp_path / "c.json")
    assert loaded.entries == entries and max(e.size for e in entries) > 10**10
    assert all(e.file_name == r["file_name"] for e, r in zip(loaded.entries, reference, strict=True))
    assert loaded.newest_for("iPhone14,7").build == "22A3370"  # type: ignore[union-attr]
    assert loaded.newest_for("iPhone14,7", "17.5.1").build == "21F90"  # type: ignore[union-attr]
