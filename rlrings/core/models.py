"""Policy networks and the metadata needed to rebuild them anywhere.

A model is named by a :class:`ModelSpec` (architecture, its arguments, the
observation and action spaces with their bounds, the action distribution),
which travels with the weights through the parameter service, so ``rlrings
models pull`` gives a user everything needed to act outside the mesh. Every
network maps observations to ``(params, value)``: ``params`` are the action
distribution's (``rlrings.core.distributions``); DQN reads categorical logits as
Q-values.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from rlrings.core import distributions
from rlrings.core.spaces import Box, Discrete, Space

WEIGHTS_FORMAT = "torch.state_dict"  # what weights_to_bytes produces; sent in every WeightsHeader


@dataclass(frozen=True)
class ModelSpec:
    architecture: str
    observation_space: Box
    action_space: Space
    distribution: str = ""
    """Name in ``rlrings.core.distributions``; empty: the space's default (categorical or gaussian)."""
    args: dict = field(default_factory=dict)
    env_id: str = ""
    algorithm: str = ""

    def __post_init__(self) -> None:
        if not self.distribution:
            object.__setattr__(self, "distribution", distributions.default_distribution(self.action_space))

    @classmethod
    def for_env(cls, env, algorithm: str, architecture: str | None = None, distribution: str = "", **args) -> ModelSpec:
        """The model for ``env`` (an ``EnvSpec``): images get the CNN, vectors the MLP."""
        return cls(
            architecture=architecture
            or getattr(env, "architecture", "")
            or ("cnn" if env.observation_space.is_image else "mlp"),
            observation_space=env.observation_space,
            action_space=env.action_space,
            distribution=distribution,
            args=args,
            env_id=env.env_id,
            algorithm=algorithm,
        )

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return self.observation_space.shape

    @property
    def action_names(self) -> tuple[str, ...]:
        return self.action_space.names if isinstance(self.action_space, Discrete) else ()

    def make_distribution(self, params: torch.Tensor):
        """The action distribution for a policy head's ``params``."""
        return distributions.make(self.distribution, self.action_space, params)

    def describe_actions(self) -> str:
        return self.action_space.describe()

    def to_dict(self) -> dict:
        """Plain data (JSON- and ``torch.load(weights_only=True)``-safe)."""
        return {
            "architecture": self.architecture,
            "observation_space": _space_dict(self.observation_space),
            "action_space": _space_dict(self.action_space),
            "distribution": self.distribution,
            "args": dict(self.args),
            "env_id": self.env_id,
            "algorithm": self.algorithm,
        }

    @classmethod
    def from_dict(cls, data: dict) -> ModelSpec:
        return cls(
            **{
                **data,
                "observation_space": _space_from_dict(data["observation_space"]),
                "action_space": _space_from_dict(data["action_space"]),
            }
        )


def _space_dict(space: Space) -> dict:
    if isinstance(space, Discrete):
        return {"kind": "discrete", "n": space.n, "names": list(space.names)}
    return {
        "kind": "box",
        "shape": list(space.shape),
        "dtype": space.dtype.name,
        "low": list(space.low),
        "high": list(space.high),
    }


def _space_from_dict(data: dict) -> Space:
    if data["kind"] == "discrete":
        return Discrete(data["n"], tuple(data["names"]))
    return Box(tuple(data["shape"]), data["dtype"], tuple(data["low"]), tuple(data["high"]))


