"""Progress bars of `ipsw add`, `verify` and `prune`: rich's, with rate and time left, on a terminal only."""
from __future__ import annotations

import io
import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

from station.config import IpswSection
from station.ipsw.cache import IpswCache
from station.ipsw.progress import ProgressBar

from .conftest import Server
from .factory import build_ipsw, synthetic_manifest

ROOT = Path(__file__).resolve().parents[2]
STATION = ("import sys, station.cli as cli\ncli.COMMAND_MODULES = ('station.ipsw.cli',)\n"
           "sys.exit(cli.main(sys.argv[1:]))")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _screen(output: str) -> list[str]:
    """The lines a terminal shows at the end: escapes dropped, each line as its last redraw left it."""
    lines = ANSI.sub("", output.replace("\r\n", "\n")).strip("\n").split("\n")
    return [line.rsplit("\r", 1)[-1] for line in lines]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_shows_rate_and_time_left_and_ends_on_its_own_line() -> None:
    screen = _Terminal()
    with ProgressBar("add", screen) as bar:
        for done in range(0, 101, 25):
            bar(done * 1_000_000, 100_000_000)
            time.sleep(0.05)
    last = _screen(screen.getvalue())[-1]
    assert re.search(r"add .* 100% .*100\.0/100\.0 MB .*[0-9.]+ [kMG]?B/s 0:00:00", last), last
    assert ANSI.sub("", screen.getvalue()).endswith("\n") and screen.getvalue().endswith("\x1b[?25h")  # cursor back


def test_a_bar_that_never_moves_draws_nothing_and_neither_does_a_pipe() -> None:
    idle = _Terminal()
    with ProgressBar("compare", idle):
        pass
    piped = io.StringIO()
    with ProgressBar("add", piped) as bar:
        bar(5, 10)
    assert idle.getvalue() == "" and piped.getvalue() == ""


def _on_a_terminal(config: Path, *argv: str) -> tuple[int, list[str], str, bytes]:
    """`station ARGV...` with its stderr on a pty: exit code, the terminal's lines, stdout, the raw bytes shown."""
    primary, secondary = os.openpty()
    try:
        process = subprocess.Popen([sys.executable, "-c", STATION, *argv, "--config", str(config)],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=secondary, cwd=ROOT,
                                   env={**os.environ, "TERM": "xterm", "COLUMNS": "120"})
        os.close(secondary)
        secondary = -1
        shown = b""
        while True:
            ready, _, _ = select.select([primary], [], [], 30)
            try:
                chunk = os.read(primary, 65536) if ready else b""
            except OSError:  # EIO: the process closed its side
                chunk = b""
            if not chunk:
                break
            shown += chunk
        assert process.stdout is not None
        out = process.stdout.read().decode()
        return process.wait(30), _screen(shown.decode()), out, shown
    finally:
        os.close(primary)
        if secondary >= 0:
            os.close(secondary)


def test_add_verify_and_prune_on_a_terminal(server: Server, section: IpswSection, tmp_path: Path) -> None:
    """A failed add ends its bar before the one-line error; verify and prune draw theirs; the cursor comes back."""
    config = tmp_path / "station.toml"
    config.write_text(f'[ipsw]\ncache_dir = "{section.cache_dir}"\ncatalog_url = "{server.catalog_url}"\n')
    wrong = build_ipsw(tmp_path / "iPhone14,7_18.0.1_22A3370_Restore.ipsw", synthetic_manifest(), os_size=3_000_000)
    server.publish(wrong, ("iPhone14,7",), "18.0.1", "22A3370", sha1sum="0" * 40)
    code, lines, out, shown = _on_a_terminal(config, "ipsw", "add", str(wrong))
    assert (code, out) == (1, "")  # a wrong digest: the operation failed
    assert re.search(r"^add .*100%.* 3\.\d/3\.\d MB .*B/s", lines[-2]), lines
    assert lines[-1].startswith("station: iPhone14,7_18.0.1_22A3370_Restore.ipsw: wrong digest"), lines
    assert b"\x1b[?25h" in shown

    cache = IpswCache(section)
    for version, build, seed in (("17.5.1", "21F90", 1), ("18.0.1", "22A3370", 2)):
        path = build_ipsw(tmp_path / f"iPhone15,4_{version}_{build}_Restore.ipsw",
                          synthetic_manifest(("iPhone15,4",), version, build), os_size=2_000_000, seed=seed)
        server.publish(path, ("iPhone15,4",), version, build)
        cache.add(str(path))
    code, lines, out, _ = _on_a_terminal(config, "ipsw", "verify", "iPhone15,4_18.0.1_22A3370_Restore.ipsw")
    assert code == 0 and out.endswith("verified\n")
    assert re.search(r"^verify iPhone15,4_18.0.1_22A3370_Restore.ipsw .*100%.* 2\.\d/2\.\d MB", lines[-1]), lines
    code, lines, out, _ = _on_a_terminal(config, "ipsw", "prune", "--keep", "1")
    assert code == 0 and out == f"removed {section.cache_dir / 'iPhone15,4_17.5.1_21F90_Restore.ipsw'}\n"
    assert re.search(r"^prune .*100%.* 2\.\d/2\.\d MB", lines[-1]), lines
