"""pyproject.toml names every distribution the package's own code imports, so `pip install
station` brings what `station` needs even if pymobiledevice3 stops bringing it (issue 14,
item 5: requests, cryptography, Pillow and ipsw_parser came only through it)."""
from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OWN = {"station", "hw"}


def imported_modules() -> set[str]:
    """The absolute imports in station/ and hw/ (the package the wheel holds), but our own and
    the standard library's."""
    names = set()
    for path in [*ROOT.glob("station/**/*.py"), *ROOT.glob("hw/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
    return {name for name in names if name.split(".")[0] not in OWN | set(sys.stdlib_module_names)}


def distributions_of(module: str, installed: dict[str, list[str]]) -> set[str]:
    """The distribution a module comes from; for a namespace several share (luma.core and
    luma.oled are both `luma`), the one named after its first two parts."""
    candidates = installed.get(module.split(".")[0], [])
    if len(candidates) > 1:
        return {normal(d) for d in candidates if normal(d) == normal(".".join(module.split(".")[:2]))}
    return {normal(d) for d in candidates}


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


def declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    return {normal(re.match(r"[A-Za-z0-9._-]+", requirement).group()) for requirement in requirements}


def test_every_imported_distribution_is_declared():
    installed = metadata.packages_distributions()
    needed = {module: distributions_of(module, installed) for module in imported_modules()}
    assert not [module for module, found in needed.items() if not found], "imported but not installed"
    needed_names = set().union(*needed.values())
    assert needed_names - declared() == set()
    assert {"requests", "cryptography", "pillow", "ipsw-parser", "tomlkit", "shtab", "luma-core"} <= needed_names
