"""SAC: soft actor-critic with twin Q-functions and a tuned temperature (Haarnoja et al., 2018).

Actors act with the published tanh-squashed Gaussian policy (uniformly at
random for their share of ``random_steps`` first) and write one-step
transitions (n-step with ``n_step``) into a uniform or prioritized table that
replay's rate limiter holds at ``updates_per_env_step x batch_size`` samples
per inserted transition, so data and updates keep SAC's ratio however fast
the envs run. The learner takes one update per batch: the twin critics
towards the soft Bellman target of Polyak-averaged target critics, then the
actor, then the temperature towards ``target_entropy``; three optimizers,
each stepped through the ring (``GradientLearning.step``). Only the actor
is published. Box actions with finite bounds only.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from rlrings.algorithms import api, transitions
from rlrings.core import distributions
from rlrings.core.errors import ConfigError
from rlrings.core.models import ModelSpec
from rlrings.core.spaces import Box, Space


class TwinQ(nn.Module):
    """``members`` Q-functions of (observation, action) evaluated in one batched pass: each
    layer's weights are stacked ``[members, in, out]`` and applied with one ``baddbmm``, which
    halves the operator calls of two separate networks. Frames go through a small CNN per member
    first."""

    def __init__(self, spec: ModelSpec, hidden: tuple[int, ...] = (256, 256), members: int = 2):
        super().__init__()
        self.members = members
        obs = spec.observation_space
        self.encoder = _FrameEncoder(obs.shape) if obs.is_image else None
        width = self.encoder.width if self.encoder is not None else int(np.prod(obs.shape))
        width += spec.action_space.size
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for size in (*hidden, 1):
            bound = 1 / math.sqrt(width)  # nn.Linear's initialisation, member by member
            self.weights.append(nn.Parameter(torch.empty(members, width, size).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(members, 1, size).uniform_(-bound, bound)))
            width = size

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Q-values ``[members, B]``."""
        features = self.encoder(obs) if self.encoder is not None else obs.flatten(1).float()
        x = torch.cat([features, action.flatten(1).float()], -1).expand(self.members, -1, -1)
        last = len(self.weights) - 1
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(bias, x, weight)
            if i < last:
                x = F.relu(x)
        return x.squeeze(-1)


class _FrameEncoder(nn.Module):
    """uint8 HxWxC frames to features for the critics (as the policy's ConvNet torso)."""

    def __init__(self, shape: tuple[int, ...], channels: tuple[int, ...] = (32, 64, 64), width: int = 256):
        super().__init__()
        height, w, depth = shape
        layers: list[nn.Module] = []
        for out in channels:
            layers += [nn.Conv2d(depth, out, kernel_size=4, stride=2, padding=1), nn.ReLU()]
            depth = out
        convs = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            flat = convs(torch.zeros(1, shape[-1], height, w)).shape[1]
        self.net = nn.Sequential(convs, nn.Linear(flat, width), nn.ReLU())
        self.width = width

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs.permute(0, 3, 1, 2).float() / 255.0)


class Temperature(nn.Module):
    """SAC's entropy temperature alpha, learned as its logarithm."""

    def __init__(self, initial: float):
        super().__init__()
        self.log_alpha = nn.Parameter(torch.tensor(math.log(initial)))

    def forward(self) -> torch.Tensor:
        return self.log_alpha.exp()


