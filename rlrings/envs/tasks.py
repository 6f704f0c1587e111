"""Task families for few-shot experiments: a task is an environment plus its variation.

Contract: a task keeps its base game's episode endings (CartPole's time limit
is ``truncated``; Crafter's death ``terminated``).

A family splits its tasks into training tasks (for pre-training or
meta-training) and held-out test tasks (for adaptation), disjoint and fixed,
so every method and every seed sees the same split. A task is addressable as
an environment id, ``task:<family>/<task>``, so actors, the viewer and
``rlrings up`` run it like any other game:

- ``cartpole``: CartPole-v1 with varied physics (pole length and mass, push
  force); cheap, runs anywhere. Test tasks have a longer pole than any
  training task (27 training tasks, 9 test tasks).
- ``crafter``: Crafter where a task pays 1 for one achievement (collect wood,
  place a table, ...) and nothing else (16 training, 6 test achievements).
- ``reacher``: the robot arm, MuJoCo's Reacher-v5 with varied link lengths and
  joint damping (continuous torques). Test tasks have a longer arm than any
  training task (12 training tasks, 3 test tasks).
- ``minerl``: MineRL's own tasks (Treechop, Navigate, ...); runs where MineRL
  is installed (the actor image).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np

from rlrings.core.errors import ConfigError

PREFIX = "task:"


@dataclass(frozen=True)
class Task:
    """One task of a family: its name and how it varies the base game."""

    family: str
    name: str
    variation: dict = field(default_factory=dict)

    @property
    def env_id(self) -> str:
        return f"{PREFIX}{self.family}/{self.name}"


@dataclass(frozen=True)
class TaskFamily:
    """Tasks that share a game, split once into training and held-out test tasks."""

    name: str
    description: str
    train: tuple[Task, ...]
    test: tuple[Task, ...]
    make: Callable[..., gym.Env]  # make(task, **env_kwargs)
    reward_threshold: float | None = None
    """Mean return at which a task counts as solved, where the family has one."""
    expert: Callable[[Task], Callable[[np.ndarray], np.ndarray]] | None = None
    """A demonstrator for a task (a batch of observations to actions), where the family has
    one: what behaviour cloning from K demonstrations imitates."""

    def task(self, name: str) -> Task:
        for task in (*self.train, *self.test):
            if task.name == name:
                return task
        names = [task.name for task in (*self.train, *self.test)]
        raise ConfigError(f"env: family {self.name!r} has no task {name!r}; its tasks are {names}")


# -- cartpole: varied physics -------------------------------------------------------

_LENGTHS = (0.25, 0.5, 1.0, 1.5)  # half pole length, metres (CartPole-v1: 0.5)
_POLE_MASSES = (0.05, 0.1, 0.3)  # kg (0.1)
_FORCES = (7.0, 10.0, 14.0)  # N (10)
_HELD_OUT_LENGTH = 1.5  # test tasks: a pole longer than any training task's


class CartPoleVariant(gym.Wrapper):
    """CartPole-v1 with other physics constants (the derived ones kept consistent)."""

    def __init__(self, task: Task, render_mode: str | None = "rgb_array"):
        super().__init__(gym.make("CartPole-v1", render_mode=render_mode))
        physics = self.env.unwrapped
        for name, value in task.variation.items():
            setattr(physics, name, float(value))
        physics.total_mass = physics.masspole + physics.masscart
        physics.polemass_length = physics.masspole * physics.length


def cartpole_expert(task: Task) -> Callable[[np.ndarray], np.ndarray]:
    """A hand-tuned linear controller pushing towards where the pole is falling; it
    balances every cartpole task for the full 500 steps (checked in the unit tests)."""
    gains = np.array([0.05, 0.1, 1.0, 0.5])  # cart position, cart velocity, pole angle, pole angular velocity
    return lambda obs: (np.asarray(obs) @ gains > 0).astype(np.int64)


def _cartpole_tasks() -> tuple[tuple[Task, ...], tuple[Task, ...]]:
    train, test = [], []
    for length, mass, force in itertools.product(_LENGTHS, _POLE_MASSES, _FORCES):
        task = Task("cartpole", f"l{length:g}-m{mass:g}-f{force:g}", {"length": length, "masspole": mass,
                                                                       "force_mag": force})  # fmt: skip
        (test if length == _HELD_OUT_LENGTH else train).append(task)
    return tuple(train), tuple(test)


# -- crafter: one achievement per task ----------------------------------------------

_CRAFTER_TEST = ("collect_sapling", "place_plant", "eat_cow", "make_wood_sword", "place_furnace", "collect_iron")


class CrafterAchievement(gym.Wrapper):
    """Crafter paying 1 each time the task's achievement is unlocked, and nothing else."""

    def __init__(self, task: Task, render_mode: str | None = "rgb_array", length: int = 10000):
        from rlrings.envs.crafter import CrafterEnv

        super().__init__(CrafterEnv(render_mode=render_mode, length=length))
        self.achievement = task.variation["achievement"]
        self._count = 0

    def reset(self, **kwargs):
        self._count = 0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, _, terminated, truncated, info = self.env.step(action)
        count = info["achievements"][self.achievement]
        reward = float(count > self._count)
        self._count = count
        return obs, reward, terminated, truncated, info


