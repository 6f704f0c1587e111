"""Behaviour cloning: fit the policy's logits to the actions people chose."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlrings.algorithms.base import GradientLearner


def behaviour_cloning_step(learner: GradientLearner, obs: torch.Tensor, actions: torch.Tensor) -> dict[str, float]:
    """One cross-entropy step of ``learner``'s model and optimizer on
    (observation, action) pairs; on a ring, gradients are averaged."""
    logits, _ = learner.model(obs)
    loss = F.cross_entropy(logits, actions.long())
    learner.apply(loss, None)
    accuracy = (logits.argmax(-1) == actions).float().mean()
    return {"bc_loss": loss.item(), "bc_accuracy": accuracy.item()}
