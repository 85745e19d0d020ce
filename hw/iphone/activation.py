"""Ask Apple's activation server about a phone at the Hello screen, with the phone's own request.

This is the session flow pymobiledevice3's ``MobileActivationService.activate`` and
libideviceactivation use (iOS 10 and later: tools/ideviceactivation.c picks session mode
for ``product_version >= 0x0A0000``; every iPhone this station supports runs iOS 11+):
session info from the phone -> Apple's ``drmHandshake`` -> activation info from the phone
-> Apple's ``deviceActivation``. It differs from ``activate`` in three ways:

- the HTTP answer is kept whole (status, Content-Type, body) and judged by
  ``lock_evidence.judge_activation_reply``, not by pymobiledevice3's guess;
- every POST runs in a thread with a timeout, so the station's loop never blocks;
- it stops at Apple's answer: the activation record is not applied, so a checked
  phone stays at the Hello screen, as an erase leaves it.

Anything the phone cannot do yet (its activation daemon not up just after a boot:
libideviceactivation issue #42, "Failed to get ActivationSessionInfo") raises
``NotReady``; the caller decides whether to ask again.
"""
from __future__ import annotations

import asyncio
import plistlib
from dataclasses import dataclass
from typing import Any

import requests
from pymobiledevice3.exceptions import PyMobileDevice3Exception
from pymobiledevice3.lockdown import LockdownClient
from pymobiledevice3.services import mobile_activation
from pymobiledevice3.services.mobile_activation import MobileActivationService

from hw.iphone.lock_evidence import ACTIVATION_SERVER, judge_activation_reply
from hw.phones import Lock, LockCheck

HTTP_TIMEOUT_S = 30.0  # per POST, as pymobiledevice3's MobileActivationService.post
HANDSHAKE_HEADERS = {"Content-Type": "application/x-apple-plist", **mobile_activation.DEFAULT_HEADERS}


class NotReady(Exception):
    """The phone cannot answer yet (gone, rebooting, restore mode, daemons starting)."""


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    body: bytes


async def ask_apple(lockdown: LockdownClient) -> LockCheck:
    """Apple's decision on this phone's Activation Lock, from its own activation request."""
    service = MobileActivationService(lockdown)
    session = await _from_phone(service.create_activation_session_info(), "activation session")
    # Read at call time: the simulated backend points these module constants at its server.
    handshake = await _post(mobile_activation.ACTIVATION_DRM_HANDSHAKE_DEFAULT_URL,
                            plistlib.dumps(session), HANDSHAKE_HEADERS)
    if handshake is None:
        return _no_network()
    if not 200 <= handshake.status < 300:
        return LockCheck(Lock.UNKNOWN, f"Apple's drmHandshake answered HTTP {handshake.status}",
                         ACTIVATION_SERVER)
    info = await _from_phone(service.create_activation_info_with_session(handshake.body),
                             "activation info")
    reply = await _post(mobile_activation.ACTIVATION_DEFAULT_URL,
                        {"activation-info": plistlib.dumps(info)}, mobile_activation.DEFAULT_HEADERS)
    if reply is None:
        return _no_network()
    return judge_activation_reply(reply.status, reply.content_type, reply.body)


async def _from_phone(request: Any, what: str) -> Any:
    try:
        return await request
    except (PyMobileDevice3Exception, OSError, KeyError) as error:
        raise NotReady(f"the phone's {what} is not ready: {one_line(error)}") from error


async def _post(url: str, data: bytes | dict[str, bytes], headers: dict[str, str]) -> Reply | None:
    """One POST to Apple; None when Apple cannot be reached."""
    try:
        response = await asyncio.to_thread(requests.post, url, data=data, headers=headers,
                                           timeout=HTTP_TIMEOUT_S)
    except requests.RequestException:
        return None
    return Reply(response.status_code, response.headers.get("Content-Type", ""), response.content)


def _no_network() -> LockCheck:
    return LockCheck(Lock.UNKNOWN, "no network: Apple's activation server did not answer",
                     ACTIVATION_SERVER)


def one_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:120] if text else type(error).__name__
