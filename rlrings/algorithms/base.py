"""What every gradient learner shares: an Adam optimizer and one way to apply a loss.

The ring (``rlrings.ring``) plugs in here, so the algorithms stay the same
whether they run in one process or as data-parallel ranks.
"""

from __future__ import annotations

import torch
from torch import nn

from rlrings.ring import LocalRing, Ring


class GradientLearner:
    """Owns ``model``'s optimizer; :meth:`apply` does backward and, through
    the ring, averages, clips and applies the gradients."""

    def __init__(self, model: nn.Module, learning_rate: float, ring: Ring | None = None):
        self.model = model
        self.ring: Ring = LocalRing()
        self.optimizer: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
        if ring is not None:
            self.join(ring)

    def state_modules(self) -> dict[str, nn.Module]:
        """Every module whose state a checkpoint keeps and a joining rank takes from rank 0, by name."""
        return {"model": self.model}

    def join(self, ring: Ring) -> None:
        """From now on, average gradients over ``ring`` (optimizer state is kept)."""
        self.ring = ring
        self.optimizer = ring.distribute(self.optimizer, self.model)

    def apply(self, loss: torch.Tensor, max_grad_norm: float | None) -> float:
        """One optimizer step on ``loss``; returns the (averaged) gradient norm before clipping."""
        self.optimizer.zero_grad()
        loss.backward()
        return self.ring.apply_gradients(self.optimizer, self.model.parameters(), max_grad_norm)
