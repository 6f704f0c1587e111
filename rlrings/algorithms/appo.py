"""APPO: PPO's clipped objective on asynchronous data with V-trace targets.

As Sample Factory's default learner and RLlib's APPO: actors never wait for
the learner, so an unroll may come from a policy some versions old. Value
targets are V-trace's (which corrects them for that lag, as IMPALA's);
the policy step is PPO's clipped surrogate with the ratio taken against the
behaviour policy and the advantages ``r + gamma * vs' - V``, so the clip
bounds how far one batch moves the policy from the one that acted. PPO's
epochs and minibatches by default: on CartPole, 2 epochs of 2 minibatches
(Sample Factory's taste for throughput over reuse) did not solve within 90 s
where 4 of 4 solved in 22 s (one seed each). Discrete and Box actions.
"""

from __future__ import annotations

import pydantic
import torch

from rlrings.algorithms import api, trajectories
from rlrings.algorithms.impala import vtrace
from rlrings.algorithms.ppo import PpoConfig, PpoLearning


class AppoConfig(PpoConfig):
    name: str = "appo"
    trace_decay: float = pydantic.Field(default=0.95, ge=0, le=1)
    """V-trace's lambda (the traces' decay, as GAE's lambda)."""
    gae_lambda: float = pydantic.Field(default=0.95, ge=0, le=1)
    """Unused by APPO (its targets are V-trace's); kept so that PPO settings carry over."""


class AppoLearning(PpoLearning):
    config: AppoConfig

    def targets(self, columns):
        with torch.no_grad():
            tm, dist, head, rewards, discounts = self.forward_trajectories(columns)
            mean, std, _ = self.scales()
            values = head * std + mean
            steps = head.shape[0] - 1
            vs, _ = vtrace(
                behaviour_logp=tm["logp"],
                target_logp=dist.log_prob(tm["action"]),
                rewards=rewards,
                discounts=discounts,
                values=values[:steps],
                bootstrap_value=values[steps],
                trace_decay=self.config.trace_decay,
            )
            next_vs = torch.cat([vs[1:], values[steps][None]])
            advantages = rewards + discounts * next_vs - values[:steps]
        return tm, advantages, vs, head[:steps]


ALGORITHM = api.Algorithm(
    name="appo",
    summary="PPO's clipped surrogate on asynchronous unrolls with V-trace value targets",
    Config=AppoConfig,
    action_spaces=api.BOTH_SPACES,
    acting=trajectories.TrajectoryActing,
    learning=AppoLearning,
    table=trajectories.trajectory_queue,
    default_batch_size=16,
    model_args=trajectories.trajectory_model_args,
    presets={"atari": trajectories.ATARI, "mujoco": trajectories.MUJOCO_APPO},
)
