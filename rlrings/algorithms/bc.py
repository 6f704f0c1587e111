"""Behaviour cloning: fit the policy to the actions people (or game clients) chose.

As an algorithm it learns from a uniform table of demonstration steps (the
viewer's recordings or steps a game client uploads) and its actors only play
(they write nothing); :func:`cloning_loss` is also the pre-training step every
other algorithm can declare on the demonstrations (``bc_pretrain_updates``),
which is why the loss lives in ``api``.
Discrete actions: cross-entropy; Box actions: the Gaussian's negative
log-likelihood of the demonstrated action.
"""

from __future__ import annotations

import pydantic
import torch

from rlrings.algorithms import api
from rlrings.core import distributions


def demonstrations_signature(env) -> dict[str, dict]:
    """Steps people played: enough for behaviour cloning (obs, action) and for one-step
    transitions (reward, next_obs, terminated)."""
    return {
        "obs": env.observation_space.column(),
        "action": env.action_space.column(),
        "reward": {"dtype": "float32", "shape": []},
        "next_obs": env.observation_space.column(),
        "terminated": {"dtype": "bool", "shape": []},
        "truncated": {"dtype": "bool", "shape": []},
    }


def demonstrations_table(env, name: str = "demonstrations", max_size: int = 100_000) -> dict:
    return {
        "name": name,
        "signature": demonstrations_signature(env),
        "max_size": max_size,
        "selector": "uniform",
        "remover": "fifo",
    }


class BcConfig(api.AlgorithmConfig):
    name: str = "bc"
    learning_rate: float = pydantic.Field(default=1e-3, gt=0, json_schema_extra=api.LIVE_IN_LEARNER)
    """Adam's learning rate for the policy's log-likelihood."""
    max_grad_norm: pydantic.PositiveFloat | None = None
    """Clip of the global gradient norm; None does not clip."""
    capacity: pydantic.PositiveInt = 100_000
    """Demonstration steps the table keeps (the oldest are evicted)."""


class BcActing(api.Acting):
    """Plays the current policy (for its returns); writes nothing."""

    @property
    def chunk_length(self) -> int:
        return 1

    @torch.inference_mode()
    def act(self, model, obs, policy_version):
        params, _ = model(torch.as_tensor(obs))
        dist = self.model_spec.make_distribution(params)
        return distributions.to_env_action(self.env.action_space, dist.sample(self.generator))

    def observe(self, obs, actions, next_obs, rewards, terminated, truncated, info):
        self.env_steps += self.num_envs
        return []


class BcLearning(api.GradientLearning):
    def sources(self, batch_size: int) -> tuple[api.Source, ...]:
        return ()  # its experience is the demonstrations

    def update(self, columns, weights=None) -> api.Update:
        loss, accuracy = api.cloning_loss(self.spec, self.model, columns["obs"][:, 0], columns["action"][:, 0])
        grad_norm = self.step(loss, max_grad_norm=self.config.max_grad_norm)
        self.updates += 1
        return api.Update({"bc_loss": loss.detach(), "bc_accuracy": accuracy, "grad_norm": grad_norm})


def _table(config: BcConfig, env, plan: api.TablePlan) -> dict:
    return demonstrations_table(env, plan.name, config.capacity)


ALGORITHM = api.Algorithm(
    name="bc",
    summary="behaviour cloning from a uniform table of demonstration steps",
    Config=BcConfig,
    action_spaces=api.BOTH_SPACES,
    acting=BcActing,
    learning=BcLearning,
    table=_table,
    default_batch_size=64,
)
