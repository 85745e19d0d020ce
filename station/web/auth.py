"""Who may do what over the network.

Reading the ports, counters, faults and the IPSW cache is open to whoever reaches the listen
address. Actions (cancel, retry, abort) and what names a phone or a customer (serial, IMEI,
ECID, UDID, certificates) need ``Authorization: Bearer <[web] token>``; with an empty token
none of them is served at all. Confirming a held phone is no action here: it is only ever a
long press of OK on the station (``routes`` has no endpoint that could send one).
"""
from __future__ import annotations

import hmac

from fastapi import HTTPException, Request

SCHEME = "bearer"


class Access:
    def __init__(self, token: str) -> None:
        self._token = token.encode("utf-8")

    def trusted(self, request: Request) -> bool:
        """The request carries the right token. A wrong one is refused outright (403), so a page
        with a mistyped token says so instead of quietly showing the public view."""
        given = presented(request)
        if given is None:
            return False
        if not self._token:
            raise HTTPException(403, "the [web] token is empty: nothing needs or accepts a token")
        if not hmac.compare_digest(given.encode("utf-8"), self._token):
            raise HTTPException(403, "wrong token")
        return True

    def require(self, request: Request, what: str) -> None:
        """Refuse ``what`` (an action, a certificate) unless the right token came with it."""
        if not self._token:
            raise HTTPException(403, f"{what} over the network is off: [web] token is empty")
        if presented(request) is None:
            raise HTTPException(401, f"{what} needs the token (Authorization: Bearer <token>)",
                                headers={"WWW-Authenticate": "Bearer"})
        self.trusted(request)


def presented(request: Request) -> str | None:
    """The bearer token of the request, None when it brought none."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == SCHEME else ""
