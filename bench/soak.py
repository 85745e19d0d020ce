"""Soak (issue 13 item 7): a thousand simulated phones through one station, one after another.

    .venv/bin/python -m bench.soak [--phones 1000] [--speed 150] [--slots 21] [--cycle S] [--gap 0.5]

A generated scenario (in a temp dir; line mode, the timed engine) puts phone after phone on
the hub's slots: each slot takes a new phone (its own serial and ECID) every ``--cycle`` real
seconds, the slots staggered so that arrivals come one after another. A scenario cannot say
"unplug when done", so each phone is unplugged ``--gap`` real seconds before the next one
arrives on its slot: it must be DONE within ``cycle - gap`` (the figures show how close the
slowest came). When the last phone is unplugged the station idles a few seconds, then stops.

Why 21 slots (three 7-port hubs) and 150x, not 7 slots at 300-1000x: every moment of a
scenario is 0..86400 scenario seconds (station/scenario.py). 1,000 phones on 7 slots leave each
phone 604 of them, and one takes about 415 (its phases, reboot and checks) plus about 1 real
second of the station's own real-time waits (USB scans, usbmuxd retries) times the speed: it
does not fit with any margin at any speed. On 21 slots at 150x a phone has 11 real seconds for
the 3-5 it needs on a loaded 2-core machine; the run takes 86400/150 s = 9.6 min whatever the
slots. The hub carries the OS image at 1000 MB/s on every slot ([hub] phone_mb_s and one link
for all), not 35 MB/s on one shared 40 MB/s link: at a Pi's rate the image alone (250 s) would
not fit either, and one link would take one phone at a time. Every other phase keeps its
nominal length.

While ``station run --sim`` plays it, this samples every second the station's RSS (VmRSS),
open fds and threads, and its fork server's and restore workers' processes (/proc), and counts
the phones done in the station's log. At the end it checks, and exits 1 naming what failed:

- records: one session per phone, none lost or duplicated, each ``done`` (verified);
  ``station records verify``: the chain intact, a certificate for every phone, none open;
- memory flat after warm-up: the station's RSS at the end against its RSS once the first
  ~10% of phones were done: growth under 10%;
- no leaked workers or descriptors: no worker left once the station idles, none alive after
  it exited; its fds while idle at the end no more than its fewest during warm-up.

Figures, all from this one run: phones, wall time, phones per wall-minute, RSS and fds at
warm-up and at the end, peak workers. Nothing asserts on absolute times.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("iPhone14,7", "iPhone13,2", "iPhone15,4", "iPhone14,5")
ECID_BASE = 0x50AC_0000_0000
WARM_SHARE = 0.10  # the first 10% of phones warm the station up
RSS_GROWTH = 0.10  # allowed RSS growth from warm-up to the end
THREAD_SLACK = 8  # thread pools may still grow after warm-up; a leak per phone would not stop there
TAIL_S = 5.0  # real seconds the station idles after the last phone left
START_S = 0.5  # real seconds before the first phone
SCENARIO_MAX_S = 86400  # station/scenario.py: attach, detach and every other moment are 0..86400
# The hub carries an OS image this fast (MB/s), about 30x a real one, each slot at full rate:
# see the module docstring.
PHONE_MB_S = 1000
DONE_LINE = "VERIFYING -> DONE"
DEFAULT_SPEED = 150.0
DEFAULT_SLOTS = 21


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--phones", type=int, default=1000, help="phones through the station (default 1000)")
    parser.add_argument("--speed", type=float, default=DEFAULT_SPEED,
                        help=f"scenario speed (default {DEFAULT_SPEED:g}x)")
    parser.add_argument("--cycle", type=float, default=None,
                        help="real seconds between two phones on one slot (default: the longest that "
                             "fits the scenario format's 86400 s)")
    parser.add_argument("--slots", type=int, default=DEFAULT_SLOTS,
                        help=f"the hub's slots (default {DEFAULT_SLOTS}, three 7-port hubs: 1000 phones on 7 "
                             "do not fit the scenario format's 86400 s)")
    parser.add_argument("--gap", type=float, default=0.5,
                        help="real seconds a slot stays empty between two phones (default 0.5)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temp dir (config, log, records) when the soak passes too")
    args = parser.parse_args(argv)
    cycle = args.cycle or Plan.longest_cycle(args.phones, args.slots, args.speed, args.gap)
    if args.phones < args.slots or args.gap >= cycle:
        parser.error(f"--phones must be at least --slots, --gap less than the cycle ({cycle:.2f} s)")
    plan = Plan(args.phones, args.slots, args.speed, cycle, args.gap)
    if plan.end > SCENARIO_MAX_S:
        parser.error(f"{args.phones} phones every {cycle:g} s at {args.speed:g}x end at scenario second "
                     f"{plan.end:.0f}, past the format's {SCENARIO_MAX_S}: a lower --speed or --cycle")
    temp = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    status = 1
    try:
        status = soak(temp, plan)
        return status
    finally:
        if args.keep or status != 0:  # a failed soak's log is what tells why
            print(f"kept {temp}")
        else:
            subprocess.run(["rm", "-rf", str(temp)], check=False)


# The scenario --------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    phones: int
    slots: int
    speed: float
    cycle: float  # real seconds between two phones on one slot
    gap: float  # real seconds a slot stays empty between two phones

    def times(self, n: int) -> tuple[int, float, float]:
        """(slot, attach, detach) of phone ``n`` in scenario seconds."""
        slot, round_ = n % self.slots + 1, n // self.slots
        attach = (round_ + (slot - 1) / self.slots) * self.cycle + START_S
        return slot, attach * self.speed, (attach + self.cycle - self.gap) * self.speed

    @property
    def end(self) -> float:
        """The scenario second of its last event (the station idles from the last unplug to it)."""
        return max(self.times(n)[2] for n in range(self.phones)) + TAIL_S * self.speed

    @property
    def real_seconds(self) -> float:
        return self.end / self.speed

    @staticmethod
    def longest_cycle(phones: int, slots: int, speed: float, gap: float) -> float:
        """The longest cycle (real s, to 10 ms) whose scenario fits in the format's 86400 s."""
        last = phones - 1  # the last to leave: its detach is (rounds before it + its stagger + 1) cycles
        cycles = last // slots + (last % slots) / slots + 1
        return int((SCENARIO_MAX_S / speed - START_S - TAIL_S + gap) / cycles * 100) / 100


