"""The station's Ed25519 key: created on first start, kept in the state dir with mode 0600.

Its public half is written beside it (``station_key.pub``) so that reading commands and
auditors never need the private key: ``records verify`` and ``key show`` read that file,
or one given with ``--public-key``.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import os
import stat
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from station.records.statedir import RecordsUnavailable, prepare

log = logging.getLogger(__name__)

KEY_FILE = "station_key.pem"
PUBLIC_FILE = "station_key.pub"


def load_or_create(state_dir: Path, *, may_create: bool = True) -> Ed25519PrivateKey:
    """The station key, created (mode 0600) if this is the station's first start.

    ``may_create`` False (records signed by a key exist): a missing key is an error that
    says so, never silently replaced by a new one that every old signature would fail.
    """
    path = prepare(state_dir) / KEY_FILE
    try:
        key = _load(path)
    except FileNotFoundError:
        if not may_create:
            raise RecordsUnavailable(
                f"records unavailable: station key {path} is missing but records signed by it "
                "exist: put the key back from a backup, or start a new chain with "
                "`station records new-chain --reason TEXT`") from None
    else:
        _write_public(state_dir, key.public_key())
        return key
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
    _write_public(state_dir, key.public_key())
    return key


def load_public(state_dir: Path, public_file: Path | None = None) -> Ed25519PublicKey:
    """The public key for verifying: ``public_file``, else the state dir's public or private key."""
    if public_file is not None:
        return _read_public(public_file)
    if (state_dir / PUBLIC_FILE).exists():
        return _read_public(state_dir / PUBLIC_FILE)
    path = state_dir / KEY_FILE
    try:
        return _load(path).public_key()
    except FileNotFoundError:
        raise RecordsUnavailable(f"records unavailable: no station key at {path} "
                                 "(give the public key with --public-key FILE)") from None


def _read_public(path: Path) -> Ed25519PublicKey:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise RecordsUnavailable(f"{path}: cannot read: {error.strerror}") from None
    try:
        public = serialization.load_pem_public_key(data)
    except ValueError:
        raise RecordsUnavailable(f"{path}: not a PEM public key") from None
    if not isinstance(public, Ed25519PublicKey):
        raise RecordsUnavailable(f"{path}: not an Ed25519 public key")
    return public


def _write_public(state_dir: Path, public: Ed25519PublicKey) -> None:
    """Keep ``station_key.pub`` beside the key (best effort: the private key is the truth)."""
    path = state_dir / PUBLIC_FILE
    pem = public_pem(public)
    try:
        if path.exists() and path.read_text(encoding="ascii") == pem:
            return
        fd, temp = tempfile.mkstemp(dir=state_dir, prefix=".station_key.pub.")
        with os.fdopen(fd, "w", encoding="ascii") as stream:
            stream.write(pem)
        os.replace(temp, path)
    except (OSError, UnicodeDecodeError) as error:
        log.warning("cannot write %s: %s", path, error)


def _load(path: Path) -> Ed25519PrivateKey:
    if path.is_symlink() and not path.exists():
        raise RecordsUnavailable(f"records unavailable: {path} is a symlink to "
                                 f"{os.readlink(path)}, which does not exist")
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
    except TypeError:  # cryptography's word for "encrypted, and no password given"
        raise RecordsUnavailable(f"records unavailable: {path} is encrypted: the station "
                                 "needs its key without a passphrase") from None
    except (ValueError, UnsupportedAlgorithm):
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
