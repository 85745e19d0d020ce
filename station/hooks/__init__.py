"""Hooks: ``[hooks]`` commands run when a phone arrives, is found locked, is done or failed
(station.hooks.runner), each bounded by a timeout (station.hooks.process)."""
from station.hooks.runner import Hooks

__all__ = ["Hooks"]
