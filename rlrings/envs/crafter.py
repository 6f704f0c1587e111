"""Crafter (Hafner, 2021) as a Gymnasium environment: 64x64x3 frames, 17 actions.

Contract: one episode ends by the player's death (``terminated``) or by
Crafter's own step limit (``truncated``, so learners bootstrap from it);
``info['achievements']`` holds the unlock counts, which the actor and the
evaluator turn into the Crafter score. Vector copies reset in the step that
ends an episode (the registry's SAME_STEP autoreset), the last frame kept in
``info['final_obs']``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class CrafterEnv(gym.Env):
    """Crafter (old Gym step API) as a Gymnasium environment."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}
    ACTIONS = (
        "noop", "move_left", "move_right", "move_up", "move_down", "do", "sleep", "place_stone", "place_table",
        "place_furnace", "place_plant", "make_wood_pickaxe", "make_stone_pickaxe", "make_iron_pickaxe",
        "make_wood_sword", "make_stone_sword", "make_iron_sword",
    )  # fmt: skip

    def __init__(self, render_mode: str | None = "rgb_array", length: int = 10000):
        import crafter

        self._env = crafter.Env(length=length)
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
        self.action_space = gym.spaces.Discrete(len(self.ACTIONS))
        self._last = None

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self._env._seed = int(seed)
        self._last = self._env.reset()
        return self._last, {}

    def step(self, action):
        obs, reward, done, info = self._env.step(int(action))
        self._last = obs
        # Crafter ends an episode by death (discount 0) or by its time limit.
        terminated = bool(done and info.get("discount", 1.0) == 0.0)
        return obs, float(reward), terminated, bool(done and not terminated), {"achievements": info["achievements"]}

    def render(self):
        return self._last


def make(name: str = "", **kwargs) -> gym.Env:
    """``crafter``: Crafter's reward task."""
    return CrafterEnv(**kwargs)
