"""Environment adapters behind one registry.

Every game becomes a Gymnasium environment with a ``Box`` observation (a
float vector, or a 64x64x3 uint8 image) and a ``Discrete`` action set, so
actors, models and the viewer treat them alike. Ids:

- any registered Gymnasium id with discrete actions, e.g. ``CartPole-v1``;
- ``crafter`` (Crafter's reward task, 64x64x3 frames, 17 actions);
- ``minerl:<MineRL env id>``, e.g. ``minerl:MineRLTreechop-v0``: the ``pov``
  frame and a discretised action set (movement, jump, attack, camera turns).
  MineRL needs JDK 8 and its own build, so it is imported only when used; the
  actor image ships it;
- ``task:<family>/<task>``, a task of a few-shot family (:mod:`rlrings.tasks`),
  e.g. ``task:cartpole/l1.5-m0.1-f10`` or ``task:crafter/collect_wood``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from rlrings.errors import ConfigError


@dataclass(frozen=True)
class EnvSpec:
    """What the rest of rlrings needs to know of an environment."""

    env_id: str
    observation_space: gym.spaces.Box
    num_actions: int
    action_names: tuple[str, ...] = ()

    @property
    def is_image(self) -> bool:
        return self.observation_space.dtype == np.uint8 and len(self.observation_space.shape) == 3


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


def _gymnasium(env_id: str) -> Callable[..., gym.Env]:
    return lambda **kwargs: gym.make(env_id, render_mode=kwargs.get("render_mode", "rgb_array"))


def env_factory(env_id: str) -> Callable[..., gym.Env]:
    """A function making the environment ``env_id``.

    Raises:
        ConfigError: an unknown id, or one without discrete actions.
    """
    if env_id == "crafter":
        return lambda **kwargs: CrafterEnv(**kwargs)
    if env_id.startswith("minerl:"):
        return lambda **kwargs: MineRLEnv(env_id.split(":", 1)[1], **kwargs)
    if env_id.startswith("task:"):
        from rlrings import tasks

        return tasks.env_factory(env_id)
    if env_id not in gym.registry:
        close = [name for name in gym.registry if name.lower().startswith(env_id.lower()[:4])][:5]
        raise ConfigError(
            f"env: unknown environment {env_id!r}; use a Gymnasium id (e.g. CartPole-v1), 'crafter', "
            f"'minerl:<id>' or 'task:<family>/<task>'" + (f"; similar ids: {close}" if close else "")
        )
    return _gymnasium(env_id)


def make_env(env_id: str, **kwargs) -> gym.Env:
    env = env_factory(env_id)(**kwargs)
    _check_spaces(env_id, env)
    return env


def env_spec(env_id: str) -> EnvSpec:
    """Spaces of ``env_id`` (builds the environment once)."""
    env = make_env(env_id)
    try:
        names = getattr(env.unwrapped, "ACTIONS", ())
        names = tuple(name if isinstance(name, str) else name[0] for name in names)
        return EnvSpec(env_id, env.observation_space, int(env.action_space.n), names)
    finally:
        env.close()


def make_vector_env(env_id: str, num_envs: int, seed: int) -> gym.vector.VectorEnv:
    """``num_envs`` copies stepped together; a finished episode resets in the
    same step, its last observation kept in ``info['final_obs']``."""
    factory = env_factory(env_id)
    envs = gym.vector.SyncVectorEnv(
        [lambda: factory() for _ in range(num_envs)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
    )
    _check_spaces(env_id, envs.envs[0])
    envs.reset(seed=seed)
    return envs


def _check_spaces(env_id: str, env: gym.Env) -> None:
    if not isinstance(env.action_space, gym.spaces.Discrete):
        raise ConfigError(f"env {env_id!r}: actions are {env.action_space}; rlrings needs a discrete action set")
    if not isinstance(env.observation_space, gym.spaces.Box):
        raise ConfigError(f"env {env_id!r}: observations are {env.observation_space}; rlrings needs a Box")
