"""`station fleet watch` and `station fleet collect`: the fleet, read from the MQTT broker of [mqtt].

Both connect with the config's host, credentials and TLS (``[mqtt] enabled`` is
about publishing: these work whatever it says), log connection trouble in one
line each, and reconnect by themselves. Ctrl-C stops them (exit 130).
"""
from __future__ import annotations

import argparse
import json
import logging
import socket
import sqlite3
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from rich.console import Console
from rich.live import Live

from station.cli import CommandError, OperationFailed, positive_number
from station.commands.output import print_json
from station.config import Config
from station.fleet import link, topics
from station.fleet.collect import SESSION_EXPIRY_S, Collector, KeyConflict, parse_public
from station.fleet.watch import Board

log = logging.getLogger(__name__)

REFRESH_S = 0.5


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("fleet", help="every station's ports and records, from the MQTT broker")
    commands = parser.add_subparsers(dest="fleet_command", required=True, metavar="COMMAND")
    watch = commands.add_parser("watch", help="a live table of every station's ports")
    watch.add_argument("--once", action="store_true",
                       help="print what the broker holds now (after --wait) and exit")
    watch.add_argument("--wait", type=positive_number, default=2.0, metavar="S",
                       help="with --once: how long to gather the retained ports (default 2)")
    watch.add_argument("--json", action="store_true",
                       help="with --once: an array of ports; else JSON Lines, one port per change (a stream)")
    watch.set_defaults(handler=watch_fleet)
    collect = commands.add_parser("collect", help="store and verify every station's records in one file")
    collect.add_argument("--db", type=Path, required=True, metavar="FILE",
                         help="the SQLite file to keep them in (created if needed)")
    collect.add_argument("--key", action="append", default=[], metavar="ID=FILE",
                         help="pin station ID's public key (PEM) instead of trusting the first seen")
    collect.add_argument("--client-id", metavar="NAME",
                         help="the collector's MQTT client id (default: station-collect-<host>); "
                              "the broker keeps records for it while it is away")
    collect.add_argument("--idle", type=positive_number, metavar="S",
                         help="exit once S seconds pass with no record (default: run until stopped)")
    collect.add_argument("--json", action="store_true",
                         help='at the end, print {"db", "stored", "duplicates", "refused", "stations"}')
    collect.set_defaults(handler=collect_records)


def watch_fleet(args: argparse.Namespace, config: Config) -> int:
    board = Board(config.mqtt.topic_prefix)
    stream = args.json and not args.once

    def on_message(_client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        port = board.receive(message.topic, message.payload)
        if stream and port is not None:
            print(json.dumps(port, ensure_ascii=False), flush=True)

    client, health = _connect(config, f"station-watch-{socket.gethostname()}-{time.monotonic_ns()}",
                              board.subscriptions(), on_message)
    try:
        if args.once:
            if not health.connected.wait(args.wait + link.RECONNECT_MIN_S):
                raise OperationFailed(f"no connection to {config.mqtt.host}:{config.mqtt.port}")
            time.sleep(args.wait)  # retained messages come right after the subscription
            if args.json:
                print_json(board.ports())
            else:
                Console().print(board.table())
            return 0
        if stream:
            threading.Event().wait()
        with Live(board.table(), refresh_per_second=4, console=Console(stderr=False)) as live:
            while True:
                if board.changed.wait(REFRESH_S):
                    board.changed.clear()
                    live.update(board.table())
    finally:
        client.disconnect()
        client.loop_stop()


def collect_records(args: argparse.Namespace, config: Config) -> int:
    pinned = {}
    for item in args.key:
        station_id, _, file = item.partition("=")
        if not station_id or not file:
            raise CommandError(f"--key {item}: give it as ID=FILE")
        try:
            pinned[station_id] = parse_public(Path(file).read_bytes())
        except (OSError, ValueError) as error:
            raise CommandError(f"--key {item}: {error}") from None
    try:
        collector = Collector(args.db, pinned)
    except KeyConflict as error:
        raise CommandError(str(error)) from None
    except (sqlite3.Error, OSError) as error:
        raise OperationFailed(f"{args.db}: {error}") from None
    prefix = config.mqtt.topic_prefix
    heard = [time.monotonic()]
    failed: list[str] = []  # why the records cannot be stored: then nothing more is taken
    lock = threading.Lock()  # paho's thread writes; the summary at the end reads

    def on_message(client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        about = topics.parse(prefix, message.topic)
        with lock:
            if failed:
                return  # not acknowledged: the broker keeps it for the next start
            try:
                if about is not None and about.kind == topics.KEY:
                    collector.key(about.station_id, message.payload)
                elif about is not None and about.kind == topics.RECORDS:
                    heard[0] = time.monotonic()
                    collector.record(about.station_id, message.payload)
            except (sqlite3.Error, OSError) as error:
                failed.append(f"{args.db}: cannot store what arrived ({error}); the broker keeps "
                              "it for the next start")
                return
        client.ack(message.mid, message.qos)  # stored, refused or ignored: the broker may let go

    subscriptions = [(topics.every_station(prefix, topics.KEY), 1),
                     (topics.every_station(prefix, topics.RECORDS), 1)]
    client, _ = _connect(config, args.client_id or f"station-collect-{socket.gethostname()}",
                         subscriptions, on_message, session_expiry_s=SESSION_EXPIRY_S, manual_ack=True)
    interrupted = False
    try:
        while not failed and (args.idle is None or time.monotonic() - heard[0] < args.idle):
            time.sleep(0.1)
    except KeyboardInterrupt:  # Ctrl-C: the summary, then exit 130
        interrupted = True
    finally:
        client.disconnect()
        client.loop_stop()
        with lock:
            summary = {"db": str(args.db), "stored": collector.tally.stored,
                       "duplicates": collector.tally.duplicates, "refused": collector.tally.refused,
                       "stations": collector.stations()}
            collector.close()
    if failed:
        raise OperationFailed(failed[0])
    if args.json:
        print_json(summary)
    else:
        print(f"{summary['stored']} stored, {summary['duplicates']} duplicates, "
              f"{summary['refused']} refused ({args.db})", file=sys.stderr)
    if interrupted:
        raise KeyboardInterrupt
    return 0


def _connect(config: Config, client_id: str, subscriptions: list[tuple[str, int]],
             on_message: object, session_expiry_s: int = 0,
             manual_ack: bool = False) -> tuple[mqtt.Client, link.Health]:
    client = link.client(config.mqtt, client_id, manual_ack=manual_ack)
    health = link.Health(f"{config.mqtt.host}:{config.mqtt.port}",
                         on_connected=lambda: client.subscribe(subscriptions), tls=config.mqtt.tls)
    health.watch(client)
    client.on_message = on_message
    try:
        link.connect(client, config.mqtt, session_expiry_s=session_expiry_s)
    except link.LinkError as error:
        raise CommandError(str(error)) from None
    return client, health
