"""PPO: the clipped surrogate objective over several minibatch epochs (Schulman et al., 2017).

Actors write unrolls as for IMPALA (``trajectories.TrajectoryActing``); the learner
takes a batch of them from the FIFO queue, computes GAE advantages and
returns with its current value function (a time limit bootstraps from the
final observation), then runs ``epochs`` passes of ``minibatches`` shuffled
minibatches of steps. The probability ratio is taken against the behaviour
policy the actor sampled with, so an unroll a version or two old is
corrected by the same clip. Discrete and Box actions (a diagonal Gaussian
with a learned log standard deviation).
"""

from __future__ import annotations

import pydantic
import torch

from rlrings.algorithms import api, trajectories


def gae(
    rewards: torch.Tensor, discounts: torch.Tensor, values: torch.Tensor, bootstrap: torch.Tensor, lam: float
) -> torch.Tensor:
    """Generalised advantage estimates, time-major ``[T, B]`` (``discounts`` is gamma, 0 after an ending)."""
    with torch.no_grad():
        next_values = torch.cat([values[1:], bootstrap[None]])
        deltas = rewards + discounts * next_values - values
        advantages = torch.zeros_like(values)
        carry = torch.zeros_like(bootstrap)
        for t in reversed(range(values.shape[0])):
            carry = deltas[t] + discounts[t] * lam * carry
            advantages[t] = carry
    return advantages


def clipped_surrogate(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, clip: float):
    """PPO's policy loss and the share of steps whose ratio was clipped."""
    ratio = torch.exp(logp - old_logp)
    loss = -torch.min(ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages).mean()
    clipped = ((ratio - 1).abs() > clip).float().mean()
    return loss, clipped.detach()


class PpoConfig(trajectories.TrajectoryConfig):
    name: str = "ppo"
    unroll_length: pydantic.PositiveInt = 32
    """Steps per trajectory item: the advantage horizon (items hold one more observation, to bootstrap from)."""
    learning_rate: float = pydantic.Field(default=3e-4, gt=0, json_schema_extra=api.LIVE_IN_LEARNER)
    """Adam's learning rate (at the start, where it decays)."""
    gae_lambda: float = pydantic.Field(default=0.95, ge=0, le=1)
    """GAE's lambda."""
    clip: pydantic.PositiveFloat = 0.2
    """Clip of the probability ratio."""
    epochs: pydantic.PositiveInt = 4
    """Passes over each batch."""
    minibatches: pydantic.PositiveInt = 4
    """Minibatches per pass (of the batch's steps, shuffled)."""
    entropy_cost: float = pydantic.Field(default=0.01, ge=0, json_schema_extra=api.LIVE_IN_LEARNER)
    """Weight of the entropy bonus in the loss."""
    value_cost: pydantic.NonNegativeFloat = 0.5
    """Weight of the value loss in the loss."""
    value_clip: pydantic.PositiveFloat | None = None
    """Clip of the value's change per update, in standardised units; None: unclipped (clipping
    measured to help little or hurt in Andrychowicz et al., 2021)."""
    normalize_advantages: bool = True
    """Standardise advantages within each minibatch."""
    target_kl: pydantic.PositiveFloat | None = None
    """Stop a batch's epochs early once the approximate KL to the behaviour policy passes this."""


