"""The Algorithm plug: what one algorithm module provides, and what they share.

An algorithm is one module owning both of its halves (design notes, section 5):

- its typed settings (:class:`AlgorithmConfig`), nested as ``algorithm:`` in the
  actor's, the learner's and the mesh's settings and in the chart's values;
- the replay table it learns from and the signature actors write (:meth:`Algorithm.table`);
- an :class:`Acting` half, one per actor process: a batch of observations in,
  env actions out; the vector steps in, chunks ready for the replay writer out;
- a :class:`Learning` half, one per learner rank: a device batch in, stats and
  optional priorities out; the module it publishes; every module, optimizer,
  target and counter in ``state_dict``; joining a ring.

The actor and learner services are loops that know no algorithm. The ring
averages gradients; clipping and stepping stay here (:meth:`GradientLearning.step`),
so an algorithm with several optimizers works on both ring backends.
"""

from __future__ import annotations

import collections
import dataclasses
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydantic
import torch
from torch import nn

from rlrings.core import distributions
from rlrings.core.errors import ConfigError
from rlrings.core.models import ARCHITECTURES, ModelSpec
from rlrings.core.ring import LocalRing, Ring
from rlrings.core.shape import MeshShape
from rlrings.core.spaces import Box, Discrete, Space
from rlrings.envs import EnvSpec

LIVE_IN_LEARNER = {"live": "learner"}
"""``json_schema_extra`` of a setting a running learner may change (``UpdateConfig``)."""
LIVE_IN_ACTOR = {"live": "actor"}
"""``json_schema_extra`` of a setting a running actor may change (``UpdateConfig``)."""


def live_settings(config: type[pydantic.BaseModel], where: str) -> tuple[str, ...]:
    """Settings of ``config`` marked as changeable while ``where`` ("learner" or "actor") runs."""
    return tuple(
        name
        for name, field in config.model_fields.items()
        if isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("live") == where
    )


class AlgorithmConfig(pydantic.BaseModel):
    """Settings every algorithm has; each algorithm's config adds its own. Unknown keys are refused.
    Settings a running service may change are marked ``json_schema_extra=LIVE_IN_LEARNER`` (or
    ``LIVE_IN_ACTOR``); ``UpdateConfig`` validates a new value as the file's would be."""

    model_config = pydantic.ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)

    name: str
    gamma: float = pydantic.Field(default=0.99, gt=0, le=1)
    """Discount."""
    learning_rate: float = pydantic.Field(default=5e-4, gt=0, json_schema_extra=LIVE_IN_LEARNER)
    """Adam's learning rate (at the start, where it decays)."""
    learning_rate_decay_updates: pydantic.NonNegativeInt = 0
    """Updates over which the learning rate falls linearly to 0; 0 keeps it constant. The mesh
    sets it to the updates its env-step budget allows."""
    max_grad_norm: pydantic.PositiveFloat | None = 0.5
    """Clip of the global gradient norm; None does not clip."""

    @property
    def env_steps_per_item(self) -> int:
        """Env steps behind one replay item the learner draws (a transition: 1)."""
        return 1


@dataclass
class Chunk:
    """Steps for one ``write_chunk``: columns ``[chunk_length, ...]``, with optional priorities."""

    columns: dict[str, np.ndarray]
    priorities: Sequence[float] = ()
    policy_version: int | None = None
    """The oldest policy version behind these steps; None: the actor's current one."""


@dataclass(frozen=True)
class TablePlan:
    """What the mesh (or ``rlrings tables``) knows that sizes a learner's table."""

    name: str = "experience"
    batch_size: int = 16
    writers: int = 16
    """Envs writing at once (actors x envs per actor): a queue holds at least one write of each."""
    envs_per_actor: int = 8


class Acting(ABC):
    """An actor's half of an algorithm: the per-env state between steps."""

    def __init__(self, config: AlgorithmConfig, env: EnvSpec, model_spec: ModelSpec, num_envs: int, seed: int):
        self.config, self.env, self.model_spec, self.num_envs = config, env, model_spec, num_envs
        self.generator = torch.Generator().manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.env_steps = 0

    @property
    @abstractmethod
    def chunk_length(self) -> int:
        """Steps per chunk this half writes (the replay writer's ``chunk_length``)."""

    def check_table(self, sequence_length: int) -> str | None:
        """Why a table of items of ``sequence_length`` steps cannot take what this writes, or None."""
        return None

    @abstractmethod
    def act(self, model: nn.Module, obs: np.ndarray, policy_version: int) -> np.ndarray:
        """Env actions for a batch of observations."""

    @abstractmethod
    def observe(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        next_obs: np.ndarray,
        rewards: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        info: dict,
    ) -> list[Chunk]:
        """One vector step that :meth:`act` chose; returns the chunks it completed."""

    def settings(self) -> dict[str, Any]:
        """What the actor's status reports of this half (epsilon and the like)."""
        return {}


