"""/metrics of a running station, scraped and read with prometheus_client's own parser: the
values follow from the demo (config/sim/demo.toml) that the station plays."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from web.running import Running

FINAL = {1: "done", 2: "locked", 3: "done", 4: "done", 5: "done"}


def samples(running: Running) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """name -> {sorted labels: value}, parsed as Prometheus would."""
    code, text = running.call("/metrics")
    assert code == 200
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_metrics_follow_the_demo(demo: Running):
    demo.wait_for("the demo's end", lambda s: {p["slot"]: p["state"] for p in s["ports"]} == FINAL
                  and s["counters"]["restored"] == 4)
    found = samples(demo)

    restores = found["station_restores_total"]
    assert restores[(("job", "restore"), ("outcome", "done"))] == 3  # slots 1, 3 and 4
    assert restores[(("job", "erase"), ("outcome", "done"))] == 1  # the trade-in
    assert sum(restores.values()) == 4
    assert found["station_restore_retries_total"][(("job", "restore"),)] == 1  # slot 4's status 53
    assert found["station_restore_duration_seconds_count"][(("job", "restore"),)] == 3

    checks = found["station_lock_checks_total"]
    assert checks[(("check", "plug_in"), ("method", "fmip"), ("result", "locked"))] == 1  # Find My on
    assert checks[(("check", "plug_in"), ("method", "activation-server"), ("result", "clear"))] == 3
    assert sum(v for k, v in checks.items() if ("result", "unknown") in k) == 1  # the DFU phone
    assert checks[(("check", "after_restore"), ("method", "activation-server"), ("result", "clear"))] == 4

    states = found["station_port_state"]
    for slot, state in FINAL.items():
        assert states[(("slot", str(slot)), ("station_port_state", state))] == 1
        assert sum(v for k, v in states.items() if ("slot", str(slot)) in k) == 1

    # The images the three restores read, each sent at least once (slot 4's retry sent more).
    cached = {entry["models"][0]: entry["size"] for entry in demo.status()["ipsw"]}
    restored = cached["iPhone14,7"] + cached["iPhone13,2"] + cached["iPhone14,5"]
    sent = found["station_transfer_bytes_total"][()]
    assert restored <= sent <= restored + cached["iPhone14,5"]
    assert found["station_ipsw_cache_bytes"][()] == sum(cached.values())

    assert found["station_records_backlog"][()] == 0  # everything is on disk
    assert found["station_event_loop_lag_seconds_count"][()] > 10  # sampled every 50 ms
    assert "station_faults" not in found or not found["station_faults"]


def test_the_api_counts_the_demo_as_the_display_does(demo: Running):
    """Today's counters and the locked phone's lock answer, as the page shows them at the end."""
    status = demo.wait_for("the demo's end", lambda s: {p["slot"]: p["state"] for p in s["ports"]} == FINAL)
    assert status["counters"] == {"restored": 4, "failed": 0, "locked": 1, "retried": 1}
    locked = status["ports"][1]
    assert locked["lock_method"] == "fmip" and locked["reason"] == "Find My is on"
