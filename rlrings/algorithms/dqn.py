"""Double DQN with prioritized replay and n-step returns.

Actors turn steps into n-step transitions (:class:`NStepAccumulator`), the
learner samples them from a prioritized table, corrects with importance
weights and sends back |TD error| as new priorities.
"""

from __future__ import annotations

import collections
import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rlrings.algorithms.base import GradientLearner
from rlrings.ring import Ring


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


class NStepAccumulator:
    """Turns one env's steps into n-step transitions.

    ``add`` returns the transitions that became complete: one per step once n
    steps are buffered, and all the buffered ones when an episode ends.
    """

    def __init__(self, n: int, gamma: float):
        self.n, self.gamma = n, gamma
        self._steps: collections.deque = collections.deque()

    def add(self, obs, action, reward, next_obs, terminated: bool, truncated: bool) -> list[tuple]:
        self._steps.append((obs, action, reward))
        out = []
        if terminated or truncated:
            while self._steps:
                out.append(self._emit(next_obs, 0.0 if terminated else 1.0))
        elif len(self._steps) == self.n:
            out.append(self._emit(next_obs, 1.0))
        return out

    def _emit(self, next_obs, alive: float) -> tuple:
        ret = sum(self.gamma**i * step[2] for i, step in enumerate(self._steps))
        discount = alive * self.gamma ** len(self._steps)
        obs, action, _ = self._steps.popleft()
        return obs, action, np.float32(ret), next_obs, np.float32(discount)


@dataclass
class DqnConfig:
    gamma: float = 0.99
    n_step: int = 3
    learning_rate: float = 5e-4
    target_update_every: int = 250
    max_grad_norm: float = 10.0
    priority_epsilon: float = 1e-3


class DqnLearner(GradientLearner):
    """One double-DQN update per batch; with a ``ring``, gradients are averaged over its ranks."""

    def __init__(self, model: nn.Module, config: DqnConfig, ring: Ring | None = None):
        super().__init__(model, config.learning_rate, ring)
        self.config = config
        self.target = copy.deepcopy(model).requires_grad_(False)
        self.updates = 0

    def state_modules(self) -> dict[str, nn.Module]:
        return super().state_modules() | {"target": self.target}

    def update(self, columns: dict[str, torch.Tensor], weights: torch.Tensor) -> tuple[dict[str, float], np.ndarray]:
        """One step on a batch of transitions; returns stats and new priorities."""
        first = {name: value[:, 0] for name, value in columns.items()}  # items are one transition
        loss, td = double_dqn_loss(
            self.model, self.target, first["obs"], first["action"], first["reward"], first["next_obs"],
            first["discount"], weights,
        )  # fmt: skip
        grad_norm = self.apply(loss, self.config.max_grad_norm)
        self.updates += 1
        if self.updates % self.config.target_update_every == 0:
            self.target.load_state_dict(self.model.state_dict())
        priorities = td.abs().cpu().numpy() + self.config.priority_epsilon
        return {"loss": loss.item(), "td_abs": float(td.abs().mean()), "grad_norm": grad_norm}, priorities
