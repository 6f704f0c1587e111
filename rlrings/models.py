"""Policy networks and the metadata needed to rebuild them anywhere.

A model is named by a :class:`ModelSpec` (architecture, its arguments, the
observation and action spaces), which travels with the weights through the
parameter service, so ``rlrings models pull`` gives a user everything needed
to act outside the mesh. Every network maps observations to
``(logits, value)``; DQN reads the logits as Q-values.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from rlrings import codec
from rlrings.envs import EnvSpec
from rlrings.v1 import spaces_pb2

WEIGHTS_FORMAT = "torch.state_dict"  # what weights_to_bytes produces; sent in every WeightsHeader


@dataclass(frozen=True)
class ModelSpec:
    architecture: str
    obs_shape: tuple[int, ...]
    obs_dtype: str
    num_actions: int
    args: dict = field(default_factory=dict)
    env_id: str = ""
    algorithm: str = ""
    action_names: tuple[str, ...] = ()

    @classmethod
    def for_env(cls, env: EnvSpec, algorithm: str, architecture: str | None = None, **args) -> ModelSpec:
        space = env.observation_space
        return cls(
            architecture=architecture or ("cnn64" if env.is_image else "mlp"),
            obs_shape=tuple(space.shape),
            obs_dtype=space.dtype.name,
            num_actions=env.num_actions,
            args=args,
            env_id=env.env_id,
            algorithm=algorithm,
            action_names=env.action_names,
        )

    def to_proto(self) -> spaces_pb2.ModelSpec:
        return spaces_pb2.ModelSpec(
            architecture=self.architecture,
            architecture_args_json=json.dumps(self.args),
            observation_space=spaces_pb2.Space(
                box=spaces_pb2.BoxSpace(dtype=codec.dtype_code(self.obs_dtype), shape=self.obs_shape)
            ),
            action_space=spaces_pb2.Space(
                discrete=spaces_pb2.DiscreteSpace(n=self.num_actions, action_names=self.action_names)
            ),
            env_id=self.env_id,
            algorithm=self.algorithm,
        )

    @classmethod
    def from_proto(cls, proto: spaces_pb2.ModelSpec) -> ModelSpec:
        box = proto.observation_space.box
        return cls(
            architecture=proto.architecture,
            obs_shape=tuple(box.shape),
            obs_dtype=codec.numpy_dtype(box.dtype).name,
            num_actions=proto.action_space.discrete.n,
            args=json.loads(proto.architecture_args_json or "{}"),
            env_id=proto.env_id,
            algorithm=proto.algorithm,
            action_names=tuple(proto.action_space.discrete.action_names),
        )


class MLPNet(nn.Module):
    """For vector observations: separate policy and value torsos by default (``shared``
    joins them), since on small vector tasks a value loss pulling on the policy's
    features makes learning less stable; orthogonal initialisation, a small policy head."""

    def __init__(self, spec: ModelSpec, hidden: tuple[int, ...] = (64, 64), shared: bool = False):
        super().__init__()
        self.policy_torso = _mlp(int(np.prod(spec.obs_shape)), hidden)
        self.value_torso = None if shared else _mlp(int(np.prod(spec.obs_shape)), hidden)
        width = hidden[-1] if hidden else int(np.prod(spec.obs_shape))
        self.policy = _init(nn.Linear(width, spec.num_actions), 0.01)
        self.value = _init(nn.Linear(width, 1), 1.0)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        obs = obs.float()
        features = self.policy_torso(obs)
        value_features = features if self.value_torso is None else self.value_torso(obs)
        return self.policy(features), self.value(value_features).squeeze(-1)


def _init(layer: nn.Linear, gain: float) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def _mlp(width: int, hidden: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    for size in hidden:
        layers += [_init(nn.Linear(width, size), float(np.sqrt(2))), nn.Tanh()]
        width = size
    return nn.Sequential(*layers)


class CNN64Net(nn.Module):
    """For 64x64x3 uint8 frames (Crafter, MineRL's pov)."""

    def __init__(self, spec: ModelSpec, channels: tuple[int, ...] = (32, 64, 64), hidden: int = 256):
        super().__init__()
        convs, depth = [], spec.obs_shape[-1]
        for width in channels:
            convs += [nn.Conv2d(depth, width, kernel_size=4, stride=2, padding=1), nn.ReLU()]
            depth = width
        self.torso = nn.Sequential(*convs, nn.Flatten(), nn.Linear(depth * 8 * 8, hidden), nn.ReLU())
        self.policy = nn.Linear(hidden, spec.num_actions)
        self.value = nn.Linear(hidden, 1)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames = obs.permute(0, 3, 1, 2).float() / 255.0
        features = self.torso(frames)
        return self.policy(features), self.value(features).squeeze(-1)


ARCHITECTURES: dict[str, type[nn.Module]] = {"mlp": MLPNet, "cnn64": CNN64Net}


def build_model(spec: ModelSpec) -> nn.Module:
    try:
        cls = ARCHITECTURES[spec.architecture]
    except KeyError:
        raise ValueError(f"architecture: unknown {spec.architecture!r}; known: {sorted(ARCHITECTURES)}") from None
    return cls(spec, **spec.args)


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
    def act(self, obs, greedy: bool = True) -> int:
        logits, _ = self.model(torch.as_tensor(np.asarray(obs))[None])
        if greedy:
            return int(logits.argmax(-1))
        return int(torch.distributions.Categorical(logits=logits).sample())

    def save(self, path) -> None:
        """Writes spec and weights to one file (what ``rlrings models pull`` produces)."""
        torch.save({"spec": asdict(self.spec), "version": self.version, "state_dict": self.model.state_dict()}, path)

    @classmethod
    def load(cls, path) -> Policy:
        saved = torch.load(path, weights_only=True)
        fields = saved["spec"]
        spec = ModelSpec(
            **{**fields, "obs_shape": tuple(fields["obs_shape"]), "action_names": tuple(fields["action_names"])}
        )
        model = build_model(spec)
        model.load_state_dict(saved["state_dict"])
        return cls(spec, model, saved["version"])