def serial(n: int) -> str:
    return f"SOAK{n:06d}"


def scenario_text(plan: Plan) -> str:
    end = plan.end
    lines = ["# Generated by bench/soak.py: phone after phone on every slot, each unplugged once done.",
             "[scenario]", f'description = "soak: {plan.phones} phones, one after another"',
             'engine = "timed"', f"duration = {min(SCENARIO_MAX_S, end + 60 * plan.speed):.0f}", "",
             "[config.restore]", 'mode = "line"', "",
             "[config.hub]", f"slots = {plan.slots}", f"phone_mb_s = {PHONE_MB_S}",
             f"links = {{ soak = {{ slots = {list(range(1, plan.slots + 1))}, "
             f"mb_s = {plan.slots * PHONE_MB_S} }} }}", ""]
    for n in range(plan.phones):
        slot, attach, detach = plan.times(n)
        lines += ["[[phone]]", f'name = "soak-{n}"', f"slot = {slot}", f'model = "{MODELS[n % len(MODELS)]}"',
                  f'serial = "{serial(n)}"', f"ecid = {ECID_BASE + n}", f"attach = {attach:.1f}",
                  f"detach = {detach:.1f}", ""]
    # Nothing happens then: the station idles, every port empty, until the scenario is over.
    lines += ["[[press]]", f"at = {end:.1f}", 'button = "select"', ""]
    return "\n".join(lines)


# Sampling ------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    at: float  # real seconds since start
    done: int  # phones the log shows DONE
    rss_kb: int
    fds: int
    threads: int
    workers: int
    server_rss_kb: int
    server_fds: int
    cpu_s: float  # the station's CPU time so far
    server_cpu_s: float  # the fork server's and its reaped workers'


