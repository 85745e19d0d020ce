"""Apple's signing server (TSS, gs.apple.com), simulated at its HTTP boundary on 127.0.0.1.

It answers the POST of pymobiledevice3's ``TSSRequest.send_receive`` (pmd3 restore/tss.py,
PROTOCOLS.md 5.2) as Apple does: HTTP 200, ``text/html``, a body
``STATUS=0&MESSAGE=SUCCESS&REQUEST_STRING=<XML plist>`` holding ``ApImg4Ticket`` (an IM4M
that pyimg4 parses and ``img4.stitch_component`` stitches), ``<name>-TBM`` {ucon, ucer} for
components whose request entry has TBMDigests (idevicerestore src/img4.c
``img4_stitch_component`` reads those two keys), ``BBTicket`` and ``BasebandFirmware``
{<elem>-Blob} for a baseband request, and ``<X>`` for any other ``@<X>`` ticket asked for
(SE,Ticket, Savage,Ticket, Rap,Ticket...: signed the same way, their shape not checked).

Like Apple it knows builds by their manifests (``add_build``/``add_ipsw``) and tells which
build a request is for from its ApChipID/ApBoardID, UniqueBuildID and the Digest of every
component it names. Its answers, from libtatsu src/tss.c ``tss_request_send``
(libimobiledevice/libtatsu @ 60a39f36, which stops at 69/94 "This device isn't eligible for
the requested build." and at 100 "server error, most likely the request was malformed"):
- a build it does not know, or one ``unsigned`` names for the phone's ProductType:
  ``STATUS=94&MESSAGE=This device isn't eligible for the requested build.``; pmd3 raises
  ``TSSError`` with that message, the station (worker/real.py NOT_SIGNED_STATUSES) sees 94;
- a request wrong in shape (not a plist, no ticket asked for, ApECID/ApChipID/ApBoardID/
  ApSecurityDomain not integers, ApNonce missing or not 20/32 bytes, a component without
  its bytes Digest): ``STATUS=100&MESSAGE=An internal error occurred.``, the answer quoted in
  libimobiledevice/idevicerestore issue #199.

Tickets are signed with the simulator's own key (ECDSA P-384 over the DER of the manifest
body SET, derived from a fixed seed so that a simulated phone in another process checks them
with ``verify_ticket``/``verify_personalized`` without sharing state) and carry one
self-signed certificate in the certificate chain's place.

A thread runs ``ThreadingHTTPServer``, as for the activation server: pmd3 posts with blocking
``requests`` from a thread pool, and the server must answer whichever event loop (or none)
the restore runs on. ``point_tss_at`` aims pmd3 at it; only simulated backends call it.
"""
from __future__ import annotations

import hashlib
import logging
import plistlib
import threading
import zipfile
from collections import deque
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pyimg4 import IM4M, IMG4
from pymobiledevice3.restore import tss
from pymobiledevice3.restore.img4 import COMPONENT_FOURCC

from hw.models import by_chip_board
from hw.sim.http_server import LocalHttpServer

logger = logging.getLogger(__name__)

TSS_PATH = "/TSS/controller?action=2"
APPLE_TSS_URL = "http://gs.apple.com/TSS/controller?action=2"  # pmd3's tss.TSS_CONTROLLER_ACTION_URL
NOT_ELIGIBLE = (94, "This device isn't eligible for the requested build.")
MALFORMED = (100, "An internal error occurred.")
NONCE_SIZES = (20, 32)  # bytes of an ApNonce: 20 up to A10, 32 from A11 (the simulated phone: SHA-256)
_SIGNING_SEED = b"station-sim-tss signing key v1"
_CERT_TIME = datetime(2020, 1, 1, tzinfo=timezone.utc), datetime(2040, 1, 1, tzinfo=timezone.utc)
# Request keys that are neither tags of the AP ticket nor components (dicts of the request).
_NOT_COMPONENTS = {"BasebandFirmware"}


