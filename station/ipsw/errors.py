"""Errors of the IPSW cache: each str() is the one line an operator reads."""
from __future__ import annotations

from hw.ipsw_archive import IpswError, NoMember

__all__ = ["IpswError", "NoMember", "NoIpswError", "NotSignedError", "printable", "shown"]


class NoIpswError(IpswError):
    """No usable IPSW for a phone. str() is the port's display text; ``log_message`` says what to add."""

    def __init__(self, model: str, log_message: str) -> None:
        super().__init__(f"NO IPSW {model}")
        self.model = model
        self.log_message = log_message


class NotSignedError(NoIpswError):
    """The only IPSW for a phone is a build Apple no longer signs: refused before the restore starts,
    not at its signing step minutes in. str() is the port's display text, with what to do."""

    def __init__(self, model: str, build: str, log_message: str, hint: str = "") -> None:
        super().__init__(model, log_message)
        self.build = build
        self.args = (f"NOT SIGNED {build}" + (f": {hint}" if hint else ""),)  # "...: add iOS 18.1"


def printable(text: str) -> str:
    """``text`` with each unprintable character escaped (a newline as ``\\n``): a message stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def shown(value: str, limit: int = 40) -> str:
    """A value read from the input, quoted for a message: escaped, and cut after ``limit`` characters."""
    if len(value) <= limit:
        return f"'{printable(value)}'"
    return f"'{printable(value[:limit])}...' ({len(value)} characters)"
