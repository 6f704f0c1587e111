"""Keyboard maps from browser key names (``KeyboardEvent.key``) to actions.

Each map covers the env's whole discrete action set. ``idle`` is what happens
on a tick with no key: an action index, or ``"repeat"`` the last one (for
CartPole, which has no no-op).
"""

from __future__ import annotations

from dataclasses import dataclass

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


def keymap_for(spec: EnvSpec) -> KeyMap:
    if spec.env_id == "crafter":
        index = {name: i for i, name in enumerate(CrafterEnv.ACTIONS)}
        return KeyMap({key: index[name] for key, name in _CRAFTER_KEYS.items()}, idle=0)
    if spec.env_id.startswith("minerl:"):
        index = {name: i for i, (name, _) in enumerate(MineRLEnv.ACTIONS)}
        return KeyMap({key: index[name] for key, name in _MINERL_KEYS.items()}, idle=0)
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
