"""Double DQN with prioritized replay and n-step returns (Ape-X's recipe).

Actors act epsilon-greedily and turn steps into n-step transitions
(:class:`NStepAccumulator`); the learner samples them from a prioritized
table held at a samples-per-insert ratio, corrects with importance weights
and sends back |TD error| as new priorities. Discrete actions only.
"""

from __future__ import annotations

import copy

import numpy as np
import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from rlrings.algorithms import api, transitions
from rlrings.algorithms.transitions import transitions_signature
from rlrings.core.spaces import Discrete


def double_dqn_loss(
    online: nn.Module,
    target: nn.Module,
    obs: torch.Tensor,
    action: torch.Tensor,
    reward: torch.Tensor,
    next_obs: torch.Tensor,
    discount: torch.Tensor,
    weights: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Importance-weighted Huber loss of double-DQN targets.

    ``reward`` is the n-step discounted return and ``discount`` is
    ``gamma**n`` (0 where the episode ended within the n steps).

    Returns:
        ``(loss, td_errors)`` with ``td_errors`` detached, one per transition.
    """
    q = online(obs)[0].gather(-1, action.long()[:, None]).squeeze(-1)
    with torch.no_grad():
        next_action = online(next_obs)[0].argmax(-1, keepdim=True)
        next_q = target(next_obs)[0].gather(-1, next_action).squeeze(-1)
        targets = reward + discount * next_q
    td = targets - q
    loss = (weights * F.smooth_l1_loss(q, targets, reduction="none")).mean()
    return loss, td.detach()


class DqnConfig(api.ExperienceConfig):
    name: str = "dqn"
    n_step: pydantic.PositiveInt = 3
    """Steps per n-step return."""
    max_grad_norm: pydantic.PositiveFloat | None = 10.0
    """Clip of the global gradient norm of the TD loss; None does not clip."""
    target_update_every: pydantic.PositiveInt = 250
    """Updates between target-network copies."""
    priority_exponent: float = pydantic.Field(default=0.6, ge=0)
    """Alpha of prioritized sampling (0: uniform)."""
    priority_epsilon: pydantic.PositiveFloat = 1e-3
    """Added to |TD error| so that no transition's priority is 0."""
    importance_sampling_exponent: float = pydantic.Field(default=0.4, ge=0, le=1)
    """Beta of the importance weights at the start; it rises linearly to 1."""
    importance_sampling_anneal_updates: pydantic.NonNegativeInt = 10_000
    """Updates over which beta rises to 1; 0 keeps it where it starts."""
    replay_ratio: pydantic.PositiveFloat = 8.0
    """Transitions sampled per transition inserted, held by replay's rate limiter."""
    capacity: pydantic.PositiveInt = 100_000
    """Transitions the table keeps (the oldest are evicted)."""
    learning_starts: pydantic.NonNegativeInt = 1000
    """Transitions in the table before the first batch."""
    chunk_length: pydantic.PositiveInt = 64
    """Transitions per chunk an actor sends."""
    epsilon: float = pydantic.Field(default=0.05, ge=0, le=1, json_schema_extra=api.LIVE_IN_ACTOR)
    """Probability of a random action once the decay is over (the mesh spreads it across actors)."""
    epsilon_start: float = pydantic.Field(default=1.0, ge=0, le=1)
    """Probability of a random action at an actor's first step."""
    epsilon_decay_steps: pydantic.NonNegativeInt = 0
    """An actor's env steps over which epsilon falls linearly from epsilon_start; 0: epsilon from the start."""
    demo_fraction: float = pydantic.Field(default=0.0, ge=0, lt=1)
    """Share of each batch drawn from the demonstrations table (as one-step transitions)."""


def prioritized_table(config: DqnConfig, env, plan: api.TablePlan) -> dict:
    """A prioritized table at ``replay_ratio`` samples per insert (a band of two batches or
    two chunks' worth either side), so neither actors nor the learner run away from the other."""
    return {
        "name": plan.name,
        "signature": transitions_signature(env),
        "max_size": config.capacity,
        "selector": "prioritized",
        "priority_exponent": config.priority_exponent,
        "rate_limiter": {
            "min_size_to_sample": config.learning_starts,
            "samples_per_insert": config.replay_ratio,
            "error_buffer": max(2.0 * plan.batch_size, 2.0 * config.chunk_length * config.replay_ratio),
        },
    }


class DqnActing(transitions.TransitionActing):
    """Epsilon-greedy on the Q-values; n-step transitions in chunks of ``chunk_length``."""

    config: DqnConfig

    def epsilon(self) -> float:
        """The chance of a random action now."""
        c = self.config
        if not c.epsilon_decay_steps:
            return c.epsilon
        done = min(1.0, self.env_steps / c.epsilon_decay_steps)
        return c.epsilon_start + done * (c.epsilon - c.epsilon_start)

    def settings(self):
        return {"epsilon": self.epsilon()}

    @torch.inference_mode()
    def act(self, model, obs, policy_version):
        q, _ = model(torch.as_tensor(obs))
        actions = q.argmax(-1).numpy().astype(np.int32)
        explore = self.rng.random(len(actions)) < self.epsilon()
        actions[explore] = self.rng.integers(0, self.env.action_space.n, explore.sum())
        return actions


class DqnLearning(api.GradientLearning):
    """One double-DQN update per batch; with a ring, gradients are averaged over its ranks."""

    config: DqnConfig

    def __init__(self, config, spec, model):
        super().__init__(config, spec, model)
        self.target = copy.deepcopy(model).requires_grad_(False)

    def modules(self) -> dict[str, nn.Module]:
        return super().modules() | {"target": self.target}

    def importance_sampling_exponent(self) -> float:
        c = self.config
        start, span = c.importance_sampling_exponent, c.importance_sampling_anneal_updates
        return start if not span else start + (1.0 - start) * min(1.0, self.updates / span)

    def update(self, columns, weights) -> api.Update:
        """One step on a batch of transitions; returns stats and new priorities."""
        first = {name: value[:, 0] for name, value in columns.items()}  # items are one transition
        loss, td = double_dqn_loss(
            self.model, self.target, first["obs"], first["action"], first["reward"], first["next_obs"],
            first["discount"], weights,
        )  # fmt: skip
        grad_norm = self.step(loss, max_grad_norm=self.config.max_grad_norm)
        self.updates += 1
        if self.updates % self.config.target_update_every == 0:
            self.target.load_state_dict(self.model.state_dict())
        priorities = td.abs() + self.config.priority_epsilon
        return api.Update({"loss": loss.detach(), "td_abs": td.abs().mean(), "grad_norm": grad_norm}, priorities)

    def sources(self, batch_size: int) -> tuple[api.Source, ...]:
        """The demonstrations: behaviour cloning first where asked, and ``demo_fraction`` of every batch."""
        mixed = round(batch_size * self.config.demo_fraction)
        if not mixed:
            return super().sources(batch_size)
        return (
            api.Source(
                api.DEMONSTRATIONS, per_update=mixed, join=self.with_demonstrations,
                pretrain_updates=self.config.bc_pretrain_updates, pretrain=self.behaviour_cloning_step,
            ),
        )  # fmt: skip

    def with_demonstrations(self, columns, weights, demonstrations):
        """Demonstration steps as one-step transitions, appended to the batch with weight 1."""
        d = demonstrations
        transitions = {
            "obs": d["obs"],
            "action": d["action"],
            "reward": d["reward"],
            "next_obs": d["next_obs"],
            "discount": self.config.gamma * (~d["terminated"]).float(),
        }
        joined = {name: torch.cat([columns[name], transitions[name]]) for name in columns}
        return joined, torch.cat([weights, torch.ones(len(d["action"]), device=weights.device)])


def spread_epsilon(config: DqnConfig, index: int, mesh: api.MeshShape) -> dict:
    """Actor ``index``'s epsilon, annealed from 1 over its share of the mesh's decay to its own
    final value; final values spread geometrically from 0.1 to 0.01 across actors (Ape-X's spread,
    narrowed so that with 2 actors neither is almost greedy nor almost random). A value the user
    gave is every actor's instead."""
    final = 0.1 ** (1 + index / (mesh.actors - 1)) if mesh.actors > 1 else 0.1**1.5
    decay = mesh.epsilon_decay_env_steps // mesh.actors
    spread = {"epsilon": final, "epsilon_start": 1.0, "epsilon_decay_steps": decay}
    return {key: value for key, value in spread.items() if key not in config.model_fields_set}


ALGORITHM = api.Algorithm(
    name="dqn",
    summary="double DQN, n-step returns, prioritized replay at a replay ratio",
    Config=DqnConfig,
    action_spaces=(Discrete,),
    acting=DqnActing,
    learning=DqnLearning,
    table=prioritized_table,
    default_batch_size=128,
    stochastic=False,
    anneal_over_budget=False,
    for_actor=spread_epsilon,
)
