"""The trajectory family: algorithms that learn from unrolls drawn once each from a FIFO queue
(IMPALA, PPO, APPO): their settings, table, acting half, and the one actor-critic learner they share
(values in return units, bootstrapped rewards of a batch)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pydantic
import torch
from torch import nn

from rlrings.algorithms.api import Acting, Chunk, ExperienceConfig, GradientLearning, TablePlan
from rlrings.core import distributions
from rlrings.core.errors import ConfigError
from rlrings.core.models import observation_normalizer
from rlrings.core.ring import Ring
from rlrings.envs import EnvSpec


class TrajectoryConfig(ExperienceConfig):
    """Settings of algorithms that learn from unrolls drawn once each from a FIFO queue."""

    unroll_length: pydantic.PositiveInt = 20
    """Steps per trajectory item (items hold one more observation, to bootstrap from)."""
    queue_size: pydantic.PositiveInt | None = None
    """Trajectories the queue holds; None: 2 x batch + one write of every env, or for an on-policy
    algorithm (ppo) the least that works. It must hold a batch less one and one actor's write (a
    write goes in whole); actors wait while it is full, so smaller is fresher data."""
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
    preserve_values: bool = False
    """Where the return scale moves, rescale the value head so that values in return units stay
    what they were (PopArt's preserved outputs). Without it every value moves with the scale: on
    CartPole that tracks a fast-improving policy (PPO and IMPALA solved in fewer steps without),
    on MuJoCo's long bootstrapped returns GAE reads the shift as advantage (PPO on Reacher-v5 at
    -53 after 160 k steps without, -5.2 with)."""

    @property
    def env_steps_per_item(self) -> int:
        return self.unroll_length


ATARI = {"learning_rate": 2.5e-4, "clip": 0.1}
"""PPO's and APPO's Atari settings of record (the field's since Schulman et al., 2017: CleanRL's and
Sample Factory's Atari runs), where they differ from the defaults: a smaller step and a tighter clip.
The rest of those runs is the defaults already (4 epochs of 4 minibatches, entropy 0.01, gradient
norm 0.5, a learning rate decaying to 0 over the budget); PPO also takes CleanRL's unroll of 128,
APPO keeps 32 (Sample Factory's). Value clipping is left out, as everywhere in rlrings (it helped
little or hurt in Andrychowicz et al., 2021)."""


MUJOCO_PPO = {
    "normalize_observations": True,
    "entropy_cost": 0.0,
    "unroll_length": 128,
    "epochs": 10,
    "minibatches": 32,
    "preserve_values": True,
}
"""PPO's MuJoCo settings of record (the field's since Schulman et al., 2017, as Stable-Baselines3
and CleanRL run them): observations normalised, no entropy bonus, batches of 2,048 steps (16
unrolls of 128) in 10 epochs of 32 minibatches; and, since rlrings normalises returns where they
normalise rewards, values kept in place as the return scale moves. On Reacher-v5 (200 k steps, one
seed, 2 cores) the defaults reached a best greedy -8.2, these -4.2 (Stable-Baselines3: -4.6)."""


MUJOCO_APPO = {
    "normalize_observations": True,
    "entropy_cost": 0.0,
    "unroll_length": 32,
    "epochs": 10,
    "minibatches": 8,
    "preserve_values": True,
}
"""APPO's MuJoCo settings: PPO's (observations normalised, no entropy bonus, values kept in place as
the return scale moves, 10 epochs of 64-step minibatches) on APPO's own short unrolls, so that each
update is a small batch (16 unrolls of 32 steps) and its data a few updates old rather than a few
2,048-step batches old. Measured at the default budget (1 M env steps, one seed, 2 cores): on
Reacher-v5 APPO's defaults reached a best greedy -5.9 (last -7.6), PPO's MuJoCo settings as they
are (128-step unrolls, 32 minibatches) -3.5 (last -3.8), these -3.0 (last -3.8), and Sample
Factory's MuJoCo settings (2 epochs of 4 minibatches at 3e-3, synchronous there) -4.5; on
HalfCheetah-v5 and Hopper-v5, tuned on nothing, the defaults' best rounds 948 and 1,921, these
3,593 and 3,437."""


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
    if config.queue_size:
        queue = config.queue_size
    elif plan.queue_batches > 1:
        queue = plan.queue_batches * plan.batch_size + plan.writers
    else:
        queue = plan.batch_size + plan.envs_per_actor - 1
    # An actor's write goes in whole, so while a batch is short any write must fit
    if queue < plan.batch_size + plan.envs_per_actor - 1:
        raise ConfigError(
            f"queue_size: {queue} trajectories cannot hold a batch ({plan.batch_size}) less one and one actor's "
            f"write ({plan.envs_per_actor}); give at least {plan.batch_size + plan.envs_per_actor - 1}"
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


class ReturnNormalizer(nn.Module):
    """Running statistics of the value targets, for losses whose scale does not
    depend on the rewards' (CartPole's returns reach 100, others' 0.1 or 10,000).

    The value head predicts returns standardised by the targets' running mean and
    standard deviation (PopArt's statistics, van Hasselt et al. 2016, without its
    output-preserving rescale). Advantages are divided by ``max(1, S)``, where S is
    the running 5-to-95 percentile range of the targets (DreamerV3's return
    normalisation, Hafner et al. 2023): large returns are scaled down, small ones
    are never scaled up, so once a policy is good and its targets bunch together,
    noise is not blown up into large steps (as per-batch advantage normalisation,
    or dividing by the targets' standard deviation, does). Its buffers travel with
    the learner's checkpoint.
    """

    def __init__(self, decay: float = 0.99):
        super().__init__()
        self.decay = decay
        self.register_buffer("first", torch.zeros(()))  # running E[x], E[x^2], and their debiasing weight
        self.register_buffer("second", torch.zeros(()))
        self.register_buffer("weight", torch.zeros(()))
        self.register_buffer("spread", torch.zeros(()))  # running P95 - P5 of the targets, debiased by weight

    def stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) in force; (0, 1) before any update."""
        if self.weight <= 0:
            return torch.zeros(()), torch.ones(())
        mean = self.first / self.weight
        variance = (self.second / self.weight - mean.square()).clamp(min=1e-4)
        return mean, variance.sqrt()

    def advantage_scale(self) -> torch.Tensor:
        """``max(1, S)``: what advantages are divided by."""
        if self.weight <= 0:
            return torch.ones(())
        return (self.spread / self.weight).clamp(min=1.0)

    @torch.no_grad()
    def update(self, targets: torch.Tensor, ring: Ring | None = None, value: nn.Linear | None = None) -> None:
        """Moves the statistics towards this batch's ``targets``; on a ring of several ranks,
        towards every rank's batch together, so that each holds the statistics one process
        would compute from the joined batch (ranks' batches are the same size). ``value``, the
        layer that outputs standardised values, is rescaled so that its values in return units
        stay what they were (PopArt's preserved outputs; ``preserve_values``)."""
        before = self.stats() if value is not None else None
        targets = targets.detach().flatten().double()
        if ring is not None and ring.size > 1:  # an all-gather through the ring's allreduce
            slots = torch.zeros(ring.size, len(targets), dtype=torch.float64)
            slots[ring.rank] = targets.cpu()
            targets = (ring.allreduce_mean(slots) * ring.size).flatten().to(self.first.device)
        d = self.decay
        self.first.mul_(d).add_((1 - d) * targets.mean())
        self.second.mul_(d).add_((1 - d) * targets.square().mean())
        low, high = torch.quantile(targets, torch.tensor([0.05, 0.95], dtype=targets.dtype, device=targets.device))
        self.spread.mul_(d).add_((1 - d) * (high - low))
        self.weight.mul_(d).add_(1 - d)
        if before is not None:
            (old_mean, old_std), (mean, std) = before, self.stats()
            value.weight.mul_((old_std / std).to(value.weight.dtype))
            value.bias.mul_(old_std).add_(old_mean - mean).div_(std)


class ActorCriticLearning(GradientLearning):
    """What the V-trace and GAE learners share: the return normaliser, values in return
    units, and the bootstrapped rewards of a trajectory batch."""

    config: TrajectoryConfig

    def __init__(self, config, spec, model):
        super().__init__(config, spec, model)
        self.normalizer = ReturnNormalizer().to(self.device) if config.normalize_returns else None

    def modules(self) -> dict[str, nn.Module]:
        return super().modules() | ({"return_normalizer": self.normalizer} if self.normalizer else {})

    def move_return_scale(self, targets: torch.Tensor) -> None:
        """This batch's value targets (in return units) move the normaliser, with the value head
        rescaled to keep its values where ``preserve_values`` asks; nothing without a normaliser."""
        if self.normalizer is not None:
            self.normalizer.update(targets, self.ring, value=self.model.value if self.config.preserve_values else None)

    def scales(self) -> tuple:
        """(mean, std, advantage scale) of the normaliser in force; (0, 1, 1) without one."""
        if self.normalizer is None:
            return 0.0, 1.0, 1.0
        mean, std = self.normalizer.stats()
        return mean.to(self.device), std.to(self.device), self.normalizer.advantage_scale().to(self.device)

    def forward_trajectories(self, columns):
        """The model on every observation of the batch: (time-major columns, distribution
        over steps 0..T-1, standardised values ``[T+1, B]``, rewards, discounts)."""
        obs = columns["obs"]  # [B, T+1, ...]
        batch, steps = obs.shape[0], obs.shape[1] - 1
        observations = observation_normalizer(self.model)
        if observations is not None and self.model.training:  # the policy's statistics follow the data
            observations.update(obs[:, :steps], self.ring.allreduce_mean, self.ring.size)
        tm = time_major(columns, steps)
        if self.config.reward_scale != 1.0:
            tm["reward"] = tm["reward"] * self.config.reward_scale
        params, head = self.model(obs.flatten(0, 1))
        params = params.view(batch, steps + 1, -1).transpose(0, 1)  # [T+1, B, P]
        head = head.view(batch, steps + 1).transpose(0, 1)
        mean, std, _ = self.scales()
        rewards, discounts = bootstrapped_rewards(
            tm, self.config.gamma, lambda final: self.model(final)[1] * std + mean
        )
        return tm, self.spec.make_distribution(params[:steps]), head, rewards, discounts
