"""Keyboard maps from browser key names (``KeyboardEvent.key``) to actions.

A :class:`KeyMap` covers an env's whole discrete action set; ``idle`` is what
happens on a tick with no key: an action index, or ``"repeat"`` the last one
(for CartPole, which has no no-op). A :class:`ContinuousKeyMap` drives a Box
action: each :class:`Axis` is one element of the action, which ramps towards
the value of the key held for it and back to its rest value once released
(CarRacing: arrows steer, accelerate and brake), so a keyboard gives the
gradual inputs a joystick would.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlrings.core.spaces import Box
from rlrings.envs import EnvSpec
from rlrings.envs.crafter import CrafterEnv
from rlrings.envs.minerl import MineRLEnv


@dataclass(frozen=True)
class KeyMap:
    keys: dict[str, int]
    idle: int | str = 0

    def action(self, key: str) -> int | None:
        return self.keys.get(key if len(key) > 1 else key.lower())


_CRAFTER_KEYS = {
    "a": "move_left", "d": "move_right", "w": "move_up", "s": "move_down", " ": "do", "Tab": "sleep",
    "r": "place_stone", "t": "place_table", "f": "place_furnace", "p": "place_plant",
    "1": "make_wood_pickaxe", "2": "make_stone_pickaxe", "3": "make_iron_pickaxe",
    "4": "make_wood_sword", "5": "make_stone_sword", "6": "make_iron_sword", "n": "noop",
}  # fmt: skip
_MINERL_KEYS = {
    "n": "noop", "w": "forward", "e": "forward_jump", "s": "back", "a": "left", "d": "right", " ": "jump",
    "f": "attack", "q": "forward_attack", "ArrowLeft": "camera_left", "ArrowRight": "camera_right",
    "ArrowUp": "camera_up", "ArrowDown": "camera_down",
}  # fmt: skip

# Atari (ALE's action names, lower-cased): arrows move, Space fires, letters around WASD combine
_ATARI_KEYS = {
    "n": "noop", " ": "fire", "ArrowUp": "up", "ArrowRight": "right", "ArrowLeft": "left", "ArrowDown": "down",
    "e": "upright", "q": "upleft", "c": "downright", "z": "downleft", "w": "upfire", "d": "rightfire",
    "a": "leftfire", "s": "downfire", "3": "uprightfire", "1": "upleftfire", "9": "downrightfire",
    "7": "downleftfire",
}  # fmt: skip


@dataclass(frozen=True)
class Axis:
    """One element of a Box action: ``keys`` maps a key to the value it steers towards while held."""

    index: int
    keys: dict[str, float]
    rest: float = 0.0
    """The value with no key held."""
    rise: float = 1.0
    """Largest change per tick towards a held key's value."""
    fall: float = 1.0
    """Largest change per tick back to ``rest``."""
    name: str = ""


@dataclass(frozen=True)
class ContinuousKeyMap:
    """Keys to a Box action through :class:`Axis` ramps; elements without an axis stay at their rest."""

    axes: tuple[Axis, ...]
    low: np.ndarray
    high: np.ndarray

    @property
    def keys(self) -> dict[str, str]:
        """Key -> what it does, for the page."""
        return {
            key: f"{axis.name or f'action[{axis.index}]'} -> {value:g}"
            for axis in self.axes
            for key, value in axis.keys.items()
        }

    def knows(self, key: str) -> bool:
        return any(_normal(key) in axis.keys for axis in self.axes)

    def rest(self) -> np.ndarray:
        action = np.clip(np.zeros_like(self.low), self.low, self.high)
        for axis in self.axes:
            action[axis.index] = axis.rest
        return action

    def step(self, action: np.ndarray, held: list[str]) -> np.ndarray:
        """The next tick's action from this tick's and the keys held (the last pressed wins an axis)."""
        action = action.copy()
        for axis in self.axes:
            pressed = [axis.keys[key] for key in held if key in axis.keys]
            target, rate = (pressed[-1], axis.rise) if pressed else (axis.rest, axis.fall)
            value = action[axis.index]
            action[axis.index] = value + np.clip(target - value, -rate, rate)
        return np.clip(action, self.low, self.high).astype(np.float32)


def _normal(key: str) -> str:
    return key if len(key) > 1 else key.lower()


_GENERIC_KEYS = (("ArrowRight", "ArrowLeft"), ("ArrowUp", "ArrowDown"), ("d", "a"), ("w", "s"), ("e", "q"), ("c", "z"))
"""Key pairs (towards high, towards low) of a Box action's elements, in order."""


def continuous_keymap_for(spec: EnvSpec) -> ContinuousKeyMap:
    """CarRacing's arrows (steer, gas, brake); for another Box action of up to six elements, one key
    pair per element, pushing it towards its high or low bound and back to the middle when released.

    Raises:
        ValueError: an action with more elements than key pairs, or unbounded.
    """
    space = spec.action_space
    assert isinstance(space, Box)
    low, high = space.low_array().ravel(), space.high_array().ravel()
    if spec.env_id.startswith("CarRacing"):
        return ContinuousKeyMap(
            (
                Axis(0, {"ArrowLeft": -1.0, "ArrowRight": 1.0}, rise=0.2, fall=0.3, name="steering"),
                Axis(1, {"ArrowUp": 1.0}, rise=0.1, fall=1.0, name="gas"),
                Axis(2, {"ArrowDown": 0.8}, rise=0.2, fall=1.0, name="brake"),
            ),
            low,
            high,
        )
    if not space.bounded:
        raise ValueError(f"env {spec.env_id!r}: unbounded actions ({space.describe()}) cannot be played from keys")
    if space.size > len(_GENERIC_KEYS):
        raise ValueError(
            f"env {spec.env_id!r}: {space.size} action elements, more than the {len(_GENERIC_KEYS)} key pairs; "
            "add a key map to keymaps.py"
        )
    axes = []
    for i, (up, down) in enumerate(_GENERIC_KEYS[: space.size]):
        middle, step = (low[i] + high[i]) / 2, (high[i] - low[i]) / 10
        axes.append(Axis(i, {up: float(high[i]), down: float(low[i])}, rest=float(middle), rise=step, fall=2 * step))
    return ContinuousKeyMap(tuple(axes), low, high)


def keymap_for(spec: EnvSpec) -> KeyMap:
    if spec.env_id == "crafter":
        index = {name: i for i, name in enumerate(CrafterEnv.ACTIONS)}
        return KeyMap({key: index[name] for key, name in _CRAFTER_KEYS.items()}, idle=0)
    if spec.env_id.startswith("minerl:"):
        index = {name: i for i, (name, _) in enumerate(MineRLEnv.ACTIONS)}
        return KeyMap({key: index[name] for key, name in _MINERL_KEYS.items()}, idle=0)
    if spec.env_id.startswith("ALE/"):
        index = {name: i for i, name in enumerate(spec.action_space.names)}
        return KeyMap({key: index[name] for key, name in _ATARI_KEYS.items() if name in index}, idle=0)
    if spec.env_id.startswith("CartPole"):
        return KeyMap({"ArrowLeft": 0, "ArrowRight": 1}, idle="repeat")
    count = getattr(spec.action_space, "n", None)
    if count is None:
        raise ValueError(
            f"env {spec.env_id!r}: continuous actions ({spec.action_space.describe()}) have no key map yet"
        )
    if count > 10:
        raise ValueError(f"env {spec.env_id!r}: {count} actions and no key map; add one to keymaps.py")
    return KeyMap({str(i): i for i in range(count)}, idle=0)
