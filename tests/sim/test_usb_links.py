"""The simulated USB links (hw.sim.usb_links): transfers share a link's rate, and an
oversubscribed link fails them as restores on a Pi 4 fail (idevicerestore #604)."""
from __future__ import annotations

import asyncio

from hw.sim.usb_links import ASR_FAILURE, SimLink

MB = 1e6


async def transfer(link: SimLink, size: float, piece: float) -> tuple[float, str]:
    """Send ``size`` bytes a piece at a time, one piece queued ahead; (seconds taken, last answer)."""
    loop = asyncio.get_running_loop()
    began, handle = loop.time(), link.open(int(size))
    answers = [link.send(handle, int(piece)) for _ in range(int(size // piece))]
    results = await asyncio.gather(*answers)
    link.close(handle)
    return loop.time() - began, next((r for r in results if r != "ok"), "ok")


async def test_one_transfer_takes_what_one_phone_takes_and_two_share_the_link():
    link = SimLink("pi4", rate=40 * MB, flow_rate=35 * MB)
    # Never faster than the rate allows; a busy machine's late timers may only make it slower.
    alone, _ = await transfer(link, 7 * MB, 1 * MB)
    assert 0.19 < alone < 0.3  # 7 MB at 35 MB/s: the phone's own ceiling, not the link's
    both = await asyncio.gather(transfer(link, 8 * MB, 1 * MB), transfer(link, 8 * MB, 1 * MB))
    assert all(0.39 < seconds < 0.55 for seconds, _ in both)  # 16 MB through 40 MB/s
    assert link.stats.peak_transfers == 2 and link.stats.failures == 0


async def test_an_oversubscribed_link_fails_the_transfer_furthest_from_done():
    link = SimLink("pi4", rate=40 * MB, flow_rate=35 * MB, fail_load=2.0, fail_after_s=0.1)
    ahead = asyncio.ensure_future(transfer(link, 8 * MB, 1 * MB))
    await asyncio.sleep(0.05)
    late = [asyncio.ensure_future(transfer(link, 8 * MB, 1 * MB)) for _ in range(2)]  # 105 of 40 MB/s
    results = [await task for task in (ahead, *late)]
    assert results[0][1] == "ok"  # the one furthest on keeps going
    assert sorted(answer for _, answer in results[1:]) == [f"fail {ASR_FAILURE}", "ok"]
    assert link.stats.failures == 1  # two left ask 70 of 40 MB/s: under the threshold
