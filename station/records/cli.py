"""`station records list|export|verify`, `station cert SERIAL` and `station key show`."""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from station.cli import CommandError
from station.config import Config
from station.records import certificate, db, export, keys
from station.records.statedir import RecordsUnavailable
from station.records.verify import verify

Handler = Callable[[argparse.Namespace, Config], int]


def register(subparsers: argparse._SubParsersAction) -> None:
    records = subparsers.add_parser("records", help="the session records: list, export, verify")
    actions = records.add_subparsers(dest="records_command", required=True, metavar="ACTION")
    listing = _leaf(actions, "list", "one line per session, oldest first", _list)
    _since_option(listing)
    listing.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    exporting = _leaf(actions, "export", "every session with all its fields", _export)
    exporting.add_argument("--format", choices=("csv", "json"), required=True)
    _since_option(exporting)
    exporting.add_argument("-o", "--output", metavar="FILE", type=Path, help="file (default: stdout)")
    _leaf(actions, "verify", "check the hash chain and every signature", _verify)

    cert = subparsers.add_parser("cert", help="the erasure certificate of a phone, by serial number")
    cert.add_argument("serial")
    cert.add_argument("-o", "--output", metavar="FILE", type=Path, help="file (default: stdout)")
    cert.set_defaults(handler=_cert)

    key = subparsers.add_parser("key", help="the station's signing key")
    key_actions = key.add_subparsers(dest="key_command", required=True, metavar="ACTION")
    _leaf(key_actions, "show", "the public key and its fingerprint, for auditors", _key_show)


def _leaf(actions: argparse._SubParsersAction, name: str, help: str,
          handler: Handler) -> argparse.ArgumentParser:
    parser = actions.add_parser(name, help=help, description=help)
    parser.set_defaults(handler=handler)
    return parser


def _since_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", metavar="DATE", type=_since,
                        help="sessions started from this local date (YYYY-MM-DD) or time on")


def _since(text: str) -> str:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not a date (YYYY-MM-DD)") from None
    return db.iso(moment.timestamp())  # naive means local time, as the operator reads it


@contextmanager
def _records(config: Config) -> Iterator[sqlite3.Connection]:
    try:
        conn = db.open_existing(config.station.state_dir)
    except RecordsUnavailable as error:
        raise CommandError(str(error)) from None
    try:
        yield conn
    except sqlite3.Error as error:
        raise CommandError(f"{db.path_in(config.station.state_dir)}: {error}") from None
    finally:
        conn.close()


@contextmanager
def _output(path: Path | None) -> Iterator[TextIO]:
    if path is None:
        try:
            yield sys.stdout
            sys.stdout.flush()
        except BrokenPipeError:
            # The reader (head, less) stopped reading: not an error. Point stdout at
            # /dev/null so the interpreter's last flush does not complain either.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    try:
        stream = path.open("w", encoding="utf-8", newline="")
    except OSError as error:
        raise CommandError(f"{path}: {error.strerror}") from None
    with stream:
        yield stream


def _list(args: argparse.Namespace, config: Config) -> int:
    with _records(config) as conn, _output(None) as stream:
        for session in export.sessions(conn, args.since):
            print(json.dumps(session, ensure_ascii=False) if args.json else _line(session), file=stream)
    return 0


def _line(session: dict[str, Any]) -> str:
    started = datetime.fromisoformat(session["started_at"]).astimezone().strftime("%Y-%m-%d %H:%M")
    end = session["outcome"] or f"open: {session['state']}"
    who = session["serial"] or (f"ECID {session['ecid']}" if session["ecid"] else session["udid"][:12])
    reason = f"  {session['reason']}" if session["reason"] else ""
    return f"#{session['id']:<6} {started}  slot {session['slot']:<2} {who:<18} {session['model']:<11} {end}{reason}"


def _export(args: argparse.Namespace, config: Config) -> int:
    write = export.write_csv if args.format == "csv" else export.write_json
    with _records(config) as conn, _output(args.output) as stream:
        write(conn, stream, args.since)
    return 0


def _verify(args: argparse.Namespace, config: Config) -> int:
    public = _public_key(config)
    with _records(config) as conn:
        verdict = verify(conn, public)
    if verdict.problem:
        print(f"station: records verify: {verdict.problem}", file=sys.stderr)
        return 1
    print(f"ok: {verdict.records} records, chain intact; {verdict.certificates} certificates "
          f"signed by {keys.fingerprint(public)}; {verdict.open} session(s) open")
    return 0


def _cert(args: argparse.Namespace, config: Config) -> int:
    with _records(config) as conn:
        document = certificate.latest_for(conn, args.serial)
    if document is None:
        raise CommandError(f"no certificate for serial {args.serial}")
    with _output(args.output) as stream:
        json.dump(json.loads(document), stream, indent=2, sort_keys=True, ensure_ascii=False)
        stream.write("\n")
    return 0


def _key_show(args: argparse.Namespace, config: Config) -> int:
    public = _public_key(config)
    print(keys.public_pem(public), end="")
    print(f"fingerprint: {keys.fingerprint(public)}")
    return 0


def _public_key(config: Config) -> Ed25519PublicKey:
    try:
        return keys.load_public(config.station.state_dir)
    except RecordsUnavailable as error:
        raise CommandError(str(error)) from None
