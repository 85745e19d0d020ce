"""`station run --sim` in a child process that says what the run left behind."""

# Runs `station run --sim`, then lists the records; and says what the run left behind: the
# asyncio tasks still there once run_station returned, the descriptors it opened and did not
# close, and the station's child processes (the fork server, or a zombie nobody reaped).
DRIVER = r"""
import asyncio, contextlib, json, os, sys
from station import cli
from station.commands import run as run_command

report, config, scenario, speed = sys.argv[1:]
original = run_command.run_station


def children():
    found = []
    for entry in os.listdir("/proc"):
        try:
            stat = open(f"/proc/{entry}/stat").read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if entry.isdigit() and int(fields[1]) == os.getpid():
            found.append(f"{entry} {fields[0]} {stat[stat.index('(') + 1:stat.rindex(')')]}")
    return found


def descriptors():
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            found[fd] = os.readlink(f"/proc/self/fd/{fd}")
    return found


async def checked(*args, **kwargs):
    before = descriptors()
    result = await original(*args, **kwargs)
    after = descriptors()
    tasks = sorted(task.get_name() for task in asyncio.all_tasks() if task is not asyncio.current_task())
    leaked = sorted(f"{fd} -> {target}" for fd, target in after.items() if before.get(fd) != target)
    with open(report, "w") as out:
        json.dump({"tasks": tasks, "fds": leaked, "children": children()}, out)
    return result


run_command.run_station = checked
code = cli.main(["run", "--config", config, "--sim", scenario, "--speed", speed])
with open(report + ".records", "w") as out, contextlib.redirect_stdout(out):
    cli.main(["records", "list", "--json", "--config", config])
sys.exit(code)
"""
