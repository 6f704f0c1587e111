"""Helpers for the status-and-control RPCs of processes that act or learn."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Mapping, Sequence

import pydantic

from rlrings.core.errors import InvalidArgumentError
from rlrings.v1 import control_pb2


def run_state(stopped: threading.Event, paused: threading.Event, running: bool) -> int:
    """The ``RunState`` of a loop from its flags."""
    if stopped.is_set():
        return control_pb2.RUN_STATE_STOPPING
    if paused.is_set():
        return control_pb2.RUN_STATE_PAUSED
    return control_pb2.RUN_STATE_RUNNING if running else control_pb2.RUN_STATE_STARTING


def update_settings(settings: Mapping[str, str], targets: Sequence[tuple[pydantic.BaseModel, Iterable[str]]]) -> dict:
    """Applies ``UpdateConfig`` settings (JSON values) to the models in ``targets``, each with the names
    it lets change while running; every value is validated as the model validates its config file
    (types and bounds from its fields). All or nothing. Returns every changeable setting's value.

    Raises:
        InvalidArgumentError: naming the setting that is unknown, fixed, malformed or out of range;
            nothing is applied then.
    """
    owners = {name: model for model, names in targets for name in names}
    changes = []
    for name, raw in settings.items():
        if name not in owners:
            raise InvalidArgumentError(f"settings[{name!r}]: cannot change while running; changeable: {sorted(owners)}")
        try:
            value = json.loads(raw)
        except ValueError:
            raise InvalidArgumentError(f"settings[{name!r}]: {raw!r} is not JSON") from None
        model = owners[name]
        trial = model.model_copy()
        try:
            type(model).__pydantic_validator__.validate_assignment(trial, name, value)
        except pydantic.ValidationError as error:
            reason = "; ".join(e["msg"] for e in error.errors())
            raise InvalidArgumentError(f"settings[{name!r}]: {raw} is refused: {reason}") from None
        changes.append((model, name, getattr(trial, name)))
    for model, name, value in changes:
        object.__setattr__(model, name, value)
    return {name: getattr(model, name) for name, model in owners.items()}


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
