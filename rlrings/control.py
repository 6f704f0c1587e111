"""Helpers for the status-and-control RPCs of processes that act or learn."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from typing import Any

from rlrings.errors import InvalidArgumentError
from rlrings.v1 import control_pb2


def run_state(stopped: threading.Event, paused: threading.Event, running: bool) -> int:
    """The ``RunState`` of a loop from its flags."""
    if stopped.is_set():
        return control_pb2.RUN_STATE_STOPPING
    if paused.is_set():
        return control_pb2.RUN_STATE_PAUSED
    return control_pb2.RUN_STATE_RUNNING if running else control_pb2.RUN_STATE_STARTING


def parse_settings(settings: Mapping[str, str], allowed: Mapping[str, tuple[type, float, float]]) -> dict[str, Any]:
    """Parses ``UpdateConfig`` settings (JSON values) against ``allowed``:
    name -> (type, lowest, highest).

    Raises:
        InvalidArgumentError: naming the setting that is unknown, fixed,
            not a number or out of range; nothing is applied then.
    """
    values = {}
    for name, raw in settings.items():
        if name not in allowed:
            raise InvalidArgumentError(
                f"settings[{name!r}]: cannot change while running; changeable: {sorted(allowed)}"
            )
        kind, low, high = allowed[name]
        try:
            value = kind(json.loads(raw))
        except (ValueError, TypeError):
            raise InvalidArgumentError(f"settings[{name!r}]: {raw!r} is not a JSON number") from None
        if not low <= value <= high:
            raise InvalidArgumentError(f"settings[{name!r}]: {value} is not in [{low}, {high}]")
        values[name] = value
    return values


class RateMeter:
    """Events per second, re-measured at most once per ``interval`` seconds."""

    def __init__(self, interval: float = 1.0):
        self.interval = interval
        self._then, self._count, self._rate = time.monotonic(), 0, 0.0

    def rate(self, count: int) -> float:
        """The rate, given the running total ``count``."""
        now = time.monotonic()
        if now - self._then >= self.interval:
            self._rate = (count - self._count) / (now - self._then)
            self._then, self._count = now, count
        return self._rate
