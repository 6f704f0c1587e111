"""IMPALA: an actor-critic corrected for policy lag with V-trace.

Trajectories are items of T+1 steps: observations 0..T, and for steps 0..T-1
the action, reward, ``terminated`` and ``truncated`` (the episode ended after
that action), the behaviour policy's log-probability and, where the episode
was truncated, its last observation (``final_obs``; zeros elsewhere); row T's
action columns are padding. Both endings cut the trace; a truncated step
bootstraps from the learner's own value of its final observation, computed at
update time rather than baked in by the actor with a stale network.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rlrings.algorithms.base import GradientLearner
from rlrings.ring import Ring


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


@dataclass
class ImpalaConfig:
    gamma: float = 0.99
    learning_rate: float = 5e-4
    decay_updates: int = 0
    """Updates over which the learning rate falls linearly to 0; 0 keeps it constant."""
    baseline_cost: float = 0.5
    entropy_cost: float = 0.01
    trace_decay: float = 1.0
    """V-trace's lambda: 1 is the paper's default; lower trades bias for variance as GAE's lambda does."""
    max_grad_norm: float = 0.5
    """Clip of the global gradient norm, on the scale of the mean-reduced loss."""
    normalize_advantages: bool = False
    """Scale each batch's policy-gradient advantages to zero mean and unit variance."""
    normalize_returns: bool = True
    """Learn values in units of the returns' running scale and divide advantages by it
    (:class:`ReturnNormalizer`)."""


class ImpalaLearner(GradientLearner):
    """One IMPALA update per batch of trajectories.

    With a ``ring`` of several ranks, each rank updates on its own batch and
    the ring averages the gradients before they are clipped and applied.
    """

    def __init__(self, model: nn.Module, config: ImpalaConfig, ring: Ring | None = None):
        super().__init__(model, config.learning_rate, ring)
        self.config = config
        self.updates = 0
        self.normalizer = ReturnNormalizer().to(next(model.parameters()).device) if config.normalize_returns else None

    def state_modules(self) -> dict[str, nn.Module]:
        return super().state_modules() | ({"return_normalizer": self.normalizer} if self.normalizer else {})

    def loss(self, columns: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        obs = columns["obs"]  # [B, T+1, ...]
        batch, steps = obs.shape[0], obs.shape[1] - 1
        mean, std = self.normalizer.stats() if self.normalizer else (0.0, 1.0)
        scale = self.normalizer.advantage_scale() if self.normalizer else 1.0
        logits, head = self.model(obs.flatten(0, 1))
        logits = logits.view(batch, steps + 1, -1).transpose(0, 1)  # [T+1, B, A]
        head = head.view(batch, steps + 1).transpose(0, 1)
        values = head.detach() * std + mean  # in return units
        actions = columns["action"].transpose(0, 1)[:steps].long()
        log_probs = F.log_softmax(logits[:steps], dim=-1)
        target_logp = log_probs.gather(-1, actions[..., None]).squeeze(-1)
        terminated = columns["terminated"].transpose(0, 1)[:steps]
        truncated = columns["truncated"].transpose(0, 1)[:steps] & ~terminated
        rewards = columns["reward"].transpose(0, 1)[:steps]
        if "final_obs" in columns and truncated.any():  # a time limit: bootstrap from the last observation
            where = truncated.nonzero(as_tuple=True)
            final = columns["final_obs"].transpose(0, 1)[:steps][where]
            with torch.no_grad():
                final_values = self.model(final)[1] * std + mean
                rewards = rewards.index_put(where, rewards[where] + self.config.gamma * final_values)
        done = (terminated | truncated).float()
        vs, advantages = vtrace(
            behaviour_logp=columns["logp"].transpose(0, 1)[:steps],
            target_logp=target_logp,
            rewards=rewards,
            discounts=self.config.gamma * (1.0 - done),
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
        entropy = -(log_probs.exp() * log_probs).sum(-1).mean()
        loss = policy_loss + self.config.baseline_cost * baseline_loss - self.config.entropy_cost * entropy
        stats = {
            "loss": loss.detach(),
            "policy_loss": policy_loss.detach(),
            "baseline_loss": baseline_loss.detach(),
            "entropy": entropy.detach(),
        }
        return loss, stats

    def learning_rate(self) -> float:
        """The rate of the next update: linear decay to 0 over ``decay_updates``."""
        if not self.config.decay_updates:
            return self.config.learning_rate
        return self.config.learning_rate * max(0.0, 1.0 - self.updates / self.config.decay_updates)

    def update(self, columns: dict[str, torch.Tensor]) -> dict[str, float]:
        loss, stats = self.loss(columns)
        rate = self.learning_rate()
        for group in self.optimizer.param_groups:
            group["lr"] = rate
        grad_norm = self.apply(loss, self.config.max_grad_norm)
        self.updates += 1
        return {name: float(value) for name, value in stats.items()} | {"grad_norm": grad_norm, "learning_rate": rate}
