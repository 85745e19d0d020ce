"""`station ipsw ...`: the cache from a shell. Every failure is one line and a non-zero exit.

Exit codes as for every command (station/cli.py): 2 when the command line is wrong in itself (a
bad URL or file name, a bad ProductType, a bad option), found before the cache, a file or the
network is touched, and nothing changed; 1 when the operation failed (a failed download, a
digest that does not match, a file not in the cache, nothing found for a phone). With --json each
command prints one document on stdout (the README's "Exit codes and JSON output"): `verify`
prints its array also when a file failed; the others print nothing when they fail.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from station.cli import CommandError, OperationFailed
from station.commands.output import print_json
from station.config import Config
from station.ipsw import models
from station.ipsw.cache import CATALOG_FILE, Entry, IpswCache
from station.ipsw.errors import IpswError, NoIpswError, printable, shown
from station.ipsw.progress import ProgressBar, gb

Handler = Callable[[argparse.Namespace, Config], int]

SIGNED = {True: "yes", False: "NO", None: "?"}  # as of the saved catalog; "?": it does not list the file


def register(subparsers: argparse._SubParsersAction) -> None:
    ipsw = subparsers.add_parser("ipsw", help="the IPSW cache: add, list, verify, match firmware")
    commands = ipsw.add_subparsers(dest="ipsw_command", required=True, metavar="COMMAND")

    add = _leaf(commands, "add", cmd_add, "copy or download an IPSW into the cache, verified")
    add.add_argument("source", metavar="PATH|URL")
    add.add_argument("--trust-unlisted", action="store_true", help="accept an IPSW the catalog does not list")
    _json_option(add, "the cached IPSW as an object, with \"already_cached\": true|false")

    listing = _leaf(commands, "list", cmd_list, "cached IPSWs: build, iOS version, models, size, state")
    _json_option(listing, "an array of the cached IPSWs")

    verify = _leaf(commands, "verify", cmd_verify, "hash cached IPSWs again and check them against the catalog")
    which = verify.add_mutually_exclusive_group(required=True)
    which.add_argument("file", nargs="?", metavar="FILE")
    which.add_argument("--all", action="store_true")
    verify.add_argument("--trust-unlisted", action="store_true", help="accept an IPSW the catalog does not list")
    _json_option(verify, "an array of the files checked, each with \"problem\" (null when it verified)")

    remove = _leaf(commands, "remove", cmd_remove, "delete cached IPSWs")
    remove.add_argument("files", nargs="+", metavar="FILE")
    _json_option(remove, "an array of the files removed")

    prune = _leaf(commands, "prune", cmd_prune, "keep the N newest verified IPSWs per model (and pinned ones)")
    prune.add_argument("--keep", type=int, required=True, metavar="N")
    prune.add_argument("--dry-run", action="store_true", help="only print what would be removed")
    _json_option(prune, "an array of the files removed (with --dry-run: that would be)")

    match = _leaf(commands, "match", cmd_match, "which IPSW and build identity a phone would get")
    match.add_argument("phone", metavar="PRODUCTTYPE|CPID:BDID", help="e.g. iPhone14,7 or 8110:18 (hex)")
    _json_option(match, "the file and build identity as an object")

    catalog = commands.add_parser("catalog", help="published sizes and digests")
    catalog_commands = catalog.add_subparsers(dest="catalog_command", required=True, metavar="COMMAND")
    refresh = _leaf(catalog_commands, "refresh", cmd_catalog_refresh, "fetch the catalog and save it")
    refresh.add_argument("models", nargs="*", metavar="PRODUCTTYPE",
                         help="default: [ipsw] models, else every iPhone from iPhone10,1")
    _json_option(refresh, "what was fetched, and each model that failed, as an object")


def _leaf(commands: argparse._SubParsersAction, name: str, handler: Handler, text: str) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, help=text, description=text)
    parser.set_defaults(handler=_failed_operation(handler))
    return parser


def _json_option(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument("--json", action="store_true", help=text)


def _failed_operation(handler: Handler) -> Handler:
    """An IpswError that reaches the command is an operation that failed (exit 1): the command
    line was checked before it (CommandError, exit 2)."""
    def run(args: argparse.Namespace, config: Config) -> int:
        try:
            return handler(args, config)
        except IpswError as error:
            raise OperationFailed(printable(str(error))) from None  # one line, whatever the input held
    return run


def cmd_add(args: argparse.Namespace, config: Config) -> int:
    cache = IpswCache(config.ipsw)
    try:
        cache.name_of(args.source)  # a bad URL or file name is the command line's (exit 2): nothing read yet
    except IpswError as error:
        raise CommandError(printable(str(error))) from None
    # The same file again is a success, so that a provisioning script can run its adds again.
    with ProgressBar("compare") as bar:
        cached = cache.find_cached(args.source, bar)
    entry = cached
    if entry is None:
        with ProgressBar("add") as bar:
            entry = cache.add(args.source, args.trust_unlisted, bar)
    if args.json:
        print_json({**entry.as_json(), "already_cached": cached is not None})
    else:
        print(f"{'already cached:' if cached else 'added'} {entry.path}: {_describe(entry)}")
    return 0


def cmd_list(args: argparse.Namespace, config: Config) -> int:
    entries = IpswCache(config.ipsw).entries()
    if args.json:
        print_json([e.as_json() for e in entries])
        return 0
    rows = [("FILE", "BUILD", "iOS", "MODELS", "SIZE", "SIGNED", "STATE")]
    for entry in entries:
        known = entry.as_json()
        rows.append((entry.path.name, known["build"] or "?", known["version"] or "?",
                     ",".join(known["models"]) or "?", gb(entry.size), SIGNED[entry.signed], entry.state))
    widths = [max(len(row[n]) for row in rows) for n in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)) + "  " + row[-1])
    return 0


def cmd_verify(args: argparse.Namespace, config: Config) -> int:
    """Every file is checked, failed or not; a failure is one line on stderr and exit 1."""
    cache = IpswCache(config.ipsw)
    names = [e.path.name for e in cache.entries()] if args.all else [args.file]
    checked: list[dict[str, Any]] = []
    failed = 0
    for name in names:
        try:
            with ProgressBar(f"verify {name}") as bar:
                entry = cache.verify(name, args.trust_unlisted, bar)
        except IpswError as error:
            problem = printable(str(error))
            print(f"station: {problem}", file=sys.stderr)
            failed += 1
            try:
                checked.append({**cache.find(name).as_json(), "problem": problem})  # its stored verdict
            except IpswError:  # not in the cache (or no longer): nothing to show
                pass
            continue
        checked.append({**entry.as_json(), "problem": None})
        if not args.json:
            print(f"{name}: {_describe(entry)}")
    if args.json:
        print_json(checked)
    return 1 if failed else 0


def cmd_remove(args: argparse.Namespace, config: Config) -> int:
    removed = IpswCache(config.ipsw).remove_all(args.files)  # all or nothing
    _print_paths(args, removed, "removed")
    return 0


def cmd_prune(args: argparse.Namespace, config: Config) -> int:
    if args.keep < 1:
        raise CommandError(f"--keep {args.keep}: must be at least 1")
    cache = IpswCache(config.ipsw)
    doomed = cache.prune(args.keep, dry_run=True)
    if not doomed:
        if not args.json:
            print(f"nothing to prune: at most {args.keep} verified IPSW(s) per model")
        removed = doomed
    elif args.dry_run:
        removed = doomed
    else:
        with ProgressBar("prune") as bar:
            removed = cache.prune(args.keep, progress=bar)  # a file a restore reads stays, with a warning
    _print_paths(args, removed, "would remove" if args.dry_run else "removed")
    return 0


def _print_paths(args: argparse.Namespace, paths: list[Path], verb: str) -> None:
    if args.json:
        print_json([{"file": path.name, "path": str(path)} for path in paths])
        return
    for path in paths:
        print(f"{verb} {path}")


def cmd_match(args: argparse.Namespace, config: Config) -> int:
    chip_board = models.parse_chip_board(args.phone)
    if chip_board is None and models.model_number(args.phone) is None:
        raise CommandError(f"{printable(args.phone)}: expected a ProductType (iPhone14,7) "
                           "or CPID:BDID in hex (8110:18)")
    try:
        if chip_board:
            selection = IpswCache(config.ipsw).select(chip_id=chip_board[0], board_id=chip_board[1])
        else:
            selection = IpswCache(config.ipsw).select(product_type=args.phone)
    except NoIpswError as error:
        raise OperationFailed(printable(f"{error}: {error.log_message}")) from None
    if args.json:
        print_json(selection.as_json())
        return 0
    print(f"{selection.model}: {selection.path}")
    print(f"  iOS {selection.version} ({selection.build}), build identity #{selection.identity_index}: "
          f"DeviceClass {selection.device_class}, Variant {selection.variant!r}, "
          f"RestoreBehavior {selection.restore_behavior}")
    return 0


def cmd_catalog_refresh(args: argparse.Namespace, config: Config) -> int:
    for model in args.models:
        if models.model_number(model) is None:
            raise CommandError(f"{shown(model)}: not a ProductType like iPhone14,2")
    cache = IpswCache(config.ipsw)
    wanted = tuple(dict.fromkeys(args.models)) or config.ipsw.models or models.station_models()
    catalog, failures = cache.refresh_catalog(wanted)  # some failed: said on stderr; all failed: IpswError
    if args.json:
        print_json({"catalog": str(cache.dir / CATALOG_FILE), "entries": len(catalog.entries),
                    "models": sorted(catalog.fetched, key=_model_order),
                    "refreshed": [m for m in wanted if m not in failures],
                    "failed": {m: printable(text) for m, text in failures.items()}})
        return 0
    failed = f"; {len(failures)} model(s) failed, see above" if failures else ""
    print(f"catalog: {len(catalog.entries)} IPSWs for {len(catalog.fetched)} models in {cache.dir}{failed}")
    return 0


def _model_order(product_type: str) -> tuple[int, int] | tuple[()]:
    return models.model_number(product_type) or ()


def _describe(entry: Entry) -> str:
    known: dict[str, Any] = entry.as_json()
    return (f"iOS {known['version']} ({known['build']}) for {', '.join(known['models'])}, "
            f"{gb(entry.size)}, {entry.state}")
