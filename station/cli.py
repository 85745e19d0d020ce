"""The `station` command: subcommands register themselves from their own modules.

Each module in COMMAND_MODULES has ``register(subparsers)``, which adds its
parser and sets ``handler=fn`` where ``fn(args, config) -> int``. The options in
``add_common_options`` (``--config``, ``-v``, ``--log-level``) may be given before the
command or after it (``station --config F run`` is ``station run --config F``); the
config is loaded once, here, before the handler runs, so a bad key stops any command
with one line.

Exit codes, as the README's "Exit codes and JSON output" gives them to scripts: 0 done;
1 the operation failed (``OperationFailed``, a file or device error, output that cannot
be written, a reader that went away); 2 usage or configuration (argparse, ``ConfigError``,
``CommandError``), nothing changed; 130 interrupted. Either failure is one line on stderr
(a reader that went away, ``station ... | head``, is a quiet 1).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, NoReturn

import shtab

from hw import logsetup
from station import overrides
from station.config import ConfigError, find_config
from station.records.certificate import tool_version

COMMAND_MODULES = (
    "station.commands.run",
    "station.ipsw.cli",
    "station.commands.records",
    "station.commands.devices",
    "station.commands.ports",
    "station.commands.install",
    "station.commands.status",
    "station.commands.fleet",
)
OK, FAILED, USAGE, INTERRUPTED = 0, 1, 2, 130
CONFIG_HELP = ("config file (default: $STATION_CONFIG, /etc/station/station.toml, "
               "then the package's own default)")
LOG_LEVELS = ("debug", "info", "warning", "error")
VERBOSITY = {1: "info", 2: "debug"}  # -v, -vv (and more)
# An option before the command has its own name: argparse copies a subcommand's values over
# its parent's, so one shared name could not tell "before" from "after".
BEFORE = "_before_command"

log = logging.getLogger("station")


class CommandError(Exception):
    """The command line or the config asks for what cannot be done (exit 2, nothing changed);
    the message is the one line shown."""


class OperationFailed(Exception):
    """What was asked could not be done: nothing found, a device or file that failed (exit 1);
    the message is the one line shown."""


class OutputError(Exception):
    """Standard output cannot be written (a full disk, a closed descriptor)."""


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (its subcommands' parsers are of this class too)."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE, f"{self.prog}: {message} (see --help)\n")


def positive_number(text: str) -> float:
    """An argparse type: a finite number above 0 (nan, inf, 0 and below are refused)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number above 0")
    return value


def positive_integer(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number above 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="station", description="iPhone restore station: detect, lock-check, restore, record.",
        epilog="Exit codes: 0 done, 1 the operation failed, 2 usage or configuration error, "
               "130 interrupted. --json output: see the README.")
    parser.add_argument("--version", action="version", version=tool_version())
    shtab.add_argument_to(parser, "--print-completion",
                          help="print a completion script for this shell and exit "
                               "(e.g. station --print-completion bash > "
                               "/etc/bash_completion.d/station)")
    add_common_options(parser, BEFORE)
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
        _add_to_leaves(action)
    return parser


def add_common_options(parser: argparse.ArgumentParser, suffix: str = "") -> None:
    config = parser.add_argument("--config", metavar="FILE", dest="config" + suffix, help=CONFIG_HELP)
    config.complete = shtab.FILE  # type: ignore[attr-defined]
    parser.add_argument("-v", "--verbose", action="count", dest="verbose" + suffix,
                        help="log more on stderr: -v info, -vv debug")
    parser.add_argument("--log-level", type=str.lower, choices=LOG_LEVELS, dest="log_level" + suffix,
                        help="log at this level on stderr (default: warning; "
                             "for `run`, [station] log_level)")


def _add_to_leaves(parser: argparse.ArgumentParser) -> None:
    """Give every leaf command the common options (a parent's default would mask a child's value)."""
    children = [action for action in parser._actions
                if isinstance(action, argparse._SubParsersAction)]
    if not children:
        add_common_options(parser)
    for action in children:
        for child in action.choices.values():
            _add_to_leaves(child)


