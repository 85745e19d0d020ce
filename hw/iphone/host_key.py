"""The station's own host key: one RSA key for every phone it pairs with.

pymobiledevice3 makes a new 2048-bit host key for each pairing unless it is given one
(``create_using_usbmux(private_key=...)``, lockdown.py ``pair``); a station pairs each phone
twice (at the lock check, and again after the restore erased the pairing), so a key of its own
saves one key generation per pairing (about a fifth of a station's CPU per restored phone in
the simulator). pymobiledevice3 still makes a new root key for each pairing
(ca.py ``generate_pairing_cert_chain``); that one cannot be passed in.

The key lives beside the pair records, readable by the station alone. A file that cannot be
read as a key (a power cut while it was written, an edit) is replaced, never fatal: pairings
made with the old key keep working, as each pair record carries its own copy.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

log = logging.getLogger(__name__)

FILE_NAME = "station-host-key.pem"

_loaded: dict[Path, rsa.RSAPrivateKey] = {}


def host_key(pairing_dir: Path) -> rsa.RSAPrivateKey:
    """The key in ``pairing_dir``, made (and kept, mode 0600) the first time it is asked for."""
    path = pairing_dir / FILE_NAME
    key = _loaded.get(path)
    if key is None:
        key = _read(path) or _write(path)
        _loaded[path] = key
    return key


def _read(path: Path) -> rsa.RSAPrivateKey | None:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as error:
        log.warning("%s: not a usable key (%s); making a new one", path, error)
        return None
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048:
        return key
    log.warning("%s: not a 2048-bit RSA key; making a new one", path)
    return None


def _write(path: Path) -> rsa.RSAPrivateKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)
    return key