@dataclass
class Update:
    """What one learning step returns: stats as tensors (read when reported, not per loss
    term) and, for prioritized tables, one new priority per sampled item."""

    stats: dict[str, torch.Tensor | float]
    priorities: torch.Tensor | None = None


class Learning(ABC):
    """A learner rank's half of an algorithm."""

    updates: int = 0

    @abstractmethod
    def update(self, columns: dict[str, torch.Tensor], weights: torch.Tensor) -> Update:
        """One update on a device batch (columns ``[B, T, ...]``, importance weights ``[B]``)."""

    @abstractmethod
    def policy(self) -> nn.Module:
        """The module published for actors and users."""

    @abstractmethod
    def join(self, ring: Ring) -> None:
        """From now on, average gradients over ``ring``."""

    @abstractmethod
    def state_dict(self) -> dict:
        """Every module, optimizer, target and counter."""

    @abstractmethod
    def load_state_dict(self, state: dict) -> None: ...

    def importance_sampling_exponent(self) -> float:
        """The beta with which replay weights prioritized samples now; 0: no weights."""
        return 0.0

    def demonstrations_per_batch(self, batch_size: int) -> int:
        """Demonstration steps to mix into each batch (DQN's demo_fraction); 0: none."""
        return 0

    def with_demonstrations(self, columns, weights, demonstrations):
        """``columns`` and ``weights`` joined with a batch from the demonstrations table."""
        raise NotImplementedError

    def behaviour_cloning_step(self, obs: torch.Tensor, actions: torch.Tensor) -> dict[str, float]:
        """One supervised step towards ``actions`` (pre-training on demonstrations)."""
        raise ConfigError(f"algorithm {type(self).__name__}: no behaviour-cloning pre-training")


def adam(parameters, learning_rate: float) -> torch.optim.Adam:
    """Adam with PyTorch's fused kernel (one call for all parameters, on the CPU as on CUDA:
    measured 3.4x faster per step than the per-tensor loop on six 256x256 tensors here),
    or the default implementation where the fused one is not built."""
    parameters = list(parameters)
    try:
        return torch.optim.Adam(parameters, lr=learning_rate, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(parameters, lr=learning_rate)


class GradientLearning(Learning):
    """A learning half with named modules and optimizers; :meth:`step` backpropagates,
    averages over the ring, clips and steps one optimizer."""

    def __init__(self, config: AlgorithmConfig, spec: ModelSpec, model: nn.Module):
        self.config, self.spec, self.model = config, spec, model
        self.ring: Ring = LocalRing()
        self.optimizers: dict[str, torch.optim.Optimizer] = {"model": adam(model.parameters(), config.learning_rate)}
        self.updates = 0

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def modules(self) -> dict[str, nn.Module]:
        """Every module whose state a checkpoint keeps and a joining rank takes from rank 0."""
        return {"model": self.model}

    def policy(self) -> nn.Module:
        return self.model

    def join(self, ring: Ring) -> None:
        self.ring = ring

    def learning_rate(self) -> float:
        """The rate of the next update: linear decay to 0 over ``learning_rate_decay_updates``."""
        c = self.config
        if not c.learning_rate_decay_updates:
            return c.learning_rate
        return c.learning_rate * max(0.0, 1.0 - self.updates / c.learning_rate_decay_updates)

    def step(
        self,
        loss: torch.Tensor,
        optimizer: str = "model",
        parameters: Sequence[nn.Parameter] | None = None,
        max_grad_norm: float | None = None,
        learning_rate: float | None = None,
    ) -> torch.Tensor:
        """Backward on ``loss``, ring-average the gradients of ``parameters`` (default: the
        optimizer's), clip their global norm and step. Returns the norm before clipping."""
        chosen = self.optimizers[optimizer]
        params = list(parameters) if parameters is not None else [p for g in chosen.param_groups for p in g["params"]]
        rate = self.learning_rate() if learning_rate is None else learning_rate
        for group in chosen.param_groups:
            group["lr"] = rate
        chosen.zero_grad()
        loss.backward()
        self.ring.average_gradients(params, name=optimizer)
        norm = (
            torch.zeros(())
            if max_grad_norm is None
            else nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], max_grad_norm)
        )
        chosen.step()
        return norm.detach()

    def state_dict(self) -> dict:
        return {
            "modules": {name: module.state_dict() for name, module in self.modules().items()},
            "optimizers": {name: optimizer.state_dict() for name, optimizer in self.optimizers.items()},
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict) -> None:
        for name, module in self.modules().items():
            module.load_state_dict(state["modules"][name])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        self.updates = int(state["updates"])

    def behaviour_cloning_step(self, obs: torch.Tensor, actions: torch.Tensor) -> dict[str, float]:
        loss, accuracy = cloning_loss(self.spec, self.model, obs, actions)
        self.step(loss, learning_rate=self.config.learning_rate)
        return {"bc_loss": float(loss.detach()), "bc_accuracy": float(accuracy)}