def point_tss_at(url: str | None) -> None:
    """Aim pymobiledevice3's TSS POSTs at ``url`` (``TssServer.url``); None restores Apple's.

    ``TSSRequest.send_receive`` reads the module constant at call time, in this process only:
    a restore in a child process must call this there (e.g. from an environment variable).
    """
    tss.TSS_CONTROLLER_ACTION_URL = APPLE_TSS_URL if url is None else url


SEEN_KEPT = 256  # the latest requests, for tests: bounded, as a soak sends thousands


@dataclass(frozen=True)
class Seen:
    """One request the server answered: the phone's ECID (None if unreadable), the build, the status."""

    ecid: int | None
    build: str | None
    product_type: str | None
    status: int


@dataclass(frozen=True)
class _Known:
    build: str
    product_type: str
    identity: Mapping[str, Any]


class TssServer:
    def __init__(self, unsigned: Collection[tuple[str, str]] = (), host: str = "127.0.0.1",
                 port: int = 0) -> None:
        """``unsigned``: (build, ProductType) pairs Apple no longer signs, e.g. ("21F90", "iPhone14,7")."""
        self.host = host
        self.seen: deque[Seen] = deque(maxlen=SEEN_KEPT)
        self._unsigned = set(unsigned)
        self._known: dict[tuple[int, int], list[_Known]] = {}
        self._lock = threading.Lock()
        self._http = LocalHttpServer("tss", self._answer_http, host, port)

    # Builds ------------------------------------------------------------------------------

    def add_build(self, manifest: bytes | Mapping[str, Any]) -> None:
        """Know a build by its BuildManifest (plist bytes or parsed), as Apple knows every build it made."""
        plist = plistlib.loads(manifest) if isinstance(manifest, bytes) else manifest
        build = plist["ProductBuildVersion"]
        with self._lock:
            for identity in plist["BuildIdentities"]:
                chip, board = int(identity["ApChipID"], 16), int(identity["ApBoardID"], 16)
                model = by_chip_board(chip, board)
                product_type = model.product_type if model else identity.get("Ap,ProductType", "")
                self._known.setdefault((chip, board), []).append(_Known(build, product_type, identity))

    def add_ipsw(self, path: Path) -> None:
        with zipfile.ZipFile(path) as archive:
            self.add_build(archive.read("BuildManifest.plist"))

    def set_signed(self, build: str, product_type: str, signed: bool) -> None:
        """Start or stop signing ``build`` for ``product_type`` (Apple stops a week or two after a release)."""
        with self._lock:
            (self._unsigned.discard if signed else self._unsigned.add)((build, product_type))

    def is_signed(self, build: str, product_type: str) -> bool:
        return (build, product_type) not in self._unsigned

    # Server ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """What to put in pmd3's ``tss.TSS_CONTROLLER_ACTION_URL`` (see ``point_tss_at``)."""
        return self._http.base_url + TSS_PATH

    def start(self) -> None:
        self._http.start()

    def stop(self) -> None:
        self._http.stop()

    def _answer_http(self, path: str, body: bytes) -> tuple[int, str, bytes]:
        if path != TSS_PATH:
            return 404, "text/html", b"<html><head><title>404</title></head><body>404</body></html>"
        return 200, "text/html", self.answer(body)  # Apple's content type, for the STATUS=... body too

    def __enter__(self) -> TssServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # Answers -----------------------------------------------------------------------------

    def answer(self, body: bytes) -> bytes:
        """The body Apple would send for the request ``body`` (always with HTTP 200)."""
        request = _plist(body)
        ecid = request.get("ApECID") if request is not None else None
        ecid = ecid if isinstance(ecid, int) and not isinstance(ecid, bool) else None
        problem = _malformed(request)
        if problem is not None or request is None:
            logger.info("TSS: malformed request from ECID %s: %s", ecid, problem)
            self.seen.append(Seen(ecid, None, None, MALFORMED[0]))
            return _status(*MALFORMED)
        known = self._find(request) if "ApChipID" in request else None
        if known is None and "ApChipID" in request:
            self.seen.append(Seen(ecid, None, None, NOT_ELIGIBLE[0]))
            return _status(*NOT_ELIGIBLE)
        if known is not None and not self.is_signed(known.build, known.product_type):
            self.seen.append(Seen(ecid, known.build, known.product_type, NOT_ELIGIBLE[0]))
            return _status(*NOT_ELIGIBLE)
        response = _sign(request, known)
        self.seen.append(Seen(ecid, known.build if known else None, known.product_type if known else None, 0))
        return b"STATUS=0&MESSAGE=SUCCESS&REQUEST_STRING=" + plistlib.dumps(response)

    def _find(self, request: Mapping[str, Any]) -> _Known | None:
        with self._lock:
            candidates = list(self._known.get((request["ApChipID"], request["ApBoardID"]), ()))
        for known in candidates:
            if _fits(request, known.identity):
                return known
        return None


