"""The simulation's IPSWs: built once per model, verified into the cache, chosen like any other."""
from __future__ import annotations

from station.config import IpswSection
from station.ipsw.cache import IpswCache
from hw.sim.firmware import SIM_BUILD
from station.ipsw.synthetic import provision


def test_one_synthetic_ipsw_per_model_is_cached_once_and_selected(tmp_path):
    cache = IpswCache(IpswSection(cache_dir=tmp_path / "ipsw"))
    first = provision(cache, ["iPhone14,7", "iPhone13,2", "iPhone14,7"])
    assert [p.name for p in first] == ["iPhone13,2_18.2_22C152_Restore.ipsw",
                                       "iPhone14,7_18.2_22C152_Restore.ipsw"]
    stamps = [p.stat().st_mtime_ns for p in first]
    assert [p.stat().st_mtime_ns for p in provision(cache, ["iPhone13,2", "iPhone14,7"])] == stamps
    selection = cache.select(product_type="iPhone14,7")
    assert selection.build == SIM_BUILD and selection.path == first[1]
    assert [entry.usable for entry in cache.entries()] == [True, True]
    assert not [p for p in (tmp_path / "ipsw").iterdir() if p.name.startswith(".synthetic-")]
