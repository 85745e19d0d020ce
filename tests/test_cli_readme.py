"""The README's command list matches what `--help` shows: every command is listed, with every
option its parser takes and none it does not (issue 14, item 5: `ports learn --timeout` and five
others were missing)."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from station.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"
COMMON = {"-h", "--help", "--config", "-v", "--verbose", "--log-level"}  # described once, above the list


def listed() -> list[str]:
    """The command lines of the README's "## Commands" list, without their comments."""
    section = README.read_text().split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    return [line.split("  #", 1)[0].strip() for line in section.splitlines() if line.startswith("    station ")]


def leaves(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()) -> dict[str, argparse.ArgumentParser]:
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found |= leaves(child, (*words, name)) or {" ".join((*words, name)): child}
    return found


def options_in(lines: list[str]) -> set[str]:
    return {option for line in lines for option in re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", line)}


COMMANDS = leaves(build_parser())


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_the_readme_lists_each_command_with_its_options(command):
    lines = [line for line in listed() if f"{line} ".startswith(f"station {command} ")]
    assert lines, f"station {command} is not in the README's command list"
    parser = COMMANDS[command]
    shown = options_in(lines)
    for action in parser._actions:
        if action.option_strings and not set(action.option_strings) & COMMON:
            assert set(action.option_strings) & shown, f"{command}: {action.option_strings[-1]} not listed"
        if not action.option_strings and action.nargs in ("+", "*"):
            assert any("..." in line for line in lines), f"{command}: {action.metavar or action.dest} takes several"
    takes = {option for action in parser._actions for option in action.option_strings}
    assert shown <= takes, f"{command}: the README lists options it does not take: {shown - takes}"


def test_the_readme_lists_the_options_of_station_itself():
    takes = {option for action in build_parser()._actions for option in action.option_strings} - COMMON
    top = [line for line in listed() if line.startswith("station --")]
    assert options_in(top) == takes