def _fits(request: Mapping[str, Any], identity: Mapping[str, Any]) -> bool:
    """The request names this identity: same UniqueBuildID if given, the same digest for each component."""
    unique = request.get("UniqueBuildID")
    if unique is not None and unique != identity.get("UniqueBuildID"):
        return False
    manifest = identity.get("Manifest", {})
    for name, entry in _components(request):
        if name in _NOT_COMPONENTS:
            continue
        known = manifest.get(name)
        if known is None or known.get("Digest", b"") != entry.get("Digest", b""):
            return False
    return True


def _malformed(request: dict[str, Any] | None) -> str | None:
    """Why Apple would refuse this request as malformed, or None."""
    if request is None:
        return "not a plist dictionary"
    tickets = [k for k, v in request.items() if k.startswith("@") and k.endswith("Ticket") and v is True]
    if not tickets:
        return "no ticket asked for"
    if "@ApImg4Ticket" in request:
        for key in ("ApECID", "ApChipID", "ApBoardID", "ApSecurityDomain"):
            value = request.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                return f"{key} is {value!r}"
        nonce = request.get("ApNonce")
        if not isinstance(nonce, bytes) or len(nonce) not in NONCE_SIZES:
            return f"ApNonce is {nonce!r}"
        for key in ("ApProductionMode", "ApSecurityMode"):
            if not isinstance(request.get(key, True), bool):
                return f"{key} is {request[key]!r}"
        sep_nonce = request.get("SepNonce")
        if sep_nonce is not None and not isinstance(sep_nonce, bytes):
            return f"SepNonce is {sep_nonce!r}"
        for name, entry in _components(request):
            if name not in _NOT_COMPONENTS and not isinstance(entry.get("Digest"), bytes):
                return f"{name} has no Digest"
    return None


def _components(request: Mapping[str, Any]) -> Iterable[tuple[str, dict[str, Any]]]:
    return ((k, v) for k, v in request.items() if isinstance(v, dict) and not k.startswith("@"))


def _sign(request: Mapping[str, Any], known: _Known | None) -> dict[str, Any]:
    response: dict[str, Any] = {}
    asked = {k[1:] for k, v in request.items() if k.startswith("@") and v is True}
    if "ApImg4Ticket" in asked:
        response["ApImg4Ticket"] = _ap_ticket(request, known)
        for name, entry in _components(request):
            if "TBMDigests" in entry:  # idevicerestore img4.c: {ucon, ucer} become IM4R properties
                response[f"{name}-TBM"] = {"ucon": _signature(b"ucon" + entry["TBMDigests"]),
                                           "ucer": _certificate()}
    if "BBTicket" in asked and "BasebandFirmware" in request and "BbSNUM" in request:
        response["BBTicket"] = _signature(b"BBTicket" + plistlib.dumps(dict(request), fmt=plistlib.FMT_BINARY))
        response["BasebandFirmware"] = {
            f"{key.split('-', 1)[0]}-Blob": _signature(value)
            for key, value in request["BasebandFirmware"].items()
            if key.endswith("-PartialDigest") and isinstance(value, bytes)}
    for other in asked - {"ApImg4Ticket", "BBTicket", "APTicket"}:
        response[other] = _generic_ticket(request, other)
    return response


