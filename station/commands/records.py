"""`station records list|export|verify|new-chain`, `station cert WHAT` and `station key show`.

Records that cannot be read, a certificate not found, a file that cannot be written: the
operation failed (exit 1). An output file that exists without --force, or one inside the
state directory: a usage error (exit 2), nothing written.
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from station.cli import CommandError, OperationFailed
from station.commands.output import print_json, print_json_array
from station.config import Config
from station.records import certificate, chains, db, export, headfile, keys
from station.records.statedir import RecordsUnavailable, StationBusy
from station.records.verify import Verdict, Witness, verify

Handler = Callable[[argparse.Namespace, Config], int]


def register(subparsers: argparse._SubParsersAction) -> None:
    records = subparsers.add_parser("records", help="the session records: list, export, verify")
    actions = records.add_subparsers(dest="records_command", required=True, metavar="ACTION")
    listing = _leaf(actions, "list", "one line per session, oldest first", _list)
    _since_option(listing)
    listing.add_argument("--json", action="store_true", help="a JSON array of sessions instead of a table")
    exporting = _leaf(actions, "export", "every session with all its fields", _export)
    format_ = exporting.add_mutually_exclusive_group(required=True)
    format_.add_argument("--format", choices=("csv", "json"))
    format_.add_argument("--json", action="store_true", help="the same as --format json")
    _since_option(exporting)
    _output_options(exporting)
    verifying = _leaf(actions, "verify", "check the hash chain, every row and every signature", _verify)
    _public_key_option(verifying)
    verifying.add_argument("--against", metavar="CERT", nargs="+", type=Path, default=[],
                           help="certificates held elsewhere (customers' copies): the records "
                                "must still hold each one and the chain it was issued at")
    verifying.add_argument("--json", action="store_true",
                           help="an object with the counts checked and the problem found (null if none)")
    new_chain = _leaf(actions, "new-chain", "archive these records and start a new chain "
                      "(after a lost key or lost records), saying why", _new_chain)
    new_chain.add_argument("--reason", required=True, help="why, kept in the new records")
    new_chain.add_argument("--json", action="store_true", help='print {"archive": DIR, "reason": TEXT}')

    cert = subparsers.add_parser(
        "cert", help="the erasure certificate of a phone, by serial number, IMEI, ECID or record id",
        description="The newest erasure certificate of a phone, found by its serial number, IMEI "
                    "(or second IMEI), ECID (hex, as the station shows it: a DFU phone has no serial) "
                    "or record id (#123). WHAT is tried as each; serial:, imei:, ecid: or record: "
                    "before it names the kind, when two kinds find different certificates.")
    cert.add_argument("what", metavar="WHAT", help="serial, IMEI, ECID or record id (#123), "
                      "optionally prefixed with its kind (ecid:1A2B3C4D5E6F70)")
    _output_options(cert)
    cert.add_argument("--json", action="store_true",
                      help="accepted as by every command; the certificate is JSON already")
    cert.set_defaults(handler=_cert)

    key = subparsers.add_parser("key", help="the station's signing key")
    key_actions = key.add_subparsers(dest="key_command", required=True, metavar="ACTION")
    show = _leaf(key_actions, "show", "the public key and its fingerprint, for auditors; "
                 "creates the key if the station has none yet (before its first start)", _key_show)
    _public_key_option(show)
    show.add_argument("--json", action="store_true",
                      help='print {"fingerprint": ..., "public_key": PEM, "created": true|false}')


def _leaf(actions: argparse._SubParsersAction, name: str, help: str,
          handler: Handler) -> argparse.ArgumentParser:
    parser = actions.add_parser(name, help=help, description=help)
    parser.set_defaults(handler=handler)
    return parser


def _output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", metavar="FILE", type=Path,
                        help="file (default: stdout); never inside the state directory")
    parser.add_argument("--force", action="store_true", help="replace FILE if it exists")


def _public_key_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--public-key", metavar="FILE", type=Path,
                        help="the station's public key (PEM), e.g. from `station key show`: "
                             "an auditor needs no private key")


def _since_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", metavar="DATE", type=_since,
                        help="sessions started from this local date (YYYY-MM-DD) or time on")


def _since(text: str) -> str:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not a date (YYYY-MM-DD)") from None
    try:
        return db.iso(moment.timestamp())  # naive means local time, as the operator reads it
    except (ValueError, OverflowError, OSError):
        # Beyond what UTC can write (0001-01-01 in Berlin is year 0 in UTC): before or after
        # every record, which is what the operator asked for.
        return "" if moment.year < 1970 else "\uffff"


@contextmanager
def _records(config: Config) -> Iterator[sqlite3.Connection]:
    try:
        with db.reading(config.station.state_dir) as conn:
            yield conn
    except RecordsUnavailable as error:
        raise OperationFailed(str(error)) from None


@contextmanager
def _output(path: Path | None, config: Config | None = None, force: bool = False) -> Iterator[TextIO]:
    """stdout, or ``path`` written whole or not at all (a temp file renamed into place).

    Never a path inside the state directory (one typo would replace the key or the
    database), and never over an existing file without ``force``.
    """
    if path is None:
        try:
            yield sys.stdout
            sys.stdout.flush()
        except BrokenPipeError:
            # The reader (head, less) stopped reading: not an error. Point stdout at
            # /dev/null so the interpreter's last flush does not complain either.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    target = path.resolve()
    if config is not None and target.is_relative_to(config.station.state_dir.resolve()):
        raise CommandError(f"{path}: inside the state directory {config.station.state_dir}: "
                           "write it somewhere else")
    if target.is_dir():
        raise CommandError(f"{path}: is a directory")
    if target.exists() and not force:
        raise CommandError(f"{path}: exists (--force replaces it)")
    try:
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    except OSError as error:
        raise OperationFailed(f"{path}: {error.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as stream:
            yield stream
        os.chmod(temp, 0o644 & ~_umask())
        os.replace(temp, target)
    except OSError as error:
        raise OperationFailed(f"{path}: {error.strerror}") from None
    finally:
        Path(temp).unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _list(args: argparse.Namespace, config: Config) -> int:
    with _records(config) as conn, _output(None) as stream:
        if args.json:
            print_json_array(export.sessions(conn, args.since), stream)
            return 0
        for session in export.sessions(conn, args.since):
            print(_line(session), file=stream)
    return 0


def _line(session: dict[str, Any]) -> str:
    started = datetime.fromisoformat(session["started_at"]).astimezone().strftime("%Y-%m-%d %H:%M")
    end = session["outcome"] or f"open: {session['state']}"
    who = session["serial"] or (f"ECID {session['ecid']}" if session["ecid"] else session["udid"][:12])
    reason = f"  {session['reason']}" if session["reason"] else ""
    return f"#{session['id']:<6} {started}  slot {session['slot']:<2} {who:<18} {session['model']:<11} {end}{reason}"


def _export(args: argparse.Namespace, config: Config) -> int:
    write = export.write_json if args.json or args.format == "json" else export.write_csv
    with _records(config) as conn, _output(args.output, config, args.force) as stream:
        write(conn, stream, args.since)
    return 0


def _verify(args: argparse.Namespace, config: Config) -> int:
    public = _public_key(config, args.public_key)
    witnesses = [_witness(path) for path in args.against]
    try:
        head = headfile.read(config.station.state_dir)
    except ValueError as error:
        return _verify_failed(args, public, str(error))
    with _records(config) as conn:
        verdict = verify(conn, public, head, witnesses)
    if verdict.problem:
        return _verify_failed(args, public, verdict.problem)
    if args.json:
        print_json(_verdict_json(public, verdict, head is not None))
        return 0
    checked = f"; checked against {verdict.witnesses} certificate(s) held elsewhere" if witnesses else ""
    no_head = "" if head is not None or not verdict.records else f"; no {headfile.HEAD_FILE} to check"
    print(f"ok: {verdict.records} records, chain intact; {verdict.certificates} certificates "
          f"signed by {keys.fingerprint(public)}; {verdict.open} session(s) open{checked}{no_head}")
    return 0


def _verify_failed(args: argparse.Namespace, public: Ed25519PublicKey, problem: str) -> int:
    """The problem on stderr (one line), and with --json the verdict on stdout too: exit 1."""
    if args.json:
        print_json(_verdict_json(public, None, None, problem))
    print(f"station: records verify: {problem}", file=sys.stderr)
    return 1


def _verdict_json(public: Ed25519PublicKey, verdict: Verdict | None, head_checked: bool | None,
                  problem: str | None = None) -> dict[str, Any]:
    """What a passed check counted; each count is null when the check stopped at a problem."""
    counts = {name: None if verdict is None else getattr(verdict, name)
              for name in ("records", "certificates", "open", "witnesses")}
    return {"ok": problem is None, "signer": keys.fingerprint(public), **counts,
            "head_checked": head_checked, "problem": problem}


def _witness(path: Path) -> Witness:
    try:
        return Witness(str(path), json.loads(path.read_text(encoding="utf-8")))
    except OSError as error:
        raise OperationFailed(f"{path}: {error.strerror}") from None
    except (ValueError, UnicodeDecodeError):
        raise OperationFailed(f"{path}: not a certificate (not JSON)") from None


KIND_NAMES = {"serial": "serial", "imei": "IMEI", "ecid": "ECID", "record": "record"}


def _cert(args: argparse.Namespace, config: Config) -> int:
    with _records(config) as conn:
        try:
            kind, what = certificate.split_kind(args.what)
            found = certificate.find(conn, what, kind)
        except certificate.NotItsCertificate as error:
            raise OperationFailed(str(error)) from None
    if not found:
        kinds = [kind] if kind else certificate.kinds_of(what) or ["serial"]
        named = " or ".join(KIND_NAMES[each] for each in kinds)
        raise OperationFailed(f"no certificate for {named} {what}")
    if len({f.session_id for f in found}) > 1:
        which = ", ".join(f"record #{f.session_id} by {f.kind} ({f.kind}:{what})" for f in found)
        raise CommandError(f"{args.what} finds more than one certificate: {which}")
    with _output(args.output, config, args.force) as stream:
        json.dump(json.loads(found[0].document), stream, indent=2, sort_keys=True, ensure_ascii=False)
        stream.write("\n")
    return 0


def _new_chain(args: argparse.Namespace, config: Config) -> int:
    try:
        archive = chains.start_new(config.station.state_dir, args.reason)
    except (RecordsUnavailable, StationBusy) as error:
        raise OperationFailed(str(error)) from None
    if args.json:
        print_json({"archive": str(archive), "reason": args.reason})
    else:
        print(f"records archived in {archive}; a new chain starts at the next start: {args.reason}")
    return 0


def _key_show(args: argparse.Namespace, config: Config) -> int:
    created = args.public_key is None and _create_first_key(config.station.state_dir)
    public = _public_key(config, args.public_key)
    if args.json:
        print_json({"fingerprint": keys.fingerprint(public), "public_key": keys.public_pem(public),
                    "created": created})
    else:
        print(keys.public_pem(public), end="")
        print(f"fingerprint: {keys.fingerprint(public)}")
    if created:
        print(f"station: created the station key {config.station.state_dir / keys.KEY_FILE}",
              file=sys.stderr)
    return 0


def _create_first_key(state_dir: Path) -> bool:
    """Make the station key as its first start would, if the station has none yet.

    Never a new key beside records signed by a lost one: ``load_or_create`` refuses that,
    as it does at start-up (the same rule as ``Store``)."""
    if (state_dir / keys.KEY_FILE).exists() or (state_dir / keys.PUBLIC_FILE).exists():
        return False
    try:
        first = not headfile.path_in(state_dir).exists() and db.count_sessions(state_dir) == 0
        keys.load_or_create(state_dir, may_create=first)
    except RecordsUnavailable as error:
        raise OperationFailed(str(error)) from None
    return True


def _public_key(config: Config, public_file: Path | None = None) -> Ed25519PublicKey:
    try:
        return keys.load_public(config.station.state_dir, public_file)
    except RecordsUnavailable as error:
        raise OperationFailed(str(error)) from None
