"""`station ipsw ...`: the cache from a shell. Every failure is one line and a non-zero exit."""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from station.cli import CommandError
from station.config import Config
from station.ipsw import models
from station.ipsw.cache import Entry, IpswCache
from station.ipsw.errors import IpswError, NoIpswError, printable
from station.ipsw.progress import ProgressBar, gb

Handler = Callable[[argparse.Namespace, Config], int]

SIGNED = {True: "yes", False: "NO", None: "?"}  # as of the saved catalog; "?": it does not list the file


def register(subparsers: argparse._SubParsersAction) -> None:
    ipsw = subparsers.add_parser("ipsw", help="the IPSW cache: add, list, verify, match firmware")
    commands = ipsw.add_subparsers(dest="ipsw_command", required=True, metavar="COMMAND")

    add = _leaf(commands, "add", cmd_add, "copy or download an IPSW into the cache, verified")
    add.add_argument("source", metavar="PATH|URL")
    add.add_argument("--trust-unlisted", action="store_true", help="accept an IPSW the catalog does not list")

    listing = _leaf(commands, "list", cmd_list, "cached IPSWs: build, iOS version, models, size, state")
    listing.add_argument("--json", action="store_true")

    verify = _leaf(commands, "verify", cmd_verify, "hash cached IPSWs again and check them against the catalog")
    which = verify.add_mutually_exclusive_group(required=True)
    which.add_argument("file", nargs="?", metavar="FILE")
    which.add_argument("--all", action="store_true")
    verify.add_argument("--trust-unlisted", action="store_true", help="accept an IPSW the catalog does not list")

    remove = _leaf(commands, "remove", cmd_remove, "delete cached IPSWs")
    remove.add_argument("files", nargs="+", metavar="FILE")

    prune = _leaf(commands, "prune", cmd_prune, "keep the N newest verified IPSWs per model (and pinned ones)")
    prune.add_argument("--keep", type=int, required=True, metavar="N")
    prune.add_argument("--dry-run", action="store_true", help="only print what would be removed")

    match = _leaf(commands, "match", cmd_match, "which IPSW and build identity a phone would get")
    match.add_argument("phone", metavar="PRODUCTTYPE|CPID:BDID", help="e.g. iPhone14,7 or 8110:18 (hex)")
    match.add_argument("--json", action="store_true")

    catalog = commands.add_parser("catalog", help="published sizes and digests")
    catalog_commands = catalog.add_subparsers(dest="catalog_command", required=True, metavar="COMMAND")
    refresh = _leaf(catalog_commands, "refresh", cmd_catalog_refresh, "fetch the catalog and save it")
    refresh.add_argument("models", nargs="*", metavar="PRODUCTTYPE",
                         help="default: [ipsw] models, else every iPhone from iPhone10,1")


def _leaf(commands: argparse._SubParsersAction, name: str, handler: Handler, text: str) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, help=text, description=text)
    parser.set_defaults(handler=_one_line(handler))
    return parser


def _one_line(handler: Handler) -> Handler:
    def run(args: argparse.Namespace, config: Config) -> int:
        try:
            return handler(args, config)
        except IpswError as error:
            raise CommandError(printable(str(error))) from None  # one line, whatever the input held
    return run


def cmd_add(args: argparse.Namespace, config: Config) -> int:
    cache = IpswCache(config.ipsw)
    # The same file again is a success, so that a provisioning script can run its adds again.
    with ProgressBar("compare") as bar:
        cached = cache.find_cached(args.source, bar)
    if cached is not None:
        print(f"already cached: {cached.path}: {_describe(cached)}")
        return 0
    with ProgressBar("add") as bar:
        entry = cache.add(args.source, args.trust_unlisted, bar)
    print(f"added {entry.path}: {_describe(entry)}")
    return 0


def cmd_list(args: argparse.Namespace, config: Config) -> int:
    entries = IpswCache(config.ipsw).entries()
    if args.json:
        print(json.dumps([e.as_json() for e in entries], indent=2))
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
    cache = IpswCache(config.ipsw)
    names = [e.path.name for e in cache.entries()] if args.all else [args.file]
    failed = 0
    for name in names:
        try:
            with ProgressBar(f"verify {name}") as bar:
                entry = cache.verify(name, args.trust_unlisted, bar)
            print(f"{name}: {_describe(entry)}")
        except IpswError as error:
            if not args.all:
                raise
            print(f"station: {error}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def cmd_remove(args: argparse.Namespace, config: Config) -> int:
    for path in IpswCache(config.ipsw).remove_all(args.files):  # all or nothing
        print(f"removed {path}")
    return 0


def cmd_prune(args: argparse.Namespace, config: Config) -> int:
    if args.keep < 1:
        raise CommandError(f"--keep {args.keep}: must be at least 1")
    cache = IpswCache(config.ipsw)
    doomed = cache.prune(args.keep, dry_run=True)
    if not doomed:
        print(f"nothing to prune: at most {args.keep} verified IPSW(s) per model")
    elif args.dry_run:
        for path in doomed:
            print(f"would remove {path}")
    else:
        with ProgressBar("prune") as bar:
            removed = cache.prune(args.keep, progress=bar)  # a file a restore reads stays, with a warning
        for path in removed:
            print(f"removed {path}")
    return 0


def cmd_match(args: argparse.Namespace, config: Config) -> int:
    chip_board = models.parse_chip_board(args.phone)
    if chip_board is None and models.model_number(args.phone) is None:
        raise CommandError(f"{args.phone}: expected a ProductType (iPhone14,7) or CPID:BDID in hex (8110:18)")
    try:
        if chip_board:
            selection = IpswCache(config.ipsw).select(chip_id=chip_board[0], board_id=chip_board[1])
        else:
            selection = IpswCache(config.ipsw).select(product_type=args.phone)
    except NoIpswError as error:
        print(f"station: {error}: {error.log_message}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(selection.as_json(), indent=2))
        return 0
    print(f"{selection.model}: {selection.path}")
    print(f"  iOS {selection.version} ({selection.build}), build identity #{selection.identity_index}: "
          f"DeviceClass {selection.device_class}, Variant {selection.variant!r}, "
          f"RestoreBehavior {selection.restore_behavior}")
    return 0


def cmd_catalog_refresh(args: argparse.Namespace, config: Config) -> int:
    cache = IpswCache(config.ipsw)
    catalog, failures = cache.refresh_catalog(tuple(args.models))
    failed = f"; {len(failures)} model(s) failed, see above" if failures else ""
    print(f"catalog: {len(catalog.entries)} IPSWs for {len(catalog.fetched)} models in {cache.dir}{failed}")
    return 0


def _describe(entry: Entry) -> str:
    known: dict[str, Any] = entry.as_json()
    return (f"iOS {known['version']} ({known['build']}) for {', '.join(known['models'])}, "
            f"{gb(entry.size)}, {entry.state}")
