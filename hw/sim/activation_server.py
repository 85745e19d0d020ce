"""Apple's activation server, simulated at its HTTP boundary on 127.0.0.1.

It answers the two POSTs pymobiledevice3's ``MobileActivationService.activate`` makes
(PROTOCOLS.md section 4): ``drmHandshake`` with a plist, ``deviceActivation`` with an
Apple-ID form (``application/x-buddyml``) for a phone under Activation Lock, else an
activation record (``text/xml``), or another of the answers in ``activation_pages``
when the phone's ``activation_answer`` names one. It tells phones apart by decoding the activation info
it is sent, as Apple does, and looks the phone up in the world: Apple's database is
``SimPhone.activation_lock``. Refusals (HTTP 5xx) and hangs are switched on with
``set_fault``.

``point_activation_at`` aims pymobiledevice3 at a server; only simulated backends call it.
"""
from __future__ import annotations

import logging
import os
import plistlib
import ssl
import threading
from collections import deque
from dataclasses import dataclass
from urllib.parse import parse_qs

from pymobiledevice3.services import mobile_activation

from hw.sim.activation_pages import answer_for
from hw.sim.framing import plist_dict
from hw.sim.http_server import LocalHttpServer
from hw.sim.mobileactivation import handshake_response_for
from hw.sim.world import SimWorld

logger = logging.getLogger(__name__)

DRM_HANDSHAKE_PATH = "/deviceservices/drmHandshake"
DEVICE_ACTIVATION_PATH = "/deviceservices/deviceActivation"
# The environment variable a simulated backend in a child process reads to find the server.
ACTIVATION_URL_ENV = "STATION_SIM_ACTIVATION_URL"

_APPLE_URLS = (mobile_activation.ACTIVATION_DEFAULT_URL, mobile_activation.ACTIVATION_DRM_HANDSHAKE_DEFAULT_URL)


def point_activation_at(base_url: str | None) -> None:
    """Aim pymobiledevice3's activation POSTs at ``base_url`` (e.g. ``http://127.0.0.1:8123``); None restores Apple's.

    Never called on the real station path: the URLs are module constants read at call time.
    """
    if base_url is None:
        activation, handshake = _APPLE_URLS
    else:
        activation, handshake = base_url + DEVICE_ACTIVATION_PATH, base_url + DRM_HANDSHAKE_PATH
    mobile_activation.ACTIVATION_DEFAULT_URL = activation
    mobile_activation.ACTIVATION_DRM_HANDSHAKE_DEFAULT_URL = handshake


@dataclass(frozen=True)
class Refuse:
    """Answer with this HTTP status (Apple's 5xx pages are HTML); only on ``path`` if given."""

    status: int = 503
    path: str | None = None


@dataclass(frozen=True)
class Hang:
    """Read the request, then answer nothing for ``seconds`` and close; only on ``path`` if given."""

    seconds: float = 60.0
    path: str | None = None


Fault = Refuse | Hang


SEEN_KEPT = 256


@dataclass(frozen=True)
class Seen:
    """One request the server received: which endpoint, for which phone (UDID, "" if unreadable)."""

    path: str
    udid: str


class ActivationServer:
    def __init__(self, world: SimWorld, host: str = "127.0.0.1", port: int = 0,
                 tls: ssl.SSLContext | None = None) -> None:
        self.world = world
        self.host = host
        # The latest requests, for tests to look at; bounded, as a soak sends thousands.
        self.seen: deque[Seen] = deque(maxlen=SEEN_KEPT)
        self._fault: Fault | None = None
        self._release = threading.Event()  # ends hangs at shutdown
        self._http = LocalHttpServer("activation", self.answer, host, port, tls)

    @property
    def url(self) -> str:
        return self._http.base_url

    def set_fault(self, fault: Fault | None) -> None:
        self._fault = fault

    def start(self) -> None:
        if not self._http.running:
            self._release.clear()
            self._http.start()

    def stop(self) -> None:
        self._release.set()
        self._http.stop()

    # Answers ----------------------------------------------------------------------

    def answer(self, path: str, body: bytes) -> tuple[int, str, bytes] | None:
        """(status, content type, body) for one POST, or None to hang up without answering."""
        udid = _udid_of(path, body)
        self.seen.append(Seen(path, udid))
        fault = self._fault
        if fault is not None and fault.path not in (None, path):
            fault = None
        if isinstance(fault, Hang):
            self._release.wait(fault.seconds)
            return None
        if isinstance(fault, Refuse):
            return fault.status, "text/html", _error_page(fault.status)
        if path == DRM_HANDSHAKE_PATH:
            return self._drm_handshake(body)
        if path == DEVICE_ACTIVATION_PATH:
            return self._device_activation(udid)
        return 404, "text/html", _error_page(404)

    def _drm_handshake(self, body: bytes) -> tuple[int, str, bytes]:
        request = plist_dict(body)
        message = request.get("HandshakeRequestMessage") if request else None
        if not isinstance(message, bytes):
            return 400, "text/html", _error_page(400)
        answer = {
            "FDRBlob": os.urandom(32),
            "HandshakeResponseMessage": handshake_response_for(message),
            "SUInfo": os.urandom(32),
            "serverKP": os.urandom(32),
        }
        return 200, "application/xml", plistlib.dumps(answer)

    def _device_activation(self, udid: str) -> tuple[int, str, bytes]:
        phone = self.world.find_phone(udid) if udid else None
        if phone is None:
            return 400, "text/html", _error_page(400)
        return answer_for(phone)


def _udid_of(path: str, body: bytes) -> str:
    """The phone's UDID from what it sent: the handshake blob, or the activation info's ActivationInfoXML."""
    if path == DRM_HANDSHAKE_PATH:
        request = plist_dict(body)
        udid = request.get("UniqueDeviceID") if request else None
        return udid if isinstance(udid, str) else ""
    fields = parse_qs(body.decode("latin-1"))
    info = plist_dict(fields.get("activation-info", [""])[0].encode("latin-1"))
    xml = plist_dict(info.get("ActivationInfoXML")) if info else None
    device_id = xml.get("DeviceID") if xml else None
    udid = device_id.get("UniqueDeviceID") if isinstance(device_id, dict) else None
    return udid if isinstance(udid, str) else ""


def _error_page(status: int) -> bytes:
    return f"<html><head><title>{status}</title></head><body>{status}</body></html>".encode()