# Tickets ----------------------------------------------------------------------------------


def _ap_ticket(request: Mapping[str, Any], known: _Known | None) -> bytes:
    """An IM4M: MANP (the device and its nonces) and one image per component digest."""
    properties: dict[str, Any] = {
        "BNCH": request["ApNonce"],
        "BORD": request["ApBoardID"],
        "CEPO": 0,
        "CHIP": request["ApChipID"],
        "CPRO": bool(request.get("ApProductionMode", True)),
        "CSEC": bool(request.get("ApSecurityMode", True)),
        "ECID": request["ApECID"],
        "SDOM": request["ApSecurityDomain"],
        "srvn": hashlib.sha1(b"srvn" + plistlib.dumps(dict(request), fmt=plistlib.FMT_BINARY)).digest(),
    }
    if isinstance(request.get("SepNonce"), bytes):
        properties["snon"] = request["SepNonce"]
    manifest = known.identity.get("Manifest", {}) if known is not None else {}
    images = []
    for name, entry in _components(request):
        digest = entry.get("Digest")
        if name in _NOT_COMPONENTS or not digest:
            continue
        fourcc = manifest.get(name, {}).get("Info", {}).get("Img4PayloadType") or COMPONENT_FOURCC.get(name)
        if fourcc is None:
            continue
        image = {"DGST": digest}
        image.update({k: entry[k] for k in ("EKEY", "EPRO", "ESEC", "DPRO", "DSEC") if isinstance(entry.get(k), bool)})
        images.append(_group(fourcc, [_property(k, v) for k, v in image.items()]))
    return _im4m([_group("MANP", [_property(k, v) for k, v in properties.items()]), *images])


def _generic_ticket(request: Mapping[str, Any], name: str) -> bytes:
    """A signed IM4M for another updater's ``@<name>`` request: the request's digest, no more."""
    digest = hashlib.sha384(plistlib.dumps(dict(request), fmt=plistlib.FMT_BINARY)).digest()
    return _im4m([_group("MANP", [_property("DGST", digest), _property("srvn", name.encode()[:20])])])


def _im4m(body: list[bytes]) -> bytes:
    manb = _set(_group("MANB", body))
    return _seq(_ia5("IM4M"), _int(0), manb, _octets(_signature(manb)), _seq(_certificate()))


def verify_ticket(ticket: bytes) -> IM4M:
    """The IM4M if the simulator signed it (the check a simulated phone's boot ROM makes); else ValueError."""
    items = _children(ticket)
    if len(items) != 5 or items[0] != _ia5("IM4M"):
        raise ValueError("not an IM4M with a signature")
    signature = _content(items[3])
    try:
        _signing_key().public_key().verify(signature, items[2], ec.ECDSA(hashes.SHA384()))
    except Exception as error:  # InvalidSignature has no message
        raise ValueError("the ticket's signature is not the simulated TSS's") from error
    return IM4M(ticket)


def verify_personalized(img4: bytes, ecid: int, ap_nonce: bytes) -> str:
    """What a simulated phone checks in a stitched IMG4: ticket signed, for it, and naming the image.

    Returns the image's type (``ibss``...); raises ValueError.
    """
    image = IMG4(img4)
    if image.im4m is None or image.im4p is None:
        raise ValueError("not a personalized IMG4 (no IM4M)")
    manifest = verify_ticket(image.im4m.output())
    if manifest.ecid != ecid:
        raise ValueError(f"ticket for ECID {manifest.ecid:#x}, not {ecid:#x}")
    if manifest.apnonce != ap_nonce:
        raise ValueError("ticket for another ApNonce")
    fourcc = image.im4p.fourcc
    entry = next((i for i in manifest.images if i.fourcc == fourcc), None)
    if entry is None:
        raise ValueError(f"the ticket names no {fourcc!r} image")
    if entry.digest != hashlib.sha384(image.im4p.output()).digest():
        raise ValueError(f"the {fourcc!r} image is not the one the ticket signed")
    return fourcc


