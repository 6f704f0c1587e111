"""MineRL tasks as Gymnasium environments: the ``pov`` frame and a discrete action set.

MineRL needs JDK 8 and its own build, so it is imported only when used; the
actor image ships it. Contract: MineRL reports one ``done``, read as
``terminated`` (its tasks end on success, death or its own time limit, which
it does not tell apart); vector copies reset in the same step, the last frame
kept in ``info['final_obs']``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from rlrings.core.errors import ConfigError


class MineRLEnv(gym.Env):
    """A MineRL task with the ``pov`` frame and a discrete action set.

    Written against MineRL's documented spaces: ``pov`` is a 64x64x3 uint8
    frame; actions are a dict of binary keys (forward, back, left, right,
    jump, sneak, sprint, attack) and ``camera`` (pitch, yaw in degrees).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}
    CAMERA_DEGREES = 10.0
    ACTIONS: tuple[tuple[str, dict], ...] = (
        ("noop", {}),
        ("forward", {"forward": 1}),
        ("forward_jump", {"forward": 1, "jump": 1}),
        ("back", {"back": 1}),
        ("left", {"left": 1}),
        ("right", {"right": 1}),
        ("jump", {"jump": 1}),
        ("attack", {"attack": 1}),
        ("forward_attack", {"forward": 1, "attack": 1}),
        ("camera_left", {"camera": (0.0, -CAMERA_DEGREES)}),
        ("camera_right", {"camera": (0.0, CAMERA_DEGREES)}),
        ("camera_up", {"camera": (-CAMERA_DEGREES, 0.0)}),
        ("camera_down", {"camera": (CAMERA_DEGREES, 0.0)}),
    )

    def __init__(self, minerl_id: str, render_mode: str | None = "rgb_array"):
        try:
            import gym as old_gym  # MineRL registers its envs with the old Gym package
            import minerl  # noqa: F401
        except ImportError as error:
            raise ConfigError(
                f"env minerl:{minerl_id}: MineRL is not installed here ({error}); it needs JDK 8 and runs in the "
                "actor image"
            ) from None
        self._env = old_gym.make(minerl_id)
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
        self.action_space = gym.spaces.Discrete(len(self.ACTIONS))
        self._last = None

    def to_minerl_action(self, action: int) -> dict:
        """The MineRL dict action for a discrete action index."""
        command = self._env.action_space.noop()
        for key, value in self.ACTIONS[int(action)][1].items():
            command[key] = np.asarray(value, dtype=np.float32) if key == "camera" else value
        return command

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self._env.seed(int(seed))
        self._last = self._env.reset()["pov"]
        return self._last, {}

    def step(self, action):
        obs, reward, done, info = self._env.step(self.to_minerl_action(action))
        self._last = obs["pov"]
        return self._last, float(reward), bool(done), False, {}

    def render(self):
        return self._last


def make(name: str, **kwargs) -> gym.Env:
    """``minerl:<MineRL env id>``, for example ``minerl:MineRLTreechop-v0``."""
    return MineRLEnv(name, **kwargs)