def cloning_loss(
    spec: ModelSpec, model: nn.Module, obs: torch.Tensor, actions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(negative log-likelihood of ``actions``, accuracy): for Discrete actions the share the
    policy's mode gets right; for Box actions minus the mean squared error of the mode."""
    params, _ = model(obs)
    dist = spec.make_distribution(params)
    loss = -dist.log_prob(actions).mean()
    with torch.no_grad():
        mode = dist.mode()
        if isinstance(spec.action_space, Discrete):
            accuracy = (mode == actions.long()).float().mean()
        else:
            accuracy = -(mode - actions.flatten(1).float()).square().mean()
    return loss, accuracy


@dataclass(frozen=True)
class Algorithm:
    """One registry entry: an algorithm's name, settings, spaces and halves."""

    name: str
    summary: str
    Config: type[AlgorithmConfig]
    action_spaces: tuple[type, ...]
    acting: type[Acting]
    learning: Callable[[AlgorithmConfig, ModelSpec, nn.Module], Learning]
    table: Callable[[AlgorithmConfig, EnvSpec, TablePlan], dict]
    """The learner's replay table for an env, as a config mapping."""
    default_batch_size: int = 16
    distribution: Callable[[Space], str] = distributions.default_distribution
    """The action distribution this algorithm's policies use on a space."""
    stochastic: bool = True
    """Its policy is meant to be sampled (the evaluator plays it sampled as well as greedy);
    False for value-based algorithms, whose greedy policy is the policy."""
    anneal_over_budget: bool = True
    """The mesh decays its learning rate to 0 over the updates its env-step budget allows."""
    model_args: Callable[[AlgorithmConfig, EnvSpec], dict] = lambda config, env: {}
    """Arguments of the published network's architecture that follow from the settings (SAC's
    widths and activation, PPO's observation normalisation); plain JSON data."""
    for_actor: Callable[[AlgorithmConfig, int, MeshShape], dict] = lambda config, index, mesh: {}
    """Settings actor ``index`` of the mesh plays with instead of the shared ones (DQN's spread of
    epsilons, SAC's share of the random steps); settings the user gave are kept."""

    def batch_size(self, mesh: MeshShape) -> int:
        """Items per learner update in ``mesh``: its own, else this algorithm's default."""
        return mesh.batch_size or self.default_batch_size

    def actor_settings(self, config: AlgorithmConfig, index: int, mesh: MeshShape) -> AlgorithmConfig:
        """What actor ``index`` of ``mesh`` runs: ``config`` with its own share (:attr:`for_actor`)."""
        return self._updated(config, self.for_actor(config, index, mesh))

    def learner_settings(self, config: AlgorithmConfig, mesh: MeshShape, batch_size: int) -> AlgorithmConfig:
        """What a learner rank of ``mesh`` runs: with :attr:`anneal_over_budget`, a learning rate that
        falls to 0 over the updates the step budget allows, unless a decay was given."""
        if not (self.anneal_over_budget and mesh.max_env_steps) or config.learning_rate_decay_updates:
            return config
        updates = mesh.max_env_steps // (batch_size * mesh.learners * config.env_steps_per_item)
        return self._updated(config, {"learning_rate_decay_updates": max(1, updates)})

    @staticmethod
    def _updated(config: AlgorithmConfig, settings: dict) -> AlgorithmConfig:
        if not settings:
            return config
        given = config.model_fields_set
        updated = type(config).model_validate(config.model_dump() | settings)
        updated.__pydantic_fields_set__ = set(given)  # what the user gave stays what the user gave
        return updated

    def config(self, **settings) -> AlgorithmConfig:
        return self.Config(name=self.name, **settings)

    def check(self, env: EnvSpec) -> None:
        """Raises ConfigError when this algorithm cannot act in ``env``'s action space."""
        if not isinstance(env.action_space, self.action_spaces):
            supported = " or ".join(kind.__name__ for kind in self.action_spaces)
            raise ConfigError(
                f"algorithm: {self.name} supports {supported} actions; env {env.env_id!r} has "
                f"{env.action_space.describe()}"
            )

    def model_spec(
        self, env: EnvSpec, architecture: str | None = None, config: AlgorithmConfig | None = None
    ) -> ModelSpec:
        """The published network for ``env``; ``config`` (default: the algorithm's defaults)
        supplies :attr:`model_args` where the architecture takes them."""
        self.check(env)
        spec = ModelSpec.for_env(env, self.name, architecture, distribution=self.distribution(env.action_space))
        args = self.model_args(config or self.config(), env)
        accepted = inspect.signature(ARCHITECTURES[spec.architecture]).parameters  # the CNN takes no widths
        args = {key: value for key, value in args.items() if key in accepted}
        return dataclasses.replace(spec, args=args) if args else spec


BOTH_SPACES = (Discrete, Box)

# -- trajectories, shared by the actor-critic algorithms -----------------------------------


class TrajectoryConfig(AlgorithmConfig):
    """Settings of algorithms that learn from unrolls drawn once each from a FIFO queue."""

    unroll_length: pydantic.PositiveInt = 20
    """Steps per trajectory item (items hold one more observation, to bootstrap from)."""
    queue_size: pydantic.PositiveInt | None = None
    """Trajectories the queue holds; None: 2 x batch + one write of every env. It must hold a batch
    and one actor's write; actors wait while it is full, so smaller is fresher data."""
    max_policy_lag: pydantic.NonNegativeInt = 0
    """The queue drops trajectories whose policy is more than this many versions older than the
    learner's (counted in rlrings_replay_stale_items); 0 keeps them all."""
    normalize_observations: bool = False
    """Standardise observations by their running mean and deviation (clipped at 10), inside the
    published model so that actors and users see what the learner saw; the learner moves the
    statistics with every batch (the usual setting for MuJoCo tasks)."""
    reward_scale: pydantic.PositiveFloat = 1.0
    """Rewards are multiplied by this before learning (returns and values in scaled units)."""
    normalize_returns: bool = True
    """Learn values in units of the returns' running scale and divide advantages by it
    (``ReturnNormalizer``)."""

    @property
    def env_steps_per_item(self) -> int:
        return self.unroll_length


def trajectory_model_args(config: TrajectoryConfig, env: EnvSpec) -> dict:
    """The observation normaliser, where the settings ask for it (vector observations only)."""
    return {"normalize_observations": True} if config.normalize_observations else {}


def trajectory_signature(env: EnvSpec) -> dict[str, dict]:
    """Column name -> {dtype, shape} of one step of a trajectory.

    Items are T+1 steps: observations 0..T and, for steps 0..T-1, the action, reward,
    ``terminated`` and ``truncated`` (the episode ended after that action), the behaviour
    policy's log-probability and, where a time limit cut the episode, its last observation
    (``final_obs``; zeros elsewhere). Row T's action columns are padding.
    """
    return {
        "obs": env.observation_space.column(),
        "action": env.action_space.column(),
        "reward": {"dtype": "float32", "shape": []},
        "terminated": {"dtype": "bool", "shape": []},
        "truncated": {"dtype": "bool", "shape": []},
        "logp": {"dtype": "float32", "shape": []},
        "final_obs": env.observation_space.column(),
    }


def trajectory_queue(config: TrajectoryConfig, env: EnvSpec, plan: TablePlan) -> dict:
    """A FIFO queue of trajectories, each drawn once; writers wait while it is full."""
    queue = config.queue_size or 2 * plan.batch_size + plan.writers
    if queue < plan.batch_size + plan.envs_per_actor:
        raise ConfigError(
            f"queue_size: {queue} trajectories cannot hold a batch ({plan.batch_size}) and one actor's write "
            f"({plan.envs_per_actor}); give at least {plan.batch_size + plan.envs_per_actor}"
        )
    return {
        "name": plan.name,
        "signature": trajectory_signature(env),
        "sequence_length": config.unroll_length + 1,
        "max_size": queue,
        "selector": "fifo",
        "max_times_sampled": 1,
        **({"max_policy_lag": config.max_policy_lag} if config.max_policy_lag else {}),
        "rate_limiter": {"min_size_to_sample": 1, "samples_per_insert": 1.0, "min_diff": 0, "max_diff": queue},
    }


class TrajectoryActing(Acting):
    """Samples from the policy's distribution and writes unrolls of ``unroll_length + 1``
    steps, one item per env, with each unroll's oldest policy version."""

    config: TrajectoryConfig

    def __init__(self, config, env, model_spec, num_envs, seed):
        super().__init__(config, env, model_spec, num_envs, seed)
        T, N = config.unroll_length, num_envs
        obs_shape, obs_dtype = env.observation_space.shape, env.observation_space.dtype
        action = env.action_space
        self.t = 0
        self.version = 0
        self.buffers = {
            "obs": np.zeros((T + 1, N, *obs_shape), obs_dtype),
            "action": np.zeros((T + 1, N, *action.shape), action.dtype),
            "reward": np.zeros((T + 1, N), np.float32),
            "terminated": np.zeros((T + 1, N), bool),
            "truncated": np.zeros((T + 1, N), bool),
            "logp": np.zeros((T + 1, N), np.float32),
            "final_obs": np.zeros((T + 1, N, *obs_shape), obs_dtype),
        }
        self._logp: np.ndarray | None = None
        self._raw: np.ndarray | None = None

    @property
    def chunk_length(self) -> int:
        return self.num_envs * (self.config.unroll_length + 1)

    def check_table(self, sequence_length: int) -> str | None:
        if sequence_length != self.config.unroll_length + 1:
            return (
                f"unroll_length: {self.config.unroll_length} needs items of {self.config.unroll_length + 1} "
                f"steps; the table has sequence_length {sequence_length}"
            )
        return None

    @torch.inference_mode()
    def act(self, model, obs, policy_version):
        if self.t == 0:  # weights change between steps only: the unroll's oldest policy is this one
            self.version = policy_version
        params, _ = model(torch.as_tensor(obs))
        dist = self.model_spec.make_distribution(params)
        sample = dist.sample(self.generator)
        self._logp = dist.log_prob(sample).numpy()
        # what is stored: the sample itself (a Gaussian's unclipped), which the learner scores
        self._raw = sample.numpy().reshape(len(obs), *self.env.action_space.shape)
        return distributions.to_env_action(self.env.action_space, sample)

    def observe(self, obs, actions, next_obs, rewards, terminated, truncated, info):
        b, t = self.buffers, self.t
        self.env_steps += self.num_envs
        b["obs"][t] = obs
        final_obs = b["final_obs"][t]
        final_obs[:] = 0
        for i in np.flatnonzero(truncated & ~terminated):  # the learner bootstraps a time limit from it
            final_obs[i] = info["final_obs"][i]
        b["action"][t] = self._raw
        b["reward"][t] = rewards
        b["terminated"][t] = terminated
        b["truncated"][t] = truncated
        b["logp"][t] = self._logp
        self.t = t + 1
        if self.t < self.config.unroll_length:
            return []
        b["obs"][self.t] = next_obs
        self.t = 0
        columns = {
            name: np.ascontiguousarray(np.swapaxes(value, 0, 1)).reshape(-1, *value.shape[2:])
            for name, value in b.items()
        }
        return [Chunk(columns, policy_version=self.version)]


def time_major(columns: dict[str, torch.Tensor], steps: int) -> dict[str, torch.Tensor]:
    """Trajectory columns ``[B, T+1, ...]`` as ``[T+1, B, ...]`` (obs) or ``[T, B, ...]`` (the rest)."""
    return {
        name: value.transpose(0, 1) if name == "obs" else value.transpose(0, 1)[:steps]
        for name, value in columns.items()
    }


def bootstrapped_rewards(
    tm: dict[str, torch.Tensor], gamma: float, value_of: Callable[[torch.Tensor], torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards with ``gamma * V(final_obs)`` added where a time limit cut the episode, and
    the discounts (0 after any ending): a truncated step bootstraps from the learner's own
    value of its last observation, computed now rather than baked in by the actor."""
    terminated = tm["terminated"]
    truncated = tm["truncated"] & ~terminated
    rewards = tm["reward"]
    if "final_obs" in tm and truncated.any():
        where = truncated.nonzero(as_tuple=True)
        with torch.no_grad():
            final_values = value_of(tm["final_obs"][where])
        rewards = rewards.index_put(where, rewards[where] + gamma * final_values)
    done = (terminated | truncated).float()
    return rewards, gamma * (1.0 - done)


class StatsMean:
    """Sums of tensors over several minibatch steps, for one mean per update."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = collections.defaultdict(lambda: torch.zeros(()))
        self.count = 0

    def add(self, stats: dict[str, torch.Tensor]) -> None:
        for name, value in stats.items():
            self.sums[name] = self.sums[name] + value.detach().float().cpu()
        self.count += 1

    def mean(self) -> dict[str, torch.Tensor]:
        return {name: value / max(1, self.count) for name, value in self.sums.items()}


# -- transitions, shared by the off-policy algorithms ---------------------------------------


def transitions_signature(env: EnvSpec, action: dict | None = None) -> dict[str, dict]:
    """Column name -> {dtype, shape} of an n-step transition: ``reward`` is the discounted
    n-step return, ``discount`` is ``gamma**n`` (0 where the episode ended within the n steps);
    ``action`` replaces the action column (SAC's declares its bounds)."""
    observation = env.observation_space.column()
    return {
        "obs": observation,
        "action": action or env.action_space.column(),
        "reward": {"dtype": "float32", "shape": []},
        "next_obs": env.observation_space.column(),
        "discount": {"dtype": "float32", "shape": []},
    }


class NStepAccumulator:
    """Turns one env's steps into n-step transitions.

    ``add`` returns the transitions that became complete: one per step once n
    steps are buffered, and all the buffered ones when an episode ends.
    """

    def __init__(self, n: int, gamma: float):
        self.n, self.gamma = n, gamma
        self._steps: collections.deque = collections.deque()

    def add(self, obs, action, reward, next_obs, terminated: bool, truncated: bool) -> list[tuple]:
        self._steps.append((obs, action, reward))
        out = []
        if terminated or truncated:
            while self._steps:
                out.append(self._emit(next_obs, 0.0 if terminated else 1.0))
        elif len(self._steps) == self.n:
            out.append(self._emit(next_obs, 1.0))
        return out

    def _emit(self, next_obs, alive: float) -> tuple:
        ret = sum(self.gamma**i * step[2] for i, step in enumerate(self._steps))
        discount = alive * self.gamma ** len(self._steps)
        obs, action, _ = self._steps.popleft()
        return obs, action, np.float32(ret), next_obs, np.float32(discount)


class TransitionActing(Acting):
    """An acting half that writes n-step transitions (the config's ``n_step`` and ``gamma``) in
    chunks of its ``chunk_length``; subclasses choose the actions."""

    def __init__(self, config, env, model_spec, num_envs, seed):
        super().__init__(config, env, model_spec, num_envs, seed)
        self.accumulators = [NStepAccumulator(config.n_step, config.gamma) for _ in range(num_envs)]
        self.pending: list[tuple] = []

    @property
    def chunk_length(self) -> int:
        return self.config.chunk_length

    def observe(self, obs, actions, next_obs, rewards, terminated, truncated, info):
        self.env_steps += self.num_envs
        for i, accumulator in enumerate(self.accumulators):
            ended = terminated[i] or truncated[i]
            after = info["final_obs"][i] if ended else next_obs[i]
            self.pending += accumulator.add(obs[i], actions[i], rewards[i], after, terminated[i], truncated[i])
        chunks = []
        n = self.chunk_length
        while len(self.pending) >= n:
            batch, self.pending = self.pending[:n], self.pending[n:]
            obs_, action, ret, next_, discount = zip(*batch)
            columns = {
                "obs": np.stack(obs_),
                "action": np.asarray(action, self.env.action_space.dtype),
                "reward": np.asarray(ret, np.float32),
                "next_obs": np.stack(next_),
                "discount": np.asarray(discount, np.float32),
            }
            chunks.append(Chunk(columns))
        return chunks
