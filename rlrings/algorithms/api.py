"""The Algorithm plug: what one algorithm module provides (the families it may build on are
``trajectories`` and ``transitions``).

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
from collections.abc import Callable, Mapping, Sequence
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
from rlrings.envs import EnvSpec, settings_family

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


class ExperienceConfig(AlgorithmConfig):
    """Settings of the algorithms that learn from their actors' experience (all but bc)."""

    bc_pretrain_updates: pydantic.NonNegativeInt = 0
    """Behaviour-cloning updates on the demonstrations table (episodes people played in the viewer,
    or game clients uploaded) before the first update on experience; 0: none. Skipped, with a
    warning, while the table is empty."""


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
    queue_batches: int = 2
    """Batches a FIFO queue holds (the algorithm's :class:`Pipeline`)."""


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


Columns = dict[str, torch.Tensor]
"""A device batch: each column ``[B, T, ...]``."""

DEMONSTRATIONS = "demonstrations"
"""The source of steps people played (the viewer) or game clients uploaded: the learner's
``demonstrations_table``, in :func:`rlrings.algorithms.bc.demonstrations_signature`'s columns."""


@dataclass(frozen=True)
class Source:
    """A replay table a learning half draws from besides its experience, as it declares it
    (:meth:`Learning.sources`); the learner knows no source by name. Before the first update on
    experience it calls ``pretrain`` on ``pretrain_updates`` batches of this source alone (skipped
    while the table is empty); then it draws ``per_update`` items with every batch of experience
    and updates on what ``join`` makes of the two (once the table holds something)."""

    table: str
    """Which table: a role the learner's settings map to a table (:data:`DEMONSTRATIONS`)."""
    per_update: int = 0
    join: Callable[[Columns, torch.Tensor, Columns], tuple[Columns, torch.Tensor]] | None = None
    """(experience, its importance weights, this source's items) -> the batch and weights to update on."""
    pretrain_updates: int = 0
    pretrain: Callable[[Columns], Mapping[str, torch.Tensor | float]] | None = None
    """One update on a batch of this source alone; returns its loss terms."""

    def __post_init__(self):
        if self.per_update and self.join is None or self.pretrain_updates and self.pretrain is None:
            raise ValueError(f"source {self.table!r}: per_update needs join, pretrain_updates needs pretrain")


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

    def sources(self, batch_size: int) -> tuple[Source, ...]:
        """The replay tables this half draws from besides its experience table, with how (none by
        default); ``batch_size`` is the learner's batch of experience."""
        return ()


def adam(parameters, learning_rate: float) -> torch.optim.Adam:
    """Adam with PyTorch's fused kernel (one call for all parameters, on the CPU as on CUDA:
    measured 3.4x faster per step than the per-tensor loop on six 256x256 tensors here),
    or the default implementation where the fused one is not built."""
    parameters = list(parameters)
    try:
        return torch.optim.Adam(parameters, lr=learning_rate, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(parameters, lr=learning_rate)


def gradient_step(
    optimizer: torch.optim.Optimizer,
    loss: torch.Tensor,
    parameters: Sequence[nn.Parameter],
    max_grad_norm: float | None = None,
    average: Callable[[Sequence[nn.Parameter]], None] | None = None,
) -> torch.Tensor:
    """Backward on ``loss``, ``average`` the gradients of ``parameters`` (a ring's), clip their global
    norm and step ``optimizer``: the one optimizer step of the learners and the few-shot methods.
    Returns the norm before clipping (0 unclipped)."""
    optimizer.zero_grad()
    loss.backward()
    if average is not None:
        average(parameters)
    norm = (
        torch.zeros(())
        if max_grad_norm is None
        else nn.utils.clip_grad_norm_([p for p in parameters if p.grad is not None], max_grad_norm)
    )
    optimizer.step()
    return norm.detach()


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
        return gradient_step(
            chosen, loss, params, max_grad_norm, lambda grads: self.ring.average_gradients(grads, name=optimizer)
        )

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

    def sources(self, batch_size: int) -> tuple[Source, ...]:
        """The demonstrations, for ``bc_pretrain_updates`` behaviour-cloning updates first."""
        updates = self.config.bc_pretrain_updates
        return (
            (Source(DEMONSTRATIONS, pretrain_updates=updates, pretrain=self.behaviour_cloning_step),) if updates else ()
        )

    def behaviour_cloning_step(self, columns: Columns) -> dict[str, torch.Tensor]:
        """One supervised step towards a batch of demonstrated actions (at the starting learning rate)."""
        loss, accuracy = cloning_loss(self.spec, self.model, columns["obs"][:, 0], columns["action"][:, 0])
        self.step(loss, learning_rate=self.config.learning_rate)
        return {"bc_loss": loss.detach(), "bc_accuracy": accuracy}


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
class Pipeline:
    """The buffers between an actor's policy and the learner's update, which each service sizes
    from its algorithm unless told otherwise. Every slot adds throughput and staleness: a batch
    is as many updates behind the acting policy as there are batches waiting ahead of it."""

    prefetch: int
    """Batches the learner draws from replay ahead of the update that uses them."""
    publish_every: int
    """Learner updates between weight versions."""
    queue_batches: int
    """Batches a FIFO queue holds, beside one write of every env (1: one batch, beside what one
    actor's write needs to fit)."""


ASYNCHRONOUS = Pipeline(prefetch=2, publish_every=5, queue_batches=2)
"""Buffers that keep every process busy: IMPALA's V-trace and APPO's clip correct the lag (a
batch about 15 updates behind on CartPole with 2 actors), DQN and SAC sample from a large buffer."""
ON_POLICY = Pipeline(prefetch=1, publish_every=1, queue_batches=1)
"""For PPO, whose epochs need data of the policy they update: its actors step each unroll with
a newer version than the last (``ActorConfig.on_policy``), so the learner publishes after every
update, the queue holds one batch (and what keeps writes from deadlocking) and one batch is drawn
ahead. A batch is then the policy's own data (lag 0 versions; it was 13 with the buffers above)."""


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
    on_policy: bool = False
    """It learns from data of the policy it is updating (PPO): its actors wait for each new
    version, and the mesh's buffers are sized for fresh data (:meth:`pipeline`), not throughput."""
    model_args: Callable[[AlgorithmConfig, EnvSpec], dict] = lambda config, env: {}
    """Arguments of the published network's architecture that follow from the settings (SAC's
    widths and activation, PPO's observation normalisation); plain JSON data."""
    for_actor: Callable[[AlgorithmConfig, int, MeshShape], dict] = lambda config, index, mesh: {}
    """Settings actor ``index`` of the mesh plays with instead of the shared ones (DQN's spread of
    epsilons, SAC's share of the random steps); settings the user gave are kept."""

    presets: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    """Settings of record for a family of envs (``rlrings.envs.settings_family``: ``atari``, ``mujoco``), used
    where the user gave none, as the Nature torso is picked for Atari frames."""

    def for_env(self, config: AlgorithmConfig, env_id: str) -> AlgorithmConfig:
        """``config`` with the settings of record of ``env_id``'s family in place of the defaults the
        user left (what every service of a mesh calls first, so that all of them agree)."""
        preset = self.presets.get(settings_family(env_id), {})
        return self._updated(config, {k: v for k, v in preset.items() if k not in config.model_fields_set})

    def pipeline(self) -> Pipeline:
        """How much data may wait between the acting policy and the update that learns from it."""
        return ON_POLICY if self.on_policy else ASYNCHRONOUS

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