@cache
def _signing_key() -> ec.EllipticCurvePrivateKey:
    curve = ec.SECP384R1()
    order = int("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973", 16)
    secret = int.from_bytes(hashlib.sha512(_SIGNING_SEED).digest(), "big") % (order - 1) + 1
    return ec.derive_private_key(secret, curve)


def public_key() -> ec.EllipticCurvePublicKey:
    return _signing_key().public_key()


def _signature(data: bytes) -> bytes:
    return _signing_key().sign(data, ec.ECDSA(hashes.SHA384(), deterministic_signing=True))


@cache
def _certificate() -> bytes:
    key = _signing_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Simulated TSS signing (station simulator)")])
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(1).not_valid_before(_CERT_TIME[0]).not_valid_after(_CERT_TIME[1])
                   .sign(key, hashes.SHA384(), ecdsa_deterministic=True))
    return certificate.public_bytes(serialization.Encoding.DER)


# DER, just what an IM4M needs -------------------------------------------------------------


def _tlv(tag: bytes, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return tag + bytes([size]) + content
    raw = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return tag + bytes([0x80 | len(raw)]) + raw + content


def _private(fourcc: str, content: bytes) -> bytes:
    number = int.from_bytes(fourcc.encode("ascii"), "big")
    digits = []
    while True:
        digits.append(number & 0x7F)
        number >>= 7
        if not number:
            break
    base128 = bytes(d | (0x80 if i else 0) for i, d in reversed(list(enumerate(digits))))
    return _tlv(b"\xff" + base128, content)  # private, constructed, high tag number


def _seq(*items: bytes) -> bytes:
    return _tlv(b"\x30", b"".join(items))


def _set(*items: bytes) -> bytes:
    return _tlv(b"\x31", b"".join(sorted(items)))  # DER: a SET's members in order


def _ia5(text: str) -> bytes:
    return _tlv(b"\x16", text.encode("ascii"))


def _int(value: int) -> bytes:
    return _tlv(b"\x02", value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True))


def _octets(data: bytes) -> bytes:
    return _tlv(b"\x04", data)


def _value(value: Any) -> bytes:
    if isinstance(value, bool):
        return _tlv(b"\x01", b"\xff" if value else b"\x00")
    if isinstance(value, int):
        return _int(value)
    if isinstance(value, bytes):
        return _octets(value)
    raise TypeError(f"no IM4M encoding for {type(value).__name__}")


def _property(fourcc: str, value: Any) -> bytes:
    return _private(fourcc, _seq(_ia5(fourcc), _value(value)))


def _group(fourcc: str, members: list[bytes]) -> bytes:
    return _private(fourcc, _seq(_ia5(fourcc), _set(*members)))


def _read(data: bytes, at: int) -> tuple[int, int, int]:
    """(start of content, end of element, start of element) of the element at ``at``."""
    start, at = at, at + 1
    if data[start] & 0x1F == 0x1F:
        while data[at] & 0x80:
            at += 1
        at += 1
    size = data[at]
    at += 1
    if size & 0x80:
        count = size & 0x7F
        size = int.from_bytes(data[at:at + count], "big")
        at += count
    if at + size > len(data):
        raise ValueError("truncated DER")
    return at, at + size, start


def _children(element: bytes) -> list[bytes]:
    content, end, _ = _read(element, 0)
    items, at = [], content
    while at < end:
        _, next_at, start = _read(element, at)
        items.append(element[start:next_at])
        at = next_at
    return items


def _content(element: bytes) -> bytes:
    content, end, _ = _read(element, 0)
    return element[content:end]


# HTTP ---------------------------------------------------------------------------------------


def _status(status: int, message: str) -> bytes:
    return f"STATUS={status}&MESSAGE={message}".encode()


def _plist(body: bytes) -> dict[str, Any] | None:
    try:
        value = plistlib.loads(body)
    except Exception:  # plistlib raises many kinds on garbage
        return None
    return value if isinstance(value, dict) else None


