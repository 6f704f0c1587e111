"""Action distributions chosen from the action space, shared by acting and learning.

A network's policy head produces the distribution's parameters; the same
class then samples in the actor, scores actions in the learner, and picks
the mode for greedy play (the evaluator, the viewer, ``Policy.act``), so
there is one implementation of each. They are plain tensor arithmetic rather
than ``torch.distributions``, whose argument checks cost about a quarter of
an actor's step on small models.

- :class:`Categorical` for :class:`~rlrings.core.spaces.Discrete` (parameters: logits);
- :class:`DiagGaussian` for a :class:`~rlrings.core.spaces.Box` (parameters: mean and
  log standard deviation side by side); samples are unbounded and the actor
  clips them to the bounds before stepping the env (the learner scores the
  unclipped sample, as PPO implementations do);
- :class:`TanhGaussian` for a bounded Box: a Gaussian squashed by tanh into the
  bounds, with the change-of-variables correction in ``log_prob`` (SAC's policy).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from rlrings.core.spaces import Box, Discrete, Space

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class Categorical:
    """One of ``n`` actions from logits ``[..., n]``."""

    name = "categorical"

    def __init__(self, logits: torch.Tensor):
        self.logits = logits
        self.log_probs = F.log_softmax(logits, -1)

    @staticmethod
    def param_size(space: Discrete) -> int:
        return space.n

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        flat = self.log_probs.exp().reshape(-1, self.log_probs.shape[-1])
        return torch.multinomial(flat, 1, generator=generator).view(self.log_probs.shape[:-1])

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        return self.log_probs.gather(-1, actions.long()[..., None]).squeeze(-1)

    def entropy(self) -> torch.Tensor:
        return -(self.log_probs.exp() * self.log_probs).sum(-1)

    def mode(self) -> torch.Tensor:
        return self.logits.argmax(-1)


class DiagGaussian:
    """A Gaussian with diagonal covariance over a flat action vector: parameters
    ``[..., 2 * d]`` are the mean and the log standard deviation."""

    name = "gaussian"

    def __init__(self, params: torch.Tensor):
        mean, log_std = params.chunk(2, -1)
        self.mean = mean
        self.log_std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        self.std = self.log_std.exp()

    @staticmethod
    def param_size(space: Box) -> int:
        return 2 * space.size

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * noise

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        z = (actions.flatten(self.mean.dim() - 1) - self.mean) / self.std
        return (-0.5 * z.square() - self.log_std - _HALF_LOG_2PI).sum(-1)

    def entropy(self) -> torch.Tensor:
        return (self.log_std + 0.5 + _HALF_LOG_2PI).sum(-1)

    def mode(self) -> torch.Tensor:
        return self.mean


class TanhGaussian(DiagGaussian):
    """A Gaussian squashed into ``[low, high]`` by tanh. ``entropy`` is the Gaussian's
    before squashing (the squashed one has no closed form; SAC estimates it from
    ``-log_prob`` of samples instead)."""

    name = "tanh_gaussian"

    def __init__(self, params: torch.Tensor, low: torch.Tensor, high: torch.Tensor):
        super().__init__(params)
        self.centre = (high + low) / 2
        self.half_range = (high - low) / 2

    def _squash(self, u: torch.Tensor) -> torch.Tensor:
        return self.centre + self.half_range * torch.tanh(u)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return self._squash(super().sample(generator))

    def rsample_with_log_prob(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised sample and its log-probability (gradients flow through both)."""
        u = self.mean + self.std * torch.randn_like(self.mean)
        return self._squash(u), self._log_prob_of_u(u)

    def _log_prob_of_u(self, u: torch.Tensor) -> torch.Tensor:
        gaussian = (-0.5 * ((u - self.mean) / self.std).square() - self.log_std - _HALF_LOG_2PI).sum(-1)
        # d action / d u = half_range * (1 - tanh(u)^2), with a stable log(1 - tanh^2)
        log_det = (torch.log(self.half_range) + 2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)
        return gaussian - log_det

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        y = ((actions.flatten(self.mean.dim() - 1) - self.centre) / self.half_range).clamp(-0.999999, 0.999999)
        return self._log_prob_of_u(torch.atanh(y))

    def mode(self) -> torch.Tensor:
        return self._squash(self.mean)


DISTRIBUTIONS = {"categorical": Categorical, "gaussian": DiagGaussian, "tanh_gaussian": TanhGaussian}


def default_distribution(space: Space) -> str:
    """Categorical for Discrete, a diagonal Gaussian for Box."""
    return "categorical" if isinstance(space, Discrete) else "gaussian"


def param_size(name: str, space: Space) -> int:
    """Outputs of a policy head for distribution ``name`` over ``space``."""
    if name == "categorical":
        if not isinstance(space, Discrete):
            raise ValueError(f"distribution categorical needs a Discrete action space, not {space.describe()}")
        return space.n
    if not isinstance(space, Box):
        raise ValueError(f"distribution {name} needs a Box action space, not {space.describe()}")
    if name == "tanh_gaussian" and not space.bounded:
        raise ValueError(f"distribution tanh_gaussian needs finite action bounds; {space.describe()} has none")
    return 2 * space.size


def make(name: str, space: Space, params: torch.Tensor):
    """The distribution ``name`` over ``space`` with ``params`` from a policy head."""
    if name == "categorical":
        return Categorical(params)
    if name == "gaussian":
        return DiagGaussian(params)
    if name == "tanh_gaussian":
        low = torch.as_tensor(space.low, dtype=params.dtype, device=params.device)
        high = torch.as_tensor(space.high, dtype=params.dtype, device=params.device)
        return TanhGaussian(params, low, high)
    raise ValueError(f"distribution: unknown {name!r}; known: {sorted(DISTRIBUTIONS)}")


def to_env_action(space: Space, actions: torch.Tensor):
    """Actions as the env takes them: integers for Discrete; for a Box, shaped as the space and
    clipped to its bounds (a Gaussian's samples are unbounded)."""
    import numpy as np

    array = actions.detach().cpu().numpy()
    if isinstance(space, Discrete):
        return array.astype(np.int32)
    array = array.reshape(*array.shape[: array.ndim - 1], *space.shape) if space.shape else array[..., 0]
    return np.clip(array, space.low_array(), space.high_array()).astype(space.dtype)