class PpoLearning(trajectories.ActorCriticLearning):
    """One PPO update per batch of trajectories: epochs x minibatches gradient steps."""

    config: PpoConfig

    def targets(self, columns):
        """(time-major columns, advantages ``[T, B]``, standardised value targets, old standardised
        values): computed once per batch with the current networks."""
        with torch.no_grad():
            tm, _, head, rewards, discounts = self.forward_trajectories(columns)
            mean, std, _ = self.scales()
            values = head * std + mean
            steps = head.shape[0] - 1
            advantages = gae(rewards, discounts, values[:steps], values[steps], self.config.gae_lambda)
            returns = advantages + values[:steps]
        return tm, advantages, returns, head[:steps]

    def minibatch_loss(self, obs, actions, old_logp, advantages, value_targets, old_values):
        params, head = self.model(obs)
        dist = self.spec.make_distribution(params)
        logp = dist.log_prob(actions)
        if self.config.normalize_advantages and advantages.numel() > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        policy_loss, clipped = clipped_surrogate(logp, old_logp, advantages, self.config.clip)
        value_loss = (head - value_targets).square()
        if self.config.value_clip is not None:
            clipped_head = old_values + (head - old_values).clamp(-self.config.value_clip, self.config.value_clip)
            value_loss = torch.max(value_loss, (clipped_head - value_targets).square())
        value_loss = 0.5 * value_loss.mean()
        entropy = dist.entropy().mean()
        loss = policy_loss + self.config.value_cost * value_loss - self.config.entropy_cost * entropy
        with torch.no_grad():
            log_ratio = logp - old_logp
            approx_kl = ((log_ratio.exp() - 1) - log_ratio).mean()
        return loss, {
            "loss": loss.detach(),
            "policy_loss": policy_loss.detach(),
            "value_loss": value_loss.detach(),
            "entropy": entropy.detach(),
            "clip_fraction": clipped,
            "approx_kl": approx_kl,
        }

    def update(self, columns, weights=None) -> api.Update:
        tm, advantages, returns, old_values = self.targets(columns)
        if self.config.preserve_values:  # the head moves with the scale: the epochs' targets are in the new one
            old_mean, old_std, _ = self.scales()
            self.move_return_scale(returns)
            mean, std, _ = self.scales()
            old_values = (old_values * old_std + old_mean - mean) / std  # (for value_clip)
            value_targets = (returns - mean) / std
        else:  # targets in the scale the head was trained in; the batch moves it for the next update
            mean, std, _ = self.scales()
            value_targets = (returns - mean) / std
            self.move_return_scale(returns)
        steps, batch = advantages.shape
        flat = {
            "obs": tm["obs"][:steps].flatten(0, 1),
            "action": tm["action"].flatten(0, 1),
            "old_logp": tm["logp"].flatten(0, 1),
            "advantages": advantages.flatten(),
            "value_targets": value_targets.flatten(),
            "old_values": old_values.flatten(),
        }
        count = steps * batch
        size = max(1, count // self.config.minibatches)
        rate = self.learning_rate()
        stats = api.StatsMean()
        # the same permutation on every rank of a ring (their batches differ, their steps must not)
        generator = torch.Generator().manual_seed(self.updates)
        stop = False
        for _ in range(self.config.epochs):
            order = torch.randperm(count, generator=generator).to(self.device)
            for start in range(0, size * self.config.minibatches, size):
                index = order[start : start + size]
                loss, step_stats = self.minibatch_loss(
                    flat["obs"][index], flat["action"][index], flat["old_logp"][index], flat["advantages"][index],
                    flat["value_targets"][index], flat["old_values"][index],
                )  # fmt: skip
                step_stats["grad_norm"] = self.step(loss, max_grad_norm=self.config.max_grad_norm)
                stats.add(step_stats)
                if self.config.target_kl is not None:  # every rank stops at the same minibatch
                    kl = self.ring.allreduce_mean(step_stats["approx_kl"].reshape(1).double().cpu())
                    stop = bool(kl[0] > self.config.target_kl)
                    if stop:
                        break
            if stop:
                break
        self.updates += 1
        return api.Update(stats.mean() | {"learning_rate": rate})


ALGORITHM = api.Algorithm(
    name="ppo",
    summary="clipped surrogate, GAE, minibatch epochs, on unrolls from a FIFO queue",
    Config=PpoConfig,
    action_spaces=api.BOTH_SPACES,
    acting=trajectories.TrajectoryActing,
    learning=PpoLearning,
    table=trajectories.trajectory_queue,
    default_batch_size=16,
    on_policy=True,
    model_args=trajectories.trajectory_model_args,
    presets={"atari": trajectories.ATARI | {"unroll_length": 128}, "mujoco": trajectories.MUJOCO_PPO},
)
