"""Errors of the IPSW cache: each str() is the one line an operator reads."""
from __future__ import annotations


class IpswError(Exception):
    """Bad input or a failed step; the cache is left as it was."""


class NoIpswError(IpswError):
    """No usable IPSW for a phone. str() is the port's display text; ``log_message`` says what to add."""

    def __init__(self, model: str, log_message: str) -> None:
        super().__init__(f"NO IPSW {model}")
        self.model = model
        self.log_message = log_message
