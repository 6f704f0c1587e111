"""IMPALA: an actor-critic corrected for policy lag with V-trace (Espeholt et al., 2018).

Actors sample from the policy and write unrolls (``base.trajectory_signature``)
into a FIFO queue that hands each out once; the learner takes one gradient
step per batch with V-trace targets. Both episode endings cut the trace; a
truncated step bootstraps from the learner's own value of its final
observation. Discrete and Box actions.
"""

from __future__ import annotations

import pydantic
import torch
from torch import nn

from rlrings.algorithms import base
from rlrings.core.models import observation_normalizer
from rlrings.core.ring import Ring


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
    def update(self, targets: torch.Tensor, ring: Ring | None = None) -> None:
        """Moves the statistics towards this batch's ``targets``; on a ring of several ranks,
        towards every rank's batch together, so that each holds the statistics one process
        would compute from the joined batch (ranks' batches are the same size)."""
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


class ImpalaConfig(base.TrajectoryConfig):
    name: str = "impala"
    baseline_cost: pydantic.NonNegativeFloat = 0.5
    """Weight of the value loss."""
    entropy_cost: float = pydantic.Field(default=0.01, ge=0, json_schema_extra=base.LIVE_IN_LEARNER)
    """Weight of the entropy bonus."""
    trace_decay: float = pydantic.Field(default=1.0, ge=0, le=1)
    """V-trace's lambda: 1 is the paper's default; lower trades bias for variance as GAE's lambda does."""
    normalize_advantages: bool = False
    """Scale each batch's policy-gradient advantages to zero mean and unit variance (measured to
    destabilise IMPALA on CartPole once the policy is good: its advantages shrink and normalising
    blows them up)."""


class ActorCriticLearning(base.GradientLearning):
    """What the V-trace and GAE learners share: the return normaliser, values in return
    units, and the bootstrapped rewards of a trajectory batch."""

    config: ImpalaConfig

    def __init__(self, config, spec, model):
        super().__init__(config, spec, model)
        self.normalizer = ReturnNormalizer().to(self.device) if config.normalize_returns else None

    def modules(self) -> dict[str, nn.Module]:
        return super().modules() | ({"return_normalizer": self.normalizer} if self.normalizer else {})

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
        tm = base.time_major(columns, steps)
        if self.config.reward_scale != 1.0:
            tm["reward"] = tm["reward"] * self.config.reward_scale
        params, head = self.model(obs.flatten(0, 1))
        params = params.view(batch, steps + 1, -1).transpose(0, 1)  # [T+1, B, P]
        head = head.view(batch, steps + 1).transpose(0, 1)
        mean, std, _ = self.scales()
        rewards, discounts = base.bootstrapped_rewards(
            tm, self.config.gamma, lambda final: self.model(final)[1] * std + mean
        )
        return tm, self.spec.make_distribution(params[:steps]), head, rewards, discounts


class ImpalaLearning(ActorCriticLearning):
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
        if self.normalizer is not None:  # this batch's targets move the scale for the next update
            self.normalizer.update(vs, self.ring)
        entropy = dist.entropy().mean()
        loss = policy_loss + self.config.baseline_cost * baseline_loss - self.config.entropy_cost * entropy
        stats = {
            "loss": loss.detach(),
            "policy_loss": policy_loss.detach(),
            "baseline_loss": baseline_loss.detach(),
            "entropy": entropy.detach(),
        }
        return loss, stats

    def update(self, columns, weights=None) -> base.Update:
        loss, stats = self.loss(columns)
        rate = self.learning_rate()
        grad_norm = self.step(loss, max_grad_norm=self.config.max_grad_norm)
        self.updates += 1
        return base.Update(stats | {"grad_norm": grad_norm, "learning_rate": rate})


ALGORITHM = base.Algorithm(
    name="impala",
    summary="V-trace actor-critic on unrolls from a FIFO queue, one step per batch",
    Config=ImpalaConfig,
    action_spaces=base.BOTH_SPACES,
    acting=base.TrajectoryActing,
    learning=ImpalaLearning,
    table=base.trajectory_queue,
    default_batch_size=16,
    model_args=base.trajectory_model_args,
)