def _crafter_tasks() -> tuple[tuple[Task, ...], tuple[Task, ...]]:
    import crafter

    tasks = [Task("crafter", name, {"achievement": name}) for name in crafter.constants.achievements]
    return (
        tuple(task for task in tasks if task.name not in _CRAFTER_TEST),
        tuple(task for task in tasks if task.name in _CRAFTER_TEST),
    )


# -- reacher: the robot arm with varied links and joints ----------------------------

_ARM_SCALES = (0.7, 0.85, 1.0, 1.15)  # both links' lengths, times Reacher-v5's (0.1 m and 0.11 m to the fingertip)
_DAMPINGS = (0.5, 1.0, 2.0)  # joint damping, times Reacher-v5's (1)
_HELD_OUT_SCALE = 1.3  # test tasks: an arm longer than any training task's
_LINKS = (("body1", "link0", 0.1), ("fingertip", "link1", 0.11))
"""(the body a link ends at, the link's capsule, its length in Reacher-v5)."""


class ReacherVariant(gym.Wrapper):
    """Reacher-v5 with both links scaled by ``scale`` (bodies and capsules moved, so renders
    show the arm that moves) and joint damping times ``damping``; the target is drawn in the
    disc the scaled arm reaches, as Reacher-v5 draws it in its own."""

    def __init__(self, task: Task, render_mode: str | None = "rgb_array"):
        from rlrings.envs import float32_observations

        super().__init__(float32_observations(gym.make("Reacher-v5", render_mode=render_mode)))
        arm = self.env.unwrapped
        model = arm.model
        self.scale = float(task.variation["scale"])
        for body, capsule, length in _LINKS:
            model.body(body).pos[0] = length * self.scale
            model.geom(capsule).pos[0] = 0.05 * self.scale
            model.geom(capsule).size[1] = 0.05 * self.scale
        arm_dofs = [model.joint(name).dofadr[0] for name in ("joint0", "joint1")]
        model.dof_damping[arm_dofs] *= float(task.variation["damping"])
        self.reach = 0.2 * self.scale

    def reset(self, **kwargs):
        _, info = self.env.reset(**kwargs)
        arm = self.env.unwrapped
        while True:
            goal = arm.np_random.uniform(-self.reach, self.reach, size=2)
            if np.linalg.norm(goal) < self.reach:
                break
        qpos, qvel = arm.data.qpos.copy(), arm.data.qvel.copy()
        qpos[-2:] = goal
        arm.set_state(qpos, qvel)
        return arm._get_obs().astype(np.float32), info


def reacher_expert(task: Task) -> Callable[[np.ndarray], np.ndarray]:
    """A demonstrator for a reacher task: the joint angles that put the fingertip on the target
    (the two-link arm's inverse kinematics, for the task's link lengths), reached by a PD
    controller on the torques."""
    upper, lower = (length * float(task.variation["scale"]) for _, _, length in _LINKS)

    def act(obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, np.float64)
        angles = np.arctan2(obs[:, 2:4], obs[:, 0:2])
        target, velocity = obs[:, 4:6], obs[:, 6:8]
        reach = np.clip((np.square(target).sum(1) - upper**2 - lower**2) / (2 * upper * lower), -1.0, 1.0)
        elbow = np.arccos(reach)
        shoulder = np.arctan2(target[:, 1], target[:, 0]) - np.arctan2(
            lower * np.sin(elbow), upper + lower * np.cos(elbow)
        )
        error = np.stack([shoulder, elbow], 1) - angles
        error = (error + np.pi) % (2 * np.pi) - np.pi
        return np.clip(0.25 * error - 0.05 * velocity, -1.0, 1.0).astype(np.float32)  # gentle: torques cost reward

    return act


