"""The station's Ed25519 key: created on first start, kept in the state dir with mode 0600."""
from __future__ import annotations

import base64
import hashlib
import logging
import os
import stat
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from station.records.statedir import RecordsUnavailable, prepare

log = logging.getLogger(__name__)

KEY_FILE = "station_key.pem"


def load_or_create(state_dir: Path) -> Ed25519PrivateKey:
    """The station key, created (mode 0600) if this is the station's first start."""
    path = prepare(state_dir) / KEY_FILE
    try:
        return _load(path)
    except FileNotFoundError:
        pass
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    # Written beside and linked into place: a power cut never leaves half a key, and of two
    # processes starting at once only one key wins.
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".station_key.")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(pem)
            stream.flush()
            os.fsync(stream.fileno())
        os.link(temp, path)
    except FileExistsError:
        return _load(path)
    except OSError as error:
        raise RecordsUnavailable(f"records unavailable: cannot create {path}: {error.strerror}") from None
    finally:
        os.unlink(temp)
    log.info("created station key %s (%s)", path, fingerprint(key.public_key()))
    return key


def load_public(state_dir: Path) -> Ed25519PublicKey:
    """The public half, for verifying; the key must exist (it is never created here)."""
    path = state_dir / KEY_FILE
    try:
        return _load(path).public_key()
    except FileNotFoundError:
        raise RecordsUnavailable(f"records unavailable: no station key at {path}") from None


def _load(path: Path) -> Ed25519PrivateKey:
    try:
        data = path.read_bytes()
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        raise  # the callers decide: create the key, or say there is none
    except OSError as error:
        raise RecordsUnavailable(f"records unavailable: cannot read {path}: {error.strerror}") from None
    if mode & 0o077:
        log.warning("%s has mode %o; setting 0600", path, mode)
        try:
            path.chmod(0o600)
        except OSError as error:
            log.warning("cannot chmod %s: %s", path, error.strerror)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except ValueError:
        raise RecordsUnavailable(f"records unavailable: {path} is not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise RecordsUnavailable(f"records unavailable: {path} is not an Ed25519 key")
    return key


def public_pem(public: Ed25519PublicKey) -> str:
    return public.public_bytes(serialization.Encoding.PEM,
                               serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def fingerprint(public: Ed25519PublicKey) -> str:
    """``SHA256:<hex>`` of the 32 raw public key bytes; what certificates name their signer by."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "SHA256:" + hashlib.sha256(raw).hexdigest()


def sign(key: Ed25519PrivateKey, message: bytes) -> str:
    return base64.b64encode(key.sign(message)).decode("ascii")


def is_valid(public: Ed25519PublicKey, message: bytes, signature: str) -> bool:
    try:
        public.verify(base64.b64decode(signature, validate=True), message)
    except (InvalidSignature, ValueError):
        return False
    return True