@dataclass
class Watch:
    """The station's process tree, as seen in /proc once a second."""
    pid: int
    samples: list[Sample] = field(default_factory=list)
    seen: dict[int, str] = field(default_factory=dict)  # pid -> its /proc starttime (server, workers)
    others: dict[int, list[str]] = field(default_factory=dict)  # other children: pid -> names seen

    def sample(self, at: float, done: int) -> Sample | None:
        tree = _children()
        status = _status(self.pid)
        if status is None:
            return None
        servers = [pid for pid in tree.get(self.pid, ()) if "hw.worker.server" in _cmdline(pid)]
        for pid in tree.get(self.pid, ()):
            if pid not in servers:
                self.others.setdefault(pid, []).append(_comm(pid))
        workers = [w for s in servers for w in tree.get(s, ())]
        for pid in servers + workers:
            start = _starttime(pid)
            if start is not None:
                self.seen.setdefault(pid, start)
        server = _status(servers[0]) if servers else None
        sample = Sample(at, done, status.get("VmRSS", 0), _fd_count(self.pid), status.get("Threads", 0),
                        len(workers), server.get("VmRSS", 0) if server else 0,
                        _fd_count(servers[0]) if servers else 0, _cpu(self.pid),
                        _cpu(servers[0], children=True) if servers else 0.0)
        self.samples.append(sample)
        return sample

    def alive(self) -> list[int]:
        """Server and worker processes seen during the run that still exist (same pid, same start)."""
        return [pid for pid, start in self.seen.items() if _starttime(pid) == start]


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                tree.setdefault(int(stat[1]), []).append(int(entry.name))
    return tree


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name: state, ppid, ... (starttime is [19])."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def _cpu(pid: int, children: bool = False) -> float:
    """CPU seconds (user + system) of the process, and of its reaped children with ``children``."""
    stat = _stat(pid)
    if stat is None:
        return 0.0
    ticks = sum(int(stat[i]) for i in ((11, 12, 13, 14) if children else (11, 12)))
    return ticks / os.sysconf("SC_CLK_TCK")


def _starttime(pid: int) -> str | None:
    stat = _stat(pid)
    return stat[19] if stat is not None and stat[0] != "Z" else None


def _status(pid: int) -> dict[str, int] | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "Threads"):
            values[key] = int(value.split()[0])
    return values


def _fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def fd_kinds(pid: int) -> Counter[str]:
    """The process's open descriptors by kind (socket, pipe, anon_inode, or the file's folder)."""
    kinds: Counter[str] = Counter()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return kinds
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        kinds[target.split(":")[0] if ":" in target else str(Path(target).parent)] += 1
    return kinds


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


# The run -------------------------------------------------------------------------


def soak(temp: Path, plan: Plan) -> int:
    scenario, config = temp / "soak.toml", temp / "station.toml"
    scenario.write_text(scenario_text(plan))
    config.write_text(f'[station]\nstate_dir = "{temp / "state"}"\n[ipsw]\ncache_dir = "{temp / "ipsw"}"\n')
    log_path = temp / "station.log"
    print(f"{plan.phones} phones on {plan.slots} slots at {plan.speed:g}x: a new phone on each slot every "
          f"{plan.cycle:.2f} s ({plan.cycle - plan.gap:.2f} s to be done), about {plan.real_seconds / 60:.1f} "
          f"min of scenario; {temp}", flush=True)
    command = [sys.executable, "-m", "station.cli", "run", "--config", str(config), "--sim", str(scenario),
               "--speed", f"{plan.speed:g}"]
    started = time.perf_counter()
    with (temp / "station.out").open("w") as out, log_path.open("w") as err:
        station = subprocess.Popen(command, stdout=out, stderr=err, cwd=temp)
    watch = Watch(station.pid)
    done, offset, warm, warm_kinds, next_report = 0, 0, None, Counter(), 0.1
    end_kinds: Counter[str] | None = None
    limit = plan.real_seconds * 1.5 + 120
    try:
        while station.poll() is None:
            tick = time.perf_counter()
            done, offset = _count_done(log_path, done, offset)
            sample = watch.sample(tick - started, done)
            if sample is not None and warm is None and done >= WARM_SHARE * plan.phones:
                warm, warm_kinds = sample, fd_kinds(station.pid)
            if done >= next_report * plan.phones:
                print(f"  {tick - started:6.0f} s: {done} done, RSS {sample.rss_kb / 1024 if sample else 0:.1f} "
                      f"MiB, {sample.fds if sample else 0} fds, {sample.workers if sample else 0} workers",
                      flush=True)
                next_report += 0.1
            if sample is not None and sample.workers == 0:
                end_kinds = fd_kinds(station.pid)  # the last of these: the idle tail, no phone left
            if tick - started > limit:
                print(f"the station is still running after {limit:.0f} s: stopped", flush=True)
                station.kill()
                break
            time.sleep(max(0.0, 1.0 - (time.perf_counter() - tick)))
    finally:
        if station.poll() is None:
            station.kill()
        station.wait()
    wall = time.perf_counter() - started
    done, _ = _count_done(log_path, done, offset)
    time.sleep(0.5)  # the server's workers die with it (PR_SET_PDEATHSIG): give them a moment
    left = watch.alive()
    return report(plan, temp, config, station.returncode, wall, watch, warm, warm_kinds,
                  end_kinds, left)