def config_name(args: argparse.Namespace) -> str | None:
    """The one --config given, before or after the command."""
    return _one(args, "config")


def log_level(args: argparse.Namespace) -> str | None:
    """The level -v or --log-level asked for, if either was given."""
    level = _one(args, "log_level")
    verbose = (getattr(args, "verbose" + BEFORE, None) or 0) + (getattr(args, "verbose", None) or 0)
    if level is not None and verbose:
        raise CommandError(f"-v and --log-level {level} both given: use one")
    return level or VERBOSITY.get(min(verbose, max(VERBOSITY)))


def _one(args: argparse.Namespace, name: str) -> str | None:
    """An option given before or after the command; two different values are an error."""
    before, after = getattr(args, name + BEFORE, None), getattr(args, name, None)
    if before is not None and after is not None and before != after:
        option = "--" + name.replace("_", "-")
        raise CommandError(f"{option} given twice: {before} before the command, {after} after it")
    return after if after is not None else before


class _Stdout:
    """sys.stdout while a command runs: a failed write is an OutputError, not an OSError that
    a command could take for a problem with one of its own files."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._guard("write", text)

    def flush(self) -> None:
        self._guard("flush")

    def _guard(self, name: str, *args: Any) -> Any:
        if self._stream is None:  # `station ... >&-`: Python sets sys.stdout to None
            raise OutputError("standard output is closed")
        try:
            return getattr(self._stream, name)(*args)
        except BrokenPipeError:
            raise
        except OSError as error:
            raise OutputError(error.strerror or str(error)) from None

    def isatty(self) -> bool:
        return self._stream is not None and self._stream.isatty()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    stdout = sys.stdout
    sys.stdout = _Stdout(stdout)  # type: ignore[assignment]
    try:
        config = overrides.load(find_config(config_name(args)))
        level = log_level(args)
        if level is not None:
            # `run` logs at [station] log_level: this command's level replaces it (the file is
            # not changed). Other commands print only warnings (bare, through logging's last
            # resort) unless asked for more.
            config = replace(config, station=replace(config.station, log_level=level))
            logsetup.configure(level, sys.stderr)
        if config.override_problem and not getattr(args, "reports_config_problem", False):
            print(f"station: {config.override_problem}; {overrides.fallback(config)}", file=sys.stderr)
        code = int(args.handler(args, config) or 0)
        sys.stdout.flush()  # a full disk shows here, not at exit as "Exception ignored"
        return code
    except (ConfigError, CommandError) as error:
        print(error if isinstance(error, ConfigError) else f"station: {error}", file=sys.stderr)
        return USAGE
    except OperationFailed as error:
        print(f"station: {error}", file=sys.stderr)
        return FAILED
    except OutputError as error:
        _drop_output(stdout)
        print(f"station: cannot write the output: {error}", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:
        return INTERRUPTED
    except BrokenPipeError:  # `station ... | head`: the reader left; say nothing more
        _drop_output(stdout)
        return FAILED
    except OSError as error:  # a file or directory the command needs (cache_dir not writable)
        log.debug("command failed", exc_info=True)
        where = f"{error.filename}: " if error.filename else ""
        print(f"station: {where}{error.strerror or error}", file=sys.stderr)
        return FAILED
    finally:
        sys.stdout = stdout


def _drop_output(stdout: Any) -> None:
    """Send what is still buffered for stdout nowhere, so exit does not fail writing it again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), stdout.fileno())
    except (AttributeError, OSError, ValueError):  # no file descriptor (None, a test's stream)
        pass


if __name__ == "__main__":
    # Run the one in station.cli, not this __main__ copy: the commands raise station.cli's
    # CommandError, which this module's except clauses would not know.
    from station.cli import main as station_main

    sys.exit(station_main())
