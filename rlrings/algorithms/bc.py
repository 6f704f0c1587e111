"""Behaviour cloning: fit the policy's logits to the actions people chose."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def behaviour_cloning_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, obs: torch.Tensor, actions: torch.Tensor
) -> dict[str, float]:
    """One cross-entropy step on (observation, action) pairs."""
    logits, _ = model(obs)
    loss = F.cross_entropy(logits, actions.long())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    accuracy = (logits.argmax(-1) == actions).float().mean()
    return {"bc_loss": loss.item(), "bc_accuracy": accuracy.item()}