def _count_done(log_path: Path, done: int, offset: int) -> tuple[int, int]:
    """Phones DONE so far, reading the log from ``offset`` (whole lines only)."""
    with log_path.open("rb") as stream:
        stream.seek(offset)
        chunk = stream.read()
    whole = chunk.rfind(b"\n") + 1
    return done + chunk[:whole].count(DONE_LINE.encode()), offset + whole


# The verdict ---------------------------------------------------------------------


def report(plan: Plan, temp: Path, config: Path, code: int | None, wall: float, watch: Watch,
           warm: Sample | None, warm_kinds: Counter[str], end_kinds: Counter[str] | None,
           left: list[int]) -> int:
    failures: list[str] = []
    if code != 0:
        failures.append(f"station run exited {code} (see its output: {temp / 'station.out'})")
    failures += check_records(plan, config)
    samples = watch.samples
    # The idle tail: every phone gone, the fork server still up, the station not yet stopping.
    tail = samples[-1].at - TAIL_S + 1.5 if samples else 0.0
    idle = [s for s in samples if s.at >= tail and s.workers == 0 and s.server_fds]
    end = idle[-1] if idle else (samples[-1] if samples else None)
    if warm is None or end is None:
        failures.append("no warm-up sample: the run ended before 10% of the phones were done")
    else:
        growth = end.rss_kb / warm.rss_kb - 1
        peak = max(s.rss_kb for s in samples)
        print(f"station RSS: {warm.rss_kb / 1024:.1f} MiB after warm-up ({warm.done} phones), "
              f"{end.rss_kb / 1024:.1f} MiB at the end: ratio {end.rss_kb / warm.rss_kb:.3f} "
              f"(growth {growth:+.1%}, allowed < {RSS_GROWTH:.0%}); peak {peak / 1024:.1f} MiB")
        if growth >= RSS_GROWTH:
            failures.append(f"memory: the station's RSS grew {growth:.1%} after warm-up "
                            f"({warm.rss_kb} -> {end.rss_kb} kB)")
        warm_window = [s for s in samples if warm.at <= s.at and s.done <= 2 * WARM_SHARE * plan.phones]
        fewest = min(s.fds for s in warm_window)
        print(f"station fds: {warm.fds} after warm-up (fewest {fewest} in the next 10% of phones), "
              f"{end.fds} at the end{' (idle)' if idle else ''}; threads {warm.threads} -> {end.threads}; "
              f"fork server: RSS {warm.server_rss_kb / 1024:.1f} -> {end.server_rss_kb / 1024:.1f} MiB, "
              f"fds {warm.server_fds} -> {end.server_fds}")
        if end.fds > fewest:
            grown = (end_kinds or Counter()) - warm_kinds
            failures.append(f"descriptors: the station holds {end.fds} fds idle at the end, more than its "
                            f"fewest during warm-up ({fewest}); grown since warm-up: {dict(grown)}")
        if end.server_fds > warm.server_fds:
            failures.append(f"descriptors: the fork server holds {end.server_fds} fds at the end, "
                            f"{warm.server_fds} after warm-up")
        if end.threads > warm.threads + THREAD_SLACK:
            failures.append(f"threads: {warm.threads} after warm-up, {end.threads} at the end")
    if not idle:
        failures.append("workers: no sample in the idle tail without a worker running")
    if left:
        failures.append(f"workers: {len(left)} fork-server/worker process(es) still alive after the "
                        f"station exited: pids {left[:10]}")
    others = {pid: names for pid, names in watch.others.items() if len(names) > 1}  # not one mid-fork
    if others:
        print(f"other child processes of the station: {others}")
    if samples:
        cpu, workers_cpu = max(s.cpu_s for s in samples), max(s.server_cpu_s for s in samples)
        busy = samples[-1].at - samples[0].at
        print(f"CPU: station {cpu:.0f} s ({cpu / busy:.0%} of one core), fork server and workers "
              f"{workers_cpu:.0f} s: {(cpu + workers_cpu) / plan.phones * 1000:.0f} ms per phone")
    peak_workers = max((s.workers for s in samples), default=0)
    print(f"phones: {plan.phones} at {plan.speed:g}x, wall {wall:.0f} s ({wall / 60:.1f} min): "
          f"{plan.phones / wall * 60:.1f} phones per wall-minute (one per slot every {plan.cycle:g} s: "
          f"at most {plan.slots / plan.cycle * 60:.0f}); peak workers {peak_workers} "
          f"(slots {plan.slots}); {len(samples)} samples")
    for failure in failures:
        print(f"FAILED: {failure}")
    print("soak: " + ("FAILED" if failures else "ok: every guarantee held"))
    return 1 if failures else 0


