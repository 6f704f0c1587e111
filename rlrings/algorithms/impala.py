"""IMPALA: an actor-critic corrected for policy lag with V-trace (Espeholt et al., 2018).

Actors sample from the policy and write unrolls (``trajectories.trajectory_signature``)
into a FIFO queue that hands each out once; the learner takes one gradient
step per batch with V-trace targets. Both episode endings cut the trace; a
truncated step bootstraps from the learner's own value of its final
observation. Discrete and Box actions.
"""

from __future__ import annotations

import pydantic
import torch

from rlrings.algorithms import api, trajectories


def vtrace(
    behaviour_logp: torch.Tensor,
    target_logp: torch.Tensor,
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    values: torch.Tensor,
    bootstrap_value: torch.Tensor,
    rho_bar: float = 1.0,
    c_bar: float = 1.0,
    trace_decay: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """V-trace targets and policy-gradient advantages (Espeholt et al., 2018).

    ``trace_decay`` is the paper's lambda (its remark 2): the traces are
    ``lambda * min(c_bar, rho)``, which trades bias for variance as GAE's lambda does.

    All inputs are time-major ``[T, B]`` except ``bootstrap_value`` ``[B]``.

    Returns:
        ``(vs, advantages)``, both ``[T, B]`` and free of gradients.
    """
    with torch.no_grad():
        rhos = torch.exp(target_logp - behaviour_logp)
        clipped_rhos = rhos.clamp(max=rho_bar)
        cs = trace_decay * rhos.clamp(max=c_bar)
        next_values = torch.cat([values[1:], bootstrap_value[None]])
        deltas = clipped_rhos * (rewards + discounts * next_values - values)
        corrections = torch.zeros_like(values)
        carry = torch.zeros_like(bootstrap_value)
        for t in reversed(range(values.shape[0])):
            carry = deltas[t] + discounts[t] * cs[t] * carry
            corrections[t] = carry
        vs = values + corrections
        next_vs = torch.cat([vs[1:], bootstrap_value[None]])
        advantages = clipped_rhos * (rewards + discounts * next_vs - values)
    return vs, advantages


class ImpalaConfig(trajectories.TrajectoryConfig):
    name: str = "impala"
    baseline_cost: pydantic.NonNegativeFloat = 0.5
    """Weight of the value loss."""
    entropy_cost: float = pydantic.Field(default=0.01, ge=0, json_schema_extra=api.LIVE_IN_LEARNER)
    """Weight of the entropy bonus."""
    trace_decay: float = pydantic.Field(default=1.0, ge=0, le=1)
    """V-trace's lambda: 1 is the paper's default; lower trades bias for variance as GAE's lambda does."""
    normalize_advantages: bool = False
    """Scale each batch's policy-gradient advantages to zero mean and unit variance (measured to
    destabilise IMPALA on CartPole once the policy is good: its advantages shrink and normalising
    blows them up)."""


class ImpalaLearning(trajectories.ActorCriticLearning):
    """One IMPALA update per batch of trajectories; on a ring, gradients are averaged
    over the ranks before they are clipped and applied."""

    def loss(self, columns: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        tm, dist, head, rewards, discounts = self.forward_trajectories(columns)
        steps = head.shape[0] - 1
        mean, std, scale = self.scales()
        values = head.detach() * std + mean  # in return units
        target_logp = dist.log_prob(tm["action"])
        vs, advantages = vtrace(
            behaviour_logp=tm["logp"],
            target_logp=target_logp,
            rewards=rewards,
            discounts=discounts,
            values=values[:steps],
            bootstrap_value=values[steps],
            trace_decay=self.config.trace_decay,
        )
        advantages = advantages / scale
        if self.config.normalize_advantages and advantages.numel() > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        policy_loss = -(target_logp * advantages).mean()
        baseline_loss = 0.5 * ((vs - mean) / std - head[:steps]).pow(2).mean()
        self._value_targets = vs  # they move the return scale once the step is taken (update)
        entropy = dist.entropy().mean()
        loss = policy_loss + self.config.baseline_cost * baseline_loss - self.config.entropy_cost * entropy
        stats = {
            "loss": loss.detach(),
            "policy_loss": policy_loss.detach(),
            "baseline_loss": baseline_loss.detach(),
            "entropy": entropy.detach(),
        }
        return loss, stats

    def update(self, columns, weights=None) -> api.Update:
        loss, stats = self.loss(columns)
        rate = self.learning_rate()
        grad_norm = self.step(loss, max_grad_norm=self.config.max_grad_norm)
        self.move_return_scale(self._value_targets)  # for the next update
        self.updates += 1
        return api.Update(stats | {"grad_norm": grad_norm, "learning_rate": rate})


ALGORITHM = api.Algorithm(
    name="impala",
    summary="V-trace actor-critic on unrolls from a FIFO queue, one step per batch",
    Config=ImpalaConfig,
    action_spaces=api.BOTH_SPACES,
    acting=trajectories.TrajectoryActing,
    learning=ImpalaLearning,
    table=trajectories.trajectory_queue,
    default_batch_size=16,
    model_args=trajectories.trajectory_model_args,
)
