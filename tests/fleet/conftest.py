"""A real Mosquitto broker per test, on a free loopback port, with persistence in the test's dir.

Debian's ``mosquitto`` is installed when missing (we are root in the test image); where it
cannot be, the fleet's tests skip with one reason. The package's own service plays no part:
each broker here is ``mosquitto -c <file>`` of the test's own.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion
import debian
from records import helpers
from records.helpers import FakeClock, Phone
from web.running import free_port

from station.config import StationSection
from station.records import chain
from station.records.recorder import Recorder

MOSQUITTO = "/usr/sbin/mosquitto"


@dataclass
class Broker:
    """One mosquitto; ``stop`` (SIGTERM: it saves its persistence file) and ``start`` again."""

    binary: str
    dir: Path
    port: int = field(default_factory=free_port)
    extra: str = ""  # more lines for mosquitto.conf
    anonymous: bool = True  # False: clients must log in (a password_file in ``extra``)
    listener: str = ""  # lines for the listener (TLS files)
    process: subprocess.Popen | None = None

    @property
    def conf(self) -> Path:
        return self.dir / "mosquitto.conf"

    @property
    def _user(self) -> str:
        # Started as root, mosquitto becomes user "mosquitto", who may not write the test's dir.
        return "user root\n" if os.geteuid() == 0 else ""

    def start(self) -> None:
        self.conf.write_text(f"listener {self.port} 127.0.0.1\n{self.listener}"
                             f"allow_anonymous {str(self.anonymous).lower()}\n"
                             f"persistence true\npersistence_location {self.dir}/\n"
                             f"autosave_interval 1\nlog_dest file {self.dir}/mosquitto.log\n"
                             "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
                             f"log_type subscribe\n{self._user}{self.extra}")
        self.process = subprocess.Popen([self.binary, "-c", str(self.conf)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start: {(self.dir / 'mosquitto.log').read_text()}")

    def reload(self) -> None:
        """SIGHUP: mosquitto reads its ACL and password files again."""
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture(scope="session", autouse=True)
def ctrl_c_reaches_commands() -> Iterator[None]:
    """The tests stop `fleet collect` and `fleet watch` with Ctrl-C (SIGINT). A suite started in
    the background by a non-interactive shell has SIGINT ignored, and an ignored signal stays
    ignored across exec, so those commands would never see it and the tests would wait out their
    timeouts. A handler is reset to the default across exec: with Python's own in place here,
    each command starts as it would from a terminal."""
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.fixture(scope="session")
def mosquitto_binary() -> str:
    found = shutil.which("mosquitto")
    if found:
        return found
    debian.ensure(("mosquitto",), (Path(MOSQUITTO),))
    return MOSQUITTO


@pytest.fixture
def broker(mosquitto_binary: str, tmp_path: Path) -> Iterator[Broker]:
    directory = tmp_path / "broker"
    directory.mkdir()
    running = Broker(mosquitto_binary, directory)
    running.start()
    yield running
    running.stop()


def station_command(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "station.cli", *args, "--config", str(config)]


STATION_ID = "bench-1"
# Four phones found locked (Find My): each is a record when the station stops (or the phone leaves).
LOCKED_FOUR = '[scenario]\nengine = "timed"\n[config.restore]\nmode = "line"\n' + "".join(
    f'[[phone]]\nname = "locked{slot}"\nslot = {slot}\nmodel = "iPhone15,4"\n'
    f'serial = "G6TZK2P4FLT{slot}"\nfind_my = true\nactivation_lock = true\nexpect = "locked"\n'
    for slot in (1, 2, 3, 4))


@dataclass
class Bench:
    """A simulated station's config and state, publishing to ``broker``."""

    dir: Path
    broker: Broker

    @property
    def config(self) -> Path:
        return self.dir / "station.toml"

    @property
    def state_dir(self) -> Path:
        return self.dir / "state"

    @property
    def scenario(self) -> Path:
        return self.dir / "locked.toml"

    def command(self, *args: str) -> list[str]:
        return station_command(self.config, *args)

    def run(self, speed: float = 20, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """One whole simulated run: four records, sealed when it stops."""
        return subprocess.run(self.command("run", "--sim", str(self.scenario), "--speed", str(speed)),
                              capture_output=True, text=True, timeout=timeout, cwd=self.dir)


@pytest.fixture
def bench(broker: Broker, tmp_path: Path) -> Bench:
    made = Bench(tmp_path / "bench", broker)
    made.dir.mkdir()
    made.config.write_text(f'[station]\nid = "{STATION_ID}"\nstate_dir = "state"\n[hardware]\nbackend = "sim"\n'
                           f'[hub]\nslots = 4\n[mqtt]\nenabled = true\nhost = "127.0.0.1"\n'
                           f'port = {broker.port}\nkeepalive_s = 5\n')
    made.scenario.write_text(LOCKED_FOUR)
    return made


@dataclass
class Collecting:
    """`station fleet collect` running as a subprocess; ``stop`` ends it (Ctrl-C) and returns stderr."""

    db: Path
    process: subprocess.Popen

    def stored(self) -> list[tuple[int, str, str]]:
        """(chain position, hash, prev_hash) of each record stored, in chain order."""
        if not self.db.exists():
            return []
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            return conn.execute("SELECT seq, hash, prev_hash FROM records ORDER BY seq").fetchall()
        except sqlite3.OperationalError:
            return []
        finally:
            conn.close()

    def wait_for(self, count: int, timeout: float = 30) -> list[tuple[int, str, str]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stored = self.stored()
            if len(stored) >= count:
                return stored
            time.sleep(0.1)
        raise AssertionError(f"the collector has {len(self.stored())} records, not {count}, "
                             f"after {timeout:.0f} s")

    def stop(self) -> str:
        self.process.send_signal(signal.SIGINT)
        _, err = self.process.communicate(timeout=15)
        return err


@pytest.fixture
def collector(bench: Bench, tmp_path: Path) -> Iterator[Collecting]:
    db = tmp_path / "fleet.sqlite3"
    process = subprocess.Popen(bench.command("fleet", "collect", "--db", str(db)),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    running = Collecting(db, process)
    _wait_for_subscriber(bench.broker)
    yield running
    if process.poll() is None:
        running.stop()


def _wait_for_subscriber(broker: Broker, timeout: float = 15) -> None:
    """Until the collector subscribed to the records (the broker's log says so)."""
    log = broker.dir / "mosquitto.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and "/+/records" in log.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise AssertionError("the collector did not connect")


def make_records(state_dir: Path, count: int) -> None:
    """``count`` sealed records in the station's state dir, written as the station writes them:
    restores with certificates, and locked phones, one after another."""
    clock = FakeClock()
    with Recorder(StationSection(id=STATION_ID, state_dir=state_dir), now=clock) as recorder:
        for n in range(1, count + 1):
            phone = Phone(recorder, n % 4 + 1, clock)
            (helpers.clean_restore if n % 3 else helpers.locked)(phone, n)
            clock.advance(60)


def long_scenario(path: Path, detach_at: tuple[float, ...] = (600,)) -> Path:
    """Phones that stay (the run goes on) until they leave at ``detach_at`` (scenario seconds)."""
    text = '[scenario]\nengine = "timed"\n[config.restore]\nmode = "line"\n'
    for slot, detach in enumerate(detach_at, start=1):
        text += (f'[[phone]]\nname = "stays{slot}"\nslot = {slot}\nmodel = "iPhone15,4"\n'
                 f'serial = "G6TZK2P4FST{slot}"\nfind_my = true\nactivation_lock = true\n'
                 f'attach = 1\ndetach = {detach}\nexpect = "empty"\n')
    path.write_text(text)
    return path


def outbox_rows(state_dir: Path) -> int:
    conn = sqlite3.connect(state_dir / "records.sqlite3")
    try:
        return conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
    finally:
        conn.close()


def assert_one_chain(stored: list[tuple[int, str, str]], count: int) -> None:
    """Positions 1..count, each once, each linked to the one before: nothing lost, nothing twice."""
    assert [seq for seq, _, _ in stored] == list(range(1, count + 1))
    prev = chain.GENESIS
    for seq, digest, prev_hash in stored:
        assert prev_hash == prev, f"chain position {seq} does not follow {seq - 1}"
        prev = digest


def sealed(state_dir: Path) -> int:
    conn = sqlite3.connect(state_dir / "records.sqlite3", timeout=10)
    try:
        return conn.execute("SELECT count(*) FROM sessions WHERE seq IS NOT NULL").fetchone()[0]
    finally:
        conn.close()


@dataclass(frozen=True)
class Certificates:
    ca: Path  # the CA that signed the broker's certificate
    cert: Path
    key: Path
    other_ca: Path  # a CA that signed nothing here


def make_certificates(directory: Path) -> Certificates:
    """A CA and a certificate for 127.0.0.1 signed by it (and an unrelated CA), as PEM files."""
    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    now = datetime.datetime.now(datetime.UTC)

    def certificate(subject: str, key, issuer: str, issuer_key, ca: bool) -> x509.Certificate:
        builder = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    def write(path: Path, cert: x509.Certificate) -> Path:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    ca_key, other_key, server_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    made = Certificates(
        ca=write(directory / "ca.pem", certificate("test CA", ca_key, "test CA", ca_key, True)),
        cert=write(directory / "broker.pem", certificate("127.0.0.1", server_key, "test CA", ca_key, False)),
        key=directory / "broker.key",
        other_ca=write(directory / "other-ca.pem", certificate("other CA", other_key, "other CA", other_key, True)))
    made.key.write_bytes(server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return made


class Listening:
    """A plain paho subscriber to ``topic``, keeping (topic, payload, retained) of what came."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self._client.on_message = lambda _c, _u, message: self.messages.append(
            (message.topic, message.payload, bool(message.retain)))
        self._client.on_subscribe = lambda *_: subscribed.set()
        self._client.connect("127.0.0.1", port)
        self._client.subscribe(topic, qos=1)
        self._client.loop_start()
        assert subscribed.wait(10)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
