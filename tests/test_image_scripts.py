"""The image's shell scripts pass shellcheck (installed from Debian when missing, as root)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted([*ROOT.glob("image/*.sh"), *ROOT.glob("image/hooks/*.sh"),
                  ROOT / "image/rootfs/usr/local/sbin/station-firstboot"])


@pytest.fixture(scope="module")
def shellcheck() -> str:
    if shutil.which("shellcheck") is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "shellcheck"],
                       capture_output=True, timeout=600, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    found = shutil.which("shellcheck")
    if found is None:
        pytest.skip("shellcheck is not installed and cannot be (Debian: apt-get install shellcheck, as root)")
    return found


def test_there_are_scripts_to_check():
    assert len(SCRIPTS) >= 6 and all(script.exists() for script in SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_script_passes_shellcheck(shellcheck, script):
    result = subprocess.run([shellcheck, "--severity=style", str(script)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout
