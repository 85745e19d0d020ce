"""The `station` command: subcommands register themselves from their own modules.

Each module in COMMAND_MODULES has ``register(subparsers)``, which adds its
parser and sets ``handler=fn`` where ``fn(args, config) -> int``. Every
subcommand takes ``--config FILE``; the config is loaded once, here, before the
handler runs, so a bad key stops any command with one line.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from station.config import ConfigError, find_config, load_config

COMMAND_MODULES = (
    "station.commands.run",
    "station.ipsw.cli",
    "station.records.cli",
    "station.commands.devices",
    "station.commands.ports",
)

log = logging.getLogger("station")


class CommandError(Exception):
    """A command cannot do what was asked; the message is the one line shown."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="station", description="iPhone restore station: detect, lock-check, restore, record.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:  # a real missing dependency, not an absent command
                raise
            continue
        module.register(subparsers)
    for action in subparsers.choices.values():
        add_config_option(action)
    return parser


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """Give every leaf command --config (a parent's default would mask a child's value)."""
    children = [action for action in parser._actions
                if isinstance(action, argparse._SubParsersAction)]
    if not children:
        parser.add_argument(
            "--config", metavar="FILE",
            help="config file (default: $STATION_CONFIG, /etc/station/station.toml, "
                 "then the checkout's config/station.toml)")
    for action in children:
        for child in action.choices.values():
            add_config_option(child)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(find_config(args.config))
        return int(args.handler(args, config) or 0)
    except (ConfigError, CommandError) as error:
        print(error if isinstance(error, ConfigError) else f"station: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `station ... | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
