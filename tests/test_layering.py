"""hw/ sits below station/: the hardware layer imports nothing of the station's, so that each
backend can be read, tested and replaced on its own.

The one exception left is the simulated backend (hw/simulated.py): it is played from a scenario,
which carries station config tables ([config.*]) and so cannot sit below station.config."""
from __future__ import annotations

import ast
from pathlib import Path

HW = Path(__file__).resolve().parents[1] / "hw"
KNOWN = {"simulated.py": {"station.config", "station.scenario"}}


def station_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):  # function-level imports too
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found |= {name for name in names if name == "station" or name.startswith("station.")}
    return found


def test_hw_imports_nothing_from_station():
    imports = {str(path.relative_to(HW)): station_imports(path) for path in sorted(HW.rglob("*.py"))}
    assert {name: found for name, found in imports.items() if found} == KNOWN
