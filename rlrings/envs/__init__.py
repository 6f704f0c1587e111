"""Environment adapters behind one registry of id prefixes.

Every game becomes a Gymnasium environment with a ``Box`` observation (a
float vector, or a uint8 HxWxC image) and a ``Discrete`` or ``Box`` action
space, so actors, models and the viewer treat them alike; which algorithms
take which action spaces is the algorithm's business (``rlrings.algorithms``).
Ids, by prefix (:data:`ADAPTERS`, each a module of this package with a
``make(name, **kwargs)``, its episode-ending contract in its docstring and, where the
field has one, a ``solved_threshold(name)``):

- ``crafter`` (Crafter's reward task, 64x64x3 frames, 17 actions);
- ``ALE/<Game>-v5``, e.g. ``ALE/Pong-v5``: Atari through ale-py with the standard
  preprocessing (84x84x4 frames; :mod:`rlrings.envs.atari`);
- ``minerl:<MineRL env id>``, e.g. ``minerl:MineRLTreechop-v0``: the ``pov``
  frame and a discretised action set (movement, jump, attack, camera turns);
- ``task:<family>/<task>``, a task of a few-shot family (:mod:`rlrings.envs.tasks`),
  e.g. ``task:cartpole/l1.5-m0.1-f10`` or ``task:crafter/collect_wood``;
- anything else is a registered Gymnasium id, e.g. ``CartPole-v1``: Gymnasium's
  own contract (``terminated`` for an ending of the task, ``truncated`` for a
  time limit).

Vector envs reset a finished copy in the step that ends it (SAME_STEP
autoreset): the step returns the new episode's first observation and keeps
the last one in ``info['final_obs']``. Float64 observations (MuJoCo's) become
float32, which halves what replay stores and what the learner copies.

MuJoCo renders headless through EGL (Mesa's software renderer on a machine
without a GPU: Debian's ``libegl1`` and ``libgl1-mesa-dri``) unless ``MUJOCO_GL``
says otherwise, from the model's tracking camera where it has one (:func:`follow_the_body`).
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from rlrings.core import spaces
from rlrings.core.errors import ConfigError

os.environ.setdefault("MUJOCO_GL", "egl")  # read when MuJoCo is first imported (by its first env)
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

ADAPTERS: dict[str, str] = {
    "crafter": "rlrings.envs.crafter",
    "ALE/": "rlrings.envs.atari",
    "minerl:": "rlrings.envs.minerl",
    "task:": "rlrings.envs.tasks",
}
"""Id prefix -> the adapter module that makes those envs (imported only when used). An adapter
with ``HAS_TRAINING_MODE`` gets ``training=True`` from actors (Atari: episodic life, clipped
rewards) and False elsewhere; one with a ``VECTOR_MODULE`` has that module's ``make_vector``
make the vectors it can (Atari actors': ale-py's C++ vector env)."""


FAMILIES: tuple[tuple[str, str], ...] = (
    ("CartPole-v1, Acrobot-v1, MountainCar-v0, Pendulum-v1", "Gymnasium's classic control (any registered id)"),
    ("LunarLander-v3, CarRacing-v3", "Box2D (CarRacing: 96x96 frames, continuous steering)"),
    ("Reacher-v5, Pusher-v5, HalfCheetah-v5, Hopper-v5", "MuJoCo: robot arms and locomotion, continuous actions"),
    ("ALE/<Game>-v5[?sticky=P]", "Atari through ale-py, 84x84x4 frames; sticky actions with probability P"),
    ("crafter", "Crafter's reward task, 64x64 frames, 17 actions"),
    ("minerl:<MineRL id>", "MineRL (in the actor image), e.g. minerl:MineRLTreechop-v0"),
    ("task:<family>/<task>", "a few-shot task, e.g. task:cartpole/l1.5-m0.1-f10 (families: cartpole, reacher, "
     "crafter, minerl)"),
)  # fmt: skip
"""Every kind of env id, with examples: what help and the unknown-id error list."""


def settings_family(env_id: str) -> str:
    """The family of envs whose settings of record an algorithm starts from where the user gave
    none (``Algorithm.presets``): ``atari`` for ALE games, ``mujoco`` for Gymnasium's MuJoCo robots
    (Reacher, HalfCheetah, Hopper, ...); empty for the rest."""
    if env_id.startswith("ALE/"):
        return "atari"
    registered = gym.envs.registry.get(env_id)
    if registered is not None and str(registered.entry_point).startswith("gymnasium.envs.mujoco"):
        return "mujoco"
    return ""


BEST_RETURNS: dict[str, float] = {"CartPole-v1": 500.0, "Acrobot-v1": 0.0, "MountainCar-v0": 0.0, "Pendulum-v1": 0.0}
"""The most an episode can return, where the env bounds it (CartPole's 500 steps of 1; the others
pay only penalties), so that a target above it can be called unreachable at start."""


def best_return(env_id: str) -> float | None:
    """The most one episode of ``env_id`` can return, where known (an adapter's ``best_return(name)``,
    Pong's 21, or :data:`BEST_RETURNS`); None elsewhere."""
    adapted, bound = _ask_adapter(env_id, "best_return")
    return bound if adapted else BEST_RETURNS.get(env_id)


def solved_threshold(env_id: str) -> float | None:
    """The mean return over 100 fresh episodes at which ``env_id`` counts as solved: an adapter's
    definition (its ``solved_threshold(name)``: Atari's games the field scores, a few-shot family's),
    else Gymnasium's ``reward_threshold``; None where there is none."""
    adapted, threshold = _ask_adapter(env_id, "solved_threshold")
    if adapted:
        return threshold
    try:
        return gym.spec(env_id).reward_threshold
    except gym.error.Error:  # not a registered id: no definition
        return None


def _ask_adapter(env_id: str, function: str) -> tuple[bool, float | None]:
    """(whether an adapter makes ``env_id``, what its ``function(name)`` says, or None where it has none)."""
    adapter = _adapter(env_id)
    if adapter is None:
        return False, None
    module, name = adapter
    answer = getattr(importlib.import_module(module), function, None)
    return True, answer(name) if answer else None


def describe_families(indent: str = "  ") -> str:
    """:data:`FAMILIES` as lines of text."""
    width = max(len(ids) for ids, _ in FAMILIES)
    return "\n".join(f"{indent}{ids:<{width}}  {what}" for ids, what in FAMILIES)


@dataclass(frozen=True)
class EnvSpec:
    """What the rest of rlrings needs to know of an environment."""

    env_id: str
    observation_space: spaces.Box
    action_space: spaces.Space
    game_score: bool = False
    """Episodes (as actors train on them) are not whole games: the game's raw score arrives in
    ``info['raw_score']`` when it ends (Atari's lost lives end episodes)."""
    architecture: str = ""
    """The image model the env is meant for (Atari: ``nature``); empty: the default."""
    frame_skip: int = 1
    """Emulator frames per env step (Atari: 4), to report frames per second as the field does."""

    @property
    def is_image(self) -> bool:
        return self.observation_space.is_image

    @property
    def action_names(self) -> tuple[str, ...]:
        return self.action_space.names if isinstance(self.action_space, spaces.Discrete) else ()


def env_factory(env_id: str, training: bool = False) -> Callable[..., gym.Env]:
    """A function making the environment ``env_id``; ``training``: as actors train on it.

    Raises:
        ConfigError: an unknown id.
    """
    adapter = _adapter(env_id)
    if adapter is not None:
        return _adapter_factory(*adapter, training)
    if env_id not in gym.registry:
        close = [name for name in gym.registry if name.lower().startswith(env_id.lower()[:4])][:5]
        raise ConfigError(
            f"env: unknown environment {env_id!r}; use a Gymnasium id (e.g. CartPole-v1, Reacher-v5), "
            f"'ALE/<Game>-v5', 'crafter', 'minerl:<id>' or 'task:<family>/<task>'"
            + (f"; similar ids: {close}" if close else "")
        )
    return lambda **kwargs: float32_observations(
        follow_the_body(gym.make(env_id, render_mode=kwargs.get("render_mode", "rgb_array")))
    )


def _adapter(env_id: str) -> tuple[str, str] | None:
    """(the adapter module of ``env_id``, the name it is given) where an adapter makes it."""
    for prefix, module in ADAPTERS.items():
        if env_id == prefix or (prefix[-1] in ":/" and env_id.startswith(prefix)):
            return module, env_id if prefix == "ALE/" else env_id.removeprefix(prefix)
    return None


def _adapter_factory(module: str, name: str, training: bool) -> Callable[..., gym.Env]:
    adapter = importlib.import_module(module)
    if hasattr(adapter, "factory"):  # adapters that check the name once, up front
        make = adapter.factory(name)
    else:

        def make(**kwargs):
            return adapter.make(name, **kwargs)

    if getattr(adapter, "HAS_TRAINING_MODE", False):
        return lambda **kwargs: make(training=training, **kwargs)
    return make


def follow_the_body(env: gym.Env) -> gym.Env:
    """``env``, rendering through its model's ``track`` camera where it has one. Gymnasium 1.4's
    MuJoCo renderer renders from a free camera (its ``trackbodyid`` has no effect on a free camera),
    so a hopper or a cheetah that moves on leaves the frame after a second or two; the ``track``
    camera of the locomotion models follows the body's centre of mass. Envs with no such camera
    (the Reacher and Pusher arms, which stay in place) and envs of other engines are left as they are."""
    renderer = getattr(env.unwrapped, "mujoco_renderer", None)
    if renderer is None or getattr(renderer, "camera_id", None) != -1:
        return env
    import mujoco

    camera = mujoco.mj_name2id(renderer.model, mujoco.mjtObj.mjOBJ_CAMERA, "track")
    if camera >= 0:
        renderer.camera_id = camera
    return env


def float32_observations(env: gym.Env) -> gym.Env:
    """``env`` with float64 observations cast to float32 (MuJoCo's); others as they are."""
    space = env.observation_space
    if not (isinstance(space, gym.spaces.Box) and space.dtype == np.float64):
        return env
    single = gym.spaces.Box(space.low.astype(np.float32), space.high.astype(np.float32), dtype=np.float32)
    return gym.wrappers.TransformObservation(env, lambda obs: obs.astype(np.float32), single)


_renderer_import = threading.Lock()


def import_renderers() -> None:
    """Imports pygame whole, once, under a lock, and checks it came in whole. Gymnasium's
    classic-control and Box2D envs import it inside ``render()``; two CI runs met a
    ``pygame.surfarray`` without ``pixels3d`` at a viewer session's first render, while every
    import was already behind this lock. So a process that renders from several threads (the
    viewer) calls this once on its main thread before any other starts, make_env calls it again
    (then a lookup), and a pygame that is installed but came in broken is an error naming what broke
    rather than a module half there. Only pygame missing altogether is passed over: the envs that
    need it say so themselves."""
    with _renderer_import:
        try:
            surfarray = importlib.import_module("pygame.surfarray")
        except ModuleNotFoundError as error:
            if error.name in ("pygame", "numpy"):
                return
            raise
        if not hasattr(surfarray, "pixels3d"):
            raise ImportError(
                f"pygame.surfarray came in without pixels3d ({surfarray!r}, "
                f"names: {sorted(n for n in vars(surfarray) if not n.startswith('__'))})"
            )


def make_env(env_id: str, **kwargs) -> gym.Env:
    if kwargs.get("render_mode"):
        import_renderers()
    env = env_factory(env_id)(**kwargs)
    _spaces(env_id, env)
    return env


def env_spec(env_id: str) -> EnvSpec:
    """Spaces of ``env_id`` (builds the environment once)."""
    env = make_env(env_id)
    try:
        observation, action = _spaces(env_id, env)
        names = getattr(env.unwrapped, "ACTIONS", ())
        if names and isinstance(action, spaces.Discrete):
            action = spaces.Discrete(action.n, tuple(name if isinstance(name, str) else name[0] for name in names))
        if not names and isinstance(action, spaces.Discrete) and hasattr(env.unwrapped, "get_action_meanings"):
            action = spaces.Discrete(action.n, tuple(name.lower() for name in env.unwrapped.get_action_meanings()))
        return EnvSpec(
            env_id,
            observation,
            action,
            game_score=bool(env.metadata.get("rlrings.game_score")),
            architecture=env.metadata.get("rlrings.architecture", ""),
            frame_skip=int(env.metadata.get("rlrings.frame_skip", 1)),
        )
    finally:
        env.close()


def make_vector_env(
    env_id: str, num_envs: int, seed: int, training: bool = False, threads: int = 0
) -> gym.vector.VectorEnv:
    """``num_envs`` copies stepped together; a finished episode resets in the
    same step, its last observation kept in ``info['final_obs']``. ``training``: the envs
    as actors train on them (the evaluator's are the games as scored). ``threads``: where the env
    steps in threads of its own (Atari's C++ vector env), how many; 0: one per env, up to the cores."""
    adapter = _adapter(env_id)
    vector_module = adapter and getattr(importlib.import_module(adapter[0]), "VECTOR_MODULE", None)
    make_vector = vector_module and importlib.import_module(vector_module).make_vector
    if make_vector and (envs := make_vector(adapter[1], num_envs, training=training, threads=threads)) is not None:
        envs.reset(seed=seed)  # (an adapter's own vector: ale-py's C++ one for Atari)
        return envs
    factory = env_factory(env_id, training)
    envs = gym.vector.SyncVectorEnv(
        [lambda: factory() for _ in range(num_envs)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
    )
    _spaces(env_id, envs.envs[0])
    envs.reset(seed=seed)
    return envs


def _spaces(env_id: str, env: gym.Env) -> tuple[spaces.Box, spaces.Space]:
    if not isinstance(env.observation_space, gym.spaces.Box):
        raise ConfigError(f"env {env_id!r}: observations are {env.observation_space}; rlrings needs a Box")
    try:
        action = spaces.from_gymnasium(env.action_space)
    except TypeError as error:
        raise ConfigError(f"env {env_id!r}: actions: {error}") from None
    return spaces.from_gymnasium(env.observation_space), action