def _reacher_tasks() -> tuple[tuple[Task, ...], tuple[Task, ...]]:
    train, test = [], []
    for scale, damping in itertools.product((*_ARM_SCALES, _HELD_OUT_SCALE), _DAMPINGS):
        task = Task("reacher", f"s{scale:g}-d{damping:g}", {"scale": scale, "damping": damping})
        (test if scale == _HELD_OUT_SCALE else train).append(task)
    return tuple(train), tuple(test)


# -- minerl: MineRL's own tasks -------------------------------------------------------

_MINERL_TRAIN = ("MineRLNavigate-v0", "MineRLNavigateDense-v0", "MineRLNavigateExtreme-v0",
                 "MineRLObtainIronPickaxe-v0")  # fmt: skip
_MINERL_TEST = ("MineRLTreechop-v0", "MineRLObtainDiamond-v0")


def _minerl_make(task: Task, **kwargs) -> gym.Env:
    from rlrings.envs.minerl import MineRLEnv

    return MineRLEnv(task.variation["minerl_id"], **kwargs)


def _minerl_tasks() -> tuple[tuple[Task, ...], tuple[Task, ...]]:
    def task(minerl_id: str) -> Task:
        return Task("minerl", minerl_id.removeprefix("MineRL").removesuffix("-v0").lower(), {"minerl_id": minerl_id})

    return tuple(map(task, _MINERL_TRAIN)), tuple(map(task, _MINERL_TEST))


FAMILIES = ("cartpole", "reacher", "crafter", "minerl")


def solved_threshold(name: str) -> float | None:
    """The task's family's definition (``name`` is ``<family>/<task>``)."""
    return family(name.split("/")[0]).reward_threshold


def family(name: str) -> TaskFamily:
    """The family ``name``.

    Raises:
        ConfigError: no such family.
    """
    if name == "cartpole":
        train, test = _cartpole_tasks()
        return TaskFamily(name, "CartPole-v1 with varied pole length and mass and push force; test tasks have a "
                          "longer pole than any training task", train, test,
                          lambda task, **kwargs: CartPoleVariant(task, **kwargs), 475.0,
                          cartpole_expert)  # fmt: skip
    if name == "reacher":
        train, test = _reacher_tasks()
        return TaskFamily(name, "the robot arm: Reacher-v5 with varied link lengths and joint damping; test tasks "
                          "have a longer arm than any training task", train, test,
                          lambda task, **kwargs: ReacherVariant(task, **kwargs), -3.75,
                          reacher_expert)  # fmt: skip
    if name == "crafter":
        train, test = _crafter_tasks()
        return TaskFamily(name, "Crafter paying for one achievement per task", train, test,
                          lambda task, **kwargs: CrafterAchievement(task, **kwargs))  # fmt: skip
    if name == "minerl":
        train, test = _minerl_tasks()
        return TaskFamily(name, "MineRL's tasks (needs MineRL, as in the actor image)", train, test, _minerl_make)
    raise ConfigError(f"family: unknown task family {name!r}; known: {list(FAMILIES)}")


def factory(name: str) -> Callable[..., gym.Env]:
    """A function making the task ``task:<family>/<task>`` (``name`` is ``<family>/<task>``).

    Raises:
        ConfigError: a malformed id, or an unknown family or task.
    """
    env_id, rest = PREFIX + name, name
    family_name, _, task_name = rest.partition("/")
    if not task_name:
        raise ConfigError(f"env: {env_id!r} is not a task id; use task:<family>/<task>, e.g. task:cartpole/"
                          f"l1.5-m0.1-f10")  # fmt: skip
    tasks = family(family_name)
    task = tasks.task(task_name)
    return lambda **kwargs: tasks.make(task, **kwargs)


def physics_of(env: gym.Env) -> dict[str, float]:
    """The physics constants of a (wrapped) CartPole, for checks and reports."""
    physics = env.unwrapped
    names = ("gravity", "masscart", "masspole", "total_mass", "length", "polemass_length", "force_mag")
    return {name: float(np.float64(getattr(physics, name))) for name in names}