class PolicyHead(nn.Module):
    """Features to the distribution's parameters: logits; a Gaussian's mean with a learned,
    state-independent log standard deviation (PPO's usual choice); or, for the tanh Gaussian,
    mean and log standard deviation both from the features (SAC's)."""

    def __init__(self, width: int, spec: ModelSpec, gain: float = 0.01):
        super().__init__()
        size = distributions.param_size(spec.distribution, spec.action_space)
        self.state_dependent = spec.distribution != "gaussian"
        self.linear = _init(nn.Linear(width, size if self.state_dependent else size // 2), gain)
        self.log_std = None if self.state_dependent else nn.Parameter(torch.zeros(size // 2))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out = self.linear(features)
        if self.log_std is None:
            return out
        return torch.cat([out, self.log_std.expand_as(out)], -1)


class ObservationNormalizer(nn.Module):
    """Running mean and variance of observations, applied as the model's first step and
    clipped to ``clip`` deviations. Its statistics are buffers of the published model, so
    actors, the evaluator and a user's ``Policy.act`` normalise as the learner did; only
    the learner moves them (:meth:`update`, on the batches it trains on)."""

    def __init__(self, shape: tuple[int, ...], clip: float = 10.0):
        super().__init__()
        self.clip = clip
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("var", torch.ones(shape))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return ((obs - self.mean) / torch.sqrt(self.var + 1e-8)).clamp(-self.clip, self.clip)

    @torch.no_grad()
    def update(self, obs: torch.Tensor, reduce_mean=None, ranks: int = 1) -> None:
        """Folds a batch ``[N, *shape]`` into the statistics (Chan et al.'s parallel update); with
        ``reduce_mean`` (a ring's mean over ``ranks`` ranks of equal batches), every rank's batch,
        so that all ranks keep the same statistics."""
        batch = obs.reshape(-1, *self.mean.shape).double()
        n = batch.shape[0]
        if n == 0:
            return
        mean, square = batch.mean(0), batch.square().mean(0)
        if reduce_mean is not None and ranks > 1:
            both = reduce_mean(torch.stack([mean, square]).cpu()).to(mean.device)
            mean, square, n = both[0], both[1], n * ranks
        var = (square - mean.square()).clamp(min=0)
        total = self.count + n
        delta = mean - self.mean.double()
        new_mean = self.mean.double() + delta * (n / total)
        m2 = self.var.double() * self.count + var * n + delta.square() * self.count * n / total
        self.mean.copy_(new_mean.float())
        self.var.copy_((m2 / total).float())
        self.count.copy_(total)


class MLPNet(nn.Module):
    """For vector observations: separate policy and value torsos by default (``shared``
    joins them), since on small vector tasks a value loss pulling on the policy's
    features makes learning less stable; orthogonal initialisation, a small policy head.
    ``activation`` is tanh (the on-policy algorithms') or relu (SAC's);
    ``normalize_observations`` puts an :class:`ObservationNormalizer` in front."""

    def __init__(
        self,
        spec: ModelSpec,
        hidden: tuple[int, ...] = (64, 64),
        shared: bool = False,
        activation: str = "tanh",
        normalize_observations: bool = False,
    ):
        super().__init__()
        size = int(np.prod(spec.obs_shape))
        self.normalizer = ObservationNormalizer(tuple(spec.obs_shape)) if normalize_observations else None
        self.policy_torso = _mlp(size, hidden, activation)
        self.value_torso = None if shared else _mlp(size, hidden, activation)
        width = hidden[-1] if hidden else size
        self.policy = PolicyHead(width, spec)
        self.value = _init(nn.Linear(width, 1), 1.0)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        obs = obs.float()
        if self.normalizer is not None:
            obs = self.normalizer(obs)
        features = self.policy_torso(obs)
        value_features = features if self.value_torso is None else self.value_torso(obs)
        return self.policy(features), self.value(value_features).squeeze(-1)


def _init(layer: nn.Linear, gain: float) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}


def _mlp(width: int, hidden: tuple[int, ...], activation: str = "tanh") -> nn.Sequential:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: unknown {activation!r}; known: {sorted(ACTIVATIONS)}")
    layers: list[nn.Module] = [nn.Flatten()]
    for size in hidden:
        layers += [_init(nn.Linear(width, size), float(np.sqrt(2))), ACTIVATIONS[activation]()]
        width = size
    return nn.Sequential(*layers)


def observation_normalizer(model: nn.Module) -> ObservationNormalizer | None:
    """The model's :class:`ObservationNormalizer`, where it has one."""
    return getattr(model, "normalizer", None)


class ConvNet(nn.Module):
    """For uint8 frames of any height, width and channels (Crafter and MineRL's 64x64x3 pov,
    Atari's 84x84x4): strided convolutions, then one dense layer; frames stay uint8 until here."""

    def __init__(self, spec: ModelSpec, channels: tuple[int, ...] = (32, 64, 64), hidden: int = 256):
        super().__init__()
        height, width, depth = spec.obs_shape
        convs = []
        for out in channels:
            convs += [nn.Conv2d(depth, out, kernel_size=4, stride=2, padding=1), nn.ReLU()]
            depth = out
        convs = nn.Sequential(*convs, nn.Flatten())
        with torch.no_grad():
            flat = convs(torch.zeros(1, spec.obs_shape[-1], height, width)).shape[1]
        self.torso = nn.Sequential(convs, nn.Linear(flat, hidden), nn.ReLU())
        self.policy = PolicyHead(hidden, spec, gain=1.0)
        self.value = nn.Linear(hidden, 1)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.torso(_frames(obs))
        return self.policy(features), self.value(features).squeeze(-1)


def _frames(obs: torch.Tensor) -> torch.Tensor:
    """uint8 HxWxC frames (as stored and sent) to float CxHxW in [0, 1], on the model's device."""
    return obs.permute(0, 3, 1, 2).float().div_(255.0)


def _flat_size(torso: nn.Module, shape: tuple[int, ...]) -> int:
    height, width, depth = shape
    with torch.no_grad():
        return torso(torch.zeros(1, depth, height, width)).shape[1]


class NatureCNN(nn.Module):
    """The Nature DQN torso (Mnih et al., 2015): 32 8x8/4, 64 4x4/2, 64 3x3/1, then 512 units,
    for frames of any size from 36x36 up (Atari's 84x84x4 gives 3,136 features)."""

    def __init__(self, spec: ModelSpec, hidden: int = 512):
        super().__init__()
        depth = spec.obs_shape[-1]
        if min(spec.obs_shape[:2]) < 36:
            raise ValueError(f"architecture nature: frames {spec.obs_shape} are smaller than its 36x36 minimum")
        convs = nn.Sequential(
            nn.Conv2d(depth, 32, 8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
            nn.Flatten(),
        )  # fmt: skip
        for layer in convs:
            if isinstance(layer, nn.Conv2d):
                nn.init.orthogonal_(layer.weight, float(np.sqrt(2)))
                nn.init.zeros_(layer.bias)
        self.torso = nn.Sequential(
            convs, _init(nn.Linear(_flat_size(convs, spec.obs_shape), hidden), float(np.sqrt(2))), nn.ReLU()
        )
        self.policy = PolicyHead(hidden, spec)
        self.value = _init(nn.Linear(hidden, 1), 1.0)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.torso(_frames(obs))
        return self.policy(features), self.value(features).squeeze(-1)


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv1(torch.relu(self.conv0(torch.relu(x))))


class ImpalaResNet(nn.Module):
    """IMPALA's deep torso (Espeholt et al., 2018), 15 layers: three sections of a 3x3
    convolution, a 3x3/2 max-pool and two residual blocks (16, 32, 32 channels), then 256 units;
    any frame size (each section halves it, rounding up)."""

    def __init__(self, spec: ModelSpec, channels: tuple[int, ...] = (16, 32, 32), hidden: int = 256):
        super().__init__()
        depth = spec.obs_shape[-1]
        layers: list[nn.Module] = []
        for out in channels:
            layers += [
                nn.Conv2d(depth, out, 3, padding=1),
                nn.MaxPool2d(3, stride=2, padding=1),
                _ResidualBlock(out),
                _ResidualBlock(out),
            ]
            depth = out
        convs = nn.Sequential(*layers, nn.ReLU(), nn.Flatten())
        self.torso = nn.Sequential(convs, nn.Linear(_flat_size(convs, spec.obs_shape), hidden), nn.ReLU())
        self.policy = PolicyHead(hidden, spec)
        self.value = _init(nn.Linear(hidden, 1), 1.0)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.torso(_frames(obs))
        return self.policy(features), self.value(features).squeeze(-1)


ARCHITECTURES: dict[str, type[nn.Module]] = {
    "mlp": MLPNet,
    "cnn": ConvNet,
    "cnn64": ConvNet,
    "nature": NatureCNN,
    "impala": ImpalaResNet,
}
"""Image torsos: ``cnn`` (small, for 64x64 frames: Crafter, MineRL), ``nature`` (Atari's
default) and ``impala`` (IMPALA's 15-layer ResNet), each for any HxWxC; ``cnn64`` is the name
models published before frames of any size were accepted still carry."""
IMAGE_ARCHITECTURES = ("cnn", "cnn64", "nature", "impala")


def build_model(spec: ModelSpec) -> nn.Module:
    try:
        cls = ARCHITECTURES[spec.architecture]
    except KeyError:
        raise ValueError(f"architecture: unknown {spec.architecture!r}; known: {sorted(ARCHITECTURES)}") from None
    if spec.architecture in IMAGE_ARCHITECTURES and len(spec.obs_shape) != 3:
        raise ValueError(f"architecture {spec.architecture}: needs HxWxC frames, not observations {spec.obs_shape}")
    model = cls(spec, **spec.args)
    model.spec = spec  # what the model's outputs mean (its action distribution), for code handed just the model
    return model


def weights_to_bytes(model: nn.Module) -> bytes:
    """The model's state as bytes, on the CPU whatever device trained it."""
    buffer = io.BytesIO()
    torch.save({name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}, buffer)
    return buffer.getvalue()


def load_weights(model: nn.Module, data: bytes) -> None:
    model.load_state_dict(torch.load(io.BytesIO(data), weights_only=True))


class Policy:
    """A trained model for a plain game loop: ``action = policy.act(obs)``."""

    def __init__(self, spec: ModelSpec, model: nn.Module, version: int = 0):
        self.spec, self.model, self.version = spec, model.eval(), version

    @torch.no_grad()
    def act(self, obs, greedy: bool = True):
        """The action for one observation: an int for Discrete actions, an array within the
        bounds for Box actions; ``greedy`` takes the distribution's mode, else a sample."""
        params, _ = self.model(torch.as_tensor(np.asarray(obs))[None])
        dist = self.spec.make_distribution(params)
        action = distributions.to_env_action(self.spec.action_space, dist.mode() if greedy else dist.sample())[0]
        return int(action) if isinstance(self.spec.action_space, Discrete) else action

    def save(self, path) -> None:
        """Writes spec and weights to one file (what ``rlrings models pull`` produces)."""
        torch.save({"spec": self.spec.to_dict(), "version": self.version, "state_dict": self.model.state_dict()}, path)

    @classmethod
    def load(cls, path) -> Policy:
        saved = torch.load(path, weights_only=True)
        spec = ModelSpec.from_dict(saved["spec"])
        model = build_model(spec)
        model.load_state_dict(saved["state_dict"])
        return cls(spec, model, saved["version"])