def check_records(plan: Plan, config: Path) -> list[str]:
    station = [sys.executable, "-m", "station.cli"]
    listing = subprocess.run([*station, "records", "list", "--json", "--config", str(config)],
                             capture_output=True, text=True, cwd=ROOT)
    if listing.returncode != 0:
        return [f"records list exited {listing.returncode}: {listing.stderr.strip()[-500:]}"]
    sessions = json.loads(listing.stdout)
    failures = []
    by_serial = Counter(s["serial"] for s in sessions)
    wanted = {serial(n) for n in range(plan.phones)}
    lost = sorted(wanted - set(by_serial))
    doubled = sorted(s for s, count in by_serial.items() if count > 1)
    strangers = sorted(set(by_serial) - wanted)
    outcomes = Counter(s["outcome"] + ("" if s["verified"] else " (not verified)") for s in sessions)
    print(f"records: {len(sessions)} sessions for {plan.phones} phones; outcomes: "
          + ", ".join(f"{outcome} {count}" for outcome, count in sorted(outcomes.items())))
    if lost:
        failures.append(f"records: {len(lost)} phone(s) without a session: {lost[:10]}")
    if doubled:
        failures.append(f"records: {len(doubled)} phone(s) with more than one session: {doubled[:10]}")
    if strangers:
        failures.append(f"records: sessions of unknown phones: {strangers[:10]}")
    wrong = [f"{s['serial']}: {s['outcome']} {s['reason']}".strip() for s in sessions
             if s["outcome"] != "done" or not s["verified"]]
    if wrong:
        failures.append(f"records: {len(wrong)} session(s) not done and verified: {wrong[:10]}")
    took = sorted(_seconds(s["started_at"], s["result_at"]) for s in sessions if s["result_at"])
    if took:
        budget = plan.cycle - plan.gap
        print(f"identified -> DONE: median {statistics.median(took):.2f} s, slowest {took[-1]:.2f} s "
              f"of the {budget:g} s a phone stays (slowest/budget {took[-1] / budget:.2f})")
    verify = subprocess.run([*station, "records", "verify", "--config", str(config)],
                            capture_output=True, text=True, cwd=ROOT)
    print(f"records verify: {(verify.stdout or verify.stderr).strip()}")
    if verify.returncode != 0:
        failures.append(f"records verify: {verify.stderr.strip()}")
    elif f"ok: {plan.phones} records" not in verify.stdout or f"{plan.phones} certificates" not in verify.stdout \
            or " 0 session(s) open" not in verify.stdout:
        failures.append(f"records verify: expected {plan.phones} records and certificates, none open: "
                        f"{verify.stdout.strip()}")
    return failures


def _seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


if __name__ == "__main__":
    raise SystemExit(main())
