"""`station status`: the running station's ports, counters and faults, read from its own API.

It asks the station at its config's [web] address (loopback when the station listens on every
address), with the config's token when there is one, so serials show as they do on the page.
No station answering there is the operation failing (exit 1), one line naming the address.
"""
from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from typing import Any

from station.cli import CommandError, OperationFailed
from station.commands.output import print_json
from station.config import Config

TIMEOUT_S = 5.0
ANY_ADDRESS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("status", help="the running station's ports, counters and faults",
                                   description="Ask the running station (its [web] address) how its "
                                               "ports are, as its status page shows them.")
    parser.add_argument("--json", action="store_true",
                        help="the station's /api/status document (README: The status page and API)")
    parser.set_defaults(handler=status)


def status(args: argparse.Namespace, config: Config) -> int:
    if not config.web.enabled:
        raise CommandError(f"the station serves no status: [web] enabled = false in {config.source}")
    document = fetch(config)
    if args.json:
        print_json(document)
    else:
        for line in lines(document):
            print(line)
    return 0


def url_of(config: Config) -> str:
    host = ANY_ADDRESS.get(config.web.listen, config.web.listen)
    return f"http://{f'[{host}]' if ':' in host else host}:{config.web.port}/api/status"


def fetch(config: Config) -> dict[str, Any]:
    url = url_of(config)
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if config.web.token:
        request.add_header("Authorization", f"Bearer {config.web.token}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        raise OperationFailed(f"{url}: {error.code} {_said(error)}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise OperationFailed(f"no station answers at {url}: {getattr(reason, 'strerror', None) or reason}") from None
    except ValueError:
        raise OperationFailed(f"{url}: not the station's status (not JSON)") from None


def lines(document: dict[str, Any]) -> list[str]:
    faults = f"  FAULTS: {', '.join(document['faults'])}" if document["faults"] else ""
    out = [f"station {document['station']}{faults}"]
    if document.get("status"):
        out.append(document["status"])
    for port in document["ports"]:
        who = " ".join(filter(None, (port["model"], port["serial"] or (port["ecid"] and f"ECID {port['ecid']}"))))
        what = port["operator_reason"] or port["eta"] or ""
        out.append(f"slot {port['slot']}: {port['title']:<13} {port['label']:<8} {who}  {what}".rstrip())
    counters = document["counters"]
    out.append(f"today: {counters['restored']} restored, {counters['failed']} failed, "
               f"{counters['locked']} locked, {counters['retried']} retried")
    return out


def _said(error: urllib.error.HTTPError) -> str:
    try:
        return json.load(error)["error"]
    except (ValueError, KeyError, TypeError, OSError):
        return error.reason or ""
