"""Debian packages a test needs, installed with apt when missing (CI runs as root)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

# Another test run may hold dpkg's lock: wait for it rather than fail.
APT = ["apt-get", "-o", "DPkg::Lock::Timeout=600", "install", "-y", "--no-install-recommends"]


def ensure(packages: tuple[str, ...], paths: tuple[Path, ...]) -> None:
    """Every one of ``paths`` is there, ``packages`` installed first if need be; else the test
    skips, saying why."""
    if all(path.exists() for path in paths):
        return
    named = " and ".join(packages)
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip(f"needs Debian's {named}: not installed, and apt-get cannot install them here "
                    "(not root, or no apt-get)")
    install = [*APT, *packages]
    if subprocess.run(install, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], capture_output=True)  # lists never fetched on this box
        result = subprocess.run(install, capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"apt-get could not install {named}: {result.stderr.strip()[-300:]}")