def critic_loss(
    q: torch.Tensor, reward: torch.Tensor, discount: torch.Tensor, next_q: torch.Tensor, next_logp, alpha, weights
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft Bellman error of each critic ``q`` ``[members, B]`` against
    ``reward + discount * (min(next_q) - alpha * next_logp)``, importance-weighted.

    Returns:
        ``(loss, td_errors)``: the loss sums the members' weighted mean halved squared errors;
        ``td_errors`` ``[B]`` is the members' mean absolute error, detached (new priorities).
    """
    with torch.no_grad():
        target = reward + discount * (next_q.min(0).values - alpha * next_logp)
    error = q - target
    loss = (0.5 * error.square() * weights).mean(-1).sum()
    return loss, error.detach().abs().mean(0)


def actor_loss(q_of_sample: torch.Tensor, logp: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``E[alpha * log pi(a|s) - min_i Q_i(s, a)]`` over reparameterised samples ``a``."""
    return (alpha * logp - q_of_sample.min(0).values).mean()


def temperature_loss(log_alpha: torch.Tensor, logp: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """Moves alpha up when the policy's entropy ``-logp`` is below ``target_entropy``, down above it."""
    return -(log_alpha * (logp.detach() + target_entropy)).mean()


class SacConfig(api.ExperienceConfig):
    name: str = "sac"
    learning_rate: float = pydantic.Field(default=3e-4, gt=0, json_schema_extra=api.LIVE_IN_LEARNER)
    """Adam's rate for the actor, the critics and the temperature (constant)."""
    max_grad_norm: pydantic.PositiveFloat | None = None
    """Clip of each network's gradient norm; None (SAC's usual) does not clip."""
    hidden: list[pydantic.PositiveInt] = [256, 256]
    """Widths of the actor's and each critic's hidden layers (ReLU)."""
    tau: float = pydantic.Field(default=0.005, gt=0, le=1)
    """Polyak step of the target critics towards the critics, every update."""
    initial_temperature: pydantic.PositiveFloat = 1.0
    """Alpha at the start."""
    target_entropy: float | None = None
    """Entropy the temperature is tuned towards; None: minus the number of action dimensions."""
    tune_temperature: bool = True
    """Learn alpha; False keeps it at initial_temperature."""
    updates_per_env_step: pydantic.PositiveFloat = 1.0
    """Learner updates per transition inserted: replay's rate limiter holds
    ``updates_per_env_step x batch_size`` samples per insert (SAC's one update per env step)."""
    n_step: pydantic.PositiveInt = 1
    """Steps per return in a transition."""
    capacity: pydantic.PositiveInt | None = None
    """Transitions the table keeps; None: 1,000,000, or as many as fit in 2 GiB for large frames."""
    learning_starts: pydantic.NonNegativeInt = 1000
    """Transitions in the table before the first batch (Stable-Baselines3 starts at 100, CleanRL at
    5,000; of 100, 500, 1,000 and 5,000, 1,000 solved Pendulum-v1 in the fewest env steps)."""
    random_steps: pydantic.NonNegativeInt = 1000
    """Env steps (all actors together; the mesh gives each actor its share) of uniformly random
    actions before the policy acts (measured with learning_starts, above)."""
    chunk_length: pydantic.PositiveInt = 32
    """Transitions per chunk an actor sends."""
    prioritized: bool = False
    """Sample the table by |TD error| (priority_exponent 0.6) instead of uniformly."""


def _item_bytes(env) -> int:
    signature = transitions.transitions_signature(env)
    return sum(int(np.prod(c["shape"] or [1])) * np.dtype(c["dtype"]).itemsize for c in signature.values())


def action_column(space: Box) -> dict:
    """The action column of SAC's tables: the policy's squashed samples and the random actions
    both lie within the bounds, so a chunk holding one outside is refused."""
    return {**space.column(), "low": list(space.low), "high": list(space.high)}


def transitions_table(config: SacConfig, env, plan: api.TablePlan) -> dict:
    """A uniform (or prioritized) table held at ``updates_per_env_step x batch`` samples per insert,
    with a band of two chunks' (or two batches') worth either side."""
    capacity = config.capacity or int(max(10_000, min(1_000_000, 2**31 // _item_bytes(env))))
    ratio = config.updates_per_env_step * plan.batch_size
    return {
        "name": plan.name,
        "signature": transitions.transitions_signature(env, action_column(env.action_space)),
        "max_size": capacity,
        "selector": "prioritized" if config.prioritized else "uniform",
        "rate_limiter": {
            "min_size_to_sample": max(config.learning_starts, plan.batch_size),
            "samples_per_insert": ratio,
            "error_buffer": max(2.0 * plan.batch_size, 2.0 * config.chunk_length * ratio),
        },
    }


class SacActing(transitions.TransitionActing):
    """Uniformly random actions for ``random_steps`` env steps, then samples of the policy;
    one-step (or n-step) transitions in chunks of ``chunk_length``."""

    config: SacConfig

    def __init__(self, config, env, model_spec, num_envs, seed):
        super().__init__(config, env, model_spec, num_envs, seed)
        self.low, self.high = env.action_space.low_array(), env.action_space.high_array()

    def settings(self):
        return {"random_actions": self.env_steps < self.config.random_steps}

    @torch.inference_mode()
    def act(self, model, obs, policy_version):
        space = self.env.action_space
        if self.env_steps < self.config.random_steps:
            return self.rng.uniform(self.low, self.high, (len(obs), *space.shape)).astype(space.dtype)
        params, _ = model(torch.as_tensor(obs))
        sample = self.model_spec.make_distribution(params).sample(self.generator)
        return distributions.to_env_action(space, sample)


class SacLearning(api.GradientLearning):
    """One SAC update per batch: critics, actor, temperature, then the targets' Polyak step."""

    config: SacConfig

    def __init__(self, config, spec, model):
        super().__init__(config, spec, model)
        device = next(model.parameters()).device
        self.critic = TwinQ(spec, tuple(config.hidden)).to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.temperature = Temperature(config.initial_temperature).to(device)
        self.target_entropy = (
            float(config.target_entropy) if config.target_entropy is not None else -float(spec.action_space.size)
        )
        self.optimizers["critic"] = api.adam(self.critic.parameters(), config.learning_rate)
        self.optimizers["temperature"] = api.adam(self.temperature.parameters(), config.learning_rate)

    def modules(self) -> dict[str, nn.Module]:
        return super().modules() | {
            "critic": self.critic,
            "critic_target": self.critic_target,
            "temperature": self.temperature,
        }

    def _policy(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        params, _ = self.model(obs)
        return self.spec.make_distribution(params).rsample_with_log_prob()

    def update(self, columns, weights) -> api.Update:
        c = self.config
        first = {name: value[:, 0] for name, value in columns.items()}  # items are one transition
        obs, action, next_obs = first["obs"], first["action"], first["next_obs"]
        alpha = self.temperature().detach()
        with torch.no_grad():
            next_action, next_logp = self._policy(next_obs)
            next_q = self.critic_target(next_obs, next_action)
        q = self.critic(obs, action)
        q_loss, td = critic_loss(q, first["reward"], first["discount"], next_q, next_logp, alpha, weights)
        q_norm = self.step(q_loss, "critic", max_grad_norm=c.max_grad_norm, learning_rate=c.learning_rate)

        new_action, logp = self._policy(obs)
        self.critic.requires_grad_(False)  # the actor's loss moves the actor only
        try:
            pi_loss = actor_loss(self.critic(obs, new_action), logp, alpha)
        finally:
            self.critic.requires_grad_(True)
        pi_norm = self.step(pi_loss, "model", max_grad_norm=c.max_grad_norm, learning_rate=c.learning_rate)

        stats = {
            "critic_loss": q_loss.detach(),
            "actor_loss": pi_loss.detach(),
            "q_mean": q.detach().mean(),
            "entropy": -logp.detach().mean(),
            "alpha": alpha,
            "critic_grad_norm": q_norm,
            "actor_grad_norm": pi_norm,
        }
        if c.tune_temperature:
            alpha_loss = temperature_loss(self.temperature.log_alpha, logp, self.target_entropy)
            self.step(alpha_loss, "temperature", learning_rate=c.learning_rate)
            stats["temperature_loss"] = alpha_loss.detach()
        with torch.no_grad():
            online, target = list(self.critic.parameters()), list(self.critic_target.parameters())
            torch._foreach_lerp_(target, online, c.tau)
        self.updates += 1
        priorities = td + 1e-3 if c.prioritized else None
        return api.Update(stats, priorities)

    def importance_sampling_exponent(self) -> float:
        return 0.4 if self.config.prioritized else 0.0


def _distribution(space: Space) -> str:
    return "tanh_gaussian"


def _model_args(config: SacConfig, env) -> dict:
    return {"hidden": list(config.hidden), "activation": "relu", "shared": True}


class _SacAlgorithm(api.Algorithm):
    def check(self, env) -> None:
        super().check(env)
        if not env.action_space.bounded:
            raise ConfigError(
                f"algorithm: sac squashes its Gaussian into the action bounds, and env {env.env_id!r} has "
                f"unbounded actions ({env.action_space.describe()}, low {list(env.action_space.low)}); "
                "use ppo or appo, whose Gaussian is unbounded (their samples are clipped only where bounds "
                "are finite), or wrap the env to rescale its actions into finite bounds"
            )


def share_random_steps(config: SacConfig, index: int, mesh: api.MeshShape) -> dict:
    """Each actor plays its share of the random steps (they count all actors together)."""
    return {"random_steps": config.random_steps // mesh.actors}


ALGORITHM = _SacAlgorithm(
    name="sac",
    summary="soft actor-critic: twin Q, Polyak targets, tuned temperature, at a replay ratio",
    Config=SacConfig,
    action_spaces=(Box,),
    acting=SacActing,
    learning=SacLearning,
    table=transitions_table,
    default_batch_size=256,
    distribution=_distribution,
    anneal_over_budget=False,
    model_args=_model_args,
    for_actor=share_random_steps,
)
