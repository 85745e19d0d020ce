"""`make bench`: every benchmark, one after the other (`python -m bench.ipsw` etc. run one)."""
from __future__ import annotations

import sys

from bench import detect, ipsw, pairing, real_restore, records, restore_memory, scale, soak, throughput

BENCHMARKS = (("IPSW cache: reader, seeks, digests, memory", ipsw.main),
              ("Records: CSV export, event-loop lag", records.main),
              ("Restore worker: peak memory per step", restore_memory.main),
              ("Real restore path: worker memory, ASR against dd, the demo's wall time", real_restore.main),
              ("Throughput: phones an hour against the USB bus bound, three schedules", throughput.main),
              ("Scale: event-loop lag, CPU per phone, memory; idle cost", scale.main),
              ("Pairing: CPU per pairing, the station's host key against a new one each time", pairing.main),
              ("Detection: attach to slot and to identified, iOS against DFU", detect.main),
              ("Soak: 1,000 phones through one station: records, memory, fds, workers", soak.main))


def main() -> int:
    status = 0
    for title, run in BENCHMARKS:
        print(f"== {title}", flush=True)
        status |= run([])
    return status


if __name__ == "__main__":
    sys.exit(main())
