"""What one host key per station saves: CPU per pairing, the station's key against a new one each time.

`python -m bench.pairing [--pairings N]` pairs simulated phones (pymobiledevice3's own
``LockdownClient.pair`` against the simulated lockdownd, through the simulated usbmuxd) one at a
time, alternating between the two ways, and prints side by side the process CPU per pairing
(p50 and mean) and the ratio:

- the station's host key (``hw.iphone.host_key``), as the station pairs;
- no key given, so pymobiledevice3 makes a new 2048-bit host key for each pairing (lockdown.py
  ``pair``), as the station did before it kept one.

The simulated lockdownd runs in this process too and does the same work for both, so the
difference is the host side's. pymobiledevice3 makes a new root key for every pairing either way
(ca.py ``generate_pairing_cert_chain``).
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from pymobiledevice3.lockdown import create_using_usbmux

from hw.iphone.host_key import host_key
from hw.sim import SimPhone, SimulatedBench

_ecids = itertools.count(0x00B1C2D3E4F500)


async def pair_once(phone: SimPhone, pairing_dir: Path, own_key: bool) -> float:
    """Process CPU seconds of one pairing, from the connection to the saved pair record."""
    started = time.process_time()
    client = await create_using_usbmux(serial=phone.udid, autopair=False, connection_type="USB",
                                       pairing_records_cache_folder=pairing_dir)
    try:
        await client.pair(timeout=10, private_key=host_key(pairing_dir) if own_key else None)
    finally:
        await client.close()
    return time.process_time() - started


async def measure(folder: Path, pairings: int) -> dict[bool, list[float]]:
    phones = [SimPhone(ecid=next(_ecids), serial=f"F2LPAIR{n:05d}") for n in range(2 * pairings)]
    cpu: dict[bool, list[float]] = {True: [], False: []}
    with SimulatedBench([], folder / "bench") as bench:
        os.environ["USBMUXD_SOCKET_ADDRESS"] = bench.usbmuxd_address  # pymobiledevice3 reads it per call
        host_key(folder / "pairing")  # made once, at the station's first pairing: not counted
        for n, phone in enumerate(phones):
            bench.world.attach(phone, 1, (1, 1))
            await asyncio.sleep(0.05)  # usbmuxd has it listed
            own_key = n % 2 == 0  # alternating: a busy moment of the machine falls on both
            cpu[own_key].append(await pair_once(phone, folder / "pairing", own_key))
            bench.world.detach(phone)
    return cpu


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pairing", description=__doc__.splitlines()[0])
    parser.add_argument("--pairings", type=int, default=30, help="pairings each way (default 30)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-pair-", dir="/tmp") as tmp:
        cpu = asyncio.run(measure(Path(tmp), args.pairings))
    print(f"{args.pairings} pairings each way, alternating; process CPU per pairing (host and simulated phone)")
    for own_key, label in ((True, "the station's host key"), (False, "a new host key each time")):
        values = cpu[own_key]
        print(f"  {label:<26} p50 {statistics.median(values) * 1000:6.1f} ms   "
              f"mean {statistics.fmean(values) * 1000:6.1f} ms")
    saved = statistics.fmean(cpu[False]) - statistics.fmean(cpu[True])
    print(f"  one key per station: {statistics.fmean(cpu[True]) / statistics.fmean(cpu[False]):.2f} of the CPU "
          f"per pairing ({saved * 1000:.1f} ms less each; a phone is paired twice per restore)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
